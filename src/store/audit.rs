//! The SQL of `nestflux_audit`: append one event after the chain's head inside the caller's
//! transaction, read pages for the `audit` action, walk the chain for `verify` and `export`,
//! and prune the oldest rows.
//!
//! Appending reads the head inside the transaction that inserts, under a lock that every
//! appender takes: on SQLite the write lock (`BEGIN IMMEDIATE`; inside the server, the one
//! writer), on PostgreSQL a transaction-scoped advisory lock. So the chain is one sequence
//! whatever the number of writers or instances, and a rolled-back write takes its event
//! (and its place in the chain) with it.

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};

use super::conn::FixedStatement;
use super::dialect::{Bind, Kind, placeholder};
use super::sessions::rows;
use super::{Conn, StoreError};
use crate::audit::chain::{self, Event, Row};

/// The advisory lock key of the chain on PostgreSQL ("nfaudit1" as a big-endian i64).
pub const PG_CHAIN_LOCK: i64 = 0x6e66_6175_6469_7431;

const COLUMNS: &str = "seq, at, actor, action, resource, record_id, outcome, details, \
                       request_id, client_ip, prev_hash, hash";

/// One stored row, as read.
#[derive(Debug, Clone, QueryableByName)]
struct Stored {
    #[diesel(sql_type = BigInt)]
    seq: i64,
    #[diesel(sql_type = Text)]
    at: String,
    #[diesel(sql_type = Text)]
    actor: String,
    #[diesel(sql_type = Text)]
    action: String,
    #[diesel(sql_type = Text)]
    resource: String,
    #[diesel(sql_type = Text)]
    record_id: String,
    #[diesel(sql_type = Text)]
    outcome: String,
    #[diesel(sql_type = Text)]
    details: String,
    #[diesel(sql_type = Text)]
    request_id: String,
    #[diesel(sql_type = Text)]
    client_ip: String,
    #[diesel(sql_type = Text)]
    prev_hash: String,
    #[diesel(sql_type = Text)]
    hash: String,
}

impl From<Stored> for Row {
    fn from(s: Stored) -> Self {
        Row {
            seq: s.seq,
            event: Event {
                at: s.at,
                actor: s.actor,
                action: s.action,
                resource: s.resource,
                record_id: s.record_id,
                outcome: s.outcome,
                details: s.details,
                request_id: s.request_id,
                client_ip: s.client_ip,
            },
            prev_hash: s.prev_hash,
            hash: s.hash,
        }
    }
}

/// The head of the chain, `(seq, hash)`; `None` while the chain is empty.
type Head = Option<(i64, String)>;

/// The chain head the writer keeps between appends, so an append reads no row: on SQLite
/// from batch to batch, on PostgreSQL within one batch (which holds the chain's lock from
/// its `BEGIN`; other instances append between batches).
///
/// It is only trusted while nothing else can have moved the chain: it is forgotten (and the
/// next append reads the head again, inside its transaction) when a write's savepoint rolls
/// back or a batch does not commit (what was appended is gone), and on SQLite at the start
/// of a batch when another connection committed since the writer's last one (`PRAGMA
/// data_version`, read under the write lock): `nestflux keys rotate`, `audit prune`, a
/// pooled write.
#[derive(Debug, Default)]
pub struct HeadCache {
    /// `None`: unknown.
    head: Option<Head>,
    /// `PRAGMA data_version` at the last batch start: it changes when another connection
    /// commits.
    data_version: Option<String>,
}

/// Forgets the chain head a connection keeps, if it keeps one: what it appended since its
/// last commit may have been rolled back.
pub fn forget_head(conn: &mut Conn) {
    if let Some(cache) = conn.head_cache() {
        cache.head = None;
    }
}

/// At the start of a writer batch, under the write lock: forgets the kept head if another
/// connection committed since the last batch (or if that cannot be told).
pub fn batch_began(conn: &mut Conn) {
    // A PostgreSQL writer's head lives for one batch only (`Lease::Batch`).
    if conn.is_postgres() || conn.head_cache().is_none() {
        return;
    }
    let version = conn
        .query_json_cached(
            "SELECT CAST(data_version AS TEXT) AS j FROM pragma_data_version",
            &[],
        )
        .ok()
        .and_then(|v| v.into_iter().next());
    if let Some(cache) = conn.head_cache()
        && (version.is_none() || cache.data_version != version)
    {
        cache.head = None;
        cache.data_version = version;
    }
}

