//! The key ring: AES-256-GCM keys by id, zeroized on drop, never printed.
//!
//! Key derivation: each configured 32-byte key `K` encrypts fields directly with
//! AES-256-GCM. Its blind-index key is `HKDF-SHA-256-Expand(PRK = K, info =
//! "nestflux/blind-index/v1", L = 32)`, i.e. `HMAC-SHA-256(K, info ‖ 0x01)`; `K` is uniformly
//! random, so it serves as the PRK without an extract step. Knowing an index key reveals
//! nothing about `K`, and the two uses never share a key.

use std::fmt;

use aes_gcm::aead::{Aead, AeadInOut, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::CryptoError;

/// Prefix of the stored field format, version 1.
pub const FORMAT: &str = "nf1";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const INDEX_INFO: &[u8] = b"nestflux/blind-index/v1";

type HmacSha256 = Hmac<Sha256>;

/// Associated data of one stored value: `resource/field/row id`.
#[derive(Debug, Clone, Copy)]
pub struct Aad<'a> {
    /// The resource (table) name.
    pub resource: &'a str,
    /// The field name.
    pub field: &'a str,
    /// The row id.
    pub id: &'a str,
}

impl Aad<'_> {
    fn bytes(&self) -> Vec<u8> {
        // Built by hand, not with `format!`: this runs for every encrypted value a list reads.
        let mut out =
            Vec::with_capacity(self.resource.len() + self.field.len() + self.id.len() + 2);
        for (i, part) in [self.resource, self.field, self.id].into_iter().enumerate() {
            if i > 0 {
                out.push(b'/');
            }
            out.extend_from_slice(part.as_bytes());
        }
        out
    }
}

/// One key of the ring. The raw key lives only inside the ciphers it keyed.
struct RingKey {
    kid: String,
    cipher: Aes256Gcm,
    /// HMAC already keyed with the derived index key; cloned per use.
    index: HmacSha256,
    /// The key that authenticates list cursors, derived like the index key.
    cursor: super::MacKey,
}

/// The keys from `NESTFLUX_ENCRYPTION__KEYS`: the first encrypts, all decrypt.
pub struct KeyRing {
    keys: Vec<RingKey>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field(
                "kids",
                &self.keys.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Parses `kid:base64,…`. Errors name positions and key ids, never key material.
    pub fn parse(text: &str) -> Result<Self, CryptoError> {
        Self::parse_all(text).map_err(|problems| {
            let (i, what) = problems.into_iter().next().unwrap_or((0, "no keys".into()));
            CryptoError::BadRing(format!("entry {i}: {what}"))
        })
    }

    /// Parses `kid:base64,…`, reporting every bad entry as (position, problem). Messages
    /// name positions and key ids, never key material.
    pub fn parse_all(text: &str) -> Result<Self, Vec<(usize, String)>> {
        let mut keys: Vec<RingKey> = Vec::new();
        let mut problems = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        for (i, entry) in text
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let Some((kid, b64)) = entry.split_once(':') else {
                problems.push((
                    i,
                    "expected kid:base64 (see `nestflux keys generate`)".into(),
                ));
                continue;
            };
            if kid.is_empty()
                || kid.len() > 32
                || !kid
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                problems.push((
                    i,
                    "key id must be 1-32 characters of letters, digits, `_` or `-`".into(),
                ));
                continue;
            }
            if seen.contains(&kid) {
                problems.push((i, format!("key id \"{kid}\" appears twice")));
                continue;
            }
            seen.push(kid);
            let Ok(raw) = STANDARD.decode(b64.trim()).map(Zeroizing::new) else {
                problems.push((i, format!("key \"{kid}\" is not valid base64")));
                continue;
            };
            if raw.len() != 32 {
                problems.push((i, format!("key \"{kid}\" is not 32 bytes (AES-256)")));
                continue;
            }
            if !looks_random(&raw) {
                problems.push((
                    i,
                    format!(
                        "key \"{kid}\" is not random (all zero, or a few repeated bytes): generate one with `nestflux keys generate`"
                    ),
                ));
                continue;
            }
            match RingKey::new(kid, &raw) {
                Ok(key) => keys.push(key),
                Err(e) => problems.push((i, e.to_string())),
            }
        }
        if keys.is_empty() && problems.is_empty() {
            problems.push((0, "no keys".into()));
        }
        if problems.is_empty() {
            Ok(Self { keys })
        } else {
            Err(problems)
        }
    }

    /// The id of the key that encrypts new values.
    pub fn active_kid(&self) -> &str {
        &self.keys[0].kid
    }

    /// Every key id, active first.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.kid.as_str())
    }

    fn key(&self, kid: &str) -> Option<&RingKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// Encrypts with the active key and a fresh random nonce: `nf1:<kid>:<base64>`.
    pub fn seal(&self, aad: &Aad<'_>, plaintext: &str) -> Result<String, CryptoError> {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| CryptoError::Random(e.to_string()))?;
        let aad = aad.bytes();
        let sealed = key
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Decrypt {
                kid: key.kid.clone(),
            })?;
        let mut blob = Vec::with_capacity(NONCE_LEN + sealed.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&sealed);
        Ok(format!("{FORMAT}:{}:{}", key.kid, STANDARD.encode(&blob)))
    }

    /// Decrypts a stored value with the key it names. Fails (never returns garbage) when the
    /// value was moved from another row or field, tampered with, or sealed under a key
    /// the ring lacks.
    pub fn open(&self, aad: &Aad<'_>, stored: &str) -> Result<String, CryptoError> {
        let kid = kid_of(stored).ok_or(CryptoError::Malformed)?;
        let key = self.key(kid).ok_or_else(|| CryptoError::UnknownKey {
            kid: kid.to_string(),
        })?;
        let b64 = &stored[FORMAT.len() + kid.len() + 2..];
        // `nonce ‖ ciphertext ‖ tag`, decrypted where it lies: no second buffer.
        let mut blob = STANDARD.decode(b64).map_err(|_| CryptoError::Malformed)?;
        let Some(tag_at) = blob.len().checked_sub(TAG_LEN).filter(|&t| t >= NONCE_LEN) else {
            return Err(CryptoError::Malformed);
        };
        let (head, tag) = blob.split_at_mut(tag_at);
        let (nonce, sealed) = head.split_at_mut(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = (&*nonce).try_into().map_err(|_| CryptoError::Malformed)?;
        let tag: [u8; TAG_LEN] = (&*tag).try_into().map_err(|_| CryptoError::Malformed)?;
        let fail = || CryptoError::Decrypt {
            kid: key.kid.clone(),
        };
        key.cipher
            .decrypt_inout_detached(
                &Nonce::from(nonce),
                &aad.bytes(),
                sealed.into(),
                &Tag::from(tag),
            )
            .map_err(|_| fail())?;
        blob.truncate(tag_at);
        blob.drain(..NONCE_LEN);
        String::from_utf8(blob).map_err(|_| fail())
    }

    /// The cursor MAC keys, active first: cursors are signed with the first and accepted
    /// under any, so a rotation does not break the pages a client is walking.
    pub fn cursor_keys(&self) -> Vec<super::MacKey> {
        self.keys.iter().map(|k| k.cursor.clone()).collect()
    }

    /// The blind index of `value` under the active key: `<kid>:<base64url(hmac)>`.
    pub fn blind_index(&self, resource: &str, field: &str, value: &str) -> String {
        self.keys[0].index_of(resource, field, value)
    }

    /// The blind index of `value` under every key, for an equality filter that must also
    /// match rows not yet rotated.
    pub fn blind_indexes(&self, resource: &str, field: &str, value: &str) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| k.index_of(resource, field, value))
            .collect()
    }
}

