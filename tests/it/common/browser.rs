//! A browser's view of the web UI for router tests: one session cookie, same-origin form
//! posts.

use axum::body::Body;

use super::{Resp, TestApp};

/// A browser's view of the UI: a cookie jar of one session cookie.
pub struct Browser<'a> {
    pub app: &'a TestApp,
    pub cookie: Option<String>,
}

impl<'a> Browser<'a> {
    pub fn new(app: &'a TestApp) -> Browser<'a> {
        Browser { app, cookie: None }
    }

    /// Signed in as `name`; panics if sign-in fails.
    pub async fn signed_in(app: &'a TestApp, name: &str, password: &str) -> Browser<'a> {
        let mut b = Browser::new(app);
        let r = b.sign_in(name, password).await;
        assert_eq!(r.status.as_u16(), 303, "{}", text(&r));
        assert!(b.cookie.is_some());
        b
    }

    pub async fn sign_in(&mut self, name: &str, password: &str) -> Resp {
        let form = format!(
            "name={}&password={}&next=/",
            urlencode(name),
            urlencode(password)
        );
        let r = self.post("/signin", &form, &[]).await;
        if let Some(set) = r.header("set-cookie") {
            let pair = set.split(';').next().unwrap();
            self.cookie = Some(pair.to_string());
        }
        r
    }

    pub async fn get(&self, path: &str) -> Resp {
        let mut h: Vec<(&str, &str)> = vec![("sec-fetch-site", "same-origin")];
        if let Some(c) = &self.cookie {
            h.push(("cookie", c));
        }
        self.app
            .call("GET", path, &with_no_auth(&h), Body::empty())
            .await
    }

    /// A form POST as a same-origin page sends it, plus `extra` headers (which replace the
    /// defaults of the same name).
    pub async fn post(&self, path: &str, form: &str, extra: &[(&str, &str)]) -> Resp {
        let mut h: Vec<(&str, &str)> = vec![("content-type", "application/x-www-form-urlencoded")];
        let named = |n: &str| extra.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
        if !named("sec-fetch-site") {
            h.push(("sec-fetch-site", "same-origin"));
        }
        if !named("origin") {
            h.push(("origin", "http://localhost"));
        }
        if let Some(c) = &self.cookie {
            h.push(("cookie", c));
        }
        h.extend_from_slice(extra);
        self.app
            .call("POST", path, &with_no_auth(&h), form.to_string())
            .await
    }
}

/// Pages carry no `Authorization`: the harness's robot header stays off.
fn with_no_auth<'h>(h: &[(&'h str, &'h str)]) -> Vec<(&'h str, &'h str)> {
    let mut v = h.to_vec();
    v.push(("authorization", ""));
    v
}

pub fn text(r: &Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
