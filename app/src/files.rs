//! Files written atomically: the one way Convoy writes a file.
//!
//! A file is written into a temporary file beside it (a name no other writer uses), synced,
//! and renamed over the target, then the directory is synced: a crash or a power cut leaves the
//! old file or the new one, never half of one, and two writers never write into one temporary
//! file. A private file (a key, a password file) is created with mode 0600, so it is never
//! readable by others, not even for a moment.
//!
//! Deliberately not here: resumable downloads (`link/http/client.rs` keeps a `.part` file on
//! purpose, to resume it), and reading.

use anyhow::{Context, Result, bail};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Who may read a file Convoy writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileMode {
    /// 0600: private keys, passwords.
    OwnerOnly,
    /// The umask's default.
    Public,
}

/// A temporary name beside `path` that no other writer (thread or process) uses.
fn temporary(path: &Path, what: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{}.{n}.{what}", std::process::id()));
    PathBuf::from(name)
}

/// Writes what `write` produces to `path` atomically, with `mode`.
pub fn write_with(
    path: &Path,
    mode: FileMode,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    let tmp = temporary(path, "tmp");
    let result = write_into(&tmp, mode, write).and_then(|()| {
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    sync_parent(path);
    Ok(())
}

/// Writes `bytes` to `path` atomically, with `mode`.
pub fn write_file(path: &Path, bytes: &[u8], mode: FileMode) -> Result<()> {
    write_with(path, mode, |w| {
        w.write_all(bytes)?;
        Ok(())
    })
}

/// Like [`write_file`], but fails if `path` already exists, even when another process creates
/// it between our check and our write: the finished temporary file is hard-linked into place,
/// which, unlike a rename, never replaces an existing file.
pub fn write_new_file(path: &Path, bytes: &[u8], mode: FileMode) -> Result<()> {
    let tmp = temporary(path, "new");
    let written = write_into(&tmp, mode, |w| {
        w.write_all(bytes)?;
        Ok(())
    });
    let linked = written.map(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked? {
        Ok(()) => {
            sync_parent(path);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("{} exists already; it was not replaced", path.display())
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// Creates `tmp` (which must not exist) with `mode`, fills it and syncs it.
fn write_into(
    tmp: &Path,
    mode: FileMode,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if mode == FileMode::OwnerOnly {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let file = options
        .open(tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let mut out = BufWriter::new(file);
    write(&mut out).with_context(|| format!("writing {}", tmp.display()))?;
    let file = out
        .into_inner()
        .map_err(|e| anyhow::anyhow!("writing {}: {}", tmp.display(), e.error()))?;
    file.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))
}

/// Syncs the directory of `path`, so that the rename itself survives a power cut (best
/// effort: not every platform can open a directory).
fn sync_parent(path: &Path) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(dir) = std::fs::File::open(parent) {
        let _ = dir.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_whole_and_a_failed_write_leaves_the_old_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.json");
        write_file(&path, b"old", FileMode::Public).expect("write");
        let failed = write_with(&path, FileMode::Public, |w| {
            w.write_all(b"half of the new")?;
            bail!("the disk is full")
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&path).expect("read"), b"old");
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
        write_file(&path, b"new", FileMode::Public).expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
    }

    #[test]
    fn a_new_file_never_replaces_one_and_private_files_are_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        write_new_file(&path, b"secret", FileMode::OwnerOnly).expect("write");
        let err = write_new_file(&path, b"other", FileMode::OwnerOnly).expect_err("exists");
        assert!(format!("{err:#}").contains("exists already"), "{err:#}");
        assert_eq!(std::fs::read(&path).expect("read"), b"secret");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
