//! `nestflux backup` and `nestflux restore`: a verified, consistent copy of the SQLite
//! database taken while `serve` runs, and a restore that changes nothing unless every check
//! passes and then swaps the copy in atomically. PostgreSQL is backed up with
//! `pg_dump`/`pg_restore`; on it both commands say how and still check the key ring.
//!
//! ```text
//! manifest   FILE.manifest.json: time, config hash, schema version, key ids, row counts, SHA-256
//! sqlite     VACUUM INTO, integrity_check, row counts, the exclusive lock that proves no server runs
//! keycheck   the key ring against a sample of every encrypted column
//! schedule   `[backup] every/keep/dir`: backups taken by the running server, rotated
//! ```
//!
//! Why `VACUUM INTO` and not SQLite's online backup API: the backup API needs `unsafe` FFI
//! (this crate forbids it: diesel does not expose it), and it restarts its copy whenever
//! another connection writes, so under a steady write load it may never finish. `VACUUM
//! INTO` is one read transaction: in WAL mode it sees exactly the transactions committed
//! before it began, the writer thread keeps committing meanwhile, and the copy comes out
//! compacted, in rollback-journal mode, one self-contained file.

pub mod keycheck;
pub mod manifest;
pub mod schedule;
pub mod sqlite;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::crypto::KeyRing;
use crate::plan::Plan;
use crate::plan::data::DatabaseUrl;
use crate::store::StoreError;
use manifest::Manifest;

/// Why a backup or restore did not happen. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A check failed; the message says which and what to do.
    #[error("{0}")]
    Refused(String),
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The database failed.
    #[error("{0}")]
    Store(#[from] StoreError),
}

fn io_error(path: &Path) -> impl Fn(io::Error) -> BackupError + '_ {
    move |e| BackupError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// A backup taken and verified.
#[derive(Debug)]
pub struct Taken {
    /// The copy.
    pub file: PathBuf,
    /// Its manifest (written beside it).
    pub manifest: Manifest,
    /// Ways the configured key ring falls short of the copy (the backup is kept: a copy
    /// is worth most when something is already wrong).
    pub key_problems: Vec<String>,
}

impl Taken {
    /// The `backup.taken` audit event of this copy, by `actor`: its file, SHA-256, size and
    /// the ids of the keys its encrypted values need.
    pub fn event(&self, actor: &str) -> crate::audit::Event {
        crate::audit::Event::now(actor, "backup.taken", "ok").details(&serde_json::json!({
            "file": self.file.display().to_string(),
            "sha256": self.manifest.sha256,
            "bytes": self.manifest.bytes,
            "key_ids": self.manifest.key_ids,
        }))
    }
}

/// Takes a backup of the SQLite database of `plan` into `dest`, which must not exist:
/// snapshot under a temporary name (mode 0600), verified, synced, renamed into place, then
/// the manifest beside it the same way.
pub fn backup(plan: &Plan, ring: Option<&KeyRing>, dest: &Path) -> Result<Taken, BackupError> {
    let DatabaseUrl::Sqlite(live) = &plan.database.url else {
        return Err(BackupError::Refused(
            "the database is PostgreSQL: use pg_dump".into(),
        ));
    };
    if !live.is_file() {
        return Err(BackupError::Refused(format!(
            "no database at {}: nothing to back up",
            live.display()
        )));
    }
    let dest = absolute(dest)?;
    if same_file(live, &dest) {
        return Err(BackupError::Refused(
            "the backup file is the database itself".into(),
        ));
    }
    for p in [dest.clone(), manifest::path_of(&dest)] {
        if p.exists() {
            return Err(BackupError::Refused(format!(
                "{} already exists: choose a new name (a backup never overwrites a file)",
                p.display()
            )));
        }
    }
    let created_at = crate::store::now();
    let tmp = Temp::create_beside(&dest)?;
    let mut source = sqlite::open(live, plan.database.busy_timeout)?;
    sqlite::snapshot(&mut source, tmp.path())?;
    drop(source);
    // `VACUUM INTO` writes a rollback-journal file; made sure of, so the copy is always one
    // self-contained file that opening never adds a `-wal` to.
    sqlite::open(tmp.path(), plan.database.busy_timeout)?.batch("PRAGMA journal_mode = DELETE;")?;
    tmp.sync()?;
    let checked = verify_copy(plan, ring, tmp.path())?;
    let (sha256, bytes) = hash_file(tmp.path())?;
    let file_name = dest
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let manifest = Manifest {
        format: manifest::FORMAT.into(),
        created_at,
        nestflux_version: env!("CARGO_PKG_VERSION").into(),
        database: "sqlite".into(),
        file: file_name,
        bytes,
        sha256,
        config_hash: plan.config_hash.clone(),
        schema_version: checked.schema_version,
        key_ids: checked.keys.needed.iter().cloned().collect(),
        row_counts: checked.row_counts,
        integrity_check: "ok".into(),
    };
    tmp.persist(&dest)?;
    let text = serde_json::to_string_pretty(&manifest)
        .map_err(|e| BackupError::Refused(format!("cannot render the manifest: {e}")))?;
    let manifest_path = manifest::path_of(&dest);
    let mtmp = Temp::create_beside(&manifest_path)?;
    mtmp.write_all(format!("{text}\n").as_bytes())?;
    mtmp.sync()?;
    mtmp.persist(&manifest_path)?;
    Ok(Taken {
        file: dest,
        manifest,
        key_problems: checked.keys.problems,
    })
}

