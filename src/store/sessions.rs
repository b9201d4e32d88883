//! Browser sessions and pending logins in `nestflux_sessions` and `nestflux_logins`: one
//! small statement per function, each on a connection it is given. What the values mean
//! (hashes, ciphertexts, expiries in Unix milliseconds) belongs to `auth::session`; here
//! they are only stored, compared and swapped.
//!
//! Exactly-once refresh across workers and instances rests on two conditional updates: a
//! refresh is *claimed* (`refresh_lease_until` set while `generation` is unchanged and no
//! lease runs) before the provider is called, and its result is *stored* only while
//! `generation` is still the one claimed, so a session deleted meanwhile (logout) stays
//! deleted.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::sqlite::Sqlite;

use super::conn::Raw;
use super::dialect::{Bind, Kind, placeholder};
use super::{Conn, StoreError};

/// A login between `/auth/login` and `/auth/callback`.
#[derive(Debug, Clone, QueryableByName)]
pub struct PendingLogin {
    /// SHA-256 (hex) of the `state` sent to the provider.
    #[diesel(sql_type = Text)]
    pub state_hash: String,
    /// SHA-256 (hex) of the login cookie that binds the login to one browser.
    #[diesel(sql_type = Text)]
    pub browser_hash: String,
    /// SHA-256 (hex) of the `nonce` the ID token must carry.
    #[diesel(sql_type = Text)]
    pub nonce_hash: String,
    /// The PKCE verifier, sealed (nf1).
    #[diesel(sql_type = Text)]
    pub pkce_verifier: String,
    /// Where the browser goes after login (already checked).
    #[diesel(sql_type = Text)]
    pub return_to: String,
    /// When the login started.
    #[diesel(sql_type = BigInt)]
    pub created_at: i64,
    /// When the login stops being accepted.
    #[diesel(sql_type = BigInt)]
    pub expires_at: i64,
}

/// One session row.
#[derive(Debug, Clone, QueryableByName)]
pub struct SessionRow {
    /// SHA-256 (hex) of the session id the cookie holds.
    #[diesel(sql_type = Text)]
    pub id_hash: String,
    /// The provider that authenticated the subject.
    #[diesel(sql_type = Text)]
    pub issuer: String,
    /// The ID token's `sub`.
    #[diesel(sql_type = Text)]
    pub subject: String,
    /// JSON array of role names.
    #[diesel(sql_type = Text)]
    pub roles: String,
    /// The access token, sealed.
    #[diesel(sql_type = Text)]
    pub access_token: String,
    /// The refresh token, sealed.
    #[diesel(sql_type = Nullable<Text>)]
    pub refresh_token: Option<String>,
    /// The latest ID token, sealed (the `id_token_hint` of logout).
    #[diesel(sql_type = Nullable<Text>)]
    pub id_token: Option<String>,
    /// When the access token expires.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub access_expires_at: Option<i64>,
    /// From when on the tokens are refreshed.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub refresh_at: Option<i64>,
    /// Login time.
    #[diesel(sql_type = BigInt)]
    pub created_at: i64,
    /// Last recorded use.
    #[diesel(sql_type = BigInt)]
    pub last_seen_at: i64,
    /// End of the session if unused from now on.
    #[diesel(sql_type = BigInt)]
    pub idle_expires_at: i64,
    /// End of the session whatever its use.
    #[diesel(sql_type = BigInt)]
    pub absolute_expires_at: i64,
    /// Bumped by every refresh.
    #[diesel(sql_type = BigInt)]
    pub generation: i64,
    /// A refresh is in progress (on some worker or instance) until then.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub refresh_lease_until: Option<i64>,
}

/// What a successful refresh changes.
#[derive(Debug, Clone)]
pub struct Refreshed {
    /// JSON array of role names.
    pub roles: String,
    /// The new access token, sealed.
    pub access_token: String,
    /// The refresh token to use next (rotated or kept), sealed.
    pub refresh_token: Option<String>,
    /// The latest ID token, sealed.
    pub id_token: Option<String>,
    /// When the new access token expires.
    pub access_expires_at: Option<i64>,
    /// From when on to refresh again.
    pub refresh_at: Option<i64>,
}

const SESSION_COLUMNS: &str = "id_hash, issuer, subject, roles, access_token, refresh_token, id_token, \
     access_expires_at, refresh_at, created_at, last_seen_at, idle_expires_at, \
     absolute_expires_at, generation, refresh_lease_until";

const LOGIN_COLUMNS: &str =
    "state_hash, browser_hash, nonce_hash, pkce_verifier, return_to, created_at, expires_at";

fn text(v: &str) -> Bind {
    Bind::Text(Some(v.to_string()))
}

fn opt_text(v: &Option<String>) -> Bind {
    Bind::Text(v.clone())
}

fn int(v: i64) -> Bind {
    Bind::Int(Some(v))
}

fn opt_int(v: Option<i64>) -> Bind {
    Bind::Int(v)
}

