//! Sign-in and sign-out.

use askama::Template;
use axum::Form;
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::assets;
use super::page::{UiError, html_response};
use super::session::{self, Viewer};
use crate::auth::AuthError;
use crate::state::AppState;

#[derive(Template)]
#[template(path = "signin.html")]
struct SignInPage<'a> {
    css: &'static str,
    icon: &'static str,
    next: &'a str,
    name: &'a str,
    error: &'a str,
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

#[derive(Deserialize)]
pub struct SignInForm {
    name: String,
    password: String,
    next: Option<String>,
}

/// Where to go after signing in: a path on this site, never another host. Only the plain
/// characters of paths and queries pass (no control characters, which browsers drop, so
/// that `/\t/evil.example` cannot turn into `//evil.example`; no backslash), and the second
/// character is not a slash.
fn safe_next(next: Option<&str>) -> &str {
    let plain = |n: &str| {
        n.len() <= 2048
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-._~%?&=+:@!$,;*()'".contains(&b))
    };
    match next {
        Some(n) if n.starts_with('/') && !n[1..].starts_with('/') && plain(n) => n,
        _ => "/",
    }
}

fn page(status: StatusCode, next: &str, name: &str, error: &str) -> Response {
    let p = SignInPage {
        css: assets::CSS.path(),
        icon: assets::ICON.path(),
        next,
        name,
        error,
    };
    match p.render() {
        Ok(html) => html_response(status, html),
        Err(e) => UiError::Internal(format!("template: {e}")).into_response(),
    }
}

/// GET /signin
pub async fn form(Query(q): Query<NextQuery>) -> Response {
    page(StatusCode::OK, safe_next(q.next.as_deref()), "", "")
}

/// POST /signin
pub async fn submit(State(app): State<AppState>, req: Request) -> Response {
    let origin = app.origin(&req);
    let agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let old = session::session_cookie(req.headers(), &origin).map(str::to_string);
    let Ok(Form(f)) = Form::<SignInForm>::from_request(req, &app).await else {
        return page(
            StatusCode::BAD_REQUEST,
            "/",
            "",
            "Fill in your name and password.",
        );
    };
    let next = safe_next(f.next.as_deref());
    match app
        .auth
        .sign_in(f.name.trim(), &f.password, &origin.client, &agent)
        .await
    {
        Ok((secret, _)) => {
            // A session the browser held before is ended: sign-in rotates it.
            if let Some(old) = old.as_deref()
                && let Ok(Some(subject)) = app.auth.session(old).await
                && let Err(e) = app.auth.sign_out(old, &subject, &origin.client).await
            {
                tracing::warn!(error = %e, "could not end the session replaced at sign-in");
            }
            let mut r = Redirect::to(next).into_response();
            r.headers_mut().insert(
                header::SET_COOKIE,
                session::set_cookie(&secret, session::is_https(&origin)),
            );
            r
        }
        Err(AuthError::Unauthorized(why)) => {
            let msg = if why.starts_with("robot") {
                why
            } else {
                "Wrong name or password."
            };
            page(StatusCode::UNAUTHORIZED, next, &f.name, msg)
        }
        Err(AuthError::Locked(s)) => page(
            StatusCode::TOO_MANY_REQUESTS,
            next,
            &f.name,
            &format!("Too many failed sign-ins from here; try again in {s} seconds."),
        ),
        Err(e) => UiError::from(e).into_response(),
    }
}

/// POST /signout
pub async fn sign_out(State(app): State<AppState>, viewer: Viewer) -> Response {
    if let Err(e) = app
        .auth
        .sign_out(&viewer.secret, &viewer.subject, &viewer.origin.client)
        .await
    {
        return UiError::from(e).into_response();
    }
    let mut r = Redirect::to("/signin").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        session::clear_cookie(session::is_https(&viewer.origin)),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn only_local_paths_are_followed() {
        for ok in [
            "/",
            "/repositories?q=a%20b&page=2",
            "/repositories/team/app",
        ] {
            assert_eq!(safe_next(Some(ok)), ok);
        }
        for bad in [
            "//evil.example",
            "/\t/evil.example",
            "/\\evil.example",
            "https://evil.example",
            "/a\nb",
            "/a\u{7f}",
            "evil",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/");
    }
}
