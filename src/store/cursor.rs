//! List cursors: the keyset position after a page (sort column, direction, the last row's
//! sort value and id), handed to clients as opaque text `base64url(payload).base64url(tag)`.
//!
//! The tag is an HMAC over the resource name and the payload, under a key derived from the
//! encryption key ring (any key of the ring verifies, the active one signs) or, without a
//! ring, from a server secret kept in the database. An edited cursor, or one made for another
//! resource or by another deployment, is refused. Sort values are bounded (long text is not
//! sortable), so a cursor never exceeds [`MAX_CHARS`].

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::crypto::MacKey;

/// The longest cursor accepted. The longest one the server makes (a sort value of 256
/// characters that all need `\u` escapes, a 63-character field name) stays below it.
pub const MAX_CHARS: usize = 2560;

/// A position in a sorted list.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    /// The sort column.
    pub sort: String,
    /// Whether the sort is descending.
    pub desc: bool,
    /// The sort column's value in the last row.
    pub value: Value,
    /// The id of the last row (the tie-breaker).
    pub id: String,
}

/// Signs and checks cursors: the first key signs, any key verifies.
#[derive(Debug, Clone)]
pub struct CursorKeys {
    keys: Vec<MacKey>,
}

impl CursorKeys {
    /// Keys from the ring (active first) or the one from the server secret. `None` when
    /// `keys` is empty.
    pub fn new(keys: Vec<MacKey>) -> Option<Self> {
        (!keys.is_empty()).then_some(Self { keys })
    }

    /// The opaque text handed to clients for `resource`'s list.
    pub fn encode(&self, resource: &str, c: &Cursor) -> String {
        let payload = json!({ "s": c.sort, "d": c.desc, "v": c.value, "i": c.id }).to_string();
        let tag = self
            .keys
            .first()
            .map(|k| k.tag(&[resource.as_bytes(), payload.as_bytes()]))
            .unwrap_or_default();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// The cursor, if `text` is one this deployment made for `resource` and nobody
    /// changed; `None` otherwise.
    pub fn decode(&self, resource: &str, text: &str) -> Option<Cursor> {
        if text.len() > MAX_CHARS {
            return None;
        }
        let (payload, tag) = text.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        if !self
            .keys
            .iter()
            .any(|k| k.verify(&[resource.as_bytes(), &payload], &tag))
        {
            return None;
        }
        let v: Value = serde_json::from_slice(&payload).ok()?;
        Some(Cursor {
            sort: v.get("s")?.as_str()?.to_string(),
            desc: v.get("d")?.as_bool()?,
            value: v.get("v")?.clone(),
            id: v.get("i")?.as_str()?.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::CURSOR_INFO;

    fn keys(secret: u8) -> CursorKeys {
        CursorKeys::new(vec![MacKey::derive(&[secret; 32], CURSOR_INFO).unwrap()]).unwrap()
    }

    fn cursor(value: Value) -> Cursor {
        Cursor {
            sort: "title".into(),
            desc: true,
            value,
            id: "0190b2a4-7c1e-7d3f-9a2b-3c4d5e6f7a8b".into(),
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let k = keys(1);
        let c = cursor(json!("hello"));
        let text = k.encode("notes", &c);
        assert_eq!(k.decode("notes", &text), Some(c.clone()));
        assert_eq!(k.decode("people", &text), None, "another resource's cursor");
        assert_eq!(keys(2).decode("notes", &text), None, "another deployment's");
        let (payload, tag) = text.split_once('.').unwrap();
        let edited = URL_SAFE_NO_PAD.encode(
            String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap())
                .unwrap()
                .replace("hello", "hellp"),
        );
        assert_eq!(k.decode("notes", &format!("{edited}.{tag}")), None);
        assert_eq!(k.decode("notes", payload), None, "unsigned");
        assert_eq!(k.decode("notes", ""), None);
        assert_eq!(k.decode("notes", &"A".repeat(MAX_CHARS + 1)), None);
    }

    #[test]
    fn any_ring_key_verifies_the_first_signs() {
        let old = keys(1);
        let text = old.encode("notes", &cursor(json!(3)));
        let rotated = CursorKeys::new(vec![
            MacKey::derive(&[2; 32], CURSOR_INFO).unwrap(),
            MacKey::derive(&[1; 32], CURSOR_INFO).unwrap(),
        ])
        .unwrap();
        assert!(rotated.decode("notes", &text).is_some());
        assert!(
            old.decode("notes", &rotated.encode("notes", &cursor(json!(3))))
                .is_none()
        );
    }

    #[test]
    fn the_longest_cursor_the_server_makes_fits() {
        let mut c = cursor(json!("\u{1}".repeat(256)));
        c.sort = "a".repeat(63);
        let text = keys(1).encode("notes", &c);
        assert!(text.len() <= MAX_CHARS, "{}", text.len());
        assert!(keys(1).decode("notes", &text).is_some());
    }
}
