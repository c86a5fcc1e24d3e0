//! The pull-through cache's upstream client (`berth::upstream`) against a real registry (a
//! second berth, which speaks the Docker token flow as Docker Hub does) and against a small
//! fake upstream that misbehaves on purpose: a blob redirect to another host, rate limits,
//! server errors, a manifest whose bytes do not match its digest, short-lived tokens.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use berth::oci::{Digest, Reference, RepoName};
use berth::upstream::{Client, Upstream, UpstreamError};
use futures_util::StreamExt;

use crate::common::cmd::run;
use crate::common::images::write_oci_layout;
use crate::common::{ADMIN_PASSWORD, Server, require_tool};

fn client(url: &str, credentials: Option<(&str, &str)>) -> Client {
    Client::new(Upstream {
        url: url.to_string(),
        credentials: credentials.map(|(u, p)| (u.to_string(), p.to_string())),
    })
    .unwrap()
}

fn name(s: &str) -> RepoName {
    RepoName::parse(s).unwrap()
}

fn r(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

async fn hash_blob(c: &Client, repo: &str, d: &Digest) -> Digest {
    let (_, mut stream) = c.blob(&name(repo), d).await.unwrap();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    Digest::sha256_of(&bytes)
}

#[tokio::test]
async fn reads_a_real_registry_through_the_token_flow() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let layout = tmp.path().join("img");
    let image = write_oci_layout(&layout, "1", 41);
    run(Command::new(require_tool("skopeo")).args([
        "--insecure-policy",
        "copy",
        "--dest-tls-verify=false",
        &format!("--dest-creds=admin:{ADMIN_PASSWORD}"),
        &format!("oci:{}:1", layout.display()),
        &format!("docker://{}/team/app:1", server.host()),
    ]));

    let c = client(&server.url(""), Some(("admin", ADMIN_PASSWORD)));
    let head = c.head_manifest(&name("team/app"), &r("1")).await.unwrap();
    assert_eq!(head.digest, image.manifest);
    assert_eq!(
        head.media_type,
        "application/vnd.oci.image.manifest.v1+json"
    );
    let (got, body) = c.manifest(&name("team/app"), &r("1")).await.unwrap();
    assert_eq!(got, head);
    assert_eq!(
        Digest::sha256_of(&body),
        image.manifest,
        "bytes kept exactly"
    );
    let (by_digest, _) = c
        .manifest(
            &name("team/app"),
            &Reference::Digest(image.manifest.clone()),
        )
        .await
        .unwrap();
    assert_eq!(by_digest.digest, image.manifest);
    for d in std::iter::once(&image.config).chain(&image.layers) {
        assert_eq!(&hash_blob(&c, "team/app", d).await, d);
    }
    assert_eq!(c.token_fetches(), 1, "one token for the scope, reused");

    // Errors say what went wrong.
    assert!(matches!(
        c.manifest(&name("team/app"), &r("nope")).await,
        Err(UpstreamError::NotFound(_))
    ));
    let wrong = client(&server.url(""), Some(("admin", "wrong")));
    let e = wrong
        .head_manifest(&name("team/app"), &r("1"))
        .await
        .unwrap_err();
    assert!(matches!(e, UpstreamError::Denied(_)), "{e}");
    let anonymous = client(&server.url(""), None);
    let e = anonymous
        .head_manifest(&name("team/app"), &r("1"))
        .await
        .unwrap_err();
    assert!(matches!(e, UpstreamError::Denied(_)), "{e}");
    let down = client("http://127.0.0.1:9", None);
    let e = down
        .head_manifest(&name("team/app"), &r("1"))
        .await
        .unwrap_err();
    assert!(matches!(e, UpstreamError::Unavailable(_)), "{e}");
}

/// What the fake saw.
#[derive(Default)]
struct Seen {
    tokens: AtomicU64,
    cdn_with_auth: AtomicU64,
    cdn_gets: AtomicU64,
    /// Requests the other host's token service got (a realm berth must not ask).
    foreign_tokens: AtomicU64,
}

struct Fake {
    seen: Seen,
    port: u16,
    cdn_port: u16,
}

const MANIFEST: &[u8] = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;
const BLOB: &[u8] = b"the blob's bytes";

async fn token(State(f): State<Arc<Fake>>) -> Response {
    let n = f.seen.tokens.fetch_add(1, Ordering::Relaxed) + 1;
    // Short-lived: a second token is needed after three seconds.
    let body = serde_json::json!({"token": format!("t{n}"), "expires_in": 3}).to_string();
    ([("content-type", "application/json")], body).into_response()
}

