//! Shared test harness: `TestApp` drives the real router over a real data directory and
//! SQLite file; `Server` runs the real `berth` binary on a loopback port.

#![allow(dead_code)]

pub mod browser;
pub mod cmd;
pub mod containers;
pub mod curl;
pub mod docker;
pub mod fake_upstream;
pub mod images;
pub mod net;
pub mod pebble;
pub mod prng;
pub mod registry2;
pub mod server;
pub mod tmpfs;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use berth::auth::accounts;
use berth::clock::{Clock, ManualClock};
use berth::config::Config;
use berth::oci::Digest;
use bytes::Bytes;
use http_body_util::BodyExt;
use tower::ServiceExt;

#[allow(unused_imports)]
pub use server::Server;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

pub struct TestApp {
    pub dir: tempfile::TempDir,
    pub router: Router,
    pub clock: ManualClock,
    pub state: berth::AppState,
    /// Sent with every request that names no `authorization` of its own (`None`: anonymous).
    pub auth_header: Option<String>,
}

/// `Basic base64(user:password)`.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// The administrator every `TestApp` and `Server` starts with.
pub const ADMIN_PASSWORD: &str = "test-admin-password";

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The spec error code of an error response.
    pub fn error_code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    #[track_caller]
    pub fn assert(&self, status: u16) -> &Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            String::from_utf8_lossy(&self.body)
        );
        self
    }

    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) -> &Self {
        self.assert(status);
        assert_eq!(
            self.error_code(),
            code,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.header("content-type"), Some("application/json"));
        self
    }
}

/// The names (hex digests) of the blob files under a data directory, sorted.
pub fn blob_files(data: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![data.join("blobs")];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            out.push(p.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

pub fn digest_of(bytes: &[u8]) -> Digest {
    Digest::sha256_of(bytes)
}

impl TestApp {
    pub fn new() -> TestApp {
        Self::with_config(|_| {})
    }

    pub fn with_config(f: impl FnOnce(&mut Config)) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        f(&mut config);
        let clock = ManualClock::at(1_700_000_000);
        let state = berth::AppState::open(config, Arc::new(clock.clone())).unwrap();
        // An admin, and a robot token with every scope: requests carry it by default, so
        // argon2 does not run per request in tests either.
        let db = state.auth.db();
        let now = clock.now();
        accounts::add_user(db, now, &accounts::CLI, "admin", ADMIN_PASSWORD, true).unwrap();
        let all = [accounts::parse_scope("**:*").unwrap()];
        let secret =
            accounts::create_token(db, now, &accounts::CLI, "admin", "test-robot", &all, None)
                .unwrap();
        let auth_header = Some(basic("test-robot", secret.expose()));
        TestApp {
            router: berth::router(state.clone()),
            dir,
            clock,
            state,
            auth_header,
        }
    }

    /// Add a user with grants (`("team-a/*", "pull,push")`) and return their Basic header.
    pub fn user(&self, name: &str, grants: &[(&str, &str)]) -> String {
        let db = self.state.auth.db();
        let now = self.clock.now();
        let password = format!("{name}-password");
        accounts::add_user(db, now, &accounts::CLI, name, &password, false).unwrap();
        for (pattern, actions) in grants {
            accounts::grant(db, now, &accounts::CLI, name, pattern, actions).unwrap();
        }
        basic(name, &password)
    }

    /// Create a robot token of `owner` with scopes (`"team-a/*:pull"`); returns its secret.
    pub fn token(
        &self,
        owner: &str,
        name: &str,
        scopes: &[&str],
        expires_at: Option<i64>,
    ) -> String {
        let scopes: Vec<_> = scopes
            .iter()
            .map(|s| accounts::parse_scope(s).unwrap())
            .collect();
        let db = self.state.auth.db();
        let now = self.clock.now();
        let secret =
            accounts::create_token(db, now, &accounts::CLI, owner, name, &scopes, expires_at)
                .unwrap();
        secret.expose().to_string()
    }

    pub async fn send(&self, req: Request<Body>) -> Resp {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Resp {
        let mut b = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let named = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"));
        if let (false, Some(auth)) = (named, &self.auth_header) {
            b = b.header("authorization", auth.as_str());
        }
        self.send(b.body(body.into()).unwrap()).await
    }

    /// `call` as if from client address `ip` (for throttling and audit).
    pub async fn call_from(
        &self,
        ip: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut b = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let mut req = b.body(Body::empty()).unwrap();
        let addr: std::net::SocketAddr = format!("{ip}:40000").parse().unwrap();
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(addr));
        self.send(req).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.call("GET", path, &[], Body::empty()).await
    }

    pub async fn head(&self, path: &str) -> Resp {
        self.call("HEAD", path, &[], Body::empty()).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.call("DELETE", path, &[], Body::empty()).await
    }

    /// Push a blob in one request and return its digest.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> Digest {
        let d = digest_of(bytes);
        self.call(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
            &[],
            bytes.to_vec(),
        )
        .await
        .assert(201);
        d
    }

    /// Start an upload session; returns its Location path.
    pub async fn start_upload(&self, repo: &str) -> String {
        let r = self
            .call(
                "POST",
                &format!("/v2/{repo}/blobs/uploads/"),
                &[],
                Body::empty(),
            )
            .await;
        r.assert(202);
        r.header("location").unwrap().to_string()
    }

    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Resp {
        self.call(
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("content-type", media_type)],
            body.to_vec(),
        )
        .await
    }

    /// Push a config and `layers` random-ish layers, then an image manifest of `media_type`
    /// tagged `reference`. Returns the manifest bytes and digest.
    pub async fn push_image(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        seed: u8,
    ) -> (Vec<u8>, Digest) {
        let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":{seed}}}");
        let layer: Vec<u8> = (0..1000u32)
            .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed))
            .collect();
        let cd = self.push_blob(repo, config.as_bytes()).await;
        let ld = self.push_blob(repo, &layer).await;
        let (config_type, layer_type) = if media_type == DOCKER_MANIFEST {
            (
                "application/vnd.docker.container.image.v1+json",
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
            )
        } else {
            (
                "application/vnd.oci.image.config.v1+json",
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        };
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": config_type, "digest": cd.to_string(), "size": config.len()},
            "layers": [{"mediaType": layer_type, "digest": ld.to_string(), "size": layer.len()}],
        });
        let bytes = serde_json::to_vec_pretty(&manifest).unwrap();
        self.put_manifest(repo, reference, media_type, &bytes)
            .await
            .assert(201);
        let d = digest_of(&bytes);
        (bytes, d)
    }
}

/// Fail with a clear message when a tool the suite needs is missing (never skip).
#[track_caller]
pub fn require_tool(name: &str) -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "`{name}` is required by this test but is not installed; run the README's test command, which installs it"
    );
}
