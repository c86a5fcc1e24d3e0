//! The big blob of the push and pull workloads.
//!
//! The client holds its bytes in memory and sends slices of them without copying, so that
//! the client costs as little as it can of the two cores it shares with the server. Every
//! push sends a new blob: the same random bytes followed by an 8-byte trailer that numbers
//! it, so that no push lands on a blob the registry already stores (a registry may skip work
//! for bytes it has), while the digest costs one hash of the shared bytes, made once.

use std::ops::Range;

use bytes::Bytes;
use futures_util::stream;
use reqwest::Body;
use sha2::{Digest as _, Sha256};

use crate::XorShift;

/// Size of the slices a body is sent in.
const PIECE: u64 = 1024 * 1024;

/// The bytes shared by every big blob, and their hash state.
pub struct Source {
    data: Bytes,
    prefix: Sha256,
}

impl Source {
    pub fn generate(size: u64) -> Source {
        let mut data = vec![0u8; size as usize];
        XorShift(0x0123_4567_89ab_cdef).fill(&mut data);
        let prefix = Sha256::new_with_prefix(&data);
        Source {
            data: data.into(),
            prefix,
        }
    }

    /// Blob number `n`: the shared bytes, then `n` as 8 big-endian bytes.
    pub fn blob(&self, n: u64) -> Blob {
        let trailer = Bytes::copy_from_slice(&n.to_be_bytes());
        let hash = self.prefix.clone().chain_update(&trailer).finalize();
        Blob {
            size: (self.data.len() + trailer.len()) as u64,
            digest: format!("sha256:{hash:x}"),
            head: self.data.clone(),
            trailer,
        }
    }
}

/// One blob to push (cheap: it shares the source's bytes).
pub struct Blob {
    pub size: u64,
    pub digest: String,
    head: Bytes,
    trailer: Bytes,
}

impl Blob {
    /// Bytes `range` of the blob as a request body of unknown length, in PIECE slices.
    pub fn body(&self, range: Range<u64>) -> Body {
        let head_len = self.head.len() as u64;
        let mut pieces = Vec::new();
        let mut at = range.start;
        while at < range.end {
            let (part, base) = if at < head_len {
                (&self.head, 0)
            } else {
                (&self.trailer, head_len)
            };
            let end = range.end.min(base + part.len() as u64).min(at + PIECE);
            pieces.push(part.slice((at - base) as usize..(end - base) as usize));
            at = end;
        }
        Body::wrap_stream(stream::iter(
            pieces.into_iter().map(Ok::<_, std::io::Error>),
        ))
    }
}