impl RingKey {
    fn new(kid: &str, raw: &[u8]) -> Result<Self, CryptoError> {
        let bad = || CryptoError::BadRing(format!("key \"{kid}\" is not 32 bytes (AES-256)"));
        let cipher = Aes256Gcm::new_from_slice(raw).map_err(|_| bad())?;
        let mut expand = <HmacSha256 as KeyInit>::new_from_slice(raw).map_err(|_| bad())?;
        expand.update(INDEX_INFO);
        expand.update(&[1]);
        let index_key = Zeroizing::new(<[u8; 32]>::from(expand.finalize().into_bytes()));
        let index =
            <HmacSha256 as KeyInit>::new_from_slice(index_key.as_slice()).map_err(|_| bad())?;
        Ok(Self {
            kid: kid.to_string(),
            cipher,
            index,
            cursor: super::MacKey::derive(raw, super::CURSOR_INFO)?,
        })
    }

    fn index_of(&self, resource: &str, field: &str, value: &str) -> String {
        let mut mac = self.index.clone();
        // Zero separators: names never contain NUL, so ("a","bc") and ("ab","c") differ.
        mac.update(resource.as_bytes());
        mac.update(&[0]);
        mac.update(field.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        format!(
            "{}:{}",
            self.kid,
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }
}

/// The key id of a stored `nf1:<kid>:…` value.
pub fn kid_of(stored: &str) -> Option<&str> {
    let rest = stored.strip_prefix(FORMAT)?.strip_prefix(':')?;
    let (kid, _) = rest.split_once(':')?;
    (!kid.is_empty()).then_some(kid)
}

/// A new random key as `kid:base64` (for `nestflux keys generate`).
pub fn generate_key() -> Result<String, CryptoError> {
    let mut key = Zeroizing::new([0u8; 32]);
    getrandom::fill(key.as_mut_slice()).map_err(|e| CryptoError::Random(e.to_string()))?;
    let mut id = [0u8; 4];
    getrandom::fill(&mut id).map_err(|e| CryptoError::Random(e.to_string()))?;
    let kid: String = id.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("k{kid}:{}", STANDARD.encode(key.as_slice())))
}

/// A sanity check, not an entropy test: 32 random bytes hold about 31 distinct values, and
/// fewer than [`MIN_DISTINCT_BYTES`] happens by chance with probability below 2^-100. It
/// catches placeholder keys (all zero, one repeated byte, a short pattern).
fn looks_random(key: &[u8]) -> bool {
    let mut seen = [false; 256];
    for b in key {
        seen[usize::from(*b)] = true;
    }
    seen.iter().filter(|s| **s).count() >= MIN_DISTINCT_BYTES
}

/// Fewest distinct byte values a configured key may hold.
const MIN_DISTINCT_BYTES: usize = 12;

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(text: &str) -> KeyRing {
        KeyRing::parse(text).expect("ring")
    }

