//! Who is signed in, and the guards every UI request passes: the session cookie, refusal of
//! cross-site requests that would change something, and the security headers.
//!
//! The cookie is `__Host-berth_session` (`Secure`) when the browser reaches berth over HTTPS,
//! and `berth_session` over plain HTTP (browsers drop `Secure` cookies there); both are
//! `HttpOnly`, `SameSite=Strict` and `Path=/`. SameSite alone does not stop a page on another
//! port or subdomain of the same host (that is the same site), so a state-changing request
//! must also come from this origin: `Sec-Fetch-Site: same-origin`, or, from a browser that
//! does not send it, an `Origin` equal to berth's own.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::page::UiError;
use crate::auth::Subject;
use crate::auth::sessions::{LIFETIME, SessionSecret};
use crate::http::origin::Origin;
use crate::state::AppState;

const SECURE_COOKIE: &str = "__Host-berth_session";
const PLAIN_COOKIE: &str = "berth_session";

/// The signed-in user of a request.
pub struct Viewer {
    pub name: String,
    pub subject: Subject,
    /// The session cookie's value (to end it at sign-out).
    pub(super) secret: String,
    /// Where the request came from and how the browser reaches berth.
    pub origin: Origin,
}

impl Viewer {
    /// Audit what the viewer did (after it succeeded).
    pub async fn audit(&self, app: &AppState, action: &str, detail: String) {
        app.auth
            .audit(&self.subject, &self.origin.client, action, detail)
            .await;
    }

    /// Administrators only.
    pub fn require_admin(&self) -> Result<(), UiError> {
        if self.subject.is_admin() {
            Ok(())
        } else {
            Err(UiError::Forbidden("this page is for administrators".into()))
        }
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Viewer, UiError> {
        // Back to the page after signing in; a form's target is not a page.
        let next = match parts.method {
            Method::GET | Method::HEAD => parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            _ => "/",
        }
        .to_string();
        let origin = app.origin_of(parts);
        let Some(secret) = session_cookie(&parts.headers, &origin) else {
            return Err(UiError::SignIn { next });
        };
        let Some(subject) = app.auth.session(secret).await? else {
            return Err(UiError::SignIn { next });
        };
        Ok(Viewer {
            name: subject.name.clone().unwrap_or_default(),
            subject,
            secret: secret.to_string(),
            origin,
        })
    }
}

/// Whether the browser reaches berth over HTTPS (directly, or through a trusted proxy or the
/// configured external URL).
pub fn is_https(origin: &Origin) -> bool {
    origin.base.starts_with("https://")
}

fn cookie_name(secure: bool) -> &'static str {
    if secure { SECURE_COOKIE } else { PLAIN_COOKIE }
}

/// The value of cookie `name`, if the request carries it once. Twice means another site on
/// this host (another port, a subdomain) planted one beside ours (cookie tossing, possible
/// over plain HTTP where the `__Host-` prefix cannot be used): neither is trusted.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut found = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v);
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// The session cookie of the scheme the browser uses, if it carries one (once).
pub fn session_cookie<'a>(headers: &'a HeaderMap, origin: &Origin) -> Option<&'a str> {
    cookie(headers, cookie_name(is_https(origin)))
}

/// `Set-Cookie` for a new session.
pub fn set_cookie(secret: &SessionSecret, secure: bool) -> HeaderValue {
    let attrs = if secure { "; Secure" } else { "" };
    let v = format!(
        "{}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={LIFETIME}{attrs}",
        cookie_name(secure),
        secret.expose()
    );
    HeaderValue::from_str(&v).expect("session secrets are URL-safe base64")
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear_cookie(secure: bool) -> HeaderValue {
    let attrs = if secure { "; Secure" } else { "" };
    let v = format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{attrs}",
        cookie_name(secure)
    );
    HeaderValue::from_str(&v).expect("a plain header value")
}

/// Refuse a request that would change something unless it comes from berth's own pages.
pub async fn same_origin_only(State(app): State<AppState>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let base = app.origin(&req).base;
    if let Some(why) = cross_site(req.headers(), &base) {
        tracing::info!(why, "refused a cross-site request to the web UI");
        return UiError::Forbidden(format!(
            "this request came from another site ({why}); berth accepts changes only from its own pages"
        ))
        .into_response();
    }
    next.run(req).await
}

/// Why a state-changing request is cross-site, or `None` when it comes from `base`
/// (`scheme://host[:port]`) or from something that is not a browser (no `Sec-Fetch-Site`, no
/// `Origin`: a script with its own credentials, which no other page can make a browser send).
pub fn cross_site(h: &HeaderMap, base: &str) -> Option<&'static str> {
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    match get("sec-fetch-site") {
        Some("same-origin") | Some("none") => return None,
        Some("same-site") => return Some("another port or subdomain of this host"),
        Some(_) => return Some("another site"),
        None => {}
    }
    match get("origin") {
        None => None,
        Some(o) if o.eq_ignore_ascii_case(base) => None,
        Some(_) => Some("its Origin is not this registry"),
    }
}

/// Headers on every UI response: a strict content security policy (no inline script or
/// style, nothing from elsewhere), no framing, no sniffing, and pages never cached.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    secure(&mut resp);
    resp
}

/// Add the UI's security headers to a response.
pub fn secure(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "Cross-Origin-Opener-Policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "Permissions-Policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=()"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_same_origin_browsers_and_non_browsers_pass() {
        let base = "http://127.0.0.1:5000";
        assert_eq!(cross_site(&headers(&[]), base), None);
        assert_eq!(
            cross_site(&headers(&[("sec-fetch-site", "same-origin")]), base),
            None
        );
        assert!(cross_site(&headers(&[("sec-fetch-site", "same-site")]), base).is_some());
        assert!(cross_site(&headers(&[("sec-fetch-site", "cross-site")]), base).is_some());
        assert_eq!(
            cross_site(&headers(&[("origin", "http://127.0.0.1:5000")]), base),
            None
        );
        assert!(cross_site(&headers(&[("origin", "http://127.0.0.1:18081")]), base).is_some());
        assert!(cross_site(&headers(&[("origin", "null")]), base).is_some());
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let h = headers(&[("cookie", "a=1; xberth_session=2; berth_session=abc")]);
        assert_eq!(cookie(&h, "berth_session"), Some("abc"));
        assert_eq!(cookie(&h, "__Host-berth_session"), None);
        let h = headers(&[("cookie", "berth_session=planted; berth_session=mine")]);
        assert_eq!(
            cookie(&h, "berth_session"),
            None,
            "a tossed cookie beside ours"
        );
    }
}
