//! Outbound: the registries a pull-through cache fills from (Docker Hub, another registry).
//! It speaks the Distribution API's reads and the Docker token flow, and knows nothing of
//! berth's database: `core` decides what to fetch and stores it through the same paths as a
//! push.
//!
//! - A token is fetched once per scope and reused until shortly before it expires; requests
//!   that find none wait for one fetch instead of each asking (Docker Hub limits those too).
//! - Redirects are followed here, not by the HTTP client: `Authorization` goes to the
//!   upstream's own origin only, and once a redirect leaves it (a CDN serving blobs) it is
//!   never sent again, even if a later hop comes back.
//! - A token realm must be `https` (for a plain-HTTP upstream: on the upstream's own origin)
//!   and is asked without following redirects, and only a challenge from the upstream's own
//!   origin is answered, so a hostile upstream cannot make berth fetch from its neighbours.
//! - Every read is bounded: manifests at 4 MiB, token answers at 64 KiB, error bodies are not
//!   read; manifest and token requests end after 30 s, connections time out.
//! - Docker Hub's rate-limit headers are kept from the last answer that had them.
//!
//! Layering: a floor room beside `storage/`; uses `oci` types and `tls`' crypto provider.

mod challenge;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, LOCATION, WWW_AUTHENTICATE,
};
use reqwest::{StatusCode, Url};

pub use challenge::{Challenge, parse as parse_challenge};

use crate::oci::{Digest, Hasher, Reference, RepoName};

/// What manifest reads accept: every kind berth stores, so upstream bytes are kept exactly.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";
const MAX_MANIFEST: usize = crate::oci::manifest::MAX_MANIFEST_BYTES;
const MAX_TOKEN_ANSWER: usize = 64 * 1024;
/// A token without `expires_in` lives this long (the token spec's default), seconds.
const DEFAULT_TOKEN_SECS: u64 = 60;
/// A token is used at most this long, whatever it says, seconds.
const MAX_TOKEN_SECS: u64 = 24 * 3600;
/// Redirects followed per request.
const MAX_REDIRECTS: usize = 5;
/// Manifest and token requests end after this, however slowly bytes keep coming.
const SMALL_REQUEST: Duration = Duration::from_secs(30);

/// A registry to read from.
#[derive(Clone)]
pub struct Upstream {
    /// `https://registry-1.docker.io`: scheme and host, no path.
    pub url: String,
    /// A user and password (or access token) for the upstream, when it needs one.
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("url", &self.url)
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("the upstream has no such {0}")]
    NotFound(&'static str),
    #[error("the upstream refused access: {0}")]
    Denied(String),
    #[error("the upstream is rate limiting{}", .retry_after.map(|s| format!(" (retry in {s} s)")).unwrap_or_default())]
    RateLimited { retry_after: Option<u64> },
    #[error("the upstream is unavailable: {0}")]
    Unavailable(String),
    #[error("the upstream sent {0}")]
    Invalid(String),
}

type Result<T> = std::result::Result<T, UpstreamError>;

/// A manifest as the upstream describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    pub digest: Digest,
    pub media_type: String,
    /// Bytes, when the upstream said (a `HEAD` may not).
    pub size: Option<u64>,
}

/// The upstream's rate-limit headers (`ratelimit-limit`, `ratelimit-remaining`), as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: String,
    pub remaining: String,
}

/// One scope's token, fetched once for everyone waiting: (token, use until).
type Slot = Arc<tokio::sync::Mutex<Option<(String, Instant)>>>;

/// A client of one upstream.
pub struct Client {
    http: reqwest::Client,
    upstream: Upstream,
    /// The upstream's origin (scheme, host, port): where credentials may go.
    origin: Url,
    tokens: Mutex<HashMap<String, Slot>>,
    token_fetches: AtomicU64,
    rate_limit: Mutex<Option<RateLimit>>,
}

