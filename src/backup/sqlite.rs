//! The SQLite side of backup and restore: a consistent snapshot with `VACUUM INTO`, the
//! checks of a copy (integrity, row counts, schema version), and the exclusive lock that
//! proves no other process has the live database open.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel::sqlite::SqliteConnection;
use serde_json::Value;

use crate::store::conn::Lease;
use crate::store::dialect::quote;
use crate::store::{Conn, StoreError};

/// Opens an existing SQLite file (never creates one: the caller checked it exists).
pub fn open(path: &Path, busy_timeout: Duration) -> Result<Conn, StoreError> {
    let url = path
        .to_str()
        .ok_or_else(|| StoreError::Unavailable("the database path is not UTF-8".into()))?;
    let mut c = SqliteConnection::establish(url)
        .map_err(|e| StoreError::Unavailable(format!("{}: {e}", path.display())))?;
    c.batch_execute(&format!(
        "PRAGMA busy_timeout = {};",
        busy_timeout.as_millis()
    ))?;
    Ok(Conn::Sqlite(Lease::Owned(c)))
}

/// Writes a transactionally consistent copy of the database open on `conn` into `into`
/// (an existing empty file: SQLite keeps its mode). `VACUUM INTO` is one read transaction:
/// in WAL mode it neither waits for the writer thread nor holds it up, and it sees every
/// transaction committed before it began and none after.
pub fn snapshot(conn: &mut Conn, into: &Path) -> Result<(), StoreError> {
    let target = into
        .to_str()
        .ok_or_else(|| StoreError::Unavailable("the backup path is not UTF-8".into()))?
        .to_string();
    conn.with_raw(|raw| match raw {
        crate::store::conn::Raw::Sqlite(c) => diesel::sql_query("VACUUM INTO ?")
            .bind::<Text, _>(&target)
            .execute(c)
            .map(|_| ()),
        #[cfg(feature = "postgres")]
        crate::store::conn::Raw::Pg(_) => Err(diesel::result::Error::QueryBuilderError(
            "VACUUM INTO is SQLite only".into(),
        )),
    })
}

/// `PRAGMA integrity_check`: `Ok` when SQLite answers exactly `ok`, else its findings.
pub fn integrity(conn: &mut Conn) -> Result<Result<(), String>, StoreError> {
    let rows = conn.query_json(
        "SELECT json_object('r', integrity_check) AS j FROM pragma_integrity_check",
        &[],
    )?;
    let found: Vec<String> = rows
        .iter()
        .filter_map(|t| serde_json::from_str::<Value>(t).ok())
        .filter_map(|v| v.get("r").and_then(Value::as_str).map(str::to_string))
        .collect();
    Ok(if found == ["ok"] {
        Ok(())
    } else {
        Err(found.join("; "))
    })
}

/// Rows in every table.
pub fn row_counts(conn: &mut Conn) -> Result<BTreeMap<String, u64>, StoreError> {
    let names = conn.query_json(
        "SELECT json_object('n', name) AS j FROM sqlite_master \
         WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        &[],
    )?;
    let mut out = BTreeMap::new();
    for name in names
        .iter()
        .filter_map(|t| serde_json::from_str::<Value>(t).ok())
        .filter_map(|v| v.get("n").and_then(Value::as_str).map(str::to_string))
    {
        let count = conn.query_json(
            &format!(
                "SELECT json_object('c', count(*)) AS j FROM {}",
                quote(&name)
            ),
            &[],
        )?;
        let n = count
            .first()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
            .and_then(|v| v.get("c").and_then(Value::as_u64))
            .ok_or_else(|| StoreError::Corrupt(format!("no row count for table {name}")))?;
        out.insert(name, n);
    }
    Ok(out)
}

/// The newest internal migration applied (`None`: none, or no migrations table).
pub fn schema_version(conn: &mut Conn) -> Result<Option<String>, StoreError> {
    if conn.columns("__diesel_schema_migrations")?.is_empty() {
        return Ok(None);
    }
    let rows = conn.query_json(
        "SELECT json_object('v', max(version)) AS j FROM __diesel_schema_migrations",
        &[],
    )?;
    Ok(rows
        .first()
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
        .and_then(|v| v.get("v").and_then(Value::as_str).map(str::to_string)))
}

/// Takes the live database for this process alone, or says who has it.
///
/// With `locking_mode = EXCLUSIVE`, `BEGIN EXCLUSIVE` needs an exclusive lock on the file,
/// which SQLite cannot get while any other connection has it open in WAL mode (each holds a
/// shared lock for as long as it is open: `serve` always has its writer's). The operating
/// system drops those locks when a process dies, so a crashed server never blocks this. The
/// lock is then kept until the returned connection closes, so no server can open the old
/// file meanwhile. Switching to `journal_mode = DELETE` folds the WAL into the file and
/// removes `-wal` and `-shm`, so the file is whole on its own when it is set aside.
pub fn take_exclusive(path: &Path) -> Result<Result<Conn, String>, StoreError> {
    let mut conn = open(path, Duration::ZERO)?;
    if let Err(e) = conn.batch("PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE; COMMIT;") {
        return Ok(Err(match e {
            StoreError::Unavailable(_) => {
                "another process has the database open (a running `nestflux serve`, or another tool): stop it first".to_string()
            }
            other => format!("cannot lock the database: {other}"),
        }));
    }
    conn.batch("PRAGMA journal_mode = DELETE;")?;
    Ok(Ok(conn))
}
