//! Whether a key ring reads what a database holds: for every encrypted column of every
//! declared resource, the key ids its values name, and a few values per key id actually
//! decrypted (with their row's associated data), so a ring with the right ids but the wrong
//! key material is caught too.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::crypto::{Aad, FORMAT, KeyRing};
use crate::store::dialect::{Bind, Kind, json_row, pair, placeholder, quote};
use crate::store::table::Table;
use crate::store::{Conn, StoreError};

/// Values decrypted per key id and column.
pub const SAMPLE: usize = 3;

/// What the check found.
#[derive(Debug, Default)]
pub struct KeyReport {
    /// Every key id a stored value names.
    pub needed: BTreeSet<String>,
    /// Values decrypted successfully.
    pub decrypted: usize,
    /// Each way the ring falls short (empty: it reads everything sampled).
    pub problems: Vec<String>,
}

/// Checks `ring` against the encrypted columns of `tables` on `conn`. Tables or columns the
/// database does not have yet are skipped (nothing stored, nothing to read).
pub fn check(
    conn: &mut Conn,
    tables: &[Table],
    ring: Option<&KeyRing>,
) -> Result<KeyReport, StoreError> {
    let pg = conn.is_postgres();
    let mut report = KeyReport::default();
    for table in tables.iter().filter(|t| t.has_encrypted()) {
        let present: Vec<String> = conn
            .columns(&table.name)?
            .into_iter()
            .map(|c| c.name)
            .collect();
        for field in table.encrypted().filter(|f| present.iter().any(|c| c == f)) {
            for kid in kids(conn, pg, &table.name, field)? {
                report.needed.insert(kid.clone());
                let Some(ring) = ring else {
                    report.problems.push(format!(
                        "{}.{field}: values are sealed with key \"{kid}\", but no key ring is configured (NESTFLUX_ENCRYPTION__KEYS)",
                        table.name
                    ));
                    continue;
                };
                if !ring.kids().any(|k| k == kid) {
                    report.problems.push(format!(
                        "{}.{field}: values are sealed with key \"{kid}\", which the key ring lacks",
                        table.name
                    ));
                    continue;
                }
                for (id, stored) in sample(conn, pg, &table.name, field, &kid)? {
                    let aad = Aad {
                        resource: &table.name,
                        field,
                        id: &id,
                    };
                    match ring.open(&aad, &stored) {
                        Ok(_) => report.decrypted += 1,
                        Err(e) => {
                            report.problems.push(format!(
                                "{}.{field} of row {id}: {e} (is key \"{kid}\" the key it was sealed with?)",
                                table.name
                            ));
                            break;
                        }
                    }
                }
            }
        }
    }
    Ok(report)
}

/// The distinct key ids named by `nf1:` values of one column.
fn kids(conn: &mut Conn, pg: bool, table: &str, field: &str) -> Result<Vec<String>, StoreError> {
    let col = quote(field);
    let kid = if pg {
        format!("split_part({col}, ':', 2)")
    } else {
        format!("substr({col}, 5, instr(substr({col}, 5), ':') - 1)")
    };
    let sql = format!(
        "SELECT DISTINCT {} AS j FROM {} WHERE substr({col}, 1, 4) = {}",
        json_row(pg, &[format!("'kid', {kid}")]),
        quote(table),
        placeholder(pg, 1, Kind::Text),
    );
    let rows = conn.query_json(&sql, &[Bind::Text(Some(format!("{FORMAT}:")))])?;
    Ok(rows
        .iter()
        .filter_map(|t| serde_json::from_str::<Value>(t).ok())
        .filter_map(|v| v.get("kid").and_then(Value::as_str).map(str::to_string))
        .collect())
}

/// Up to [`SAMPLE`] (row id, stored value) pairs of one column sealed with `kid`.
fn sample(
    conn: &mut Conn,
    pg: bool,
    table: &str,
    field: &str,
    kid: &str,
) -> Result<Vec<(String, String)>, StoreError> {
    let col = quote(field);
    let prefix = format!("{FORMAT}:{kid}:");
    let sql = format!(
        "SELECT {} AS j FROM {} WHERE substr({col}, 1, {}) = {} ORDER BY {} LIMIT {}",
        json_row(
            pg,
            &[pair(pg, "id", Kind::Text), pair(pg, field, Kind::Text)]
        ),
        quote(table),
        prefix.len(),
        placeholder(pg, 1, Kind::Text),
        quote("id"),
        SAMPLE
    );
    let rows = conn.query_json(&sql, &[Bind::Text(Some(prefix))])?;
    Ok(rows
        .iter()
        .filter_map(|t| serde_json::from_str::<Value>(t).ok())
        .filter_map(|v| {
            let id = v.get("id")?.as_str()?.to_string();
            let stored = v.get(field)?.as_str()?.to_string();
            Some((id, stored))
        })
        .collect())
}
