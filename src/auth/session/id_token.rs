//! ID token verification with the bearer tokens' key cache: the same [`Jwks`] (discovery,
//! rotation, outage behaviour, early refetch for an unknown `kid`) and the same header rules
//! (algorithm allow-list bound to the key, no header-supplied keys, no `crit`), then the
//! OpenID Connect Core §3.1.3.7 checks: `iss`, `aud` naming our client, `azp` (required
//! when there are several audiences), `exp`/`iat`/`nbf` with the leeway, `nonce`, `at_hash`
//! when present, and a subject that no other kind of caller uses.

use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256, Sha384, Sha512};
use subtle::ConstantTimeEq;

use crate::auth::jwks::{Jwks, KeyEntry, Lookup};
use crate::auth::jwt::{self, Rejection};

/// Longest `sub` accepted.
const MAX_SUBJECT_BYTES: usize = 1024;

/// Why an ID token was refused. Logged; the browser only learns that login failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    /// The JWT itself: shape, header, key, signature, `iss`, `aud`, `exp`, `nbf`.
    #[error("{0}")]
    Token(#[from] Rejection),
    /// `typ` says this is an access token.
    #[error("typ says access token, not ID token")]
    Type,
    /// `azp` names another client, or is missing with several audiences.
    #[error("azp does not name this client")]
    AuthorizedParty,
    /// `nonce` is missing or not the one this login sent.
    #[error("nonce does not match the login")]
    Nonce,
    /// `at_hash` does not match the access token.
    #[error("at_hash does not match the access token")]
    AccessTokenHash,
    /// `sub` is missing, too long or reserved.
    #[error("unusable sub")]
    Subject,
    /// A refreshed ID token names another subject than the session's.
    #[error("the refreshed ID token names another subject")]
    SubjectChanged,
}

/// What an ID token must satisfy besides its signature.
pub struct Expect<'a> {
    /// Our client id: in `aud`, and `azp` when present.
    pub client_id: &'a str,
    /// SHA-256 of the login's nonce; `None` for refreshed ID tokens, which need not carry it.
    pub nonce_sha256: Option<&'a [u8; 32]>,
    /// The access token issued with it, for `at_hash`.
    pub access_token: Option<&'a str>,
    /// The session's subject, for refreshed ID tokens.
    pub subject: Option<&'a str>,
    /// Clock skew tolerated, in seconds.
    pub leeway_secs: u64,
}

/// A verified ID token's claims and subject.
pub struct Verified {
    /// `sub`.
    pub subject: String,
    /// Every claim.
    pub claims: Map<String, Value>,
}

/// Verifies `token` against the issuer's keys in `jwks`.
pub async fn verify(
    jwks: &Jwks,
    allowed: &[Algorithm],
    token: &str,
    expect: &Expect<'_>,
) -> Result<Verified, IdTokenError> {
    jwt::precheck(token)?;
    let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Malformed)?;
    jwt::check_header(&header, allowed)?;
    if header
        .typ
        .as_deref()
        .is_some_and(|t| t.to_ascii_lowercase().ends_with("at+jwt"))
    {
        return Err(IdTokenError::Type);
    }
    let key = key_for(jwks, header.kid.as_deref(), header.alg).await?;
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(jwks.accepted_issuers());
    validation.set_audience(&[expect.client_id]);
    validation.set_required_spec_claims(&["exp", "iat", "aud", "iss", "sub"]);
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.validate_aud = true;
    validation.leeway = expect.leeway_secs;
    let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
        .map_err(|e| jwt::classify(e.kind()))?
        .claims;

    let several_audiences = claims
        .get("aud")
        .and_then(Value::as_array)
        .is_some_and(|a| a.len() > 1);
    match claims.get("azp") {
        Some(Value::String(azp)) if azp == expect.client_id => {}
        None if !several_audiences => {}
        _ => return Err(IdTokenError::AuthorizedParty),
    }
    if let Some(expected) = expect.nonce_sha256 {
        let nonce = claims
            .get("nonce")
            .and_then(Value::as_str)
            .ok_or(IdTokenError::Nonce)?;
        let got: [u8; 32] = Sha256::digest(nonce.as_bytes()).into();
        if !bool::from(got.ct_eq(expected)) {
            return Err(IdTokenError::Nonce);
        }
    }
    if let (Some(at_hash), Some(access)) = (
        claims.get("at_hash").and_then(Value::as_str),
        expect.access_token,
    ) && let Some(expected) = access_token_hash(header.alg, access)
        && !bool::from(expected.as_bytes().ct_eq(at_hash.as_bytes()))
    {
        return Err(IdTokenError::AccessTokenHash);
    }
    let subject = match claims.get("sub") {
        Some(Value::String(s))
            if !s.is_empty()
                && s.len() <= MAX_SUBJECT_BYTES
                // `apikey:`/`dev:` name NestFlux's own callers: a provider's user may not.
                && !crate::auth::is_reserved_subject(s) =>
        {
            s.clone()
        }
        _ => return Err(IdTokenError::Subject),
    };
    if expect.subject.is_some_and(|s| s != subject) {
        return Err(IdTokenError::SubjectChanged);
    }
    Ok(Verified { subject, claims })
}

/// The key for `kid` and `alg`, asking the refresher for an early fetch once when the kid is
/// unknown (a provider that just rotated its keys).
async fn key_for(
    jwks: &Jwks,
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<std::sync::Arc<KeyEntry>, Rejection> {
    match jwks.current().lookup(kid, alg) {
        Lookup::Found(key) => Ok(key),
        Lookup::Mismatch => Err(Rejection::KeyMismatch),
        Lookup::Unknown => {
            if !jwks.refetch_for_unknown_kid().await {
                return Err(Rejection::UnknownKey);
            }
            match jwks.current().lookup(kid, alg) {
                Lookup::Found(key) => Ok(key),
                Lookup::Mismatch => Err(Rejection::KeyMismatch),
                Lookup::Unknown => Err(Rejection::UnknownKey),
            }
        }
    }
}

/// `at_hash` (OIDC Core §3.1.3.6): base64url of the left half of the access token's hash,
/// with the hash of the ID token's algorithm. `None` where the hash is not defined (EdDSA).
fn access_token_hash(alg: Algorithm, access_token: &str) -> Option<String> {
    use base64::Engine;
    let digest: Vec<u8> = match alg {
        Algorithm::RS256 | Algorithm::PS256 | Algorithm::ES256 => {
            Sha256::digest(access_token.as_bytes()).to_vec()
        }
        Algorithm::RS384 | Algorithm::PS384 | Algorithm::ES384 => {
            Sha384::digest(access_token.as_bytes()).to_vec()
        }
        Algorithm::RS512 | Algorithm::PS512 => Sha512::digest(access_token.as_bytes()).to_vec(),
        _ => return None,
    };
    let half = digest.get(..digest.len() / 2)?;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(half))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_hash_of_the_spec_example() {
        // OpenID Connect Core, Appendix A.3 (RS256): access token and its at_hash.
        assert_eq!(
            access_token_hash(
                Algorithm::RS256,
                "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"
            )
            .as_deref(),
            Some("77QmUPtjPfzWtF2AnpK9RQ")
        );
        assert_eq!(access_token_hash(Algorithm::EdDSA, "x"), None);
    }
}
