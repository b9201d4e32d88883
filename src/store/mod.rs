//! Where data lives: a diesel r2d2 pool over an embedded SQLite file or PostgreSQL, the
//! internal migrations, declared-resource tables (with drift refused) and their CRUD SQL.
//!
//! SQL text is built only from the compiled plan (identifiers validated at compile time);
//! request values are always bound parameters. Blocking database work runs off the async
//! workers. Every write of a running server goes through the one writer thread (group
//! commit): on SQLite on a connection of its own, reads never waiting behind it (WAL); on
//! PostgreSQL on a pooled connection per batch. PostgreSQL's reads use the pool, whose
//! connections are checked before they are lent only when idle (`Check`).
//!
//! ```text
//! dialect   Kind, Bind, placeholders, quoting, row-as-JSON: the only SQLite/PostgreSQL switch
//! table     a declared resource as columns, from the plan
//! ddl       create and extend tables and their indexes, refuse destructive drift
//! crud      get, list, create, update, delete of one resource       (dialect, table)
//! cursor    list cursors, MAC'd and bounded
//! writer    the writer thread: bounded queue, group commit, savepoint per write;
//!           checkpoint: the thread that checkpoints the WAL outside the writer's commits
//! audit     `nestflux_audit`: append after the chain's head, pages, walks, pruning
//! rotate    `nestflux keys rotate`: rows re-encrypted to the active key
//! users     the users table and the lossy sightings channel; dev_keys: the development
//!           issuer's keys; secrets: server secrets generated on first start
//! sessions  browser sessions and pending logins (refresh claimed and stored by compare-and-swap)
//! open      the one way `serve`, `migrate` and `keys rotate` open a database
//! ```

pub mod audit;
pub mod checkpoint;
pub mod conn;
pub mod crud;
pub mod cursor;
pub mod ddl;
pub mod dev_keys;
pub mod dialect;
pub mod rotate;
pub mod secrets;
pub mod sessions;
pub mod table;
pub mod users;
pub mod writer;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool};
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

pub use conn::Conn;
pub use dialect::Bind;

use crate::deadline::Deadline;
use crate::plan::Plan;
use crate::plan::data::{DatabasePlan, DatabaseUrl, ResourceName};
use crud::Resource;
use cursor::CursorKeys;
use table::Table;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
#[cfg(feature = "postgres")]
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Why a database operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database is down, locked past the timeout, or the pool is exhausted: 503.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The request's deadline passed before the work could run or finish; nothing was
    /// written: 503.
    #[error("the request deadline passed before the database work finished")]
    Timeout,
    /// The write queue is full: 503 at once, with `Retry-After`.
    #[error("the write queue is full")]
    Overloaded,
    /// A row that does not exist (or is not the caller's to see).
    #[error("not found")]
    NotFound,
    /// A stored value the plan cannot read back (corruption, manual edits).
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    /// Anything else from the database. Logged, never shown to a caller.
    #[error("database error: {0}")]
    Database(String),
    /// The declared resources differ destructively from the tables on disk.
    #[error("{0}")]
    Drift(String),
}

impl From<diesel::result::Error> for StoreError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match &e {
            Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _) => {
                Self::Unavailable(e.to_string())
            }
            Error::DatabaseError(_, info) => {
                let m = info.message().to_ascii_lowercase();
                // PostgreSQL's `SET LOCAL statement_timeout` / `lock_timeout` from the deadline.
                if m.contains("statement timeout") || m.contains("lock timeout") {
                    return Self::Timeout;
                }
                if m.contains("database is locked")
                    || m.contains("busy")
                    || m.contains("connection")
                    || m.contains("terminating")
                    || m.contains("shutting down")
                {
                    Self::Unavailable(e.to_string())
                } else {
                    Self::Database(e.to_string())
                }
            }
            Error::NotFound => Self::NotFound,
            _ => Self::Database(e.to_string()),
        }
    }
}

