//! Streaming an upload body to its file: hashed while written, on a blocking thread, while the
//! async side keeps receiving. Large uploads start the disk writeback early (a second thread
//! fsyncs behind the writer), so the final fsync before the acknowledgement has little left.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

use super::{Store, Sync};
use crate::oci::{Algorithm, Hasher, UploadId};

/// Bytes handed to the writer thread at once; the channel holds a few of them, so an upload
/// never buffers more than `CHUNK * QUEUE` in memory whatever its size.
const CHUNK: usize = 256 * 1024;
const QUEUE: usize = 8;
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
}

impl Store {
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
        let path = self.upload_path(id);
        let sync = self.sync;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(QUEUE);
        let writer = tokio::task::spawn_blocking(move || -> io::Result<Progress> {
            let file = OpenOptions::new().append(true).open(&path)?;
            write_loop(file, progress, || rx.blocking_recv(), sync)
        });

        let mut body_error = None;
        let mut buf = BytesMut::with_capacity(CHUNK);
        loop {
            match body.next().await {
                Some(Ok(b)) => {
                    buf.extend_from_slice(&b);
                    if buf.len() >= CHUNK {
                        let full = std::mem::replace(&mut buf, BytesMut::with_capacity(CHUNK));
                        if tx.send(full.freeze()).await.is_err() {
                            break; // The writer stopped on an I/O error, reported below.
                        }
                    }
                }
                Some(Err(e)) => {
                    body_error = Some(e.to_string());
                    break;
                }
                None => break,
            }
        }
        if !buf.is_empty() {
            let _ = tx.send(buf.freeze()).await;
        }
        drop(tx);
        match writer.await {
            Ok(Ok(p)) => match body_error {
                Some(e) => (Some(p), Err(AppendError::Body(e))),
                None => (Some(p), Ok(())),
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
                flusher = Some(Flusher::start(file.try_clone()?));
            }
            if let Some(f) = &flusher {
                f.nudge();
            }
            unflushed = 0;
        }
    }
    // The flusher finishes its last fsync on its own: waiting here would stall every chunk
    // of a chunked upload on the disk. The fsync before the blob is committed
    // (`Store::commit_upload`) is what makes an acknowledged blob durable.
    drop(flusher);
    Ok(p)
}

/// A thread that fsyncs the file while the writer goes on, so writeback overlaps receiving.
/// Dropping it lets the thread finish its queued fsync and exit.
struct Flusher {
    tx: SyncSender<()>,
}

impl Flusher {
    fn start(file: File) -> Flusher {
        let (tx, rx) = sync_channel::<()>(1);
        std::thread::spawn(move || {
            while rx.recv().is_ok() {
                if let Err(e) = file.sync_data() {
                    // Not fatal here: the commit's own fsync reports it.
                    tracing::debug!(error = %e, "background fsync of an upload failed");
                    return;
                }
            }
        });
        Flusher { tx }
    }

    /// Ask for an fsync; if one is already queued, this one is folded into it.
    fn nudge(&self) {
        match self.tx.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
        }
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
