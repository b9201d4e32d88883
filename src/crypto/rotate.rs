//! `nestflux keys rotate`: re-encrypts every encrypted value and blind index to the active
//! key, batch by batch (each batch one transaction), so a crash loses nothing and a rerun
//! resumes where it stopped.

use std::sync::Arc;

use crate::store::crud::Resource;
use crate::store::{Conn, StoreError};

/// What rotation did to one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    pub resource: String,
    /// Rows rewritten to the active key by this run.
    pub rows: usize,
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
    for res in resources.iter().filter(|r| !r.table.encrypted.is_empty()) {
        let mut done = Rotated {
            resource: res.table.name.clone(),
            rows: 0,
            batches: 0,
        };
        loop {
            let n = res.rotate_batch(conn, batch_size.max(1))?;
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