impl From<diesel::r2d2::PoolError> for StoreError {
    fn from(e: diesel::r2d2::PoolError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// Per-connection SQLite settings: wait for locks, enforce foreign keys, fsync on commit.
#[derive(Debug)]
struct SqliteSetup {
    busy_timeout: Duration,
}

impl SqliteSetup {
    fn apply(&self, conn: &mut SqliteConnection) -> diesel::QueryResult<()> {
        conn.batch_execute(&format!(
            "PRAGMA busy_timeout = {}; PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;",
            self.busy_timeout.as_millis()
        ))
    }
}

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for SqliteSetup {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        self.apply(conn).map_err(diesel::r2d2::Error::QueryError)
    }
}

/// How a pooled PostgreSQL connection is checked before it is lent. PostgreSQL may have
/// ended it while it sat in the pool (a restart, a failover, `pg_terminate_backend`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Check {
    /// With `SELECT 1`, one round trip: for work that could not run again on another
    /// connection.
    Always,
    /// Only when it was last lent more than [`PG_TRUSTED_FOR`] ago (HikariCP's bypass
    /// window): for work that runs once more when its connection turns out ended
    /// ([`lend_once_more`]).
    IfIdle,
}

/// How long after it was lent a pooled PostgreSQL connection is lent again without a
/// check. Under load every connection is lent again within a few milliseconds, and the
/// check was one round trip of two on every read (bench/RESULTS.md, PostgreSQL).
#[cfg(feature = "postgres")]
const PG_TRUSTED_FOR: Duration = Duration::from_millis(500);

/// When a pooled PostgreSQL connection was last lent (kept in the pool with it).
#[cfg(feature = "postgres")]
struct LastLent(std::time::Instant);

/// A connection from the PostgreSQL pool, checked as `check` says; one that fails the
/// check is closed and another taken, until `wait` runs out (as r2d2's own check does; the
/// pool is built without it).
#[cfg(feature = "postgres")]
fn lend_pg(
    pool: &Pool<ConnectionManager<diesel::pg::PgConnection>>,
    wait: Duration,
    check: Check,
) -> Result<diesel::r2d2::PooledConnection<ConnectionManager<diesel::pg::PgConnection>>, StoreError>
{
    use diesel::r2d2::{PooledConnection, R2D2Connection};
    let until = std::time::Instant::now() + wait;
    loop {
        let mut c = pool.get_timeout(until.saturating_duration_since(std::time::Instant::now()))?;
        let now = std::time::Instant::now();
        let last = PooledConnection::extensions_mut(&mut c).insert(LastLent(now));
        let trusted = check == Check::IfIdle
            && last.is_some_and(|LastLent(at)| now.duration_since(at) < PG_TRUSTED_FOR);
        if trusted || c.ping().is_ok() {
            return Ok(c);
        }
        conn::mark_ended(&mut c);
    }
}

/// Runs `f` on a connection from `lend`, lent [`Check::IfIdle`]. When a statement of `f`
/// found that PostgreSQL had ended that connection (lent unchecked, or ended since its
/// check), the connection goes back to be closed and `f` runs once more, on one lent
/// [`Check::Always`]. Only for work that may run twice: a read, the writer's `BEGIN`.
fn lend_once_more<T>(
    lend: impl Fn(Check) -> Result<Conn, StoreError>,
    mut f: impl FnMut(&mut Conn) -> Result<T, StoreError>,
) -> Result<(Conn, T), StoreError> {
    let mut conn = lend(Check::IfIdle)?;
    match f(&mut conn) {
        Err(_) if conn.found_closed() => {
            // Back to the pool first: with one connection, the next would wait for it.
            drop(conn);
            let mut conn = lend(Check::Always)?;
            f(&mut conn).map(|done| (conn, done))
        }
        done => done.map(|done| (conn, done)),
    }
}

#[derive(Clone)]
enum Pools {
    Sqlite(Pool<ConnectionManager<SqliteConnection>>),
    #[cfg(feature = "postgres")]
    Pg(Pool<ConnectionManager<diesel::pg::PgConnection>>),
}