/// What the checks of a copy found.
struct Checked {
    row_counts: std::collections::BTreeMap<String, u64>,
    schema_version: Option<String>,
    keys: keycheck::KeyReport,
}

/// Integrity, row counts, schema version and key ids of the copy at `path`, read-only.
fn verify_copy(plan: &Plan, ring: Option<&KeyRing>, path: &Path) -> Result<Checked, BackupError> {
    let mut conn = sqlite::open(path, plan.database.busy_timeout)?;
    conn.batch("PRAGMA query_only = ON;")?;
    if let Err(findings) = sqlite::integrity(&mut conn)? {
        return Err(BackupError::Refused(format!(
            "the copy fails PRAGMA integrity_check: {findings}"
        )));
    }
    let row_counts = sqlite::row_counts(&mut conn)?;
    let schema_version = sqlite::schema_version(&mut conn)?;
    let keys = keycheck::check(&mut conn, &crate::store::tables(plan), ring)?;
    Ok(Checked {
        row_counts,
        schema_version,
        keys,
    })
}

/// A restore done.
#[derive(Debug)]
pub struct Restored {
    /// The database now holding the copy.
    pub database: PathBuf,
    /// Where the database it replaced was kept (`None`: there was none).
    pub previous: Option<PathBuf>,
    /// The manifest checked.
    pub manifest: Manifest,
    /// Values decrypted by the key check.
    pub decrypted: usize,
}

