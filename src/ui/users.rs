//! Users and grants, for administrators: add, disable and enable, reset a password, grant
//! and revoke repository access, remove; and the repository patterns open to anonymous
//! pulls. Every change goes through `auth::accounts`, which audits it.

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::response::Response;

use super::page::{self, Chrome, UiError, accounts, form_value, render};
use super::session::Viewer;
use crate::auth::accounts::{self as acc, Actor};
use crate::state::AppState;

/// The shortest password the UI sets.
const MIN_PASSWORD: usize = 12;

struct UserLine {
    name: String,
    admin: bool,
    disabled: bool,
    is_me: bool,
    created: String,
    last_login: String,
    grants: Vec<(String, String, String)>,
    action_base: String,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    chrome: Chrome,
    users: Vec<UserLine>,
    anonymous: Vec<String>,
    error: String,
    notice: String,
}

async fn page_with(
    app: &AppState,
    viewer: &Viewer,
    error: String,
    notice: String,
) -> Result<Response, UiError> {
    let db = app.auth.db().clone();
    let (users, anonymous) =
        accounts(move || Ok((acc::list_users(&db)?, acc::anonymous_patterns(&db)?))).await?;
    let now = app.registry.now();
    let users = users
        .into_iter()
        .map(|u| {
            let name = u.user.name.clone();
            UserLine {
                is_me: name == viewer.name,
                admin: u.user.is_admin,
                disabled: u.user.disabled,
                created: page::utc(u.user.created_at),
                last_login: page::ago(u.user.last_login_at, now),
                grants: u
                    .grants
                    .into_iter()
                    .map(|(p, a)| {
                        let remove = format!("/users/{name}/revoke");
                        (p, a, remove)
                    })
                    .collect(),
                action_base: format!("/users/{name}"),
                name,
            }
        })
        .collect();
    Ok(render(&UsersPage {
        chrome: Chrome::new("Users", viewer, "users"),
        users,
        anonymous,
        error,
        notice,
    }))
}

/// GET /users
pub async fn show(State(app): State<AppState>, viewer: Viewer) -> Result<Response, UiError> {
    viewer.require_admin()?;
    page_with(&app, &viewer, String::new(), String::new()).await
}

fn checked_password(p: &str) -> Result<(), String> {
    if p.chars().count() < MIN_PASSWORD {
        Err(format!(
            "a password needs at least {MIN_PASSWORD} characters"
        ))
    } else {
        Ok(())
    }
}

/// Run an account change as the viewer; a refused change is shown on the page, not as an
/// error page, so the administrator can correct it.
async fn change(
    app: &AppState,
    viewer: &Viewer,
    done: String,
    f: impl FnOnce(&crate::db::Db, i64, &Actor<'_>) -> Result<(), acc::AccountError> + Send + 'static,
) -> Result<Response, UiError> {
    let (db, now) = (app.auth.db().clone(), app.registry.now());
    let (who, client) = (viewer.name.clone(), viewer.origin.client.clone());
    let result = accounts(move || {
        f(
            &db,
            now,
            &Actor {
                name: &who,
                addr: &client,
            },
        )
    })
    .await;
    match result {
        Ok(()) => page_with(app, viewer, String::new(), done).await,
        Err(UiError::BadRequest(why)) | Err(UiError::NotFound(why)) => {
            page_with(app, viewer, why, String::new()).await
        }
        Err(e) => Err(e),
    }
}

/// POST /users: add a user.
pub async fn add(
    State(app): State<AppState>,
    viewer: Viewer,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, UiError> {
    viewer.require_admin()?;
    let name = form_value(&fields, "name").trim().to_string();
    let password = form_value(&fields, "password").to_string();
    let admin = form_value(&fields, "admin") == "yes";
    if let Err(why) = checked_password(&password) {
        return page_with(&app, &viewer, why, String::new()).await;
    }
    let done = format!("added user {name}");
    change(&app, &viewer, done, move |db, now, actor| {
        acc::add_user(db, now, actor, &name, &password, admin)
    })
    .await
}

/// POST /users/{name}/{action}: `disable`, `enable`, `password`, `grant`, `revoke`, `remove`.
pub async fn act(
    State(app): State<AppState>,
    viewer: Viewer,
    Path((name, action)): Path<(String, String)>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, UiError> {
    viewer.require_admin()?;
    let me = name == viewer.name;
    if me && matches!(action.as_str(), "disable" | "remove") {
        return page_with(
            &app,
            &viewer,
            "you cannot disable or remove yourself; another administrator can".into(),
            String::new(),
        )
        .await;
    }
    let n = name.clone();
    match action.as_str() {
        "disable" | "enable" => {
            let off = action == "disable";
            let done = format!("{name} {}", if off { "disabled" } else { "enabled" });
            change(&app, &viewer, done, move |db, now, actor| {
                acc::set_disabled(db, now, actor, &n, off)
            })
            .await
        }
        "password" => {
            let password = form_value(&fields, "password").to_string();
            if let Err(why) = checked_password(&password) {
                return page_with(&app, &viewer, why, String::new()).await;
            }
            let done = if me {
                "your password is changed; sign in again with it".to_string()
            } else {
                format!("set a new password for {name}; their sessions ended")
            };
            change(&app, &viewer, done, move |db, now, actor| {
                acc::set_password(db, now, actor, &n, &password)
            })
            .await
        }
        "grant" => {
            let pattern = form_value(&fields, "pattern").trim().to_string();
            let actions: Vec<String> = fields
                .iter()
                .filter(|(k, _)| k == "action")
                .map(|(_, v)| v.clone())
                .collect();
            if actions.is_empty() {
                return page_with(
                    &app,
                    &viewer,
                    "choose at least one action".into(),
                    String::new(),
                )
                .await;
            }
            let done = format!("granted {} on {pattern} to {name}", actions.join(","));
            change(&app, &viewer, done, move |db, now, actor| {
                acc::grant(db, now, actor, &n, &pattern, &actions.join(","))
            })
            .await
        }
        "revoke" => {
            let pattern = form_value(&fields, "pattern").trim().to_string();
            let done = format!("revoked {name}'s grant on {pattern}");
            change(&app, &viewer, done, move |db, now, actor| {
                acc::revoke_grant(db, now, actor, &n, &pattern)
            })
            .await
        }
        "remove" => {
            let done = format!("removed user {name}");
            change(&app, &viewer, done, move |db, now, actor| {
                acc::remove_user(db, now, actor, &n)
            })
            .await
        }
        _ => Err(UiError::NotFound("no such page".into())),
    }
}

/// POST /anonymous: open (`open=yes`) or close a repository pattern to anonymous pulls.
pub async fn anonymous(
    State(app): State<AppState>,
    viewer: Viewer,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, UiError> {
    viewer.require_admin()?;
    let pattern = form_value(&fields, "pattern").trim().to_string();
    let open = form_value(&fields, "open") == "yes";
    let done = format!(
        "{pattern} is {} to anonymous pulls",
        if open { "open" } else { "closed" }
    );
    change(&app, &viewer, done, move |db, now, actor| {
        acc::set_anonymous(db, now, actor, &pattern, open).map(|_| ())
    })
    .await
}
