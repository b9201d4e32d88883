//! Encryption at rest: the key ring, the `nf1` field format bound to resource, field and
//! row, and HMAC blind indexes for equality filters. Rotating stored rows to a new key is
//! the store's job (`store::rotate`); this module knows keys and values, never tables.
//!
//! ```text
//! NESTFLUX_ENCRYPTION__KEYS="k2:<base64 32 bytes>,k1:<base64 32 bytes>"
//! stored value:  nf1:k2:<base64(nonce(12) ‖ ciphertext ‖ tag(16))>, AAD "notes/secret/<row id>"
//! blind index:   k2:<base64url(HMAC-SHA-256(index key of k2, "notes" 0 "email" 0 value))>
//! ```
//!
//! The first key encrypts and indexes; every key decrypts and matches filters, so a ring in
//! the middle of a rotation still serves every row.

pub mod dev_key;
mod keys;
mod mac;

pub use keys::{Aad, FORMAT, KeyRing, generate_key, kid_of};
pub use mac::{CURSOR_INFO, MacKey, TAG_LEN};

/// Why a value could not be sealed or opened. Never carries key material or stored text.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// `NESTFLUX_ENCRYPTION__KEYS` is not `kid:base64,…` of 32-byte keys.
    #[error("encryption keys: {0}")]
    BadRing(String),
    /// A stored value that is not in the `nf1:<kid>:<base64>` format.
    #[error("the stored value is not in the nf1 format")]
    Malformed,
    /// A stored value sealed under a key the ring does not hold.
    #[error("the stored value needs key \"{kid}\", which is not in NESTFLUX_ENCRYPTION__KEYS")]
    UnknownKey {
        /// The key id the value names.
        kid: String,
    },
    /// Authentication failed: wrong key, or a value moved from another row or field.
    #[error("the stored value does not decrypt with key \"{kid}\" for this row and field")]
    Decrypt {
        /// The key id tried.
        kid: String,
    },
    /// The operating system gave no randomness.
    #[error("no randomness from the operating system: {0}")]
    Random(String),
}
