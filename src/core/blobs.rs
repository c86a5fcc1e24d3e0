//! Reading, deleting and mounting blobs.

use super::{Error, Registry, Result};
use crate::db::{Conn, blobs, repos};
use crate::oci::{Digest, RepoName};
use crate::storage::{Staged, StoreError};

/// Why `Registry::commit_blob` failed.
pub(super) enum CommitError {
    /// The file did not become the blob; it may still be staged (a retry can use it).
    Store(Error),
    /// The blob's rows could not be written; its bytes are out of the staging area.
    Record(Error),
}

impl From<CommitError> for Error {
    fn from(e: CommitError) -> Error {
        match e {
            CommitError::Store(e) | CommitError::Record(e) => e,
        }
    }
}

/// Bytes on their way to a client: from the store, or from an upstream as they arrive.
pub type ByteStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send>>;

/// A blob found in a repository, with the requested range.
pub struct BlobRead {
    pub size: u64,
    /// `Some((start, end))`, inclusive, when a range was asked for.
    pub range: Option<(u64, u64)>,
    /// The bytes of the range (or of the whole blob); `None` when not asked for (HEAD).
    pub body: Option<ByteStream>,
}

impl Registry {
    /// Make a verified staged file blob `d` of `size` bytes, and record it in one
    /// transaction: its row, then what `record` adds (the repository's link, the end of an
    /// upload session). Garbage collection deletes a blob's rows, then its file, holding the
    /// digest's lock; held here from the commit to the record, the file this finds in place
    /// (or puts there) stays until its rows exist. When either step fails (a full disk, most
    /// likely) bytes the store may hold without a record are removed now, unless another
    /// writer recorded the same blob, rather than after the grace, when the space is needed
    /// most.
    pub(super) async fn commit_blob<F>(
        &self,
        staged: Staged,
        d: &Digest,
        size: u64,
        record: F,
    ) -> std::result::Result<(), CommitError>
    where
        F: FnOnce(&Conn, i64) -> Result<()> + Send + 'static,
    {
        let _committing = self.gc.lock_digest(d).await;
        if let Err(e) = self.store.commit(staged, d).await {
            // It may have failed after the rename (syncing the folder).
            self.remove_unrecorded(d).await;
            return Err(CommitError::Store(e.into()));
        }
        let (ds, now) = (d.to_string(), self.now());
        let recorded = self
            .db
            .write(move |tx| {
                blobs::insert(tx, &ds, size, now)?;
                record(tx, now)
            })
            .await;
        if let Err(e) = recorded {
            self.remove_unrecorded(d).await;
            return Err(CommitError::Record(e));
        }
        Ok(())
    }

    /// Remove the store's file of `d` if no row records it. Called with the digest's lock.
    async fn remove_unrecorded(&self, d: &Digest) {
        let ds = d.to_string();
        let known = self
            .db
            .read(move |c| blobs::size(c, &ds).map_err(Error::from))
            .await;
        if let Ok(None) = known {
            match self.store.delete(d).await {
                Ok(_) | Err(StoreError::NotFound) => {}
                Err(rm) => {
                    tracing::warn!(digest = %d, error = %rm, "cannot remove an unrecorded blob; garbage collection will")
                }
            }
        }
    }

    /// The size of a blob the repository may serve. A `HEAD` (how a pushing client asks
    /// whether it may skip an upload) marks the repository's link as seen, so that garbage
    /// collection keeps it for the grace period while the client pushes the manifest that
    /// references it. The mark is written only when the last one is older than
    /// `Settings::mark_every`, so most answers stay reads; a `GET` never writes.
    async fn blob_size(&self, repo: &RepoName, digest: &Digest, head: bool) -> Result<u64> {
        let (r, d) = (repo.to_string(), digest.to_string());
        let (size, seen_at) = self
            .db
            .read(move |c| blobs::linked(c, &r, &d).map_err(Error::from))
            .await?
            .ok_or(Error::BlobUnknown)?;
        let now = self.now();
        if !head || seen_at >= now - self.gc.settings().mark_every() {
            return Ok(size);
        }
        let (r, d) = (repo.to_string(), digest.to_string());
        match self
            .db
            .write(move |tx| blobs::touch(tx, &r, &d, now).map_err(Error::from))
            .await
        {
            Ok(true) => Ok(size),
            // Collected between the read and the mark: it does not exist any more.
            Ok(false) => Err(Error::BlobUnknown),
            // A busy or full database: the link was there a moment ago, and the mark it
            // already has still protects it for a while. Answer as a read would.
            Err(e) => {
                tracing::debug!(%digest, error = %e, "could not mark a blob as seen");
                Ok(size)
            }
        }
    }

