//! The development issuer's signing keys in `nestflux_dev_keys`: read newest first, and
//! stored once. What the key is and how it signs belongs to `auth::dev`.

use diesel::prelude::*;
use diesel::sql_types::Text;

use super::conn::Raw;
use super::dialect::{Bind, Kind, placeholder};
use super::{Conn, StoreError, now};

/// One stored key: its id and its PKCS#8 PEM.
#[derive(QueryableByName)]
pub struct StoredKey {
    /// The key id (`kid` of the tokens it signs).
    #[diesel(sql_type = Text)]
    pub kid: String,
    /// The private key as PKCS#8 PEM.
    #[diesel(sql_type = Text)]
    pub private_pem: String,
}

/// Every stored key, newest first.
pub fn load(conn: &mut Conn) -> Result<Vec<StoredKey>, StoreError> {
    let sql = "SELECT kid, private_pem FROM nestflux_dev_keys ORDER BY created_at DESC, kid";
    conn.with_raw(|raw| match raw {
        Raw::Sqlite(c) => diesel::sql_query(sql).load::<StoredKey>(c),
        #[cfg(feature = "postgres")]
        Raw::Pg(c) => diesel::sql_query(sql).load::<StoredKey>(c),
    })
}

/// Stores a new key, stamped now.
pub fn insert(conn: &mut Conn, kid: &str, private_pem: &str) -> Result<(), StoreError> {
    let pg = conn.is_postgres();
    let ph = |n: usize| placeholder(pg, n, Kind::Text);
    conn.execute(
        &format!(
            "INSERT INTO nestflux_dev_keys (kid, private_pem, created_at) VALUES ({}, {}, {})",
            ph(1),
            ph(2),
            ph(3)
        ),
        &[
            Bind::Text(Some(kid.to_string())),
            Bind::Text(Some(private_pem.to_string())),
            Bind::Text(Some(now())),
        ],
    )?;
    Ok(())
}