/// The connection pool (and, once started, the writer), shared by all workers.
#[derive(Clone)]
pub struct Store {
    pools: Pools,
    /// The SQLite file, for the writer's own connection.
    sqlite_path: Option<String>,
    busy_timeout: Duration,
    /// The writer; `None` before [`Store::start`] (and in the command-line tools).
    writer: Option<Arc<writer::Writer>>,
    /// Where verified subjects are reported; `None` before [`Store::start`].
    sightings: Option<Arc<users::Sightings>>,
    /// SQLite, once started: this store's number for the read connection each worker
    /// thread keeps (see [`Store::read`]).
    inline_reads: Option<usize>,
    /// Writer queue depth, commit batch size and commit latency (detached by default).
    metrics: crate::metrics::StoreMetrics,
}

thread_local! {
    /// The calling thread's own SQLite read connection, with the number of its store.
    static READER: std::cell::RefCell<Option<(usize, Conn)>> = const { std::cell::RefCell::new(None) };
}

/// Numbers stores for their per-thread read connections.
static STORES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

impl Store {
    /// Opens the pool and applies the internal migrations. Returns the migrations applied.
    pub fn open(plan: &DatabasePlan) -> Result<(Self, Vec<String>), StoreError> {
        let sqlite_path;
        let pools = match &plan.url {
            DatabaseUrl::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| StoreError::Unavailable(format!("{}: {e}", dir.display())))?;
                }
                let url = path.to_string_lossy().to_string();
                // WAL is a property of the file: set it once, before the pool opens.
                let mut first = <SqliteConnection as diesel::Connection>::establish(&url)
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                first.batch_execute("PRAGMA journal_mode = WAL;")?;
                drop(first);
                let pool = Pool::builder()
                    .max_size(plan.pool_size)
                    .connection_timeout(plan.busy_timeout)
                    .connection_customizer(Box::new(SqliteSetup {
                        busy_timeout: plan.busy_timeout,
                    }))
                    .build(ConnectionManager::<SqliteConnection>::new(url.clone()))
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                sqlite_path = Some(url);
                Pools::Sqlite(pool)
            }
            #[cfg(feature = "postgres")]
            DatabaseUrl::Postgres(url) => {
                let pool = Pool::builder()
                    .max_size(plan.pool_size)
                    .connection_timeout(plan.busy_timeout)
                    // `lend_pg` checks the connections it lends.
                    .test_on_check_out(false)
                    .build(ConnectionManager::<diesel::pg::PgConnection>::new(
                        url.clone(),
                    ))
                    .map_err(|_| StoreError::Unavailable("cannot connect to PostgreSQL".into()))?;
                sqlite_path = None;
                Pools::Pg(pool)
            }
            #[cfg(not(feature = "postgres"))]
            DatabaseUrl::Postgres(_) => {
                return Err(StoreError::Unavailable(
                    "this build has no PostgreSQL support: rebuild with `--features postgres`"
                        .into(),
                ));
            }
        };
        let store = Self {
            pools,
            sqlite_path,
            busy_timeout: plan.busy_timeout,
            writer: None,
            sightings: None,
            inline_reads: None,
            metrics: Default::default(),
        };
        let applied = store
            .conn()?
            .with_advisory_lock(SCHEMA_LOCK, migrate_internal)?;
        Ok((store, applied))
    }

    /// Counts the writer's queue and the commits into `metrics` (before [`Store::start`]).
    pub fn with_metrics(mut self, metrics: crate::metrics::StoreMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Starts the writer thread of a serving process: every write of [`Store::write`] then
    /// goes through it, with room for `database.write_queue` waiting writes, and so do the
    /// user sightings. On SQLite it gets a connection of its own and the WAL checkpointer;
    /// on PostgreSQL it borrows a pooled connection for each batch.
    pub fn start(mut self, plan: &DatabasePlan) -> Result<Self, StoreError> {
        let (sightings, rx) = users::Sightings::channel(plan.last_seen_interval);
        let queue = plan.write_queue;
        let io = |e: std::io::Error| StoreError::Unavailable(format!("store thread: {e}"));
        match &self.sqlite_path {
            Some(path) => {
                let mut conn = self.own_sqlite_connection(path)?;
                // Each write's savepoint saves the pages it changes first to the statement
                // sub-journal: in memory, not a temporary file written page by page (that
                // was a fifth of the writer's time). Durability comes from the WAL alone.
                conn.batch_execute("PRAGMA temp_store = MEMORY;")?;
                // WAL checkpoints leave the writer's commits (see `checkpoint`).
                conn.batch_execute(&format!(
                    "PRAGMA wal_autocheckpoint = {};",
                    checkpoint::BACKSTOP_PAGES
                ))?;
                let checkpointer =
                    checkpoint::start(self.own_sqlite_connection(path)?).map_err(io)?;
                let conn = Conn::Sqlite(conn::Lease::Writer(conn, Box::default()));
                self.writer = Some(Arc::new(
                    writer::Writer::start(
                        writer::Link::Own(conn, checkpointer),
                        queue,
                        self.busy_timeout,
                        rx,
                        self.metrics.clone(),
                    )
                    .map_err(io)?,
                ));
                self.inline_reads = Some(STORES.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            }
            None => {
                self.writer = Some(Arc::new(
                    writer::Writer::start(
                        writer::Link::Pooled(self.clone()),
                        queue,
                        self.busy_timeout,
                        rx,
                        self.metrics.clone(),
                    )
                    .map_err(io)?,
                ));
            }
        }
        self.sightings = Some(Arc::new(sightings));
        Ok(self)
    }

    /// A connection to the SQLite file outside the pool, for a thread of the store's own.
    fn own_sqlite_connection(&self, path: &str) -> Result<SqliteConnection, StoreError> {
        let mut conn = <SqliteConnection as diesel::Connection>::establish(path)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        SqliteSetup {
            busy_timeout: self.busy_timeout,
        }
        .apply(&mut conn)?;
        Ok(conn)
    }

    /// A pooled connection; waits at most `database.busy_timeout`.
    pub fn conn(&self) -> Result<Conn, StoreError> {
        self.conn_within(self.busy_timeout, Check::Always)
    }

    /// A pooled connection, waiting at most `wait` (and never past the busy timeout); a
    /// PostgreSQL one checked first as `check` says.
    fn conn_within(&self, wait: Duration, check: Check) -> Result<Conn, StoreError> {
        let wait = wait.min(self.busy_timeout);
        if wait.is_zero() {
            return Err(StoreError::Timeout);
        }
        #[cfg(not(feature = "postgres"))]
        let _ = check;
        Ok(match &self.pools {
            // r2d2 checks every connection it lends (an SQLite one costs no round trip).
            Pools::Sqlite(p) => Conn::Sqlite(conn::Lease::Pooled(p.get_timeout(wait)?)),
            #[cfg(feature = "postgres")]
            Pools::Pg(p) => Conn::Pg(conn::Lease::Pooled(lend_pg(p, wait, check)?)),
        })
    }

    /// A pooled connection lent to the writer for one batch, keeping the audit chain's
    /// head for that batch (see [`conn::Lease::Batch`]).
    fn batch_conn_within(&self, wait: Duration, check: Check) -> Result<Conn, StoreError> {
        Ok(match self.conn_within(wait, check)? {
            Conn::Sqlite(conn::Lease::Pooled(c)) => {
                Conn::Sqlite(conn::Lease::Batch(c, Box::default()))
            }
            #[cfg(feature = "postgres")]
            Conn::Pg(conn::Lease::Pooled(c)) => Conn::Pg(conn::Lease::Batch(c, Box::default())),
            other => other,
        })
    }

    /// The pool's connections and how many of them are idle (for the metrics).
    pub fn pool_state(&self) -> (u32, u32) {
        let state = match &self.pools {
            Pools::Sqlite(p) => p.state(),
            #[cfg(feature = "postgres")]
            Pools::Pg(p) => p.state(),
        };
        (state.connections, state.idle_connections)
    }

    /// Whether the database is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        !matches!(self.pools, Pools::Sqlite(_))
    }

    /// Reports a verified subject for the users table, off the request path: throttled per
    /// subject, dropped when the writer is behind, never waited for.
    pub fn sighted(&self, s: &users::Sighting) {
        if let Some(sightings) = &self.sightings {
            sightings.offer(s);
        }
    }

    /// Runs read-only work, answered by `deadline` (503 after it).
    ///
    /// On SQLite once started, the work runs right on the calling worker thread, on a read
    /// connection of its own that never waits for a lock (`busy_timeout = 0`,
    /// `query_only`): a point read or a page of 50 takes microseconds, less than handing it
    /// to another thread and back (the profile in bench/RESULTS.md). Reads never wait behind
    /// the writer (WAL); in the rare case SQLite reports the database busy, the work is
    /// run again on a pooled connection off the workers, which may wait.
    pub async fn read<T: Send + 'static>(
        &self,
        deadline: Deadline,
        f: impl Fn(&mut Conn) -> Result<T, StoreError> + Send + Sync + 'static,
    ) -> Result<T, StoreError> {
        if deadline.passed() {
            return Err(StoreError::Timeout);
        }
        if let Some(done) = self.read_here(&f) {
            return done;
        }
        let store = self.clone();
        let work = actix_web::web::block(move || {
            lend_once_more(|check| store.conn_within(deadline.remaining(), check), &f)
                .map(|(_, read)| read)
        });
        deadline
            .within(work)
            .await
            .map_err(|_| StoreError::Timeout)?
            // The blocking task panicked or was cancelled: a server fault, not an outage.
            .map_err(|_| StoreError::Database("the database task did not finish".into()))?
    }

    /// `f` on this thread's own read connection; `None` when there is none (PostgreSQL, a
    /// store not started) or the database was busy.
    fn read_here<T>(
        &self,
        f: &dyn Fn(&mut Conn) -> Result<T, StoreError>,
    ) -> Option<Result<T, StoreError>> {
        let (number, path) = (self.inline_reads?, self.sqlite_path.as_ref()?);
        READER.with(|cell| {
            let mut slot = cell.try_borrow_mut().ok()?;
            if !matches!(&*slot, Some((n, _)) if *n == number) {
                let mut conn = <SqliteConnection as diesel::Connection>::establish(path).ok()?;
                conn.batch_execute("PRAGMA busy_timeout = 0; PRAGMA query_only = ON;")
                    .ok()?;
                *slot = Some((number, Conn::Sqlite(conn::Lease::Owned(conn))));
            }
            let (_, conn) = slot.as_mut()?;
            match f(conn) {
                Err(StoreError::Unavailable(_)) => None,
                done => Some(done),
            }
        })
    }

    /// Counts a write request (POST, PUT, PATCH, DELETE) for the writer's group commit,
    /// from now until the guard is dropped; `None` without the writer.
    pub fn expect_write(&self) -> Option<writer::Expected> {
        self.writer.as_ref().map(|w| w.expect())
    }

    /// Runs a write as one transaction that either commits, and then answers `Ok`, or
    /// leaves nothing behind. With the writer started it is queued (a full queue answers
    /// [`StoreError::Overloaded`] at once) and committed with the writes queued meanwhile;
    /// otherwise (the command-line tools) it runs on a pooled connection with its
    /// statements and lock waits bounded by `deadline`. Either way the answer comes shortly
    /// after the deadline at the latest, so it is awaited in full: giving up earlier could
    /// report a failure for a write that commits. `f` may run twice, in a transaction rolled
    /// back in between (see [`writer`]): only its last run counts.
    pub async fn write<T: Send + 'static>(
        &self,
        deadline: Deadline,
        mut f: impl FnMut(&mut Conn) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        if deadline.passed() {
            return Err(StoreError::Timeout);
        }
        if let Some(writer) = &self.writer {
            let reply = writer.submit(deadline, f)?;
            return reply.await.unwrap_or_else(|_| {
                Err(StoreError::Unavailable(
                    "the database writer stopped".into(),
                ))
            });
        }
        let store = self.clone();
        actix_web::web::block(move || {
            if deadline.passed() {
                return Err(StoreError::Timeout);
            }
            let mut conn = store.conn_within(deadline.remaining(), Check::Always)?;
            let began = std::time::Instant::now();
            let done = conn.transaction(|c| {
                c.limit_to(deadline)?;
                f(c)
            });
            store.committed(&done, began);
            done
        })
        .await
        .map_err(|_| StoreError::Database("the database task did not finish".into()))?
    }

    /// [`Store::write`] from a thread outside the async workers (the audit sink, tools):
    /// through the writer when it runs, else as one transaction on a pooled connection.
    pub fn write_blocking<T: Send + 'static>(
        &self,
        deadline: Deadline,
        mut f: impl FnMut(&mut Conn) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        if let Some(writer) = &self.writer {
            return writer
                .submit(deadline, f)?
                .blocking_recv()
                .unwrap_or_else(|_| {
                    Err(StoreError::Unavailable(
                        "the database writer stopped".into(),
                    ))
                });
        }
        let mut conn = self.conn_within(deadline.remaining(), Check::Always)?;
        let began = std::time::Instant::now();
        let done = conn.transaction(|c| {
            c.limit_to(deadline)?;
            f(c)
        });
        self.committed(&done, began);
        done
    }

    /// Counts one write committed in its own transaction (no writer: the command-line tools).
    fn committed<T>(&self, done: &Result<T, StoreError>, began: std::time::Instant) {
        if done.is_ok() {
            self.metrics.batch_size.observe(1.0);
            self.metrics
                .commit_seconds
                .observe(began.elapsed().as_secs_f64());
        }
    }

    /// Runs blocking database work off the async workers, on a pooled connection that
    /// waits at most `database.busy_timeout` (for a connection, and on SQLite for the write
    /// lock, which it may share with the writer). For the server's own tables (browser
    /// sessions, pending logins); a declared resource's rows go through [`Store::read`] and
    /// [`Store::write`], which carry the request's deadline.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        actix_web::web::block(move || {
            let mut conn = store.conn()?;
            f(&mut conn)
        })
        .await
        // The blocking task panicked or was cancelled: a server fault, not an outage.
        .map_err(|_| StoreError::Database("the database task did not finish".into()))?
    }

    /// Whether the database answers right now (for `health`).
    pub async fn ping(&self) -> bool {
        self.read(Deadline::after(self.busy_timeout), |c| c.batch("SELECT 1"))
            .await
            .is_ok()
    }
}

