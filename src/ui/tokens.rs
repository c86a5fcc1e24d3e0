//! Robot tokens: create with repository scopes, actions and expiry (the secret is shown once,
//! with ready snippets for this registry), list with scopes, expiry and last use, rotate and
//! revoke. Users manage their own tokens; administrators see and manage all.

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};

use super::page::{self, Chrome, UiError, accounts, registry_host, render};
use super::session::Viewer;
use crate::auth::accounts::{self as acc, Actor, TokenInfo};
use crate::auth::{Action, Actions, Pattern};
use crate::state::AppState;

/// Warn this long before a token expires, seconds.
const EXPIRY_WARNING: i64 = 7 * 86_400;
/// Patterns one token may carry.
const MAX_PATTERNS: usize = 32;

struct TokenLine {
    name: String,
    owner: String,
    scopes: Vec<String>,
    created: String,
    /// `never`, `in 3 days`, `expired …`.
    expiry: String,
    expiry_warn: bool,
    last_use: String,
    state: &'static str,
    active: bool,
    revoke_action: String,
    rotate_action: String,
}

/// A secret just made, with the snippets that use it.
struct Created {
    name: String,
    secret: String,
    verb: &'static str,
    snippets: Vec<(&'static str, &'static str, String)>,
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    chrome: Chrome,
    tokens: Vec<TokenLine>,
    created: Option<Created>,
    error: String,
    all: bool,
    /// What the form held when it was refused.
    form_name: String,
    form_repositories: String,
}

fn line(t: &TokenInfo, now: i64) -> TokenLine {
    let tk = &t.token;
    let expired = tk.expires_at.is_some_and(|e| e <= now);
    let (expiry, expiry_warn) = match tk.expires_at {
        None => ("never".to_string(), false),
        Some(e) if e <= now => (format!("expired {}", page::ago(Some(e), now)), false),
        Some(e) => {
            let days = (e - now) / 86_400;
            let left = if days >= 1 {
                format!("in {days} day{}", if days == 1 { "" } else { "s" })
            } else {
                format!("in {} h", ((e - now) / 3600).max(1))
            };
            (
                format!("{left} ({})", page::utc(e)),
                e - now <= EXPIRY_WARNING,
            )
        }
    };
    let state = if tk.revoked_at.is_some() {
        "revoked"
    } else if expired {
        "expired"
    } else {
        "active"
    };
    TokenLine {
        name: tk.name.clone(),
        owner: tk.user_name.clone(),
        scopes: t.scopes.iter().map(|(p, a)| format!("{p}: {a}")).collect(),
        created: page::utc(tk.created_at),
        expiry,
        expiry_warn: expiry_warn && state == "active",
        last_use: match (&tk.last_used_at, &tk.last_used_addr) {
            (Some(at), Some(addr)) => format!("{} from {addr}", page::ago(Some(*at), now)),
            (at, _) => page::ago(*at, now),
        },
        state,
        active: state == "active",
        revoke_action: format!("/tokens/{}/revoke", tk.name),
        rotate_action: format!("/tokens/{}/rotate", tk.name),
    }
}

async fn list(app: &AppState, viewer: &Viewer) -> Result<Vec<TokenLine>, UiError> {
    let db = app.auth.db().clone();
    let owner = (!viewer.subject.is_admin()).then(|| viewer.name.clone());
    let found = accounts(move || acc::list_tokens(&db, owner.as_deref())).await?;
    let now = app.registry.now();
    Ok(found.iter().map(|t| line(t, now)).collect())
}

async fn page_with(
    app: &AppState,
    viewer: &Viewer,
    created: Option<Created>,
    error: String,
    form: Option<&CreateForm>,
) -> Result<Response, UiError> {
    let tokens = list(app, viewer).await?;
    Ok(render(&TokensPage {
        chrome: Chrome::new("Robot tokens", viewer, "tokens"),
        tokens,
        created,
        error,
        all: viewer.subject.is_admin(),
        form_name: form.map(|f| f.name.clone()).unwrap_or_default(),
        form_repositories: form.map(|f| f.repositories.clone()).unwrap_or_default(),
    }))
}