/// `?, ?, …` or `$1, $2, …`, starting at `$from`.
fn placeholders(pg: bool, from: usize, count: usize) -> String {
    (from..from + count)
        .map(|n| placeholder(pg, n, Kind::Text))
        .collect::<Vec<_>>()
        .join(", ")
}

macro_rules! bind_each {
    ($query:expr, $binds:expr) => {{
        let mut q = $query;
        for b in $binds {
            q = match b {
                Bind::Int(v) => q.bind::<Nullable<BigInt>, _>(*v),
                Bind::Text(v) | Bind::Json(v) => q.bind::<Nullable<Text>, _>(v.clone()),
                // Only text and integers are stored here.
                Bind::Real(_) | Bind::Bool(_) => q.bind::<Nullable<Text>, _>(None::<String>),
            };
        }
        q
    }};
}

/// Runs a query returning typed rows, binding `binds` in order.
pub(super) fn rows<T>(conn: &mut Conn, sql: &str, binds: &[Bind]) -> Result<Vec<T>, StoreError>
where
    T: QueryableByName<Sqlite> + 'static,
    T: PgRow,
{
    conn.with_raw(|raw| match raw {
        Raw::Sqlite(c) => {
            bind_each!(diesel::sql_query(sql).into_boxed::<Sqlite>(), binds).load::<T>(c)
        }
        #[cfg(feature = "postgres")]
        Raw::Pg(c) => {
            bind_each!(diesel::sql_query(sql).into_boxed::<diesel::pg::Pg>(), binds).load::<T>(c)
        }
    })
}

/// Rows readable from PostgreSQL too, when that backend is built.
#[cfg(feature = "postgres")]
pub trait PgRow: QueryableByName<diesel::pg::Pg> {}
#[cfg(feature = "postgres")]
impl<T: QueryableByName<diesel::pg::Pg>> PgRow for T {}
/// Rows readable from PostgreSQL too, when that backend is built.
#[cfg(not(feature = "postgres"))]
pub trait PgRow {}
#[cfg(not(feature = "postgres"))]
impl<T> PgRow for T {}

/// Stores a new pending login.
pub fn insert_login(conn: &mut Conn, l: &PendingLogin) -> Result<(), StoreError> {
    let pg = conn.is_postgres();
    let sql = format!(
        "INSERT INTO nestflux_logins ({LOGIN_COLUMNS}) VALUES ({})",
        placeholders(pg, 1, 7)
    );
    conn.execute(
        &sql,
        &[
            text(&l.state_hash),
            text(&l.browser_hash),
            text(&l.nonce_hash),
            text(&l.pkce_verifier),
            text(&l.return_to),
            int(l.created_at),
            int(l.expires_at),
        ],
    )?;
    Ok(())
}

/// Removes and returns the pending login of `state_hash`: whoever takes it first gets it,
/// so a `state` is used at most once, even by two instances at the same moment.
pub fn take_login(conn: &mut Conn, state_hash: &str) -> Result<Option<PendingLogin>, StoreError> {
    let pg = conn.is_postgres();
    let sql = format!(
        "DELETE FROM nestflux_logins WHERE state_hash = {} RETURNING {LOGIN_COLUMNS}",
        placeholder(pg, 1, Kind::Text)
    );
    Ok(rows::<PendingLogin>(conn, &sql, &[text(state_hash)])?
        .into_iter()
        .next())
}

/// Stores a new session.
pub fn insert_session(conn: &mut Conn, s: &SessionRow) -> Result<(), StoreError> {
    let pg = conn.is_postgres();
    let sql = format!(
        "INSERT INTO nestflux_sessions ({SESSION_COLUMNS}) VALUES ({})",
        placeholders(pg, 1, 15)
    );
    conn.execute(
        &sql,
        &[
            text(&s.id_hash),
            text(&s.issuer),
            text(&s.subject),
            text(&s.roles),
            text(&s.access_token),
            opt_text(&s.refresh_token),
            opt_text(&s.id_token),
            opt_int(s.access_expires_at),
            opt_int(s.refresh_at),
            int(s.created_at),
            int(s.last_seen_at),
            int(s.idle_expires_at),
            int(s.absolute_expires_at),
            int(s.generation),
            opt_int(s.refresh_lease_until),
        ],
    )?;
    Ok(())
}

/// The session of `id_hash`, if any (expired or not).
pub fn load_session(conn: &mut Conn, id_hash: &str) -> Result<Option<SessionRow>, StoreError> {
    let pg = conn.is_postgres();
    let sql = format!(
        "SELECT {SESSION_COLUMNS} FROM nestflux_sessions WHERE id_hash = {}",
        placeholder(pg, 1, Kind::Text)
    );
    Ok(rows::<SessionRow>(conn, &sql, &[text(id_hash)])?
        .into_iter()
        .next())
}

