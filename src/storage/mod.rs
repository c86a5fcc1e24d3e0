//! Bytes on disk: upload staging, the blob store, and the layout of the data directory. The
//! only module that builds a path under the data directory (`DataDir`).
//!
//! Layering: called by `core` (and by start-up code for `DataDir` and `secure`); uses only
//! `oci` types. Layout:
//!
//! ```text
//! <data-dir>/
//!   berth.db                      SQLite metadata (owned by db/)
//!   berth.lock                    the running server's lock
//!   blobs/<alg>/<hex[0..2]>/<hex> finished, verified blobs, named by digest (FsStore)
//!   uploads/<upload-id>           bytes of an upload session in progress (Staging)
//!   acme/                         ACME account and certificates (tls::acme)
//! ```
//!
//! Two halves with a narrow seam between them. `Staging` holds uploads in progress as local
//! files, whatever the blob store is. `BlobStore` is everything berth asks of the place
//! finished blobs live: stat, open a range, commit a staged file, delete, list. `FsStore` is
//! its first implementation; `tests/it/store_contract.rs` states the contract every
//! implementation must pass.

mod data_dir;
mod fs;
mod reader;
pub mod secure;
mod staging;
mod writer;

use std::io;

use futures_util::future::BoxFuture;

use crate::oci::Digest;

pub use data_dir::DataDir;
pub use fs::FsStore;
pub use reader::BlobStream;
pub use staging::{Adopted, AppendError, Progress, Staged, StagedFile, Staging, open_regular};
pub use writer::Writeback;

/// Whether finished writes are forced to the disk before they are acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sync {
    /// fsync files and directories: an acknowledged blob survives a power loss.
    Always,
    /// Leave it to the kernel: an acknowledged blob survives a crash of berth only.
    Never,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store holds no blob of that digest.
    #[error("blob not found")]
    NotFound,
    #[error(transparent)]
    Io(#[from] io::Error),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A blob found by `BlobStore::list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub digest: Digest,
    pub size: u64,
    /// When the blob was stored, in Unix seconds.
    pub modified: i64,
}

/// Where finished blobs live. Blobs are immutable and named by their digest; whether a blob
/// *exists* for clients is the database's answer, never the store's (the store may hold
/// orphans that garbage collection has not removed yet).
pub trait BlobStore: Send + std::marker::Sync + 'static {
    /// The size of a blob; `NotFound` if the store does not hold it.
    fn stat<'a>(&'a self, d: &'a Digest) -> BoxFuture<'a, Result<u64>>;

    /// `len` bytes of a blob from `start`. A missing blob is `NotFound` here, before any
    /// byte; a range past the blob's end is an error, never a short body.
    fn open<'a>(&'a self, d: &'a Digest, start: u64, len: u64)
    -> BoxFuture<'a, Result<BlobStream>>;

    /// Store a staged upload (verified by the caller to hash to `d`) as blob `d`, durably
    /// under `Sync::Always` once this returns. The staged file is consumed. Committing a
    /// digest the store holds already is success and keeps one copy.
    fn commit<'a>(&'a self, staged: Staged, d: &'a Digest) -> BoxFuture<'a, Result<()>>;

    /// Remove a blob; returns the bytes freed, `NotFound` if it was not there.
    fn delete<'a>(&'a self, d: &'a Digest) -> BoxFuture<'a, Result<u64>>;

    /// Up to `limit` blobs in digest order, starting after `after`: pages over the whole
    /// store with bounded memory.
    fn list<'a>(
        &'a self,
        after: Option<&'a Digest>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Listed>>>;
}

fn unix_seconds(meta: &std::fs::Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt as _;
    meta.mtime()
}
