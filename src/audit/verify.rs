//! `nestflux audit verify`: walks the chain from its first row to its head and names the
//! first row that breaks it (a changed field, a missing or reordered row, a start without
//! its prune anchor).

use super::chain::{GENESIS, Row};
use crate::store::{Conn, StoreError, audit};

/// Rows read per query.
const PAGE: usize = 1000;

/// What a walk found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every row links to the one before and its hash holds.
    Valid {
        /// Rows checked.
        rows: u64,
        /// The first row's seq (1, or the row after a prune), if any row exists.
        first: Option<i64>,
        /// The head's seq.
        head: Option<i64>,
    },
    /// The first row that breaks the chain.
    Broken {
        /// Its seq.
        seq: i64,
        /// Why.
        why: String,
    },
}

/// Walks the whole chain.
pub fn verify(conn: &mut Conn) -> Result<Verdict, StoreError> {
    let mut prev: Option<Row> = None;
    let mut first = None;
    let mut count = 0u64;
    let mut after = i64::MIN;
    loop {
        let page = audit::walk(conn, after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for row in page {
            count += 1;
            if let Some(why) = link(conn, prev.as_ref(), &row)? {
                return Ok(Verdict::Broken { seq: row.seq, why });
            }
            if !row.hash_holds() {
                return Ok(Verdict::Broken {
                    seq: row.seq,
                    why: "its hash does not match its fields (the row was changed)".into(),
                });
            }
            first.get_or_insert(row.seq);
            prev = Some(row);
        }
    }
    Ok(Verdict::Valid {
        rows: count,
        first,
        head: prev.map(|r| r.seq),
    })
}

/// Why `row` does not follow `prev` (`None` before the first row), if it does not.
fn link(conn: &mut Conn, prev: Option<&Row>, row: &Row) -> Result<Option<String>, StoreError> {
    Ok(match prev {
        Some(p) if row.seq != p.seq + 1 => Some(format!(
            "it follows row {}: row {} is missing",
            p.seq,
            p.seq + 1
        )),
        Some(p) if row.prev_hash != p.hash => Some(format!(
            "its prev_hash is not row {}'s hash (a row was changed, replaced or reordered)",
            p.seq
        )),
        Some(_) => None,
        None if row.seq == 1 => {
            (row.prev_hash != GENESIS).then(|| "the first row does not start the chain".into())
        }
        None => {
            let anchor = audit::anchor_for(conn, row.seq - 1)?;
            let anchored = anchor.as_ref().and_then(|a| {
                serde_json::from_str::<serde_json::Value>(&a.event.details)
                    .ok()
                    .and_then(|d| d["last_pruned_hash"].as_str().map(str::to_string))
            });
            match anchored {
                Some(h) if h == row.prev_hash => None,
                Some(_) => Some(format!(
                    "its prev_hash is not the hash the prune anchor recorded for row {}",
                    row.seq - 1
                )),
                None => Some(format!(
                    "rows before it are gone and no prune anchor records row {}",
                    row.seq - 1
                )),
            }
        }
    })
}
