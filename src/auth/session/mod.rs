//! Browser sessions: the OIDC authorization code flow with PKCE (through `openidconnect`),
//! sessions kept server-side in the database, and the session cookie accepted in the same
//! authentication stage as bearer tokens, refreshed exactly once near expiry.
//!
//! ```text
//! GET  /auth/login?return_to=  pending login (state, nonce, PKCE; login cookie) → 302 provider
//! GET  <redirect_url path>     take the login once → exchange code → verify ID token
//!                              → new session id (never the old one) → cookie → 303 return_to
//! any route with the cookie    CSRF check (unsafe methods) → load → expiry → refresh if due
//!                              → Caller { subject, roles, kind: session }
//! POST /auth/logout            delete here → clear cookie → 303 to end_session_endpoint
//! GET  /auth/session           {authenticated, subject, roles, expires_at}
//! ```
//!
//! The cookie holds a 256-bit random id; the database holds only its SHA-256, so a copy of
//! the table opens no session. Tokens are sealed with the field-encryption key ring, bound
//! to the session and the column (`nestflux_sessions/<column>/<id hash>`). A refresh is
//! claimed in the database before the provider is called (a lease, guarded by the row's
//! generation), and a lock per session in each process keeps its other requests from
//! piling onto the database meanwhile: one refresh per session, however many workers and
//! instances ask at once.
//!
//! ```text
//! mod        Sessions: setup, the authentication stage, expiry, the sweeper
//! login      the four routes: login, callback, logout, session
//! refresh    exactly-once refresh and the roles of new tokens
//! provider   the OpenID provider through openidconnect, over a no-redirect HTTP client
//! id_token   ID token checks with the bearer tokens' key cache
//! cookie     the two cookies, read strictly       csrf       the origin rule
//! return_to  where a login may send the browser back to, and nowhere else
//! ```

pub mod cookie;
pub mod csrf;
pub mod id_token;
mod login;
pub mod provider;
mod refresh;
pub mod return_to;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::HttpRequest;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::jwks::Jwks;
use super::jwt::BearerVerifier;
use super::roles::RoleMapper;
use super::{Caller, CallerKind, FailureBudget};
use crate::crypto::{Aad, KeyRing};
use crate::plan::Plan;
use crate::plan::auth::SessionPlan;
use crate::plan::roles::RoleId;
use crate::problem::Problem;
use crate::store::sessions::{self as rows, SessionRow};
use crate::store::{Store, StoreError};
use provider::{Provider, ProviderError};

/// Table names, also the first part of the AAD of what is sealed in them.
const SESSIONS: &str = "nestflux_sessions";
const LOGINS: &str = "nestflux_logins";
/// How long a claimed refresh may take before another worker or instance may retry it.
const REFRESH_LEASE: Duration = Duration::from_secs(30);
/// How often a request waiting for another instance's refresh looks again.
const REFRESH_POLL: Duration = Duration::from_millis(100);
/// Refresh this long before the access token expires (or at half its life if shorter).
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Longest `state` accepted back from the provider.
pub const MAX_STATE_LEN: usize = 128;
/// Longest authorization code accepted.
const MAX_CODE_LEN: usize = 4096;

/// Why a request's session cannot be used.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// Expired, logged out, or its refresh was refused: log in again.
    #[error("the session has ended")]
    Ended,
    /// The cookie names no session (never issued here, or long gone): a failed
    /// authentication, charged to the client's budget.
    #[error("no such session")]
    Unknown,
    /// A cookie-authenticated unsafe request from a foreign origin.
    #[error("{0}")]
    Csrf(csrf::Refused),
    /// `NESTFLUX_ENCRYPTION__KEYS` is not set: sessions cannot be sealed or opened.
    #[error("no encryption keys")]
    NoKeys,
    /// The database failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The provider could not be reached.
    #[error("{0}")]
    Provider(ProviderError),
}

