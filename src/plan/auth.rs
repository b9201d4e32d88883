//! Compiles `[auth]`: the issuer policy (asymmetric algorithms only, HTTPS issuers, an
//! audience), API keys by hash, the development issuer and browser sessions. Enforced by
//! `auth`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::diag::{Code, Diagnostic, Diagnostics};
use super::roles::RoleId;
use super::{Profile, is_loopback_host, is_name, units};
use crate::config::{RawApiKey, RawAuth, RawRole};

/// Signature algorithms NestFlux verifies. HS* is absent on purpose: a shared secret with an
/// OIDC issuer lets anyone holding it mint tokens, and `none` is no signature at all.
pub const ASYMMETRIC_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// `[auth]`, checked.
#[derive(Debug, Clone)]
pub struct AuthPlan {
    /// The OIDC issuer, when bearer tokens from a provider are accepted.
    pub issuer: Option<url::Url>,
    /// The `aud` tokens must name (required with an issuer).
    pub audience: Option<String>,
    /// Signature algorithms accepted: asymmetric only.
    pub algorithms: Vec<String>,
    /// `realm_access.roles` → `["realm_access", "roles"]`.
    pub roles_claim: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    /// How long the last good issuer keys serve while it is unreachable.
    pub jwks_max_stale: Duration,
    /// Only `typ: at+jwt` tokens (RFC 9068).
    pub require_access_token_typ: bool,
    /// Accepted `azp` values; empty: any.
    pub allowed_clients: Vec<String>,
    /// Whether the development issuer is on.
    pub dev_issuer: bool,
    /// Browser login, when declared.
    pub session: Option<SessionPlan>,
    /// Declared API keys, by name.
    pub api_keys: Vec<ApiKeyPlan>,
}

/// `[auth.api_keys.NAME]`, checked: the SHA-256 of the key and the roles it carries.
#[derive(Debug, Clone)]
pub struct ApiKeyPlan {
    /// The key's name, from `[auth.api_keys.NAME]`.
    pub name: String,
    /// SHA-256 of the key.
    pub sha256: [u8; 32],
    /// Roles of the key's caller.
    pub roles: Vec<RoleId>,
}

/// Prefix of the `hash` value of an API key.
pub const API_KEY_HASH_PREFIX: &str = "sha256:";

/// Every NestFlux API key starts with this (so a key pasted where its hash belongs is
/// recognised).
pub const API_KEY_PREFIX: &str = "nfk_";

fn compile_api_keys(
    raw: &BTreeMap<String, RawApiKey>,
    roles: &BTreeMap<String, RawRole>,
    d: &mut Diagnostics,
) -> Vec<ApiKeyPlan> {
    let mut out = Vec::new();
    for (name, key) in raw {
        let path = format!("auth.api_keys.{name}");
        if !is_name(name) {
            d.error_with(
                Code::InvalidName,
                &path,
                "API key names are lowercase letters, digits, `_` or `-`, starting with a letter",
            );
        }
        let sha256 = if key.hash.starts_with(API_KEY_PREFIX) {
            // The key itself where its hash belongs: `plan::secrets` reports it (a warning in
            // development, an error in production); in development it still works.
            Some(sha256_of(&key.hash))
        } else {
            key.hash
                .strip_prefix(API_KEY_HASH_PREFIX)
                .and_then(parse_hex32)
        };
        if sha256.is_none() {
            d.error(
                format!("{path}.hash"),
                "expected `sha256:` and 64 hex digits, as printed by `nestflux keys api-key NAME` (never the key itself)",
            );
        }
        for (i, role) in key.roles.iter().enumerate() {
            if !roles.contains_key(role) {
                d.unknown(
                    Code::UnknownRole,
                    format!("{path}.roles[{i}]"),
                    "role",
                    role,
                    roles.keys(),
                );
            }
        }
        if key.roles.is_empty() {
            d.warn_with(
                Code::Unused,
                &path,
                "has no roles: it can only call authenticated routes",
            );
        }
        if let Some(sha256) = sha256 {
            out.push(ApiKeyPlan {
                name: name.clone(),
                sha256,
                roles: key.roles.iter().cloned().map(RoleId).collect(),
            });
        }
    }
    out
}

/// SHA-256 of an API key, as its declared `hash` holds it.
pub fn sha256_of(key: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes()).into()
}

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
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