/// Restores the backup `src` over the SQLite database of `plan`. Every check runs first,
/// on a private staged copy (hash against the manifest, integrity, row counts, schema
/// version, key ring); then the live database is locked (refused if any process has it
/// open), kept as `DB.pre-restore-<time>` (a hard link), and the staged copy renamed over
/// its name.
pub fn restore(plan: &Plan, ring: Option<&KeyRing>, src: &Path) -> Result<Restored, BackupError> {
    let DatabaseUrl::Sqlite(live) = &plan.database.url else {
        return Err(BackupError::Refused(
            "the database is PostgreSQL: use pg_restore".into(),
        ));
    };
    let refuse = |m: String| Err(BackupError::Refused(m));
    if !src.is_file() {
        return refuse(format!("{}: no such backup file", src.display()));
    }
    if same_file(live, src) {
        return refuse("the backup file is the database itself".into());
    }
    let manifest = Manifest::read_beside(src).map_err(BackupError::Refused)?;
    if manifest.database != "sqlite" {
        return refuse(format!(
            "the manifest describes a {} backup, not SQLite",
            manifest.database
        ));
    }
    let known = crate::store::sqlite_schema_version();
    if let (Some(theirs), Some(ours)) = (&manifest.schema_version, &known)
        && theirs > ours
    {
        return refuse(format!(
            "the backup's schema version {theirs} is newer than this nestflux knows ({ours}): restore it with the nestflux that made it (version {})",
            manifest.nestflux_version
        ));
    }
    let live = absolute(live)?;
    let dir = parent(&live);
    fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    // Staged beside the database, so the final rename stays within one file system.
    let staged = Temp::create_beside(&live)?;
    let (sha256, bytes) = copy_hashing(src, &staged)?;
    staged.sync()?;
    if sha256 != manifest.sha256 || bytes != manifest.bytes {
        return refuse(format!(
            "{} does not match its manifest (SHA-256 {}): it was changed or damaged after the backup",
            src.display(),
            if sha256 != manifest.sha256 {
                "differs"
            } else {
                "equal, size differs"
            }
        ));
    }
    // A backup is one rollback-journal file: a WAL-mode header would make SQLite look for
    // (and create) a `-wal` beside the staged copy, which the swap would leave behind.
    if !rollback_sqlite(staged.path())? {
        return refuse(format!(
            "{} is not a backup nestflux wrote (not a rollback-journal SQLite file)",
            src.display()
        ));
    }
    let checked = verify_copy(plan, ring, staged.path())?;
    if checked.schema_version != manifest.schema_version {
        return refuse("the copy's schema version differs from its manifest's".into());
    }
    if let (Some(theirs), Some(ours)) = (&checked.schema_version, &known)
        && theirs > ours
    {
        return refuse(format!(
            "the copy's schema version {theirs} is newer than this nestflux knows ({ours})"
        ));
    }
    if checked.row_counts != manifest.row_counts {
        return refuse("the copy's row counts differ from its manifest's".into());
    }
    let mut problems = checked.keys.problems;
    for kid in manifest
        .key_ids
        .iter()
        .filter(|k| !ring.is_some_and(|r| r.kids().any(|have| have == k.as_str())))
    {
        let line = format!("the backup needs key \"{kid}\", which the key ring lacks");
        if !problems.iter().any(|p| p.contains(&format!("\"{kid}\""))) {
            problems.push(line);
        }
    }
    if !problems.is_empty() {
        return refuse(format!(
            "the configured key ring cannot read the backup's encrypted fields:\n  {}\nset NESTFLUX_ENCRYPTION__KEYS to the keys the backup needs ({})",
            problems.join("\n  "),
            manifest.key_ids.join(", ")
        ));
    }
    // Every check passed: only now is the live database touched.
    let held = if live.exists() {
        match sqlite::take_exclusive(&live)? {
            Ok(conn) => Some(conn),
            Err(why) => return refuse(why),
        }
    } else {
        None
    };
    // The old file keeps a second name first (a hard link: at every instant the database's
    // name holds either the old file or the new one, never nothing), then the staged copy
    // is renamed over the name.
    let previous = if held.is_some() {
        let stamp = humantime::format_rfc3339_micros(std::time::SystemTime::now())
            .to_string()
            .replace(['-', ':'], "");
        let mut name = live.as_os_str().to_os_string();
        name.push(format!(".pre-restore-{stamp}"));
        let aside = PathBuf::from(name);
        match fs::hard_link(&live, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return refuse(format!("{} already exists", aside.display()));
            }
            // A file system without hard links: a copy instead, synced before the swap.
            Err(_) => {
                fs::copy(&live, &aside).map_err(io_error(&aside))?;
                File::open(&aside)
                    .and_then(|f| f.sync_all())
                    .map_err(io_error(&aside))?;
            }
        }
        sync_dir(&aside);
        Some(aside)
    } else {
        None
    };
    // The old file's WAL was folded into it (or it had none): any `-wal`, `-shm` or
    // `-journal` left under the live name is stale and would be read as the new file's.
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut name = live.as_os_str().to_os_string();
        name.push(suffix);
        match fs::remove_file(PathBuf::from(&name)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(Path::new(&name))(e)),
        }
    }
    staged.persist(&live)?;
    drop(held);
    Ok(Restored {
        database: live,
        previous,
        manifest,
        decrypted: checked.keys.decrypted,
    })
}

/// Appends `event` to the audit log of the plan's SQLite database (after a backup of it,
/// or a restore into it), as `nestflux keys rotate` records its runs. Fails on a database
/// older than the audit log.
pub fn record(plan: &Plan, event: crate::audit::Event) -> Result<(), BackupError> {
    let DatabaseUrl::Sqlite(live) = &plan.database.url else {
        return Ok(());
    };
    let mut conn = sqlite::open(live, plan.database.busy_timeout)?;
    let rows =
        conn.transaction(|c| crate::store::audit::append(c, std::slice::from_ref(&event)))?;
    crate::audit::sink::trace(&rows);
    Ok(())
}