/// The PostgreSQL advisory lock held while the schema changes (internal migrations, then
/// the declared resources' DDL): instances starting together on one database take turns,
/// and each later one finds the work done. (`nestflux` in ASCII.)
pub const SCHEMA_LOCK: i64 = 0x6e65_7374_666c_7578;

fn migrate_internal(conn: &mut Conn) -> Result<Vec<String>, StoreError> {
    let fail = |e: Box<dyn std::error::Error + Send + Sync>| {
        StoreError::Database(format!("migrations: {e}"))
    };
    let versions = match conn {
        Conn::Sqlite(c) => names(c.run_pending_migrations(SQLITE_MIGRATIONS).map_err(fail)?),
        #[cfg(feature = "postgres")]
        Conn::Pg(c) => names(
            c.run_pending_migrations(POSTGRES_MIGRATIONS)
                .map_err(fail)?,
        ),
    };
    Ok(versions)
}

/// The newest internal migration this binary carries for SQLite (as diesel records it in
/// `__diesel_schema_migrations`): a database whose newest applied migration is later was
/// written by a newer nestflux.
pub fn sqlite_schema_version() -> Option<String> {
    use diesel::migration::MigrationSource;
    MigrationSource::<diesel::sqlite::Sqlite>::migrations(&SQLITE_MIGRATIONS)
        .ok()?
        .iter()
        .map(|m| m.name().version().to_string())
        .max()
}

