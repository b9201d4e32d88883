//! `[backup] every/keep/dir`: the running server takes a backup when one is due — on start
//! when the newest in `dir` is older than `every` (or there is none), then every `every` —
//! through the same code as `nestflux backup`, then deletes all but the newest `keep`.
//! Only files this schedule named (`nestflux-<time>.db` and their manifests) are ever
//! deleted. Each run is logged and recorded in the audit log.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::audit::sink::AuditSink;
use crate::crypto::KeyRing;
use crate::plan::Plan;
use crate::plan::backup::SchedulePlan;

const PREFIX: &str = "nestflux-";
const SUFFIX: &str = ".db";

/// Starts the backup thread of a serving process.
pub fn start(plan: Arc<Plan>, schedule: SchedulePlan, audit: AuditSink) -> std::io::Result<()> {
    let ring = plan.encryption.ring.clone();
    std::thread::Builder::new()
        .name("nestflux-backup".into())
        .spawn(move || run(&plan, ring.as_deref(), &schedule, &audit))
        .map(|_| ())
}

fn run(plan: &Plan, ring: Option<&KeyRing>, schedule: &SchedulePlan, audit: &AuditSink) {
    let mut failed_at: Option<Instant> = None;
    loop {
        let mut wait = match newest(&schedule.dir).and_then(|t| t.elapsed().ok()) {
            Some(age) => schedule.every.saturating_sub(age),
            None => Duration::ZERO,
        };
        // A failed run is retried a full interval later, not in a tight loop: the log and
        // the audit log say it failed.
        if let Some(at) = failed_at {
            wait = wait.max(schedule.every.saturating_sub(at.elapsed()));
        }
        std::thread::sleep(wait);
        failed_at = (!take(plan, ring, schedule, audit)).then(Instant::now);
    }
}

/// One scheduled backup, then the rotation; whether the backup was taken.
pub fn take(
    plan: &Plan,
    ring: Option<&KeyRing>,
    schedule: &SchedulePlan,
    audit: &AuditSink,
) -> bool {
    let stamp = humantime::format_rfc3339_micros(SystemTime::now())
        .to_string()
        .replace(['-', ':'], "");
    let file = schedule.dir.join(format!("{PREFIX}{stamp}{SUFFIX}"));
    match super::backup(plan, ring, &file) {
        Ok(taken) => {
            let rows: u64 = taken.manifest.row_counts.values().sum();
            tracing::info!(
                target: "nestflux::backup",
                file = %taken.file.display(),
                sha256 = %taken.manifest.sha256,
                bytes = taken.manifest.bytes,
                rows,
                "scheduled backup taken"
            );
            for p in &taken.key_problems {
                tracing::warn!(target: "nestflux::backup", "{p}");
            }
            audit.offer(taken.event("-"));
            rotate(&schedule.dir, schedule.keep);
            true
        }
        Err(e) => {
            tracing::error!(target: "nestflux::backup", error = %e, "scheduled backup failed");
            audit.offer(
                crate::audit::Event::now("-", "backup.taken", "failed")
                    .details(&serde_json::json!({ "file": file.display().to_string() })),
            );
            false
        }
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}

/// The scheduled backups in `dir`, oldest first (their names sort by time).
fn scheduled(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = file_name(p);
            name.starts_with(PREFIX) && name.ends_with(SUFFIX) && p.is_file()
        })
        .collect();
    out.sort();
    out
}

/// When the newest scheduled backup was written.
fn newest(dir: &Path) -> Option<SystemTime> {
    scheduled(dir)
        .last()
        .and_then(|p| std::fs::metadata(p).ok())
        .and_then(|m| m.modified().ok())
}

/// Deletes all but the newest `keep` scheduled backups (each with its manifest).
fn rotate(dir: &Path, keep: usize) {
    let all = scheduled(dir);
    let extra = all.len().saturating_sub(keep);
    for old in &all[..extra] {
        for f in [old.clone(), super::manifest::path_of(old)] {
            match std::fs::remove_file(&f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(
                    target: "nestflux::backup",
                    file = %f.display(),
                    error = %e,
                    "could not delete an old backup"
                ),
            }
        }
        tracing::info!(target: "nestflux::backup", file = %old.display(), "old backup deleted (keep = {keep})");
    }
}
