//! Who is calling: the [`Caller`] every later stage (rate limits, authorization, actions,
//! audit) reads from the request extensions, proven by a bearer JWT from the OIDC issuer,
//! by a declared API key, or by the browser session cookie — or a 401 problem.
//!
//! Credentials: `Authorization: Bearer <jwt>`, `Authorization: Bearer nfk_…` (API key) or
//! `X-API-Key: nfk_…`; exactly one of them. Only a request with none of those is
//! authenticated by its session cookie (`[auth.session]`): an explicit credential is a
//! deliberate choice of the client, while the cookie rides along on every request of the
//! browser, so the header wins and the cookie is then ignored. Tokens, keys and session
//! ids are never logged.

pub mod api_key;
pub mod dev;
pub mod jwks;
pub mod jwt;
pub mod roles;
pub mod session;

use std::str::FromStr;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::{HttpMessage, HttpRequest};

use crate::plan::Plan;
use crate::plan::roles::RoleId;
use crate::plan::routes::{Access, RoutePlan};
use crate::problem::Problem;
use api_key::ApiKeys;
use jwks::Jwks;
use jwt::{BearerVerifier, Rejection, VerifierConfig};

/// How a caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerKind {
    /// A bearer JWT from the OIDC issuer.
    Bearer,
    /// A token minted by the development issuer.
    Dev,
    /// A declared API key, by name.
    ApiKey(String),
    /// The browser session cookie of `[auth.session]`.
    Session,
}

impl CallerKind {
    /// `bearer`, `dev`, `api_key` or `session`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Bearer => "bearer",
            Self::Dev => "dev",
            Self::ApiKey(_) => "api_key",
            Self::Session => "session",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who the caller is, bound to how it proved it: the provider's `sub` as is,
    /// `dev:<sub>` for development-issuer tokens, `apikey:NAME` for API keys. Row ownership
    /// compares this value, so one namespace can never own, read or change another's rows.
    pub subject: String,
    /// Roles known to the plan; unknown roles from the token are dropped.
    pub roles: Vec<RoleId>,
    /// How the caller proved it.
    pub kind: CallerKind,
}

/// Subjects of development-issuer callers start with this, so a development token can never
/// act as a provider's user of the same `sub` (and the reverse).
pub const DEV_SUBJECT_PREFIX: &str = "dev:";

/// Whether a token's raw `sub` claims another namespace (`apikey:…`, `dev:…`): refused.
pub fn is_reserved_subject(sub: &str) -> bool {
    sub.starts_with(api_key::SUBJECT_PREFIX) || sub.starts_with(DEV_SUBJECT_PREFIX)
}

/// The subject a verified token's `sub` becomes, by how it was verified.
pub fn qualified_subject(kind: &CallerKind, sub: &str) -> String {
    match kind {
        CallerKind::Dev => format!("{DEV_SUBJECT_PREFIX}{sub}"),
        _ => sub.to_string(),
    }
}

/// A client's allowance of failed authentications (the `auth_failures` rate-limit policy,
/// by client ip, in the server). Signature checks are what make forged tokens expensive, so
/// a client that spent it gets 429 before any is made.
pub trait FailureBudget: Sync {
    /// `Some(wait)` while the client has no failures left.
    fn exhausted(&self) -> Option<std::time::Duration>;
    /// Charges one failed authentication.
    fn charge(&self) -> impl std::future::Future<Output = ()> + Send;
}

/// No budget: for tools that verify outside a request (`explain`, benchmarks).
pub struct Unlimited;

impl FailureBudget for Unlimited {
    fn exhausted(&self) -> Option<std::time::Duration> {
        None
    }

    async fn charge(&self) {}
}

/// Header carrying an API key, as an alternative to `Authorization: Bearer nfk_…`.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Why a request is not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The request carries no credentials.
    #[error("no credentials")]
    Missing,
    /// A bearer token that does not verify.
    #[error("invalid credentials: {0}")]
    Invalid(Rejection),
    /// The client spent its budget of failed authentications (`auth_failures`).
    #[error("too many failed authentications")]
    OverBudget(std::time::Duration),
    /// Two or more credentials in one request.
    #[error("invalid credentials: several were presented")]
    Ambiguous,
    /// An API key that is not declared.
    #[error("invalid credentials: unknown API key")]
    UnknownApiKey,
    /// A bearer token, but no issuer is configured.
    #[error("invalid credentials: bearer tokens are not accepted (no auth.issuer)")]
    NoIssuer,
}