    const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "k2:HxweHRwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE=";
    const AAD: Aad<'static> = Aad {
        resource: "notes",
        field: "secret",
        id: "row-1",
    };

    #[test]
    fn round_trip_with_fresh_nonces() {
        let r = ring(K1);
        let a = r.seal(&AAD, "hello").unwrap();
        let b = r.seal(&AAD, "hello").unwrap();
        assert!(a.starts_with("nf1:k1:"), "{a}");
        assert_ne!(a, b, "nonces must differ");
        assert_eq!(r.open(&AAD, &a).unwrap(), "hello");
    }

    #[test]
    fn another_row_or_field_fails() {
        let r = ring(K1);
        let a = r.seal(&AAD, "hello").unwrap();
        let row = Aad { id: "row-2", ..AAD };
        let field = Aad {
            field: "body",
            ..AAD
        };
        assert!(matches!(r.open(&row, &a), Err(CryptoError::Decrypt { .. })));
        assert!(matches!(
            r.open(&field, &a),
            Err(CryptoError::Decrypt { .. })
        ));
    }

    #[test]
    fn old_keys_decrypt_new_key_encrypts() {
        let old = ring(K1);
        let sealed = old.seal(&AAD, "x").unwrap();
        let both = ring(&format!("{K2},{K1}"));
        assert_eq!(both.open(&AAD, &sealed).unwrap(), "x");
        assert!(both.seal(&AAD, "x").unwrap().starts_with("nf1:k2:"));
        let only_new = ring(K2);
        assert!(
            matches!(only_new.open(&AAD, &sealed), Err(CryptoError::UnknownKey { kid }) if kid == "k1")
        );
    }

    #[test]
    fn tampering_and_garbage_fail() {
        let r = ring(K1);
        let a = r.seal(&AAD, "hello").unwrap();
        let mut bytes = a.clone().into_bytes();
        let last = bytes.len() - 3;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert!(r.open(&AAD, &tampered).is_err());
        for junk in ["", "hello", "nf1:", "nf1:k1:", "nf1:k1:!!!", "nf1:k1:AAAA"] {
            assert!(r.open(&AAD, junk).is_err(), "{junk}");
        }
    }

    #[test]
    fn blind_index_is_deterministic_and_separated() {
        let r = ring(&format!("{K2},{K1}"));
        let a = r.blind_index("notes", "email", "a@example.com");
        assert_eq!(a, r.blind_index("notes", "email", "a@example.com"));
        assert!(a.starts_with("k2:"));
        assert_ne!(a, r.blind_index("notes", "other", "a@example.com"));
        assert_ne!(a, r.blind_index("notes", "email", "b@example.com"));
        let all = r.blind_indexes("notes", "email", "a@example.com");
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], a);
        assert!(all[1].starts_with("k1:"));
    }

    #[test]
    fn placeholder_keys_are_refused() {
        use base64::Engine;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let mut pattern = [0u8; 32];
        for (i, b) in pattern.iter_mut().enumerate() {
            *b = (i % 4) as u8;
        }
        for weak in [[0u8; 32], [0x41u8; 32], pattern] {
            let text = format!("k1:{}", b64(&weak));
            let problems = KeyRing::parse_all(&text).unwrap_err();
            assert!(problems[0].1.contains("not random"), "{problems:?}");
            assert!(!problems[0].1.contains(&b64(&weak)), "never echoed");
        }
        assert!(KeyRing::parse_all(K1).is_ok());
        let fresh = generate_key().unwrap();
        assert!(KeyRing::parse_all(&fresh).is_ok());
    }

    #[test]
    fn debug_and_errors_never_show_key_material() {
        let r = ring(K1);
        let debug = format!("{r:?}");
        assert!(debug.contains("k1") && !debug.contains("AAECAw"), "{debug}");
        let err = KeyRing::parse("k1:AAECAwQF").unwrap_err().to_string();
        assert!(!err.contains("AAECAwQF"), "{err}");
    }

    #[test]
    fn generated_keys_parse() {
        let k = generate_key().unwrap();
        let r = ring(&k);
        assert_eq!(r.kids().count(), 1);
        assert_ne!(generate_key().unwrap(), k);
    }
}
