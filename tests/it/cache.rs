//! The pull-through cache through the real router, data directory and database, in front of
//! a fake upstream that counts requests and misbehaves on demand (`common::fake_upstream`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use berth::config::Span;
use berth::config::upstreams::Upstream;
use bytes::Bytes;
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::common::browser::Browser;
use crate::common::fake_upstream::{Blob, FakeUpstream, Mode};
use berth::clock::Clock as _;
use berth::oci::Digest;

use crate::common::{DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, TestApp, blob_files, digest_of};

fn upstream(name: &str, url: &str) -> Upstream {
    Upstream::new(name, url)
}

fn app_with(upstreams: Vec<Upstream>) -> TestApp {
    TestApp::with_config(|c| c.upstreams = upstreams)
}

fn bytes(n: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<u8>>(),
    )
}

/// A GET whose body is left unread: (status, headers, body).
async fn open(app: &TestApp, path: &str) -> axum::response::Response {
    let req = Request::get(path)
        .header("authorization", app.auth_header.clone().unwrap())
        .body(Body::empty())
        .unwrap();
    app.router.clone().oneshot(req).await.unwrap()
}

#[tokio::test]
async fn pulls_fill_the_cache_and_keep_the_upstreams_bytes() {
    let fake = FakeUpstream::start().await;
    let (oci, oci_config, oci_layers) = fake.add_image(
        "lib/app",
        "1",
        OCI_MANIFEST,
        &[Blob::Bytes(bytes(100_000, 1))],
    );
    let (docker, _, docker_layers) = fake.add_image(
        "lib/app",
        "docker",
        DOCKER_MANIFEST,
        &[Blob::Bytes(bytes(5000, 2)), Blob::Bytes(bytes(7000, 3))],
    );
    let app = app_with(vec![upstream("up", &fake.url())]);

    // The path prefix.
    let r = app.get("/v2/up/lib/app/manifests/1").await;
    r.assert(200);
    assert_eq!(
        r.header("docker-content-digest"),
        Some(oci.to_string().as_str())
    );
    assert_eq!(r.header("content-type"), Some(OCI_MANIFEST));
    assert_eq!(digest_of(&r.body), oci, "the upstream's bytes, exactly");
    let r = app.get("/v2/up/lib/app/manifests/docker").await;
    r.assert(200);
    assert_eq!(digest_of(&r.body), docker);
    assert_eq!(
        r.header("content-type"),
        Some(DOCKER_MANIFEST),
        "no conversion"
    );
    // A HEAD of a blob not held asks the upstream and fetches nothing.
    let r = app
        .head(&format!("/v2/up/lib/app/blobs/{}", oci_layers[0]))
        .await;
    r.assert(200);
    assert_eq!(r.header("content-length"), Some("100000"));
    assert_eq!(
        fake.count(&format!("CDN blob {}", oci_layers[0])),
        1,
        "the HEAD, followed"
    );
    assert!(
        blob_files(app.dir.path()).is_empty(),
        "nothing stored for a HEAD"
    );
    for d in std::iter::once(&oci_config)
        .chain(&oci_layers)
        .chain(&docker_layers)
    {
        let r = app.get(&format!("/v2/up/lib/app/blobs/{d}")).await;
        r.assert(200);
        assert_eq!(&digest_of(&r.body), d);
        assert_eq!(fake.count(&format!("GET blob {d}")), 1);
        assert!(
            fake.count(&format!("CDN blob {d}")) <= 2,
            "one download (and the HEAD above)"
        );
    }
    // Everything again: no upstream blob or manifest GET, and by digest not even a HEAD.
    let (gets, heads) = (fake.count_prefix("GET "), fake.count_prefix("HEAD "));
    for d in std::iter::once(&oci_config).chain(&oci_layers) {
        app.get(&format!("/v2/up/lib/app/blobs/{d}"))
            .await
            .assert(200);
    }
    app.get("/v2/up/lib/app/manifests/1").await.assert(200);
    app.get(&format!("/v2/up/lib/app/manifests/{oci}"))
        .await
        .assert(200);
    assert_eq!(fake.count_prefix("GET "), gets);
    assert_eq!(fake.count_prefix("HEAD "), heads);
    // One token for the repository's scope; the CDN never saw credentials.
    assert_eq!(fake.tokens.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(
        fake.cdn_with_auth
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    // The stored blobs are the files of a normal repository.
    let files = blob_files(app.dir.path());
    for d in oci_layers.iter().chain(&docker_layers) {
        assert!(files.iter().any(|f| f.ends_with(d.hex())), "{d} stored");
    }
    // The repository is listed like any other.
    let cat = app.get("/v2/_catalog").await.json();
    assert_eq!(cat["repositories"], serde_json::json!(["up/lib/app"]));
    let tags = app.get("/v2/up/lib/app/tags/list").await.json();
    assert_eq!(tags["tags"], serde_json::json!(["1", "docker"]));
}

#[tokio::test]
async fn ns_and_mirror_hosts_name_the_upstreams_repositories() {
    let fake = FakeUpstream::start().await;
    let (m, _, layers) = fake.add_image(
        "library/nginx",
        "1",
        OCI_MANIFEST,
        &[Blob::Bytes(bytes(3000, 4))],
    );
    let mut hub = upstream("hub", &fake.url());
    hub.registries = vec!["docker.io".into()];
    hub.mirror_hosts = vec!["mirror.test".into()];
    let app = app_with(vec![hub]);

    // containerd: `?ns=docker.io`, Docker Hub's name for the image.
    let r = app.get("/v2/library/nginx/manifests/1?ns=docker.io").await;
    r.assert(200);
    assert_eq!(
        r.header("docker-content-digest"),
        Some(m.to_string().as_str())
    );
    app.get(&format!(
        "/v2/library/nginx/blobs/{}?ns=docker.io",
        layers[0]
    ))
    .await
    .assert(200);
    // Standing for docker.io, the upstream's one-part names are under library/, as
    // containerd and the Docker daemon name them.
    let r = app.get("/v2/nginx/manifests/1?ns=docker.io").await;
    r.assert(200);
    assert_eq!(digest_of(&r.body), m);
    let r = app.get("/v2/hub/nginx/manifests/1").await;
    r.assert(200);
    assert_eq!(digest_of(&r.body), m);
    // Stored under the cache's name.
    let tags = app.get("/v2/hub/library/nginx/tags/list").await.json();
    assert_eq!(tags["tags"], serde_json::json!(["1"]));
    // The Docker daemon's mirror: the host name says it.
    let r = app
        .call(
            "GET",
            "/v2/library/nginx/manifests/1",
            &[("host", "mirror.test:443")],
            Body::empty(),
        )
        .await;
    r.assert(200);
    assert_eq!(digest_of(&r.body), m);
    // A registry berth does not cache is refused, and nothing is dialled for it.
    let before = fake.count_prefix("");
    let r = app
        .get("/v2/library/nginx/manifests/1?ns=evil.example:1")
        .await;
    r.assert_error(404, "NAME_UNKNOWN");
    assert!(r.body_text().contains("docker.io"), "{}", r.body_text());
    assert_eq!(fake.count_prefix(""), before);
    // `ns` naming berth itself is an ordinary request.
    app.push_image("team/app", "1", OCI_MANIFEST, 1).await;
    app.call(
        "GET",
        "/v2/team/app/manifests/1?ns=registry.test",
        &[("host", "registry.test")],
        Body::empty(),
    )
    .await
    .assert(200);
}

#[tokio::test]
async fn a_cache_takes_no_pushes_while_other_repositories_do() {
    let fake = FakeUpstream::start().await;
    let app = app_with(vec![upstream("up", &fake.url())]);
    let r = app
        .call("POST", "/v2/up/lib/app/blobs/uploads/", &[], Body::empty())
        .await;
    r.assert_error(403, "DENIED");
    assert!(
        r.body_text().contains("read-only cache"),
        "{}",
        r.body_text()
    );
    let r = app
        .put_manifest("up/lib/app", "1", OCI_MANIFEST, b"{}")
        .await;
    r.assert_error(403, "DENIED");
    let r = app
        .call("POST", "/v2/team/app/blobs/uploads/?mount=sha256:0000000000000000000000000000000000000000000000000000000000000000&from=up/lib/app", &[], Body::empty())
        .await;
    r.assert(202);
    // Pushes elsewhere work on the same listener.
    app.push_image("team/app", "1", OCI_MANIFEST, 2).await;
    app.get("/v2/team/app/manifests/1").await.assert(200);
    assert_eq!(fake.count_prefix(""), 0, "nothing went upstream");
}

#[tokio::test]
async fn a_tag_is_checked_upstream_once_per_interval() {
    let fake = FakeUpstream::start().await;
    let (first, _, _) = fake.add_image("lib/app", "latest", OCI_MANIFEST, &[]);
    let app = app_with(vec![upstream("up", &fake.url())]);
    for _ in 0..100 {
        let r = app.get("/v2/up/lib/app/manifests/latest").await;
        r.assert(200);
        assert_eq!(digest_of(&r.body), first);
    }
    assert_eq!(fake.count("HEAD manifest lib/app:latest"), 1);
    assert_eq!(
        fake.count_prefix("GET manifest"),
        1,
        "fetched once, by digest"
    );
    // After the interval, a HEAD: unchanged, nothing fetched.
    app.clock.advance(301);
    app.get("/v2/up/lib/app/manifests/latest").await.assert(200);
    assert_eq!(fake.count("HEAD manifest lib/app:latest"), 2);
    assert_eq!(fake.count_prefix("GET manifest"), 1);
    // The tag moves upstream: seen after the next interval, fetched once.
    let (second, _, _) = fake.add_image(
        "lib/app",
        "latest",
        OCI_MANIFEST,
        &[Blob::Bytes(bytes(10, 9))],
    );
    app.get("/v2/up/lib/app/manifests/latest").await.assert(200);
    assert_eq!(
        fake.count("HEAD manifest lib/app:latest"),
        2,
        "within the interval"
    );
    app.clock.advance(301);
    let r = app.get("/v2/up/lib/app/manifests/latest").await;
    assert_eq!(digest_of(&r.body), second);
    assert_eq!(fake.count_prefix("GET manifest"), 2);
    // The old image is still there by digest.
    app.get(&format!("/v2/up/lib/app/manifests/{first}"))
        .await
        .assert(200);
    // A tag the upstream does not have is unknown, not an upstream failure.
    app.get("/v2/up/lib/app/manifests/nope")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn upstream_trouble_serves_what_is_cached_and_explains_the_rest() {
    let fake = FakeUpstream::start().await;
    let (m, _, layers) = fake.add_image(
        "lib/app",
        "1",
        DOCKER_MANIFEST,
        &[Blob::Bytes(bytes(2000, 5))],
    );
    fake.add_image("lib/app", "2", OCI_MANIFEST, &[Blob::Bytes(bytes(2000, 6))]);
    let app = app_with(vec![
        upstream("up", &fake.url()),
        upstream("down", "http://127.0.0.1:9"),
    ]);
    app.get("/v2/up/lib/app/manifests/1").await.assert(200);
    app.get(&format!("/v2/up/lib/app/blobs/{}", layers[0]))
        .await
        .assert(200);

    for status in [429, 503] {
        fake.set_mode(Mode {
            status: Some(status),
            ..Mode::default()
        });
        app.clock.advance(301);
        let r = app.get("/v2/up/lib/app/manifests/1").await;
        r.assert(200);
        assert_eq!(digest_of(&r.body), m);
        let warning = r.header("warning").unwrap_or_default();
        assert!(
            warning.starts_with("110 ") && warning.contains("stale"),
            "{warning}"
        );
        app.get(&format!("/v2/up/lib/app/blobs/{}", layers[0]))
            .await
            .assert(200);
        // Not cached: the upstream's trouble, said plainly, not a 404.
        let r = app.get("/v2/up/lib/app/manifests/2").await;
        r.assert_error(503, "UNAVAILABLE");
        let text = r.body_text();
        assert!(text.contains("upstream up"), "{text}");
        if status == 429 {
            assert!(text.contains("rate limiting"), "{text}");
            assert_eq!(r.header("retry-after"), Some("30"));
        } else {
            assert!(text.contains("503"), "{text}");
        }
    }
    let r = app.get("/v2/down/lib/app/manifests/1").await;
    r.assert_error(503, "UNAVAILABLE");
    assert!(r.body_text().contains("unavailable"), "{}", r.body_text());
}

#[tokio::test]
async fn strangers_cannot_fill_the_cache_and_the_allow_list_holds() {
    let fake = FakeUpstream::start().await;
    fake.add_image("lib/app", "1", OCI_MANIFEST, &[]);
    fake.add_image("other/app", "1", OCI_MANIFEST, &[]);
    let mut up = upstream("up", &fake.url());
    up.repositories = vec!["lib/*".into()];
    let mut app = app_with(vec![up]);
    app.get("/v2/up/other/app/manifests/1")
        .await
        .assert_error(404, "NAME_UNKNOWN");
    let team = app.user("team", &[("team/*", "pull,push")]);
    app.call(
        "GET",
        "/v2/up/lib/app/manifests/1",
        &[("authorization", &team)],
        Body::empty(),
    )
    .await
    .assert_error(403, "DENIED");
    app.auth_header = None;
    let r = app.get("/v2/up/lib/app/manifests/1").await;
    r.assert(401);
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("repository:up/lib/app:pull"),
        "the challenge names the cache repository"
    );
    assert_eq!(
        fake.count_prefix(""),
        0,
        "nothing fetched for refused requests"
    );
}

#[tokio::test]
async fn concurrent_first_pulls_share_one_download_per_blob() {
    let fake = FakeUpstream::start().await;
    let layers = [
        Blob::Bytes(bytes(1 << 20, 7)),
        Blob::Bytes(bytes(600_000, 8)),
    ];
    let (m, config, layer_ds) = fake.add_image("lib/app", "1", OCI_MANIFEST, &layers);
    // Slow enough that the pulls overlap.
    fake.set_mode(Mode {
        rate: Some(4 << 20),
        ..Mode::default()
    });
    let app = Arc::new(app_with(vec![upstream("up", &fake.url())]));
    let mut pulls = Vec::new();
    for _ in 0..20 {
        let app = app.clone();
        let (config, layer_ds) = (config.clone(), layer_ds.clone());
        pulls.push(tokio::spawn(async move {
            let r = app.get("/v2/up/lib/app/manifests/1").await;
            r.assert(200);
            for d in std::iter::once(&config).chain(&layer_ds) {
                let r = app.get(&format!("/v2/up/lib/app/blobs/{d}")).await;
                r.assert(200);
                assert_eq!(&digest_of(&r.body), d);
            }
            digest_of(&r.body)
        }));
    }
    for p in pulls {
        assert_eq!(p.await.unwrap(), m);
    }
    for d in std::iter::once(&config).chain(&layer_ds) {
        assert_eq!(
            fake.count(&format!("GET blob {d}")),
            1,
            "one download of {d}"
        );
    }
    assert_eq!(fake.count_prefix("GET manifest"), 1);
    assert_eq!(fake.count_prefix("HEAD manifest"), 1);
}

#[tokio::test]
async fn a_flipped_byte_stores_nothing_and_breaks_the_transfer() {
    let fake = FakeUpstream::start().await;
    let (_, _, layers) = fake.add_image(
        "lib/app",
        "1",
        OCI_MANIFEST,
        &[Blob::Bytes(bytes(300_000, 9))],
    );
    let app = app_with(vec![upstream("up", &fake.url())]);
    app.get("/v2/up/lib/app/manifests/1").await.assert(200);
    let failures = metric("berth_cache_fill_failures_total");
    fake.set_mode(Mode {
        flip: true,
        ..Mode::default()
    });
    let path = format!("/v2/up/lib/app/blobs/{}", layers[0]);
    let resp = open(&app, &path).await;
    assert_eq!(resp.status(), 200, "the first bytes were on their way");
    assert!(
        resp.into_body().collect().await.is_err(),
        "the client's transfer fails"
    );
    assert!(
        !blob_files(app.dir.path())
            .iter()
            .any(|f| f.ends_with(layers[0].hex())),
        "nothing stored"
    );
    assert!(metric("berth_cache_fill_failures_total") > failures);
    // The next pull downloads again, and this time it verifies.
    fake.set_mode(Mode::default());
    let r = app.get(&path).await;
    r.assert(200);
    assert_eq!(digest_of(&r.body), layers[0]);
    assert_eq!(fake.count(&format!("GET blob {}", layers[0])), 2);
}

#[tokio::test]
async fn a_client_leaving_midway_does_not_stop_the_download() {
    let fake = FakeUpstream::start().await;
    let (_, _, layers) = fake.add_image(
        "lib/app",
        "1",
        OCI_MANIFEST,
        &[Blob::Bytes(bytes(4 << 20, 10))],
    );
    fake.set_mode(Mode {
        rate: Some(8 << 20),
        ..Mode::default()
    });
    let app = app_with(vec![upstream("up", &fake.url())]);
    let path = format!("/v2/up/lib/app/blobs/{}", layers[0]);
    let resp = open(&app, &path).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = 0usize;
    while got < 2 << 20 {
        got += body
            .frame()
            .await
            .unwrap()
            .unwrap()
            .into_data()
            .unwrap()
            .len();
    }
    drop(body);
    // The download goes on; the blob lands.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !blob_files(app.dir.path())
        .iter()
        .any(|f| f.ends_with(layers[0].hex()))
    {
        assert!(Instant::now() < deadline, "the blob never landed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fake.set_mode(Mode::default());
    let r = app.get(&path).await;
    r.assert(200);
    assert_eq!(digest_of(&r.body), layers[0]);
    assert_eq!(
        fake.count(&format!("GET blob {}", layers[0])),
        1,
        "no second download"
    );
}

#[tokio::test]
async fn an_index_is_stored_and_only_the_platforms_pulled_are_fetched() {
    let fake = FakeUpstream::start().await;
    let (amd, _, _) = fake.add_image(
        "lib/multi",
        "amd",
        OCI_MANIFEST,
        &[Blob::Bytes(bytes(100, 1))],
    );
    let (arm, _, _) = fake.add_image(
        "lib/multi",
        "arm",
        OCI_MANIFEST,
        &[Blob::Bytes(bytes(100, 2))],
    );
    let sizes = {
        let c = fake.content.lock().unwrap();
        (
            c.manifests[&amd.to_string()].1.len(),
            c.manifests[&arm.to_string()].1.len(),
        )
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": amd.to_string(), "size": sizes.0, "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": arm.to_string(), "size": sizes.1, "platform": {"architecture": "arm64", "os": "linux"}},
        ],
    });
    let index_d = fake.add_manifest(
        "lib/multi",
        Some("1"),
        OCI_INDEX,
        &serde_json::to_vec(&index).unwrap(),
    );
    let app = app_with(vec![upstream("up", &fake.url())]);
    let r = app.get("/v2/up/lib/multi/manifests/1").await;
    r.assert(200);
    assert_eq!(digest_of(&r.body), index_d);
    app.get(&format!("/v2/up/lib/multi/manifests/{amd}"))
        .await
        .assert(200);
    assert_eq!(fake.count(&format!("GET manifest lib/multi:{amd}")), 1);
    assert_eq!(
        fake.count(&format!("GET manifest lib/multi:{arm}")),
        0,
        "not asked, not fetched"
    );
    // An index whose other platforms were never fetched is no damage to a check (nor,
    // so, to a restore, which checks the same way).
    let data = berth::storage::DataDir::new(app.dir.path());
    let store = berth::storage::FsStore::open(&data.blobs(), berth::storage::Sync::Never).unwrap();
    let report = berth::core::backup::fsck::fsck(&data, Arc::new(store), true)
        .await
        .unwrap();
    assert!(report.is_sound(), "{}", report.summary());
}

/// A 1 GiB layer from an upstream sending 20 MB/s: the client's first byte comes within a
/// second, the pull completes, and the blob is stored. `BERTH_TEST_CACHE_STREAM_MIB` makes
/// the layer smaller for a quick run.
#[tokio::test]
async fn a_big_first_pull_streams_while_the_upstream_sends() {
    let mib: u64 = std::env::var("BERTH_TEST_CACHE_STREAM_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let fake = FakeUpstream::start().await;
    let block = bytes(64 * 1024, 11);
    let (_, _, layers) = fake.add_image(
        "lib/big",
        "1",
        OCI_MANIFEST,
        &[Blob::Repeat {
            block,
            size: mib << 20,
        }],
    );
    fake.set_mode(Mode {
        rate: Some(20_000_000),
        ..Mode::default()
    });
    let app = app_with(vec![upstream("up", &fake.url())]);
    app.get("/v2/up/lib/big/manifests/1").await.assert(200);
    let asked = Instant::now();
    let resp = open(&app, &format!("/v2/up/lib/big/blobs/{}", layers[0])).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-length"].to_str().unwrap(),
        (mib << 20).to_string()
    );
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    let first_after = asked.elapsed();
    assert!(
        first_after < Duration::from_secs(1),
        "first byte after {first_after:?}"
    );
    let mut h = berth::oci::Hasher::new(berth::oci::Algorithm::Sha256);
    h.update(&first);
    let mut total = first.len() as u64;
    while let Some(frame) = body.frame().await {
        let data = frame.unwrap().into_data().unwrap();
        total += data.len() as u64;
        h.update(&data);
    }
    assert_eq!(total, mib << 20);
    assert_eq!(h.finish(), layers[0]);
    // Stored: a HEAD and a GET are answered without the upstream.
    fake.set_mode(Mode {
        status: Some(503),
        ..Mode::default()
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = app
            .head(&format!("/v2/up/lib/big/blobs/{}", layers[0]))
            .await;
        if r.status == 200
            && blob_files(app.dir.path())
                .iter()
                .any(|f| f.ends_with(layers[0].hex()))
        {
            break;
        }
        assert!(Instant::now() < deadline, "the blob was not stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(fake.count(&format!("GET blob {}", layers[0])), 1);
}

/// A counter of this process's metrics (shared by every test in it: compare, never equate).
fn metric(name: &str) -> f64 {
    berth::metrics::global()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// Pull an image through the cache: its manifest, then each blob.
async fn pull(app: &TestApp, repo: &str, tag: &str, blobs: &[&Digest]) {
    app.get(&format!("/v2/{repo}/manifests/{tag}"))
        .await
        .assert(200);
    for d in blobs {
        app.get(&format!("/v2/{repo}/blobs/{d}")).await.assert(200);
    }
}

#[tokio::test]
async fn eviction_by_quota_keeps_shared_blobs_and_recent_pulls() {
    const DAY: i64 = 86_400;
    let fake = FakeUpstream::start().await;
    let shared = bytes(1 << 20, 20);
    let mut images = Vec::new();
    for (i, layer) in [
        bytes(1 << 20, 21),
        bytes(1 << 20, 22),
        shared.clone(),
        bytes(1 << 20, 23),
    ]
    .into_iter()
    .enumerate()
    {
        let repo = format!("lib/img{i}");
        let (_, config, layers) = fake.add_image(&repo, "1", OCI_MANIFEST, &[Blob::Bytes(layer)]);
        images.push((format!("up/{repo}"), config, layers[0].clone()));
    }
    let mut up = upstream("up", &fake.url());
    up.quota = Some(berth::config::Size::Bytes(0));
    up.keep_pulled_within = Span::Text("7d".into());
    let app = TestApp::with_config(|c| {
        c.upstreams = vec![up];
        c.gc.grace = Span::Secs(60);
    });
    // A pushed image uses the third image's layer too.
    let pushed_layer = app.push_blob("team/app", &shared).await;
    let config = app.push_blob("team/app", b"{}").await;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": pushed_layer.to_string(), "size": shared.len()}],
    });
    app.put_manifest(
        "team/app",
        "1",
        OCI_MANIFEST,
        &serde_json::to_vec(&manifest).unwrap(),
    )
    .await
    .assert(201);
    // Three images pulled long ago, one (img3) yesterday.
    for (repo, config, layer) in &images[..3] {
        pull(&app, repo, "1", &[config, layer]).await;
        app.clock.advance(DAY);
    }
    app.clock.advance(20 * DAY);
    let (repo, config, layer) = &images[3];
    pull(&app, repo, "1", &[config, layer]).await;
    app.clock.advance(DAY);

    let report = app
        .state
        .registry
        .collect_garbage(berth::core::gc::Trigger::Cli, false)
        .await
        .unwrap();
    let evicted: Vec<&str> = report.evicted.iter().map(|m| m.repo.as_str()).collect();
    assert_eq!(
        evicted,
        ["up/lib/img0", "up/lib/img1", "up/lib/img2"],
        "least recently pulled, not the recent one"
    );
    assert!(
        report.summary().contains("evicted 3 images"),
        "{}",
        report.summary()
    );
    // The collection after the grace frees what only the evicted images used.
    app.clock.advance(3600);
    app.state
        .registry
        .collect_garbage(berth::core::gc::Trigger::Cli, false)
        .await
        .unwrap();
    let files = blob_files(app.dir.path());
    let held = |d: &Digest| files.iter().any(|f| f == d.hex());
    assert!(
        !held(&images[0].2) && !held(&images[1].2),
        "evicted layers are gone"
    );
    assert!(held(&images[2].2), "the layer a pushed image uses stays");
    assert!(held(&images[3].2), "the image pulled yesterday stays");
    app.get("/v2/team/app/manifests/1").await.assert(200);
    // The recent image is served without the upstream; an evicted one is fetched again.
    let before = fake.count_prefix("GET ");
    pull(&app, &images[3].0, "1", &[&images[3].1, &images[3].2]).await;
    assert_eq!(fake.count_prefix("GET "), before);
    pull(&app, &images[0].0, "1", &[&images[0].1, &images[0].2]).await;
    assert_eq!(fake.count(&format!("GET blob {}", images[0].2)), 2);
}

#[tokio::test]
async fn ns_names_the_upstreams_repository_even_when_it_looks_like_a_cache() {
    let fake = FakeUpstream::start().await;
    let (m, _, _) = fake.add_image("hub/tool", "1", OCI_MANIFEST, &[]);
    let mut hub = upstream("hub", &fake.url());
    hub.registries = vec!["docker.io".into()];
    let app = app_with(vec![hub]);
    let r = app.get("/v2/hub/tool/manifests/1?ns=docker.io").await;
    r.assert(200);
    assert_eq!(digest_of(&r.body), m);
    assert_eq!(fake.count_prefix("HEAD manifest hub/tool:1"), 1);
    let tags = app.get("/v2/hub/hub/tool/tags/list").await.json();
    assert_eq!(tags["tags"], serde_json::json!(["1"]));
}

#[tokio::test]
async fn a_tag_moved_upstream_but_not_fetchable_is_served_stale() {
    let fake = FakeUpstream::start().await;
    let (first, _, _) = fake.add_image("lib/app", "1", OCI_MANIFEST, &[]);
    let app = app_with(vec![upstream("up", &fake.url())]);
    app.get("/v2/up/lib/app/manifests/1").await.assert(200);
    // The tag moves; HEADs are answered, GETs are rate limited (Docker Hub's rule).
    fake.add_image("lib/app", "1", OCI_MANIFEST, &[Blob::Bytes(bytes(10, 1))]);
    fake.set_mode(Mode {
        get_status: Some(429),
        ..Mode::default()
    });
    app.clock.advance(301);
    let r = app.get("/v2/up/lib/app/manifests/1").await;
    r.assert(200);
    assert_eq!(digest_of(&r.body), first, "the copy held");
    let warning = r.header("warning").unwrap_or_default();
    assert!(warning.contains("rate limiting"), "{warning}");
}

#[tokio::test]
async fn a_cache_never_serves_another_repositorys_blob_by_its_digest() {
    let fake = FakeUpstream::start().await;
    let app = app_with(vec![upstream("up", &fake.url())]);
    let secret = app.push_blob("team/secret", b"private bytes").await;
    // An upstream manifest that names the private blob (which the upstream does not have).
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": secret.to_string(), "size": 13},
        "layers": [],
    });
    fake.add_manifest(
        "lib/bait",
        Some("1"),
        OCI_MANIFEST,
        &serde_json::to_vec(&manifest).unwrap(),
    );
    app.get("/v2/up/lib/bait/manifests/1").await.assert(200);
    let r = app.get(&format!("/v2/up/lib/bait/blobs/{secret}")).await;
    r.assert_error(404, "BLOB_UNKNOWN");
    assert!(!String::from_utf8_lossy(&r.body).contains("private"));
}

/// Over real HTTP/1.1, where a client has its whole body once `Content-Length` bytes arrived:
/// a flipped byte still fails curl's transfer (the last byte waits for the verdict).
#[tokio::test]
async fn over_http_a_client_never_completes_a_blob_that_did_not_verify() {
    let fake = FakeUpstream::start().await;
    let (_, _, layers) = fake.add_image(
        "lib/app",
        "1",
        OCI_MANIFEST,
        &[Blob::Bytes(bytes(2 << 20, 12))],
    );
    fake.set_mode(Mode {
        flip: true,
        ..Mode::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("berth.toml");
    std::fs::write(
        &config,
        format!(
            "upstreams = [{{ name = \"up\", url = \"{}\" }}]\n",
            fake.url()
        ),
    )
    .unwrap();
    let server = crate::common::Server::start(
        &tmp.path().join("data"),
        &[("BERTH_CONFIG", config.to_str().unwrap())],
    );
    let url = server.url(&format!("/v2/up/lib/app/blobs/{}", layers[0]));
    let out_file = tmp.path().join("blob");
    let args = [
        "-sS".to_string(),
        "-u".to_string(),
        format!("admin:{}", crate::common::ADMIN_PASSWORD),
        "-o".to_string(),
        out_file.display().to_string(),
        url,
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(crate::common::require_tool("curl"))
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        !out.status.success(),
        "curl completed a transfer that did not verify"
    );
    let got = std::fs::metadata(&out_file).map(|m| m.len()).unwrap_or(0);
    assert!(got < 2 << 20, "{got} bytes");
}

#[tokio::test]
async fn the_upstreams_rate_limit_shows_in_metrics() {
    let fake = FakeUpstream::start().await;
    fake.add_image("lib/app", "1", OCI_MANIFEST, &[]);
    let app = TestApp::with_config(|c| {
        c.upstreams = vec![upstream("ratelimited", &fake.url())];
        let token = c.data_dir.join("metrics-token");
        std::fs::write(&token, "a-long-metrics-token-0123456789\n").unwrap();
        c.metrics.token_file = Some(token);
    });
    app.get("/v2/ratelimited/lib/app/manifests/1")
        .await
        .assert(200);
    let r = app
        .call(
            "GET",
            "/metrics",
            &[("authorization", "Bearer a-long-metrics-token-0123456789")],
            Body::empty(),
        )
        .await;
    r.assert(200);
    let text = r.body_text();
    assert!(
        text.contains("berth_upstream_ratelimit_remaining{upstream=\"ratelimited\"} 42"),
        "{text}"
    );
    assert!(
        text.contains("berth_upstream_ratelimit_limit{upstream=\"ratelimited\"} 100"),
        "{text}"
    ); // And on the dashboard.
    let admin = Browser::signed_in(&app, "admin", crate::common::ADMIN_PASSWORD).await;
    let html = crate::common::browser::text(&admin.get("/").await);
    assert!(html.contains("Pull-through cache"), "{html}");
    assert!(html.contains("42 of 100 left per 6 h"), "{html}");
}

#[tokio::test]
async fn a_mirror_hosts_challenge_names_its_own_token_endpoint() {
    let fake = FakeUpstream::start().await;
    let mut hub = upstream("hub", &fake.url());
    hub.mirror_hosts = vec!["mirror.test".into()];
    let mut app = TestApp::with_config(|c| {
        c.upstreams = vec![hub];
        c.external_url = Some("https://registry.example.com".into());
    });
    app.auth_header = None;
    let r = app
        .call(
            "GET",
            "/v2/library/nginx/manifests/1",
            &[("host", "mirror.test")],
            Body::empty(),
        )
        .await;
    r.assert(401);
    let challenge = r.header("www-authenticate").unwrap();
    assert!(
        challenge.starts_with("Bearer realm=\"https://mirror.test/token\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("repository:hub/library/nginx:pull"),
        "{challenge}"
    );
    let r = app.get("/v2/team/app/manifests/1").await;
    let challenge = r.header("www-authenticate").unwrap();
    assert!(
        challenge.starts_with("Bearer realm=\"https://registry.example.com/token\""),
        "{challenge}"
    );
}

#[tokio::test]
async fn a_docker_daemon_mirror_gets_tokens_for_the_cache() {
    let fake = FakeUpstream::start().await;
    let (m, _, _) = fake.add_image("library/nginx", "1", OCI_MANIFEST, &[]);
    let mut hub = upstream("hub", &fake.url());
    hub.mirror_hosts = vec!["mirror.test".into()];
    let mut app = app_with(vec![hub]);
    let basic = app.user("puller", &[("hub/**", "pull")]);
    app.auth_header = None;
    // The daemon asks for the name it pulls; the token is for the cache's repository.
    let r = app
        .call(
            "GET",
            "/token?service=berth&scope=repository:library/nginx:pull",
            &[("host", "mirror.test"), ("authorization", &basic)],
            Body::empty(),
        )
        .await;
    r.assert(200);
    let token = r.json()["token"].as_str().unwrap().to_string();
    let bearer = format!("Bearer {token}");
    let r = app
        .call(
            "GET",
            "/v2/library/nginx/manifests/1",
            &[("host", "mirror.test"), ("authorization", &bearer)],
            Body::empty(),
        )
        .await;
    r.assert(200);
    assert_eq!(digest_of(&r.body), m);
    // On the main host the same scope is the local `library/nginx`, which the user may not
    // pull: the token does not open the cache there.
    let r = app
        .call(
            "GET",
            "/token?service=berth&scope=repository:library/nginx:pull",
            &[("authorization", &basic)],
            Body::empty(),
        )
        .await;
    let token = r.json()["token"].as_str().unwrap().to_string();
    app.call(
        "GET",
        "/v2/library/nginx/manifests/1",
        &[
            ("host", "mirror.test"),
            ("authorization", &format!("Bearer {token}")),
        ],
        Body::empty(),
    )
    .await
    .assert(401);
}

#[tokio::test]
async fn an_image_in_use_through_its_index_is_not_evicted() {
    const DAY: i64 = 86_400;
    let fake = FakeUpstream::start().await;
    let (amd, _, amd_layers) = fake.add_image(
        "lib/multi",
        "amd",
        OCI_MANIFEST,
        &[Blob::Bytes(bytes(1000, 31))],
    );
    let size = fake.content.lock().unwrap().manifests[&amd.to_string()]
        .1
        .len();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": amd.to_string(), "size": size,
                       "platform": {"architecture": "amd64", "os": "linux"}}],
    });
    fake.add_manifest(
        "lib/multi",
        Some("1"),
        OCI_INDEX,
        &serde_json::to_vec(&index).unwrap(),
    );
    let mut up = upstream("up", &fake.url());
    up.quota = Some(berth::config::Size::Bytes(0));
    let app = app_with(vec![up]);
    app.get("/v2/up/lib/multi/manifests/1").await.assert(200);
    app.get(&format!("/v2/up/lib/multi/manifests/{amd}"))
        .await
        .assert(200);
    app.get(&format!("/v2/up/lib/multi/blobs/{}", amd_layers[0]))
        .await
        .assert(200);
    // Weeks later a node whose image is up to date pulls the index only.
    app.clock.advance(20 * DAY);
    app.get("/v2/up/lib/multi/manifests/1").await.assert(200);
    app.clock.advance(DAY);
    let report = app
        .state
        .registry
        .collect_garbage(berth::core::gc::Trigger::Cli, false)
        .await
        .unwrap();
    assert!(report.evicted.is_empty(), "{:?}", report.evicted);
}

#[tokio::test]
async fn an_upstream_may_not_take_the_name_of_pushed_repositories() {
    let app = TestApp::new();
    app.push_image("team/app", "1", OCI_MANIFEST, 1).await;
    let config = berth::config::Config {
        data_dir: app.dir.path().to_path_buf(),
        upstreams: vec![upstream("team", "https://registry.example")],
        ..berth::config::Config::default()
    };
    let clock = berth::clock::ManualClock::at(1_700_000_000);
    let e = berth::AppState::open(config, Arc::new(clock))
        .err()
        .expect("refused");
    let text = format!("{e:#}");
    assert!(text.contains("team/app holds pushed images"), "{text}");
}

#[tokio::test]
async fn downloads_per_upstream_are_bounded() {
    let fake = FakeUpstream::start().await;
    let layers: Vec<Blob> = (0..4)
        .map(|i| Blob::Bytes(bytes(256 * 1024, 40 + i)))
        .collect();
    let (_, _, layer_ds) = fake.add_image("lib/app", "1", OCI_MANIFEST, &layers);
    fake.set_mode(Mode {
        rate: Some(1 << 20),
        ..Mode::default()
    });
    let mut up = upstream("up", &fake.url());
    up.max_concurrent = 2;
    let app = Arc::new(app_with(vec![up]));
    app.get("/v2/up/lib/app/manifests/1").await.assert(200);
    let pulls: Vec<_> = layer_ds
        .iter()
        .map(|d| {
            let (app, d) = (app.clone(), d.clone());
            tokio::spawn(async move {
                let r = app.get(&format!("/v2/up/lib/app/blobs/{d}")).await;
                r.assert(200);
                assert_eq!(digest_of(&r.body), d);
            })
        })
        .collect();
    for p in pulls {
        p.await.unwrap();
    }
    let most = fake.most_sending.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        most, 2,
        "at most max_concurrent downloads at once, and they overlap"
    );
}

#[tokio::test]
async fn an_operator_may_open_a_cache_to_anonymous_pulls() {
    let fake = FakeUpstream::start().await;
    let (m, _, layers) =
        fake.add_image("lib/app", "1", OCI_MANIFEST, &[Blob::Bytes(bytes(500, 50))]);
    let mut app = app_with(vec![
        upstream("open", &fake.url()),
        upstream("closed", &fake.url()),
    ]);
    berth::auth::accounts::set_anonymous(
        app.state.auth.db(),
        app.clock.now(),
        &berth::auth::accounts::CLI,
        "open/**",
        true,
    )
    .unwrap();
    app.auth_header = None;
    let r = app.get("/v2/open/lib/app/manifests/1").await;
    r.assert(200);
    assert_eq!(digest_of(&r.body), m);
    app.get(&format!("/v2/open/lib/app/blobs/{}", layers[0]))
        .await
        .assert(200);
    app.get("/v2/closed/lib/app/manifests/1").await.assert(401);
    assert_eq!(
        fake.count("HEAD manifest lib/app:1"),
        1,
        "only the open cache asked"
    );
}
