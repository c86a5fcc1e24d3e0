//! Proxy trouble made visible. Some proxies (Cloudflare's tunnel among them, cloudflared#1485)
//! drop the body of a PATCH streamed without `Content-Length`: the registry sees an empty
//! PATCH, then a `PUT ?digest=` whose digest cannot match, and a client that retries for ever.
//! When a session had an empty streamed PATCH, or the failing request came through a proxy
//! (forwarding headers), the digest error says what most likely happened and what to do. The
//! empty streamed PATCH is the evidence: only then is it logged (once per session, with the
//! client and the proxy's headers) and counted in `/metrics`; forwarding headers alone, which
//! any client can send, change nothing but the message.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::HeaderMap;

use crate::core::Error;
use crate::oci::UploadId;

/// Sessions remembered at most; beyond, the oldest knowledge is dropped (a heuristic).
const MAX_SESSIONS: usize = 4096;

/// Headers that show a proxy forwarded the request.
const FORWARDING: &[&str] = &[
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-real-ip",
    "via",
    "cf-connecting-ip",
    "cf-ray",
];

#[derive(Clone, Copy, Default)]
struct Seen {
    empty_stream: bool,
    logged: bool,
}

fn sessions() -> &'static Mutex<HashMap<UploadId, Seen>> {
    static SESSIONS: std::sync::OnceLock<Mutex<HashMap<UploadId, Seen>>> =
        std::sync::OnceLock::new();
    SESSIONS.get_or_init(Mutex::default)
}

fn with<T>(f: impl FnOnce(&mut HashMap<UploadId, Seen>) -> T) -> T {
    let mut map = sessions().lock().unwrap_or_else(|p| p.into_inner());
    if map.len() >= MAX_SESSIONS {
        map.clear();
    }
    f(&mut map)
}

/// A PATCH without a length brought no byte.
pub fn empty_stream(id: &UploadId) {
    with(|m| m.entry(id.clone()).or_default().empty_stream = true);
}

/// The session is over.
pub fn forget(id: &UploadId) {
    with(|m| m.remove(id));
}

/// The forwarding headers of a request, as `name: value` pairs (for the log).
pub fn forwarding_headers(h: &HeaderMap) -> Vec<String> {
    FORWARDING
        .iter()
        .filter_map(|name| {
            h.get(*name)
                .map(|v| format!("{name}: {}", String::from_utf8_lossy(v.as_bytes())))
        })
        .collect()
}

/// The error for a digest that did not match: explained when a proxy is the likely cause.
pub fn explain(id: &UploadId, why: String, forwarded: &[String], client: &str) -> Error {
    let (empty_stream, first) = with(|m| {
        let seen = m.get(id).copied().unwrap_or_default();
        if seen.empty_stream {
            m.entry(id.clone()).or_default().logged = true;
        }
        (seen.empty_stream, !seen.logged)
    });
    if !empty_stream && forwarded.is_empty() {
        return Error::DigestInvalid(why);
    }
    if empty_stream && first {
        crate::metrics::global().proxy_dropped_bodies.inc();
        tracing::warn!(
            upload = %id,
            %client,
            proxy_headers = %forwarded.join("; "),
            "upload digest mismatch behind a proxy: the proxy probably dropped the body of a streamed PATCH (see the README, \"Behind a proxy\")"
        );
    }
    Error::DigestInvalid(format!(
        "{why}. A proxy in front of the registry probably dropped the body of a PATCH sent without Content-Length (chunked), as Cloudflare's tunnel does: make the proxy pass request bodies through (or raise its body limits), or push to the registry directly; see the README section \"Behind a proxy\""
    ))
}
