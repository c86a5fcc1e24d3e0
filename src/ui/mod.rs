//! The web UI: server-rendered pages on the same listener as `/v2`, working without
//! JavaScript (a small script adds copy buttons and typed confirmations).
//!
//! Layering: `ui` sits beside `registry`: handlers build a view model from `core` and `auth`
//! reads, then render an askama template (`templates/` mirrors the modules); never `db` or
//! `storage` directly. Every page but sign-in needs a session (`session::Viewer`); every
//! request that changes something must come from berth's own pages
//! (`session::same_origin_only`); every response carries the security headers.

pub mod assets;
mod audit;
mod dashboard;
mod gc;
pub mod page;
mod pager;
pub mod repos;
mod retention;
pub mod session;
mod signin;
pub mod tokens;
mod users;

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::state::AppState;

/// The UI's routes, with its guards.
pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(dashboard::show))
        .route("/signin", get(signin::form).post(signin::submit))
        .route("/signout", post(signin::sign_out))
        .route("/repositories", get(repos::list))
        .route("/repositories/{*rest}", get(repos::show).post(repos::post))
        .route("/tokens", get(tokens::show).post(tokens::create))
        .route("/tokens/{name}/{action}", post(tokens::act))
        .route("/users", get(users::show).post(users::add))
        .route("/users/{name}/{action}", post(users::act))
        .route("/anonymous", post(users::anonymous))
        .route("/audit", get(audit::show))
        .route("/retention", get(retention::show).post(retention::post))
        .route("/gc", get(gc::show).post(gc::start))
        .route("/gc/{id}", get(gc::report))
        .route("/static/{file}", get(assets::serve))
        .route("/favicon.ico", get(assets::favicon))
        .layer(axum::middleware::from_fn_with_state(
            state,
            session::same_origin_only,
        ))
        .layer(axum::middleware::from_fn(session::security_headers))
}

/// Anything no route serves: a readable page.
pub async fn not_found() -> Response {
    let mut r = page::UiError::NotFound("there is no page at this address".into()).into_response();
    session::secure(&mut r);
    r
}
