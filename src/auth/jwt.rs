//! Bearer JWT verification: strict header rules, the algorithm bound to the key, `iss`,
//! `aud`, `exp`, `nbf` and leeway, and a bounded cache of verified tokens by SHA-256.
//!
//! Checks, in order: size and alphabet (before any parsing) → header: `alg` in the
//! allow-list, `typ` absent/`JWT`/`at+jwt`, no `crit`, `cty`, `enc`, `zip`, and no
//! header-supplied key (`jku`, `x5u`, `jwk`, `x5c` are refused, never fetched) → the key
//! named by `kid` must accept that `alg` → signature and claims (jsonwebtoken with a
//! `Validation` for exactly that algorithm) → `sub`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Header, Validation};
use quick_cache::sync::Cache;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::jwks::{Jwks, Lookup};
use super::roles::RoleMapper;
use super::{Caller, CallerKind};

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Verified tokens remembered at once (and, separately, refused ones).
pub const CACHE_ENTRIES: usize = 16 * 1024;
/// How long a refused token is answered from memory.
const REJECTION_TTL_SECS: u64 = 60;
const MAX_KID_BYTES: usize = 256;
const MAX_SUBJECT_BYTES: usize = 1024;

/// Why a token was refused. Logged at debug level; the caller only sees 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Longer than any token NestFlux accepts.
    #[error("token larger than {MAX_TOKEN_BYTES} bytes")]
    Oversized,
    /// Not three base64url parts.
    #[error("not a compact JWS")]
    Malformed,
    /// A header field is missing or not allowed.
    #[error("header: {0}")]
    Header(&'static str),
    /// The header's `alg` is not in the allow-list.
    #[error("algorithm not allowed")]
    Algorithm,
    /// No key of the issuer has this `kid`.
    #[error("no key for this kid")]
    UnknownKey,
    /// The key's type or `alg` does not fit the header's `alg`.
    #[error("the key does not accept this algorithm")]
    KeyMismatch,
    /// The signature does not verify.
    #[error("bad signature")]
    Signature,
    /// `exp` has passed (beyond the leeway).
    #[error("expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("not valid yet")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("wrong issuer")]
    Issuer,
    /// `aud` does not name the configured audience.
    #[error("wrong audience")]
    Audience,
    /// A claim is missing or has the wrong type.
    #[error("claims: {0}")]
    Claims(String),
    /// An ID token (or another token kind) presented as an access token.
    #[error("not an access token: {0}")]
    NotAccessToken(&'static str),
    /// An access token issued to a client that is not in `auth.allowed_clients`.
    #[error("azp names a client that is not allowed")]
    Client,
    /// The client spent its budget of failed authentications: not checked at all.
    #[error("client over its failed-authentication budget")]
    OverBudget(std::time::Duration),
}

impl Rejection {
    /// The `reason` label of `nestflux_auth_refused_total`.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            Self::Oversized => "oversized",
            Self::Malformed => "malformed",
            Self::Header(_) => "header",
            Self::Algorithm => "algorithm",
            Self::UnknownKey => "unknown_key",
            Self::KeyMismatch => "key_mismatch",
            Self::Signature => "signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Issuer => "issuer",
            Self::Audience => "audience",
            Self::Claims(_) => "claims",
            Self::NotAccessToken(_) => "not_access_token",
            Self::Client => "client",
            Self::OverBudget(_) => "over_budget",
        }
    }
}

/// A verified token, as cached.
#[derive(Debug)]
pub struct Verified {
    /// Who the token proves the caller is.
    pub caller: Arc<Caller>,
    /// The token's `exp`: the cache entry expires with it.
    pub exp: u64,
    /// What the token says about its subject, for the users table.
    pub sighting: crate::store::users::Sighting,
    /// Key epoch at verification: a later removal of keys invalidates the entry.
    epoch: u64,
}

/// Settings of a [`BearerVerifier`].
pub struct VerifierConfig {
    /// Algorithms accepted in the token header.
    pub allowed: Vec<Algorithm>,
    /// The `aud` every token must name.
    pub audience: String,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    pub leeway_secs: u64,
    /// Only `typ: at+jwt` headers (RFC 9068 access tokens).
    pub require_access_token_typ: bool,
    /// Accepted `azp` values; empty: any.
    pub allowed_clients: Vec<String>,
    /// Reads the roles out of the verified claims.
    pub roles: RoleMapper,
}

