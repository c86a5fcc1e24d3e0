//! Every path under the data directory, in one place: nothing else in berth joins a file name
//! onto the data directory.

use std::path::{Path, PathBuf};

const BACKUP_SNAPSHOT_PREFIX: &str = "backup-";

/// The data directory (`--data-dir`, `data_dir`). Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The SQLite database: users, tokens, repositories, manifests, blob records.
    pub fn database(&self) -> PathBuf {
        self.root.join("berth.db")
    }

    /// The database of a restore in progress, renamed to `database` once everything it
    /// records is in place (a server never opens a half-restored directory).
    pub fn restoring_database(&self) -> PathBuf {
        self.root.join("berth.db.restoring")
    }

    /// The database snapshot of a tar backup in progress (`id`: random hex), beside the
    /// upload files, which may be large too. Never an upload id.
    pub fn backup_snapshot(&self, id: &str) -> PathBuf {
        self.uploads()
            .join(format!("{BACKUP_SNAPSHOT_PREFIX}{id}.db"))
    }

    /// Snapshots that interrupted tar backups left, older than `age` seconds.
    pub fn stale_backup_snapshots(&self, age: u64) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.uploads()) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(BACKUP_SNAPSHOT_PREFIX) && n.ends_with(".db"))
            })
            .filter(|e| {
                e.metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|d| d.as_secs() > age)
            })
            .map(|e| e.path())
            .collect()
    }

    /// The running server's lock, holding its pid.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("berth.lock")
    }

    /// The running server's control socket (`berth gc` reaches the server through it).
    pub fn control_socket(&self) -> PathBuf {
        self.root.join("berth.sock")
    }

    /// Finished blobs, named by digest (the filesystem blob store).
    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs")
    }

    /// Upload sessions in progress, one file each.
    pub fn uploads(&self) -> PathBuf {
        self.root.join("uploads")
    }

    /// rustls-acme's cache: the ACME account key and certificates.
    pub fn acme(&self) -> PathBuf {
        self.root.join("acme")
    }

    /// The password generated for `admin` on the very first start.
    pub fn initial_admin_password(&self) -> PathBuf {
        self.root.join("initial-admin-password")
    }
}
