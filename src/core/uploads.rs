//! Blob upload sessions: start, append chunks, finish with a digest, cancel.
//!
//! A session's bytes are in its upload file; its hash state is kept in memory and rebuilt
//! from the file when missing (after a restart), so a session survives a restart.

use bytes::Bytes;
use futures_util::Stream;

use super::blobs::CommitError;
use super::{Error, Registry, Result};
use crate::db::{blobs, repos, uploads};
use crate::oci::{Algorithm, Digest, RepoName, UploadId};
use crate::storage::{AppendError, Progress};

use super::gc;

/// A `Content-Range` of a chunk: first and last byte, inclusive.
pub type ChunkRange = (u64, u64);

type Guard = tokio::sync::OwnedMutexGuard<Option<Progress>>;

/// Seconds between two records of a session's activity.
const ACTIVITY_EVERY: i64 = 60;

/// Who opens an upload session: `key` identifies the credential (`u:<id>`, `t:<id>`, `a`)
/// for the per-credential cap, `name` is how errors call it.
#[derive(Clone, Debug)]
pub struct Uploader {
    pub key: String,
    pub name: String,
}

/// Whether new uploads are accepted, with the free bytes that decide it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteStatus {
    Accepted { free: u64 },
    Refused { free: u64, floor: u64 },
}

impl Registry {
    /// Whether new uploads are accepted now (the free-space floor).
    pub async fn write_status(&self) -> Result<WriteStatus> {
        let free = self.staging.free_space().await?;
        let floor = self.uploads.min_free_space;
        Ok(if free < floor {
            WriteStatus::Refused { free, floor }
        } else {
            WriteStatus::Accepted { free }
        })
    }

    /// The error that explains a refusal, `None` when uploads are accepted.
    pub fn refusal(&self, status: WriteStatus) -> Option<Error> {
        match status {
            WriteStatus::Accepted { .. } => None,
            WriteStatus::Refused { free, floor } => Some(Error::OutOfSpace {
                free: gc::human_bytes(free),
                floor: gc::human_bytes(floor),
            }),
        }
    }

    /// Refuse new bytes below the free-space floor, with the figures.
    pub(super) async fn check_space(&self) -> Result<()> {
        let status = self.write_status().await?;
        match self.refusal(status) {
            None => Ok(()),
            Some(e) => {
                tracing::warn!("upload refused: {e}");
                Err(e)
            }
        }
    }

