//! The Docker token endpoint: `GET /token` with Basic credentials (or none, for anonymous
//! pulls) and the OAuth2 `POST /token` form that containerd uses. Both hand out a short-lived
//! signed bearer token carrying only the granted scopes.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Limited};
use serde_json::json;

use super::ApiError;
use super::auth::credentials;
use super::query::Query;
use crate::auth::{Actions, Credentials, TOKEN_TTL};
use crate::clock::rfc3339;
use crate::http::origin::Origin;
use crate::oci::RepoName;
use crate::state::AppState;

/// Parse `repository:NAME:ACTIONS` scopes (several per value, space-separated). Scopes of
/// other kinds or with invalid names grant nothing and are dropped.
fn scopes<'a>(values: impl Iterator<Item = &'a str>) -> Vec<(String, Actions)> {
    let mut out = Vec::new();
    for scope in values.flat_map(str::split_whitespace) {
        let Some(rest) = scope.strip_prefix("repository:") else {
            continue;
        };
        let Some((name, actions)) = rest.rsplit_once(':') else {
            continue;
        };
        let (Ok(name), Ok(actions)) = (RepoName::parse(name), Actions::parse(actions)) else {
            continue;
        };
        out.push((name.to_string(), actions));
    }
    out
}

/// GET /token?service=<service>&scope=repository:<name>:<actions>
pub async fn get(State(app): State<AppState>, req: Request) -> Response {
    let query = Query::parse(req.uri().query());
    let creds = match credentials(req.headers()) {
        // A bearer token is not a credential for another token: that would let a narrow,
        // short-lived token be traded for a wide one, again and again.
        Ok(Credentials::Bearer(_)) => {
            return ApiError::BasicChallenge(
                "a bearer token cannot obtain another token; send Basic credentials".into(),
            )
            .into_response();
        }
        Ok(c) => c,
        Err(why) => return ApiError::BasicChallenge(why.into()).into_response(),
    };
    let requested = super::cache::mirrored_scopes(&app.registry, &req, scopes(query.all("scope")));
    issue(&app, &creds, &app.origin(&req), &requested, false)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// POST /token (application/x-www-form-urlencoded): grant_type=password with username and
/// password, as containerd sends. Refresh tokens are not issued, so not accepted either.
pub async fn post(State(app): State<AppState>, req: Request) -> Response {
    let origin = app.origin(&req);
    let (parts, body) = req.into_parts();
    let host_only = axum::http::Request::from_parts(parts, ());
    let oauth_error = |code| ApiError::OAuth(StatusCode::BAD_REQUEST, code).into_response();
    let body = match Limited::new(body, 64 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return oauth_error("invalid_request"),
    };
    let form = Query::parse(std::str::from_utf8(&body).ok());
    let creds = match form.get("grant_type") {
        Some("password") => match (form.get("username"), form.get("password")) {
            (Some(u), Some(p)) => Credentials::Basic {
                user: u.to_string(),
                password: p.to_string(),
            },
            _ => return oauth_error("invalid_request"),
        },
        _ => return oauth_error("unsupported_grant_type"),
    };
    let requested =
        super::cache::mirrored_scopes(&app.registry, &host_only, scopes(form.all("scope")));
    issue(&app, &creds, &origin, &requested, true)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn issue(
    app: &AppState,
    creds: &Credentials,
    origin: &Origin,
    requested: &[(String, Actions)],
    oauth: bool,
) -> Result<Response, ApiError> {
    // A wrong credential is challenged for Basic credentials (`ApiError::Auth`), not for
    // another token.
    let subject = app.auth.authenticate(creds, &origin.client).await?;
    let (token, _granted) = app.auth.issue(&subject, requested);
    let issued_at = rfc3339(app.auth.now());
    let body = if oauth {
        json!({ "access_token": token, "expires_in": TOKEN_TTL, "issued_at": issued_at, "scope": "" })
    } else {
        json!({ "token": token, "access_token": token, "expires_in": TOKEN_TTL, "issued_at": issued_at })
    };
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from(body.to_string()))
        .expect("valid response"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_parsing() {
        let s = scopes(
            [
                "repository:a/b:pull,push repository:c:pull",
                "registry:catalog:*",
                "repository:BAD:pull",
                "repository:x:fly",
            ]
            .into_iter(),
        );
        let names: Vec<String> = s.iter().map(|(n, a)| format!("{n}={a}")).collect();
        assert_eq!(names, ["a/b=pull,push", "c=pull"]);
    }
}
