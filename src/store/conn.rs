//! One connection API over SQLite and PostgreSQL: raw SQL built from the plan, every value
//! bound as a parameter with its column's type.
//!
//! Statements the plan makes a bounded number of (point reads, inserts, deletes, list pages
//! with at most one filter) go through [`Sql`], a query diesel may keep prepared in each
//! connection's statement cache, keyed by its text; diesel's own `sql_query` is never cached,
//! so every call would parse and plan its SQL again.

use std::ops::{Deref, DerefMut};

use diesel::backend::Backend;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::r2d2::{ConnectionManager, PooledConnection, R2D2Connection};
use diesel::sql_types::{BigInt, Bool, Double, HasSqlType, Nullable, Text, Untyped};
use diesel::sqlite::SqliteConnection;

use super::StoreError;
use super::dialect::Bind;

/// One SQLite row as its columns' values, in select order: text values share one buffer, so
/// a row costs two allocations however many columns it has.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cells {
    text: String,
    cells: Vec<Cell>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Cell {
    Null,
    Int(i64),
    Real(f64),
    /// A byte range of `Cells::text`.
    Text(usize, usize),
}

/// One value of [`Cells`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SqlValue<'a> {
    /// SQL `NULL`.
    Null,
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Real(f64),
    /// Text (a blob is read as text).
    Text(&'a str),
}

impl Cells {
    /// The row's values, in select order.
    pub fn values(&self) -> impl Iterator<Item = SqlValue<'_>> {
        self.cells.iter().map(|c| self.value(*c))
    }

    /// The value of column `i`, if the row has it.
    pub fn get(&self, i: usize) -> Option<SqlValue<'_>> {
        self.cells.get(i).map(|c| self.value(*c))
    }

    fn value(&self, cell: Cell) -> SqlValue<'_> {
        match cell {
            Cell::Null => SqlValue::Null,
            Cell::Int(i) => SqlValue::Int(i),
            Cell::Real(f) => SqlValue::Real(f),
            Cell::Text(from, to) => SqlValue::Text(self.text.get(from..to).unwrap_or_default()),
        }
    }

    /// How long the row's text values are together.
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    /// How many columns the row has.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// Whether the row has no columns.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }
}

impl diesel::deserialize::FromSqlRow<Untyped, diesel::sqlite::Sqlite> for Cells {
    fn build_from_row<'a>(
        row: &impl diesel::row::Row<'a, diesel::sqlite::Sqlite>,
    ) -> diesel::deserialize::Result<Self> {
        use diesel::row::Field;
        use diesel::sqlite::SqliteType;
        let n = row.field_count();
        let mut out = Cells {
            // Room for a row of short texts (ids, timestamps, a sealed value), so the buffer
            // is not grown column by column.
            text: String::with_capacity(32 * n),
            cells: Vec::with_capacity(n),
        };
        for i in 0..n {
            let field = row.get(i).ok_or("a column the row reported is missing")?;
            let cell = match field.value() {
                None => Cell::Null,
                Some(mut v) => match v.value_type() {
                    None => Cell::Null,
                    Some(SqliteType::Long) => Cell::Int(v.read_long()),
                    Some(SqliteType::Double) => Cell::Real(v.read_double()),
                    Some(_) => {
                        let from = out.text.len();
                        out.text.push_str(v.read_text());
                        Cell::Text(from, out.text.len())
                    }
                },
            };
            out.cells.push(cell);
        }
        Ok(out)
    }
}

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

/// One column of an index, as the database reports it.
#[derive(QueryableByName)]
struct IndexColumn {
    #[diesel(sql_type = Text)]
    index: String,
    #[diesel(sql_type = Text)]
    col: String,
}

