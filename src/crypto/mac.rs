//! MAC keys for values the server hands out and later takes back (list cursors): derived
//! from a secret with HKDF-SHA-256-Expand under a purpose label, so they never double as an
//! encryption or blind-index key, and compared in constant time.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::CryptoError;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of a tag as handed out: 128 bits, the usual truncation of HMAC-SHA-256.
pub const TAG_LEN: usize = 16;

/// Purpose label of the cursor key.
pub const CURSOR_INFO: &[u8] = b"nestflux/cursor/v1";

/// An HMAC-SHA-256 key for one purpose. `Debug` never shows it.
#[derive(Clone)]
pub struct MacKey(HmacSha256);

impl fmt::Debug for MacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MacKey").finish_non_exhaustive()
    }
}

impl MacKey {
    /// `HKDF-SHA-256-Expand(PRK = secret, info, L = 32)` as the key: `secret` is uniformly
    /// random (an encryption key, or a generated server secret), so it serves as the PRK.
    pub fn derive(secret: &[u8], info: &[u8]) -> Result<Self, CryptoError> {
        let bad = || CryptoError::BadRing("a MAC secret must not be empty".into());
        if secret.is_empty() {
            return Err(bad());
        }
        let mut expand = <HmacSha256 as KeyInit>::new_from_slice(secret).map_err(|_| bad())?;
        expand.update(info);
        expand.update(&[1]);
        let key = Zeroizing::new(<[u8; 32]>::from(expand.finalize().into_bytes()));
        Ok(Self(
            <HmacSha256 as KeyInit>::new_from_slice(key.as_slice()).map_err(|_| bad())?,
        ))
    }

    /// The tag of `parts`, each length-prefixed so no two sequences of parts collide.
    pub fn tag(&self, parts: &[&[u8]]) -> [u8; TAG_LEN] {
        let mut mac = self.0.clone();
        for p in parts {
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(&full[..TAG_LEN]);
        out
    }

    /// Whether `tag` is the tag of `parts`, compared in constant time.
    pub fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        tag.len() == TAG_LEN && bool::from(self.tag(parts).ct_eq(tag))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_bind_purpose_secret_and_parts() {
        let a = MacKey::derive(&[7; 32], CURSOR_INFO).unwrap();
        let t = a.tag(&[b"notes", b"payload"]);
        assert!(a.verify(&[b"notes", b"payload"], &t));
        assert!(!a.verify(&[b"notes", b"payloaD"], &t));
        assert!(
            !a.verify(&[b"note", b"spayload"], &t),
            "parts are length-prefixed"
        );
        assert!(!a.verify(&[b"notes", b"payload"], &t[..8]));
        let other_secret = MacKey::derive(&[8; 32], CURSOR_INFO).unwrap();
        assert!(!other_secret.verify(&[b"notes", b"payload"], &t));
        let other_purpose = MacKey::derive(&[7; 32], b"nestflux/other/v1").unwrap();
        assert!(!other_purpose.verify(&[b"notes", b"payload"], &t));
        assert!(!format!("{a:?}").contains('7'));
        assert!(MacKey::derive(&[], CURSOR_INFO).is_err());
    }
}
