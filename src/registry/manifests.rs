//! Manifest push, pull and delete.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::Response;
use http_body_util::{BodyExt, Limited};

use super::{ApiResult, hv};
use std::sync::Arc;

use crate::core::cache::Cache;
use crate::core::{Error, ManifestRead, Registry};
use crate::http::origin::Origin;
use crate::oci::manifest::MAX_MANIFEST_BYTES;
use crate::oci::{Reference, RepoName};

/// GET|HEAD /v2/<name>/manifests/<reference>: the exact stored bytes and media type. In a
/// repository of the pull-through cache the tag may be checked upstream and what is missing
/// fetched; served stale, a `Warning` says so.
pub async fn get(
    reg: &Registry,
    cache: Option<&Arc<Cache>>,
    repo: &RepoName,
    reference: &Reference,
    head: bool,
    puller: &str,
) -> ApiResult {
    let read = match cache {
        Some(c) => {
            reg.cached_manifest(c, repo, reference, !head, puller)
                .await?
        }
        None => reg.get_manifest(repo, reference, !head, puller).await?,
    };
    Ok(respond(read, head))
}

/// `get` under access decided at auth epoch `epoch` (see `auth::Deferred`); `None` if the
/// epoch has moved and access must be decided again.
pub async fn get_at_epoch(
    reg: &Registry,
    repo: &RepoName,
    reference: &Reference,
    head: bool,
    epoch: i64,
    puller: &str,
) -> Option<ApiResult> {
    let read = reg
        .get_manifest_at_epoch(repo, reference, !head, epoch, puller)
        .await?;
    Some(read.map(|m| respond(m, head)).map_err(Into::into))
}

fn respond(m: ManifestRead, head: bool) -> Response {
    let body = if head {
        Body::empty()
    } else {
        crate::metrics::global().pulls.inc();
        Body::from(m.content)
    };
    let mut resp = Response::builder();
    if let Some(why) = &m.warning {
        // RFC 7234's "110 Response is Stale"; the text is ours, quotes taken out.
        let text = why.replace(['"', '\\'], "'");
        if let Ok(v) = axum::http::HeaderValue::from_str(&format!("110 berth \"stale: {text}\"")) {
            resp = resp.header(header::WARNING, v);
        }
    }
    resp.header(header::CONTENT_TYPE, hv(&m.media_type))
        .header(header::CONTENT_LENGTH, m.size)
        .header("Docker-Content-Digest", hv(m.digest.to_string()))
        .header(header::ETAG, hv(format!("\"{}\"", m.digest)))
        .body(body)
        .expect("valid response")
}

/// PUT /v2/<name>/manifests/<reference>
pub async fn put(
    reg: &Registry,
    origin: &Origin,
    repo: &RepoName,
    reference: &Reference,
    pusher: Option<&str>,
    req: Request,
) -> ApiResult {
    let too_big = || {
        Error::SizeInvalid(format!(
            "manifest is larger than {MAX_MANIFEST_BYTES} bytes"
        ))
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_MANIFEST_BYTES as u64) {
        return Err(too_big().into());
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = Limited::new(req.into_body(), MAX_MANIFEST_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                too_big()
            } else {
                Error::ManifestInvalid(format!("reading the manifest failed: {e}"))
            }
        })?
        .to_bytes();
    let pushed = reg
        .put_manifest(repo, reference, content_type.as_deref(), body, pusher)
        .await?;
    crate::metrics::global().pushes.inc();
    let mut resp = Response::builder()
        .status(StatusCode::CREATED)
        .header(
            header::LOCATION,
            hv(origin.url(&format!("/v2/{repo}/manifests/{}", pushed.digest))),
        )
        .header("Docker-Content-Digest", hv(pushed.digest.to_string()))
        .header(header::CONTENT_LENGTH, 0);
    if let Some(subject) = pushed.subject {
        resp = resp.header("OCI-Subject", hv(subject.to_string()));
    }
    Ok(resp.body(Body::empty()).expect("valid response"))
}

/// DELETE /v2/<name>/manifests/<reference>: by tag removes only the tag.
pub async fn delete(reg: &Registry, repo: &RepoName, reference: &Reference) -> ApiResult {
    reg.delete_manifest(repo, reference).await?;
    Ok(Response::builder()
        .status(StatusCode::ACCEPTED)
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .expect("valid response"))
}
