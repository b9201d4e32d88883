//! `[backup]`: scheduled backups taken by the running server — how often, how many kept,
//! where — checked before anything serves: the interval at least a minute, at least one
//! kept, an SQLite database, and a directory that exists and takes a new file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::data::{DatabasePlan, DatabaseUrl};
use super::diag::Diagnostics;
use crate::config::RawConfig;

/// The shortest interval accepted: each backup copies the whole database.
pub const MIN_EVERY: Duration = Duration::from_secs(60);

/// Scheduled backups kept when `keep` is not given.
pub const DEFAULT_KEEP: usize = 14;

/// The most scheduled backups `keep` may ask for.
pub const MAX_KEEP: u32 = 10_000;

/// `[backup]`, checked.
#[derive(Debug, Clone)]
pub struct SchedulePlan {
    /// Time between backups.
    pub every: Duration,
    /// The newest scheduled backups kept; older ones are deleted.
    pub keep: usize,
    /// Where they go.
    pub dir: PathBuf,
}

/// Compiles `[backup]`; `None` when the section is absent.
pub fn compile_backup(
    raw: &RawConfig,
    database: &DatabasePlan,
    d: &mut Diagnostics,
) -> Option<SchedulePlan> {
    let b = raw.backup.as_ref()?;
    if matches!(database.url, DatabaseUrl::Postgres(_)) {
        d.error(
            "backup",
            "scheduled backups copy an SQLite database; back PostgreSQL up with pg_dump (remove [backup])",
        );
    }
    let every = match b.every.as_deref().map(super::units::duration) {
        None => {
            d.error(
                "backup.every",
                "required: how often to back up, e.g. \"6h\"",
            );
            MIN_EVERY
        }
        Some(Ok(t)) if t >= MIN_EVERY => t,
        Some(Ok(_)) => {
            d.error("backup.every", "must be at least 1m");
            MIN_EVERY
        }
        Some(Err(e)) => {
            d.error("backup.every", e);
            MIN_EVERY
        }
    };
    let keep = match b.keep {
        None => DEFAULT_KEEP,
        Some(n) if (1..=MAX_KEEP).contains(&n) => n as usize,
        Some(_) => {
            d.error(
                "backup.keep",
                format!("must be between 1 and {MAX_KEEP}: the newest backups kept"),
            );
            DEFAULT_KEEP
        }
    };
    let dir = match b.dir.as_deref() {
        None | Some("") => {
            d.error(
                "backup.dir",
                "required: the directory backups go to, e.g. \"backups\"",
            );
            PathBuf::from(".")
        }
        Some(text) => {
            let dir = PathBuf::from(text);
            if let Err(e) = writable(&dir) {
                d.error("backup.dir", e);
            }
            dir
        }
    };
    Some(SchedulePlan { every, keep, dir })
}

/// Whether `dir` is a directory this process can create files in: a probe file is created
/// and removed, the only test that agrees with the file system (permissions, ACLs, a
/// read-only mount, root).
fn writable(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err("is not a directory".into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(
                "does not exist: create it (readable by the service user only, e.g. mode 0700)"
                    .into(),
            );
        }
        Err(e) => return Err(format!("cannot be read: {e}")),
    }
    let mut suffix = [0u8; 6];
    getrandom::fill(&mut suffix).map_err(|e| format!("no randomness: {e}"))?;
    let name: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let probe = dir.join(format!(".nestflux-write-probe-{name}"));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(format!("is not writable: {e}")),
    }
}