    /// Open a new upload session in `repo` for `who`.
    pub async fn start_upload(&self, repo: &RepoName, who: &Uploader) -> Result<UploadId> {
        self.check_space().await?;
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw).map_err(|e| std::io::Error::other(e.to_string()))?;
        let id = UploadId::from_random(raw);
        // The file first: a crash in between leaves an orphan file (removed by garbage
        // collection), never a row without one.
        self.staging.create(&id).await?;
        let (r, i, now) = (repo.to_string(), id.to_string(), self.now());
        let (key, name, cap) = (who.key.clone(), who.name.clone(), self.uploads.max_sessions);
        let since = now - self.gc.settings().upload_expiry;
        let inserted = self
            .db
            .write(move |tx| {
                let open = uploads::count_owned(tx, &key, since)?;
                if open >= cap {
                    return Err(Error::TooManyUploads { who: name, open });
                }
                let repo_id = repos::ensure(tx, &r, now)?;
                Ok::<_, Error>(uploads::insert(tx, &i, repo_id, &key, now)?)
            })
            .await;
        if let Err(e) = inserted {
            if let Err(rm) = self.staging.delete(&id).await {
                tracing::warn!(upload = %id, error = %rm, "cannot remove the file of a refused upload");
            }
            return Err(e);
        }
        // The file is empty, so its state is known without reading it: the first request
        // that appends or finishes need not rehash it. The slot lives as long as the
        // session (finished, cancelled, discarded or expired), like the slot of any session
        // that took a chunk.
        if let Ok(mut state) = self.sessions.slot(&id).try_lock_owned() {
            state.get_or_insert_with(|| Progress::new(Algorithm::Sha256));
        }
        Ok(id)
    }

    /// The outcome of an append: a body that broke off keeps what arrived (the client may
    /// resume); a failed write or an upload past the size limit ends the session.
    async fn appended(
        &self,
        id: &UploadId,
        result: std::result::Result<(), AppendError>,
    ) -> Result<()> {
        match result {
            Ok(()) => Ok(()),
            Err(AppendError::Body(e)) => Err(Error::UploadInvalid(e)),
            // The session's file is gone (removed behind the server's back): the session
            // is over, as when it is found without a file.
            Err(AppendError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                self.discard(id).await;
                Err(Error::UploadUnknown)
            }
            Err(AppendError::Io(e)) => {
                self.discard(id).await;
                Err(e.into())
            }
            Err(e @ AppendError::TooLarge(_)) => {
                self.discard(id).await;
                Err(Error::SizeInvalid(e.to_string()))
            }
        }
    }

    /// Drop a session whose write failed: its bytes first (freeing space is what matters on a
    /// full disk), then its row, which may fail on that same disk and is then left to expire
    /// (a row without a file is a session that answers "unknown"), and its state in memory.
    async fn discard(&self, id: &UploadId) {
        if let Err(e) = self.staging.delete(id).await {
            tracing::warn!(upload = %id, error = %e, "cannot remove the file of a failed upload");
        }
        let i = id.to_string();
        if let Err(e) = self
            .db
            .write(move |tx| uploads::delete(tx, &i).map_err(Error::from))
            .await
        {
            tracing::warn!(upload = %id, error = %e, "cannot forget a failed upload; it will expire");
        }
        self.sessions.forget(id);
    }

    /// Lock a session and check it still exists (a request we waited for may have finished
    /// it). Returns the lock and the repository id.
    async fn lock_session(&self, repo: &RepoName, id: &UploadId) -> Result<(Guard, i64)> {
        let guard = self.sessions.slot(id).lock_owned().await;
        let (r, i) = (repo.to_string(), id.to_string());
        let found = self
            .db
            .read(move |c| uploads::find(c, &r, &i).map_err(Error::from))
            .await?;
        match found {
            Some((repo_id, active_at)) => {
                // Sessions expire by last activity: record it, at most once a minute.
                if active_at < self.now() - self.activity_every() {
                    self.note_activity(id).await?;
                }
                Ok((guard, repo_id))
            }
            None => {
                // Do not keep an in-memory slot for an id that has no session.
                drop(guard);
                self.sessions.forget(id);
                Err(Error::UploadUnknown)
            }
        }
    }

    /// Seconds between two records of a session's activity.
    fn activity_every(&self) -> i64 {
        ACTIVITY_EVERY.min(self.gc.settings().upload_expiry / 2)
    }

    /// Record activity on a session now.
    async fn note_activity(&self, id: &UploadId) -> Result<()> {
        let (i, now) = (id.to_string(), self.now());
        let found = self
            .db
            .write(move |tx| uploads::touch(tx, &i, now).map_err(Error::from))
            .await?;
        if found {
            Ok(())
        } else {
            Err(Error::UploadUnknown)
        }
    }

    /// Rebuild a session's progress from its file; a missing file means no session.
    async fn rehash(&self, id: &UploadId, alg: Algorithm) -> Result<Progress> {
        match self.staging.rehash(id, alg).await {
            Ok(p) => Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::UploadUnknown),
            Err(e) => Err(e.into()),
        }
    }

    /// Bytes received so far.
    pub async fn upload_status(&self, repo: &RepoName, id: &UploadId) -> Result<u64> {
        let (guard, _) = self.lock_session(repo, id).await?;
        if let Some(p) = guard.as_ref() {
            return Ok(p.len);
        }
        self.staging.len(id).await?.ok_or(Error::UploadUnknown)
    }

    /// Append a chunk. With `range`, it must start where the upload stands (else 416) and
    /// the body must be exactly as long as it says (else 400, and nothing is kept).
    /// Returns the upload's new length.
    ///
    /// The work runs in its own task holding the session's lock: if the client goes away
    /// mid-body, the writer still finishes and records what reached the file before another
    /// request may touch the session.
    pub async fn append_upload<S, E>(
        &self,
        repo: &RepoName,
        id: &UploadId,
        range: Option<ChunkRange>,
        body: S,
    ) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        self.check_space().await?;
        let (guard, _) = self.lock_session(repo, id).await?;
        let (this, id) = (self.clone(), id.clone());
        detached(async move {
            let started = this.now();
            let len = this.append_locked(guard, &id, range, body).await?;
            // A long transfer was activity all along: record its end as well.
            if this.now() - started >= this.activity_every() {
                this.note_activity(&id).await?;
            }
            Ok(len)
        })
        .await
    }

    async fn append_locked<S, E>(
        &self,
        mut guard: Guard,
        id: &UploadId,
        range: Option<ChunkRange>,
        body: S,
    ) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        let progress = match guard.take() {
            Some(p) => p,
            None => self.rehash(id, Algorithm::Sha256).await?,
        };
        let declared = match range {
            None => None,
            Some((start, end)) => match end.checked_sub(start).and_then(|n| n.checked_add(1)) {
                Some(n) if start == progress.len => Some(n),
                _ => {
                    let len = progress.len;
                    *guard = Some(progress);
                    return Err(Error::UploadRange { len });
                }
            },
        };
        let before = progress.clone();
        let (after, result) = self.staging.append(id, progress, body).await;
        let after = after.map(|a| a.progress);
        let len = after.as_ref().map(|p| p.len);
        *guard = after;
        self.appended(id, result).await?;
        let len = len.unwrap_or(before.len);
        if let Some(declared) = declared {
            let got = len - before.len;
            if got != declared {
                // Take the chunk back, so that the client can send it again.
                self.staging.truncate(id, before.len).await?;
                *guard = Some(before);
                return Err(Error::UploadInvalid(format!(
                    "Content-Range declared {declared} bytes, the body had {got}"
                )));
            }
        }
        Ok(len)
    }

    /// Finish an upload: append an optional last chunk, verify the digest, store the blob
    /// durably and link it into the repository. Returns the blob's size. Like
    /// `append_upload`, it runs to completion in its own task once started.
    pub async fn finish_upload<S, E>(
        &self,
        repo: &RepoName,
        id: &UploadId,
        digest: &Digest,
        body: Option<S>,
    ) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        if body.is_some() {
            self.check_space().await?;
        }
        let (guard, repo_id) = self.lock_session(repo, id).await?;
        let (this, id, digest) = (self.clone(), id.clone(), digest.clone());
        detached(async move { this.finish_locked(guard, repo_id, &id, &digest, body).await }).await
    }

    async fn finish_locked<S, E>(
        &self,
        mut guard: Guard,
        repo_id: i64,
        id: &UploadId,
        digest: &Digest,
        body: Option<S>,
    ) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        let mut progress = match guard.take() {
            // Nothing hashed yet (a new session): hash with the digest's algorithm from the
            // start, rather than hashing the body twice. The length check below still
            // catches a file that is not empty.
            Some(p) if p.len == 0 => Progress::new(digest.algorithm()),
            Some(p) => p,
            None => self.rehash(id, digest.algorithm()).await?,
        };
        // The file's length, when the append has just read it back.
        let mut file_len = None;
        if let Some(body) = body {
            let (after, result) = self.staging.append(id, progress, body).await;
            *guard = after.as_ref().map(|a| a.progress.clone());
            self.appended(id, result).await?;
            let after = after.ok_or_else(|| Error::UploadInvalid("upload state lost".into()))?;
            (progress, file_len) = (after.progress, Some(after.file_len));
        }
        if progress.hasher.algorithm() != digest.algorithm() {
            progress = self.rehash(id, digest.algorithm()).await?;
        }
        let actual = progress.hasher.clone().finish();
        if &actual != digest {
            *guard = Some(progress);
            return Err(Error::DigestInvalid(format!(
                "upload content has digest {actual}, not {digest}"
            )));
        }
        let size = progress.len;
        // The state in memory must describe the file exactly before it becomes a blob.
        let file_len = match file_len {
            Some(n) => Some(n),
            None => self.staging.len(id).await?,
        };
        if file_len != Some(size) {
            tracing::error!(upload = %id, "upload file and its hash state disagree; rehashing");
            *guard = None;
            return Err(Error::UploadInvalid(
                "upload state was out of date; retry the request".into(),
            ));
        }
        let (d, i) = (digest.to_string(), id.to_string());
        let recorded = self
            .commit_blob(self.staging.staged(id), digest, size, move |tx, now| {
                blobs::link(tx, repo_id, &d, now)?;
                uploads::delete(tx, &i)?;
                Ok(())
            })
            .await;
        match recorded {
            Ok(()) => {}
            // The file stays staged: the session goes on, and a retry can finish it.
            Err(CommitError::Store(e)) => return Err(e),
            // The session's file went into the store (and out of it again): the session is
            // over.
            Err(CommitError::Record(e)) => {
                self.discard(id).await;
                *guard = None;
                return Err(e);
            }
        }
        drop(guard);
        self.sessions.forget(id);
        Ok(size)
    }

    /// Abandon an upload session and its bytes.
    pub async fn cancel_upload(&self, repo: &RepoName, id: &UploadId) -> Result<()> {
        let (_guard, _) = self.lock_session(repo, id).await?;
        // The bytes first: on a full disk the database write below may fail, and the space
        // must come back anyway.
        self.staging.delete(id).await?;
        let i = id.to_string();
        let forgotten = self
            .db
            .write(move |tx| uploads::delete(tx, &i).map_err(Error::from))
            .await;
        match forgotten {
            Ok(_) => {}
            // Its file is gone, so the session is dead; its row expires.
            Err(e) if e.is_storage_full() => {
                tracing::warn!(upload = %id, error = %e, "cancelled upload freed its bytes; its record waits for free space");
            }
            Err(e) => return Err(e),
        }
        self.sessions.forget(id);
        Ok(())
    }
}

/// Run `fut` in its own task and wait for it: dropping the caller (a client that went away)
/// does not stop it halfway.
async fn detached<T: Send + 'static>(
    fut: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    tokio::spawn(fut)
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?
}