/// A redirect answer with the cookies it sets.
#[derive(Debug)]
pub struct Redirect {
    /// The `Location`.
    pub location: String,
    /// `Set-Cookie` values, in order.
    pub cookies: Vec<HeaderValue>,
}

/// What `GET /auth/session` reports.
#[derive(Debug)]
pub struct Status {
    /// The session, when the request has a live one.
    pub session: Option<Value>,
    /// `Set-Cookie` values (clearing a dead cookie).
    pub cookies: Vec<HeaderValue>,
}

/// Browser login for one `[auth.session]`, built once and shared by every worker.
pub struct Sessions {
    plan: SessionPlan,
    provider: Provider,
    jwks: Arc<Jwks>,
    allowed: Vec<Algorithm>,
    leeway_secs: u64,
    /// Roles from ID token claims (when the access token is not a JWT we verify).
    id_roles: RoleMapper,
    known_roles: HashMap<String, RoleId>,
    /// Origins listed in `[cors]`: return targets and CSRF-allowed.
    cors_origins: Vec<String>,
    own_origin: url::Url,
    store: Store,
    /// Where refresh failures are recorded (logins and logouts are written with their
    /// session, in its transaction).
    audit: crate::audit::sink::AuditSink,
    ring: Option<Arc<KeyRing>>,
    locks: Locks,
    /// Record a use at most this often (milliseconds).
    touch_every_ms: i64,
}

impl Sessions {
    /// Sets up browser login; nothing is fetched from the provider yet.
    pub fn new(
        plan: &Plan,
        session: &SessionPlan,
        jwks: Arc<Jwks>,
        allowed: Vec<Algorithm>,
        store: Store,
        audit: crate::audit::sink::AuditSink,
    ) -> Result<Self, super::SetupError> {
        let auth = plan.auth.as_ref();
        let issuer = auth
            .and_then(|a| a.issuer.clone())
            .ok_or_else(|| super::SetupError::Session("no auth.issuer".into()))?;
        let provider = Provider::new(issuer, jwks.accepted_issuers().to_vec(), session)?;
        let own_origin = url::Url::parse(&session.origin)
            .map_err(|e| super::SetupError::Session(format!("redirect_url origin: {e}")))?;
        let roles_claim = auth.map(|a| a.roles_claim.clone()).unwrap_or_default();
        let idle_ms = millis(session.idle_timeout);
        Ok(Self {
            plan: session.clone(),
            provider,
            jwks,
            allowed,
            leeway_secs: auth.map_or(0, |a| a.leeway.as_secs()),
            id_roles: RoleMapper::new(roles_claim, plan.roles.closures.keys().cloned()),
            known_roles: plan
                .roles
                .closures
                .keys()
                .map(|r| (r.0.clone(), r.clone()))
                .collect(),
            cors_origins: plan
                .cors
                .as_ref()
                .map(|c| c.origins.clone())
                .unwrap_or_default(),
            own_origin,
            store,
            audit,
            ring: plan.encryption.ring.clone(),
            locks: Locks::default(),
            touch_every_ms: (idle_ms / 20).clamp(1_000, 60_000),
        })
    }

    /// Whether the request carries the session cookie (well-formed or not).
    pub fn has_cookie(&self, req: &HttpRequest) -> bool {
        cookie::read(req, self.plan.session_cookie()) != cookie::Read::Absent
    }

