//! The pid file of a running `serve`, in the service's state directory: `nestflux reload`
//! signals the pid in it, and commands that must not run beside a server (a restore) can
//! ask whether one is running.
//!
//! Where it lives (the same place as the development key): beside the SQLite database,
//! `<database file>.pid` (e.g. `data/nestflux.db.pid`); for PostgreSQL, `nestflux.pid` beside
//! the configuration file. `serve` writes it when it starts listening (unless a running
//! server already holds it) and removes it when it stops; a file left by a server that was
//! killed is stale, and is reported as such, never signalled.

use std::path::{Path, PathBuf};

use crate::plan::data::{DatabasePlan, DatabaseUrl};

/// Name of the pid file beside a PostgreSQL service's config file.
pub const POSTGRES_PID_FILE: &str = "nestflux.pid";

/// Where the pid file of the server using `db` (configured in the file at `config`) lives.
pub fn path(db: &DatabasePlan, config: &Path) -> PathBuf {
    match &db.url {
        DatabaseUrl::Sqlite(file) => {
            let mut name = file.as_os_str().to_os_string();
            name.push(".pid");
            PathBuf::from(name)
        }
        DatabaseUrl::Postgres(_) => config
            .parent()
            .unwrap_or(Path::new("."))
            .join(POSTGRES_PID_FILE),
    }
}

/// Why there is no server to talk to.
#[derive(Debug, thiserror::Error)]
pub enum PidError {
    /// No pid file: no server was started on this state (or it stopped cleanly).
    #[error("no server is running: {} does not exist", .0.display())]
    Missing(PathBuf),
    /// The pid file names a process that is gone (a server that was killed).
    #[error(
        "no server is running: {file} names pid {pid}, which is not running (a stale file left by a server that was killed; remove it)",
        file = .0.display(), pid = .1
    )]
    Stale(PathBuf, i32),
    /// The pid file could not be read or does not hold a pid.
    #[error("{file}: {why}", file = .0.display(), why = .1)]
    Unreadable(PathBuf, String),
    /// The signal could not be sent.
    #[error("cannot signal pid {0}: {1}")]
    Signal(i32, String),
}

/// The pid of the server running on this state.
pub fn running(file: &Path) -> Result<i32, PidError> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(PidError::Missing(file.into()));
        }
        Err(e) => return Err(PidError::Unreadable(file.into(), e.to_string())),
    };
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|_| PidError::Unreadable(file.into(), "does not hold a pid".into()))?;
    match rustix::process::Pid::from_raw(pid) {
        Some(p) if alive(p) => Ok(pid),
        _ => Err(PidError::Stale(file.into(), pid)),
    }
}

fn alive(pid: rustix::process::Pid) -> bool {
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        // It exists, under another user.
        Err(e) => e == rustix::io::Errno::PERM,
    }
}

/// Sends SIGHUP to the server running on this state; returns its pid.
pub fn signal_reload(file: &Path) -> Result<i32, PidError> {
    let pid = running(file)?;
    let target = rustix::process::Pid::from_raw(pid).ok_or(PidError::Stale(file.into(), pid))?;
    rustix::process::kill_process(target, rustix::process::Signal::HUP)
        .map_err(|e| PidError::Signal(pid, e.to_string()))?;
    Ok(pid)
}

/// This process's claim on the pid file; dropping it removes the file (if it still holds
/// this process's pid).
#[derive(Debug)]
pub struct Claim {
    file: PathBuf,
    pid: u32,
}

/// Writes this process's pid into `file`, unless a running server already holds it
/// (`Ok(None)`: that server keeps receiving `nestflux reload`). A stale file is replaced.
pub fn claim(file: &Path) -> std::io::Result<Option<Claim>> {
    if let Ok(other) = running(file) {
        tracing::warn!(
            pid_file = %file.display(),
            other_pid = other,
            "another server running on this state holds the pid file: `nestflux reload` signals that one"
        );
        return Ok(None);
    }
    let pid = std::process::id();
    // Written whole under another name, then renamed: a reader never sees half a pid. The
    // name is this process's own: two servers started at once on one state directory (two
    // instances on one PostgreSQL) must not rename each other's file away.
    let mut tmp = file.as_os_str().to_os_string();
    tmp.push(format!(".{pid}.tmp"));
    std::fs::write(&tmp, format!("{pid}\n"))?;
    std::fs::rename(&tmp, file)?;
    Ok(Some(Claim {
        file: file.into(),
        pid,
    }))
}

impl Drop for Claim {
    fn drop(&mut self) {
        let ours =
            std::fs::read_to_string(&self.file).is_ok_and(|t| t.trim() == self.pid.to_string());
        if ours {
            let _ = std::fs::remove_file(&self.file);
        }
    }
}
