//! Streaming an upload body to its file: hashed while written, in batches on a blocking
//! thread, while the async side keeps receiving. A batch holds the thread only while it
//! writes: an upload whose client sends slowly holds none while it waits, so hundreds of slow
//! clients do not take the threads the database and the downloads need. Large uploads start
//! the disk writeback early (a thread fsyncs behind the writer), so the final fsync before the
//! acknowledgement has little left.
//!
//! A small body costs one trip to a blocking thread: the first batch opens the file, and
//! every batch ends by reading the file's length back, which the upload's commit checks
//! against the bytes hashed.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use rustix::fs::Advice;

use super::{Staging, Sync};
use crate::oci::{Algorithm, Hasher, UploadId};

/// Small body frames are gathered into pieces of this size before they go to the writer;
/// frames of at least `PASS_THROUGH` bytes go as they are, without a copy (cut into pieces of
/// at most `CHUNK`). At most `QUEUE` pieces wait while a batch is written, so an upload holds
/// a few MiB at most whatever its size.
const CHUNK: usize = 256 * 1024;
const PASS_THROUGH: usize = 64 * 1024;
const QUEUE: usize = 8;
/// All uploads together hold at most this many bytes received and not yet written: each
/// piece takes its size from the budget (in `BUDGET_UNIT`s) until it is written. One upload
/// never waits for it (its queue is far smaller); hundreds at once share it, so memory stays
/// bounded however many clients push.
const BUDGET_BYTES: usize = 32 * 1024 * 1024;
const BUDGET_UNIT: usize = 4096;
pub(super) const BUDGET_UNITS: usize = BUDGET_BYTES / BUDGET_UNIT;

/// A piece of an upload on its way to the writer, with its share of the budget.
type Piece = (Bytes, tokio::sync::OwnedSemaphorePermit);
/// Written bytes after which the background fsync is nudged.
const FLUSH_EVERY: u64 = 32 * 1024 * 1024;

/// The state of an upload: the hash of every byte in its file so far, and their count.
#[derive(Clone)]
pub struct Progress {
    pub hasher: Hasher,
    pub len: u64,
}

impl Progress {
    pub fn new(alg: Algorithm) -> Progress {
        Progress {
            hasher: Hasher::new(alg),
            len: 0,
        }
    }
}

/// What an append leaves: the upload's new state, and the length of its file as the file
/// system reported it after the last write (the two agree unless something else wrote to
/// the file).
pub struct Appended {
    pub progress: Progress,
    pub file_len: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The client's body failed (disconnect, bad chunked encoding). What arrived before is kept.
    #[error("request body ended early: {0}")]
    Body(String),
    /// Writing failed; the file may hold a partial chunk, so the progress is unknown.
    #[error("writing upload: {0}")]
    Io(#[from] io::Error),
    /// The upload grew past the largest one staging takes (`Staging::max_upload`).
    #[error("the upload is larger than {0} bytes, the most this registry takes")]
    TooLarge(u64),
}

impl Staging {
    /// Append a request body to an upload file whose state is `progress`.
    ///
    /// Returns the new state when it is known (always, unless opening or writing the file
    /// failed) and whether the whole body arrived.
    pub async fn append<S, E>(
        &self,
        id: &UploadId,
        progress: Progress,
        mut body: S,
    ) -> (Option<Appended>, Result<(), AppendError>)
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        let progress_len = progress.len;
        let mut writer = Writer::new(self.path(id), progress, self.sync);
        let budget = &self.budget;

        let mut body_error = None;
        let mut too_large = None;
        let mut small = BytesMut::new();
        let mut received = progress_len;
        loop {
            let next = writer.meanwhile(body.next()).await;
            if writer.failed.is_some() {
                break;
            }
            if let (Some(Ok(b)), Some(max)) = (&next, self.max_upload) {
                received += b.len() as u64;
                if received > max {
                    too_large = Some(max);
                    break;
                }
            }
            let piece = match next {
                Some(Ok(mut b)) if b.len() >= PASS_THROUGH => {
                    if !small.is_empty()
                        && writer.send(budget, small.split().freeze()).await.is_err()
                    {
                        break;
                    }
                    let mut stopped = false;
                    while b.len() > CHUNK && !stopped {
                        stopped = writer.send(budget, b.split_to(CHUNK)).await.is_err();
                    }
                    if stopped {
                        break;
                    }
                    b
                }
                Some(Ok(b)) => {
                    small.extend_from_slice(&b);
                    if small.len() < CHUNK {
                        continue;
                    }
                    small.split().freeze()
                }
                Some(Err(e)) => {
                    body_error = Some(e.to_string());
                    break;
                }
                None => break,
            };
            if writer.send(budget, piece).await.is_err() {
                break;
            }
        }
        if !small.is_empty() {
            let _ = writer.send(budget, small.freeze()).await;
        }
        match writer.finish().await {
            Ok(p) => match (too_large, body_error) {
                (Some(max), _) => (Some(p), Err(AppendError::TooLarge(max))),
                (None, Some(e)) => (Some(p), Err(AppendError::Body(e))),
                (None, None) => (Some(p), Ok(())),
            },
            Err(e) => (None, Err(AppendError::Io(e))),
        }
    }
}

