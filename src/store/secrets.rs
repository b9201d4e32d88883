//! Server secrets in `nestflux_secrets`, generated once on first start and shared by every
//! instance on the same database (the cursor MAC secret when no key ring is configured).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use diesel::prelude::*;
use diesel::sql_types::Text;
use zeroize::Zeroizing;

use super::conn::Raw;
use super::dialect::{Bind, Kind, placeholder};
use super::{Conn, StoreError, now};

#[derive(QueryableByName)]
struct Value {
    #[diesel(sql_type = Text)]
    value: String,
}

/// The 32-byte secret called `name`, created now if the database has none. Two instances
/// racing to create it both end up with the one stored first.
pub fn load_or_create(conn: &mut Conn, name: &str) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let pg = conn.is_postgres();
    let ph = |n: usize| placeholder(pg, n, Kind::Text);
    let mut fresh = Zeroizing::new([0u8; 32]);
    getrandom::fill(fresh.as_mut_slice())
        .map_err(|e| StoreError::Unavailable(format!("no randomness: {e}")))?;
    let encoded = Zeroizing::new(STANDARD.encode(fresh.as_slice()));
    conn.execute(
        &format!(
            "INSERT INTO nestflux_secrets (name, value, created_at) VALUES ({}, {}, {}) \
             ON CONFLICT (name) DO NOTHING",
            ph(1),
            ph(2),
            ph(3)
        ),
        &[
            Bind::Text(Some(name.to_string())),
            Bind::Text(Some(encoded.to_string())),
            Bind::Text(Some(now())),
        ],
    )?;
    let sql = format!("SELECT value FROM nestflux_secrets WHERE name = {}", ph(1));
    let rows = conn.with_raw(|raw| match raw {
        Raw::Sqlite(c) => diesel::sql_query(&sql)
            .bind::<Text, _>(name)
            .load::<Value>(c),
        #[cfg(feature = "postgres")]
        Raw::Pg(c) => diesel::sql_query(&sql)
            .bind::<Text, _>(name)
            .load::<Value>(c),
    })?;
    let stored = rows
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::Corrupt(format!("secret {name} was not stored")))?;
    let bytes = Zeroizing::new(
        STANDARD
            .decode(stored.value.trim())
            .map_err(|_| StoreError::Corrupt(format!("secret {name} is not base64")))?,
    );
    if bytes.len() != 32 {
        return Err(StoreError::Corrupt(format!(
            "secret {name} is not 32 bytes"
        )));
    }
    Ok(bytes)
}
