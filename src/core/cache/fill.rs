//! Blobs of a cache repository: one upstream download per missing blob however many clients
//! ask for it. The download runs on its own task and writes a staged file, hashing as it
//! goes; every client asking reads that file behind the download (woken as bytes land), so
//! the first bytes reach them as soon as the upstream sends them. The blob enters the store
//! only once its size and digest check out; a mismatch stores nothing and breaks off every
//! client's transfer (each is held back its last byte until the bytes verified, so no client
//! completes a transfer of bytes that did not). As for uploads, the disk writeback runs
//! behind the download, so the commit's fsync has little left. A client that leaves does not stop the
//! download (up to `DETACHED_MAX`), so the next pull finds the blob; a download nobody waits
//! for any more when its turn comes is not started.
//!
//! Bounds: downloads per upstream (`max_concurrent`), the disk (every download in progress
//! reserves its size against the free-space floor), and time (an upstream that sends less
//! than `MIN_PROGRESS` bytes in `PROGRESS_WINDOW` is given up on).

use std::collections::HashMap;
use std::os::unix::fs::FileExt as _;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt as _, StreamExt as _};
use tokio::sync::watch;

use super::{Cache, Error, Result};
use crate::core::{BlobRead, ByteStream, Registry};
use crate::db::{cache, repos};
use crate::oci::{Digest, Hasher, RepoName};
use crate::storage::Writeback;
use crate::upstream::UpstreamError;

/// Bytes gathered before they are written (and made readable), unless the upstream pauses.
const FLUSH: usize = 256 * 1024;
/// Bytes a client reads from the file at a time.
const READ: u64 = 256 * 1024;
/// A download that every client has left goes on only for blobs up to this size.
const DETACHED_MAX: u64 = 4 << 30;
/// The least an upstream must send in each `PROGRESS_WINDOW`.
const MIN_PROGRESS: u64 = 64 * 1024;
const PROGRESS_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Clone, Debug)]
enum State {
    /// Waiting for the upstream's answer.
    Starting,
    /// `written` of `size` bytes are in the file.
    Streaming {
        size: u64,
        written: u64,
    },
    /// Every byte is in the file and checked: clients may have the last one while the blob
    /// is committed (fsynced, recorded).
    Verified,
    /// Verified, stored and recorded.
    Done,
    Failed(Failure),
}

#[derive(Clone, Debug, thiserror::Error)]
enum Failure {
    #[error("the upstream has no such blob")]
    NotFound,
    /// berth will not take it (too big, no room): retrying does not help.
    #[error("{0}")]
    Refused(String),
    #[error("{why}")]
    Upstream {
        why: String,
        retry_after: Option<u64>,
    },
}

impl Failure {
    fn upstream(why: impl Into<String>) -> Failure {
        Failure::Upstream {
            why: why.into(),
            retry_after: None,
        }
    }

    fn into_error(self, cache: &Cache) -> Error {
        match self {
            Failure::NotFound => Error::BlobUnknown,
            Failure::Refused(why) => Error::CacheRefused(why),
            Failure::Upstream { why, retry_after } => Error::Upstream {
                upstream: cache.name().to_string(),
                why,
                retry_after,
            },
        }
    }
}

impl From<UpstreamError> for Failure {
    fn from(e: UpstreamError) -> Failure {
        match e {
            UpstreamError::NotFound(_) => Failure::NotFound,
            UpstreamError::RateLimited { retry_after } => Failure::Upstream {
                why: e.to_string(),
                retry_after,
            },
            e => Failure::upstream(e.to_string()),
        }
    }
}

/// One download in progress.
struct Fill {
    state: watch::Sender<State>,
    file: OnceLock<Arc<std::fs::File>>,
}

/// The downloads in progress, by repository and digest (a download proves the blob is the
/// upstream's in that repository, so clients of another repository do not join it), and the
/// bytes they have reserved on the disk.
#[derive(Default)]
pub struct Fills {
    map: Mutex<HashMap<String, Arc<Fill>>>,
    reserved: std::sync::atomic::AtomicU64,
}

impl Fills {
    /// The download of `key`, a view of its state (taken under the map's lock, so a
    /// download that finds no one watching and ends cannot race a client joining), and
    /// whether the caller must start it.
    fn join(&self, key: &str) -> (Arc<Fill>, watch::Receiver<State>, bool) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(key) {
            Some(f) => (f.clone(), f.state.subscribe(), false),
            None => {
                let f = Arc::new(Fill {
                    state: watch::Sender::new(State::Starting),
                    file: OnceLock::new(),
                });
                map.insert(key.to_string(), f.clone());
                let rx = f.state.subscribe();
                (f, rx, true)
            }
        }
    }

    /// Take `key` out of the map if nobody watches `fill` any more: whether it did.
    fn abandon_if_unwatched(&self, key: &str, fill: &Fill) -> bool {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if fill.state.receiver_count() > 0 {
            return false;
        }
        map.remove(key);
        true
    }
}

