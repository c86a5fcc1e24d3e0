//! Streaming a blob to the network: a blocking thread reads ahead into fresh buffers while
//! the connection writes the previous ones, so a pull costs one copy out of the page cache
//! and a bounded amount of memory (`CHUNK * QUEUE`) whatever the blob's size.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;

use super::Store;
use crate::oci::Digest;

const CHUNK: usize = 1024 * 1024;
const QUEUE: usize = 3;

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

impl Store {
    /// Open `len` bytes of blob `d` from `start`. Opening happens before this returns, so a
    /// missing file is an error here, not a broken body later.
    pub async fn read_blob(&self, d: &Digest, start: u64, len: u64) -> io::Result<BlobStream> {
        let path = self.blob_path(d);
        let file = tokio::task::spawn_blocking(move || -> io::Result<File> {
            let mut f = File::open(path)?;
            f.seek(SeekFrom::Start(start))?;
            Ok(f)
        })
        .await
        .map_err(io::Error::other)??;
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
        tokio::task::spawn_blocking(move || {
            let mut rest = file.take(len);
            loop {
                let mut buf = Vec::with_capacity(CHUNK);
                // read_to_end fills spare capacity without zeroing it first.
                let item = match (&mut rest).take(CHUNK as u64).read_to_end(&mut buf) {
                    Ok(0) => return,
                    Ok(_) => Ok(Bytes::from(buf)),
                    Err(e) => Err(e),
                };
                let failed = item.is_err();
                // A closed channel means the client went away: stop reading.
                if tx.blocking_send(item).is_err() || failed {
                    return;
                }
            }
        });
        Ok(BlobStream { rx })
    }
}
