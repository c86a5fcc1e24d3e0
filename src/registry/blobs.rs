//! Blob reads and deletes.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

use super::{ApiResult, hv};
use std::sync::Arc;

use crate::core::Registry;
use crate::core::cache::Cache;
use crate::oci::{Digest, RepoName};

/// GET|HEAD /v2/<name>/blobs/<digest>, with `Range: bytes=a-b` → 206.
pub async fn get(
    reg: &Registry,
    cache: Option<&Arc<Cache>>,
    repo: &RepoName,
    digest: &Digest,
    headers: &HeaderMap,
    head: bool,
) -> ApiResult {
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let resp = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header("Docker-Content-Digest", hv(digest.to_string()))
        .header(header::ETAG, hv(format!("\"{digest}\"")))
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CACHE_CONTROL, "max-age=31536000");
    let blob = match cache {
        Some(c) => reg.cached_blob(c, repo, digest, range, !head).await?,
        None => reg.open_blob(repo, digest, range, !head).await?,
    };
    let (status, len, resp) = match blob.range {
        None => (StatusCode::OK, blob.size, resp),
        Some((start, end)) => (
            StatusCode::PARTIAL_CONTENT,
            end - start + 1,
            resp.header(
                header::CONTENT_RANGE,
                hv(format!("bytes {start}-{end}/{}", blob.size)),
            ),
        ),
    };
    let resp = resp.status(status).header(header::CONTENT_LENGTH, len);
    let body = match blob.body {
        Some(stream) => Body::from_stream(stream),
        None => Body::empty(),
    };
    Ok(resp.body(body).expect("valid response"))
}

/// DELETE /v2/<name>/blobs/<digest>
pub async fn delete(reg: &Registry, repo: &RepoName, digest: &Digest) -> ApiResult {
    reg.delete_blob(repo, digest).await?;
    Ok(Response::builder()
        .status(StatusCode::ACCEPTED)
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .expect("valid response"))
}