/// Ends a download however its task ends (a panic included): the last state is sent, the
/// download leaves the map, and its disk reservation is returned.
struct Ending<'a> {
    fills: &'a Fills,
    key: String,
    fill: Arc<Fill>,
    reserved: u64,
    outcome: Option<std::result::Result<(), Failure>>,
}

impl Drop for Ending<'_> {
    fn drop(&mut self) {
        let state = match self.outcome.take() {
            Some(Ok(())) => State::Done,
            Some(Err(f)) => State::Failed(f),
            None => State::Failed(Failure::upstream("the download stopped")),
        };
        // Out of the map first: a client joining from now on starts afresh rather than
        // finding an ending it did not ask for.
        {
            let mut map = self.fills.map.lock().unwrap_or_else(|p| p.into_inner());
            if map
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.fill))
            {
                map.remove(&self.key);
            }
        }
        self.fill.state.send_replace(state);
        self.fills
            .reserved
            .fetch_sub(self.reserved, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Registry {
    /// GET or HEAD (`with_body` false) a blob of the cache repository `repo`, with an
    /// optional `Range` header value.
    pub async fn cached_blob(
        &self,
        cache: &Arc<Cache>,
        repo: &RepoName,
        digest: &Digest,
        range: Option<&str>,
        with_body: bool,
    ) -> Result<BlobRead> {
        match self.open_blob(repo, digest, range, with_body).await {
            Err(Error::BlobUnknown) => {}
            held => return held,
        }
        let upstream_repo = cache.upstream_name(repo)?;
        // Held for another repository of this cache, and this one's manifests name it: no
        // download.
        if self.link_cached(cache, repo, digest).await? {
            return self.open_blob(repo, digest, range, with_body).await;
        }
        // A HEAD asks the upstream, and fetches nothing.
        if !with_body {
            let size = {
                let _slot = cache.manifest_slot().await.map_err(|e| cache.failed(e))?;
                cache.client.head_blob(&upstream_repo, digest).await
            };
            return match size {
                Ok(size) => Ok(BlobRead {
                    size,
                    range: None,
                    body: None,
                }),
                Err(UpstreamError::NotFound(_)) => Err(Error::BlobUnknown),
                Err(e) => Err(cache.failed(e)),
            };
        }
        let key = format!("{repo}@{digest}");
        let (fill, mut rx, leader) = self.fills.join(&key);
        if leader {
            let (reg, cache, fill, d) = (self.clone(), cache.clone(), fill.clone(), digest.clone());
            let repo = repo.clone();
            tokio::spawn(async move {
                let mut ending = Ending {
                    fills: &reg.fills,
                    key,
                    fill: fill.clone(),
                    reserved: 0,
                    outcome: None,
                };
                let outcome = reg
                    .download(
                        &cache,
                        (&repo, &upstream_repo, &d),
                        (&ending.key, &fill),
                        &mut ending.reserved,
                    )
                    .await;
                if let Err(f) = &outcome {
                    crate::metrics::global().cache_fill_failures.inc();
                    tracing::warn!(upstream = cache.name(), digest = %d, error = %f, "a blob download from the upstream failed");
                }
                ending.outcome = Some(outcome);
            });
        }
        loop {
            let state = rx.borrow_and_update().clone();
            match state {
                State::Starting => {}
                State::Failed(f) => return Err(f.into_error(cache)),
                State::Done => return self.open_blob(repo, digest, range, with_body).await,
                // A range waits for the stored blob; a GET goes now.
                State::Streaming { size, .. } if range.is_none() => {
                    return Ok(BlobRead {
                        size,
                        range: None,
                        body: Some(reader(fill.clone(), rx.clone(), size)),
                    });
                }
                State::Streaming { .. } | State::Verified => {}
            }
            if rx.changed().await.is_err() {
                return Err(Error::Io(std::io::Error::other("a blob download vanished")));
            }
        }
    }

    /// Link a blob into the cache repository `repo` when a repository of the same cache
    /// holds it (verified from this upstream) and one of `repo`'s manifests names it. Whether
    /// it is linked now. Held only by other repositories, a blob is downloaded all the same:
    /// that the upstream sends its bytes is what proves the upstream has it, not a manifest
    /// that names its digest.
    async fn link_cached(&self, cache: &Cache, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let (r, d, now) = (repo.to_string(), digest.to_string(), self.now());
        let prefix = format!("{}/", cache.name());
        self.db
            .write(move |tx| {
                if !cache::held_by(tx, &prefix, &d)? || !cache::referenced(tx, &r, &d)? {
                    return Ok(false);
                }
                let id = repos::ensure(tx, &r, now)?;
                cache::arrived(tx, id, &d, now)?;
                Ok::<_, Error>(true)
            })
            .await
    }

    /// Download `digest` into a staged file, verify it and store it, linked into `repo`.
    /// `reserved`: the bytes this download holds against the disk, returned by its `Ending`.
    async fn download(
        &self,
        cache: &Cache,
        (repo, upstream_repo, digest): (&RepoName, &RepoName, &Digest),
        (key, fill): (&str, &Fill),
        reserved: &mut u64,
    ) -> std::result::Result<(), Failure> {
        let _slot = cache.slots.acquire().await;
        if self.fills.abandon_if_unwatched(key, fill) {
            return Err(Failure::upstream(
                "every client left before the download began",
            ));
        }
        let (size, body) = cache.client.blob(upstream_repo, digest).await?;
        let size =
            size.ok_or_else(|| Failure::upstream("the upstream did not say the blob's size"))?;
        if let Some(max) = cache.settings.max_blob
            && size > max
        {
            return Err(Failure::Refused(format!(
                "the blob has {size} bytes, more than the {max} berth takes (limits.max_upload_size)"
            )));
        }
        self.reserve(size, reserved).await?;
        let (staged, file) = self
            .staging
            .create_fill()
            .await
            .map_err(|e| Failure::upstream(format!("berth cannot store it: {e}")))?;
        let file = Arc::new(file);
        let _ = fill.file.set(file.clone());
        fill.state
            .send_replace(State::Streaming { size, written: 0 });
        crate::metrics::global().cache_fills.inc();
        let writeback = match self.staging.writeback(&file) {
            Ok(w) => w,
            Err(e) => {
                staged.discard().await;
                return Err(Failure::upstream(format!("berth cannot store it: {e}")));
            }
        };
        if let Err(f) = write(&file, writeback, body, size, digest, fill).await {
            staged.discard().await;
            return Err(f);
        }
        fill.state.send_replace(State::Verified);
        let path = staged.path().to_path_buf();
        let (r, d) = (repo.to_string(), digest.to_string());
        let committed = self
            .commit_blob(staged, digest, size, move |tx, now| {
                let id = repos::ensure(tx, &r, now)?;
                cache::arrived(tx, id, &d, now)?;
                Ok(())
            })
            .await;
        if let Err(e) = committed {
            // Still staged if it failed before the rename: not for the next start to find.
            let _ = tokio::fs::remove_file(&path).await;
            return Err(Failure::upstream(format!(
                "berth could not store it: {}",
                Error::from(e)
            )));
        }
        Ok(())
    }

    /// Reserve `size` bytes of the disk for a download: refused when the downloads in
    /// progress and this one would take the free space below the floor uploads keep.
    async fn reserve(&self, size: u64, reserved: &mut u64) -> std::result::Result<(), Failure> {
        use std::sync::atomic::Ordering;
        let free = self
            .staging
            .free_space()
            .await
            .map_err(|e| Failure::upstream(format!("berth cannot store it: {e}")))?;
        let before = self.fills.reserved.fetch_add(size, Ordering::Relaxed);
        *reserved = size;
        let floor = self.uploads.min_free_space;
        if free < floor.saturating_add(before).saturating_add(size) {
            return Err(Failure::Refused(format!(
                "berth has no room for it: {free} bytes free, {before} promised to downloads in progress, and {floor} kept free (limits.min_free_space)"
            )));
        }
        Ok(())
    }
}

/// Write the upstream's body into `file`, hashing it, and publish each write's end.
async fn write(
    file: &Arc<std::fs::File>,
    writeback: Writeback,
    mut body: impl futures_util::Stream<Item = std::io::Result<Bytes>> + Unpin,
    size: u64,
    digest: &Digest,
    fill: &Fill,
) -> std::result::Result<(), Failure> {
    let mut hasher = Some((Hasher::new(digest.algorithm()), writeback));
    let mut written = 0u64;
    let mut buf = BytesMut::new();
    let mut window = (std::time::Instant::now(), 0u64);
    loop {
        let received = written + buf.len() as u64;
        if window.0.elapsed() >= PROGRESS_WINDOW {
            if received - window.1 < MIN_PROGRESS {
                return Err(Failure::upstream(format!(
                    "the upstream sent less than {MIN_PROGRESS} bytes in {} s",
                    PROGRESS_WINDOW.as_secs()
                )));
            }
            window = (std::time::Instant::now(), received);
        }
        // Gather while bytes keep coming; write what is gathered when the upstream pauses.
        let next = if buf.is_empty() {
            match tokio::time::timeout(PROGRESS_WINDOW, body.next()).await {
                Ok(next) => next,
                Err(_) => {
                    return Err(Failure::upstream(format!(
                        "the upstream sent nothing for {} s",
                        PROGRESS_WINDOW.as_secs()
                    )));
                }
            }
        } else {
            match body.next().now_or_never() {
                Some(next) => next,
                None => {
                    flush(file, &mut buf, &mut written, &mut hasher, fill).await?;
                    continue;
                }
            }
        };
        match next {
            None => break,
            Some(Err(e)) => return Err(Failure::upstream(format!("the download broke off: {e}"))),
            Some(Ok(chunk)) => {
                if written + (buf.len() + chunk.len()) as u64 > size {
                    return Err(Failure::upstream(
                        "the upstream sent more bytes than it announced",
                    ));
                }
                buf.extend_from_slice(&chunk);
                if buf.len() >= FLUSH {
                    flush(file, &mut buf, &mut written, &mut hasher, fill).await?;
                    if fill.state.receiver_count() == 0 && size > DETACHED_MAX {
                        return Err(Failure::upstream(
                            "every client left a download too big to finish for nobody",
                        ));
                    }
                }
            }
        }
    }
    flush(file, &mut buf, &mut written, &mut hasher, fill).await?;
    if written != size {
        return Err(Failure::upstream(format!(
            "the download ended after {written} of {size} bytes"
        )));
    }
    let actual = hasher
        .take()
        .expect("the hasher is back after each write")
        .0
        .finish();
    if &actual != digest {
        return Err(Failure::upstream(format!(
            "the upstream's bytes hash to {actual}, not {digest}; nothing was stored"
        )));
    }
    Ok(())
}

/// Write `buf` at `written` and hash it, off the async workers; then let readers see it.
async fn flush(
    file: &Arc<std::fs::File>,
    buf: &mut BytesMut,
    written: &mut u64,
    hasher: &mut Option<(Hasher, Writeback)>,
    fill: &Fill,
) -> std::result::Result<(), Failure> {
    if buf.is_empty() {
        return Ok(());
    }
    let data = buf.split().freeze();
    let (f, at) = (file.clone(), *written);
    let (mut h, mut wb) = hasher.take().expect("the hasher is back after each write");
    let (h, n) = tokio::task::spawn_blocking(move || {
        f.write_all_at(&data, at)?;
        h.update(&data);
        let n = data.len() as u64;
        wb.wrote(n, at + n);
        Ok::<_, std::io::Error>(((h, wb), n))
    })
    .await
    .map_err(|e| Failure::upstream(e.to_string()))?
    .map_err(|e| Failure::upstream(format!("berth cannot store it: {e}")))?;
    *hasher = Some(h);
    *written += n;
    let now = *written;
    fill.state.send_modify(|s| {
        if let State::Streaming { written, .. } = s {
            *written = now;
        }
    });
    Ok(())
}

/// A client's view of a download: the file's bytes as they land, to `size`, and the end of
/// the body only once the blob verified; an error (a broken transfer) if the download fails,
/// so a client never completes a transfer of bytes that were not stored.
fn reader(fill: Arc<Fill>, rx: watch::Receiver<State>, size: u64) -> ByteStream {
    Box::pin(futures_util::stream::unfold(
        (fill, rx, 0u64, false),
        move |(fill, mut rx, offset, ended)| async move {
            if ended {
                return None;
            }
            loop {
                let state = rx.borrow_and_update().clone();
                let landed = match state {
                    State::Starting => 0,
                    // The last byte waits for the verdict: with it, an HTTP/1.1 client
                    // would have its whole body, whatever came after.
                    State::Streaming { written, .. } => written.min(size.saturating_sub(1)),
                    State::Verified | State::Done if offset >= size => return None,
                    State::Verified | State::Done => size,
                    State::Failed(f) => {
                        let e = std::io::Error::other(f.to_string());
                        return Some((Err(e), (fill, rx, offset, true)));
                    }
                };
                if offset < landed {
                    let n = (landed - offset).min(READ);
                    let file = fill.file.get()?.clone();
                    let read = tokio::task::spawn_blocking(move || {
                        let mut b = vec![0u8; n as usize];
                        file.read_exact_at(&mut b, offset).map(|()| Bytes::from(b))
                    })
                    .await
                    .map_err(std::io::Error::other)
                    .and_then(|r| r);
                    return Some(match read {
                        Ok(b) => (Ok(b), (fill, rx, offset + n, false)),
                        Err(e) => (Err(e), (fill, rx, offset, true)),
                    });
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        },
    ))
}