impl AuthError {
    /// The `reason` label of `nestflux_auth_refused_total`.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Invalid(r) => r.metric_reason(),
            Self::OverBudget(_) => "over_budget",
            Self::Ambiguous => "ambiguous",
            Self::UnknownApiKey => "unknown_api_key",
            Self::NoIssuer => "no_issuer",
        }
    }

    /// The 401 problem, with the RFC 6750 challenge: a bare `Bearer` when nothing was
    /// presented, `error="invalid_token"` otherwise. The detail never says which check failed.
    pub fn problem(&self) -> Problem {
        if let Self::OverBudget(wait) = self {
            // Whole seconds, rounded up, at least 1 (as every Retry-After here).
            let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
            return Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "auth-failures",
                format!("too many failed authentications from this client; retry in {secs} s"),
            )
            .header(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        let (challenge, detail) = match self {
            Self::Missing => (
                "Bearer",
                "this route needs credentials: a bearer token or an API key",
            ),
            _ => (
                "Bearer error=\"invalid_token\"",
                "the credentials are invalid or expired",
            ),
        };
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail).header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        )
    }
}

/// Why authentication could not be set up from a valid plan.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// jsonwebtoken found no crypto backend.
    #[error("jsonwebtoken has no crypto provider (enable exactly one backend)")]
    NoCryptoProvider,
    /// The HTTP client for the issuer could not be built.
    #[error("HTTP client for the issuer: {0}")]
    Http(#[from] reqwest::Error),
    /// The key refresher thread could not start.
    #[error("key refresher: {0}")]
    Io(#[from] std::io::Error),
    /// The development issuer's key could not be loaded.
    #[error("development issuer: {0}")]
    Dev(String),
    /// Browser login could not be set up.
    #[error("browser login: {0}")]
    Session(String),
}

/// Bearer verification and API keys, built once and shared by every worker.
pub struct Authenticator {
    bearer: Option<BearerVerifier>,
    /// The development issuer's verifier: same checks, a fixed key from the database.
    dev: Option<BearerVerifier>,
    api_keys: ApiKeys,
    /// Browser login, when `[auth.session]` is declared.
    sessions: Option<Arc<session::Sessions>>,
    /// Outcomes of the authentication stage (detached by default).
    metrics: crate::metrics::AuthMetrics,
}

impl Authenticator {
    /// Builds the verifier without starting the key refresher (see [`Authenticator::start`]).
    pub fn build(plan: &Plan) -> Result<Self, SetupError> {
        let Some(auth) = &plan.auth else {
            return Ok(Self {
                bearer: None,
                dev: None,
                api_keys: ApiKeys::default(),
                sessions: None,
                metrics: Default::default(),
            });
        };
        let bearer = match (&auth.issuer, &auth.audience) {
            (Some(issuer), Some(audience)) => {
                if jsonwebtoken::crypto::CryptoProvider::try_get_default().is_none() {
                    return Err(SetupError::NoCryptoProvider);
                }
                let allowed = allowed_algorithms(auth);
                let jwks = Arc::new(
                    Jwks::new(issuer.clone(), allowed.clone())?.with_max_stale(auth.jwks_max_stale),
                );
                Some(BearerVerifier::new(
                    jwks,
                    verifier_config(plan, auth, allowed, audience.clone()),
                ))
            }
            _ => None,
        };
        Ok(Self {
            bearer,
            dev: None,
            api_keys: ApiKeys::new(&auth.api_keys),
            sessions: None,
            metrics: Default::default(),
        })
    }

    /// Accepts tokens of the development issuer, verified like any provider's against the
    /// stored key, and records every verified subject in the users table.
    pub fn attach_store(
        self,
        plan: &Plan,
        store: &crate::store::Store,
        audit: &crate::audit::sink::AuditSink,
    ) -> Result<Self, SetupError> {
        let mut me = self;
        if plan.auth.as_ref().is_some_and(|a| a.dev_issuer) {
            let key = dev::DevKey::open(store).map_err(|e| SetupError::Dev(e.to_string()))?;
            me = me.with_dev_key(plan, &key)?;
        }
        me.dev = me.dev.map(|d| d.with_users(store.clone()));
        me.bearer = me.bearer.map(|b| b.with_users(store.clone()));
        // Sessions verify ID tokens with the bearer verifier's key cache.
        if let (Some(auth), Some(bearer)) = (&plan.auth, &me.bearer)
            && let Some(session) = &auth.session
        {
            me.sessions = Some(Arc::new(session::Sessions::new(
                plan,
                session,
                bearer.jwks().clone(),
                allowed_algorithms(auth),
                store.clone(),
                audit.clone(),
            )?));
        }
        Ok(me)
    }

    /// Accepts tokens of the development issuer signed by `key`, when `[auth.dev]` is on
    /// (records no users: `nestflux explain` verifies without writing).
    pub fn with_dev_key(mut self, plan: &Plan, key: &dev::DevKey) -> Result<Self, SetupError> {
        let Some(auth) = plan.auth.as_ref().filter(|a| a.dev_issuer) else {
            return Ok(self);
        };
        let issuer =
            url::Url::parse(dev::DEV_ISSUER).map_err(|e| SetupError::Dev(e.to_string()))?;
        let allowed = vec![jsonwebtoken::Algorithm::EdDSA];
        let jwks = Arc::new(Jwks::fixed(issuer, allowed.clone(), &key.jwks())?);
        let audience = auth
            .audience
            .clone()
            .unwrap_or_else(|| dev::DEFAULT_AUDIENCE.into());
        let config = verifier_config(plan, auth, allowed, audience);
        self.dev = Some(BearerVerifier::new(jwks, config).with_kind(CallerKind::Dev));
        Ok(self)
    }

    /// Starts fetching and refreshing the issuer's keys in the background (the server
    /// serves meanwhile, even while the provider is unreachable), and the sweeper of
    /// expired sessions.
    pub fn start(&self) -> Result<(), SetupError> {
        if let Some(b) = &self.bearer {
            b.jwks().spawn_refresher()?;
        }
        if let Some(s) = &self.sessions {
            s.spawn_sweeper()?;
        }
        Ok(())
    }

    /// Counts outcomes, token cache hits and key refreshes into `metrics`.
    pub fn with_metrics(mut self, metrics: &crate::metrics::Metrics) -> Self {
        self.metrics = metrics.auth();
        if let Some(b) = &self.bearer {
            b.jwks()
                .count_refreshes_into(metrics.jwks(b.jwks().issuer().as_str()));
        }
        self.bearer = self
            .bearer
            .map(|b| b.with_cache_metrics(metrics.token_cache()));
        self.dev = self
            .dev
            .map(|b| b.with_cache_metrics(metrics.token_cache()));
        self
    }

    /// Browser login, when `[auth.session]` is declared.
    pub fn sessions(&self) -> Option<&Arc<session::Sessions>> {
        self.sessions.as_ref()
    }

    /// The freshness of each issuer's signing keys (the configured issuer's, then the
    /// development issuer's), for the health route's detail.
    pub fn key_freshness(&self) -> Vec<serde_json::Value> {
        self.bearer
            .iter()
            .chain(&self.dev)
            .map(|b| b.jwks().freshness())
            .collect()
    }

    /// The bearer verifier, when an issuer is configured.
    pub fn bearer(&self) -> Option<&BearerVerifier> {
        self.bearer.as_ref()
    }

    /// Authenticates the credentials in a request's headers.
    ///
    /// `budget` is the client's allowance of failed authentications: a token never seen
    /// before is refused unchecked while it is spent, and every failure not answered from a
    /// cache is charged to it.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        budget: &impl FailureBudget,
    ) -> Result<Arc<Caller>, AuthError> {
        match credential(headers)? {
            Credential::ApiKey(key) => match self.api_keys.find(key) {
                Some(caller) => Ok(caller),
                None => {
                    budget.charge().await;
                    Err(AuthError::UnknownApiKey)
                }
            },
            Credential::Bearer(token) => {
                // Routed by the unverified `iss`; the chosen verifier then checks everything,
                // `iss` included, so a lie only picks a verifier that refuses it. A token a
                // verifier has seen went there by the same rule: it is not parsed again.
                let hash = jwt::token_hash(token);
                let verifier = match (&self.dev, &self.bearer) {
                    (Some(dev), _) if dev.has_seen(&hash) => dev,
                    (_, Some(bearer)) if bearer.has_seen(&hash) => bearer,
                    (Some(dev), _) if claims_dev_issuer(token) => dev,
                    (_, Some(bearer)) => bearer,
                    (_, None) => return Err(AuthError::NoIssuer),
                };
                match verifier.verify_hashed(token, &hash, budget).await {
                    Ok(verified) => Ok(verified.caller.clone()),
                    Err(Rejection::OverBudget(wait)) => Err(AuthError::OverBudget(wait)),
                    Err(rejection) => Err(AuthError::Invalid(rejection)),
                }
            }
        }
    }
}