/// Verifies bearer tokens of one issuer against its cached keys.
pub struct BearerVerifier {
    jwks: Arc<Jwks>,
    allowed: Vec<Algorithm>,
    validations: HashMap<Algorithm, Validation>,
    leeway_secs: u64,
    require_access_token_typ: bool,
    allowed_clients: Vec<String>,
    roles: RoleMapper,
    cache: Cache<[u8; 32], Arc<Verified>>,
    /// Recently refused tokens: (why, key epoch, when).
    rejected: Cache<[u8; 32], (Rejection, u64, u64)>,
    /// How callers verified here are labelled (provider or development issuer).
    kind: CallerKind,
    /// Where first and later sightings of a subject are recorded.
    users: Option<crate::store::Store>,
    /// Hits and misses of the two token caches (detached by default).
    cache_metrics: crate::metrics::TokenCacheMetrics,
}

impl BearerVerifier {
    /// A verifier of tokens signed by the keys in `jwks`.
    pub fn new(jwks: Arc<Jwks>, config: VerifierConfig) -> Self {
        let validations = config
            .allowed
            .iter()
            .map(|alg| {
                let mut v = Validation::new(*alg);
                v.set_issuer(jwks.accepted_issuers());
                v.set_audience(&[&config.audience]);
                v.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
                v.validate_exp = true;
                v.validate_nbf = true;
                v.validate_aud = true;
                v.leeway = config.leeway_secs;
                (*alg, v)
            })
            .collect();
        Self {
            jwks,
            allowed: config.allowed,
            validations,
            leeway_secs: config.leeway_secs,
            require_access_token_typ: config.require_access_token_typ,
            allowed_clients: config.allowed_clients,
            roles: config.roles,
            cache: Cache::new(CACHE_ENTRIES),
            rejected: Cache::new(CACHE_ENTRIES),
            kind: CallerKind::Bearer,
            users: None,
            cache_metrics: Default::default(),
        }
    }

    /// Counts the token caches' hits and misses into `metrics`.
    pub fn with_cache_metrics(mut self, metrics: crate::metrics::TokenCacheMetrics) -> Self {
        self.cache_metrics = metrics;
        self
    }

    /// Labels callers verified here (the development issuer's are `Dev`).
    pub fn with_kind(mut self, kind: CallerKind) -> Self {
        self.kind = kind;
        self
    }

    /// Reports each verified token's subject for the users table (in the background).
    pub fn with_users(mut self, store: crate::store::Store) -> Self {
        self.users = Some(store);
        self
    }

    /// The key set this verifier uses.
    pub fn jwks(&self) -> &Arc<Jwks> {
        &self.jwks
    }

    /// Verifies a token, answering a repeated one from the cache. A token never seen costs
    /// a signature check: `budget` may refuse it first, and is charged when it fails.
    pub async fn verify(
        &self,
        token: &str,
        budget: &impl super::FailureBudget,
    ) -> Result<Arc<Verified>, Rejection> {
        self.verify_hashed(token, &token_hash(token), budget).await
    }

    /// Whether this verifier has a verdict on the token with this [`token_hash`] in one of
    /// its caches (fresh or not): a token it has seen, so one meant for it.
    pub fn has_seen(&self, hash: &[u8; 32]) -> bool {
        self.cache.contains_key(hash) || self.rejected.contains_key(hash)
    }

