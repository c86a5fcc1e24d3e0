//! Access control on `/v2`: who is asking (from the `Authorization` header), what the route
//! needs, and the answer when it is not allowed: `401` with a `WWW-Authenticate` challenge
//! that docker, containerd, skopeo, podman and Flux follow, or `403 DENIED`.

use axum::http::{HeaderMap, Method, header};
use base64::Engine as _;

use super::ApiError;
use super::query::Query;
use super::route::Route;
use crate::auth::{Action, AuthError, Credentials, Subject};

/// What a request needs before its handler runs.
pub enum Need {
    /// Any credentials (`GET /v2/`, the catalog, which is then filtered).
    Credentials,
    /// Actions on repositories.
    Repo(String, Vec<Action>),
}

pub fn need(route: &Route, method: &Method) -> Need {
    use Action::*;
    let (repo, action) = match route {
        Route::Base | Route::Catalog => return Need::Credentials,
        Route::Tags(r) | Route::Referrers(r, _) => (r, Pull),
        Route::Manifest(r, _) | Route::ManifestBadRef(r, _) | Route::Blob(r, _) => match *method {
            Method::DELETE => (r, Delete),
            Method::PUT => (r, Push),
            _ => (r, Pull),
        },
        Route::UploadStart(r) | Route::Upload(r, _) => (r, Push),
    };
    Need::Repo(repo.to_string(), vec![action])
}

/// Read the `Authorization` header. A malformed one is `Err`.
pub fn credentials(headers: &HeaderMap) -> Result<Credentials, &'static str> {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Ok(Credentials::None);
    };
    let v = v.to_str().map_err(|_| "malformed Authorization header")?;
    let (scheme, rest) = v.split_once(' ').ok_or("malformed Authorization header")?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Credentials::Bearer(rest.to_string()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| "malformed Basic credentials")?;
        let text = String::from_utf8(raw).map_err(|_| "malformed Basic credentials")?;
        let (user, password) = text.split_once(':').ok_or("malformed Basic credentials")?;
        return Ok(Credentials::Basic {
            user: user.to_string(),
            password: password.to_string(),
        });
    }
    Err("unsupported authorization scheme")
}

/// `401 UNAUTHORIZED` with a Bearer challenge naming the scope the client should ask for.
/// `base` is the client's view of berth (`http::origin`).
pub fn challenge(base: &str, scope: Option<(&str, &[Action])>, message: &str) -> ApiError {
    ApiError::Challenge {
        base: base.to_string(),
        scope: scope.map(|(r, a)| (r.to_string(), a.to_vec())),
        message: message.to_string(),
    }
}

/// The answer to a failed authentication on `/v2`: a wrong credential is challenged.
pub fn refused(base: &str, e: AuthError) -> ApiError {
    match e {
        AuthError::Unauthorized(why) => challenge(base, None, why),
        other => ApiError::Auth(other),
    }
}

/// Decide a request: `Ok(())` to go on, or the response to send instead.
pub fn check(
    base: &str,
    creds: &Credentials,
    subject: &Subject,
    need: &Need,
) -> Result<(), ApiError> {
    match need {
        Need::Credentials => match creds {
            Credentials::None => Err(challenge(base, None, "authentication required")),
            _ => Ok(()),
        },
        Need::Repo(repo, actions) => {
            for &a in actions {
                if !subject.may(repo, a) {
                    return Err(if subject.is_anonymous() {
                        challenge(base, Some((repo, actions)), "authentication required")
                    } else {
                        ApiError::Denied {
                            who: subject.name.clone().unwrap_or_default(),
                            repo: repo.clone(),
                            action: a,
                        }
                    });
                }
                if !subject.token_covers(repo, a) {
                    // The holder may, but this token was not issued for it: ask for another.
                    return Err(challenge(base, Some((repo, actions)), "insufficient scope"));
                }
            }
            Ok(())
        }
    }
}

/// Whether the query names a mount source the subject may read.
pub fn may_mount_from(subject: &Subject, query: &Query) -> bool {
    query
        .get("from")
        .is_some_and(|f| subject.may(f, Action::Pull) && subject.token_covers(f, Action::Pull))
}
