//! The data directory is private to the account berth runs as: it holds the database (with
//! the key that signs bearer tokens) and every blob of every private repository. Folders are
//! 0700 and files 0600 whatever the umask; an existing directory whose modes let others in is
//! repaired at start-up, with a warning naming what was changed.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const DIR_MODE: u32 = 0o700;
pub const FILE_MODE: u32 = 0o600;

/// Limit what the process creates from now on to its owner (files 0600, folders 0700), for
/// everything that does not set a mode itself: SQLite's files, the ACME cache.
pub fn owner_only_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Create `dir` (and its parents that are missing) with mode 0700.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

/// Options for a new file of the data directory: mode 0600 whatever the umask.
pub fn file_options() -> fs::OpenOptions {
    let mut o = fs::OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// Make the data directory owner-only: create it 0700 if missing, and take away every group
/// and other permission from it and everything in it. Returns the paths that were repaired.
/// Symbolic links below it are neither followed nor changed. A file that vanishes during the walk (an
/// upload finished by a running server) is skipped. A regular file with more than one link is
/// left as it is: a blob that `berth import` hard-linked shares its inode (and mode) with the
/// registry it came from, which is never changed; the 0700 folders above keep it private here.
pub fn secure_data_dir(root: &Path) -> io::Result<Vec<PathBuf>> {
    create_dir(root)?;
    // The data directory itself may be a link (/var/lib/berth -> /srv/berth): follow it. It is
    // repaired first, so once the walk goes below it no other account can enter it any more
    // and swap an entry for a link between the check and the change of mode.
    let root = fs::canonicalize(root)?;
    let mut repaired = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(path) = stack.pop() {
        let meta = match gone_is_none(fs::symlink_metadata(&path))? {
            Some(m) if !m.file_type().is_symlink() => m,
            _ => continue,
        };
        let mode = meta.permissions().mode() & 0o7777;
        let shared = meta.is_file() && std::os::unix::fs::MetadataExt::nlink(&meta) > 1;
        if mode & 0o077 != 0
            && !shared
            && gone_is_none(fs::set_permissions(
                &path,
                fs::Permissions::from_mode(mode & 0o700),
            ))?
            .is_some()
        {
            repaired.push(path.clone());
        }
        if meta.is_dir() {
            let Some(entries) = gone_is_none(fs::read_dir(&path))? else {
                continue;
            };
            for entry in entries {
                stack.push(entry?.path());
            }
        }
    }
    Ok(repaired)
}

fn gone_is_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The exclusive lock of a running server on its data directory (`berth.lock`, holding the
/// server's pid). The kernel drops it when the process ends, however it ends.
pub struct DirLock {
    _file: fs::File,
}

/// Why the data directory could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it (the text names it).
    #[error("{0}")]
    Held(String),
    #[error("{0}")]
    Failed(String),
}

/// Take the data directory for this process (creating it 0700 if needed), or say which
/// process has it.
pub fn lock_data_dir(data: &super::DataDir) -> Result<DirLock, LockError> {
    use std::io::{Read, Seek, Write};
    let root = data.root();
    let at = |e: io::Error| {
        LockError::Failed(format!(
            "cannot lock the data directory {}: {e}",
            root.display()
        ))
    };
    create_dir(root).map_err(at)?;
    let path = data.lock_file();
    let mut file = file_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(at)?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            let who = if pid.is_empty() {
                String::new()
            } else {
                format!(" (pid {pid})")
            };
            return Err(LockError::Held(format!(
                "another berth server or command is using the data directory {}{who}; stop it first, or give this one another --data-dir",
                root.display()
            )));
        }
        Err(e) => return Err(at(e.into())),
    }
    let mut write_pid = || -> io::Result<()> {
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())
    };
    write_pid().map_err(at)?;
    Ok(DirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repairs_modes_and_creates_private_folders() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("data");
        create_dir(&root.join("blobs/sha256/ab")).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        let f = root.join("blobs/sha256/ab/abcd");
        fs::write(&f, b"x").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        let mut repaired = secure_data_dir(&root).unwrap();
        repaired.sort();
        let canon = |p: &Path| fs::canonicalize(p).unwrap();
        assert_eq!(repaired, vec![canon(&root), canon(&f)]);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("blobs/sha256/ab")), 0o700);
        assert_eq!(mode(&f), 0o600);
        assert!(secure_data_dir(&root).unwrap().is_empty());
        // Through a link to the data directory, the directory itself is repaired.
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&root, &link).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(secure_data_dir(&link).unwrap(), vec![canon(&root)]);
        assert_eq!(mode(&root), 0o700);
    }
}