/// A borrowed diesel connection of either backend.
pub enum Raw<'a> {
    /// An SQLite connection.
    Sqlite(&'a mut SqliteConnection),
    /// A PostgreSQL connection.
    #[cfg(feature = "postgres")]
    Pg(&'a mut diesel::pg::PgConnection),
}

/// A connection borrowed from a pool, or owned outright.
pub enum Lease<C: R2D2Connection + 'static> {
    /// Returned to its pool on drop.
    Pooled(PooledConnection<ConnectionManager<C>>),
    /// Closed on drop.
    Owned(C),
    /// The SQLite writer's (closed on drop), with the audit chain head it keeps between
    /// appends (`store::audit`): the one connection that appends on a serving SQLite store.
    Writer(C, Box<super::audit::HeadCache>),
    /// Lent from the pool to the writer for one batch (PostgreSQL), with the audit chain
    /// head it appended in the batch, under the chain's lock taken at `BEGIN`.
    Batch(
        PooledConnection<ConnectionManager<C>>,
        Box<super::audit::HeadCache>,
    ),
}

impl<C: R2D2Connection + 'static> Deref for Lease<C> {
    type Target = C;
    fn deref(&self) -> &C {
        match self {
            Lease::Pooled(c) | Lease::Batch(c, _) => c,
            Lease::Owned(c) | Lease::Writer(c, _) => c,
        }
    }
}

impl<C: R2D2Connection + 'static> DerefMut for Lease<C> {
    fn deref_mut(&mut self) -> &mut C {
        match self {
            Lease::Pooled(c) | Lease::Batch(c, _) => c,
            Lease::Owned(c) | Lease::Writer(c, _) => c,
        }
    }
}

/// Marks a PostgreSQL connection that PostgreSQL ended: diesel's transaction manager in
/// error makes r2d2's `has_broken` true, so the pool closes it on its return instead of
/// lending it again ([`Conn::found_closed`] reads the mark).
#[cfg(feature = "postgres")]
pub(super) fn mark_ended(c: &mut diesel::pg::PgConnection) {
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    AnsiTransactionManager::transaction_manager_status_mut(c).set_in_error();
}

/// Whether [`mark_ended`] marked `c`.
#[cfg(feature = "postgres")]
fn marked_ended(c: &mut diesel::pg::PgConnection) -> bool {
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    AnsiTransactionManager::transaction_manager_status_mut(c)
        .transaction_depth()
        .is_err()
}

/// A connection of either backend.
pub enum Conn {
    /// An SQLite connection.
    Sqlite(Lease<SqliteConnection>),
    /// A PostgreSQL connection.
    #[cfg(feature = "postgres")]
    Pg(Lease<diesel::pg::PgConnection>),
}

/// SQL text from the plan with its binds, as one diesel query. With `cache`, diesel keeps
/// the prepared statement in the connection's cache keyed by the text (so the set of cached
/// texts must stay bounded); without, it is prepared for this call only, like `sql_query`.
///
/// The text carries the dialect's placeholders (`?`, or `$1`, `$2`, … in order); diesel
/// writes its own for each bind, so the text is passed on in the pieces between them. Plan
/// SQL never has a `?` or `$` anywhere else (identifiers are validated), and a count that
/// does not match the binds is an error, never a misplaced value.
///
/// `K` is how diesel finds the prepared statement again: [`ByText`] (it builds the text and
/// hashes it at every call), or [`Fixed`] (by the type of a [`FixedStatement`]).
pub struct Sql<'a, K = ByText> {
    text: &'a str,
    binds: &'a [Bind],
    cache: bool,
    pg: bool,
    key: std::marker::PhantomData<K>,
}

/// How diesel's statement cache finds a [`Sql`]: [`ByText`] or [`Fixed`], nothing else.
pub trait CacheKey: 'static {
    /// Whether the type alone names the statement.
    const BY_TYPE: bool;
}

/// Found by its text: any statement of the plan's bounded set.
pub struct ByText;

impl CacheKey for ByText {
    const BY_TYPE: bool = false;
}

/// A statement of one text per dialect, run often on the request path (an audit row's
/// insert): the type gives the text, so one type can never stand for two texts, and diesel
/// finds the prepared statement by the type without building and hashing the text at every
/// call ([`Conn::execute_fixed`]).
pub trait FixedStatement: 'static {
    /// The text for PostgreSQL (`pg`) or SQLite, with the dialect's placeholders.
    fn text(pg: bool) -> &'static str;
}

