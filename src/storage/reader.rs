//! Streaming a blob to the network from a memory mapping of the file, one window at a time:
//! the only copy is the kernel's, from the page cache into the socket, and what is mapped at
//! once is bounded (`WINDOW` plus the pieces queued) whatever the blob's size.

use std::fs::File;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;

use std::path::PathBuf;

const CHUNK: usize = 1024 * 1024;
const QUEUE: usize = 3;
/// Bytes mapped at a time.
const WINDOW: u64 = 4 * 1024 * 1024;
/// Bytes past the current window that the kernel is asked to read ahead, so the disk stays
/// busy while a window goes out.
const AHEAD: u64 = 4 * WINDOW;
/// Mapping offsets must be page-aligned (4 KiB pages; a multiple would do as well).
const PAGE: u64 = 4096;

/// The bytes of a blob range, as a stream of chunks.
pub struct BlobStream {
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
}

impl Stream for BlobStream {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// Open `len` bytes of the blob file at `path` from `start`. Opening happens before this
/// returns, so a missing file is an error here, not a broken body later.
pub(super) async fn open(path: PathBuf, start: u64, len: u64) -> io::Result<BlobStream> {
    let file = tokio::task::spawn_blocking(move || -> io::Result<File> {
        let file = File::open(&path)?;
        // Mapping past the end of a file would kill the process (SIGBUS) on first touch:
        // a file shorter than the range asked for is an error.
        let actual = file.metadata()?.len();
        if actual < start.saturating_add(len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} has {actual} bytes, fewer than asked for",
                    path.display()
                ),
            ));
        }
        Ok(file)
    })
    .await
    .map_err(io::Error::other)??;
    let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
    tokio::task::spawn_blocking(move || {
        let end = start + len;
        let mut at = start;
        let mut advised = start;
        while at < end {
            let window_end = (at + WINDOW).min(end);
            // Keep the read-ahead AHEAD past this window: one sequential stream of
            // requests for the disk instead of a page fault at a time.
            let want = (window_end + AHEAD).min(end);
            if let Some(n) = std::num::NonZeroU64::new(want.saturating_sub(advised)) {
                let _ = rustix::fs::fadvise(&file, advised, Some(n), rustix::fs::Advice::WillNeed);
                advised = want;
            }
            let window = match map(&file, at, window_end - at) {
                Ok(w) => w,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            let mut off = 0;
            while off < window.len() {
                let next = (off + CHUNK).min(window.len());
                // A closed channel means the client went away: stop.
                if tx.blocking_send(Ok(window.slice(off..next))).is_err() {
                    return;
                }
                off = next;
            }
            at = window_end;
        }
    });
    Ok(BlobStream { rx })
}

/// Map `len` bytes of a blob from `start`, read-only. Sending from the mapping saves the copy
/// a read() would make: the kernel copies from the page cache straight into the socket, as
/// sendfile(2) does. Windows keep the mapped (and so resident) part of a blob small: a window
/// is unmapped once the connection has written its last piece.
fn map(file: &File, start: u64, len: u64) -> io::Result<Bytes> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    let aligned = start - start % PAGE;
    let skip = (start - aligned) as usize;
    let mut opts = memmap2::MmapOptions::new();
    // Fault the whole window in with the mapping (one call, reading what the read-ahead has
    // not brought in yet) rather than a page at a time as the socket copies from it.
    opts.offset(aligned).len(skip + len as usize).populate();
    // SAFETY: blob files are written once, renamed into place and never modified or
    // truncated afterwards (garbage collection unlinks them, which keeps a mapped inode
    // alive), so the mapping stays valid and its contents constant while it is in use.
    #[allow(unsafe_code)]
    let map = unsafe { opts.map(file)? };
    let _ = map.advise(memmap2::Advice::Sequential);
    Ok(Bytes::from_owner(map).slice(skip..))
}
