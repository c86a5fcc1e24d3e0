//! Tag lists, the catalog and the referrers API.

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, Query, hv};
use crate::auth::{Action, Subject};
use crate::core::{Page, Registry};
use crate::oci::manifest::OCI_INDEX;
use crate::oci::{Digest, RepoName};

fn page_params(query: &Query) -> Result<(Option<i64>, Option<String>), ApiError> {
    let n = match query.get("n") {
        None | Some("") => None,
        Some(v) => Some(
            v.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or(ApiError::Pagination)?,
        ),
    };
    Ok((n, query.get("last").map(str::to_string)))
}

/// A JSON 200 with a `Link: <next>; rel="next"` header when more entries follow.
fn json_page(body: Value, page: &Page, base: &str, n: Option<i64>) -> Response {
    let mut resp = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json");
    if page.more
        && let Some(last) = page.items.last()
    {
        let n = n.unwrap_or(page.items.len() as i64);
        resp = resp.header(
            header::LINK,
            hv(format!("<{base}?n={n}&last={last}>; rel=\"next\"")),
        );
    }
    resp.body(Body::from(body.to_string()))
        .expect("valid response")
}

/// GET /v2/<name>/tags/list?n=<n>&last=<last>
pub async fn tags(reg: &Registry, repo: &RepoName, query: &Query) -> ApiResult {
    let (n, last) = page_params(query)?;
    let page = reg.list_tags(repo, n, last).await?;
    let body = json!({ "name": repo.as_str(), "tags": page.items });
    Ok(json_page(body, &page, &format!("/v2/{repo}/tags/list"), n))
}

/// GET /v2/_catalog?n=<n>&last=<last>
/// Lists only repositories the caller may pull.
pub async fn catalog(reg: &Registry, subject: &Subject, query: &Query) -> ApiResult {
    let (n, last) = page_params(query)?;
    let subject = subject.clone();
    let page = reg
        .catalog(n, last, move |name| subject.may(name, Action::Pull))
        .await?;
    let body = json!({ "repositories": page.items });
    Ok(json_page(body, &page, "/v2/_catalog", n))
}

/// GET /v2/<name>/referrers/<digest>?artifactType=<type>
pub async fn referrers(
    reg: &Registry,
    repo: &RepoName,
    subject: &Digest,
    query: &Query,
) -> ApiResult {
    let filter = query
        .get("artifactType")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let filtered = filter.is_some();
    let manifests: Vec<Value> = reg
        .referrers(repo, subject, filter)
        .await?
        .into_iter()
        .map(|r| {
            let mut d = json!({ "mediaType": r.media_type, "digest": r.digest, "size": r.size });
            if let Some(t) = r.artifact_type {
                d["artifactType"] = Value::String(t);
            }
            if let Some(a) = r.annotations {
                d["annotations"] = a;
            }
            d
        })
        .collect();
    let body = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    let mut resp = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, OCI_INDEX);
    if filtered {
        resp = resp.header("OCI-Filters-Applied", "artifactType");
    }
    Ok(resp
        .body(Body::from(body.to_string()))
        .expect("valid response"))
}
