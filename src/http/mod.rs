//! Cross-cutting HTTP pieces: request logging and the plain 404.

use std::time::Instant;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Log each request at debug level (query strings are left out: they may carry digests of
/// private content, and later tokens).
pub async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status();
    if status.is_server_error() {
        tracing::warn!(%method, %path, status = status.as_u16(), ms = start.elapsed().as_millis() as u64, "request failed");
    } else {
        tracing::debug!(%method, %path, status = status.as_u16(), ms = start.elapsed().as_millis() as u64, "request");
    }
    resp
}

/// Anything outside `/v2`.
pub async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}