/// Records a use: `last_seen_at = now`, the idle expiry pushed to `idle_expires_at` (never
/// past the absolute expiry).
pub fn touch_session(
    conn: &mut Conn,
    id_hash: &str,
    now: i64,
    idle_expires_at: i64,
) -> Result<(), StoreError> {
    let pg = conn.is_postgres();
    let ph = |n| placeholder(pg, n, Kind::Int);
    let sql = format!(
        "UPDATE nestflux_sessions SET last_seen_at = {}, \
         idle_expires_at = CASE WHEN {} < absolute_expires_at THEN {} ELSE absolute_expires_at END \
         WHERE id_hash = {}",
        ph(1),
        ph(2),
        ph(3),
        ph(4)
    );
    conn.execute(
        &sql,
        &[
            int(now),
            int(idle_expires_at),
            int(idle_expires_at),
            text(id_hash),
        ],
    )?;
    Ok(())
}

/// Claims the refresh of a session still at `generation` whose lease is free (or ran out
/// before `now`): `true` when this caller now owns it until `lease_until`.
pub fn claim_refresh(
    conn: &mut Conn,
    id_hash: &str,
    generation: i64,
    now: i64,
    lease_until: i64,
) -> Result<bool, StoreError> {
    let pg = conn.is_postgres();
    let ph = |n| placeholder(pg, n, Kind::Int);
    let sql = format!(
        "UPDATE nestflux_sessions SET refresh_lease_until = {} \
         WHERE id_hash = {} AND generation = {} \
         AND (refresh_lease_until IS NULL OR refresh_lease_until < {})",
        ph(1),
        ph(2),
        ph(3),
        ph(4)
    );
    let n = conn.execute(
        &sql,
        &[int(lease_until), text(id_hash), int(generation), int(now)],
    )?;
    Ok(n == 1)
}

/// Gives a claimed refresh back unchanged (the provider could not be reached).
pub fn release_refresh(conn: &mut Conn, id_hash: &str, generation: i64) -> Result<(), StoreError> {
    let pg = conn.is_postgres();
    let ph = |n| placeholder(pg, n, Kind::Int);
    let sql = format!(
        "UPDATE nestflux_sessions SET refresh_lease_until = NULL WHERE id_hash = {} AND generation = {}",
        ph(1),
        ph(2)
    );
    conn.execute(&sql, &[text(id_hash), int(generation)])?;
    Ok(())
}

/// Stores the outcome of a claimed refresh and bumps the generation, only while the session
/// is still at `generation`: `false` when it was deleted (logout) or changed meanwhile.
pub fn store_refresh(
    conn: &mut Conn,
    id_hash: &str,
    generation: i64,
    r: &Refreshed,
) -> Result<bool, StoreError> {
    let pg = conn.is_postgres();
    let ph = |n| placeholder(pg, n, Kind::Text);
    let sql = format!(
        "UPDATE nestflux_sessions SET roles = {}, access_token = {}, refresh_token = {}, \
         id_token = {}, access_expires_at = {}, refresh_at = {}, generation = generation + 1, \
         refresh_lease_until = NULL WHERE id_hash = {} AND generation = {}",
        ph(1),
        ph(2),
        ph(3),
        ph(4),
        ph(5),
        ph(6),
        ph(7),
        ph(8)
    );
    let n = conn.execute(
        &sql,
        &[
            text(&r.roles),
            text(&r.access_token),
            opt_text(&r.refresh_token),
            opt_text(&r.id_token),
            opt_int(r.access_expires_at),
            opt_int(r.refresh_at),
            text(id_hash),
            int(generation),
        ],
    )?;
    Ok(n == 1)
}

/// What is left of a deleted session: whose it was, and its sealed ID token (for the logout
/// hint).
#[derive(QueryableByName)]
pub struct Deleted {
    /// The session's subject.
    #[diesel(sql_type = Text)]
    pub subject: String,
    /// The sealed ID token.
    #[diesel(sql_type = Nullable<Text>)]
    pub id_token: Option<String>,
}

/// Deletes a session; `None` when there was none.
pub fn delete_session(conn: &mut Conn, id_hash: &str) -> Result<Option<Deleted>, StoreError> {
    let pg = conn.is_postgres();
    let sql = format!(
        "DELETE FROM nestflux_sessions WHERE id_hash = {} RETURNING subject, id_token",
        placeholder(pg, 1, Kind::Text)
    );
    Ok(rows::<Deleted>(conn, &sql, &[text(id_hash)])?
        .into_iter()
        .next())
}

/// Deletes sessions past their idle or absolute expiry and logins past theirs; returns how
/// many of each.
pub fn sweep(conn: &mut Conn, now: i64) -> Result<(usize, usize), StoreError> {
    let pg = conn.is_postgres();
    let ph = |n| placeholder(pg, n, Kind::Int);
    let sessions = conn.execute(
        &format!(
            "DELETE FROM nestflux_sessions WHERE idle_expires_at <= {} OR absolute_expires_at <= {}",
            ph(1),
            ph(2)
        ),
        &[int(now), int(now)],
    )?;
    let logins = conn.execute(
        &format!("DELETE FROM nestflux_logins WHERE expires_at <= {}", ph(1)),
        &[int(now)],
    )?;
    Ok((sessions, logins))
}