/// One issuer's verification settings; the provider and the dev issuer differ only in
/// algorithms and audience.
fn verifier_config(
    plan: &Plan,
    auth: &crate::plan::auth::AuthPlan,
    allowed: Vec<jsonwebtoken::Algorithm>,
    audience: String,
) -> VerifierConfig {
    VerifierConfig {
        allowed,
        audience,
        leeway_secs: auth.leeway.as_secs(),
        require_access_token_typ: auth.require_access_token_typ,
        allowed_clients: auth.allowed_clients.clone(),
        roles: roles::RoleMapper::new(
            auth.roles_claim.clone(),
            plan.roles.closures.keys().cloned(),
        ),
    }
}

/// The algorithm allow-list as jsonwebtoken's type. The plan only admits asymmetric
/// algorithms; HS* and `none` never get here.
fn allowed_algorithms(auth: &crate::plan::auth::AuthPlan) -> Vec<jsonwebtoken::Algorithm> {
    auth.algorithms
        .iter()
        .filter_map(|a| jsonwebtoken::Algorithm::from_str(a).ok())
        .filter(|a| a.family() != jsonwebtoken::AlgorithmFamily::Hmac)
        .collect()
}

/// Whether a token claims the development issuer as its `iss`, read without verification,
/// only to pick a verifier. Only `iss` is kept from the claims (the rest is skipped, not
/// built into a tree: this runs on every bearer request).
fn claims_dev_issuer(token: &str) -> bool {
    use base64::Engine;
    #[derive(serde::Deserialize)]
    struct Iss<'a> {
        #[serde(borrow)]
        iss: Option<std::borrow::Cow<'a, str>>,
    }
    let Some(payload) = token.split('.').nth(1) else {
        return false;
    };
    if payload.len() > jwt::MAX_TOKEN_BYTES {
        return false;
    }
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload) else {
        return false;
    };
    // A struct also deserializes from an array (its fields in order): claims are an object.
    bytes.trim_ascii_start().starts_with(b"{")
        && serde_json::from_slice::<Iss<'_>>(&bytes)
            .is_ok_and(|claims| claims.iss.as_deref() == Some(dev::DEV_ISSUER))
}