    /// Deletes expired sessions and logins on a thread of its own, every few seconds to a
    /// minute (a quarter of the shortest timeout).
    pub fn spawn_sweeper(self: &Arc<Self>) -> std::io::Result<()> {
        let every = (self.plan.idle_timeout.min(self.plan.login_timeout) / 4)
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        let store = self.store.clone();
        std::thread::Builder::new()
            .name("nestflux-sessions".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(every);
                    let swept = store
                        .conn()
                        .and_then(|mut c| rows::sweep(&mut c, now_ms()));
                    match swept {
                        Ok((0, 0)) => {}
                        Ok((sessions, logins)) => tracing::debug!(
                            target: "nestflux::auth",
                            sessions,
                            logins,
                            "expired sessions and logins swept"
                        ),
                        Err(e) => tracing::warn!(target: "nestflux::auth", error = %e, "session sweep failed"),
                    }
                }
            })?;
        Ok(())
    }

    /// Authenticates a request by its session cookie (called when it carries no
    /// `Authorization` or `X-API-Key`): CSRF check for unsafe methods, then the session,
    /// refreshed if due.
    ///
    /// A cookie that names no session is a failed authentication charged to `budget`; the
    /// budget never refuses a cookie by itself (that would lock out every session user
    /// behind the address of one guesser), and a guess costs one lookup by primary key.
    pub async fn authenticate(
        &self,
        req: &HttpRequest,
        bearer: Option<&BearerVerifier>,
        budget: &impl FailureBudget,
    ) -> Result<Arc<Caller>, Problem> {
        let result = async {
            csrf::check(req, &self.plan.origin, &self.cors_origins).map_err(Failure::Csrf)?;
            let id = match cookie::read(req, self.plan.session_cookie()) {
                cookie::Read::One(id) => id,
                _ => return Err(Failure::Unknown),
            };
            self.current(&id, bearer, true).await
        }
        .await;
        match result {
            Ok(row) => Ok(Arc::new(self.caller(&row))),
            Err(f) => {
                tracing::debug!(target: "nestflux::auth", reason = %f, "session not accepted");
                if matches!(f, Failure::Unknown) {
                    budget.charge().await;
                }
                Err(self.problem(&f))
            }
        }
    }

    /// The live session of cookie value `id`: expired ones are deleted, due ones refreshed.
    async fn current(
        &self,
        id: &str,
        bearer: Option<&BearerVerifier>,
        touch: bool,
    ) -> Result<SessionRow, Failure> {
        let ring = self.ring()?;
        let key = sha256(id);
        let id_hash = hex(&key);
        let now = now_ms();
        let mut row = self.load(&id_hash).await?.ok_or(Failure::Unknown)?;
        // Expired, or made by a provider this configuration no longer trusts.
        let foreign = !self.jwks.accepted_issuers().contains(&row.issuer);
        if foreign || row.idle_expires_at <= now || row.absolute_expires_at <= now {
            self.delete_quietly(&id_hash).await;
            return Err(Failure::Ended);
        }
        if refresh_due(&row, now) {
            row = self.refresh(&id_hash, key, row, &ring, bearer).await?;
        }
        if touch && now - row.last_seen_at >= self.touch_every_ms {
            let idle = now + millis(self.plan.idle_timeout);
            let hash = id_hash.clone();
            // A missed touch costs at most one interval of idle time: never fail the request.
            if let Err(e) = self
                .store
                .run(move |c| rows::touch_session(c, &hash, now, idle))
                .await
            {
                tracing::warn!(target: "nestflux::auth", error = %e, "could not record the session's use");
            } else {
                row.last_seen_at = now;
                row.idle_expires_at = idle.min(row.absolute_expires_at);
            }
        }
        Ok(row)
    }

    fn caller(&self, row: &SessionRow) -> Caller {
        let names: Vec<String> = serde_json::from_str(&row.roles).unwrap_or_default();
        let roles: BTreeSet<RoleId> = names
            .iter()
            .filter_map(|n| self.known_roles.get(n).cloned())
            .collect();
        Caller {
            subject: row.subject.clone(),
            roles: roles.into_iter().collect(),
            kind: CallerKind::Session,
        }
    }

    fn secure(&self) -> bool {
        !self.plan.insecure_cookie
    }

    fn ring(&self) -> Result<Arc<KeyRing>, Failure> {
        self.ring.clone().ok_or(Failure::NoKeys)
    }

    async fn load(&self, id_hash: &str) -> Result<Option<SessionRow>, Failure> {
        let hash = id_hash.to_string();
        Ok(self
            .store
            .run(move |c| rows::load_session(c, &hash))
            .await?)
    }

    async fn delete_quietly(&self, id_hash: &str) {
        let hash = id_hash.to_string();
        if let Err(e) = self
            .store
            .run(move |c| rows::delete_session(c, &hash))
            .await
        {
            tracing::warn!(target: "nestflux::auth", error = %e, "could not delete an ended session (the sweeper will)");
        }
    }

    fn problem(&self, f: &Failure) -> Problem {
        let unavailable = |detail: &str| {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
                .header(header::RETRY_AFTER, HeaderValue::from_static("5"))
        };
        match f {
            Failure::Ended | Failure::Unknown => Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the session has ended: log in again",
            )
            .header(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            )
            .header(
                header::SET_COOKIE,
                cookie::clear(self.plan.session_cookie(), self.secure()),
            ),
            Failure::Csrf(_) => Problem::forbidden(
                "a request authenticated by the session cookie must come from this site or an origin listed in [cors]",
            ),
            Failure::NoKeys => {
                unavailable("browser sessions need NESTFLUX_ENCRYPTION__KEYS, which is not set")
            }
            Failure::Store(StoreError::Unavailable(_)) => {
                unavailable("the database is temporarily unavailable")
            }
            Failure::Store(e) => {
                tracing::error!(target: "nestflux::auth", error = %e, "session store failed");
                Problem::internal()
            }
            Failure::Provider(e) => {
                tracing::warn!(target: "nestflux::auth", error = %e, "identity provider unavailable");
                unavailable("the identity provider is temporarily unavailable")
            }
        }
    }
}
/// One lock per session being refreshed in this process; entries go away with their last
/// user, so the map holds only sessions refreshing right now.
#[derive(Default)]
struct Locks(Mutex<HashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>>);

