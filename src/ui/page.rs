//! Rendering: the frame every page shares, the one mapping of errors to readable pages (with
//! a request id that the log line carries too), and the small formatters templates use.

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::assets;
use crate::auth::AuthError;
use crate::auth::accounts::AccountError;
use crate::core::Error;

/// What every signed-in page shows around its content.
pub struct Chrome {
    pub title: String,
    pub user: String,
    pub admin: bool,
    /// The navigation entry to mark as current.
    pub nav: &'static str,
    pub css: &'static str,
    pub js: &'static str,
    pub icon: &'static str,
}

impl Chrome {
    pub fn new(
        title: impl Into<String>,
        viewer: &super::session::Viewer,
        nav: &'static str,
    ) -> Chrome {
        Chrome {
            title: title.into(),
            user: viewer.name.clone(),
            admin: viewer.subject.is_admin(),
            nav,
            css: assets::CSS.path(),
            js: assets::JS.path(),
            icon: assets::ICON.path(),
        }
    }
}

/// Render a page, or the error page when the template fails.
pub fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => html_response(StatusCode::OK, html),
        Err(e) => UiError::Internal(format!("template: {e}")).into_response(),
    }
}

pub fn html_response(status: StatusCode, html: String) -> Response {
    let mut r = (status, html).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

/// Why a page could not be shown.
#[derive(Debug)]
pub enum UiError {
    /// Not signed in (or the session ended): to the sign-in page, then back to `next`.
    SignIn {
        next: String,
    },
    NotFound(String),
    Forbidden(String),
    BadRequest(String),
    TooMany(String),
    Unavailable(String),
    /// Logged with the request id; the page says only that something failed.
    Internal(String),
}

impl From<Error> for UiError {
    fn from(e: Error) -> UiError {
        match e {
            Error::NameUnknown => UiError::NotFound("no such repository".into()),
            Error::ManifestUnknown => UiError::NotFound("no such manifest".into()),
            Error::DigestInvalid(m) | Error::PolicyInvalid(m) => UiError::BadRequest(m),
            Error::PolicyUnknown(p) => {
                UiError::NotFound(format!("no retention policy named {p:?}"))
            }
            Error::Db(d) if d.is_busy() => UiError::Unavailable(
                "the database is busy with another process; try again in a moment".into(),
            ),
            e if e.is_storage_full() => {
                UiError::Unavailable("the disk holding berth's data is full".into())
            }
            e => UiError::Internal(e.to_string()),
        }
    }
}

impl From<AuthError> for UiError {
    fn from(e: AuthError) -> UiError {
        match e {
            AuthError::Unauthorized(m) => UiError::Forbidden(m.into()),
            AuthError::Locked(s) => {
                UiError::TooMany(format!("too many failed sign-ins; retry in {s} seconds"))
            }
            e => UiError::Internal(e.to_string()),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    heading: &'a str,
    message: &'a str,
    request_id: &'a str,
    css: &'static str,
    icon: &'static str,
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, heading, message) = match &self {
            UiError::SignIn { next } => {
                let to = format!("/signin?next={}", encode_query(next));
                return Redirect::to(&to).into_response();
            }
            UiError::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m.as_str()),
            UiError::Forbidden(m) => (StatusCode::FORBIDDEN, "Not allowed", m.as_str()),
            UiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Bad request", m.as_str()),
            UiError::TooMany(m) => (StatusCode::TOO_MANY_REQUESTS, "Slow down", m.as_str()),
            UiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, "Unavailable", m.as_str()),
            UiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something failed",
                "berth could not show this page; the server log has the details under this \
                 request id.",
            ),
        };
        let request_id = request_id();
        match &self {
            UiError::Internal(cause) => {
                tracing::error!(request_id, error = %cause, "web UI request failed")
            }
            _ => tracing::debug!(
                request_id,
                status = status.as_u16(),
                message,
                "web UI refusal"
            ),
        }
        let page = ErrorPage {
            status: status.as_u16(),
            heading,
            message,
            request_id: &request_id,
            css: assets::CSS.path(),
            icon: assets::ICON.path(),
        };
        let html = page.render().unwrap_or_else(|_| {
            format!(
                "{} {heading}: {message} (request id {request_id})\n",
                status.as_u16()
            )
        });
        html_response(status, html)
    }
}