enum Credential<'a> {
    Bearer(&'a str),
    ApiKey(&'a str),
}

fn credential(headers: &HeaderMap) -> Result<Credential<'_>, AuthError> {
    let mut authorization = headers.get_all(header::AUTHORIZATION);
    let mut api_key = headers.get_all(API_KEY_HEADER);
    let invalid = || AuthError::Invalid(Rejection::Malformed);
    match (
        authorization.next(),
        authorization.next(),
        api_key.next(),
        api_key.next(),
    ) {
        (None, _, None, _) => Err(AuthError::Missing),
        (None, _, Some(key), None) => key
            .to_str()
            .map(|k| Credential::ApiKey(k.trim()))
            .map_err(|_| invalid()),
        (Some(value), None, None, _) => {
            let value = value.to_str().map_err(|_| invalid())?.trim();
            let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
            if !scheme.eq_ignore_ascii_case("bearer") {
                // Another scheme (Basic, …) carries no bearer credential (RFC 6750 §3).
                return Err(AuthError::Missing);
            }
            let token = rest.trim();
            if token.is_empty() {
                Err(invalid())
            } else if token.starts_with(api_key::PREFIX) {
                Ok(Credential::ApiKey(token))
            } else {
                Ok(Credential::Bearer(token))
            }
        }
        // Two credentials, or one header twice: refuse rather than pick one.
        _ => Err(AuthError::Ambiguous),
    }
}