/// What writing an upload carries from one batch to the next.
struct Appending {
    path: PathBuf,
    /// Opened by the first batch, so that a small body costs one trip to a blocking thread.
    file: Option<File>,
    p: Progress,
    /// The file's length after the last batch; `None` before the first.
    file_len: Option<u64>,
    sync: Sync,
    flusher: Option<Flusher>,
    unflushed: u64,
}

impl Appending {
    /// Write, hash and count a batch of pieces (none: only open the file and read its
    /// length); each piece's share of the budget goes back once it is written.
    fn write(&mut self, batch: Vec<Piece>) -> io::Result<()> {
        let file = match &mut self.file {
            Some(f) => f,
            None => self
                .file
                .insert(OpenOptions::new().append(true).open(&self.path)?),
        };
        for (chunk, _permit) in batch {
            file.write_all(&chunk)?;
            self.p.hasher.update(&chunk);
            self.p.len += chunk.len() as u64;
            self.unflushed += chunk.len() as u64;
            if self.sync == Sync::Always && self.unflushed >= FLUSH_EVERY {
                if self.flusher.is_none() {
                    let from = self.p.len - self.unflushed;
                    self.flusher = Some(Flusher::start(file.try_clone()?, from));
                }
                if let Some(f) = &self.flusher {
                    f.nudge(self.p.len);
                }
                self.unflushed = 0;
            }
        }
        self.file_len = Some(file.metadata()?.len());
        Ok(())
    }
}

/// An upload's writer: pieces wait in `pending` while a batch is written on a blocking
/// thread, and go as the next batch the moment it is done. No thread is held between batches,
/// and no piece waits while none is being written.
struct Writer {
    /// The file's state, here while no batch is being written.
    idle: Option<Appending>,
    /// The batch being written, which gives the state back.
    busy: Option<tokio::task::JoinHandle<(Appending, io::Result<()>)>>,
    pending: Vec<Piece>,
    /// The first write error; nothing is written after it.
    failed: Option<io::Error>,
}

type Batch = Result<(Appending, io::Result<()>), tokio::task::JoinError>;

impl Writer {
    fn new(path: PathBuf, p: Progress, sync: Sync) -> Writer {
        Writer {
            idle: Some(Appending {
                path,
                file: None,
                p,
                file_len: None,
                sync,
                flusher: None,
                unflushed: 0,
            }),
            busy: None,
            pending: Vec::new(),
            failed: None,
        }
    }

    /// Take back the state from a written batch. After a failure nothing more is written,
    /// and what waits gives its share of the budget back at once: other uploads need it.
    fn collect(&mut self, done: Batch) {
        self.busy = None;
        match done {
            Ok((state, result)) => {
                self.idle = Some(state);
                if let Err(e) = result {
                    self.failed.get_or_insert(e);
                }
            }
            Err(join) => {
                self.failed
                    .get_or_insert(io::Error::other(join.to_string()));
            }
        }
        if self.failed.is_some() {
            self.pending.clear();
        }
    }

    /// Start writing what is pending, unless a batch is being written (or writing failed).
    fn start(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        self.run();
    }

    /// Start a batch of what is pending, even none, unless one is being written (or
    /// writing failed).
    fn run(&mut self) {
        if self.busy.is_some() || self.failed.is_some() {
            return;
        }
        let Some(mut state) = self.idle.take() else {
            return;
        };
        let batch = std::mem::take(&mut self.pending);
        self.busy = Some(tokio::task::spawn_blocking(move || {
            let result = state.write(batch);
            (state, result)
        }));
    }

    /// Wait for `fut` while batches go on: one that finishes meanwhile is taken back and
    /// what is pending starts at once.
    async fn meanwhile<F: std::future::Future>(&mut self, fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        loop {
            self.start();
            let Some(job) = self.busy.as_mut() else {
                return fut.await;
            };
            tokio::select! {
                out = &mut fut => return out,
                done = job => self.collect(done),
            }
        }
    }

