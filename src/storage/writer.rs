//! Streaming an upload body to its file: hashed while written, on a blocking thread, while the
//! async side keeps receiving. Large uploads start the disk writeback early (a second thread
//! fsyncs behind the writer), so the final fsync before the acknowledgement has little left.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::num::NonZeroU64;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use rustix::fs::Advice;

use super::{Staging, Sync};
use crate::oci::{Algorithm, Hasher, UploadId};

/// Small body frames are gathered into pieces of this size before they go to the writer
/// thread; frames of at least `PASS_THROUGH` bytes go as they are, without a copy (cut into
/// pieces of at most `CHUNK`). The channel holds `QUEUE` pieces, so an upload holds a few MiB
/// at most whatever its size.
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
    /// Returns the new progress when it is known (always, unless writing failed) and whether
    /// the whole body arrived.
    pub async fn append<S, E>(
        &self,
        id: &UploadId,
        progress: Progress,
        mut body: S,
    ) -> (Option<Progress>, Result<(), AppendError>)
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        let path = self.path(id);
        let sync = self.sync;
        let progress_len = progress.len;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Piece>(QUEUE);
        let writer = tokio::task::spawn_blocking(move || -> io::Result<Progress> {
            let file = OpenOptions::new().append(true).open(&path)?;
            // The permit goes back once the piece is written.
            write_loop(
                file,
                progress,
                || rx.blocking_recv().map(|(b, _permit)| b),
                sync,
            )
        });
        let budget = self.budget.clone();
        // `Err` when the writer stopped (an I/O error, reported below).
        let send = |b: Bytes| {
            let (tx, budget) = (tx.clone(), budget.clone());
            async move {
                let units = b.len().div_ceil(BUDGET_UNIT).clamp(1, BUDGET_UNITS) as u32;
                let permit = budget.acquire_many_owned(units).await.map_err(drop)?;
                tx.send((b, permit)).await.map_err(drop)
            }
        };

        let mut body_error = None;
        let mut too_large = None;
        let mut small = BytesMut::new();
        let mut received = progress_len;
        loop {
            let next = body.next().await;
            if let (Some(Ok(b)), Some(max)) = (&next, self.max_upload) {
                received += b.len() as u64;
                if received > max {
                    too_large = Some(max);
                    break;
                }
            }
            let piece = match next {
                Some(Ok(mut b)) if b.len() >= PASS_THROUGH => {
                    if !small.is_empty() && send(small.split().freeze()).await.is_err() {
                        break;
                    }
                    let mut stopped = false;
                    while b.len() > CHUNK && !stopped {
                        stopped = send(b.split_to(CHUNK)).await.is_err();
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
            if send(piece).await.is_err() {
                break;
            }
        }
        if !small.is_empty() {
            let _ = send(small.freeze()).await;
        }
        drop(tx);
        match writer.await {
            Ok(Ok(p)) => match (too_large, body_error) {
                (Some(max), _) => (Some(p), Err(AppendError::TooLarge(max))),
                (None, Some(e)) => (Some(p), Err(AppendError::Body(e))),
                (None, None) => (Some(p), Ok(())),
            },
            Ok(Err(e)) => (None, Err(AppendError::Io(e))),
            Err(join) => (
                None,
                Err(AppendError::Io(io::Error::other(join.to_string()))),
            ),
        }
    }
}

fn write_loop(
    mut file: File,
    mut p: Progress,
    mut next: impl FnMut() -> Option<Bytes>,
    sync: Sync,
) -> io::Result<Progress> {
    let mut flusher: Option<Flusher> = None;
    let mut unflushed = 0u64;
    while let Some(chunk) = next() {
        file.write_all(&chunk)?;
        p.hasher.update(&chunk);
        p.len += chunk.len() as u64;
        unflushed += chunk.len() as u64;
        if sync == Sync::Always && unflushed >= FLUSH_EVERY {
            if flusher.is_none() {
                flusher = Some(Flusher::start(file.try_clone()?, p.len - unflushed));
            }
            if let Some(f) = &flusher {
                f.nudge(p.len);
            }
            unflushed = 0;
        }
    }
    // The flusher finishes its last fsync on its own: waiting here would stall every chunk
    // of a chunked upload on the disk. The fsync before the blob is committed
    // (`BlobStore::commit`) is what makes an acknowledged blob durable.
    drop(flusher);
    Ok(p)
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