/// `[auth.session]`, checked. The client secret stays out of `Debug`.
#[derive(Clone)]
pub struct SessionPlan {
    /// The OIDC client id.
    pub client_id: String,
    /// The client secret of a confidential client.
    pub client_secret: Option<String>,
    /// The callback URL; its path is the callback route.
    pub redirect_url: url::Url,
    /// The server's own origin (that of `redirect_url`), as browsers send it in `Origin`.
    pub origin: String,
    /// Idle time after which a session ends.
    pub idle_timeout: Duration,
    /// Time after login at which a session ends.
    pub absolute_timeout: Duration,
    /// Time a started login may take to come back.
    pub login_timeout: Duration,
    /// Scopes asked for besides `openid`.
    pub scopes: Vec<String>,
    /// Where the provider sends the browser after logout.
    pub post_logout_redirect_url: url::Url,
    /// `dangerous_insecure_cookie`: cookies without `Secure` and without the `__Host-`
    /// prefix. Development only.
    pub insecure_cookie: bool,
}

impl SessionPlan {
    /// The session cookie's name: `__Host-nestflux_session` (Secure, Path=/, no Domain),
    /// or `nestflux_session` with `dangerous_insecure_cookie`.
    pub fn session_cookie(&self) -> &'static str {
        if self.insecure_cookie {
            "nestflux_session"
        } else {
            "__Host-nestflux_session"
        }
    }

    /// The short-lived cookie binding a pending login to the browser that started it.
    pub fn login_cookie(&self) -> &'static str {
        if self.insecure_cookie {
            "nestflux_login"
        } else {
            "__Host-nestflux_login"
        }
    }
}

impl fmt::Debug for SessionPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionPlan")
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("redirect_url", &self.redirect_url.as_str())
            .finish_non_exhaustive()
    }
}

/// Checks `[auth.session]`. The cookie rule: an `https://` callback gets the
/// `__Host-`/`Secure` cookie; so does a plain-HTTP callback on loopback (browsers treat
/// `http://127.0.0.1` and `http://localhost` as secure contexts), outside production only;
/// any other plain-HTTP callback needs `dangerous_insecure_cookie = true` (a cookie without
/// `Secure`), which production refuses.
fn compile_session(
    s: &crate::config::RawSession,
    has_issuer: bool,
    profile: Profile,
    d: &mut Diagnostics,
) -> Option<SessionPlan> {
    if !has_issuer {
        d.error(
            "auth.session",
            "browser sessions need auth.issuer (the OIDC provider to log in with)",
        );
    }
    if s.client_id.is_empty() {
        d.error("auth.session.client_id", "required");
    }
    let redirect_url = match url::Url::parse(&s.redirect_url) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some()
                && u.username().is_empty()
                && u.password().is_none()
                && u.query().is_none()
                && u.fragment().is_none() =>
        {
            Some(u)
        }
        _ => {
            d.error(
                "auth.session.redirect_url",
                format!(
                    "`{}` is not an absolute http(s) URL without query or fragment, e.g. https://api.example.com/auth/callback",
                    s.redirect_url
                ),
            );
            None
        }
    };
    let duration = |key: &str, text: &str, d: &mut Diagnostics| {
        units::duration(text)
            .map_err(|e| d.error(format!("auth.session.{key}"), e))
            .ok()
            .filter(|t| {
                let ok = !t.is_zero();
                if !ok {
                    d.error(format!("auth.session.{key}"), "must be greater than zero");
                }
                ok
            })
    };
    let idle = duration("idle_timeout", &s.idle_timeout, d);
    let absolute = duration("absolute_timeout", &s.absolute_timeout, d);
    let login_timeout = duration("login_timeout", &s.login_timeout, d);
    if let (Some(i), Some(a)) = (idle, absolute)
        && i > a
    {
        d.error("auth.session.idle_timeout", "longer than absolute_timeout");
    }
    if login_timeout.is_some_and(|t| t > Duration::from_secs(3600)) {
        d.error(
            "auth.session.login_timeout",
            "at most 1h: a pending login is a half-open door",
        );
    }
    let mut scopes = Vec::new();
    for (i, scope) in s.scopes.iter().enumerate() {
        let ok = !scope.is_empty()
            && scope
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
        if !ok {
            d.error(
                format!("auth.session.scopes[{i}]"),
                format!("`{scope}` is not a scope token"),
            );
        } else if scope != "openid" && !scopes.contains(scope) {
            scopes.push(scope.clone());
        }
    }
    let post_logout = match &s.post_logout_redirect_url {
        Some(text) => match url::Url::parse(text) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Some(u),
            _ => {
                d.error(
                    "auth.session.post_logout_redirect_url",
                    format!("`{text}` is not an absolute http(s) URL"),
                );
                None
            }
        },
        None => redirect_url.as_ref().and_then(|u| u.join("/").ok()),
    };
    let redirect_url = redirect_url?;
    let plain_http = redirect_url.scheme() == "http";
    let loopback = is_loopback_host(&redirect_url);
    if plain_http {
        let refused = Diagnostic::new(
            "auth.session.redirect_url",
            "plain-HTTP session cookies are refused in production: serve the callback over https://",
        );
        if loopback {
            d.refuse_in_production(profile, refused, Diagnostic::new(
                "auth.session.redirect_url",
                "plain-HTTP callback on loopback: the cookie stays __Host-/Secure (browsers treat loopback as a secure context); development only",
            ));
        } else if s.dangerous_insecure_cookie {
            d.refuse_in_production(profile, refused, Diagnostic::new(
                "auth.session.dangerous_insecure_cookie",
                "the session cookie travels without Secure over plain HTTP: anyone on the network path can take over sessions; development only",
            ));
        } else if profile == Profile::Production {
            d.errors.push(refused);
        } else {
            d.error(
                "auth.session.redirect_url",
                "a plain-HTTP callback off loopback cannot keep a Secure cookie: use https://, or for a development setup set auth.session.dangerous_insecure_cookie = true",
            );
        }
    }
    // (A plain-HTTP callback off loopback already said all there is to say above.)
    if s.dangerous_insecure_cookie && (loopback || !plain_http) {
        d.refuse_in_production(
            profile,
            Diagnostic::new(
                "auth.session.dangerous_insecure_cookie",
                "session cookies without `Secure` are refused in production",
            ),
            Diagnostic::new(
                "auth.session.dangerous_insecure_cookie",
                "session cookies without Secure and without the __Host- prefix, although this callback does not need that: development only",
            ),
        );
    }
    Some(SessionPlan {
        client_id: s.client_id.clone(),
        client_secret: s.client_secret.clone(),
        origin: redirect_url.origin().ascii_serialization(),
        redirect_url,
        idle_timeout: idle?,
        absolute_timeout: absolute?,
        login_timeout: login_timeout?,
        scopes,
        post_logout_redirect_url: post_logout?,
        insecure_cookie: s.dangerous_insecure_cookie,
    })
}

