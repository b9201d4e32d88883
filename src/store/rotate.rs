//! `nestflux keys rotate`: re-encrypts every encrypted value and blind index to the active
//! key, batch by batch (each batch one transaction), so a crash loses nothing and a rerun
//! resumes where it stopped.

use std::sync::Arc;

use serde_json::Value;

use super::crud::Resource;
use super::dialect::{Bind, Kind, json_row, pair, quote};
use super::table::index_column;
use super::{Conn, StoreError};
use crate::crypto::{Aad, CryptoError};

/// What rotation did to one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    /// The resource's name.
    pub resource: String,
    /// Rows rewritten to the active key by this run.
    pub rows: usize,
    /// Batches committed.
    pub batches: usize,
}

/// Rotates each resource with encrypted fields, calling `progress` after every committed
/// batch. Stops at the first row that does not decrypt (naming it and the key id) rather
/// than skipping it.
pub fn rotate_all(
    conn: &mut Conn,
    resources: &[Arc<Resource>],
    batch_size: usize,
    mut progress: impl FnMut(&Rotated),
) -> Result<Vec<Rotated>, StoreError> {
    let mut out = Vec::new();
    for res in resources.iter().filter(|r| r.table.has_encrypted()) {
        let mut done = Rotated {
            resource: res.table.name.clone(),
            rows: 0,
            batches: 0,
        };
        loop {
            let n = rotate_batch(res, conn, batch_size.max(1))?;
            if n == 0 {
                break;
            }
            done.rows += n;
            done.batches += 1;
            progress(&done);
        }
        out.push(done);
    }
    Ok(out)
}

/// Re-encrypts up to `limit` rows not yet wholly on the active key (values and blind
/// indexes) in one transaction; returns how many rows it rewrote (0: done). Values
/// stored before the field was declared encrypted (no `nf1:` prefix) are sealed too.
/// Idempotent: a rerun after a crash only sees the rows still stale.
fn rotate_batch(res: &Resource, conn: &mut Conn, limit: usize) -> Result<usize, StoreError> {
    if !res.table.has_encrypted() {
        return Ok(0);
    }
    let ring = res.ring()?;
    let value_prefix = format!("{}:{}:", crate::crypto::FORMAT, ring.active_kid());
    let index_prefix = format!("{}:", ring.active_kid());
    let mut binds = Vec::new();
    let mut stale = Vec::new();
    for f in res.table.encrypted() {
        let col = quote(f);
        binds.push(Bind::Text(Some(value_prefix.clone())));
        stale.push(format!(
            "({col} IS NOT NULL AND substr({col}, 1, {}) <> {})",
            value_prefix.len(),
            res.ph(binds.len(), Kind::Text)
        ));
    }
    for f in res.table.blind_indexed() {
        let (col, idx) = (quote(f), quote(&index_column(f)));
        binds.push(Bind::Text(Some(index_prefix.clone())));
        stale.push(format!(
            "({col} IS NOT NULL AND ({idx} IS NULL OR substr({idx}, 1, {}) <> {}))",
            index_prefix.len(),
            res.ph(binds.len(), Kind::Text)
        ));
        stale.push(format!("({col} IS NULL AND {idx} IS NOT NULL)"));
    }
    binds.push(Bind::Int(Some(limit as i64)));
    let mut exprs = vec![pair(res.pg(), "id", Kind::Text)];
    exprs.extend(res.table.encrypted().map(|f| pair(res.pg(), f, Kind::Text)));
    let object = json_row(res.pg(), &exprs);
    // FOR UPDATE: a PATCH landing between this read and the rewrite would otherwise be
    // overwritten with the old value (SQLite's BEGIN IMMEDIATE already excludes it).
    let sql = format!(
        "SELECT {object} AS j FROM {} WHERE {} ORDER BY {} LIMIT {}{}",
        quote(&res.table.name),
        stale.join(" OR "),
        quote("id"),
        res.ph(binds.len(), Kind::Int),
        if res.pg() { " FOR UPDATE" } else { "" }
    );
    conn.transaction(|c| {
        let rows = c.query_json(&sql, &binds)?;
        for text in &rows {
            let row: Value =
                serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let id = row.get("id").and_then(Value::as_str).unwrap_or_default();
            let mut sets = Vec::new();
            let mut up = Vec::new();
            for f in res.table.encrypted() {
                let Some(stored) = row.get(f).and_then(Value::as_str) else {
                    if res.table.is_blind_indexed(f) {
                        sets.push(format!("{} = NULL", quote(&index_column(f))));
                    }
                    continue;
                };
                let aad = Aad {
                    resource: &res.table.name,
                    field: f,
                    id,
                };
                let plain = match ring.open(&aad, stored) {
                    Ok(p) => p,
                    Err(CryptoError::Malformed) if crate::crypto::kid_of(stored).is_none() => {
                        stored.to_string()
                    }
                    Err(e) => return Err(res.crypto_error(f, id, e)),
                };
                up.push(Bind::Text(Some(
                    ring.seal(&aad, &plain)
                        .map_err(|e| res.crypto_error(f, id, e))?,
                )));
                sets.push(format!("{} = {}", quote(f), res.ph(up.len(), Kind::Text)));
                if res.table.is_blind_indexed(f) {
                    up.push(Bind::Text(Some(ring.blind_index(
                        &res.table.name,
                        f,
                        &plain,
                    ))));
                    sets.push(format!(
                        "{} = {}",
                        quote(&index_column(f)),
                        res.ph(up.len(), Kind::Text)
                    ));
                }
            }
            if sets.is_empty() {
                continue;
            }
            up.push(Bind::Text(Some(id.to_string())));
            let sql = format!(
                "UPDATE {} SET {} WHERE {} = {}",
                quote(&res.table.name),
                sets.join(", "),
                quote("id"),
                res.ph(up.len(), Kind::Text)
            );
            c.execute(&sql, &up)?;
        }
        Ok(rows.len())
    })
}
