//! The manifest written beside every backup (`FILE.manifest.json`): what `restore` checks
//! before it touches anything — the copy's SHA-256, its schema version, the key ids its
//! encrypted values need, and its row counts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The manifest format this binary writes and reads.
pub const FORMAT: &str = "nestflux-backup/1";

/// One backup's manifest. Holds no secret: key ids, never keys; the config hash, never the
/// configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// When the copy was taken (RFC 3339 UTC): rows committed before then are in it.
    pub created_at: String,
    /// The nestflux version that took it.
    pub nestflux_version: String,
    /// `sqlite` (PostgreSQL is backed up with `pg_dump`).
    pub database: String,
    /// The copy's file name (beside this manifest).
    pub file: String,
    /// The copy's size in bytes.
    pub bytes: u64,
    /// `sha256:<hex>` of the copy.
    pub sha256: String,
    /// The config hash of the configuration that took it (`plan.config_hash`).
    pub config_hash: String,
    /// The newest internal migration applied to the copy.
    pub schema_version: Option<String>,
    /// Every key id an encrypted value in the copy names: the keys to keep with it.
    pub key_ids: Vec<String>,
    /// Rows per table in the copy.
    pub row_counts: BTreeMap<String, u64>,
    /// `PRAGMA integrity_check` of the copy: `ok`.
    pub integrity_check: String,
}

/// Where the manifest of backup `file` lives: `FILE.manifest.json`.
pub fn path_of(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_os_string();
    name.push(".manifest.json");
    PathBuf::from(name)
}

impl Manifest {
    /// Reads and parses the manifest beside `file`.
    pub fn read_beside(file: &Path) -> Result<Self, String> {
        let path = path_of(file);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "cannot read the manifest {}: {e} (every backup has one beside it)",
                path.display()
            )
        })?;
        let manifest: Self = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a nestflux backup manifest: {e}", path.display()))?;
        if manifest.format != FORMAT {
            return Err(format!(
                "{}: manifest format \"{}\" is not one this nestflux reads ({FORMAT})",
                path.display(),
                manifest.format
            ));
        }
        Ok(manifest)
    }
}
