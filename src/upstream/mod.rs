//! Outbound: the registries a pull-through cache fills from (Docker Hub, another registry).
//! It speaks the Distribution API's reads and the Docker token flow, and knows nothing of
//! berth's database: `core` decides what to fetch and stores it through the same paths as a
//! push.
//!
//! - A token is fetched once per scope and reused until shortly before it expires.
//! - `Authorization` never follows a redirect to another host (a CDN serving blobs): the
//!   HTTP client drops it there.
//! - Every read is bounded: manifests at 4 MiB, token answers at 64 KiB, error bodies are not
//!   read; connections time out.
//! - Docker Hub's rate-limit headers are kept from the last answer that had them.
//!
//! Layering: a floor room beside `storage/`; uses `oci` types and `tls`' crypto provider.

mod challenge;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE};

pub use challenge::{Challenge, parse as parse_challenge};

use crate::oci::Digest;

/// What manifest reads accept: every kind berth stores, so upstream bytes are kept exactly.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";
const MAX_MANIFEST: usize = crate::oci::manifest::MAX_MANIFEST_BYTES;
const MAX_TOKEN_ANSWER: usize = 64 * 1024;
/// A token without `expires_in` lives this long (the token spec's default), seconds.
const DEFAULT_TOKEN_SECS: u64 = 60;

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
    pub size: u64,
}

/// The upstream's rate-limit headers (`ratelimit-limit`, `ratelimit-remaining`), as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: String,
    pub remaining: String,
}

/// A client of one upstream.
pub struct Client {
    http: reqwest::Client,
    upstream: Upstream,
    /// Bearer tokens by scope, with when to stop using them.
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    token_fetches: AtomicU64,
    rate_limit: Mutex<Option<RateLimit>>,
}

impl Client {
    pub fn new(upstream: Upstream) -> Result<Client> {
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
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| UpstreamError::Unavailable(e.to_string()))?;
        Ok(Client {
            http,
            upstream: Upstream {
                url: upstream.url.trim_end_matches('/').to_string(),
                ..upstream
            },
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
    /// not count a `HEAD` as a pull).
    pub async fn head_manifest(&self, repo: &str, reference: &str) -> Result<Described> {
        let resp = self
            .send(reqwest::Method::HEAD, repo, &manifest_path(repo, reference))
            .await?;
        let digest = header(&resp, "docker-content-digest")
            .ok_or_else(|| UpstreamError::Invalid("a manifest HEAD without a digest".into()))
            .and_then(|d| {
                Digest::parse(&d)
                    .map_err(|e| UpstreamError::Invalid(format!("a bad digest {d:?}: {e}")))
            })?;
        Ok(Described {
            digest,
            media_type: header(&resp, CONTENT_TYPE.as_str()).unwrap_or_default(),
            size: header(&resp, CONTENT_LENGTH.as_str())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
        })
    }

    /// `GET` a manifest: its bytes exactly as sent, checked against the digest asked for (by
    /// digest) or announced (by tag).
    pub async fn manifest(&self, repo: &str, reference: &str) -> Result<(Described, Bytes)> {
        let resp = self
            .send(reqwest::Method::GET, repo, &manifest_path(repo, reference))
            .await?;
        let media_type = header(&resp, CONTENT_TYPE.as_str()).unwrap_or_default();
        let announced = header(&resp, "docker-content-digest");
        let body = read_limited(resp, MAX_MANIFEST).await?;
        let digest = Digest::sha256_of(&body);
        let expected = match Digest::parse(reference) {
            Ok(d) => Some(d.to_string()),
            Err(_) => announced,
        };
        if let Some(e) = expected
            && e != digest.to_string()
        {
            return Err(UpstreamError::Invalid(format!(
                "a manifest whose bytes hash to {digest}, not {e}"
            )));
        }
        let size = body.len() as u64;
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
    /// and checks them). Redirects (to a CDN) are followed without `Authorization`.
    pub async fn blob(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<(
        Option<u64>,
        impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    )> {
        let resp = self
            .send(
                reqwest::Method::GET,
                repo,
                &format!("/v2/{repo}/blobs/{digest}"),
            )
            .await?;
        let size = resp.content_length();
        let stream = resp.bytes_stream().map_err(std::io::Error::other).boxed();
        Ok((size, stream))
    }

    /// Send a read, with a cached token for the repository's pull scope; on a challenge,
    /// fetch a token (or use Basic credentials) and send it once more.
    async fn send(
        &self,
        method: reqwest::Method,
        repo: &str,
        path: &str,
    ) -> Result<reqwest::Response> {
        let scope = format!("repository:{repo}:pull");
        let url = format!("{}{path}", self.upstream.url);
        let cached = self.cached_token(&scope);
        let resp = self
            .request(method.clone(), &url, cached.as_deref())
            .await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return self.checked(resp);
        }
        let challenge = header(&resp, WWW_AUTHENTICATE.as_str())
            .and_then(|v| parse_challenge(&v))
            .ok_or_else(|| UpstreamError::Denied("a 401 without a usable challenge".into()))?;
        let auth = match challenge {
            Challenge::Basic => match &self.upstream.credentials {
                Some((u, p)) => basic(u, p),
                None => return Err(UpstreamError::Denied("credentials are needed".into())),
            },
            Challenge::Bearer {
                realm,
                service,
                scope: asked,
            } => {
                let scope = asked.unwrap_or(scope);
                format!(
                    "Bearer {}",
                    self.fetch_token(&realm, service.as_deref(), &scope).await?
                )
            }
        };
        let resp = self.request(method, &url, Some(&auth)).await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            return Err(UpstreamError::Denied(
                "the upstream refused the credentials".into(),
            ));
        }
        self.checked(resp)
    }

    async fn request(
        &self,
        method: reqwest::Method,
        url: &str,
        auth: Option<&str>,
    ) -> Result<reqwest::Response> {
        let mut req = self
            .http
            .request(method, url)
            .header(ACCEPT, MANIFEST_ACCEPT);
        if let Some(a) = auth {
            req = req.header(AUTHORIZATION, a);
        }
        let resp = req.send().await.map_err(unavailable)?;
        self.keep_rate_limit(&resp);
        Ok(resp)
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

    fn cached_token(&self, scope: &str) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens
            .get(scope)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(t, _)| format!("Bearer {t}"))
    }

    /// `GET realm?service=…&scope=…`, with Basic credentials when the upstream has them.
    async fn fetch_token(&self, realm: &str, service: Option<&str>, scope: &str) -> Result<String> {
        let mut query: Vec<(&str, &str)> = vec![("scope", scope)];
        if let Some(s) = service {
            query.push(("service", s));
        }
        let mut req = self.http.get(realm).query(&query);
        if let Some((u, p)) = &self.upstream.credentials {
            req = req.header(AUTHORIZATION, basic(u, p));
        }
        let resp = req.send().await.map_err(unavailable)?;
        self.token_fetches.fetch_add(1, Ordering::Relaxed);
        if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN {
            return Err(UpstreamError::Denied(
                "the upstream's token service refused the credentials".into(),
            ));
        }
        let resp = self.checked(resp)?;
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
        let life = a.expires_in.unwrap_or(DEFAULT_TOKEN_SECS).max(1);
        let until = Instant::now() + Duration::from_millis(life * 900);
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(scope.to_string(), (token.clone(), until));
        Ok(token)
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

fn manifest_path(repo: &str, reference: &str) -> String {
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