fn names(versions: Vec<diesel::migration::MigrationVersion<'_>>) -> Vec<String> {
    versions.into_iter().map(|v| v.to_string()).collect()
}

/// The tables of every declared resource, from the plan.
pub fn tables(plan: &Plan) -> Vec<Table> {
    plan.resources
        .values()
        .filter_map(|r| {
            plan.schemas
                .get(&r.schema)
                .map(|s| Table::new(r, s.clone()))
        })
        .collect()
}

/// A database opened for a plan: what `serve`, `migrate` and `keys rotate` all start from.
pub struct Opened {
    /// The connection pool.
    pub store: Store,
    /// Each declared resource's table and SQL, with the key ring.
    pub resources: BTreeMap<ResourceName, Arc<Resource>>,
    /// The internal migrations applied now.
    pub migrations: Vec<String>,
    /// The declared-resource changes applied now (tables created, fields added).
    pub changes: Vec<String>,
    /// The list-cursor MAC keys (the audit log's pages use them too).
    pub cursors: Arc<CursorKeys>,
}

/// Opens the database, applies the internal migrations and the declared-resource DDL
/// (refusing destructive drift), and compiles each resource's SQL.
pub fn open(plan: &Plan) -> Result<Opened, StoreError> {
    let (store, migrations) = Store::open(&plan.database)?;
    let tables = tables(plan);
    let mut conn = store.conn()?;
    let changes = conn.with_advisory_lock(SCHEMA_LOCK, |c| ddl::sync(c, &tables))?;
    let cursors = Arc::new(cursor_keys(plan, &mut conn)?);
    drop(conn);
    let pg = store.is_postgres();
    let resources = tables
        .into_iter()
        .map(|t| {
            let ring = plan.encryption.ring.clone();
            (
                ResourceName(t.name.clone()),
                Arc::new(
                    Resource::new(t, pg)
                        .with_keys(ring)
                        .with_cursor_keys(cursors.clone()),
                ),
            )
        })
        .collect();
    Ok(Opened {
        store,
        resources,
        migrations,
        changes,
        cursors,
    })
}

