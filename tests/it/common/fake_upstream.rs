//! A small registry that misbehaves on purpose, as the pull-through cache's upstream: it
//! speaks the Docker token flow, sends blobs through a redirect to another host (a CDN, which
//! records any `Authorization` it is sent), counts every request, and on demand answers 429
//! or 503, throttles blob bodies, or flips a byte. Images are put in by the test.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use berth::oci::Digest;
use bytes::Bytes;
use serde_json::json;

/// How the fake answers now.
#[derive(Clone, Debug, Default)]
pub struct Mode {
    /// Answer every `/v2` request with this status (429, 503).
    pub status: Option<u16>,
    /// Answer every `/v2` GET (not HEAD) with this status: Docker Hub limits GETs only.
    pub get_status: Option<u16>,
    /// Blob bodies at this many bytes per second.
    pub rate: Option<u64>,
    /// Flip one byte in the middle of every blob body.
    pub flip: bool,
}

/// A blob: its bytes, or a pattern of `block` repeated to `size` bytes (big blobs without
/// holding them).
#[derive(Clone)]
pub enum Blob {
    Bytes(Bytes),
    Repeat { block: Bytes, size: u64 },
}

impl Blob {
    fn size(&self) -> u64 {
        match self {
            Blob::Bytes(b) => b.len() as u64,
            Blob::Repeat { size, .. } => *size,
        }
    }
}

#[derive(Default)]
pub struct Content {
    /// `repo:tag` → manifest digest.
    pub tags: HashMap<String, String>,
    /// digest → (media type, bytes).
    pub manifests: HashMap<String, (String, Bytes)>,
    pub blobs: HashMap<String, Blob>,
}

pub struct FakeUpstream {
    pub port: u16,
    pub cdn_port: u16,
    pub content: Mutex<Content>,
    pub mode: Mutex<Mode>,
    /// `"HEAD manifest <repo>:<ref>"`, `"GET manifest <repo>:<ref>"`, `"GET blob <digest>"`.
    counts: Mutex<HashMap<String, u64>>,
    pub tokens: AtomicU64,
    /// Requests on the CDN host that carried `Authorization`.
    pub cdn_with_auth: AtomicU64,
    /// Blob bodies being sent now, and the most at once.
    sending: AtomicU64,
    pub most_sending: AtomicU64,
}

impl FakeUpstream {
    pub async fn start() -> Arc<FakeUpstream> {
        let main = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = Arc::new(FakeUpstream {
            port: main.local_addr().unwrap().port(),
            cdn_port: other.local_addr().unwrap().port(),
            content: Mutex::default(),
            mode: Mutex::default(),
            counts: Mutex::default(),
            tokens: AtomicU64::new(0),
            cdn_with_auth: AtomicU64::new(0),
            sending: AtomicU64::new(0),
            most_sending: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/token", get(token))
            .route("/v2/{*rest}", get(v2).head(v2))
            .with_state(fake.clone());
        let cdn_app = Router::new()
            .route("/cdn/{digest}", get(cdn))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(main, app).await });
        tokio::spawn(async move { axum::serve(other, cdn_app).await });
        fake
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// How many requests of a kind (see `counts`) the fake saw.
    pub fn count(&self, key: &str) -> u64 {
        self.counts.lock().unwrap().get(key).copied().unwrap_or(0)
    }

    /// The sum of counts whose key starts with `prefix`.
    pub fn count_prefix(&self, prefix: &str) -> u64 {
        self.counts
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }

    fn bump(&self, key: String) {
        *self.counts.lock().unwrap().entry(key).or_default() += 1;
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn add_blob(&self, blob: Blob) -> Digest {
        let d = match &blob {
            Blob::Bytes(b) => Digest::sha256_of(b),
            Blob::Repeat { block, size } => {
                let mut h = berth::oci::Hasher::new(berth::oci::Algorithm::Sha256);
                let mut left = *size;
                while left > 0 {
                    let n = left.min(block.len() as u64) as usize;
                    h.update(&block[..n]);
                    left -= n as u64;
                }
                h.finish()
            }
        };
        self.content
            .lock()
            .unwrap()
            .blobs
            .insert(d.to_string(), blob);
        d
    }

    /// Store a manifest document and, with `tag`, tag it in `repo`. Returns its digest.
    pub fn add_manifest(
        &self,
        repo: &str,
        tag: Option<&str>,
        media_type: &str,
        body: &[u8],
    ) -> Digest {
        let d = Digest::sha256_of(body);
        let mut c = self.content.lock().unwrap();
        c.manifests.insert(
            d.to_string(),
            (media_type.to_string(), Bytes::copy_from_slice(body)),
        );
        if let Some(t) = tag {
            c.tags.insert(format!("{repo}:{t}"), d.to_string());
        }
        d
    }

    /// An image of a config and the given layers (bytes), tagged `tag` in `repo`, with
    /// `media_type` an OCI or Docker schema2 manifest. Returns (manifest, config, layers).
    pub fn add_image(
        &self,
        repo: &str,
        tag: &str,
        media_type: &str,
        layers: &[Blob],
    ) -> (Digest, Digest, Vec<Digest>) {
        let docker = media_type.contains("docker");
        let config = Bytes::from(format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"config":{{"Labels":{{"tag":"{tag}"}}}}}}"#
        ));
        let config_size = config.len();
        let config_d = self.add_blob(Blob::Bytes(config));
        let mut layer_ds = Vec::new();
        let mut layer_json = Vec::new();
        for l in layers {
            let d = self.add_blob(l.clone());
            layer_json.push(json!({
                "mediaType": if docker { "application/vnd.docker.image.rootfs.diff.tar.gzip" } else { "application/vnd.oci.image.layer.v1.tar+gzip" },
                "digest": d.to_string(),
                "size": l.size(),
            }));
            layer_ds.push(d);
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {
                "mediaType": if docker { "application/vnd.docker.container.image.v1+json" } else { "application/vnd.oci.image.config.v1+json" },
                "digest": config_d.to_string(),
                "size": config_size,
            },
            "layers": layer_json,
        });
        let body = serde_json::to_vec_pretty(&manifest).unwrap();
        let m = self.add_manifest(repo, Some(tag), media_type, &body);
        (m, config_d, layer_ds)
    }
}