    /// Queue a piece once the budget has room for it. `Err` once writing failed (reported by
    /// `finish`).
    async fn send(&mut self, budget: &Arc<tokio::sync::Semaphore>, b: Bytes) -> Result<(), ()> {
        if self.failed.is_some() {
            return Err(());
        }
        let units = b.len().div_ceil(BUDGET_UNIT).clamp(1, BUDGET_UNITS) as u32;
        let permit = self
            .meanwhile(budget.clone().acquire_many_owned(units))
            .await
            .map_err(drop)?;
        if self.failed.is_some() {
            return Err(());
        }
        self.pending.push((b, permit));
        if self.pending.len() >= QUEUE
            && let Some(job) = self.busy.take()
        {
            let done = job.await;
            self.collect(done);
        }
        self.start();
        if self.failed.is_some() {
            Err(())
        } else {
            Ok(())
        }
    }

    /// Write what is left and return the state. An empty body still opens the file once,
    /// for its length. The flusher finishes its last fsync on its own: waiting here would
    /// stall every chunk of a chunked upload on the disk. The fsync before the blob is
    /// committed (`BlobStore::commit`) is what makes an acknowledged blob durable.
    async fn finish(mut self) -> io::Result<Appended> {
        loop {
            let unopened = self.idle.as_ref().is_some_and(|s| s.file_len.is_none());
            let more = !self.pending.is_empty() || unopened;
            if self.busy.is_none() && (!more || self.failed.is_some()) {
                break;
            }
            self.run();
            if let Some(job) = self.busy.take() {
                let done = job.await;
                self.collect(done);
            }
        }
        if let Some(e) = self.failed {
            return Err(e);
        }
        let state = self
            .idle
            .take()
            .ok_or_else(|| io::Error::other("the upload's writer lost its file"))?;
        let file_len = state
            .file_len
            .ok_or_else(|| io::Error::other("the upload's file was never opened"))?;
        Ok(Appended {
            progress: state.p,
            file_len,
        })
    }
}

/// Writeback for a file written outside the upload path (a pull-through cache's download):
/// as for uploads, past `FLUSH_EVERY` bytes the disk writeback starts behind the writer and
/// what is on the disk leaves the page cache, so the fsync of the commit has little left.
pub struct Writeback {
    file: Option<File>,
    flusher: Option<Flusher>,
    unflushed: u64,
}

impl Writeback {
    /// For `file`, under `sync` (nothing is done under `Sync::Never`).
    pub(super) fn new(file: &File, sync: Sync) -> io::Result<Writeback> {
        Ok(Writeback {
            file: match sync {
                Sync::Always => Some(file.try_clone()?),
                Sync::Never => None,
            },
            flusher: None,
            unflushed: 0,
        })
    }

    /// `n` more bytes were written; the file now holds `len`. Blocking only to start the
    /// thread.
    pub fn wrote(&mut self, n: u64, len: u64) {
        self.unflushed += n;
        if self.unflushed < FLUSH_EVERY {
            return;
        }
        self.unflushed = 0;
        if self.flusher.is_none()
            && let Some(f) = self.file.take()
        {
            self.flusher = Some(Flusher::start(f, 0));
        }
        if let Some(f) = &self.flusher {
            f.nudge(len);
        }
    }
}

/// A thread that fsyncs the file while the writer goes on, so writeback overlaps receiving.
/// Dropping it lets the thread finish its queued fsync and exit.
///
/// Once bytes are on the disk, it also drops them from the page cache (drop-behind): a big
/// push then does not push out what is hot (the database, recent small blobs), and its
/// writes reuse the same few MiB of memory instead of claiming fresh pages all along, which
/// on a virtual machine can cost more than the copy itself. Uploads below FLUSH_EVERY, and
/// the last part of every upload, stay cached.
struct Flusher {
    tx: SyncSender<()>,
    /// Length of the file when the writer last asked for an fsync.
    written: Arc<AtomicU64>,
}

impl Flusher {
    /// `from`: the length of the file before this flusher's writer started.
    fn start(file: File, from: u64) -> Flusher {
        let (tx, rx) = sync_channel::<()>(1);
        let written = Arc::new(AtomicU64::new(from));
        let shared = written.clone();
        std::thread::spawn(move || {
            let mut dropped = from;
            while rx.recv().is_ok() {
                let upto = shared.load(Ordering::Acquire);
                if let Err(e) = file.sync_data() {
                    // Not fatal here: the commit's own fsync reports it.
                    tracing::debug!(error = %e, "background fsync of an upload failed");
                    return;
                }
                if let Some(len) = NonZeroU64::new(upto.saturating_sub(dropped)) {
                    // Only advice: if it fails the pages simply stay cached.
                    let _ = rustix::fs::fadvise(&file, dropped, Some(len), Advice::DontNeed);
                    dropped = upto;
                }
            }
        });
        Flusher { tx, written }
    }