/// The value of form field `name` as sent (`""` when absent). Forms whose fields repeat
/// (`tag`, `action`) are read as pairs; this reads the single ones.
pub fn form_value<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

/// A text a list is filtered by, from its query string: trimmed, at most `max` characters.
pub fn query_text(q: Option<String>, max: usize) -> String {
    q.unwrap_or_default().trim().chars().take(max).collect()
}

/// `host[:port]` as clients name this registry, and whether it is plain HTTP.
pub fn registry_host(origin: &crate::http::origin::Origin) -> (String, bool) {
    match origin.base.split_once("://") {
        Some(("https", h)) => (h.to_string(), false),
        Some((_, h)) => (h.to_string(), true),
        None => (origin.base.clone(), true),
    }
}

/// Run an account change (argon2 and SQLite) off the async workers.
pub async fn accounts<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AccountError> + Send + 'static,
) -> Result<T, UiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| UiError::Internal(e.to_string()))?
        .map_err(UiError::from)
}

impl From<AccountError> for UiError {
    fn from(e: AccountError) -> UiError {
        match e {
            AccountError::NoSuchUser(_) | AccountError::NoSuchToken(_) => {
                UiError::NotFound(e.to_string())
            }
            AccountError::Db(d) if d.is_busy() => UiError::Unavailable(
                "the database is busy with another process; try again in a moment".into(),
            ),
            AccountError::Db(_) | AccountError::Internal(_) => UiError::Internal(e.to_string()),
            e => UiError::BadRequest(e.to_string()),
        }
    }
}

/// A short random id that ties an error page to its log line.
fn request_id() -> String {
    let mut b = [0u8; 6];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Percent-encode a query value (everything but unreserved characters and `/`).
pub fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `2026-11-30 14:05 UTC`.
pub fn utc(t: i64) -> String {
    // `2026-11-30T14:05:09Z`: the date, and the time to the minute.
    let full = crate::clock::rfc3339(t);
    format!("{} {} UTC", &full[..10], &full[11..16])
}

/// `utc`, or a dash when there is no time.
pub fn utc_or_dash(t: Option<i64>) -> String {
    t.map_or_else(|| "—".to_string(), utc)
}

/// `5 min ago`, `3 h ago`, `2 days ago` (relative to `now`).
pub fn ago(t: Option<i64>, now: i64) -> String {
    let Some(t) = t else {
        return "never".into();
    };
    let s = (now - t).max(0);
    match s {
        0..60 => "just now".into(),
        60..3600 => format!("{} min ago", s / 60),
        3600..86_400 => format!("{} h ago", s / 3600),
        _ => {
            let d = s / 86_400;
            format!("{d} day{} ago", if d == 1 { "" } else { "s" })
        }
    }
}

pub use crate::core::gc::human_bytes as bytes;

/// `sha256:0123456789ab` (the algorithm and 12 hex digits).
pub fn short_digest(d: &str) -> String {
    match d.split_once(':') {
        Some((alg, hex)) if hex.len() > 12 => format!("{alg}:{}", &hex[..12]),
        _ => d.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_calendar_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(ago(Some(100), 100), "just now");
        assert_eq!(ago(Some(0), 7200), "2 h ago");
        assert_eq!(ago(Some(0), 86_400), "1 day ago");
        assert_eq!(ago(None, 5), "never");
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(
            encode_query("/repositories/a b?x=1&y"),
            "/repositories/a%20b%3Fx%3D1%26y"
        );
        assert_eq!(
            short_digest("sha256:0123456789abcdef"),
            "sha256:0123456789ab"
        );
    }
}