async fn token(State(f): State<Arc<FakeUpstream>>) -> Response {
    let n = f.tokens.fetch_add(1, Ordering::Relaxed) + 1;
    let body = json!({"token": format!("t{n}"), "expires_in": 300}).to_string();
    ([("content-type", "application/json")], body).into_response()
}

async fn v2(
    State(f): State<Arc<FakeUpstream>>,
    method: Method,
    Path(rest): Path<String>,
    h: HeaderMap,
) -> Response {
    let authorized = h
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer t"));
    if !authorized {
        let challenge = format!(
            "Bearer realm=\"http://127.0.0.1:{}/token\",service=\"fake\"",
            f.port
        );
        return (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", challenge)],
            "",
        )
            .into_response();
    }
    let mode = f.mode.lock().unwrap().clone();
    let status = mode
        .status
        .or(mode.get_status.filter(|_| method == Method::GET));
    if let Some(s) = status {
        return (
            StatusCode::from_u16(s).unwrap(),
            [
                ("retry-after", "30"),
                ("ratelimit-remaining", "0;w=21600"),
                ("ratelimit-limit", "100;w=21600"),
            ],
            "",
        )
            .into_response();
    }
    let Some((repo, kind, reference)) = split(&rest) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    f.bump(format!(
        "{method} {kind} {}",
        if kind == "blob" {
            reference.to_string()
        } else {
            format!("{repo}:{reference}")
        }
    ));
    let c = f.content.lock().unwrap();
    match kind {
        "manifest" => {
            let digest = if reference.contains(':') {
                reference.to_string()
            } else {
                match c.tags.get(&format!("{repo}:{reference}")) {
                    Some(d) => d.clone(),
                    None => return StatusCode::NOT_FOUND.into_response(),
                }
            };
            let Some((mt, body)) = c.manifests.get(&digest) else {
                return StatusCode::NOT_FOUND.into_response();
            };
            let body = if method == Method::HEAD {
                Body::empty()
            } else {
                Body::from(body.clone())
            };
            Response::builder()
                .header("content-type", mt)
                .header("docker-content-digest", &digest)
                .header("content-length", c.manifests[&digest].1.len())
                .header("ratelimit-limit", "100;w=21600")
                .header("ratelimit-remaining", "42;w=21600")
                .body(body)
                .unwrap()
        }
        _ => {
            if !c.blobs.contains_key(reference) {
                return StatusCode::NOT_FOUND.into_response();
            }
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(
                    "location",
                    format!("http://localhost:{}/cdn/{reference}", f.cdn_port),
                )],
            )
                .into_response()
        }
    }
}

/// `<repo>/manifests/<ref>` or `<repo>/blobs/<digest>`.
fn split(rest: &str) -> Option<(&str, &'static str, &str)> {
    if let Some((repo, r)) = rest.rsplit_once("/manifests/") {
        return Some((repo, "manifest", r));
    }
    rest.rsplit_once("/blobs/")
        .map(|(repo, d)| (repo, "blob", d))
}

async fn cdn(
    State(f): State<Arc<FakeUpstream>>,
    Path(digest): Path<String>,
    h: HeaderMap,
) -> Response {
    if h.contains_key("authorization") {
        f.cdn_with_auth.fetch_add(1, Ordering::Relaxed);
    }
    f.bump(format!("CDN blob {digest}"));
    let Some(blob) = f.content.lock().unwrap().blobs.get(&digest).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mode = f.mode.lock().unwrap().clone();
    let size = blob.size();
    const PIECE: u64 = 64 * 1024;
    let now = f.sending.fetch_add(1, Ordering::SeqCst) + 1;
    f.most_sending.fetch_max(now, Ordering::SeqCst);
    let sending = Sending(f.clone());
    let stream = futures_util::stream::unfold(0u64, move |at| {
        let blob = blob.clone();
        let mode = mode.clone();
        let _sending = &sending;
        async move {
            if at >= size {
                return None;
            }
            let n = (size - at).min(PIECE);
            let mut piece = match &blob {
                Blob::Bytes(b) => b.slice(at as usize..(at + n) as usize).to_vec(),
                Blob::Repeat { block, .. } => {
                    let bl = block.len() as u64;
                    let start = (at % bl) as usize;
                    if start as u64 + n <= bl {
                        block[start..start + n as usize].to_vec()
                    } else {
                        (at..at + n).map(|i| block[(i % bl) as usize]).collect()
                    }
                }
            };
            let middle = size / 2;
            if mode.flip && (at..at + n).contains(&middle) {
                piece[(middle - at) as usize] ^= 0xff;
            }
            if let Some(rate) = mode.rate {
                tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
            }
            Some((Ok::<_, std::io::Error>(Bytes::from(piece)), at + n))
        }
    });
    Response::builder()
        .header("content-length", size)
        .body(Body::from_stream(stream))
        .unwrap()
}

/// Counts a blob body as being sent until the stream is dropped.
struct Sending(Arc<FakeUpstream>);

impl Drop for Sending {
    fn drop(&mut self) {
        self.0.sending.fetch_sub(1, Ordering::SeqCst);
    }
}