/// Shortest `auth.jwks_max_stale`: one periodic refresh interval.
pub const MIN_JWKS_MAX_STALE: Duration = Duration::from_secs(300);
/// Longest `auth.jwks_max_stale`.
pub const MAX_JWKS_MAX_STALE: Duration = Duration::from_secs(7 * 86_400);

/// Checks `[auth]`: issuer, audience, algorithms, roles claim, leeway, dev issuer, session and API keys.
pub fn compile_auth(
    raw: &RawAuth,
    roles: &BTreeMap<String, RawRole>,
    profile: Profile,
    d: &mut Diagnostics,
) -> AuthPlan {
    let issuer = raw.issuer.as_ref().and_then(|text| {
        let u = match url::Url::parse(text) {
            Ok(u) if u.host_str().is_some() && u.query().is_none() && u.fragment().is_none() => u,
            _ => {
                d.error("auth.issuer", format!("`{text}` is not an absolute issuer URL"));
                return None;
            }
        };
        match u.scheme() {
            "https" => {}
            "http" if is_loopback_host(&u) => d.refuse_in_production(
                profile,
                Diagnostic::new("auth.issuer", "a plain-HTTP issuer is refused in production; use https://"),
                Diagnostic::new("auth.issuer", "plain-HTTP issuer on loopback: fine for local providers and tests only"),
            ),
            "http" if raw.dangerous_allow_http_issuer => d.refuse_in_production(
                profile,
                Diagnostic::new("auth.dangerous_allow_http_issuer", "refused in production"),
                Diagnostic::new("auth.dangerous_allow_http_issuer", "token keys are fetched over plain HTTP: anyone on the path can forge identities"),
            ),
            "http" => d.error_with(
                Code::Insecure,
                "auth.issuer",
                "must be https:// (plain HTTP lets anyone on the path swap the signing keys); loopback http:// is allowed outside production",
            ),
            other => d.error("auth.issuer", format!("scheme `{other}` is not https")),
        }
        Some(u)
    });
    if issuer.is_some() && raw.audience.as_deref().is_none_or(str::is_empty) {
        d.error_with(
            Code::MissingKey,
            "auth.audience",
            "required with an issuer: tokens minted for another service must not work here",
        );
    }
    if raw.algorithms.is_empty() {
        d.error_with(
            Code::MissingKey,
            "auth.algorithms",
            "list at least one algorithm, e.g. [\"RS256\", \"ES256\"]",
        );
    }
    let mut algorithms = Vec::new();
    for (i, alg) in raw.algorithms.iter().enumerate() {
        let path = format!("auth.algorithms[{i}]");
        if alg.eq_ignore_ascii_case("none") {
            d.error_with(
                Code::Insecure,
                path,
                "`none` means unsigned tokens and is always refused",
            );
        } else if alg.to_ascii_uppercase().starts_with("HS") {
            d.error_with(Code::Insecure, path, format!("`{alg}` (shared-secret HMAC) is refused: anyone who can verify could mint tokens"));
        } else if ASYMMETRIC_ALGORITHMS.contains(&alg.as_str()) {
            algorithms.push(alg.clone());
        } else {
            d.push_error(
                Diagnostic::new(
                    path,
                    format!(
                        "unknown algorithm `{alg}`; allowed: {}",
                        ASYMMETRIC_ALGORITHMS.join(", ")
                    ),
                )
                .with_suggestion(crate::suggest::closest(alg, ASYMMETRIC_ALGORITHMS)),
            );
        }
    }
    let roles_claim: Vec<String> = raw.roles_claim.split('.').map(str::to_string).collect();
    if roles_claim.iter().any(String::is_empty) {
        d.error(
            "auth.roles_claim",
            format!(
                "`{}` is not a dotted claim path such as realm_access.roles",
                raw.roles_claim
            ),
        );
    }
    let leeway = match units::duration(&raw.leeway) {
        Ok(l) if l > Duration::from_secs(300) => {
            d.error_with(
                Code::Insecure,
                "auth.leeway",
                "at most 5m: a longer leeway keeps expired tokens alive",
            );
            l
        }
        Ok(l) => l,
        Err(e) => {
            d.error("auth.leeway", e);
            Duration::ZERO
        }
    };
    let jwks_max_stale = match units::duration(&raw.jwks_max_stale) {
        Ok(t) if (MIN_JWKS_MAX_STALE..=MAX_JWKS_MAX_STALE).contains(&t) => t,
        Ok(t) => {
            d.error(
                "auth.jwks_max_stale",
                "must be between 5m (one refresh interval) and 7d: beyond that, keys the issuer revoked during an outage would stay trusted",
            );
            t.clamp(MIN_JWKS_MAX_STALE, MAX_JWKS_MAX_STALE)
        }
        Err(e) => {
            d.error("auth.jwks_max_stale", e);
            MIN_JWKS_MAX_STALE
        }
    };
    for (i, client) in raw.allowed_clients.iter().enumerate() {
        if client.trim().is_empty() {
            d.error(format!("auth.allowed_clients[{i}]"), "must not be empty");
        }
    }
    let dev_issuer = raw.dev.as_ref().is_some_and(|dev| dev.enabled);
    if dev_issuer {
        d.refuse_in_production(
            profile,
            Diagnostic::new(
                "auth.dev.enabled",
                "the development issuer is refused in production: anyone with shell access could mint tokens",
            ),
            Diagnostic::new(
                "auth.dev.enabled",
                if issuer.is_some() {
                    "development token issuer is on next to auth.issuer (refused under NESTFLUX_PROFILE=production): its tokens carry any role asked for, but their subjects are `dev:<sub>`, so they never own a provider user's rows"
                } else {
                    "development token issuer is on (refused under NESTFLUX_PROFILE=production)"
                },
            ),
        );
    }
    let session = raw
        .session
        .as_ref()
        .and_then(|s| compile_session(s, issuer.is_some(), profile, d));
    AuthPlan {
        issuer,
        audience: raw.audience.clone(),
        algorithms,
        roles_claim,
        leeway,
        jwks_max_stale,
        require_access_token_typ: raw.require_access_token_typ,
        allowed_clients: raw.allowed_clients.clone(),
        dev_issuer,
        session,
        api_keys: compile_api_keys(&raw.api_keys, roles, d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_are_declared_by_hash_with_known_roles() {
        let roles = BTreeMap::from([("viewer".to_string(), RawRole::default())]);
        let key = |hash: &str, roles: &[&str]| RawApiKey {
            hash: hash.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        };
        let good = format!("sha256:{}", "ab".repeat(32));
        let raw = BTreeMap::from([
            ("ci".to_string(), key(&good, &["viewer"])),
            ("plain".to_string(), key("nfk_the-key-itself", &["viewer"])),
            ("short".to_string(), key("sha256:abcd", &["viewer"])),
            ("ghost".to_string(), key(&good, &["root"])),
            ("Bad Name".to_string(), key(&good, &["viewer"])),
        ]);
        let mut d = Diagnostics::default();
        let plans = compile_api_keys(&raw, &roles, &mut d);
        let paths: Vec<&str> = d.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "auth.api_keys.Bad Name",
                "auth.api_keys.ghost.roles[0]",
                "auth.api_keys.short.hash",
            ]
        );
        // The key itself where the hash belongs works as its hash (plan::secrets reports it).
        let plain = plans.iter().find(|p| p.name == "plain").unwrap();
        assert_eq!(plain.sha256, sha256_of("nfk_the-key-itself"));
        let ci = plans.iter().find(|p| p.name == "ci").unwrap();
        assert_eq!(ci.sha256, [0xab; 32]);
        assert_eq!(ci.roles, [RoleId("viewer".into())]);
    }
}
