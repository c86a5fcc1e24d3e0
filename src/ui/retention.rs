//! Retention, for administrators: the saved policies, an editor for a draft (TOML, as
//! `berth retention add` reads) with a preview of every tag kept or deleted and why, save,
//! remove, run now, and the run history. A preview is the run with the deletes left out.

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::page::{self, Chrome, UiError, bytes, form_value, render};
use super::session::Viewer;
use crate::core::gc::Trigger;
use crate::core::retention::{self, PolicySpec, RetentionReport, Which};
use crate::state::AppState;

/// Decisions listed on a page; the counts cover them all.
const MAX_SHOWN: usize = 2000;
/// The longest policy text read.
const MAX_POLICY: usize = 64 * 1024;

const EXAMPLE: &str = r#"name = "ci"
repositories = ["team/*"]
min_keep = 1
max_delete_share = 0.5
protect = ["latest"]

[keep]
any = [
  { semver = ">=1.0.0" },
  { newest = 3, per = "^([a-z0-9-]+)-[0-9a-f]{7}$" },
  { pulled_within = "30d" },
]
"#;

struct DecisionLine {
    repo: String,
    tag: String,
    delete: bool,
    reason: String,
    pushed: String,
    pulled: String,
}

struct Outcome {
    title: String,
    summary: String,
    decisions: Vec<DecisionLine>,
    hidden: usize,
    errors: Vec<String>,
}

struct RunLine {
    at: String,
    kind: String,
    trigger: String,
    summary: String,
}

#[derive(Template)]
#[template(path = "retention.html")]
struct RetentionPage {
    chrome: Chrome,
    policies: Vec<(String, String, String)>,
    draft: String,
    error: String,
    outcome: Option<Outcome>,
    runs: Vec<RunLine>,
}

#[derive(Deserialize, Default)]
pub struct EditQuery {
    edit: Option<String>,
}

fn outcome(title: &str, r: &RetentionReport, now: i64) -> Outcome {
    // Deletions first: they are what a reader checks.
    let mut sorted: Vec<_> = r.decisions.iter().collect();
    sorted.sort_by_key(|d| (!d.delete, d.repo.as_str(), d.tag.as_str()));
    Outcome {
        title: title.to_string(),
        summary: r.summary(),
        hidden: sorted.len().saturating_sub(MAX_SHOWN),
        decisions: sorted
            .into_iter()
            .take(MAX_SHOWN)
            .map(|d| DecisionLine {
                repo: d.repo.clone(),
                tag: d.tag.clone(),
                delete: d.delete,
                reason: d.reason.clone(),
                pushed: page::ago(Some(d.pushed_at), now),
                pulled: page::ago(d.pulled_at, now),
            })
            .collect(),
        errors: r.errors.clone(),
    }
}

async fn page_with(
    app: &AppState,
    viewer: &Viewer,
    draft: String,
    error: String,
    outcome: Option<Outcome>,
) -> Result<Response, UiError> {
    let db = app.registry.db();
    let policies = retention::list(db)
        .await?
        .into_iter()
        .map(|p| {
            let toml = toml::to_string(&p).unwrap_or_default();
            let line = format!(
                "{} · min_keep {} · max_delete_share {}",
                p.repositories.join(", "),
                p.min_keep,
                p.max_delete_share
            );
            (p.name.clone(), line, toml)
        })
        .collect();
    let now = app.registry.now();
    let runs = retention::history(db, 30)
        .await?
        .into_iter()
        .map(|r| RunLine {
            kind: match (&r.draft, r.dry_run) {
                (Some(d), _) => format!("preview of the draft {d:?}"),
                (None, true) => "preview".into(),
                (None, false) => "run".into(),
            },
            at: format!(
                "{} ({})",
                page::utc(r.started_at),
                page::ago(Some(r.started_at), now)
            ),
            trigger: r.trigger.clone(),
            // Stored reports keep only the deletions: say what they hold.
            summary: format!(
                "{} {} tag{}; frees {} once garbage is collected{}",
                if r.dry_run { "would delete" } else { "deleted" },
                r.deleted,
                if r.deleted == 1 { "" } else { "s" },
                bytes(r.bytes_to_free),
                if r.errors.is_empty() {
                    String::new()
                } else {
                    format!("; {} errors", r.errors.len())
                }
            ),
        })
        .collect();
    Ok(render(&RetentionPage {
        chrome: Chrome::new("Retention", viewer, "retention"),
        policies,
        draft,
        error,
        outcome,
        runs,
    }))
}

