//! Health and metrics, without credentials (a load balancer, systemd, Prometheus ask them):
//!
//! - `GET /healthz`: the process answers. Always `200`.
//! - `GET /readyz`: whether berth can serve, check by check. `503` when the database does not
//!   take a write, the data directory does not take a file, or (with TLS) there is no valid
//!   certificate; `200` with `"status": "degraded"` when only uploads are refused (free space
//!   below the floor: pulls still work).
//! - `GET /metrics`: the Prometheus text (`crate::metrics`). On the metrics listener for
//!   anyone who reaches it; on the main listener only with the metrics token.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::core::WriteStatus;
use crate::state::AppState;

fn json_response(status: StatusCode, body: Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub async fn healthz() -> Response {
    json_response(StatusCode::OK, json!({"status": "ok"}))
}

pub async fn readyz(State(app): State<AppState>) -> Response {
    let reg = &app.registry;
    let mut checks = Map::new();
    let mut down = false;
    let mut degraded = false;
    let probed = reg.probe_writes().await;
    match probed.db {
        Ok(()) => {
            checks.insert("database".into(), "ok".into());
        }
        Err(e) => {
            tracing::warn!(error = %e, "readiness: the database does not take a write");
            checks.insert("database".into(), format!("failed: {e}").into());
            down = true;
        }
    }
    match probed.files {
        Ok(()) => {
            checks.insert("data_dir".into(), "ok".into());
        }
        Err(e) => {
            tracing::warn!(error = %e, "readiness: the data directory does not take a file");
            checks.insert("data_dir".into(), format!("failed: {e}").into());
            down = true;
        }
    }
    let uploads = match reg.write_status().await {
        Ok(WriteStatus::Accepted { .. }) => "accepted".to_string(),
        Ok(refused) => {
            degraded = true;
            format!(
                "refused: {}",
                reg.refusal(refused)
                    .map(|e| e.to_string())
                    .unwrap_or_default()
            )
        }
        Err(e) => {
            degraded = true;
            format!("unknown: cannot read the free space: {e}")
        }
    };
    checks.insert("uploads".into(), uploads.into());
    let config = app.config.clone();
    let now = reg.now();
    let cert = tokio::task::spawn_blocking(move || crate::tls::status::current(&config))
        .await
        .ok()
        .flatten();
    match cert {
        None => {}
        Some(Ok(c)) if c.not_after > now => {
            checks.insert("certificate".into(), "ok".into());
        }
        Some(Ok(_)) => {
            checks.insert("certificate".into(), "failed: expired".into());
            down = true;
        }
        Some(Err(e)) => {
            checks.insert("certificate".into(), format!("failed: {e}").into());
            down = true;
        }
    }
    let (status, word) = if down {
        (StatusCode::SERVICE_UNAVAILABLE, "down")
    } else if degraded {
        (StatusCode::OK, "degraded")
    } else {
        (StatusCode::OK, "ok")
    };
    checks.insert("status".into(), word.into());
    json_response(status, Value::Object(checks))
}

/// `/metrics` on the metrics listener.
pub async fn metrics(State(app): State<AppState>) -> Response {
    let m = crate::metrics::global();
    let reg = &app.registry;
    match reg.stats().await {
        Ok((blobs, bytes, sessions)) => {
            m.blobs.set(blobs as i64);
            m.blob_store_bytes.set(bytes as i64);
            m.upload_sessions.set(sessions as i64);
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read the database"),
    }
    if let Ok(WriteStatus::Accepted { free } | WriteStatus::Refused { free, .. }) =
        reg.write_status().await
    {
        m.disk_free_bytes.set(free as i64);
    }
    let config = app.config.clone();
    if let Ok(Some(Ok(c))) =
        tokio::task::spawn_blocking(move || crate::tls::status::current(&config)).await
    {
        m.certificate_expiry.set(c.not_after);
    }
    for c in reg.caches().all() {
        if let Some(rl) = c.rate_limit() {
            let labels = crate::metrics::UpstreamLabels {
                upstream: c.name().to_string(),
            };
            // `97;w=21600`: the count, before its window.
            let count = |v: &str| {
                v.split(';')
                    .next()
                    .and_then(|n| n.trim().parse::<i64>().ok())
            };
            if let Some(n) = count(&rl.remaining) {
                m.upstream_ratelimit_remaining.get_or_create(&labels).set(n);
            }
            if let Some(n) = count(&rl.limit) {
                m.upstream_ratelimit_limit.get_or_create(&labels).set(n);
            }
        }
    }
    let mut r = m.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `/metrics` on the main listener: only with `Authorization: Bearer <metrics token>`, and
/// not at all (404) when no token is configured.
pub async fn metrics_with_token(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let Some(want) = app.metrics_token() else {
        return crate::http::not_found().await;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| crate::auth::secret::sha256_hex(t.trim()));
    if given.as_deref() != Some(want) {
        let mut r = (StatusCode::UNAUTHORIZED, "a metrics token is required\n").into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"metrics\""),
        );
        return r;
    }
    metrics(State(app)).await
}