async fn v2(State(f): State<Arc<Fake>>, Path(rest): Path<String>, h: HeaderMap) -> Response {
    if rest == "lib/evil/manifests/x" {
        // A challenge naming a plain-HTTP realm on another host (a neighbour of berth's).
        let challenge = format!(
            "Bearer realm=\"http://localhost:{}/token\",service=\"x\"",
            f.cdn_port
        );
        return (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", challenge)],
            "",
        )
            .into_response();
    }
    let authorized = h
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer t"));
    if !authorized {
        let challenge = format!(
            "Bearer realm=\"http://127.0.0.1:{}/token\",service=\"fake\",scope=\"repository:lib/app:pull\"",
            f.port
        );
        return (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", challenge)],
            "",
        )
            .into_response();
    }
    let good = Digest::sha256_of(MANIFEST).to_string();
    match rest.as_str() {
        "lib/app/manifests/good" => (
            [
                (
                    "content-type",
                    "application/vnd.oci.image.manifest.v1+json".to_string(),
                ),
                ("docker-content-digest", good),
                ("ratelimit-limit", "100;w=21600".to_string()),
                ("ratelimit-remaining", "97;w=21600".to_string()),
            ],
            MANIFEST,
        )
            .into_response(),
        "lib/app/manifests/flipped" => (
            [(
                "docker-content-digest",
                Digest::sha256_of(b"something else").to_string(),
            )],
            MANIFEST,
        )
            .into_response(),
        "lib/app/manifests/busy" => {
            (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "7")], "").into_response()
        }
        "lib/app/manifests/broken" => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        r if r.starts_with("lib/app/blobs/") => (
            StatusCode::TEMPORARY_REDIRECT,
            [(
                "location",
                format!("http://localhost:{}/cdn/hop", f.cdn_port),
            )],
        )
            .into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A first hop on the CDN that sends the client on to another path of the same CDN: a
/// client that re-adds credentials per hop would send them here.
async fn hop(State(f): State<Arc<Fake>>, h: HeaderMap) -> Response {
    if h.contains_key("authorization") {
        f.seen.cdn_with_auth.fetch_add(1, Ordering::Relaxed);
    }
    (StatusCode::FOUND, [("location", "/cdn/blob")]).into_response()
}

async fn foreign_token(State(f): State<Arc<Fake>>) -> Response {
    f.seen.foreign_tokens.fetch_add(1, Ordering::Relaxed);
    StatusCode::OK.into_response()
}

async fn cdn(State(f): State<Arc<Fake>>, h: HeaderMap) -> Response {
    f.seen.cdn_gets.fetch_add(1, Ordering::Relaxed);
    if h.contains_key("authorization") {
        f.seen.cdn_with_auth.fetch_add(1, Ordering::Relaxed);
    }
    BLOB.into_response()
}

async fn start_fake() -> Arc<Fake> {
    let main = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake = Arc::new(Fake {
        seen: Seen::default(),
        port: main.local_addr().unwrap().port(),
        cdn_port: other.local_addr().unwrap().port(),
    });
    let app = Router::new()
        .route("/token", get(token))
        .route("/v2/{*rest}", get(v2).head(v2))
        .with_state(fake.clone());
    let cdn_app = Router::new()
        .route("/cdn/hop", get(hop))
        .route("/cdn/blob", get(cdn))
        .route("/token", get(foreign_token))
        .with_state(fake.clone());
    tokio::spawn(async move { axum::serve(main, app).await });
    tokio::spawn(async move { axum::serve(other, cdn_app).await });
    fake
}

#[tokio::test]
async fn a_misbehaving_upstream_is_read_safely() {
    let fake = start_fake().await;
    let c = Arc::new(client(
        &format!("http://127.0.0.1:{}", fake.port),
        Some(("user", "secret")),
    ));
    // Twenty reads at once with no token yet: one token fetch between them.
    let reads: Vec<_> = (0..20)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.head_manifest(&name("lib/app"), &r("good")).await })
        })
        .collect();
    for read in reads {
        read.await.unwrap().unwrap();
    }
    assert_eq!(
        fake.seen.tokens.load(Ordering::Relaxed),
        1,
        "one fetch for all"
    );
    let (got, body) = c.manifest(&name("lib/app"), &r("good")).await.unwrap();
    assert_eq!(got.digest, Digest::sha256_of(MANIFEST));
    assert_eq!(&body[..], MANIFEST);
    let rl = c.rate_limit().expect("rate-limit headers kept");
    assert_eq!(rl.remaining, "97;w=21600");
    // A blob redirected to another host, and there once more: the bytes arrive, the
    // credentials reach neither hop.
    let d = Digest::sha256_of(BLOB);
    assert_eq!(hash_blob(&c, "lib/app", &d).await, d);
    assert_eq!(fake.seen.cdn_gets.load(Ordering::Relaxed), 1);
    assert_eq!(
        fake.seen.cdn_with_auth.load(Ordering::Relaxed),
        0,
        "Authorization followed a redirect to another host"
    );
    // A challenge naming a plain-HTTP token service elsewhere is refused, unasked.
    let e = c
        .head_manifest(&name("lib/evil"), &r("x"))
        .await
        .unwrap_err();
    assert!(matches!(e, UpstreamError::Denied(_)), "{e}");
    assert_eq!(fake.seen.foreign_tokens.load(Ordering::Relaxed), 0);
    // Bytes that do not hash to the announced digest are refused.
    let e = c
        .manifest(&name("lib/app"), &r("flipped"))
        .await
        .unwrap_err();
    assert!(matches!(e, UpstreamError::Invalid(_)), "{e}");
    // Rate limits and server errors are told apart.
    match c.manifest(&name("lib/app"), &r("busy")).await {
        Err(UpstreamError::RateLimited { retry_after }) => assert_eq!(retry_after, Some(7)),
        other => panic!("{other:?}"),
    }
    let e = c
        .head_manifest(&name("lib/app"), &r("broken"))
        .await
        .unwrap_err();
    assert!(matches!(e, UpstreamError::Unavailable(_)), "{e}");
    assert_eq!(
        fake.seen.tokens.load(Ordering::Relaxed),
        1,
        "one token while it lives"
    );
    // Once it has expired, a new one.
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    c.head_manifest(&name("lib/app"), &r("good")).await.unwrap();
    assert_eq!(fake.seen.tokens.load(Ordering::Relaxed), 2);
}
