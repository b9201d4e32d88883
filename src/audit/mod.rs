//! The audit log guarantees that every change of data has its event in the same transaction
//! (no change without its event, no event without its change), that the events form one
//! hash chain any edit, deletion or reordering of which `nestflux audit verify` finds, and
//! that no field value is ever recorded (only field names).
//!
//! ```text
//! chain      the canonical encoding of an event and the hash that links it to the previous
//! sink       non-mutation events: a bounded, lossy queue; refusals counted per source per
//!            minute; every written row also traced under the target `audit`
//! verify     walk the chain from its first row (or its prune anchor) to the head
//! retention  prune rows older than `[audit] retain`, leaving an anchor row
//! time       any RFC 3339 date-time as a bound in the stored form (the `since`/`until` filters)
//! ```
//!
//! The SQL is in `store::audit`.

pub mod chain;
pub mod retention;
pub mod sink;
pub mod time;
pub mod verify;

pub use chain::{Event, Row};

/// A create, update or delete of `record_id` in `resource`, with the names (never the
/// values) of the fields it wrote: `details` is `{"fields":[…]}`, or `{}` when none.
pub fn mutation<F: AsRef<str>>(
    actor: Option<&str>,
    action: &str,
    resource: &str,
    record_id: &str,
    fields: impl IntoIterator<Item = F>,
) -> Event {
    // Written directly (one per write, on the request path), as `json!` would write it.
    let mut details = String::with_capacity(64);
    for (i, field) in fields.into_iter().enumerate() {
        details.push_str(if i == 0 { "{\"fields\":[" } else { "," });
        crate::json_string::push(&mut details, field.as_ref());
    }
    details.push_str(if details.is_empty() { "{}" } else { "]}" });
    let mut event = Event::now(actor.unwrap_or("-"), action, "ok").on(resource, record_id);
    event.details = details;
    event
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    #[test]
    fn mutation_details_name_the_fields_as_json() {
        let details = |fields: &[&str]| mutation(None, "create", "notes", "1", fields).details;
        assert_eq!(details(&[]), "{}");
        assert_eq!(
            details(&["title"]),
            json!({ "fields": ["title"] }).to_string()
        );
        assert_eq!(
            details(&["title", "odd \"name\""]),
            json!({ "fields": ["title", "odd \"name\""] }).to_string()
        );
    }
}
