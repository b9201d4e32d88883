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

pub mod cookie;
pub mod csrf;
pub mod id_token;
pub mod provider;
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
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::jwks::Jwks;
use super::jwt::BearerVerifier;
use super::roles::RoleMapper;
use super::{Caller, CallerKind};
use crate::crypto::{Aad, KeyRing};
use crate::plan::Plan;
use crate::plan::auth::SessionPlan;
use crate::plan::roles::RoleId;
use crate::problem::Problem;
use crate::store::sessions::{self as rows, PendingLogin, Refreshed, SessionRow};
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
const MAX_STATE_LEN: usize = 128;
/// Longest authorization code accepted.
const MAX_CODE_LEN: usize = 4096;

/// Why a request's session cannot be used.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// No such session, expired, logged out, or its refresh was refused: log in again.
    #[error("the session has ended")]
    Ended,
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

    // ---- the authentication stage ----------------------------------------------------

    /// Authenticates a request by its session cookie (called when it carries no
    /// `Authorization` or `X-API-Key`): CSRF check for unsafe methods, then the session,
    /// refreshed if due.
    pub async fn authenticate(
        &self,
        req: &HttpRequest,
        bearer: Option<&BearerVerifier>,
    ) -> Result<Arc<Caller>, Problem> {
        let result = async {
            csrf::check(req, &self.plan.origin, &self.cors_origins).map_err(Failure::Csrf)?;
            let id = match cookie::read(req, self.plan.session_cookie()) {
                cookie::Read::One(id) => id,
                _ => return Err(Failure::Ended),
            };
            self.current(&id, bearer, true).await
        }
        .await;
        match result {
            Ok(row) => Ok(Arc::new(self.caller(&row))),
            Err(f) => {
                tracing::debug!(target: "nestflux::auth", reason = %f, "session not accepted");
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
        let mut row = self.load(&id_hash).await?.ok_or(Failure::Ended)?;
        if row.idle_expires_at <= now || row.absolute_expires_at <= now {
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

    /// Refreshes a session whose access token is near expiry. Within this process one
    /// request per session does it while the others wait (expired token) or go on with the
    /// still-valid one; across processes the database lease decides.
    async fn refresh(
        &self,
        id_hash: &str,
        key: [u8; 32],
        row: SessionRow,
        ring: &KeyRing,
        bearer: Option<&BearerVerifier>,
    ) -> Result<SessionRow, Failure> {
        let expired = access_expired(&row, now_ms());
        let lock = self.locks.get(key);
        let guard = if expired {
            Some(lock.clone().lock_owned().await)
        } else {
            lock.clone().try_lock_owned().ok()
        };
        let result = match guard {
            Some(_guard) => self.refresh_locked(id_hash, ring, bearer).await,
            // Another request of this process refreshes; this token is still good.
            None => Ok(row),
        };
        self.locks.release(key, lock);
        result
    }

    async fn refresh_locked(
        &self,
        id_hash: &str,
        ring: &KeyRing,
        bearer: Option<&BearerVerifier>,
    ) -> Result<SessionRow, Failure> {
        let deadline = now_ms() + millis(REFRESH_LEASE) + 5_000;
        loop {
            let row = self.load(id_hash).await?.ok_or(Failure::Ended)?;
            let now = now_ms();
            if !refresh_due(&row, now) {
                return Ok(row);
            }
            let lease = now + millis(REFRESH_LEASE);
            let (hash, generation) = (id_hash.to_string(), row.generation);
            let claimed = self
                .store
                .run(move |c| rows::claim_refresh(c, &hash, generation, now, lease))
                .await?;
            if claimed {
                return self.refresh_claimed(id_hash, row, ring, bearer).await;
            }
            if !access_expired(&row, now) {
                // Another instance refreshes; this token is still good.
                return Ok(row);
            }
            if now > deadline {
                return Err(Failure::Provider(ProviderError::Unavailable(
                    "a refresh in progress elsewhere did not finish".into(),
                )));
            }
            tokio::time::sleep(REFRESH_POLL).await;
        }
    }

    /// The refresh grant for a session whose refresh this request has claimed.
    async fn refresh_claimed(
        &self,
        id_hash: &str,
        row: SessionRow,
        ring: &KeyRing,
        bearer: Option<&BearerVerifier>,
    ) -> Result<SessionRow, Failure> {
        let sealed = row.refresh_token.clone().unwrap_or_default();
        let refresh_token = match ring.open(&aad(SESSIONS, "refresh_token", id_hash), &sealed) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(target: "nestflux::auth", error = %e, "a session's refresh token does not decrypt; session ended");
                self.delete_quietly(id_hash).await;
                return Err(Failure::Ended);
            }
        };
        let tokens = match self.provider.refresh(refresh_token).await {
            Ok(t) => t,
            Err(ProviderError::Rejected(code)) => {
                tracing::info!(target: "nestflux::auth", subject = %row.subject, error = %code, "the provider refused the refresh; session ended");
                self.delete_quietly(id_hash).await;
                return Err(Failure::Ended);
            }
            Err(e) => {
                tracing::warn!(target: "nestflux::auth", error = %e, "session refresh failed; will retry");
                let (hash, generation) = (id_hash.to_string(), row.generation);
                let _ = self
                    .store
                    .run(move |c| rows::release_refresh(c, &hash, generation))
                    .await;
                return if access_expired(&row, now_ms()) {
                    Err(Failure::Provider(e))
                } else {
                    Ok(row)
                };
            }
        };
        let verified = match &tokens.id_token {
            Some(t) => {
                let expect = id_token::Expect {
                    client_id: &self.plan.client_id,
                    nonce_sha256: None,
                    access_token: Some(&tokens.access_token),
                    subject: Some(&row.subject),
                    leeway_secs: self.leeway_secs,
                };
                match id_token::verify(&self.jwks, &self.allowed, t, &expect).await {
                    Ok(v) => Some(v),
                    Err(e) => {
                        tracing::warn!(target: "nestflux::auth", error = %e, "refreshed ID token refused; session ended");
                        self.delete_quietly(id_hash).await;
                        return Err(Failure::Ended);
                    }
                }
            }
            None => None,
        };
        let now = now_ms();
        let identity = self
            .identity(
                bearer,
                &tokens.access_token,
                &row.subject,
                verified.as_ref().map(|v| &v.claims),
            )
            .await;
        let roles = identity
            .roles
            .map(|r| roles_json(&r))
            .unwrap_or_else(|| row.roles.clone());
        let can_refresh = tokens.refresh_token.is_some() || row.refresh_token.is_some();
        let (access_expires_at, refresh_at) =
            expiries(now, tokens.expires_in, identity.exp_ms, can_refresh);
        let seal = |field: &str, value: &str| {
            ring.seal(&aad(SESSIONS, field, id_hash), value)
                .map_err(|e| Failure::Store(StoreError::Database(e.to_string())))
        };
        let refreshed = Refreshed {
            roles,
            access_token: seal("access_token", &tokens.access_token)?,
            refresh_token: match &tokens.refresh_token {
                Some(t) => Some(seal("refresh_token", t)?),
                None => row.refresh_token.clone(),
            },
            id_token: match &tokens.id_token {
                Some(t) => Some(seal("id_token", t)?),
                None => row.id_token.clone(),
            },
            access_expires_at,
            refresh_at,
        };
        let (hash, generation, stored) = (id_hash.to_string(), row.generation, refreshed.clone());
        let kept = self
            .store
            .run(move |c| rows::store_refresh(c, &hash, generation, &stored))
            .await?;
        if !kept {
            // Logged out (or ended) while the provider answered: it stays ended.
            return Err(Failure::Ended);
        }
        tracing::info!(target: "nestflux::auth", subject = %row.subject, rotated = tokens.refresh_token.is_some(), "session tokens refreshed");
        Ok(SessionRow {
            roles: refreshed.roles,
            access_token: refreshed.access_token,
            refresh_token: refreshed.refresh_token,
            id_token: refreshed.id_token,
            access_expires_at,
            refresh_at,
            generation: row.generation + 1,
            refresh_lease_until: None,
            ..row
        })
    }

    /// Roles (and the access token's expiry) from the access token when it is a JWT the
    /// bearer verifier accepts for the same subject, else roles from the ID token claims.
    async fn identity(
        &self,
        bearer: Option<&BearerVerifier>,
        access_token: &str,
        subject: &str,
        id_claims: Option<&Map<String, Value>>,
    ) -> Identity {
        if let Some(b) = bearer
            && let Ok(v) = b.verify(access_token).await
            && v.caller.subject == subject
        {
            return Identity {
                roles: Some(v.caller.roles.clone()),
                exp_ms: i64::try_from(v.exp).ok().map(|s| s.saturating_mul(1000)),
            };
        }
        Identity {
            roles: id_claims.map(|c| self.id_roles.roles(c)),
            exp_ms: None,
        }
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

    // ---- the routes -----------------------------------------------------------------

    /// `GET /auth/login`: a pending login in the database, the login cookie, and the
    /// redirect to the provider.
    pub async fn login(&self, req: &HttpRequest) -> Result<Redirect, Problem> {
        let ring = self.ring().map_err(|f| self.problem(&f))?;
        let d = self
            .provider
            .discovered()
            .await
            .map_err(|e| self.problem(&Failure::Provider(e)))?;
        let query = Query::parse(req.query_string());
        let return_to =
            return_to::checked(query.one("return_to"), &self.own_origin, &self.cors_origins);
        let (state, nonce, verifier, browser) = (
            random_id().map_err(|_| Problem::internal())?,
            random_id().map_err(|_| Problem::internal())?,
            random_id().map_err(|_| Problem::internal())?,
            random_id().map_err(|_| Problem::internal())?,
        );
        let state_hash = hex(&sha256(&state));
        let now = now_ms();
        let pending = PendingLogin {
            pkce_verifier: ring
                .seal(&aad(LOGINS, "pkce_verifier", &state_hash), &verifier)
                .map_err(|_| Problem::internal())?,
            state_hash,
            browser_hash: hex(&sha256(&browser)),
            nonce_hash: hex(&sha256(&nonce)),
            return_to,
            created_at: now,
            expires_at: now + millis(self.plan.login_timeout),
        };
        self.store
            .run(move |c| rows::insert_login(c, &pending))
            .await
            .map_err(|e| self.problem(&Failure::Store(e)))?;
        let url = self.provider.authorize_url(&d, state, nonce, &verifier);
        Ok(Redirect {
            location: url.to_string(),
            cookies: vec![cookie::set(
                self.plan.login_cookie(),
                &browser,
                self.plan.login_timeout,
                self.secure(),
            )],
        })
    }

    /// The callback: the pending login taken once and checked (state, browser, expiry,
    /// issuer), the code exchanged, the ID token verified, and a new session.
    pub async fn callback(
        &self,
        req: &HttpRequest,
        bearer: Option<&BearerVerifier>,
    ) -> Result<Redirect, Problem> {
        let clear_login = cookie::clear(self.plan.login_cookie(), self.secure());
        let refuse = |detail: &str| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "login-failed",
                format!("the login could not be completed: {detail}; start again at /auth/login"),
            )
            .header(header::SET_COOKIE, clear_login.clone())
        };
        let ring = self.ring().map_err(|f| self.problem(&f))?;
        let query = Query::parse(req.query_string());
        let state = query
            .one("state")
            .filter(|s| !s.is_empty() && s.len() <= MAX_STATE_LEN)
            .ok_or_else(|| refuse("no state"))?;
        let state_hash = hex(&sha256(state));
        let taken = state_hash.clone();
        let pending = self
            .store
            .run(move |c| rows::take_login(c, &taken))
            .await
            .map_err(|e| self.problem(&Failure::Store(e)))?
            .ok_or_else(|| refuse("unknown, already used or expired state"))?;
        let now = now_ms();
        if now >= pending.expires_at {
            return Err(refuse("the login took too long"));
        }
        let browser = match cookie::read(req, self.plan.login_cookie()) {
            cookie::Read::One(b) => b,
            _ => return Err(refuse("this login was started in another browser")),
        };
        if !bool::from(
            hex(&sha256(&browser))
                .as_bytes()
                .ct_eq(pending.browser_hash.as_bytes()),
        ) {
            return Err(refuse("this login was started in another browser"));
        }
        if let Some(error) = query.one("error") {
            let code = if error.len() <= 64
                && error.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            {
                error
            } else {
                "error"
            };
            return Err(refuse(&format!("the provider answered {code}")));
        }
        // RFC 9207: a response naming another issuer is a mix-up attack.
        if let Some(iss) = query.one("iss")
            && !self.jwks.accepted_issuers().iter().any(|i| i == iss)
        {
            return Err(refuse("the response names another issuer"));
        }
        let code = query
            .one("code")
            .filter(|c| !c.is_empty() && c.len() <= MAX_CODE_LEN)
            .ok_or_else(|| refuse("no code"))?;
        let verifier = ring
            .open(
                &aad(LOGINS, "pkce_verifier", &pending.state_hash),
                &pending.pkce_verifier,
            )
            .map_err(|_| refuse("the login record is unreadable"))?;
        let d = self
            .provider
            .discovered()
            .await
            .map_err(|e| self.problem(&Failure::Provider(e)))?;
        let tokens = match self.provider.exchange(&d, code.to_string(), verifier).await {
            Ok(t) => t,
            Err(ProviderError::Rejected(code)) => {
                tracing::info!(target: "nestflux::auth", error = %code, "the provider refused the code exchange");
                return Err(refuse("the provider refused the code"));
            }
            Err(e) => return Err(self.problem(&Failure::Provider(e))),
        };
        let id_token = tokens
            .id_token
            .clone()
            .ok_or_else(|| refuse("the provider sent no ID token"))?;
        let nonce_hash: [u8; 32] =
            unhex32(&pending.nonce_hash).ok_or_else(|| refuse("the login record is unreadable"))?;
        let expect = id_token::Expect {
            client_id: &self.plan.client_id,
            nonce_sha256: Some(&nonce_hash),
            access_token: Some(&tokens.access_token),
            subject: None,
            leeway_secs: self.leeway_secs,
        };
        let verified = id_token::verify(&self.jwks, &self.allowed, &id_token, &expect)
            .await
            .map_err(|e| {
                tracing::info!(target: "nestflux::auth", error = %e, "ID token refused at login");
                refuse("the ID token is not valid for this login")
            })?;
        let identity = self
            .identity(
                bearer,
                &tokens.access_token,
                &verified.subject,
                Some(&verified.claims),
            )
            .await;
        let text = |k: &str| {
            verified
                .claims
                .get(k)
                .and_then(Value::as_str)
                .filter(|v| v.len() <= 1024)
                .map(str::to_string)
        };
        let issuer = text("iss").unwrap_or_default();
        let sighting = crate::store::users::Sighting {
            issuer: issuer.clone(),
            subject: verified.subject.clone(),
            email: text("email"),
            name: text("name"),
        };
        if let Err(e) = self
            .store
            .run(move |c| crate::store::users::record(c, &sighting))
            .await
        {
            tracing::warn!(target: "nestflux::auth", error = %e, "could not record the user sighting");
        }

        // Session fixation: whatever session id the browser held before is ended, and the
        // new one is fresh randomness.
        if let cookie::Read::One(old) = cookie::read(req, self.plan.session_cookie()) {
            self.delete_quietly(&hex(&sha256(&old))).await;
        }
        let id = random_id().map_err(|_| Problem::internal())?;
        let id_hash = hex(&sha256(&id));
        let seal = |field: &str, value: &str| {
            ring.seal(&aad(SESSIONS, field, &id_hash), value)
                .map_err(|_| Problem::internal())
        };
        let (access_expires_at, refresh_at) = expiries(
            now,
            tokens.expires_in,
            identity.exp_ms,
            tokens.refresh_token.is_some(),
        );
        let absolute = now + millis(self.plan.absolute_timeout);
        let row = SessionRow {
            id_hash: id_hash.clone(),
            issuer,
            subject: verified.subject.clone(),
            roles: roles_json(&identity.roles.unwrap_or_default()),
            access_token: seal("access_token", &tokens.access_token)?,
            refresh_token: match &tokens.refresh_token {
                Some(t) => Some(seal("refresh_token", t)?),
                None => None,
            },
            id_token: Some(seal("id_token", &id_token)?),
            access_expires_at,
            refresh_at,
            created_at: now,
            last_seen_at: now,
            idle_expires_at: (now + millis(self.plan.idle_timeout)).min(absolute),
            absolute_expires_at: absolute,
            generation: 0,
            refresh_lease_until: None,
        };
        self.store
            .run(move |c| rows::insert_session(c, &row))
            .await
            .map_err(|e| self.problem(&Failure::Store(e)))?;
        tracing::info!(target: "nestflux::auth", subject = %verified.subject, "browser login");
        Ok(Redirect {
            location: pending.return_to,
            cookies: vec![
                cookie::set(
                    self.plan.session_cookie(),
                    &id,
                    self.plan.absolute_timeout,
                    self.secure(),
                ),
                clear_login,
            ],
        })
    }

    /// `POST /auth/logout`: the session deleted here (every instance sees it at once), the
    /// cookie cleared, and the browser sent to the provider's logout.
    pub async fn logout(&self, req: &HttpRequest) -> Result<Redirect, Problem> {
        csrf::check(req, &self.plan.origin, &self.cors_origins)
            .map_err(|r| self.problem(&Failure::Csrf(r)))?;
        let clear = cookie::clear(self.plan.session_cookie(), self.secure());
        let mut hint = None;
        if let cookie::Read::One(id) = cookie::read(req, self.plan.session_cookie()) {
            let id_hash = hex(&sha256(&id));
            let hash = id_hash.clone();
            let deleted = self
                .store
                .run(move |c| rows::delete_session(c, &hash))
                .await
                .map_err(|e| {
                    self.problem(&Failure::Store(e))
                        .header(header::SET_COOKIE, clear.clone())
                })?;
            if let (Some(Some(sealed)), Some(ring)) = (deleted, &self.ring) {
                hint = ring
                    .open(&aad(SESSIONS, "id_token", &id_hash), &sealed)
                    .ok();
            }
        }
        let d = self.provider.known().await;
        let location = self.provider.logout_url(d.as_deref(), hint.as_deref());
        Ok(Redirect {
            location: location.to_string(),
            cookies: vec![clear],
        })
    }

    /// `GET /auth/session`: the session for front ends, without counting as a use.
    pub async fn status(
        &self,
        req: &HttpRequest,
        bearer: Option<&BearerVerifier>,
    ) -> Result<Status, Problem> {
        let clear = || vec![cookie::clear(self.plan.session_cookie(), self.secure())];
        let id = match cookie::read(req, self.plan.session_cookie()) {
            cookie::Read::Absent => {
                return Ok(Status {
                    session: None,
                    cookies: Vec::new(),
                });
            }
            cookie::Read::Bad => {
                return Ok(Status {
                    session: None,
                    cookies: clear(),
                });
            }
            cookie::Read::One(id) => id,
        };
        match self.current(&id, bearer, false).await {
            Ok(row) => {
                let caller = self.caller(&row);
                let roles: Vec<&str> = caller.roles.iter().map(|r| r.0.as_str()).collect();
                Ok(Status {
                    session: Some(serde_json::json!({
                        "authenticated": true,
                        "subject": caller.subject,
                        "roles": roles,
                        "expires_at": rfc3339(row.idle_expires_at.min(row.absolute_expires_at)),
                    })),
                    cookies: Vec::new(),
                })
            }
            Err(Failure::Ended) => Ok(Status {
                session: None,
                cookies: clear(),
            }),
            Err(f) => Err(self.problem(&f)),
        }
    }

    // ---- helpers ----------------------------------------------------------------------

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
            Failure::Ended => Problem::new(
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

/// The roles and access-token expiry learnt from a token response.
struct Identity {
    roles: Option<Vec<RoleId>>,
    exp_ms: Option<i64>,
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

/// When the access token expires and when to refresh it: `REFRESH_MARGIN` before, or at half
/// its life when that is shorter; never without a refresh token.
fn expiries(
    now: i64,
    expires_in: Option<Duration>,
    jwt_exp_ms: Option<i64>,
    can_refresh: bool,
) -> (Option<i64>, Option<i64>) {
    let expires_at = expires_in
        .map(|d| now.saturating_add(millis(d)))
        .or(jwt_exp_ms);
    let Some(at) = expires_at else {
        return (None, None);
    };
    let life = (at - now).max(0);
    let margin = millis(REFRESH_MARGIN).min(life / 2);
    (Some(at), can_refresh.then_some(at - margin))
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
    fn refresh_comes_a_minute_early_or_at_half_life() {
        let five_min = Some(Duration::from_secs(300));
        assert_eq!(
            expiries(1_000, five_min, None, true),
            (Some(301_000), Some(241_000))
        );
        assert_eq!(
            expiries(1_000, five_min, None, false),
            (Some(301_000), None)
        );
        assert_eq!(
            expiries(0, Some(Duration::from_secs(10)), None, true),
            (Some(10_000), Some(5_000))
        );
        assert_eq!(
            expiries(0, None, Some(120_000), true),
            (Some(120_000), Some(60_000))
        );
        assert_eq!(expiries(0, None, None, true), (None, None));
    }

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
