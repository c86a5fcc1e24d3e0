//! How clients name the pull-through cache's repositories. Three ways, on the one listener,
//! beside every other repository:
//!
//! - the path prefix, `/v2/<upstream name>/<repository>`: any client (`docker pull
//!   registry.example.com/dockerhub/library/nginx`);
//! - `?ns=<registry>`, which containerd and k3s add when berth mirrors another registry:
//!   the registry is looked up among the configured upstreams, never dialled as given;
//! - a mirror host name (`Host`), for the Docker daemon's `registry-mirrors`, which sends
//!   neither.
//!
//! The last two name the repository as the upstream does (`library/nginx`, or `nginx` on
//! Docker Hub); the route is moved to the cache's repository before access is decided, so
//! grants, challenges and tokens speak of `dockerhub/library/nginx`.

use axum::extract::Request;
use axum::http::header;

use super::ApiError;
use super::query::Query;
use super::route::Route;
use crate::core::{Error, Registry};

/// The route, moved into a cache repository when `?ns=` or the host name says so.
pub fn addressed(reg: &Registry, route: Route, req: &Request) -> Result<Route, ApiError> {
    let caches = reg.caches();
    if caches.is_empty() {
        return Ok(route);
    }
    let Some(repo) = route.repo() else {
        return Ok(route);
    };
    let host = request_host(req);
    let query = Query::parse(req.uri().query());
    let cache = match query.get("ns") {
        // containerd names the registry it mirrors even when that is berth itself.
        Some(ns) if same_host(ns, host) => return Ok(route),
        Some(ns) => caches.by_registry(ns).ok_or_else(|| {
            Error::NotCached(format!(
                "berth caches no registry named {ns:?} (?ns=); it caches: {}",
                caches.registries()
            ))
        })?,
        None => match caches.by_host(host_only(host)) {
            Some(c) => c,
            // The path prefix, or no cache at all.
            None => return Ok(route),
        },
    };
    // The name is the upstream's, even when it starts like a cache's.
    let local = cache.local(repo)?;
    Ok(route.with_repo(local))
}

/// The host a request names: the `Host` header (HTTP/1.1) or the URI's authority (HTTP/2).
fn request_host<B>(req: &axum::http::Request<B>) -> &str {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or_default()
}

/// The base URL a client of a mirror host name sees (`https://hub-mirror.example.com`), for
/// the token realm of its challenges: even with `external_url` set, the Docker daemon must ask
/// for its token under the mirror's name, where its scopes are moved into the cache.
pub fn mirror_base<B>(reg: &Registry, req: &axum::http::Request<B>, base: &str) -> Option<String> {
    let host = request_host(req);
    reg.caches().by_host(host_only(host))?;
    let scheme = base.split_once("://").map_or("https", |(s, _)| s);
    Some(format!("{scheme}://{host}"))
}

/// Token scopes asked for on a mirror host name, moved into its cache as `addressed` moves
/// the requests (the Docker daemon asks for `library/nginx`, and pulls it there).
pub fn mirrored_scopes<B>(
    reg: &Registry,
    req: &axum::http::Request<B>,
    scopes: Vec<(String, crate::auth::Actions)>,
) -> Vec<(String, crate::auth::Actions)> {
    let host = request_host(req);
    let caches = reg.caches();
    let Some(cache) = caches.by_host(host_only(host)) else {
        return scopes;
    };
    scopes
        .into_iter()
        .map(|(name, actions)| {
            // A scope echoed from berth's own challenge names the cache already.
            let moved = crate::oci::RepoName::parse(&name)
                .ok()
                .filter(|r| caches.of(r).is_none_or(|c| c.name() != cache.name()))
                .and_then(|r| cache.local(&r).ok());
            (moved.map_or(name, |m| m.to_string()), actions)
        })
        .collect()
}

/// `registry.example.com` and `registry.example.com:443` are the same registry to a client.
fn same_host(a: &str, b: &str) -> bool {
    !b.is_empty() && (a.eq_ignore_ascii_case(b) || host_only(a).eq_ignore_ascii_case(host_only(b)))
}

/// A `Host` value without its port.
fn host_only(h: &str) -> &str {
    if h.starts_with('[') {
        return h.find(']').map_or(h, |end| &h[..=end]);
    }
    match h.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => h,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_compare_without_ports() {
        assert!(same_host(
            "registry.example.com",
            "registry.example.com:443"
        ));
        assert!(same_host(
            "Registry.example.com:5000",
            "registry.example.com"
        ));
        assert!(!same_host("docker.io", "registry.example.com"));
        assert!(!same_host("docker.io", ""));
        assert_eq!(host_only("mirror.example.com:8443"), "mirror.example.com");
        assert_eq!(host_only("mirror.example.com"), "mirror.example.com");
        assert_eq!(host_only("[::1]:5000"), "[::1]");
    }
}