    /// [`Self::verify`] for a token whose [`token_hash`] the caller has already taken.
    pub async fn verify_hashed(
        &self,
        token: &str,
        hash: &[u8; 32],
        budget: &impl super::FailureBudget,
    ) -> Result<Arc<Verified>, Rejection> {
        if let Err(rejection) = precheck(token) {
            budget.charge().await;
            return Err(rejection);
        }
        let hash = *hash;
        let now = now_secs();
        if let Some(hit) = self.cache.get(&hash) {
            if now <= hit.exp.saturating_add(self.leeway_secs) && hit.epoch == self.jwks.epoch() {
                self.cache_metrics.hits.inc();
                self.sighted(&hit);
                return Ok(hit);
            }
            self.cache.remove(&hash);
        }
        // A replayed bad token costs one lookup, not one signature check.
        if let Some((rejection, epoch, at)) = self.rejected.get(&hash) {
            if epoch == self.jwks.epoch() && now < at.saturating_add(REJECTION_TTL_SECS) {
                self.cache_metrics.hits.inc();
                return Err(rejection);
            }
            self.rejected.remove(&hash);
        }
        if let Some(wait) = budget.exhausted() {
            return Err(Rejection::OverBudget(wait));
        }
        self.cache_metrics.misses.inc();
        let epoch = self.jwks.epoch();
        let verified = match self.verify_uncached(token).await {
            Ok(v) => Arc::new(v),
            Err(rejection) => {
                // Only verdicts that cannot turn into a pass by waiting for a key or a clock.
                if !matches!(rejection, Rejection::UnknownKey | Rejection::NotYetValid) {
                    self.rejected.insert(hash, (rejection.clone(), epoch, now));
                }
                budget.charge().await;
                return Err(rejection);
            }
        };
        self.cache.insert(hash, verified.clone());
        self.sighted(&verified);
        Ok(verified)
    }

    /// Reports the subject for the users table, off the request path: throttled per
    /// subject and lossy, so it never delays or fails the request.
    fn sighted(&self, verified: &Verified) {
        if let Some(store) = &self.users {
            store.sighted(&verified.sighting);
        }
    }

    /// Full verification, no cache.
    pub async fn verify_uncached(&self, token: &str) -> Result<Verified, Rejection> {
        precheck(token)?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Malformed)?;
        check_header(&header, &self.allowed)?;
        if self.require_access_token_typ && !is_access_token_typ(header.typ.as_deref()) {
            return Err(Rejection::NotAccessToken("header typ is not at+jwt"));
        }
        let kid = header.kid.as_deref();
        let epoch = self.jwks.epoch();
        let key = match self.jwks.current().lookup(kid, header.alg) {
            Lookup::Found(key) => key,
            Lookup::Mismatch => return Err(Rejection::KeyMismatch),
            Lookup::Unknown => {
                if !self.jwks.refetch_for_unknown_kid().await {
                    return Err(Rejection::UnknownKey);
                }
                match self.jwks.current().lookup(kid, header.alg) {
                    Lookup::Found(key) => key,
                    Lookup::Mismatch => return Err(Rejection::KeyMismatch),
                    Lookup::Unknown => return Err(Rejection::UnknownKey),
                }
            }
        };
        let validation = self
            .validations
            .get(&header.alg)
            .ok_or(Rejection::Algorithm)?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation)
            .map_err(|e| classify(e.kind()))?;
        let claims = data.claims;
        check_access_token(&claims, &self.allowed_clients)?;
        let subject = match claims.get("sub") {
            // `apikey:` and `dev:` name other identity namespaces; no token may claim them.
            Some(Value::String(s))
                if !s.is_empty()
                    && s.len() <= MAX_SUBJECT_BYTES
                    && !super::is_reserved_subject(s) =>
            {
                s.clone()
            }
            _ => return Err(Rejection::Claims("sub must be a non-empty string".into())),
        };
        let exp = claims
            .get("exp")
            .and_then(|v| v.as_u64().or_else(|| v.as_f64().map(|f| f as u64)))
            .ok_or_else(|| Rejection::Claims("exp".into()))?;
        let text = |k: &str| {
            claims
                .get(k)
                .and_then(Value::as_str)
                .filter(|v| v.len() <= MAX_SUBJECT_BYTES)
                .map(str::to_string)
        };
        let sighting = crate::store::users::Sighting {
            issuer: text("iss").unwrap_or_default(),
            subject: subject.clone(),
            email: text("email"),
            name: text("name"),
        };
        let caller = Caller {
            subject: super::qualified_subject(&self.kind, &subject),
            roles: self.roles.roles(&claims),
            kind: self.kind.clone(),
        };
        Ok(Verified {
            caller: Arc::new(caller),
            exp,
            sighting,
            epoch,
        })
    }
}