/// The authentication stage of the pipeline: public routes pass untouched (credentials
/// ignored); any other route gets its [`Caller`] in the request extensions (read later by
/// rate limits, authorization, actions and the access log), or a 401 problem.
pub async fn authenticate(
    auth: &Authenticator,
    route: &RoutePlan,
    req: &HttpRequest,
    budget: &impl FailureBudget,
) -> Result<(), Problem> {
    if route.access == Access::Public {
        return Ok(());
    }
    let caller = match auth.authenticate(req.headers(), budget).await {
        Ok(caller) => caller,
        // No header credential: the session cookie, if the browser sent one.
        Err(AuthError::Missing) if auth.sessions.as_ref().is_some_and(|s| s.has_cookie(req)) => {
            match &auth.sessions {
                // Boxed: the session path's future is several KiB, and inline it would
                // grow every bearer request's future by as much.
                Some(s) => Box::pin(s.authenticate(req, auth.bearer(), budget))
                    .await
                    .inspect_err(|_| auth.metrics.refused("session"))?,
                None => return Err(AuthError::Missing.problem()),
            }
        }
        Err(e) => {
            tracing::debug!(target: "nestflux::auth", reason = %e, route = %route.path, "request not authenticated");
            auth.metrics.refused(e.metric_reason());
            return Err(e.problem());
        }
    };
    auth.metrics.accepted(caller.kind.name());
    req.extensions_mut().insert(Caller::clone(&caller));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderName;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_static(n),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn credentials_are_read_strictly() {
        assert!(matches!(credential(&headers(&[])), Err(AuthError::Missing)));
        assert!(matches!(
            credential(&headers(&[("authorization", "Basic dTpw")])),
            Err(AuthError::Missing)
        ));
        assert!(matches!(
            credential(&headers(&[("authorization", "bearer a.b.c")])),
            Ok(Credential::Bearer("a.b.c"))
        ));
        assert!(matches!(
            credential(&headers(&[("authorization", "Bearer nfk_abc")])),
            Ok(Credential::ApiKey("nfk_abc"))
        ));
        assert!(matches!(
            credential(&headers(&[("x-api-key", "nfk_abc")])),
            Ok(Credential::ApiKey("nfk_abc"))
        ));
        assert!(matches!(
            credential(&headers(&[("authorization", "Bearer ")])),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            credential(&headers(&[
                ("authorization", "Bearer a.b.c"),
                ("x-api-key", "nfk_abc")
            ])),
            Err(AuthError::Ambiguous)
        ));
        assert!(matches!(
            credential(&headers(&[
                ("authorization", "Bearer a.b.c"),
                ("authorization", "Bearer d.e.f")
            ])),
            Err(AuthError::Ambiguous)
        ));
    }

    #[test]
    fn challenges() {
        let p = AuthError::Missing.problem();
        assert_eq!(p.status, StatusCode::UNAUTHORIZED);
        assert_eq!(p.headers[0].1, "Bearer");
        let p = AuthError::Invalid(Rejection::Expired).problem();
        assert_eq!(p.headers[0].1, "Bearer error=\"invalid_token\"");
        assert!(!p.detail.contains("expired token"));
    }

    #[test]
    fn only_a_token_claiming_the_dev_issuer_is_routed_to_it() {
        use base64::Engine;
        let token = |claims: &str| {
            let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
            format!("{}.{}.sig", b64(r#"{"alg":"EdDSA"}"#), b64(claims))
        };
        assert!(claims_dev_issuer(&token(
            r#"{"sub":"a","iss":"urn:nestflux:dev-issuer","aud":["x"]}"#
        )));
        // An escaped character still reads as the same issuer.
        assert!(claims_dev_issuer(&token(
            r#"{"iss":"urn:nestflux:dev\u002dissuer"}"#
        )));
        for claims in [
            r#"{"iss":"https://idp.example"}"#,
            r#"{"sub":"a"}"#,
            r#"{"iss":7}"#,
            r#"["urn:nestflux:dev-issuer"]"#,
            "not json",
        ] {
            assert!(!claims_dev_issuer(&token(claims)), "{claims}");
        }
        assert!(!claims_dev_issuer("no-dots"));
    }
}
