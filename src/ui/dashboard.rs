//! The dashboard: disk, blob store, what collection could free, the last collection and
//! retention runs, the certificate, the last day's pushes and pulls, and the pull-through
//! cache's upstreams with their rate limits.

use askama::Template;
use axum::extract::State;
use axum::response::Response;

use super::page::{self, Chrome, UiError, bytes, render};
use super::session::Viewer;
use crate::state::AppState;

#[derive(Template)]
#[template(path = "dashboard.html")]
struct Dashboard {
    chrome: Chrome,
    disk_used: String,
    disk_free: String,
    disk_total: String,
    disk_percent: u64,
    uploads_refused: bool,
    blobs: u64,
    blob_bytes: String,
    uploads_open: u64,
    /// From the latest collection report, real or dry run.
    gc_estimate: Option<GcEstimate>,
    last_gc: String,
    last_retention: String,
    tls: Vec<(String, String)>,
    pushed_day: u64,
    pulled_day: u64,
    upstreams: Vec<UpstreamRow>,
}

/// An upstream of the pull-through cache, with its rate limit as last seen.
struct UpstreamRow {
    name: String,
    url: String,
    rate_limit: String,
}

struct GcEstimate {
    at: String,
    now: String,
    after_grace: String,
}

#[derive(Template)]
#[template(path = "home.html")]
struct Home {
    chrome: Chrome,
    repositories: u64,
}

/// GET /: the registry's figures for administrators; for others, what they may reach (disk,
/// certificate and activity figures cover the whole registry and are not theirs to see).
pub async fn show(State(app): State<AppState>, viewer: Viewer) -> Result<Response, UiError> {
    if !viewer.subject.is_admin() {
        let subject = viewer.subject.clone();
        let query = crate::core::browse::RepoQuery {
            filter: String::new(),
            sort: crate::core::browse::RepoSort::Name,
            descending: false,
            offset: 0,
            limit: 0,
        };
        let (repositories, _) = app
            .registry
            .browse_repositories(query, move |name| {
                subject.may(name, crate::auth::Action::Pull)
            })
            .await?;
        return Ok(render(&Home {
            chrome: Chrome::new("Home", &viewer, "dashboard"),
            repositories,
        }));
    }
    let reg = &app.registry;
    let now = reg.now();
    let (total, free) = reg.disk_space().await?;
    let refused = reg
        .write_status()
        .await
        .map(|s| reg.refusal(s).is_some())
        .unwrap_or(false);
    let (blobs, blob_bytes, uploads_open) = reg.stats().await?;
    // The latest report (dry run or real) for the estimate; the last real run from its row.
    let latest = reg.gc_history(1).await?;
    let gc_estimate = latest.first().map(|r| GcEstimate {
        at: format!(
            "{} ({})",
            page::ago(Some(r.finished_at), now),
            if r.dry_run { "dry run" } else { "run" }
        ),
        now: bytes(if r.dry_run { r.bytes_freed } else { 0 }),
        after_grace: bytes(r.bytes_waiting),
    });
    let last_gc = match reg.last_gc_run().await? {
        Some((at, freed, trigger)) => format!(
            "{}, freed {} ({trigger})",
            page::ago(Some(at), now),
            bytes(freed),
        ),
        None => "never".into(),
    };
    let last_retention = match reg.last_retention_run().await? {
        Some((at, deleted, trigger)) => format!(
            "{}, deleted {} tag{} ({trigger})",
            page::ago(Some(at), now),
            deleted,
            if deleted == 1 { "" } else { "s" }
        ),
        None => "never".into(),
    };
    let config = app.config.clone();
    let tls = tokio::task::spawn_blocking(move || tls_rows(&config, now))
        .await
        .map_err(|e| UiError::Internal(e.to_string()))?;
    let (pushed_day, pulled_day) = reg.activity(now - 86_400).await?;
    let upstreams = reg
        .caches()
        .all()
        .iter()
        .map(|c| UpstreamRow {
            name: c.name().to_string(),
            url: c.settings.url.clone(),
            rate_limit: c.rate_limit().map_or_else(
                || "not reported".into(),
                |r| rate_limit(&r.remaining, &r.limit),
            ),
        })
        .collect();
    let used = total.saturating_sub(free);
    let page = Dashboard {
        chrome: Chrome::new("Dashboard", &viewer, "dashboard"),
        disk_used: bytes(used),
        disk_free: bytes(free),
        disk_total: bytes(total),
        disk_percent: (used * 100).checked_div(total).unwrap_or(0),
        uploads_refused: refused,
        blobs,
        blob_bytes: bytes(blob_bytes),
        uploads_open,
        gc_estimate,
        last_gc,
        last_retention,
        tls,
        pushed_day,
        pulled_day,
        upstreams,
    };
    Ok(render(&page))
}

/// Docker Hub's `ratelimit-remaining: 42;w=21600` and `ratelimit-limit: 100;w=21600` as
/// "42 of 100 left per 6 h".
fn rate_limit(remaining: &str, limit: &str) -> String {
    let count = |v: &str| v.split(';').next().unwrap_or_default().trim().to_string();
    let window = limit
        .split(';')
        .find_map(|p| p.trim().strip_prefix("w="))
        .and_then(|w| w.parse::<u64>().ok())
        .map(|secs| match secs {
            s if s % 3600 == 0 => format!(" per {} h", s / 3600),
            s => format!(" per {s} s"),
        })
        .unwrap_or_default();
    format!("{} of {} left{window}", count(remaining), count(limit))
}

/// The certificate's figures as (label, value) rows. Blocking (reads the certificate).
fn tls_rows(config: &crate::config::Config, now: i64) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    match crate::tls::status::current(config) {
        None => rows.push((
            "HTTPS".to_string(),
            "off: plain HTTP (TLS ends in front of berth)".to_string(),
        )),
        Some(Ok(c)) => {
            rows.push(("Names".into(), c.names.join(", ")));
            rows.push(("Issuer".into(), c.issuer));
            let left = (c.not_after - now) / 86_400;
            let when = if c.not_after <= now {
                "EXPIRED".to_string()
            } else {
                format!("in {left} days")
            };
            rows.push((
                "Expires".into(),
                format!("{} ({when})", page::utc(c.not_after)),
            ));
        }
        Some(Err(e)) => rows.push(("Certificate".into(), e)),
    }
    if let Some(e) = crate::tls::status::last_acme_error(config) {
        rows.push(("Last ACME error".into(), e));
    }
    rows
}