/// PostgreSQL: the key ring checked against the database as it is now.
#[cfg(feature = "postgres")]
pub fn check_postgres(
    plan: &Plan,
    ring: Option<&KeyRing>,
) -> Result<keycheck::KeyReport, BackupError> {
    use diesel::Connection;
    let DatabaseUrl::Postgres(url) = &plan.database.url else {
        return Err(BackupError::Refused(
            "the database is not PostgreSQL".into(),
        ));
    };
    let conn = diesel::pg::PgConnection::establish(url)
        .map_err(|_| StoreError::Unavailable("cannot connect to PostgreSQL".into()))?;
    let mut conn = crate::store::Conn::Pg(crate::store::conn::Lease::Owned(conn));
    conn.batch("SET default_transaction_read_only = on")?;
    Ok(keycheck::check(
        &mut conn,
        &crate::store::tables(plan),
        ring,
    )?)
}

/// PostgreSQL in a build without it.
#[cfg(not(feature = "postgres"))]
pub fn check_postgres(_: &Plan, _: Option<&KeyRing>) -> Result<keycheck::KeyReport, BackupError> {
    Err(BackupError::Refused(
        "this build has no PostgreSQL support: rebuild with `--features postgres`".into(),
    ))
}

/// Whether `path` starts with SQLite's header and its read and write versions say
/// rollback journal (1), not WAL (2).
fn rollback_sqlite(path: &Path) -> Result<bool, BackupError> {
    let mut head = [0u8; 20];
    let mut f = File::open(path).map_err(io_error(path))?;
    if f.read_exact(&mut head).is_err() {
        return Ok(false);
    }
    Ok(&head[..16] == b"SQLite format 3\0" && head[18] == 1 && head[19] == 1)
}

/// `path` made absolute against the working directory (without resolving links).
fn absolute(path: &Path) -> Result<PathBuf, BackupError> {
    std::path::absolute(path).map_err(io_error(path))
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Whether two paths name one file (both must exist to be the same).
fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// `sha256:<hex>` and the size of a file.
pub fn hash_file(path: &Path) -> Result<(String, u64), BackupError> {
    let mut f = File::open(path).map_err(io_error(path))?;
    hash_reader(&mut f, None, path)
}

fn copy_hashing(src: &Path, to: &Temp) -> Result<(String, u64), BackupError> {
    let mut f = File::open(src).map_err(io_error(src))?;
    hash_reader(&mut f, Some(&to.file), src)
}

fn hash_reader(
    r: &mut impl Read,
    mut out: Option<&File>,
    path: &Path,
) -> Result<(String, u64), BackupError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).map_err(io_error(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if let Some(out) = out.as_mut() {
            out.write_all(&buf[..n]).map_err(io_error(path))?;
        }
        total += n as u64;
    }
    let mut hex = String::with_capacity(7 + 64);
    hex.push_str("sha256:");
    for b in hasher.finalize().iter() {
        hex.push_str(&format!("{b:02x}"));
    }
    Ok((hex, total))
}

/// A private file (mode 0600) under a random temporary name beside its final one, removed
/// on drop unless [`Temp::persist`] renamed it into place.
struct Temp {
    path: PathBuf,
    file: File,
    kept: bool,
}

impl Temp {
    fn create_beside(dest: &Path) -> Result<Self, BackupError> {
        let mut suffix = [0u8; 6];
        getrandom::fill(&mut suffix)
            .map_err(|e| BackupError::Refused(format!("no randomness: {e}")))?;
        let mut name = dest.as_os_str().to_os_string();
        name.push(".tmp-");
        for b in suffix {
            name.push(format!("{b:02x}"));
        }
        let path = PathBuf::from(name);
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(&path).map_err(io_error(&path))?;
        Ok(Self {
            path,
            file,
            kept: false,
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn write_all(&self, bytes: &[u8]) -> Result<(), BackupError> {
        (&self.file).write_all(bytes).map_err(io_error(&self.path))
    }

    /// Flushes what SQLite or this process wrote under the temporary name to the disk.
    fn sync(&self) -> Result<(), BackupError> {
        File::open(&self.path)
            .and_then(|f| f.sync_all())
            .and_then(|()| self.file.sync_all())
            .map_err(io_error(&self.path))
    }

    /// Renames it to `dest` and makes the new name durable.
    fn persist(mut self, dest: &Path) -> Result<(), BackupError> {
        fs::rename(&self.path, dest).map_err(io_error(dest))?;
        self.kept = true;
        sync_dir(dest);
        Ok(())
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.kept {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Makes a new name in `path`'s directory durable (best effort where directories cannot
/// be synced).
fn sync_dir(path: &Path) {
    if let Ok(d) = File::open(parent(path)) {
        let _ = d.sync_all();
    }
}
