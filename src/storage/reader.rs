//! Streaming a blob to the network from a memory mapping of the file, one window at a time:
//! the only copy is the kernel's, from the page cache into the socket, and what is mapped at
//! once is bounded (the window going out and the next one) whatever the blob's size.
//!
//! Mapping a window (and faulting its pages in, which reads the disk) runs on a blocking
//! thread for that window only; a download holds no thread while its client reads, so a
//! thousand slow clients do not take the threads the database and the uploads need. The next
//! window is mapped while the current one goes out, and the kernel is asked to read further
//! ahead, so the disk sees one sequential stream.

use std::fs::File;
use std::future::Future;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use tokio::task::JoinHandle;

/// Bytes mapped at a time.
const WINDOW: u64 = 4 * 1024 * 1024;
/// Bytes past the window being mapped that the kernel is asked to read ahead, so the disk
/// stays busy while a window goes out.
const AHEAD: u64 = 4 * WINDOW;
/// Ranges up to this size are read into memory rather than mapped: cheaper than a mapping
/// for the small blobs (configs, small layers) that most pulls are made of.
const SMALL: u64 = 64 * 1024;
/// The pieces a window is handed out in.
const PIECE: usize = 1024 * 1024;
/// Mapping offsets must be page-aligned (4 KiB pages; a multiple would do as well).
const PAGE: u64 = 4096;

/// The bytes of a blob range, as a stream of pieces. The first piece is ready when `open`
/// returns, so a small blob's headers and body leave in one write.
pub struct BlobStream {
    file: Arc<File>,
    /// What is left of the window going out.
    rest: Bytes,
    /// The next window, being mapped.
    mapping: Option<JoinHandle<io::Result<Bytes>>>,
    /// Where the window after that one starts, and where the range ends.
    next: u64,
    end: u64,
    /// How far the kernel has been asked to read ahead.
    advised: u64,
}

impl BlobStream {
    /// Start mapping the next window, if any is left.
    fn map_next(&mut self) {
        if self.next >= self.end {
            return;
        }
        let (file, at, end, advised) = (self.file.clone(), self.next, self.end, self.advised);
        let (window_end, want) = window(at, end);
        self.advised = advised.max(want);
        self.next = window_end;
        self.mapping = Some(tokio::task::spawn_blocking(move || {
            map_window(&file, at, end, advised)
        }));
    }

    /// The next piece of the window going out.
    fn piece(&mut self) -> Bytes {
        let n = PIECE.min(self.rest.len());
        self.rest.split_to(n)
    }

    fn fail(&mut self, e: io::Error) -> Poll<Option<io::Result<Bytes>>> {
        self.mapping = None;
        self.next = self.end;
        Poll::Ready(Some(Err(e)))
    }
}

impl Stream for BlobStream {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // The next window is mapped while this one goes out.
        if self.mapping.is_none() {
            self.map_next();
        }
        if !self.rest.is_empty() {
            return Poll::Ready(Some(Ok(self.piece())));
        }
        let Some(mapping) = self.mapping.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(mapping).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Ok(window))) => {
                self.mapping = None;
                self.rest = window;
                self.map_next();
                Poll::Ready(Some(Ok(self.piece())))
            }
            Poll::Ready(Ok(Err(e))) => self.fail(e),
            Poll::Ready(Err(e)) => self.fail(io::Error::other(e)),
        }
    }
}

/// Open `len` bytes of the blob file at `path` from `start`, with the first piece read.
/// Opening happens before this returns, so a missing file is an error here, not a broken
/// body later.
pub(super) async fn open(path: PathBuf, start: u64, len: u64) -> io::Result<BlobStream> {
    tokio::task::spawn_blocking(move || {
        let mut file = File::open(&path)?;
        // Mapping past the end of a file would kill the process (SIGBUS) on first touch:
        // a file shorter than the range asked for is an error.
        let actual = file.metadata()?.len();
        let end = start.saturating_add(len);
        if actual < end {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} has {actual} bytes, fewer than asked for",
                    path.display()
                ),
            ));
        }
        let (rest, next, advised) = if len == 0 {
            (Bytes::new(), end, end)
        } else if len <= SMALL {
            let mut buf = vec![0; len as usize];
            file.seek(SeekFrom::Start(start))?;
            file.read_exact(&mut buf)?;
            (Bytes::from(buf), end, end)
        } else {
            let (window_end, want) = window(start, end);
            (map_window(&file, start, end, start)?, window_end, want)
        };
        Ok(BlobStream {
            file: Arc::new(file),
            rest,
            mapping: None,
            next,
            end,
            advised,
        })
    })
    .await
    .map_err(io::Error::other)?
}