/// GET /tokens
pub async fn show(State(app): State<AppState>, viewer: Viewer) -> Result<Response, UiError> {
    page_with(&app, &viewer, None, String::new(), None).await
}

type Scopes = Vec<(Pattern, Actions)>;

/// The create form, read from its fields (`action` repeats).
#[derive(Default)]
pub struct CreateForm {
    name: String,
    repositories: String,
    actions: Vec<String>,
    expires: String,
}

impl CreateForm {
    fn read(fields: Vec<(String, String)>) -> CreateForm {
        let mut f = CreateForm::default();
        for (k, v) in fields {
            match k.as_str() {
                "name" => f.name = v.trim().to_string(),
                "repositories" => f.repositories = v,
                "action" => f.actions.push(v),
                "expires" => f.expires = v,
                _ => {}
            }
        }
        f
    }

    /// The scopes and expiry asked for, or why they cannot be had.
    fn scopes(&self, now: i64) -> Result<(Scopes, Option<i64>), String> {
        let mut actions = Vec::new();
        for a in &self.actions {
            actions.push(match a.as_str() {
                "pull" => Action::Pull,
                "push" => Action::Push,
                "delete" => Action::Delete,
                other => return Err(format!("unknown action {other:?}")),
            });
        }
        if actions.is_empty() {
            return Err("choose at least one action (pull, push or delete)".into());
        }
        let actions = Actions::of(&actions);
        let patterns: Vec<&str> = self
            .repositories
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|p| !p.is_empty())
            .collect();
        if patterns.is_empty() {
            return Err("name at least one repository or pattern (team/app, team/*, **)".into());
        }
        if patterns.len() > MAX_PATTERNS {
            return Err(format!(
                "at most {MAX_PATTERNS} repository patterns per token"
            ));
        }
        let scopes = patterns
            .iter()
            .map(|p| {
                Pattern::parse(p)
                    .map(|p| (p, actions))
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let expires = match self.expires.as_str() {
            "never" => None,
            d => {
                let days: i64 = d
                    .parse()
                    .ok()
                    .filter(|d| (1..=3650).contains(d))
                    .ok_or_else(|| format!("expiry {d:?}: choose a number of days or never"))?;
                Some(now + days * 86_400)
            }
        };
        Ok((scopes, expires))
    }
}

/// POST /tokens: create one for the signed-in user and show its secret, once.
pub async fn create(
    State(app): State<AppState>,
    viewer: Viewer,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, UiError> {
    let form = CreateForm::read(fields);
    let now = app.registry.now();
    let (scopes, expires) = match form.scopes(now) {
        Ok(s) => s,
        Err(why) => return page_with(&app, &viewer, None, why, Some(&form)).await,
    };
    let (db, owner, name, client) = (
        app.auth.db().clone(),
        viewer.name.clone(),
        form.name.clone(),
        viewer.origin.client.clone(),
    );
    let made = accounts(move || {
        let actor = Actor {
            name: &owner,
            addr: &client,
        };
        acc::create_token(&db, now, &actor, &owner, &name, &scopes, expires)
    })
    .await;
    match made {
        Ok(secret) => {
            let created = created(&viewer, &form.name, secret.expose(), "created");
            page_with(&app, &viewer, Some(created), String::new(), None).await
        }
        Err(UiError::BadRequest(why)) => page_with(&app, &viewer, None, why, Some(&form)).await,
        Err(e) => Err(e),
    }
}

/// The token named, if the viewer may manage it (their own, or any for an administrator);
/// others' tokens are reported as absent.
async fn managed(app: &AppState, viewer: &Viewer, name: &str) -> Result<(), UiError> {
    let (db, n) = (app.auth.db().clone(), name.to_string());
    let owner = accounts(move || acc::token_owner(&db, &n)).await?;
    match owner {
        Some(o) if viewer.subject.is_admin() || o == viewer.name => Ok(()),
        _ => Err(UiError::NotFound(format!("no token named {name:?}"))),
    }
}

/// POST /tokens/{name}/{action}: `revoke` or `rotate`.
pub async fn act(
    State(app): State<AppState>,
    viewer: Viewer,
    Path((name, action)): Path<(String, String)>,
) -> Result<Response, UiError> {
    managed(&app, &viewer, &name).await?;
    let (db, now) = (app.auth.db().clone(), app.registry.now());
    let (who, client, n) = (
        viewer.name.clone(),
        viewer.origin.client.clone(),
        name.clone(),
    );
    match action.as_str() {
        "revoke" => {
            accounts(move || {
                let actor = Actor {
                    name: &who,
                    addr: &client,
                };
                acc::revoke_token(&db, now, &actor, &n)
            })
            .await?;
            Ok(Redirect::to("/tokens").into_response())
        }
        "rotate" => {
            let secret = accounts(move || {
                let actor = Actor {
                    name: &who,
                    addr: &client,
                };
                acc::rotate_token(&db, now, &actor, &n)
            })
            .await?;
            let created = created(&viewer, &name, secret.expose(), "rotated");
            page_with(&app, &viewer, Some(created), String::new(), None).await
        }
        _ => Err(UiError::NotFound("no such page".into())),
    }
}

fn created(viewer: &Viewer, name: &str, secret: &str, verb: &'static str) -> Created {
    let (host, plain) = registry_host(&viewer.origin);
    Created {
        name: name.to_string(),
        secret: secret.to_string(),
        verb,
        snippets: snippets(&host, plain, name, secret),
    }
}

/// Ready-to-paste uses of a token: (id, title, text).
pub fn snippets(
    host: &str,
    plain_http: bool,
    name: &str,
    secret: &str,
) -> Vec<(&'static str, &'static str, String)> {
    let scheme = if plain_http { "http" } else { "https" };
    vec![
        (
            "docker-login",
            "docker login",
            format!("printf '%s' '{secret}' | docker login {host} -u {name} --password-stdin"),
        ),
        (
            "k3s",
            "k3s: /etc/rancher/k3s/registries.yaml",
            format!(
                "mirrors:\n  \"{host}\":\n    endpoint:\n      - \"{scheme}://{host}\"\nconfigs:\n  \"{host}\":\n    auth:\n      username: {name}\n      password: {secret}\n"
            ),
        ),
        (
            "flux",
            "Flux: a docker-registry secret for image automation",
            format!(
                "kubectl create secret docker-registry berth-{name} --namespace flux-system \\\n  --docker-server={host} --docker-username={name} --docker-password='{secret}'"
            ),
        ),
        (
            "github",
            "GitHub Actions: store the secret as BERTH_TOKEN, then",
            format!(
                "- uses: docker/login-action@v3\n  with:\n    registry: {host}\n    username: {name}\n    password: ${{{{ secrets.BERTH_TOKEN }}}}"
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_turn_into_scopes_or_say_why_not() {
        let form = |repos: &str, actions: &[&str], expires: &str| CreateForm {
            name: "ci".into(),
            repositories: repos.into(),
            actions: actions.iter().map(|s| s.to_string()).collect(),
            expires: expires.into(),
        };
        let (scopes, exp) = form("team/*, other/app\nx", &["pull", "push"], "30")
            .scopes(100)
            .unwrap();
        assert_eq!(scopes.len(), 3);
        assert_eq!(scopes[0].1.to_string(), "pull,push");
        assert_eq!(exp, Some(100 + 30 * 86_400));
        assert_eq!(form("**", &["pull"], "never").scopes(0).unwrap().1, None);
        assert!(form("", &["pull"], "never").scopes(0).is_err());
        assert!(form("a", &[], "never").scopes(0).is_err());
        assert!(form("a", &["admin"], "never").scopes(0).is_err());
        assert!(form("a", &["pull"], "0").scopes(0).is_err());
        assert!(form("Bad Pattern", &["pull"], "7").scopes(0).is_err());
    }

    #[test]
    fn snippets_name_this_registry() {
        let s = snippets("r.example.com", false, "ci", "berth_rt_x");
        assert_eq!(
            s[0].2,
            "printf '%s' 'berth_rt_x' | docker login r.example.com -u ci --password-stdin"
        );
        assert!(s[1].2.contains("- \"https://r.example.com\""));
        assert!(s[3].2.contains("${{ secrets.BERTH_TOKEN }}"), "{}", s[3].2);
    }
}