/// Found by the type of the [`FixedStatement`] `S`.
pub struct Fixed<S>(std::marker::PhantomData<S>);

impl<S: FixedStatement> CacheKey for Fixed<S> {
    const BY_TYPE: bool = true;
}

impl<'a, K> Sql<'a, K> {
    /// The piece of `rest` before its first placeholder, and what follows the placeholder.
    fn split(&self, rest: &'a str) -> Option<(&'a str, &'a str)> {
        if self.pg {
            let mut from = 0;
            while let Some(at) = rest[from..].find('$').map(|i| i + from) {
                let digits = rest[at + 1..]
                    .bytes()
                    .take_while(u8::is_ascii_digit)
                    .count();
                if digits > 0 {
                    return Some((&rest[..at], &rest[at + 1 + digits..]));
                }
                from = at + 1;
            }
            None
        } else {
            rest.find('?').map(|at| (&rest[..at], &rest[at + 1..]))
        }
    }
}

impl<K: CacheKey> QueryId for Sql<'_, K> {
    type QueryId = K;
    // By text (the text varies at run time: diesel keys its cache by the text and the bind
    // types), or by the type of a fixed text.
    const HAS_STATIC_QUERY_ID: bool = K::BY_TYPE;
}

impl<K> Query for Sql<'_, K> {
    type SqlType = Untyped;
}

impl<DB, K> QueryFragment<DB> for Sql<'_, K>
where
    DB: Backend
        + HasSqlType<Nullable<Text>>
        + HasSqlType<Nullable<BigInt>>
        + HasSqlType<Nullable<Double>>
        + HasSqlType<Nullable<Bool>>,
    Option<String>: diesel::serialize::ToSql<Nullable<Text>, DB>,
    Option<i64>: diesel::serialize::ToSql<Nullable<BigInt>, DB>,
    Option<f64>: diesel::serialize::ToSql<Nullable<Double>, DB>,
    Option<bool>: diesel::serialize::ToSql<Nullable<Bool>, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        if !self.cache {
            out.unsafe_to_cache_prepared();
        }
        if self.binds.is_empty() {
            out.push_sql(self.text);
            return Ok(());
        }
        let mut rest = self.text;
        for b in self.binds {
            let (before, after) = self.split(rest).ok_or_else(|| {
                diesel::result::Error::QueryBuilderError("fewer placeholders than binds".into())
            })?;
            out.push_sql(before);
            match b {
                Bind::Text(v) | Bind::Json(v) => out.push_bind_param::<Nullable<Text>, _>(v)?,
                Bind::Int(v) => out.push_bind_param::<Nullable<BigInt>, _>(v)?,
                Bind::Real(v) => out.push_bind_param::<Nullable<Double>, _>(v)?,
                Bind::Bool(v) => out.push_bind_param::<Nullable<Bool>, _>(v)?,
            }
            rest = after;
        }
        if self.split(rest).is_some() {
            return Err(diesel::result::Error::QueryBuilderError(
                "more placeholders than binds".into(),
            ));
        }
        out.push_sql(rest);
        Ok(())
    }
}

impl<C, K> RunQueryDsl<C> for Sql<'_, K> {}

impl Conn {
    fn sql<'a>(&self, text: &'a str, binds: &'a [Bind], cache: bool) -> Sql<'a> {
        self.keyed(text, binds, cache)
    }

    fn keyed<'a, K>(&self, text: &'a str, binds: &'a [Bind], cache: bool) -> Sql<'a, K> {
        Sql {
            text,
            binds,
            cache,
            pg: self.is_postgres(),
            key: std::marker::PhantomData,
        }
    }

    /// Runs a statement; returns the number of rows it changed.
    pub fn execute(&mut self, sql: &str, binds: &[Bind]) -> Result<usize, StoreError> {
        self.run(self.sql(sql, binds, false))
    }

    /// Runs a statement of the plan's bounded set, kept prepared per connection.
    pub fn execute_cached(&mut self, sql: &str, binds: &[Bind]) -> Result<usize, StoreError> {
        self.run(self.sql(sql, binds, true))
    }

