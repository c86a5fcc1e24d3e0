//! `GET /readyz`: whether berth can serve, and whether it accepts uploads (and if not, why).
//! No credentials: a load balancer or a monitor asks it. `200` while pulls work (the
//! database answers), with `"status": "degraded"` when uploads are refused; `503` when the
//! database does not answer.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::core::WriteStatus;
use crate::state::AppState;

pub async fn readyz(State(app): State<AppState>) -> Response {
    let reg = &app.registry;
    let (status, body) = match reg.ping().await {
        Err(e) => {
            tracing::warn!(error = %e, "readiness: the database does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "down", "database": "not answering", "uploads": "refused"}),
            )
        }
        Ok(()) => match reg.write_status().await {
            Ok(WriteStatus::Accepted { .. }) => (
                StatusCode::OK,
                json!({"status": "ok", "database": "ok", "uploads": "accepted"}),
            ),
            Ok(refused) => (
                StatusCode::OK,
                json!({"status": "degraded", "database": "ok",
                       "uploads": format!("refused: {}", reg.refusal(refused).map(|e| e.to_string()).unwrap_or_default())}),
            ),
            Err(e) => (
                StatusCode::OK,
                json!({"status": "degraded", "database": "ok",
                       "uploads": format!("unknown: cannot read the free space: {e}")}),
            ),
        },
    };
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
