//! User sync: the first sight of a subject creates a `nestflux_users` row (issuer, subject,
//! email and name when the token carries them, first and last seen); later sightings
//! refresh `last_seen` at most once per `database.last_seen_interval` (a minute) per subject.
//!
//! Sightings never touch the request path: [`Sightings::offer`] throttles and hands them to
//! a bounded, lossy channel that the database writer drains (coalesced per subject) in the
//! background. A full channel drops the sighting; a request never waits or fails for it.

use std::hash::BuildHasher;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{SystemTime, UNIX_EPOCH};

use quick_cache::sync::Cache;

use super::dialect::{Bind, Kind, placeholder};
use super::{Conn, StoreError, now};

/// Sightings waiting for the writer; more are dropped.
pub const CHANNEL: usize = 1024;
/// Subjects whose last sighting time is remembered (least recently used forgotten).
const REMEMBERED: usize = 16 * 1024;

/// What a verified token says about its subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    /// The token's `iss`.
    pub issuer: String,
    /// The token's `sub`.
    pub subject: String,
    /// The `email` claim, when present.
    pub email: Option<String>,
    /// The `name` claim, when present.
    pub name: Option<String>,
}

/// An issuer as stored: `https://idp/realms/x/` and `https://idp/realms/x` are one issuer,
/// so they must not make two user rows.
pub fn normalize_issuer(issuer: &str) -> &str {
    let trimmed = issuer.trim_end_matches('/');
    if trimmed.is_empty() { issuer } else { trimmed }
}

/// The throttled, lossy way from a verified token to the users table.
pub struct Sightings {
    tx: SyncSender<Sighting>,
    /// When each subject (by a keyed hash of issuer and subject) was last passed on, in
    /// milliseconds since the epoch.
    last: Cache<u64, u64>,
    hasher: std::hash::RandomState,
    /// Least time between two sightings of one subject passed on, in milliseconds.
    every_ms: u64,
}

impl Sightings {
    /// The sender side, passing a subject on at most once per `every`, and the receiver
    /// the writer drains.
    pub fn channel(every: std::time::Duration) -> (Self, Receiver<Sighting>) {
        let (tx, rx) = sync_channel(CHANNEL);
        (
            Self {
                tx,
                last: Cache::new(REMEMBERED),
                hasher: std::hash::RandomState::new(),
                every_ms: u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
            },
            rx,
        )
    }

    /// Passes the sighting on unless its subject was passed on less than the interval ago;
    /// never blocks (a full channel drops it).
    pub fn offer(&self, s: &Sighting) {
        let key = self
            .hasher
            .hash_one((normalize_issuer(&s.issuer), s.subject.as_str()));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        if self
            .last
            .get(&key)
            .is_some_and(|at| now < at.saturating_add(self.every_ms))
        {
            return;
        }
        self.last.insert(key, now);
        if self.tx.try_send(s.clone()).is_err() {
            tracing::debug!("user sighting dropped: the writer is behind");
        }
    }
}

/// Inserts or refreshes the subject's row.
pub fn record(conn: &mut Conn, s: &Sighting) -> Result<(), StoreError> {
    let pg = conn.is_postgres();
    let ph = |n: usize| placeholder(pg, n, Kind::Text);
    let sql = format!(
        "INSERT INTO nestflux_users (issuer, subject, email, name, first_seen, last_seen) \
         VALUES ({}, {}, {}, {}, {}, {}) \
         ON CONFLICT (issuer, subject) DO UPDATE SET \
         email = COALESCE(excluded.email, nestflux_users.email), \
         name = COALESCE(excluded.name, nestflux_users.name), \
         last_seen = excluded.last_seen",
        ph(1),
        ph(2),
        ph(3),
        ph(4),
        ph(5),
        ph(6)
    );
    let stamp = now();
    conn.execute_cached(
        &sql,
        &[
            Bind::Text(Some(normalize_issuer(&s.issuer).to_string())),
            Bind::Text(Some(s.subject.clone())),
            Bind::Text(s.email.clone()),
            Bind::Text(s.name.clone()),
            Bind::Text(Some(stamp.clone())),
            Bind::Text(Some(stamp)),
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuers_differing_by_a_trailing_slash_are_one() {
        assert_eq!(
            normalize_issuer("https://idp/realms/x/"),
            "https://idp/realms/x"
        );
        assert_eq!(
            normalize_issuer("https://idp/realms/x"),
            "https://idp/realms/x"
        );
        assert_eq!(
            normalize_issuer("urn:nestflux:dev-issuer"),
            "urn:nestflux:dev-issuer"
        );
        assert_eq!(normalize_issuer("/"), "/");
    }

    fn sighting(sub: &str) -> Sighting {
        Sighting {
            issuer: "https://idp/".into(),
            subject: sub.into(),
            email: None,
            name: None,
        }
    }

    #[test]
    fn a_subject_is_passed_on_once_a_minute_and_a_full_channel_drops() {
        let (s, rx) = Sightings::channel(std::time::Duration::from_secs(60));
        s.offer(&sighting("a"));
        s.offer(&sighting("a"));
        let mut other = sighting("a");
        other.issuer = "https://idp".into();
        s.offer(&other);
        s.offer(&sighting("b"));
        let got: Vec<String> = rx.try_iter().map(|s| s.subject).collect();
        assert_eq!(got, ["a", "b"]);
        for i in 0..CHANNEL + 10 {
            s.offer(&sighting(&format!("n{i}")));
        }
        assert_eq!(rx.try_iter().count(), CHANNEL, "bounded, never blocking");
    }
}
