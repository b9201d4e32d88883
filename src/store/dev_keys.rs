//! The development issuer's signing keys in `nestflux_dev_keys`: read newest first, and
//! stored once. What the key is and how it signs belongs to `auth::dev`.

use diesel::prelude::*;
use diesel::sql_types::Text;

use super::conn::Raw;
use super::dialect::{Bind, Kind, placeholder};
use super::{Conn, StoreError, now};
use crate::plan::data::{DatabasePlan, DatabaseUrl};

/// One stored key: its id and its PKCS#8 PEM.
#[derive(QueryableByName)]
pub struct StoredKey {
    /// The key id (`kid` of the tokens it signs).
    #[diesel(sql_type = Text)]
    pub kid: String,
    /// The private key as PKCS#8 PEM.
    #[diesel(sql_type = Text)]
    pub private_pem: String,
}

const LOAD: &str = "SELECT kid, private_pem FROM nestflux_dev_keys ORDER BY created_at DESC, kid";

/// Every stored key, newest first.
pub fn load(conn: &mut Conn) -> Result<Vec<StoredKey>, StoreError> {
    let sql = LOAD;
    conn.with_raw(|raw| match raw {
        Raw::Sqlite(c) => diesel::sql_query(sql).load::<StoredKey>(c),
        #[cfg(feature = "postgres")]
        Raw::Pg(c) => diesel::sql_query(sql).load::<StoredKey>(c),
    })
}

/// Stores a new key, stamped now.
pub fn insert(conn: &mut Conn, kid: &str, private_pem: &str) -> Result<(), StoreError> {
    let pg = conn.is_postgres();
    let ph = |n: usize| placeholder(pg, n, Kind::Text);
    conn.execute(
        &format!(
            "INSERT INTO nestflux_dev_keys (kid, private_pem, created_at) VALUES ({}, {}, {})",
            ph(1),
            ph(2),
            ph(3)
        ),
        &[
            Bind::Text(Some(kid.to_string())),
            Bind::Text(Some(private_pem.to_string())),
            Bind::Text(Some(now())),
        ],
    )?;
    Ok(())
}

/// Every stored key, newest first, read on a connection of its own that creates, migrates
/// and writes nothing (SQLite opened with `mode=ro`; a read-only PostgreSQL transaction).
/// Empty when the database or the table does not exist yet.
pub fn load_read_only(db: &DatabasePlan) -> Result<Vec<StoredKey>, StoreError> {
    use diesel::Connection;
    match &db.url {
        DatabaseUrl::Sqlite(path) => {
            if !path.exists() {
                return Ok(Vec::new());
            }
            let text = path.to_string_lossy();
            let escaped = text
                .replace('%', "%25")
                .replace('?', "%3f")
                .replace('#', "%23");
            let mut c =
                diesel::sqlite::SqliteConnection::establish(&format!("file:{escaped}?mode=ro"))
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            missing_table_is_empty(diesel::sql_query(LOAD).load::<StoredKey>(&mut c))
        }
        #[cfg(feature = "postgres")]
        DatabaseUrl::Postgres(url) => {
            let mut c = diesel::pg::PgConnection::establish(url)
                .map_err(|_| StoreError::Unavailable("cannot connect to PostgreSQL".into()))?;
            diesel::connection::SimpleConnection::batch_execute(
                &mut c,
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            )?;
            missing_table_is_empty(diesel::sql_query(LOAD).load::<StoredKey>(&mut c))
        }
        #[cfg(not(feature = "postgres"))]
        DatabaseUrl::Postgres(_) => Err(StoreError::Unavailable(
            "this build has no PostgreSQL support: rebuild with `--features postgres`".into(),
        )),
    }
}

fn missing_table_is_empty(
    rows: Result<Vec<StoredKey>, diesel::result::Error>,
) -> Result<Vec<StoredKey>, StoreError> {
    match rows {
        Ok(rows) => Ok(rows),
        Err(diesel::result::Error::DatabaseError(_, info))
            if info.message().contains("no such table")
                || info.message().contains("does not exist") =>
        {
            Ok(Vec::new())
        }
        Err(e) => Err(StoreError::from(e)),
    }
}