/// GET /retention[?edit=NAME]
pub async fn show(
    State(app): State<AppState>,
    viewer: Viewer,
    Query(q): Query<EditQuery>,
) -> Result<Response, UiError> {
    viewer.require_admin()?;
    let draft = match q.edit {
        Some(name) => {
            let p = retention::get(app.registry.db(), &name)
                .await?
                .ok_or_else(|| UiError::NotFound(format!("no retention policy named {name:?}")))?;
            toml::to_string(&p).map_err(|e| UiError::Internal(e.to_string()))?
        }
        None => EXAMPLE.to_string(),
    };
    page_with(&app, &viewer, draft, String::new(), None).await
}

/// The draft's policy, or why it is not one.
fn parse_draft(text: &str) -> Result<PolicySpec, String> {
    if text.len() > MAX_POLICY {
        return Err(format!("a policy is at most {MAX_POLICY} bytes"));
    }
    let spec = PolicySpec::from_toml(text)?;
    spec.compile()?;
    Ok(spec)
}

/// POST /retention: `do=preview` or `do=save` a draft, `do=run` the saved policies,
/// `do=remove` the policy `name`.
pub async fn post(
    State(app): State<AppState>,
    viewer: Viewer,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, UiError> {
    viewer.require_admin()?;
    let draft = form_value(&fields, "policy").to_string();
    let now = app.registry.now();
    match form_value(&fields, "do") {
        "preview" => match parse_draft(&draft) {
            Err(why) => page_with(&app, &viewer, draft, why, None).await,
            Ok(spec) => {
                let title = format!("Preview of the draft {:?} (nothing was deleted)", spec.name);
                let r = app
                    .registry
                    .apply_retention(Which::Draft(Box::new(spec)), Trigger::Ui, true, false)
                    .await?;
                let o = outcome(&title, &r, now);
                page_with(&app, &viewer, draft, String::new(), Some(o)).await
            }
        },
        "save" => match parse_draft(&draft) {
            Err(why) => page_with(&app, &viewer, draft, why, None).await,
            Ok(spec) => {
                let name = spec.name.clone();
                retention::save(app.registry.db(), now, spec).await?;
                viewer.audit(&app, "retention.save", name).await;
                Ok(Redirect::to("/retention").into_response())
            }
        },
        "remove" => {
            let name = form_value(&fields, "name").to_string();
            if !retention::remove(app.registry.db(), &name).await? {
                return Err(UiError::NotFound(format!(
                    "no retention policy named {name:?}"
                )));
            }
            viewer.audit(&app, "retention.remove", name).await;
            Ok(Redirect::to("/retention").into_response())
        }
        "run" | "dry-run" => {
            let dry = form_value(&fields, "do") == "dry-run";
            // A run goes on (and is audited) if the browser leaves: stopped between batches
            // it would leave some of its deletions done and no report.
            let (a, subject, client) = (
                app.clone(),
                viewer.subject.clone(),
                viewer.origin.client.clone(),
            );
            let r = tokio::spawn(async move {
                let r = a
                    .registry
                    .apply_retention(Which::Saved, Trigger::Ui, dry, false)
                    .await?;
                if !dry {
                    a.auth
                        .audit(&subject, &client, "retention.run", r.summary())
                        .await;
                }
                Ok::<_, crate::core::Error>(r)
            })
            .await
            .map_err(|e| UiError::Internal(e.to_string()))??;
            let title = if dry {
                "Preview of the saved policies (nothing was deleted)"
            } else {
                "Run of the saved policies"
            };
            let o = outcome(title, &r, now);
            page_with(&app, &viewer, EXAMPLE.to_string(), String::new(), Some(o)).await
        }
        _ => Err(UiError::BadRequest("unknown retention action".into())),
    }
}
