//! What the in-process benches share: their scale from the environment, and a blob pushed
//! through berth's own upload path.

use anyhow::Result;
use berth::core::{Registry, Uploader};
use berth::oci::{Digest, RepoName};
use bytes::Bytes;

/// The scale a bench runs at: `var` as a number (0.1 for a tenth), 1 when unset.
pub fn scale(var: &str) -> f64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

/// Push `bytes` as a blob of `repo` in one upload; returns its digest and length.
pub async fn push_blob(
    reg: &Registry,
    repo: &RepoName,
    who: &Uploader,
    bytes: Vec<u8>,
) -> Result<(Digest, usize)> {
    let d = Digest::sha256_of(&bytes);
    let len = bytes.len();
    let id = reg.start_upload(repo, who).await?;
    let body = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(bytes))]);
    reg.finish_upload(repo, &id, &d, Some(body)).await?;
    Ok((d, len))
}
