//! One connection API over SQLite and PostgreSQL: raw SQL built from the plan, every value
//! bound as a parameter with its column's type.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, PooledConnection};
use diesel::sql_types::{BigInt, Bool, Double, Nullable, Text};
use diesel::sqlite::{Sqlite, SqliteConnection};

use super::StoreError;
use super::dialect::Bind;

#[derive(QueryableByName)]
struct JsonRow {
    #[diesel(sql_type = Text)]
    j: String,
}

/// A column of a table, as the database reports it.
#[derive(QueryableByName)]
pub struct ColumnRow {
    /// The column's name.
    #[diesel(sql_type = Text)]
    pub name: String,
    /// Its declared type.
    #[diesel(sql_type = Text)]
    pub ty: String,
}

/// A borrowed diesel connection of either backend.
pub enum Raw<'a> {
    /// An SQLite connection.
    Sqlite(&'a mut SqliteConnection),
    /// A PostgreSQL connection.
    #[cfg(feature = "postgres")]
    Pg(&'a mut diesel::pg::PgConnection),
}

/// A pooled connection of either backend.
pub enum Conn {
    /// A pooled SQLite connection.
    Sqlite(PooledConnection<ConnectionManager<SqliteConnection>>),
    /// A pooled PostgreSQL connection.
    #[cfg(feature = "postgres")]
    Pg(PooledConnection<ConnectionManager<diesel::pg::PgConnection>>),
}

macro_rules! bind_all {
    ($query:expr, $binds:expr) => {{
        let mut q = $query;
        for b in $binds {
            q = match b {
                Bind::Text(v) | Bind::Json(v) => q.bind::<Nullable<Text>, _>(v.clone()),
                Bind::Int(v) => q.bind::<Nullable<BigInt>, _>(*v),
                Bind::Real(v) => q.bind::<Nullable<Double>, _>(*v),
                Bind::Bool(v) => q.bind::<Nullable<Bool>, _>(*v),
            };
        }
        q
    }};
}

impl Conn {
    /// Runs a statement; returns the number of rows it changed.
    pub fn execute(&mut self, sql: &str, binds: &[Bind]) -> Result<usize, StoreError> {
        let n = match self {
            Conn::Sqlite(c) => {
                bind_all!(diesel::sql_query(sql).into_boxed::<Sqlite>(), binds).execute(&mut **c)
            }
            #[cfg(feature = "postgres")]
            Conn::Pg(c) => bind_all!(diesel::sql_query(sql).into_boxed::<diesel::pg::Pg>(), binds)
                .execute(&mut **c),
        };
        n.map_err(StoreError::from)
    }

    /// Runs a query whose single column `j` is a row rendered as JSON text.
    pub fn query_json(&mut self, sql: &str, binds: &[Bind]) -> Result<Vec<String>, StoreError> {
        let rows: Result<Vec<JsonRow>, _> = match self {
            Conn::Sqlite(c) => {
                bind_all!(diesel::sql_query(sql).into_boxed::<Sqlite>(), binds).load(&mut **c)
            }
            #[cfg(feature = "postgres")]
            Conn::Pg(c) => bind_all!(diesel::sql_query(sql).into_boxed::<diesel::pg::Pg>(), binds)
                .load(&mut **c),
        };
        Ok(rows
            .map_err(StoreError::from)?
            .into_iter()
            .map(|r| r.j)
            .collect())
    }

    /// Column names and declared types of a table (empty when it does not exist).
    pub fn columns(&mut self, table: &str) -> Result<Vec<ColumnRow>, StoreError> {
        let rows = match self {
            Conn::Sqlite(c) => diesel::sql_query("SELECT name, type AS ty FROM pragma_table_info(?)")
                .bind::<Text, _>(table)
                .load::<ColumnRow>(&mut **c),
            #[cfg(feature = "postgres")]
            Conn::Pg(c) => diesel::sql_query(
                "SELECT column_name::text AS name, data_type::text AS ty FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
            )
            .bind::<Text, _>(table)
            .load::<ColumnRow>(&mut **c),
        };
        rows.map_err(StoreError::from)
    }

    /// Runs `f` holding the PostgreSQL session advisory lock `key`, so one process at a time
    /// does it across every instance on the database; others wait for their turn. SQLite
    /// runs `f` as is (one file, one writer at a time already). The lock is released when
    /// `f` returns, or by PostgreSQL if the connection dies.
    pub fn with_advisory_lock<T>(
        &mut self,
        key: i64,
        f: impl FnOnce(&mut Self) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if !self.is_postgres() {
            return f(self);
        }
        self.batch(&format!("SELECT pg_advisory_lock({key})"))?;
        let out = f(self);
        let unlocked = self.batch(&format!("SELECT pg_advisory_unlock({key})"));
        let out = out?;
        unlocked?;
        Ok(out)
    }

    /// Runs statements without parameters (DDL, transaction control).
    pub fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        match self {
            Conn::Sqlite(c) => c.batch_execute(sql),
            #[cfg(feature = "postgres")]
            Conn::Pg(c) => c.batch_execute(sql),
        }
        .map_err(StoreError::from)
    }

    /// Runs `f` in a transaction: committed if it returns `Ok`, rolled back otherwise, so a
    /// failed request leaves nothing behind.
    pub fn transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // IMMEDIATE takes SQLite's write lock up front: no deadlock upgrading a read lock.
        self.batch(match self {
            Conn::Sqlite(_) => "BEGIN IMMEDIATE",
            #[cfg(feature = "postgres")]
            Conn::Pg(_) => "BEGIN",
        })?;
        match f(self) {
            Ok(v) => match self.batch("COMMIT") {
                Ok(()) => Ok(v),
                Err(e) => {
                    let _ = self.batch("ROLLBACK");
                    Err(e)
                }
            },
            Err(e) => {
                let _ = self.batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// The underlying diesel connection, for typed queries of internal tables.
    pub fn with_raw<T>(
        &mut self,
        f: impl FnOnce(Raw<'_>) -> diesel::QueryResult<T>,
    ) -> Result<T, StoreError> {
        match self {
            Conn::Sqlite(c) => f(Raw::Sqlite(c)),
            #[cfg(feature = "postgres")]
            Conn::Pg(c) => f(Raw::Pg(c)),
        }
        .map_err(StoreError::from)
    }

    /// Whether this is a PostgreSQL connection.
    pub fn is_postgres(&self) -> bool {
        !matches!(self, Conn::Sqlite(_))
    }
}
