//! API keys for machines: `nfk_` + 32 random bytes (base64url), declared in the file only as
//! `sha256:<hex>` of the whole key string and compared in constant time.
//!
//! SHA-256 (not a slow password hash) is enough because the key is 256 bits of randomness:
//! there is nothing to brute-force, and a request pays one hash, not milliseconds.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Caller, CallerKind};
use crate::plan::auth::{API_KEY_HASH_PREFIX, ApiKeyPlan};

/// Every NestFlux API key starts with this, so it can travel as a bearer token too.
pub const PREFIX: &str = crate::plan::auth::API_KEY_PREFIX;
/// Subjects of API-key callers start with this; bearer tokens may not claim it.
pub const SUBJECT_PREFIX: &str = "apikey:";
/// Longest value looked at; a real key is 47 characters.
const MAX_KEY_LEN: usize = 128;

/// A new key and the `hash` value that declares it.
pub struct NewKey {
    /// The key, shown once to its holder.
    pub key: String,
    /// `sha256:<hex>` of the key, for `[auth.api_keys.NAME] hash`.
    pub hash: String,
}

/// Creates a random key from the operating system's generator.
pub fn generate() -> Result<NewKey, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let key = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash_text(&key);
    Ok(NewKey { key, hash })
}

/// `sha256:<hex>` of a key.
pub fn hash_text(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut out = String::from(API_KEY_HASH_PREFIX);
    for b in digest.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The declared keys.
#[derive(Debug, Default)]
pub struct ApiKeys {
    keys: Vec<([u8; 32], Arc<Caller>)>,
}

impl ApiKeys {
    /// The callers of the declared keys, by key hash.
    pub fn new(plans: &[ApiKeyPlan]) -> Self {
        Self {
            keys: plans
                .iter()
                .map(|p| {
                    let caller = Caller {
                        subject: format!("{SUBJECT_PREFIX}{}", p.name),
                        roles: p.roles.clone(),
                        kind: CallerKind::ApiKey(p.name.clone()),
                    };
                    (p.sha256, Arc::new(caller))
                })
                .collect(),
        }
    }

    /// Whether no key is declared.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The caller a presented key belongs to. Every declared hash is compared, in
    /// constant time, whether or not an earlier one matched.
    pub fn find(&self, presented: &str) -> Option<Arc<Caller>> {
        if presented.len() > MAX_KEY_LEN {
            return None;
        }
        let digest = Sha256::digest(presented.as_bytes());
        let mut found = None;
        for (hash, caller) in &self.keys {
            if bool::from(hash.as_slice().ct_eq(digest.as_slice())) {
                found = Some(caller.clone());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::roles::RoleId;

    #[test]
    fn a_generated_key_matches_its_own_hash_only() {
        let k = generate().unwrap();
        assert!(k.key.starts_with(PREFIX) && k.key.len() == 47, "{}", k.key);
        assert!(k.hash.starts_with("sha256:") && k.hash.len() == 7 + 64);
        let other = generate().unwrap();
        assert_ne!(k.key, other.key);

        let mut sha = [0u8; 32];
        sha.copy_from_slice(&Sha256::digest(k.key.as_bytes()));
        let keys = ApiKeys::new(&[ApiKeyPlan {
            name: "ci".into(),
            sha256: sha,
            roles: vec![RoleId("viewer".into())],
        }]);
        let caller = keys.find(&k.key).unwrap();
        assert_eq!(caller.kind, CallerKind::ApiKey("ci".into()));
        assert_eq!(caller.subject, "apikey:ci");
        assert!(keys.find(&other.key).is_none());
        assert!(keys.find(&k.key[..46]).is_none());
        assert!(keys.find(&k.hash).is_none());
    }
}