/// The chain's head as stored, read in the caller's transaction (a prepared statement).
fn read_head(conn: &mut Conn) -> Result<Head, StoreError> {
    let found = conn.query_json_cached(
        "SELECT CAST(seq AS TEXT) || ':' || hash AS j FROM nestflux_audit ORDER BY seq DESC LIMIT 1",
        &[],
    )?;
    match found.into_iter().next() {
        None => Ok(None),
        Some(text) => text
            .split_once(':')
            .and_then(|(seq, hash)| Some((seq.parse().ok()?, hash.to_string())))
            .map(Some)
            .ok_or_else(|| StoreError::Database("the audit chain head is malformed".into())),
    }
}

fn text(s: &str) -> Bind {
    Bind::Text(Some(s.to_string()))
}

fn ph(pg: bool, n: usize) -> String {
    placeholder(pg, n, Kind::Text)
}

/// Appends `events` after the chain's head, in the caller's open transaction; returns the
/// rows as stored. On PostgreSQL it first takes the chain's advisory lock, held until the
/// transaction ends, so call it last in the transaction: the lock is then held only for the
/// insert and the commit (the writer's connection took it at `BEGIN`). The head is read from
/// the table, or taken from the connection's [`HeadCache`] (the writer's).
pub fn append(conn: &mut Conn, events: &[Event]) -> Result<Vec<Row>, StoreError> {
    // The writer's connection, the one that keeps a head, already holds the lock.
    if conn.is_postgres() && conn.head_cache().is_none() {
        conn.batch(&format!("SELECT pg_advisory_xact_lock({PG_CHAIN_LOCK})"))?;
    }
    // Taken out: on any error below it stays unknown, and the next append reads it.
    let kept = conn.head_cache().and_then(|c| c.head.take());
    let mut head = match kept {
        Some(head) => head,
        None => read_head(conn)?,
    };
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        let (seq, prev_hash) = chain::place_after(head.as_ref().map(|(s, h)| (*s, h.as_str())));
        let hash = chain::hash(&prev_hash, seq, e);
        let binds = [
            Bind::Int(Some(seq)),
            text(&e.at),
            text(&e.actor),
            text(&e.action),
            text(&e.resource),
            text(&e.record_id),
            text(&e.outcome),
            text(&e.details),
            text(&e.request_id),
            text(&e.client_ip),
            Bind::Text(Some(prev_hash)),
            Bind::Text(Some(hash)),
        ];
        conn.execute_fixed::<Insert>(&binds)?;
        // The row as stored, made of the binds' strings: the values are copied once.
        let [
            _,
            at,
            actor,
            action,
            resource,
            record_id,
            outcome,
            details,
            request_id,
            client_ip,
            prev_hash,
            hash,
        ] = binds.map(|b| match b {
            Bind::Text(Some(s)) => s,
            _ => String::new(),
        });
        head = Some((seq, hash.clone()));
        out.push(Row {
            seq,
            event: Event {
                at,
                actor,
                action,
                resource,
                record_id,
                outcome,
                details,
                request_id,
                client_ip,
            },
            prev_hash,
            hash,
        });
    }
    if let Some(cache) = conn.head_cache() {
        cache.head = Some(head);
    }
    Ok(out)
}

/// The insert of one row, found prepared by its type.
struct Insert;

impl FixedStatement for Insert {
    fn text(pg: bool) -> &'static str {
        insert_sql(pg)
    }
}

/// The insert of one row, built once per dialect.
fn insert_sql(pg: bool) -> &'static str {
    static SQL: [std::sync::OnceLock<String>; 2] =
        [std::sync::OnceLock::new(), std::sync::OnceLock::new()];
    SQL[usize::from(pg)].get_or_init(|| {
        format!(
            "INSERT INTO nestflux_audit ({COLUMNS}) VALUES ({})",
            (1..=12).map(|n| ph(pg, n)).collect::<Vec<_>>().join(", ")
        )
    })
}