    /// Runs the statement `S`, kept prepared per connection and found by its type.
    pub fn execute_fixed<S: FixedStatement>(
        &mut self,
        binds: &[Bind],
    ) -> Result<usize, StoreError> {
        let text = S::text(self.is_postgres());
        self.run(self.keyed::<Fixed<S>>(text, binds, true))
    }

    fn run<K: CacheKey>(&mut self, q: Sql<'_, K>) -> Result<usize, StoreError> {
        let done = match self {
            Conn::Sqlite(c) => q.execute(&mut **c),
            #[cfg(feature = "postgres")]
            Conn::Pg(c) => q.execute(&mut **c),
        };
        self.settle(done)
    }

    /// Runs a query whose single column `j` is a row rendered as JSON text.
    pub fn query_json(&mut self, sql: &str, binds: &[Bind]) -> Result<Vec<String>, StoreError> {
        self.load(self.sql(sql, binds, false))
    }

    /// [`Conn::query_json`] for a query of the plan's bounded set, kept prepared.
    pub fn query_json_cached(
        &mut self,
        sql: &str,
        binds: &[Bind],
    ) -> Result<Vec<String>, StoreError> {
        self.load(self.sql(sql, binds, true))
    }

    /// Runs an SQLite query; returns each row's values as they are, for the caller to render
    /// (`store::crud`: no JSON built by SQLite only to be parsed again). With `cache`, the
    /// statement is kept prepared (the plan's bounded set of texts only). An error on
    /// PostgreSQL, whose rows come as JSON text.
    pub fn query_cells(
        &mut self,
        sql: &str,
        binds: &[Bind],
        cache: bool,
    ) -> Result<Vec<Cells>, StoreError> {
        let q = self.sql(sql, binds, cache);
        match self {
            Conn::Sqlite(c) => q.load(&mut **c).map_err(StoreError::from),
            #[cfg(feature = "postgres")]
            Conn::Pg(_) => Err(StoreError::Database(
                "rows as cells are read from SQLite only".into(),
            )),
        }
    }

    fn load(&mut self, q: Sql<'_>) -> Result<Vec<String>, StoreError> {
        let rows: Result<Vec<JsonRow>, _> = match self {
            Conn::Sqlite(c) => q.load(&mut **c),
            #[cfg(feature = "postgres")]
            Conn::Pg(c) => q.load(&mut **c),
        };
        Ok(self.settle(rows)?.into_iter().map(|r| r.j).collect())
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
        self.settle(rows)
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

    /// The indexes of a table and their columns, in key order (empty when it has none).
    pub fn indexes(
        &mut self,
        table: &str,
    ) -> Result<std::collections::BTreeMap<String, Vec<String>>, StoreError> {
        let rows = match self {
            Conn::Sqlite(c) => diesel::sql_query(
                "SELECT il.name AS \"index\", COALESCE(ii.name, '') AS col \
                 FROM pragma_index_list(?) AS il, pragma_index_info(il.name) AS ii \
                 ORDER BY il.name, ii.seqno",
            )
            .bind::<Text, _>(table)
            .load::<IndexColumn>(&mut **c),
            #[cfg(feature = "postgres")]
            Conn::Pg(c) => diesel::sql_query(
                "SELECT i.relname::text AS \"index\", COALESCE(a.attname::text, '') AS col \
                 FROM pg_index x \
                 JOIN pg_class i ON i.oid = x.indexrelid \
                 JOIN pg_class t ON t.oid = x.indrelid \
                 JOIN pg_namespace n ON n.oid = t.relnamespace \
                 CROSS JOIN LATERAL unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
                 LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum \
                 WHERE t.relname = $1 AND n.nspname = current_schema() \
                 ORDER BY i.relname, k.ord",
            )
            .bind::<Text, _>(table)
            .load::<IndexColumn>(&mut **c),
        };
        let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for r in self.settle(rows)? {
            out.entry(r.index).or_default().push(r.col);
        }
        Ok(out)
    }

    /// Runs one fixed statement without parameters (transaction control in the writer),
    /// kept prepared per connection.
    pub fn control(&mut self, sql: &'static str) -> Result<(), StoreError> {
        self.execute_cached(sql, &[]).map(|_| ())
    }

    /// Runs statements without parameters (DDL, transaction control).
    pub fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        let done = match self {
            Conn::Sqlite(c) => c.batch_execute(sql),
            #[cfg(feature = "postgres")]
            Conn::Pg(c) => c.batch_execute(sql),
        };
        self.settle(done)
    }

