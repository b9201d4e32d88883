//! The development issuer: an Ed25519 signing key kept in the database, and tokens minted
//! with it by `nestflux token`. Its tokens are verified by the same bearer verifier as a
//! real provider's, against a key set holding only this key. Refused in production.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use crate::plan::auth::AuthPlan;
use crate::store::{Conn, Store, StoreError, dev_keys};

/// The `iss` of development tokens. Not a URL: nothing is ever fetched for it.
pub const DEV_ISSUER: &str = "urn:nestflux:dev-issuer";
/// The `aud` of development tokens when `[auth]` names no audience.
pub const DEFAULT_AUDIENCE: &str = "nestflux";

/// PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410): the 32-byte seed follows.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The issuer's signing key. The seed is zeroized on drop and never printed.
pub struct DevKey {
    /// The key id, sent as `kid` in the tokens it signs.
    pub kid: String,
    seed: Zeroizing<[u8; 32]>,
    public: [u8; 32],
}

impl std::fmt::Debug for DevKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Why the development issuer could not load its key or sign.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// The key could not be read from or stored in the database.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The stored key is not an Ed25519 PKCS#8 key.
    #[error("the stored development key is unreadable")]
    BadKey,
    /// The operating system gave no randomness for a new key.
    #[error("no randomness: {0}")]
    Random(String),
    /// The subject names a reserved namespace (`dev:`, `apikey:`).
    #[error("--sub `{0}` starts with a reserved prefix (dev: or apikey:)")]
    Subject(String),
    /// Signing the token failed.
    #[error("cannot sign: {0}")]
    Sign(String),
}

impl DevKey {
    fn from_seed(kid: String, seed: [u8; 32]) -> Self {
        let seed = Zeroizing::new(seed);
        let public = ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes();
        Self { kid, seed, public }
    }

    fn pkcs8(&self) -> Zeroizing<Vec<u8>> {
        let mut der = Zeroizing::new(PKCS8_ED25519_PREFIX.to_vec());
        der.extend_from_slice(self.seed.as_slice());
        der
    }

    fn pem(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(self.pkcs8().as_slice())
        ))
    }

    fn from_pem(kid: String, pem: &str) -> Result<Self, DevError> {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = Zeroizing::new(STANDARD.decode(body.trim()).map_err(|_| DevError::BadKey)?);
        let seed = der
            .strip_prefix(&PKCS8_ED25519_PREFIX[..])
            .ok_or(DevError::BadKey)?;
        let seed: [u8; 32] = seed.try_into().map_err(|_| DevError::BadKey)?;
        Ok(Self::from_seed(kid, seed))
    }

    /// The newest stored key, or a new one stored now.
    pub fn load_or_create(conn: &mut Conn) -> Result<Self, DevError> {
        let rows = dev_keys::load(conn)?;
        if let Some(row) = rows.into_iter().next() {
            return Self::from_pem(row.kid, &row.private_pem);
        }
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| DevError::Random(e.to_string()))?;
        let mut kid = [0u8; 8];
        getrandom::fill(&mut kid).map_err(|e| DevError::Random(e.to_string()))?;
        let key = Self::from_seed(format!("dev-{}", URL_SAFE_NO_PAD.encode(kid)), seed);
        dev_keys::insert(conn, &key.kid, &key.pem())?;
        // Two processes may race to create the first key: keep whichever is stored first.
        let rows = dev_keys::load(conn)?;
        match rows.into_iter().next() {
            Some(row) if row.kid != key.kid => Self::from_pem(row.kid, &row.private_pem),
            _ => Ok(key),
        }
    }

    /// The newest stored key, read without creating, migrating or writing anything (for
    /// `nestflux explain`); `None` when no key was ever stored.
    pub fn read_only(db: &crate::plan::data::DatabasePlan) -> Result<Option<Self>, DevError> {
        match dev_keys::load_read_only(db)?.into_iter().next() {
            Some(row) => Self::from_pem(row.kid, &row.private_pem).map(Some),
            None => Ok(None),
        }
    }

    /// Loads (or creates) the key through the pool.
    pub fn open(store: &Store) -> Result<Self, DevError> {
        Self::load_or_create(&mut store.conn()?)
    }

    /// The public key as a JWKS document, for the bearer verifier.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [{
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
            "kid": self.kid, "x": URL_SAFE_NO_PAD.encode(self.public),
        }]})
    }

    /// Mints a token for `sub` with `roles` placed at the configured roles claim.
    pub fn mint(
        &self,
        auth: &AuthPlan,
        sub: &str,
        roles: &[String],
        ttl: Duration,
    ) -> Result<String, DevError> {
        if super::is_reserved_subject(sub) {
            return Err(DevError::Subject(sub.to_string()));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(DEV_ISSUER));
        claims.insert(
            "aud".into(),
            json!(auth.audience.as_deref().unwrap_or(DEFAULT_AUDIENCE)),
        );
        claims.insert("sub".into(), json!(sub));
        claims.insert("iat".into(), json!(now));
        claims.insert("nbf".into(), json!(now));
        claims.insert("exp".into(), json!(now + ttl.as_secs()));
        // `realm_access.roles` → {"realm_access": {"roles": [...]}}
        let mut value = json!(roles);
        for segment in auth.roles_claim.iter().rev() {
            let mut m = Map::new();
            m.insert(segment.clone(), value);
            value = Value::Object(m);
        }
        if let Value::Object(m) = value {
            for (k, v) in m {
                claims.entry(k).or_insert(v);
            }
        }
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        header.typ = Some("at+jwt".into());
        let key = EncodingKey::from_ed_der(self.pkcs8().as_slice());
        jsonwebtoken::encode(&header, &Value::Object(claims), &key)
            .map_err(|e| DevError::Sign(e.to_string()))
    }
}