impl Client {
    pub fn new(upstream: Upstream) -> Result<Client> {
        let origin = Url::parse(&upstream.url)
            .ok()
            .filter(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some())
            .filter(|u| u.username().is_empty() && u.password().is_none())
            .ok_or_else(|| {
                UpstreamError::Invalid(format!(
                    "an upstream URL berth cannot use: {:?} (want https://host[:port])",
                    upstream.url
                ))
            })?;
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| UpstreamError::Unavailable(e.to_string()))?
            .with_root_certificates(rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            })
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            // Redirects are followed in `request`, which decides where credentials go.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| UpstreamError::Unavailable(e.to_string()))?;
        Ok(Client {
            http,
            upstream: Upstream {
                url: origin.origin().ascii_serialization(),
                ..upstream
            },
            origin,
            tokens: Mutex::default(),
            token_fetches: AtomicU64::new(0),
            rate_limit: Mutex::default(),
        })
    }

    /// Tokens fetched so far (one per scope per lifetime is the goal).
    pub fn token_fetches(&self) -> u64 {
        self.token_fetches.load(Ordering::Relaxed)
    }

    /// The rate-limit headers of the last answer that carried them.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.rate_limit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `HEAD` a manifest: its digest, media type and size, without its body (Docker Hub does
    /// not count a `HEAD` as a pull). Use the digest to decide what to fetch; fetch by it.
    pub async fn head_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Described> {
        let resp = self
            .send(
                reqwest::Method::HEAD,
                repo,
                &manifest_path(repo, reference),
                true,
            )
            .await?;
        let digest = header(&resp, "docker-content-digest")
            .ok_or_else(|| UpstreamError::Invalid("a manifest HEAD without a digest".into()))
            .and_then(|d| {
                Digest::parse(&d)
                    .map_err(|e| UpstreamError::Invalid(format!("a bad digest {d:?}: {e}")))
            })?;
        if let Reference::Digest(asked) = reference
            && asked != &digest
        {
            return Err(UpstreamError::Invalid(format!(
                "digest {digest} for a HEAD of {asked}"
            )));
        }
        Ok(Described {
            digest,
            media_type: header(&resp, CONTENT_TYPE.as_str()).unwrap_or_default(),
            size: header(&resp, CONTENT_LENGTH.as_str()).and_then(|n| n.parse().ok()),
        })
    }

    /// `GET` a manifest: its bytes exactly as sent, checked against the digest asked for (by
    /// digest) or announced (by tag), in that digest's algorithm.
    pub async fn manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<(Described, Bytes)> {
        let resp = self
            .send(
                reqwest::Method::GET,
                repo,
                &manifest_path(repo, reference),
                true,
            )
            .await?;
        let media_type = header(&resp, CONTENT_TYPE.as_str()).unwrap_or_default();
        let announced = match header(&resp, "docker-content-digest") {
            Some(d) => Some(
                Digest::parse(&d)
                    .map_err(|e| UpstreamError::Invalid(format!("a bad digest {d:?}: {e}")))?,
            ),
            None => None,
        };
        let body = read_limited(resp, MAX_MANIFEST).await?;
        let expected = match reference {
            Reference::Digest(d) => Some(d.clone()),
            Reference::Tag(_) => announced,
        };
        let digest = match expected {
            Some(e) => {
                let mut h = Hasher::new(e.algorithm());
                h.update(&body);
                let actual = h.finish();
                if actual != e {
                    return Err(UpstreamError::Invalid(format!(
                        "a manifest whose bytes hash to {actual}, not {e}"
                    )));
                }
                actual
            }
            None => Digest::sha256_of(&body),
        };
        let size = Some(body.len() as u64);
        Ok((
            Described {
                digest,
                media_type,
                size,
            },
            body,
        ))
    }

    /// `GET` a blob: its size when announced, and its bytes as they arrive (the caller hashes
    /// and checks them, and bounds the time and size it allows).
    pub async fn blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<(
        Option<u64>,
        impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    )> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let resp = self.send(reqwest::Method::GET, repo, &path, false).await?;
        let size = resp.content_length();
        let stream = resp.bytes_stream().map_err(std::io::Error::other).boxed();
        Ok((size, stream))
    }

    /// `HEAD` a blob: its size, without its bytes.
    pub async fn head_blob(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let resp = self.send(reqwest::Method::HEAD, repo, &path, true).await?;
        header(&resp, CONTENT_LENGTH.as_str())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| UpstreamError::Invalid("a blob HEAD without a size".into()))
    }

    /// The token slot of a scope, pruning expired tokens of other scopes.
    fn slot(&self, scope: &str) -> Slot {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if !tokens.contains_key(scope) {
            let now = Instant::now();
            tokens.retain(|_, s| {
                s.try_lock()
                    .map(|t| t.as_ref().is_some_and(|(_, until)| *until > now))
                    .unwrap_or(true)
            });
        }
        tokens.entry(scope.to_string()).or_default().clone()
    }

    /// Send a read, with the scope's token when one is held; on a challenge from the
    /// upstream itself, get a token (one fetch however many wait) or use Basic credentials,
    /// and send it once more.
    async fn send(
        &self,
        method: reqwest::Method,
        repo: &RepoName,
        path: &str,
        small: bool,
    ) -> Result<reqwest::Response> {
        let scope = format!("repository:{repo}:pull");
        let url = self
            .origin
            .join(path)
            .map_err(|e| UpstreamError::Invalid(e.to_string()))?;
        let slot = self.slot(&scope);
        let held = slot
            .lock()
            .await
            .as_ref()
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(t, _)| t.clone());
        let sent = held.as_ref().map(|t| format!("Bearer {t}"));
        let resp = self
            .request(method.clone(), url.clone(), sent.as_deref(), small)
            .await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return self.checked(resp);
        }
        if !self.same_origin(resp.url()) {
            return Err(UpstreamError::Denied(
                "a 401 from a host the upstream redirected to".into(),
            ));
        }
        let challenge = header(&resp, WWW_AUTHENTICATE.as_str())
            .and_then(|v| parse_challenge(&v))
            .ok_or_else(|| UpstreamError::Denied("a 401 without a usable challenge".into()))?;
        let auth = match challenge {
            Challenge::Basic => match &self.upstream.credentials {
                Some((u, p)) => basic(u, p),
                None => return Err(UpstreamError::Denied("credentials are needed".into())),
            },
            Challenge::Bearer { realm, service, .. } => {
                // Our own scope, whatever the challenge names: the token is for this read.
                let mut token = slot.lock().await;
                let fresh = token
                    .as_ref()
                    .filter(|(t, until)| Instant::now() < *until && Some(t) != held.as_ref())
                    .map(|(t, _)| t.clone());
                let t = match fresh {
                    // Another request fetched one while this one waited.
                    Some(t) => t,
                    None => {
                        let (t, until) =
                            self.fetch_token(&realm, service.as_deref(), &scope).await?;
                        *token = Some((t.clone(), until));
                        t
                    }
                };
                format!("Bearer {t}")
            }
        };
        let resp = self.request(method, url, Some(&auth), small).await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            // A token refused at once is no use to the next request either.
            *slot.lock().await = None;
            return Err(UpstreamError::Denied(
                "the upstream refused the credentials".into(),
            ));
        }
        self.checked(resp)
    }

    fn same_origin(&self, url: &Url) -> bool {
        url.origin() == self.origin.origin()
    }

    /// One request, following up to `MAX_REDIRECTS` redirects. `auth` goes only to the
    /// upstream's origin: once a redirect leaves it, no later hop gets it back.
    async fn request(
        &self,
        method: reqwest::Method,
        mut url: Url,
        auth: Option<&str>,
        small: bool,
    ) -> Result<reqwest::Response> {
        let mut auth = auth;
        for _ in 0..=MAX_REDIRECTS {
            if !self.same_origin(&url) {
                auth = None;
            }
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .header(ACCEPT, MANIFEST_ACCEPT);
            if small {
                req = req.timeout(SMALL_REQUEST);
            }
            if let Some(a) = auth {
                let mut v = HeaderValue::from_str(a)
                    .map_err(|_| UpstreamError::Invalid("unusable credentials".into()))?;
                v.set_sensitive(true);
                req = req.header(AUTHORIZATION, v);
            }
            let resp = req.send().await.map_err(unavailable)?;
            self.keep_rate_limit(&resp);
            if !resp.status().is_redirection() {
                return Ok(resp);
            }
            let next = header(&resp, LOCATION.as_str())
                .and_then(|l| url.join(&l).ok())
                .filter(|u| matches!(u.scheme(), "https" | "http"))
                .ok_or_else(|| {
                    UpstreamError::Invalid("a redirect without a usable Location".into())
                })?;
            url = next;
        }
        Err(UpstreamError::Unavailable(format!(
            "more than {MAX_REDIRECTS} redirects"
        )))
    }

    /// A success, or the error its status stands for.
    fn checked(&self, resp: reqwest::Response) -> Result<reqwest::Response> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        Err(match status {
            StatusCode::NOT_FOUND => UpstreamError::NotFound("manifest or blob"),
            StatusCode::FORBIDDEN => UpstreamError::Denied("HTTP 403".into()),
            StatusCode::TOO_MANY_REQUESTS => UpstreamError::RateLimited {
                retry_after: header(&resp, "retry-after").and_then(|s| s.parse().ok()),
            },
            s if s.is_server_error() => UpstreamError::Unavailable(format!("HTTP {}", s.as_u16())),
            s => UpstreamError::Invalid(format!("HTTP {}", s.as_u16())),
        })
    }

    /// Whether berth asks `realm` for tokens: `https` (Docker Hub's is on another host), or
    /// for a plain-HTTP upstream its own origin; never with credentials in the URL.
    fn usable_realm(&self, realm: &str) -> Option<Url> {
        let u = Url::parse(realm).ok()?;
        if !u.username().is_empty() || u.password().is_some() {
            return None;
        }
        (u.scheme() == "https" || self.same_origin(&u)).then_some(u)
    }

    /// `GET realm?service=…&scope=…`, with Basic credentials when the upstream has them, not
    /// following redirects. Returns the token and when to stop using it.
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<(String, Instant)> {
        let realm = self.usable_realm(realm).ok_or_else(|| {
            UpstreamError::Denied(format!(
                "the upstream's token service {realm:?} is not https (nor the upstream's own address)"
            ))
        })?;
        let mut query: Vec<(&str, &str)> = vec![("scope", scope)];
        if let Some(s) = service {
            query.push(("service", s));
        }
        let mut req = self.http.get(realm).query(&query).timeout(SMALL_REQUEST);
        if let Some((u, p)) = &self.upstream.credentials {
            let mut v = HeaderValue::from_str(&basic(u, p))
                .map_err(|_| UpstreamError::Invalid("unusable credentials".into()))?;
            v.set_sensitive(true);
            req = req.header(AUTHORIZATION, v);
        }
        let resp = req.send().await.map_err(unavailable)?;
        self.token_fetches.fetch_add(1, Ordering::Relaxed);
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(UpstreamError::Denied(
                "the upstream's token service refused the credentials".into(),
            ));
        }
        if !status.is_success() {
            return Err(match self.checked(resp) {
                Err(UpstreamError::NotFound(_)) | Ok(_) => UpstreamError::Unavailable(format!(
                    "the token service answered HTTP {}",
                    status.as_u16()
                )),
                Err(e) => e,
            });
        }
        let body = read_limited(resp, MAX_TOKEN_ANSWER).await?;
        #[derive(serde::Deserialize)]
        struct Answer {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let a: Answer = serde_json::from_slice(&body)
            .map_err(|e| UpstreamError::Invalid(format!("a token answer that is not JSON: {e}")))?;
        let token = a
            .token
            .or(a.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| UpstreamError::Invalid("a token answer without a token".into()))?;
        // Stop using it a tenth of its life early (clocks differ, requests take time).
        let life = a
            .expires_in
            .unwrap_or(DEFAULT_TOKEN_SECS)
            .clamp(1, MAX_TOKEN_SECS);
        Ok((token, Instant::now() + Duration::from_millis(life * 900)))
    }

    fn keep_rate_limit(&self, resp: &reqwest::Response) {
        if let (Some(limit), Some(remaining)) = (
            header(resp, "ratelimit-limit"),
            header(resp, "ratelimit-remaining"),
        ) {
            *self.rate_limit.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(RateLimit { limit, remaining });
        }
    }
}

fn manifest_path(repo: &RepoName, reference: &Reference) -> String {
    format!("/v2/{repo}/manifests/{reference}")
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn unavailable(e: reqwest::Error) -> UpstreamError {
    // Without the URL: it may carry a token service's query.
    UpstreamError::Unavailable(e.without_url().to_string())
}

/// A body of at most `max` bytes.
async fn read_limited(resp: reqwest::Response, max: usize) -> Result<Bytes> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(UpstreamError::Invalid(format!("more than {max} bytes")));
    }
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(unavailable)?;
        if out.len() + chunk.len() > max {
            return Err(UpstreamError::Invalid(format!("more than {max} bytes")));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}
