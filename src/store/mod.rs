//! Where data lives: a diesel r2d2 pool over an embedded SQLite file or PostgreSQL, the
//! internal migrations, declared-resource tables (with drift refused) and their CRUD SQL.
//!
//! SQL text is built only from the compiled plan (identifiers validated at compile time);
//! request values are always bound parameters. Blocking database work runs on actix's
//! blocking pool, never on the async workers.
//!
//! ```text
//! dialect   Kind, Bind, placeholders, quoting, row-as-JSON: the only SQLite/PostgreSQL switch
//! table     a declared resource as columns, from the plan
//! ddl       create and extend tables, refuse destructive drift      (dialect, table)
//! crud      get, list, create, update, delete of one resource       (dialect, table)
//! rotate    `nestflux keys rotate`: rows re-encrypted to the active key
//! users     the users table; dev_keys: the development issuer's keys
//! sessions  browser sessions and pending logins (refresh claimed and stored by compare-and-swap)
//! open      the one way `serve`, `migrate` and `keys rotate` open a database
//! ```

pub mod conn;
pub mod crud;
pub mod ddl;
pub mod dev_keys;
pub mod dialect;
pub mod rotate;
pub mod sessions;
pub mod table;
pub mod users;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool};
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

pub use conn::Conn;
pub use dialect::Bind;

use crate::plan::Plan;
use crate::plan::data::{DatabasePlan, DatabaseUrl, ResourceName};
use crud::Resource;
use table::Table;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
#[cfg(feature = "postgres")]
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Why a database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database is down, locked past the timeout, or the pool is exhausted: 503.
    #[error("database unavailable: {0}")]
    Unavailable(String),
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

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for SqliteSetup {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute(&format!(
            "PRAGMA busy_timeout = {}; PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;",
            self.busy_timeout.as_millis()
        ))
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

#[derive(Clone)]
enum Pools {
    Sqlite(Pool<ConnectionManager<SqliteConnection>>),
    #[cfg(feature = "postgres")]
    Pg(Pool<ConnectionManager<diesel::pg::PgConnection>>),
}

/// The connection pool, shared by all workers.
#[derive(Clone)]
pub struct Store {
    pools: Pools,
}

impl Store {
    /// Opens the pool and applies the internal migrations. Returns the migrations applied.
    pub fn open(plan: &DatabasePlan) -> Result<(Self, Vec<String>), StoreError> {
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
                    .build(ConnectionManager::<SqliteConnection>::new(url))
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                Pools::Sqlite(pool)
            }
            #[cfg(feature = "postgres")]
            DatabaseUrl::Postgres(url) => {
                let pool = Pool::builder()
                    .max_size(plan.pool_size)
                    .connection_timeout(plan.busy_timeout)
                    .build(ConnectionManager::<diesel::pg::PgConnection>::new(
                        url.clone(),
                    ))
                    .map_err(|_| StoreError::Unavailable("cannot connect to PostgreSQL".into()))?;
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
        let store = Self { pools };
        let applied = store
            .conn()?
            .with_advisory_lock(SCHEMA_LOCK, migrate_internal)?;
        Ok((store, applied))
    }

    /// A pooled connection; waits at most `database.busy_timeout`.
    pub fn conn(&self) -> Result<Conn, StoreError> {
        Ok(match &self.pools {
            Pools::Sqlite(p) => Conn::Sqlite(p.get()?),
            #[cfg(feature = "postgres")]
            Pools::Pg(p) => Conn::Pg(p.get()?),
        })
    }

    /// Whether the database is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        !matches!(self.pools, Pools::Sqlite(_))
    }

    /// Runs blocking database work off the async workers.
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
        self.run(|c| c.batch("SELECT 1")).await.is_ok()
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
}

/// Opens the database, applies the internal migrations and the declared-resource DDL
/// (refusing destructive drift), and compiles each resource's SQL.
pub fn open(plan: &Plan) -> Result<Opened, StoreError> {
    let (store, migrations) = Store::open(&plan.database)?;
    let tables = tables(plan);
    let changes = store
        .conn()?
        .with_advisory_lock(SCHEMA_LOCK, |c| ddl::sync(c, &tables))?;
    let pg = store.is_postgres();
    let resources = tables
        .into_iter()
        .map(|t| {
            let ring = plan.encryption.ring.clone();
            (
                ResourceName(t.name.clone()),
                Arc::new(Resource::new(t, pg).with_keys(ring)),
            )
        })
        .collect();
    Ok(Opened {
        store,
        resources,
        migrations,
        changes,
    })
}

/// Current time as RFC 3339 UTC with microseconds: fixed width, so text order is time order.
pub fn now() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}
