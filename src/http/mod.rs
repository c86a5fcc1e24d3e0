//! Cross-cutting HTTP pieces: request logging, security headers, the client's origin,
//! redirects to HTTPS, the readiness check and the plain 404.

mod counting;
pub mod health;
pub mod memory;
pub mod origin;
pub mod serve;

use std::time::Instant;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Log each request at debug level (query strings are left out: they may carry digests of
/// private content, and later tokens), and count it with its body bytes for `/metrics`.
pub async fn log_request(req: Request, next: Next) -> Response {
    let m = crate::metrics::global();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let start = Instant::now();
    let req = req.map(|body| counting::Counting::wrap(body, &m.received_bytes));
    let resp = next.run(req).await;
    let status = resp.status();
    m.request(&path, status.as_u16());
    let resp = resp.map(|body| counting::Counting::wrap(body, &m.sent_bytes));
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

/// `Strict-Transport-Security` on every HTTPS response.
pub async fn hsts(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    resp.headers_mut().insert(
        axum::http::header::STRICT_TRANSPORT_SECURITY,
        axum::http::HeaderValue::from_static("max-age=31536000"),
    );
    resp
}

/// The plain-HTTP listener of the TLS modes: everything moves to HTTPS on `https_port`.
pub async fn redirect_to_https(
    axum::extract::State(https_port): axum::extract::State<u16>,
    req: Request,
) -> Response {
    let host = req
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    // Drop the port the client used for plain HTTP; keep IPv6 brackets intact.
    let name = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    };
    let Some(name) = origin::clean_host(name) else {
        return (StatusCode::BAD_REQUEST, "a Host header is required\n").into_response();
    };
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let location = format!("https://{name}{port}{path}");
    match axum::http::HeaderValue::from_str(&location) {
        Ok(v) => {
            let mut r = StatusCode::PERMANENT_REDIRECT.into_response();
            r.headers_mut().insert(axum::http::header::LOCATION, v);
            r
        }
        Err(_) => (StatusCode::BAD_REQUEST, "bad request\n").into_response(),
    }
}
