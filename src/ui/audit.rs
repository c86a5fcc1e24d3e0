//! The audit log, for administrators: who did what to what, from where, when; filtered and
//! paged on the server, the filters in the URL.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::page::{self, Chrome, UiError, render};
use super::pager::Pager;
use super::session::Viewer;
use crate::db::audit::Filter;
use crate::state::AppState;

const PER_PAGE: u64 = 100;

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    q: Option<String>,
    page: Option<u64>,
}

struct Line {
    at: String,
    actor: String,
    action: String,
    detail: String,
    addr: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    actor: String,
    action: String,
    q: String,
    rows: Vec<Line>,
    pager: Pager,
}

/// GET /audit
pub async fn show(
    State(app): State<AppState>,
    viewer: Viewer,
    Query(q): Query<AuditQuery>,
) -> Result<Response, UiError> {
    viewer.require_admin()?;
    let filter = Filter {
        actor: page::query_text(q.actor, 200),
        action: page::query_text(q.action, 200),
        text: page::query_text(q.q, 200),
    };
    let (page_no, offset) = super::pager::page_and_offset(q.page, PER_PAGE);
    let (total, entries) = app
        .auth
        .audit_page(filter.clone(), offset, PER_PAGE)
        .await?;
    let rows = entries
        .into_iter()
        .map(|e| Line {
            at: page::utc(e.at),
            actor: e.actor.unwrap_or_default(),
            action: e.action,
            detail: e.detail.unwrap_or_default(),
            addr: e.client_addr.unwrap_or_default(),
        })
        .collect();
    let link = |p: u64| {
        format!(
            "/audit?actor={}&action={}&q={}&page={p}",
            page::encode_query(&filter.actor),
            page::encode_query(&filter.action),
            page::encode_query(&filter.text)
        )
    };
    let pager = Pager::new(page_no, PER_PAGE, total, link);
    Ok(render(&AuditPage {
        chrome: Chrome::new("Audit log", &viewer, "audit"),
        actor: filter.actor,
        action: filter.action,
        q: filter.text,
        rows,
        pager,
    }))
}
