//! User sync: the first sight of a subject creates a `nestflux_users` row (issuer, subject,
//! email and name when the token carries them, first and last seen); later sightings
//! refresh it.

use super::dialect::{Bind, Kind, placeholder};
use super::{Conn, StoreError, now};

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
    conn.execute(
        &sql,
        &[
            Bind::Text(Some(s.issuer.clone())),
            Bind::Text(Some(s.subject.clone())),
            Bind::Text(s.email.clone()),
            Bind::Text(s.name.clone()),
            Bind::Text(Some(stamp.clone())),
            Bind::Text(Some(stamp)),
        ],
    )?;
    Ok(())
}
