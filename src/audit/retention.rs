//! `[audit] retain`: rows older than the retention are deleted from the oldest end, and an
//! anchor row (`audit.prune`, `record_id` = the last pruned seq, `details.last_pruned_hash`)
//! is appended first in the same transaction, so `verify` still passes from the anchor on.

use std::time::{Duration, SystemTime};

use serde_json::json;

use super::chain::{Event, Row};
use crate::store::{Conn, StoreError, audit};

/// Prunes, in the caller's open transaction, every row older than `retain`; returns the
/// anchor row, or `None` when nothing was old enough.
pub fn prune(conn: &mut Conn, retain: Duration) -> Result<Option<Row>, StoreError> {
    let cutoff = SystemTime::now()
        .checked_sub(retain)
        .map(|t| humantime::format_rfc3339_micros(t).to_string())
        .ok_or_else(|| StoreError::Database("retention reaches before 1970".into()))?;
    prune_before(conn, &cutoff)
}

/// Prunes every row with `at` before `cutoff` (RFC 3339 UTC, the stored form).
pub fn prune_before(conn: &mut Conn, cutoff: &str) -> Result<Option<Row>, StoreError> {
    let Some(last) = audit::last_before(conn, cutoff)? else {
        return Ok(None);
    };
    let first = audit::walk(conn, i64::MIN, 1)?
        .first()
        .map_or(last.seq, |r| r.seq);
    let anchor = Event::now("-", "audit.prune", "ok")
        .on("nestflux_audit", &last.seq.to_string())
        .details(&json!({
            "cutoff": cutoff,
            "first_pruned": first,
            "last_pruned_hash": last.hash,
            "rows": last.seq - first + 1,
        }));
    let rows = audit::append(conn, &[anchor])?;
    audit::delete_through(conn, last.seq)?;
    Ok(rows.into_iter().next())
}

/// How often a serving process prunes.
const EVERY: Duration = Duration::from_secs(3600);

/// Prunes now and then every hour, on a thread of its own, through the store's writer.
pub fn start(store: crate::store::Store, retain: Duration) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("nestflux-audit-prune".into())
        .spawn(move || {
            loop {
                let done = store.write_blocking(
                    crate::deadline::Deadline::after(Duration::from_secs(30)),
                    move |c| prune(c, retain),
                );
                match done {
                    Ok(Some(anchor)) => super::sink::trace(&[anchor]),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(target: "nestflux::audit", error = %e, "audit prune failed; retried in an hour"),
                }
                std::thread::sleep(EVERY);
            }
        })?;
    Ok(())
}
