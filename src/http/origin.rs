//! Where a request comes from and how the client reaches berth: the client address (for
//! throttling and audit) and the base URL for the absolute URLs berth emits (token realm,
//! upload locations). `X-Forwarded-*` headers count only from configured trusted proxies.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request};

use crate::config::Proxies;

#[derive(Debug, Clone)]
pub struct Origin {
    /// The client's address as text ("unknown" when the transport gives none).
    pub client: String,
    /// `scheme://host[:port]` as the client sees berth.
    pub base: String,
    /// Whether `base` came from configuration or a trusted proxy: then berth emits absolute
    /// URLs; otherwise relative ones, which resolve against whatever the client used.
    pub absolute: bool,
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Host header values are echoed into URLs: only plain host[:port] characters pass.
pub(crate) fn clean_host(h: &str) -> Option<&str> {
    (!h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".:-[]".contains(&b)))
    .then_some(h)
}

pub fn origin<B>(req: &Request<B>, proxies: &Proxies, tls: bool) -> Origin {
    let (h, uri, ext) = (req.headers(), req.uri(), req.extensions());
    of(h, uri, ext, proxies, tls)
}

/// `origin` from a request's parts (the web UI's extractors see parts, not the request).
pub fn of(
    h: &HeaderMap,
    uri: &axum::http::Uri,
    ext: &axum::http::Extensions,
    proxies: &Proxies,
    tls: bool,
) -> Origin {
    let peer = ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let trusted = peer.is_some_and(|p| proxies.trusts(p));
    let client = match (trusted, header(h, "x-forwarded-for")) {
        // The rightmost address not of a trusted proxy is the client.
        (true, Some(list)) => list
            .rsplit(',')
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .find(|a| !proxies.trusts(*a))
            .or(peer),
        _ => peer,
    }
    .map(|a| a.to_canonical().to_string())
    .unwrap_or_else(|| "unknown".into());

    if let Some(url) = &proxies.external_url {
        return Origin {
            client,
            base: url.clone(),
            absolute: true,
        };
    }
    if trusted {
        let proto = header(h, "x-forwarded-proto").filter(|p| *p == "https" || *p == "http");
        let host = header(h, "x-forwarded-host")
            .and_then(|v| clean_host(v.split(',').next().unwrap_or("").trim()));
        let direct = header(h, "host")
            .or(uri.authority().map(|a| a.as_str()))
            .and_then(clean_host);
        if let (Some(proto), Some(host)) = (proto, host.or(direct)) {
            return Origin {
                client,
                base: format!("{proto}://{host}"),
                absolute: true,
            };
        }
    }
    // HTTP/2 carries the host in the :authority pseudo-header, which lands in the URI.
    let authority = uri.authority().map(|a| a.as_str());
    let host = header(h, "host")
        .or(authority)
        .and_then(clean_host)
        .unwrap_or("localhost");
    let scheme = if tls { "https" } else { "http" };
    Origin {
        client,
        base: format!("{scheme}://{host}"),
        absolute: false,
    }
}

impl Origin {
    /// A path as the client should follow it: absolute when the base is known for sure.
    pub fn url(&self, path: &str) -> String {
        if self.absolute {
            format!("{}{path}", self.base)
        } else {
            path.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(peer: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder();
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let mut r = b.body(()).unwrap();
        r.extensions_mut().insert(ConnectInfo(
            format!("{peer}:1234").parse::<SocketAddr>().unwrap(),
        ));
        r
    }

    #[test]
    fn forwarded_headers_only_from_trusted_proxies() {
        let p = Proxies::parse(None, &["127.0.0.1".into()]).unwrap();
        let fwd = [
            ("host", "10.0.0.5:5000"),
            ("x-forwarded-for", "203.0.113.9, 127.0.0.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "registry.example.com"),
        ];
        let o = origin(&req("127.0.0.1", &fwd), &p, false);
        assert_eq!(o.client, "203.0.113.9");
        assert_eq!(o.base, "https://registry.example.com");
        assert!(o.absolute);
        assert_eq!(o.url("/v2/x"), "https://registry.example.com/v2/x");
        let o = origin(&req("198.51.100.1", &fwd), &p, false);
        assert_eq!(o.client, "198.51.100.1", "spoofed X-Forwarded-For ignored");
        assert_eq!(o.base, "http://10.0.0.5:5000");
        assert!(!o.absolute);
        assert_eq!(o.url("/v2/x"), "/v2/x");
        let o = origin(&req("198.51.100.1", &[("host", "evil\"host")]), &p, true);
        assert_eq!(o.base, "https://localhost");
    }

    #[test]
    fn external_url_wins() {
        let p = Proxies::parse(Some("https://r.example.com"), &[]).unwrap();
        let o = origin(&req("127.0.0.1", &[("host", "internal:5000")]), &p, false);
        assert_eq!(o.base, "https://r.example.com");
        assert!(o.absolute);
    }
}
