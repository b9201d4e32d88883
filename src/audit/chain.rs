//! The chain: one canonical encoding of an event, and `hash = SHA-256(prev_hash ‖ encoding)`.
//! This file is the only definition; docs/audit.md restates it for outside verifiers.
//!
//! Encoding (version 1): for each of `seq` (decimal ASCII), `at`, `actor`, `action`,
//! `resource`, `record_id`, `outcome`, `details`, `request_id`, `client_ip`, in this order:
//! the value's UTF-8 length as 4 bytes big-endian, then its UTF-8 bytes. `prev_hash` is the
//! previous row's `hash` as 64 lowercase hex characters (the first row's is [`GENESIS`]);
//! `hash` is the SHA-256 of `prev_hash`'s 64 ASCII bytes followed by the encoding, in
//! lowercase hex.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first row ever written.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened, before it has a place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// When, RFC 3339 UTC with microseconds.
    pub at: String,
    /// Who: the caller's subject (`dev:<sub>`, `apikey:<name>`, a provider's `sub`), or `-`.
    pub actor: String,
    /// What: `create`, `update`, `delete`, `authz.denied`, `auth.failures`, … (docs/audit.md).
    pub action: String,
    /// The resource (or route) it concerns; empty when none.
    pub resource: String,
    /// The record's id; empty when none.
    pub record_id: String,
    /// `ok`, `denied`, `failed`, …
    pub outcome: String,
    /// A JSON object: field names, counts, hashes — never a field's value.
    pub details: String,
    /// The request's id; empty outside a request.
    pub request_id: String,
    /// The client's address as the rate limiter sees it; empty outside a request.
    pub client_ip: String,
}

impl Event {
    /// An event happening now, with empty request fields and `{}` details.
    pub fn now(actor: &str, action: &str, outcome: &str) -> Self {
        Self {
            at: crate::store::now(),
            actor: if actor.is_empty() { "-" } else { actor }.to_string(),
            action: action.to_string(),
            resource: String::new(),
            record_id: String::new(),
            outcome: outcome.to_string(),
            details: "{}".into(),
            request_id: String::new(),
            client_ip: String::new(),
        }
    }

    /// With `resource` and `record_id`.
    pub fn on(mut self, resource: &str, record_id: &str) -> Self {
        self.resource = resource.to_string();
        self.record_id = record_id.to_string();
        self
    }

    /// With details (a JSON object).
    pub fn details(mut self, details: &serde_json::Value) -> Self {
        self.details = details.to_string();
        self
    }

    /// With the request's id and client address.
    pub fn request(mut self, request_id: &str, client_ip: &str) -> Self {
        self.request_id = request_id.to_string();
        self.client_ip = client_ip.to_string();
        self
    }
}

/// An event in its place: what `nestflux_audit` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// Position in the chain, from 1, without gaps.
    pub seq: i64,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
    /// The previous row's hash.
    pub prev_hash: String,
    /// This row's hash.
    pub hash: String,
}

impl Row {
    /// Places `event` after the row `(seq, hash)` (`None`: the first row).
    pub fn after(head: Option<(i64, &str)>, event: Event) -> Self {
        let (seq, prev_hash) = place_after(head);
        let hash = hash(&prev_hash, seq, &event);
        Self {
            seq,
            event,
            prev_hash,
            hash,
        }
    }

    /// Whether the stored hash is the hash of the stored fields.
    pub fn hash_holds(&self) -> bool {
        hash(&self.prev_hash, self.seq, &self.event) == self.hash
    }

    /// The row as one JSON line (tracing, export).
    pub fn json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The `seq` and `prev_hash` of the row after `head` (`None`: the first row).
pub fn place_after(head: Option<(i64, &str)>) -> (i64, String) {
    match head {
        Some((seq, hash)) => (seq + 1, hash.to_string()),
        None => (1, GENESIS.to_string()),
    }
}

/// The canonical encoding of an event at `seq`.
pub fn encode(seq: i64, e: &Event) -> Vec<u8> {
    let seq = seq.to_string();
    let fields: [&str; 10] = [
        &seq,
        &e.at,
        &e.actor,
        &e.action,
        &e.resource,
        &e.record_id,
        &e.outcome,
        &e.details,
        &e.request_id,
        &e.client_ip,
    ];
    let mut out = Vec::with_capacity(fields.iter().map(|f| f.len() + 4).sum());
    for f in fields {
        // Stored values are far below 4 GiB (request-bounded); saturate rather than wrap.
        let len = u32::try_from(f.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(f.as_bytes());
    }
    out
}

/// `SHA-256(prev_hash ‖ encode(seq, e))` in lowercase hex.
pub fn hash(prev_hash: &str, seq: i64, e: &Event) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(encode(seq, e));
    let mut out = String::with_capacity(64);
    for b in h.finalize() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event {
            at: "2026-11-30T01:02:03.000004Z".into(),
            actor: "dev:alice".into(),
            action: "create".into(),
            resource: "notes".into(),
            record_id: "r1".into(),
            outcome: "ok".into(),
            details: r#"{"fields":["title"]}"#.into(),
            request_id: "rid".into(),
            client_ip: "127.0.0.1".into(),
        }
    }

    #[test]
    fn the_first_row_follows_genesis_and_each_row_its_predecessor() {
        let first = Row::after(None, event());
        assert_eq!((first.seq, first.prev_hash.as_str()), (1, GENESIS));
        let second = Row::after(Some((first.seq, &first.hash)), event());
        assert_eq!(second.seq, 2);
        assert_eq!(second.prev_hash, first.hash);
        // Same event, other place: other hash.
        assert_ne!(second.hash, first.hash);
        assert!(first.hash_holds() && second.hash_holds());
    }

    #[test]
    fn lengths_keep_fields_apart() {
        // "ab" + "c" and "a" + "bc" concatenate alike; the length prefixes tell them apart.
        let mut a = event();
        (a.actor, a.action) = ("ab".into(), "c".into());
        let mut b = event();
        (b.actor, b.action) = ("a".into(), "bc".into());
        assert_ne!(hash(GENESIS, 1, &a), hash(GENESIS, 1, &b));
    }

    #[test]
    fn a_known_vector() {
        // Restated in docs/audit.md for outside verifiers.
        let mut e = event();
        e.details = "{}".into();
        assert_eq!(
            hash(GENESIS, 1, &e),
            "26d2597e98b6accd14752e7129a5efcdc4985ab187b11ae470f58dc665f11805"
        );
    }
}
