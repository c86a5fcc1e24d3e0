//! berth: a private container registry in one binary.
//!
//! ```text
//! registry/ (the /v2 API, /token)   ui/ (web pages)   cli (admin commands)
//!            \                          |               /
//!   core/ (uploads, manifests, tags)   auth/ (users, tokens, grants)
//!             /                      \     /
//!   storage/ (blob files only)      db/ (rusqlite only)
//!             \                      /
//!              oci/ (pure types: Digest, RepoName, Reference, manifests)
//! ```
//!
//! Dependencies point down only. `lib.rs` builds the app so tests can drive the router;
//! `main.rs` only hands over to `cli`.

pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod core;
pub mod db;
pub mod http;
pub mod metrics;
pub mod oci;
pub mod registry;
pub mod server;
pub mod state;
pub mod storage;
pub mod tls;
pub mod ui;
pub mod upstream;

use axum::Router;
use axum::routing::{any, get};

pub use state::AppState;

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v2", any(registry::dispatch))
        .route("/v2/", any(registry::dispatch))
        .route("/v2/{*rest}", any(registry::dispatch))
        .route(
            "/token",
            get(registry::token::get).post(registry::token::post),
        )
        .route("/healthz", get(http::health::healthz))
        .route("/readyz", get(http::health::readyz))
        .route("/metrics", get(http::health::metrics_with_token))
        .merge(ui::router(state.clone()))
        .fallback(ui::not_found)
        .layer(axum::middleware::from_fn(http::log_request))
        .with_state(state)
}

/// The metrics listener's application: `/metrics`, `/healthz`, `/readyz`, no credentials.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(http::health::metrics))
        .route("/healthz", get(http::health::healthz))
        .route("/readyz", get(http::health::readyz))
        .fallback(http::not_found)
        .with_state(state)
}