impl Locks {
    fn get(&self, key: [u8; 32]) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key).or_default().clone()
    }

    fn release(&self, key: [u8; 32], lock: Arc<tokio::sync::Mutex<()>>) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // The map's reference and ours: nobody else holds or waits for it.
        if Arc::strong_count(&lock) <= 2 {
            map.remove(&key);
        }
    }
}

/// Query parameters, each readable only when it appears exactly once.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(text: &str) -> Self {
        Self(
            url::form_urlencoded::parse(text.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .take(64)
                .collect(),
        )
    }

    fn one(&self, name: &str) -> Option<&str> {
        let mut found = self.0.iter().filter(|(k, _)| k == name);
        match (found.next(), found.next()) {
            (Some((_, v)), None) => Some(v.as_str()),
            _ => None,
        }
    }
}

fn refresh_due(row: &SessionRow, now: i64) -> bool {
    row.refresh_token.is_some() && row.refresh_at.is_some_and(|at| now >= at)
}

fn access_expired(row: &SessionRow, now: i64) -> bool {
    row.access_expires_at.is_some_and(|e| now >= e)
}

fn roles_json(roles: &[RoleId]) -> String {
    let names: Vec<&str> = roles.iter().map(|r| r.0.as_str()).collect();
    serde_json::to_string(&names).unwrap_or_else(|_| "[]".into())
}

fn aad<'a>(table: &'a str, column: &'a str, id: &'a str) -> Aad<'a> {
    Aad {
        resource: table,
        field: column,
        id,
    }
}

/// 256 bits from the operating system, base64url (43 characters).
fn random_id() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

fn unhex32(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

fn rfc3339(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_fresh_256_bit_values() {
        let a = random_id().unwrap();
        let b = random_id().unwrap();
        assert_ne!(a, b);
        assert!(cookie::is_id(&a) && cookie::is_id(&b));
        assert_eq!(unhex32(&hex(&sha256(&a))), Some(sha256(&a)));
    }

    #[test]
    fn query_parameters_count_only_once() {
        let q = Query::parse("state=a&code=b&code=c&x=%2F");
        assert_eq!(q.one("state"), Some("a"));
        assert_eq!(q.one("code"), None);
        assert_eq!(q.one("x"), Some("/"));
        assert_eq!(q.one("missing"), None);
    }
}
