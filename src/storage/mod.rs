//! Blob files: the only module that builds a path under the data directory's blob and upload
//! folders.
//!
//! Layering: called by `core`; uses only `oci` types. Layout:
//!
//! ```text
//! <data-dir>/
//!   berth.db                      SQLite metadata (owned by db/)
//!   blobs/<alg>/<hex[0..2]>/<hex> finished, verified blobs, named by digest, never rewritten
//!   uploads/<upload-id>           bytes of an upload session in progress
//! ```
//!
//! A blob reaches `blobs/` only by rename of a fully written, fsynced and verified upload
//! file, so a crash can never leave a partial file under a digest name.

mod reader;
pub mod secure;
mod writer;

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use crate::oci::{Digest, UploadId};

pub use reader::BlobStream;
pub use writer::{AppendError, Progress};

/// Whether finished writes are forced to the disk before they are acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sync {
    /// fsync files and directories: an acknowledged blob survives a power loss.
    Always,
    /// Leave it to the kernel: an acknowledged blob survives a crash of berth only.
    Never,
}

#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
    sync: Sync,
    /// Upload bytes received but not yet written, over all uploads at once (`writer`).
    budget: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Store {
    /// Open the store under `root`, creating its folders. Blocking; called at start-up.
    pub fn open(root: &Path, sync: Sync) -> io::Result<Store> {
        secure::create_dir(&root.join("blobs"))?;
        secure::create_dir(&root.join("uploads"))?;
        Ok(Store {
            root: root.to_path_buf(),
            sync,
            budget: std::sync::Arc::new(tokio::sync::Semaphore::new(writer::BUDGET_UNITS)),
        })
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(&d.hex()[..2])
            .join(d.hex())
    }

    fn upload_path(&self, id: &UploadId) -> PathBuf {
        self.root.join("uploads").join(id.as_str())
    }

    /// Create the empty file of a new upload session.
    pub async fn create_upload(&self, id: &UploadId) -> io::Result<()> {
        let path = self.upload_path(id);
        tokio::task::spawn_blocking(move || {
            secure::file_options()
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)
                .map(drop)
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Bytes received so far by an upload session, `None` if its file is gone.
    pub async fn upload_len(&self, id: &UploadId) -> io::Result<Option<u64>> {
        match tokio::fs::metadata(self.upload_path(id)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Hash an upload file from the start: how a session's state is rebuilt after a restart.
    pub async fn rehash(&self, id: &UploadId, alg: crate::oci::Algorithm) -> io::Result<Progress> {
        let path = self.upload_path(id);
        tokio::task::spawn_blocking(move || writer::rehash(&path, alg))
            .await
            .map_err(io::Error::other)?
    }

    /// Cut an upload file back to `len` bytes (a chunk that was refused).
    pub async fn truncate_upload(&self, id: &UploadId, len: u64) -> io::Result<()> {
        let path = self.upload_path(id);
        tokio::task::spawn_blocking(move || {
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)?
                .set_len(len)
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Forget an upload session's bytes.
    pub async fn delete_upload(&self, id: &UploadId) -> io::Result<()> {
        match tokio::fs::remove_file(self.upload_path(id)).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Move a verified upload into place as the blob `d`. If the blob exists already the
    /// upload file is simply dropped: same digest, same bytes.
    pub async fn commit_upload(&self, id: &UploadId, d: &Digest) -> io::Result<()> {
        let from = self.upload_path(id);
        let to = self.blob_path(d);
        let sync = self.sync;
        tokio::task::spawn_blocking(move || commit(&from, &to, sync))
            .await
            .map_err(io::Error::other)?
    }
}

fn commit(from: &Path, to: &Path, sync: Sync) -> io::Result<()> {
    let dir = to.parent().expect("blob paths have a parent");
    let alg_dir = dir.parent().expect("shard folders have a parent");
    if to.exists() {
        fs::remove_file(from)?;
    } else {
        secure::create_dir(dir)?;
        if sync == Sync::Always {
            File::open(from)?.sync_data()?;
        }
        fs::rename(from, to)?;
    }
    if sync == Sync::Always {
        // Also when the blob (or its folder) was just made by a concurrent upload of the
        // same bytes: the acknowledgement must not run ahead of that upload's fsyncs. On
        // folders with nothing new these cost next to nothing.
        sync_dir(dir)?;
        sync_dir(alg_dir)?;
        sync_dir(alg_dir.parent().expect("the algorithm folder has a parent"))?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