    /// Ask for an fsync of the file's first `written` bytes (or more); if one is already
    /// queued, this one is folded into it.
    fn nudge(&self, written: u64) {
        self.written.store(written, Ordering::Release);
        // Full: an fsync is queued and will cover these bytes. Disconnected: the thread
        // stopped on an error, which the commit's own fsync reports.
        let _ = self.tx.try_send(());
    }
}

/// Recompute the progress of an upload file from its bytes.
pub(super) fn rehash(path: &Path, alg: Algorithm) -> io::Result<Progress> {
    let mut file = File::open(path)?;
    let mut p = Progress::new(alg);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(p);
        }
        p.hasher.update(&buf[..n]);
        p.len += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Send pieces to a writer of `path` until it refuses one, which it must: its writes
    /// fail. Every share of the budget must be back by then.
    async fn send_until_refused(path: PathBuf) -> Writer {
        let budget = Arc::new(tokio::sync::Semaphore::new(BUDGET_UNITS));
        let mut w = Writer::new(path, Progress::new(Algorithm::Sha256), Sync::Never);
        let mut refused = false;
        for _ in 0..4 * QUEUE {
            if w.send(&budget, Bytes::from(vec![1u8; CHUNK]))
                .await
                .is_err()
            {
                refused = true;
                break;
            }
        }
        assert!(refused, "pieces were taken after the write failed");
        assert_eq!(budget.available_permits(), BUDGET_UNITS);
        w
    }

    #[tokio::test]
    async fn a_file_that_cannot_be_opened_gives_every_share_of_the_budget_back() {
        // A folder where the upload file should be: the first batch fails to open it. Pieces
        // queued behind it must not keep their share of the budget, which every upload
        // draws on.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upload");
        std::fs::create_dir(&path).unwrap();
        let w = send_until_refused(path).await;
        assert!(w.finish().await.is_err());
    }

    #[tokio::test]
    async fn a_write_that_fails_midway_gives_every_share_of_the_budget_back() {
        // /dev/full opens, and every write to it fails (no space): the failure comes from
        // the write itself, as on a full disk.
        let w = send_until_refused(PathBuf::from("/dev/full")).await;
        let e = w.finish().await.err().unwrap();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
    }

    #[tokio::test]
    async fn an_append_reports_the_length_its_file_was_left_at() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upload");
        let budget = Arc::new(tokio::sync::Semaphore::new(BUDGET_UNITS));

        // Bytes the state does not know of: the hash counts what this writer wrote, the
        // length is the file's, so the commit's check sees them.
        std::fs::write(&path, b"12345").unwrap();
        let mut w = Writer::new(path.clone(), Progress::new(Algorithm::Sha256), Sync::Never);
        w.send(&budget, Bytes::from_static(b"abc")).await.unwrap();
        let done = w.finish().await.unwrap();
        assert_eq!((done.progress.len, done.file_len), (3, 8));
        let mut expected = Hasher::new(Algorithm::Sha256);
        expected.update(b"abc");
        assert_eq!(done.progress.hasher.clone().finish(), expected.finish());
        assert_eq!(std::fs::read(&path).unwrap(), b"12345abc");

        // An empty body still opens the file once, for its length.
        let w = Writer::new(path.clone(), done.progress, Sync::Never);
        let done = w.finish().await.unwrap();
        assert_eq!((done.progress.len, done.file_len), (3, 8));

        // Several batches: the length is the one after the last.
        let mut w = Writer::new(path.clone(), done.progress, Sync::Never);
        for _ in 0..3 * QUEUE {
            w.send(&budget, Bytes::from(vec![2u8; CHUNK]))
                .await
                .unwrap();
        }
        let done = w.finish().await.unwrap();
        let len = (3 + 3 * QUEUE * CHUNK) as u64;
        assert_eq!((done.progress.len, done.file_len), (len, len + 5));
        assert_eq!(budget.available_permits(), BUDGET_UNITS);

        // No file: the error of the open, and nothing made.
        std::fs::remove_file(&path).unwrap();
        let w = Writer::new(path.clone(), Progress::new(Algorithm::Sha256), Sync::Never);
        let e = w.finish().await.err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(!path.exists());
    }
}
