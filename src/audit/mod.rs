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

use serde_json::json;

/// A create, update or delete of `record_id` in `resource`, with the names (never the
/// values) of the fields it wrote.
pub fn mutation(
    actor: Option<&str>,
    action: &str,
    resource: &str,
    record_id: &str,
    fields: Vec<String>,
) -> Event {
    let details = if fields.is_empty() {
        json!({})
    } else {
        json!({ "fields": fields })
    };
    Event::now(actor.unwrap_or("-"), action, "ok")
        .on(resource, record_id)
        .details(&details)
}