/// What the `audit` action may filter on; every filter is an equality but the time range.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// `actor = …`
    pub actor: Option<String>,
    /// `action = …`
    pub action: Option<String>,
    /// `resource = …`
    pub resource: Option<String>,
    /// `record_id = …`
    pub record_id: Option<String>,
    /// `at >= …` (RFC 3339 UTC, the stored form)
    pub since: Option<String>,
    /// `at < …`
    pub until: Option<String>,
    /// Rows with `seq` below this (the cursor: newest first).
    pub before_seq: Option<i64>,
    /// A time bound no stored row can meet (`since` after year 9999, `until` before year
    /// 0000, once its offset is applied): the page is empty.
    pub matches_nothing: bool,
}

/// Up to `limit` rows matching `f`, newest first.
pub fn page(conn: &mut Conn, f: &Filter, limit: usize) -> Result<Vec<Row>, StoreError> {
    if f.matches_nothing {
        return Ok(Vec::new());
    }
    let pg = conn.is_postgres();
    let mut wheres = Vec::new();
    let mut binds = Vec::new();
    for (col, op, v) in [
        ("actor", "=", &f.actor),
        ("action", "=", &f.action),
        ("resource", "=", &f.resource),
        ("record_id", "=", &f.record_id),
        ("at", ">=", &f.since),
        ("at", "<", &f.until),
    ] {
        if let Some(v) = v {
            binds.push(text(v));
            wheres.push(format!("{col} {op} {}", ph(pg, binds.len())));
        }
    }
    if let Some(seq) = f.before_seq {
        binds.push(Bind::Int(Some(seq)));
        wheres.push(format!("seq < {}", placeholder(pg, binds.len(), Kind::Int)));
    }
    let cond = if wheres.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", wheres.join(" AND "))
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM nestflux_audit {cond} ORDER BY seq DESC LIMIT {}",
        limit.min(1000)
    );
    Ok(rows::<Stored>(conn, &sql, &binds)?
        .into_iter()
        .map(Row::from)
        .collect())
}

/// Up to `limit` rows with `seq > after`, oldest first (`verify`, `export`).
pub fn walk(conn: &mut Conn, after: i64, limit: usize) -> Result<Vec<Row>, StoreError> {
    let pg = conn.is_postgres();
    let sql = format!(
        "SELECT {COLUMNS} FROM nestflux_audit WHERE seq > {} ORDER BY seq LIMIT {}",
        placeholder(pg, 1, Kind::Int),
        limit.max(1)
    );
    Ok(rows::<Stored>(conn, &sql, &[Bind::Int(Some(after))])?
        .into_iter()
        .map(Row::from)
        .collect())
}

/// The newest anchor row recording a prune through `seq` (its `record_id`).
pub fn anchor_for(conn: &mut Conn, seq: i64) -> Result<Option<Row>, StoreError> {
    let pg = conn.is_postgres();
    let sql = format!(
        "SELECT {COLUMNS} FROM nestflux_audit WHERE action = 'audit.prune' AND record_id = {} \
         ORDER BY seq DESC LIMIT 1",
        ph(pg, 1)
    );
    Ok(rows::<Stored>(conn, &sql, &[text(&seq.to_string())])?
        .into_iter()
        .next()
        .map(Row::from))
}

/// The last row older than `cutoff` (RFC 3339 UTC), if any: what a prune would delete
/// through.
pub fn last_before(conn: &mut Conn, cutoff: &str) -> Result<Option<Row>, StoreError> {
    let pg = conn.is_postgres();
    let sql = format!(
        "SELECT {COLUMNS} FROM nestflux_audit WHERE at < {} ORDER BY seq DESC LIMIT 1",
        ph(pg, 1)
    );
    Ok(rows::<Stored>(conn, &sql, &[text(cutoff)])?
        .into_iter()
        .next()
        .map(Row::from))
}

/// Deletes every row with `seq <= through`; returns how many.
pub fn delete_through(conn: &mut Conn, through: i64) -> Result<usize, StoreError> {
    let pg = conn.is_postgres();
    conn.execute(
        &format!(
            "DELETE FROM nestflux_audit WHERE seq <= {}",
            placeholder(pg, 1, Kind::Int)
        ),
        &[Bind::Int(Some(through))],
    )
}
