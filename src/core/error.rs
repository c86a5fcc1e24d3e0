//! The domain error of `core`: what the registry's rules and storage refuse or fail at. The
//! HTTP layer maps it to the spec's codes in one place (`registry/error.rs`); request errors
//! that only the HTTP layer can see (a malformed path or query) are its own.

use crate::db::DbError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("repository name not known to registry")]
    NameUnknown,
    #[error("{0}")]
    DigestInvalid(String),
    #[error("blob unknown to registry")]
    BlobUnknown,
    #[error("blob upload unknown to registry")]
    UploadUnknown,
    #[error("{0}")]
    UploadInvalid(String),
    /// A chunk that does not start where the upload stands (`len` bytes received).
    #[error("chunk is out of order: the upload holds {len} bytes")]
    UploadRange { len: u64 },
    /// A blob `Range` request outside the blob.
    #[error("requested range not satisfiable")]
    BlobRange { size: u64 },
    #[error("{0}")]
    SizeInvalid(String),
    #[error("{0}")]
    ManifestInvalid(String),
    #[error("manifest unknown to registry")]
    ManifestUnknown,
    #[error("manifest references {0}, which is not in the repository")]
    ManifestBlobUnknown(String),
    /// The credential has `limits.max_upload_sessions` sessions open already.
    #[error(
        "{who} has {open} upload sessions open, the most one credential may have; finish or cancel some (idle ones expire)"
    )]
    TooManyUploads { who: String, open: u64 },
    /// Free space is below `limits.min_free_space`: new uploads are refused.
    #[error(
        "the registry is out of space: {free} free, below the floor of {floor}; pulls still work, and deleting images and collecting garbage frees space"
    )]
    OutOfSpace { free: String, floor: String },
    /// A retention policy that does not hold together (the text says where).
    #[error("invalid retention policy: {0}")]
    PolicyInvalid(String),
    #[error("no retention policy named {0:?}")]
    PolicyUnknown(String),
    /// The folder given to an import is not what it should be.
    #[error("{0}")]
    ImportSource(String),
    /// A backup, restore or check that cannot go on (the text says why).
    #[error("{0}")]
    Backup(String),
    /// A push (or upload) into a repository of the pull-through cache.
    #[error(
        "{repo} is in {upstream}/, the read-only cache of {url}; push to a repository outside {upstream}/"
    )]
    ReadOnlyCache {
        repo: String,
        upstream: String,
        url: String,
    },
    /// A repository the cache's upstream entry does not allow (`repositories`), or an `ns`
    /// registry no upstream serves.
    #[error("{0}")]
    NotCached(String),
    /// A blob the cache will not fetch (too big, no room on the disk).
    #[error("{0}")]
    CacheRefused(String),
    /// The upstream failed, and berth holds no copy to serve instead.
    #[error("upstream {upstream}: {why}")]
    Upstream {
        upstream: String,
        why: String,
        retry_after: Option<u64>,
    },
    #[error("database: {0}")]
    Db(#[from] DbError),
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The disk filled up under a write (of a file or of the database).
    pub fn is_storage_full(&self) -> bool {
        match self {
            Error::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ),
            Error::Db(d) => d.is_full(),
            _ => false,
        }
    }
}

impl From<crate::storage::StoreError> for Error {
    /// A blob missing from the store where the database promised it is an I/O failure here:
    /// callers that can tell a client "unknown" match `NotFound` themselves.
    fn from(e: crate::storage::StoreError) -> Error {
        match e {
            crate::storage::StoreError::NotFound => Error::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "blob not found in the store",
            )),
            crate::storage::StoreError::Io(e) => Error::Io(e),
        }
    }
}