    /// Bounds every later statement of the open transaction by `deadline`: on PostgreSQL a
    /// statement or lock wait past it is cancelled (and the transaction rolled back). An
    /// SQLite transaction took its lock at `BEGIN IMMEDIATE` and waits for nothing after.
    pub fn limit_to(&mut self, deadline: crate::deadline::Deadline) -> Result<(), StoreError> {
        let ms = deadline.remaining().as_millis();
        if ms == 0 {
            return Err(StoreError::Timeout);
        }
        match self {
            Conn::Sqlite(_) => Ok(()),
            // `0` would mean "no limit": `ms` is at least 1 here.
            #[cfg(feature = "postgres")]
            Conn::Pg(_) => self.batch(&format!(
                "SET LOCAL statement_timeout = {ms}; SET LOCAL lock_timeout = {ms}"
            )),
        }
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
        let done = match self {
            Conn::Sqlite(c) => f(Raw::Sqlite(c)),
            #[cfg(feature = "postgres")]
            Conn::Pg(c) => f(Raw::Pg(c)),
        };
        self.settle(done)
    }

    /// A statement's outcome. An error that shows PostgreSQL ended the connection (a
    /// restart, a failover, `pg_terminate_backend`) marks it broken: the pool closes it on
    /// its return instead of lending it again, and [`Conn::found_closed`] says so.
    fn settle<T>(&mut self, done: diesel::QueryResult<T>) -> Result<T, StoreError> {
        #[cfg(feature = "postgres")]
        if let (Conn::Pg(c), Err(e)) = (&mut *self, &done) {
            use diesel::result::{DatabaseErrorKind, Error};
            if let Error::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                _,
            ) = e
            {
                mark_ended(c);
            }
        }
        done.map_err(StoreError::from)
    }

    /// Whether a statement found that PostgreSQL had ended this connection
    /// (`Conn::settle`); never on SQLite.
    pub fn found_closed(&mut self) -> bool {
        match self {
            Conn::Sqlite(_) => false,
            #[cfg(feature = "postgres")]
            Conn::Pg(c) => marked_ended(c),
        }
    }

    /// The chain head this connection keeps: only the writer's does, which holds the
    /// chain's lock (SQLite's write lock, or on PostgreSQL the chain's advisory lock for
    /// the whole batch).
    pub fn head_cache(&mut self) -> Option<&mut super::audit::HeadCache> {
        match self {
            Conn::Sqlite(Lease::Writer(_, head) | Lease::Batch(_, head)) => Some(head),
            #[cfg(feature = "postgres")]
            Conn::Pg(Lease::Writer(_, head) | Lease::Batch(_, head)) => Some(head),
            _ => None,
        }
    }

    /// Whether this is a PostgreSQL connection.
    pub fn is_postgres(&self) -> bool {
        !matches!(self, Conn::Sqlite(_))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// .cargo/config.toml builds SQLite in multi-thread mode (no per-connection mutex); this
    /// fails if the flag stops reaching libsqlite3-sys's build.
    #[test]
    fn sqlite_is_built_without_its_per_connection_mutex() {
        let mut c = SqliteConnection::establish(":memory:").unwrap();
        let options: Vec<String> =
            diesel::sql_query("SELECT compile_options AS j FROM pragma_compile_options")
                .load::<JsonRow>(&mut c)
                .unwrap()
                .into_iter()
                .map(|r| r.j)
                .collect();
        assert!(
            options.iter().any(|o| o == "THREADSAFE=2"),
            "LIBSQLITE3_FLAGS from .cargo/config.toml did not reach the bundled SQLite (cargo \
             reads that file from the directory it runs in, and a LIBSQLITE3_FLAGS already \
             in the environment wins over it); compile options: {options:?}"
        );
    }
}
