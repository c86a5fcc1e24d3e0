//! Blob uploads: monolithic, chunked with `Content-Range`, streamed without a length, and
//! cross-repository mounts.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt as _;

use super::error::range_value;
use super::{ApiError, ApiResult, Query, body_stream, hv, proxy};
use crate::auth::Subject;
use crate::auth::bearer::Holder;
use crate::core::{Error, Registry, Uploader};
use crate::http::origin::Origin;
use crate::oci::{Digest, RepoName, UploadId};

fn location(origin: &Origin, repo: &RepoName, id: &UploadId) -> String {
    origin.url(&format!("/v2/{repo}/blobs/uploads/{id}"))
}

fn accepted(origin: &Origin, repo: &RepoName, id: &UploadId, len: u64) -> Response {
    Response::builder()
        .status(StatusCode::ACCEPTED)
        .header(header::LOCATION, hv(location(origin, repo, id)))
        .header(header::RANGE, range_value(len))
        .header("Docker-Upload-UUID", hv(id.as_str()))
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .expect("valid response")
}

fn created(origin: &Origin, repo: &RepoName, digest: &Digest) -> Response {
    Response::builder()
        .status(StatusCode::CREATED)
        .header(
            header::LOCATION,
            hv(origin.url(&format!("/v2/{repo}/blobs/{digest}"))),
        )
        .header("Docker-Content-Digest", hv(digest.to_string()))
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .expect("valid response")
}

fn query_digest(query: &Query, key: &str) -> Result<Option<Digest>, Error> {
    query
        .get(key)
        .map(|d| Digest::parse(d).map_err(|e| Error::DigestInvalid(format!("{key}: {e}"))))
        .transpose()
}

/// Who opens a session, for the per-credential cap: the credential (a robot token counts on
/// its own, apart from its owner) and its name.
pub fn uploader(subject: &Subject) -> Uploader {
    let key = match subject.holder {
        Holder::Anonymous => "a".to_string(),
        Holder::User(id) => format!("u:{id}"),
        Holder::Robot(id) => format!("t:{id}"),
    };
    let name = match &subject.name {
        Some(n) => format!("{n:?}"),
        None => "anonymous".to_string(),
    };
    Uploader { key, name }
}

/// POST /v2/<name>/blobs/uploads/ — also `?digest=<digest>` (monolithic) and
/// `?mount=<digest>&from=<other name>` (cross-repository mount).
/// `mount_ok` says whether the caller may read the `from` repository.
pub async fn start(
    reg: &Registry,
    origin: &Origin,
    repo: &RepoName,
    query: &Query,
    mount_ok: bool,
    who: &Uploader,
    req: Request,
) -> ApiResult {
    if let Some(mount) = query_digest(query, "mount")?
        && let Some(from) = query.get("from").filter(|_| mount_ok)
    {
        let from = RepoName::parse(from).map_err(|_| ApiError::NameInvalid)?;
        if reg.mount_blob(repo, &from, &mount).await? {
            return Ok(created(origin, repo, &mount));
        }
    }
    // Not mountable: an ordinary upload session, as the spec says.
    let digest = query_digest(query, "digest")?;
    let id = reg.start_upload(repo, who).await?;
    let Some(digest) = digest else {
        return Ok(accepted(origin, repo, &id, 0));
    };
    let body = body_stream(req.into_body());
    match reg.finish_upload(repo, &id, &digest, body).await {
        Ok(_) => Ok(created(origin, repo, &digest)),
        Err(e) => {
            // A failed single-request upload leaves nothing behind.
            if let Err(cancel) = reg.cancel_upload(repo, &id).await {
                tracing::warn!(error = %cancel, "could not drop a failed monolithic upload");
            }
            Err(e.into())
        }
    }
}

/// GET /v2/<name>/blobs/uploads/<id>
pub async fn status(reg: &Registry, origin: &Origin, repo: &RepoName, id: &UploadId) -> ApiResult {
    let len = reg.upload_status(repo, id).await?;
    let mut resp = accepted(origin, repo, id, len);
    *resp.status_mut() = StatusCode::NO_CONTENT;
    Ok(resp)
}

/// `Content-Range: <start>-<end>` (also accepted with a `bytes ` or `bytes=` prefix).
fn content_range(v: &str) -> Option<(u64, u64)> {
    let v = v.trim();
    let v = v
        .strip_prefix("bytes")
        .map(|r| r.trim_start_matches([' ', '=']))
        .unwrap_or(v);
    let v = v.split('/').next()?;
    let (a, b) = v.split_once('-')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// PATCH /v2/<name>/blobs/uploads/<id> — a chunk with `Content-Range`, or a streamed body
/// of unknown length (chunked transfer encoding), as `docker push` sends.
pub async fn patch(
    reg: &Registry,
    origin: &Origin,
    repo: &RepoName,
    id: &UploadId,
    req: Request,
) -> ApiResult {
    let range =
        match req.headers().get(header::CONTENT_RANGE) {
            None => None,
            Some(v) => Some(v.to_str().ok().and_then(content_range).ok_or_else(|| {
                Error::UploadInvalid("Content-Range must be <start>-<end>".into())
            })?),
        };
    let streamed = range.is_none() && !req.headers().contains_key(header::CONTENT_LENGTH);
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = received.clone();
    let body = req.into_body().into_data_stream().map(move |chunk| {
        if let Ok(c) = &chunk {
            counted.fetch_add(c.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        chunk
    });
    let len = reg.append_upload(repo, id, range, body).await?;
    if streamed && received.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        proxy::empty_stream(id);
    }
    Ok(accepted(origin, repo, id, len))
}

/// PUT /v2/<name>/blobs/uploads/<id>?digest=<digest>, with an optional last chunk.
pub async fn put(
    reg: &Registry,
    origin: &Origin,
    repo: &RepoName,
    id: &UploadId,
    query: &Query,
    req: Request,
) -> ApiResult {
    let digest = query_digest(query, "digest")?
        .ok_or_else(|| Error::DigestInvalid("the digest query parameter is required".into()))?;
    let forwarded = proxy::forwarding_headers(req.headers());
    let body = body_stream(req.into_body());
    match reg.finish_upload(repo, id, &digest, body).await {
        Ok(_) => {
            proxy::forget(id);
            Ok(created(origin, repo, &digest))
        }
        Err(crate::core::Error::DigestInvalid(why)) => {
            Err(proxy::explain(id, why, &forwarded, &origin.client).into())
        }
        Err(e) => Err(e.into()),
    }
}

/// DELETE /v2/<name>/blobs/uploads/<id>
pub async fn cancel(reg: &Registry, repo: &RepoName, id: &UploadId) -> ApiResult {
    reg.cancel_upload(repo, id).await?;
    proxy::forget(id);
    Ok(Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::empty())
        .expect("valid response"))
}

#[cfg(test)]
mod tests {
    use super::content_range;

    #[test]
    fn content_ranges() {
        assert_eq!(content_range("0-99"), Some((0, 99)));
        assert_eq!(content_range("bytes 100-199/*"), Some((100, 199)));
        assert_eq!(content_range("bytes=5-6"), Some((5, 6)));
        assert_eq!(content_range("x-1"), None);
        assert_eq!(content_range("5"), None);
    }
}