/// The window from `at` (its end) and how far the kernel should have read ahead by then.
fn window(at: u64, end: u64) -> (u64, u64) {
    let window_end = (at + WINDOW).min(end);
    (window_end, (window_end + AHEAD).min(end))
}

/// Map the window from `at`, first asking the kernel to read ahead what it has not been
/// asked for yet (from `advised`).
fn map_window(file: &File, at: u64, end: u64, advised: u64) -> io::Result<Bytes> {
    let (window_end, want) = window(at, end);
    advise(file, advised, want);
    map(file, at, window_end - at)
}

/// Ask the kernel to read `[from, to)` of `file` ahead (nothing when empty).
fn advise(file: &File, from: u64, to: u64) {
    if let Some(n) = std::num::NonZeroU64::new(to.saturating_sub(from)) {
        let _ = rustix::fs::fadvise(file, from, Some(n), rustix::fs::Advice::WillNeed);
    }
}

/// Map `len` bytes of a blob from `start`, read-only. Sending from the mapping saves the copy
/// a read() would make: the kernel copies from the page cache straight into the socket.
/// The mapping goes once the connection has written its last byte.
fn map(file: &File, start: u64, len: u64) -> io::Result<Bytes> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    let aligned = start - start % PAGE;
    let skip = (start - aligned) as usize;
    let mut opts = memmap2::MmapOptions::new();
    // Fault the whole window in with the mapping (one call, on this blocking thread, reading
    // what the read-ahead has not brought in yet), so that sending it never waits for the
    // disk on an async worker.
    opts.offset(aligned).len(skip + len as usize).populate();
    // SAFETY: blob files are written once, renamed into place and never modified or
    // truncated afterwards (garbage collection unlinks them, which keeps a mapped inode
    // alive), so the mapping stays valid and its contents constant while it is in use.
    #[allow(unsafe_code)]
    let map = unsafe { opts.map(file)? };
    let _ = map.advise(memmap2::Advice::Sequential);
    Ok(Bytes::from_owner(map).slice(skip..))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    async fn read_all(path: &std::path::Path, start: u64, len: u64) -> (Vec<u8>, usize) {
        let mut s = open(path.to_path_buf(), start, len).await.unwrap();
        let (mut out, mut pieces) = (Vec::new(), 0);
        while let Some(piece) = s.next().await {
            let piece = piece.unwrap();
            assert!(!piece.is_empty() && piece.len() <= PIECE);
            out.extend_from_slice(&piece);
            pieces += 1;
        }
        (out, pieces)
    }

    #[tokio::test]
    async fn ranges_across_windows_come_back_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let size = 2 * WINDOW as usize + 3 * PIECE + 12_345;
        let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let cases = [
            (0, size),
            // Not page-aligned, crossing both window boundaries.
            (4097, 2 * WINDOW as usize + 10),
            (WINDOW as usize - 1, 2),
            (size - 1, 1),
            (123, SMALL as usize),
            (123, SMALL as usize + 1),
            (7, 0),
        ];
        for (start, len) in cases {
            let (got, pieces) = read_all(&path, start as u64, len as u64).await;
            assert_eq!(got.len(), len, "range {start}+{len}");
            assert!(
                got == data[start..start + len],
                "range {start}+{len} differs"
            );
            // Windows from the range's start, each in pieces of at most PIECE.
            let expected: usize = (0..len)
                .step_by(WINDOW as usize)
                .map(|w| (len - w).min(WINDOW as usize).div_ceil(PIECE))
                .sum();
            assert_eq!(pieces, expected, "range {start}+{len}");
        }
        // A range past the end is refused when opening, not cut short.
        assert!(open(path.clone(), 1, size as u64).await.is_err());
    }
}
