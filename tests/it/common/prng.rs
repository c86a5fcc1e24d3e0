//! Cheap, seedable pseudo-random test payloads: random enough that nothing can shortcut them
//! (compression, deduplication), reproducible from a seed, and fast in a debug build.

use bytes::Bytes;

/// SplitMix64.
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Prng {
        Prng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// Overwrite `buf` with the next bytes of the stream.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut words = buf.chunks_exact_mut(8);
        for w in &mut words {
            w.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let tail = words.into_remainder();
        let last = self.next_u64().to_le_bytes();
        let n = tail.len();
        tail.copy_from_slice(&last[..n]);
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
}

/// A long pseudo-random stream of `chunk`-sized pieces, for payloads too large to hold in
/// memory. Filling every byte from the generator runs at ~160 MB/s in a debug build, too slow
/// for gigabytes, so each chunk is a window at a random offset into a fixed random block:
/// every piece costs a reference count, and consecutive pieces differ.
pub struct Stream {
    /// Twice `window` bytes long: the random block followed by a copy of it, so any window
    /// start yields `chunk` contiguous bytes.
    base: Bytes,
    window: usize,
    chunk: usize,
    prng: Prng,
    remaining: u64,
}

impl Stream {
    pub fn new(seed: u64, total: u64, chunk: usize) -> Stream {
        let window = 4 * chunk;
        let mut prng = Prng::new(seed);
        let mut block = prng.bytes(window);
        block.extend_from_within(..);
        Stream {
            base: Bytes::from(block),
            window,
            chunk,
            prng,
            remaining: total,
        }
    }
}

impl Iterator for Stream {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.remaining == 0 {
            return None;
        }
        let n = self
            .chunk
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let start = (self.prng.next_u64() % self.window as u64) as usize;
        self.remaining -= n as u64;
        Some(self.base.slice(start..start + n))
    }
}
