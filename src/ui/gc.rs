//! Garbage collection, for administrators: the schedule and grace periods in force, a dry
//! run or a run now, and the history with what each run freed.

use std::time::Duration;

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};

use super::page::{self, Chrome, UiError, bytes, render, short_digest};
use super::session::Viewer;
use crate::config::Span;
use crate::core::gc::{Report, Trigger};
use crate::state::AppState;

/// How long a request waits for the run it started before it answers (the run goes on).
const WAIT: Duration = Duration::from_secs(20);

struct RunLine {
    id: i64,
    href: String,
    at: String,
    trigger: String,
    dry_run: bool,
    summary: String,
    freed: String,
    waiting: String,
    took: String,
}

#[derive(Template)]
#[template(path = "gc/index.html")]
struct GcPage {
    chrome: Chrome,
    settings: Vec<(&'static str, String)>,
    runs: Vec<RunLine>,
}

fn span(s: &Span) -> String {
    match s {
        Span::Secs(n) => format!("{n} s"),
        Span::Text(t) => t.clone(),
    }
}

fn line(r: &Report) -> RunLine {
    let id = r.id.unwrap_or_default();
    RunLine {
        id,
        href: format!("/gc/{id}"),
        at: page::utc(r.started_at),
        trigger: r.trigger.clone(),
        dry_run: r.dry_run,
        summary: r.summary(),
        freed: bytes(r.bytes_freed),
        waiting: bytes(r.bytes_waiting),
        took: format!("{:.1} s", r.duration_ms as f64 / 1000.0),
    }
}

/// GET /gc
pub async fn show(State(app): State<AppState>, viewer: Viewer) -> Result<Response, UiError> {
    viewer.require_admin()?;
    let g = &app.config.gc;
    let schedule = if g.enabled {
        match &g.window {
            Some(w) => format!("every {}, starting inside {w} UTC", span(&g.interval)),
            None => format!("every {}", span(&g.interval)),
        }
    } else {
        "off (runs only when started here or with berth gc)".to_string()
    };
    let settings = vec![
        ("Schedule", schedule),
        ("Grace for unused blobs", span(&g.grace)),
        ("Grace for untagged images", span(&g.untagged_grace)),
        ("Upload sessions expire after", span(&g.upload_expiry)),
    ];
    let runs = app.registry.gc_history(50).await?;
    Ok(render(&GcPage {
        chrome: Chrome::new("Garbage collection", &viewer, "gc"),
        settings,
        runs: runs.iter().map(line).collect(),
    }))
}

/// POST /gc: `mode=dry-run` or `mode=run`. Waits a while for the report, then shows it.
pub async fn start(
    State(app): State<AppState>,
    viewer: Viewer,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, UiError> {
    viewer.require_admin()?;
    let dry_run = match page::form_value(&fields, "mode") {
        "dry-run" => true,
        "run" => false,
        _ => return Err(UiError::BadRequest("choose a dry run or a run".into())),
    };
    // A second press (or a retry) while one runs would queue a full run behind it.
    if app.registry.collecting() {
        return Err(UiError::TooMany(
            "a collection is running; its report appears in the history when it ends".into(),
        ));
    }
    let reg = app.registry.clone();
    // The run goes on if the browser leaves.
    let run = tokio::spawn(async move { reg.collect_garbage(Trigger::Ui, dry_run).await });
    let detail = if dry_run { "dry run" } else { "run" };
    viewer.audit(&app, "gc.start", detail.into()).await;
    match tokio::time::timeout(WAIT, run).await {
        Ok(Ok(Ok(report))) => {
            let id = report.id.unwrap_or_default();
            Ok(Redirect::to(&format!("/gc/{id}")).into_response())
        }
        Ok(Ok(Err(e))) => Err(e.into()),
        Ok(Err(e)) => Err(UiError::Internal(e.to_string())),
        Err(_) => Ok(Redirect::to("/gc").into_response()),
    }
}

#[derive(Template)]
#[template(path = "gc/run.html")]
struct RunPage {
    chrome: Chrome,
    run: RunLine,
    errors: Vec<String>,
    manifests: Vec<(String, String)>,
    blobs: Vec<(String, String)>,
    uploads: Vec<(String, String)>,
    links: usize,
    not_stored: u64,
}

/// GET /gc/{id}: one run's report.
pub async fn report(
    State(app): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    viewer.require_admin()?;
    let id: i64 = id
        .parse()
        .map_err(|_| UiError::NotFound("no such run".into()))?;
    let r =
        app.registry.gc_report(id).await?.ok_or_else(|| {
            UiError::NotFound("no such run (only the newest runs are kept)".into())
        })?;
    Ok(render(&RunPage {
        chrome: Chrome::new(format!("Collection {id}"), &viewer, "gc"),
        errors: r.errors.clone(),
        manifests: r
            .manifests
            .iter()
            .map(|m| (m.repo.clone(), short_digest(&m.digest)))
            .collect(),
        blobs: r
            .blobs
            .iter()
            .map(|b| (short_digest(&b.digest), bytes(b.size)))
            .collect(),
        uploads: r
            .uploads
            .iter()
            .map(|u| (u.repo.clone(), bytes(u.size)))
            .collect(),
        links: r.links.len(),
        not_stored: r.items_not_stored,
        run: line(&r),
    }))
}