/// The cursor MAC keys: derived from the key ring when there is one, else from a server
/// secret generated once and kept in the database.
fn cursor_keys(plan: &Plan, conn: &mut Conn) -> Result<CursorKeys, StoreError> {
    let keys = match &plan.encryption.ring {
        Some(ring) => ring.cursor_keys(),
        None => {
            let secret = secrets::load_or_create(conn, "cursor")?;
            vec![
                crate::crypto::MacKey::derive(&secret, crate::crypto::CURSOR_INFO)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            ]
        }
    };
    CursorKeys::new(keys).ok_or_else(|| StoreError::Corrupt("no cursor key".into()))
}

/// Warns (once, in the background) about key ids that stored values name but the key ring
/// lacks: those values answer `null` with `key-unavailable` until the key is back.
pub fn report_missing_kids(store: &Store, resources: Vec<Arc<Resource>>) {
    let store = store.clone();
    let spawned = std::thread::Builder::new()
        .name("nestflux-kid-check".into())
        .spawn(move || {
            for res in resources.iter().filter(|r| r.table.has_encrypted()) {
                let Ok(ring) = res.ring() else { continue };
                let stored = store.conn().and_then(|mut c| res.stored_kids(&mut c));
                match stored {
                    Ok(kids) => {
                        for kid in kids.iter().filter(|k| !ring.kids().any(|r| r == k.as_str())) {
                            tracing::warn!(
                                resource = %res.table.name,
                                kid = %kid,
                                "stored values need key \"{kid}\", which is not in NESTFLUX_ENCRYPTION__KEYS: they answer null (key-unavailable) until it is"
                            );
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "could not check the stored key ids"),
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not check the stored key ids");
    }
}

/// Current time as RFC 3339 UTC with microseconds: fixed width, so text order is time order.
pub fn now() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}