/// The key of a verifier's caches for a token: its SHA-256.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Size and alphabet, before anything is decoded.
pub(crate) fn precheck(token: &str) -> Result<(), Rejection> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Rejection::Oversized);
    }
    let alphabet = token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    let mut parts = token.split('.');
    let shaped = matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some(h), Some(p), Some(s), None) if !h.is_empty() && !p.is_empty() && !s.is_empty()
    );
    if alphabet && shaped {
        Ok(())
    } else {
        Err(Rejection::Malformed)
    }
}

pub(crate) fn check_header(h: &Header, allowed: &[Algorithm]) -> Result<(), Rejection> {
    if !allowed.contains(&h.alg) {
        return Err(Rejection::Algorithm);
    }
    if let Some(typ) = &h.typ {
        let t = typ.to_ascii_lowercase();
        let t = t.strip_prefix("application/").unwrap_or(&t);
        if t != "jwt" && t != "at+jwt" {
            return Err(Rejection::Header("typ must be JWT or at+jwt"));
        }
    }
    // Keys from the token itself would let the token vouch for itself.
    if h.jku.is_some() || h.x5u.is_some() || h.jwk.is_some() || h.x5c.is_some() {
        return Err(Rejection::Header("header-supplied keys are never trusted"));
    }
    // We understand no critical extension, so any `crit` must be refused (RFC 7515 §4.1.11).
    if h.crit.is_some() || h.extras.inner().contains_key("b64") {
        return Err(Rejection::Header("critical extensions are not supported"));
    }
    if h.cty.is_some() || h.enc.is_some() || h.zip.is_some() {
        return Err(Rejection::Header("nested, encrypted or compressed tokens"));
    }
    if h.kid.as_ref().is_some_and(|k| k.len() > MAX_KID_BYTES) {
        return Err(Rejection::Header("kid too long"));
    }
    Ok(())
}

/// `typ: at+jwt` or `application/at+jwt` (RFC 9068 §2.1), any case.
fn is_access_token_typ(typ: Option<&str>) -> bool {
    typ.is_some_and(|t| {
        let t = t.to_ascii_lowercase();
        t.strip_prefix("application/").unwrap_or(&t) == "at+jwt"
    })
}

/// Refuses tokens that are not access tokens, by their claims:
/// - a payload `typ` other than `Bearer` (Keycloak marks its ID tokens `ID`, refresh tokens
///   `Refresh`, logout tokens `Logout`);
/// - a `nonce`, which only ID tokens carry, except Keycloak access tokens (`typ: Bearer`)
///   from before version 25, which copied it;
/// - an `azp` naming a client outside `allowed` (when the list is not empty).
fn check_access_token(claims: &Map<String, Value>, allowed: &[String]) -> Result<(), Rejection> {
    let payload_typ = claims.get("typ").and_then(Value::as_str);
    if let Some(typ) = payload_typ
        && !typ.eq_ignore_ascii_case("bearer")
    {
        return Err(Rejection::NotAccessToken("payload typ is not Bearer"));
    }
    if claims.contains_key("nonce") && payload_typ.is_none() {
        return Err(Rejection::NotAccessToken("a nonce marks an ID token"));
    }
    if !allowed.is_empty()
        && let Some(azp) = claims.get("azp")
        && !azp.as_str().is_some_and(|a| allowed.iter().any(|c| c == a))
    {
        return Err(Rejection::Client);
    }
    Ok(())
}