    /// Find a blob, with an optional `Range` header value, and open it for reading when
    /// `with_body` (a HEAD reads the database only).
    pub async fn open_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<&str>,
        with_body: bool,
    ) -> Result<BlobRead> {
        let size = self.blob_size(repo, digest, !with_body).await?;
        let range = match range {
            None => None,
            Some(h) => Some(parse_range(h, size).ok_or(Error::BlobRange { size })?),
        };
        if !with_body {
            return Ok(BlobRead {
                size,
                range,
                body: None,
            });
        }
        let (start, len) = match range {
            Some((start, end)) => (start, end - start + 1),
            None => (0, size),
        };
        let body = match self.store.open(digest, start, len).await {
            Ok(b) => b,
            // Linked in the database but gone from the store: report it as absent, loudly.
            Err(StoreError::NotFound) => {
                tracing::error!(%digest, "blob is in the database but its file is missing");
                return Err(Error::BlobUnknown);
            }
            Err(e) => return Err(e.into()),
        };
        Ok(BlobRead {
            size,
            range,
            body: Some(Box::pin(body)),
        })
    }

    /// Remove a blob from a repository (the file goes when nothing references it).
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let (r, d) = (repo.to_string(), digest.to_string());
        let removed = self
            .db
            .write(move |tx| {
                let Some(id) = repos::find(tx, &r)? else {
                    return Ok(false);
                };
                Ok::<_, Error>(blobs::unlink(tx, id, &d)?)
            })
            .await?;
        if removed {
            Ok(())
        } else {
            Err(Error::BlobUnknown)
        }
    }

    /// Link a blob of `from` into `repo` without moving bytes. `false` when `from` does not
    /// hold it (the caller then opens an ordinary upload).
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        from: &RepoName,
        digest: &Digest,
    ) -> Result<bool> {
        let (r, f, d, now) = (
            repo.to_string(),
            from.to_string(),
            digest.to_string(),
            self.now(),
        );
        self.db
            .write(move |tx| {
                if blobs::linked_size(tx, &f, &d)?.is_none() {
                    return Ok(false);
                }
                let id = repos::ensure(tx, &r, now)?;
                blobs::link(tx, id, &d, now)?;
                Ok::<_, Error>(true)
            })
            .await
    }
}

/// Parse a single `bytes=` range against a blob of `size` bytes; `None` if unsatisfiable.
/// Forms: `bytes=a-b`, `bytes=a-`, `bytes=-n` (the last n bytes).
pub(crate) fn parse_range(h: &str, size: u64) -> Option<(u64, u64)> {
    let spec = h.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 {
            return None;
        }
        (size.saturating_sub(n), size - 1)
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            size - 1
        } else {
            b.parse::<u64>().ok()?.min(size - 1)
        };
        (start, end)
    };
    (start <= end && start < size).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-1000", 100), Some((0, 99)));
        assert_eq!(parse_range("bytes=50-1000", 100), Some((50, 99)));
        for bad in [
            "bytes=100-",
            "bytes=5-1",
            "bytes=-0",
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=x-1",
            "0-1",
        ] {
            assert_eq!(parse_range(bad, 100), None, "{bad}");
        }
        assert_eq!(parse_range("bytes=0-0", 0), None);
    }
}
