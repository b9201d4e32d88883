//! The development encryption key: outside production, when `NESTFLUX_ENCRYPTION__KEYS` is
//! unset, one key is created on first start and kept in a file (mode 0600) beside the
//! database, so a first run needs no setup. The file holds one ring entry (`devXXXXXXXX:
//! base64`), so it can be listed after a real key to rotate away from it:
//! `NESTFLUX_ENCRYPTION__KEYS="$(nestflux keys generate),$(cat nestflux.db.dev-key)"`.
//!
//! Creation is atomic: the key is written and synced under a temporary name, then linked to
//! the final name, which fails if the name exists (like `O_EXCL`). Two processes starting at
//! once therefore agree on one key, and no process ever reads a half-written file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use zeroize::Zeroizing;

use super::{KeyRing, generate_key};

/// The development key, as loaded.
#[derive(Debug)]
pub struct DevKey {
    /// The ring holding the one key.
    pub ring: KeyRing,
    /// Created by this call (not found on disk).
    pub created: bool,
    /// The file is readable or writable by other users than its owner.
    pub too_open: bool,
}

/// Why the development key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum DevKeyError {
    /// The file could not be read, written or linked.
    #[error("{path}: {reason}")]
    Io {
        /// The key file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The file does not hold one `kid:base64` key of 32 bytes.
    #[error(
        "{path}: not a key written by nestflux (expected one `kid:base64` line); move it away to create a new one, or restore it"
    )]
    Unreadable {
        /// The key file.
        path: String,
    },
    /// No randomness for a new key.
    #[error("{0}")]
    Random(String),
}

/// Loads the key at `path`, or creates it once.
pub fn load_or_create(path: &Path) -> Result<DevKey, DevKeyError> {
    match read(path) {
        Ok(key) => return Ok(key),
        Err(ReadError::Missing) => {}
        Err(ReadError::Other(e)) => return Err(e),
    }
    let io = |e: io::Error| DevKeyError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io)?;
    }
    let text = Zeroizing::new(generate_key().map_err(|e| DevKeyError::Random(e.to_string()))?);
    let text = Zeroizing::new(format!("dev{}", text.strip_prefix('k').unwrap_or(&text)));
    let mut tmp_name = path.as_os_str().to_os_string();
    let mut suffix = [0u8; 6];
    getrandom::fill(&mut suffix).map_err(|e| DevKeyError::Random(e.to_string()))?;
    tmp_name.push(format!(
        ".tmp-{}",
        suffix
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ));
    let tmp = Path::new(&tmp_name);
    let written = (|| {
        let mut f = create_private(tmp)?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()
    })();
    let linked = written.and_then(|()| fs::hard_link(tmp, path));
    let _ = fs::remove_file(tmp);
    match linked {
        Ok(()) => {
            sync_dir(path);
            let ring = KeyRing::parse(&text).map_err(|_| DevKeyError::Unreadable {
                path: path.display().to_string(),
            })?;
            Ok(DevKey {
                ring,
                created: true,
                too_open: false,
            })
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match read(path) {
            Ok(key) => Ok(key),
            Err(ReadError::Missing) => Err(io(e)),
            Err(ReadError::Other(e)) => Err(e),
        },
        Err(e) => Err(io(e)),
    }
}

/// Loads the key at `path` if it exists, never creating one (for tools that must change
/// nothing, like `restore`'s checks).
pub fn load_existing(path: &Path) -> Result<Option<DevKey>, DevKeyError> {
    match read(path) {
        Ok(key) => Ok(Some(key)),
        Err(ReadError::Missing) => Ok(None),
        Err(ReadError::Other(e)) => Err(e),
    }
}

enum ReadError {
    Missing,
    Other(DevKeyError),
}

fn read(path: &Path) -> Result<DevKey, ReadError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => Zeroizing::new(t),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ReadError::Missing),
        Err(e) => {
            return Err(ReadError::Other(DevKeyError::Io {
                path: path.display().to_string(),
                reason: e.to_string(),
            }));
        }
    };
    let unreadable = || {
        ReadError::Other(DevKeyError::Unreadable {
            path: path.display().to_string(),
        })
    };
    let line = text.trim();
    if line.contains(',') || line.lines().count() != 1 {
        return Err(unreadable());
    }
    let ring = KeyRing::parse(line).map_err(|_| unreadable())?;
    Ok(DevKey {
        ring,
        created: false,
        too_open: too_open(path),
    })
}

#[cfg(unix)]
fn create_private(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

#[cfg(unix)]
fn too_open(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
}

#[cfg(not(unix))]
fn too_open(_: &Path) -> bool {
    false
}

/// Makes the new name durable (best effort: not every platform can sync a directory).
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_private_and_agreed_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("nestflux.db.dev-key");
        let first = load_or_create(&path).unwrap();
        assert!(first.created && !first.too_open);
        let kid = first.ring.active_kid().to_string();
        assert!(kid.starts_with("dev"), "{kid}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let again = load_or_create(&path).unwrap();
        assert!(!again.created);
        assert_eq!(again.ring.active_kid(), kid);

        // Many threads racing on a fresh file all end up with the same key.
        let race = dir.path().join("race.dev-key");
        let kids: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| load_or_create(&race).unwrap().ring.active_kid().to_string()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(kids.iter().all(|k| *k == kids[0]), "{kids:?}");
        let leftovers = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".tmp-")
            })
            .count();
        assert_eq!(leftovers, 0);

        fs::write(&path, "not a key\n").unwrap();
        assert!(matches!(
            load_or_create(&path),
            Err(DevKeyError::Unreadable { .. })
        ));
    }
}