pub(crate) fn classify(kind: &ErrorKind) -> Rejection {
    match kind {
        ErrorKind::InvalidSignature => Rejection::Signature,
        ErrorKind::ExpiredSignature => Rejection::Expired,
        ErrorKind::ImmatureSignature => Rejection::NotYetValid,
        ErrorKind::InvalidIssuer => Rejection::Issuer,
        ErrorKind::InvalidAudience => Rejection::Audience,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => Rejection::Algorithm,
        ErrorKind::MissingRequiredClaim(c) => Rejection::Claims(format!("missing {c}")),
        ErrorKind::InvalidClaimFormat(c) => Rejection::Claims(format!("malformed {c}")),
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => Rejection::Malformed,
        _ => Rejection::Signature,
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precheck_refuses_before_parsing() {
        assert_eq!(
            precheck(&"a".repeat(MAX_TOKEN_BYTES + 1)),
            Err(Rejection::Oversized)
        );
        assert_eq!(precheck("a.b"), Err(Rejection::Malformed));
        assert_eq!(precheck("a.b.c.d"), Err(Rejection::Malformed));
        assert_eq!(precheck("a..c"), Err(Rejection::Malformed));
        assert_eq!(precheck("a.b."), Err(Rejection::Malformed));
        assert_eq!(precheck("a.b+/.c"), Err(Rejection::Malformed));
        assert_eq!(precheck("a.b=.c"), Err(Rejection::Malformed));
        assert_eq!(precheck("a.b.c"), Ok(()));
    }

    #[test]
    fn only_access_tokens_pass_the_claim_rules() {
        let claims = |v: serde_json::Value| v.as_object().cloned().unwrap_or_default();
        let none: &[String] = &[];
        // oidc-provider / RFC 9068 access tokens: no payload typ, no nonce.
        assert_eq!(
            check_access_token(&claims(serde_json::json!({"sub": "a"})), none),
            Ok(())
        );
        // Keycloak access tokens say `typ: Bearer`; before Keycloak 25 they carried the nonce.
        let keycloak_at = serde_json::json!({"typ": "Bearer", "azp": "spa", "nonce": "n"});
        assert_eq!(
            check_access_token(&claims(keycloak_at.clone()), none),
            Ok(())
        );
        for (token, why) in [
            (
                serde_json::json!({"typ": "ID", "azp": "spa"}),
                "Keycloak ID token",
            ),
            (
                serde_json::json!({"typ": "Refresh"}),
                "Keycloak refresh token",
            ),
            (
                serde_json::json!({"nonce": "n", "aud": "web"}),
                "OIDC ID token",
            ),
        ] {
            assert!(
                matches!(
                    check_access_token(&claims(token), none),
                    Err(Rejection::NotAccessToken(_))
                ),
                "{why}"
            );
        }
        let allowed = ["spa".to_string()];
        assert_eq!(check_access_token(&claims(keycloak_at), &allowed), Ok(()));
        let other = serde_json::json!({"typ": "Bearer", "azp": "other-app"});
        assert_eq!(
            check_access_token(&claims(other), &allowed),
            Err(Rejection::Client)
        );
        // No azp at all (client_credentials at many providers): nothing to refuse.
        assert_eq!(
            check_access_token(&claims(serde_json::json!({})), &allowed),
            Ok(())
        );
    }

    #[test]
    fn at_jwt_spellings() {
        assert!(is_access_token_typ(Some("at+jwt")));
        assert!(is_access_token_typ(Some("application/AT+JWT")));
        assert!(!is_access_token_typ(Some("JWT")));
        assert!(!is_access_token_typ(None));
    }

    #[test]
    fn header_rules() {
        let allowed = [Algorithm::RS256, Algorithm::ES256];
        let ok = Header::new(Algorithm::RS256);
        assert_eq!(check_header(&ok, &allowed), Ok(()));
        let mut h = ok.clone();
        h.typ = Some("at+jwt".into());
        assert_eq!(check_header(&h, &allowed), Ok(()));
        h.typ = Some("application/at+JWT".into());
        assert_eq!(check_header(&h, &allowed), Ok(()));
        h.typ = None;
        assert_eq!(check_header(&h, &allowed), Ok(()));
        h.typ = Some("dpop+jwt".into());
        assert!(check_header(&h, &allowed).is_err());
        assert_eq!(
            check_header(&Header::new(Algorithm::HS256), &allowed),
            Err(Rejection::Algorithm)
        );
        assert_eq!(
            check_header(&Header::new(Algorithm::PS256), &allowed),
            Err(Rejection::Algorithm)
        );
        for set in [
            |h: &mut Header| h.jku = Some("http://127.0.0.1/keys".into()),
            |h: &mut Header| h.x5u = Some("http://127.0.0.1/cert".into()),
            |h: &mut Header| h.x5c = Some(vec!["MIIB".into()]),
            |h: &mut Header| h.crit = Some(vec!["exp".into()]),
            |h: &mut Header| h.cty = Some("JWT".into()),
            |h: &mut Header| h.kid = Some("k".repeat(300)),
        ] {
            let mut h = ok.clone();
            set(&mut h);
            assert!(check_header(&h, &allowed).is_err(), "{h:?}");
        }
    }
}
