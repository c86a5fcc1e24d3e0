//! Every path under the data directory, in one place: nothing else in berth joins a file name
//! onto the data directory.

use std::path::{Path, PathBuf};

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
