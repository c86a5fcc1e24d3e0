//! Limits an attacker with some credentials (or none) must not get past: concurrent password
//! guesses, huge manifests, pathological patterns.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth::clock::Clock as _;
use serde_json::json;

use crate::common::{ADMIN_PASSWORD, TestApp, basic};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wrong_passwords_for_one_account_are_not_all_checked() {
    let app = Arc::new(TestApp::new());
    let guesses = (0..50).map(|i| basic("admin", &format!("guess-{i}")));
    let statuses = all_at_once(&app, "10.0.0.9", guesses).await;
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(checked + refused, 50, "{statuses:?}");
    assert!(checked <= 5, "{checked} guesses were checked: {statuses:?}");
    // The right password among them would not have got through either.
    app.call_from(
        "10.0.0.9",
        "GET",
        "/v2/",
        &[("authorization", &basic("admin", ADMIN_PASSWORD))],
    )
    .await
    .assert_error(429, "TOOMANYREQUESTS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_the_right_password_all_get_in() {
    // A client that sends Basic credentials on every request, many at once: one check, and
    // the others wait for it rather than counting as attempts.
    let app = Arc::new(TestApp::new());
    let good = std::iter::repeat_n(basic("admin", ADMIN_PASSWORD), 32);
    let statuses = all_at_once(&app, "10.0.0.8", good).await;
    assert_eq!(statuses, vec![200; 32]);
}

/// `GET /v2/` with each of `auths` at once from `ip`; the statuses in order.
async fn all_at_once(
    app: &Arc<TestApp>,
    ip: &'static str,
    auths: impl Iterator<Item = String>,
) -> Vec<u16> {
    let tasks: Vec<_> = auths
        .map(|auth| {
            let app = app.clone();
            tokio::spawn(async move {
                app.call_from(ip, "GET", "/v2/", &[("authorization", &auth)])
                    .await
                    .status
                    .as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses
}

/// An image manifest just under 4 MiB with `n` distinct layers.
fn huge_manifest(n: usize) -> Vec<u8> {
    let layers: Vec<_> = (0..n)
        .map(|i| {
            let d = berth::oci::Digest::sha256_of(format!("layer {i}").as_bytes());
            json!({"mediaType": "x", "digest": d.to_string(), "size": 1})
        })
        .collect();
    let cfg = berth::oci::Digest::sha256_of(b"config");
    let m = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/x", "digest": cfg.to_string(), "size": 1},
        "layers": layers,
    });
    let bytes = m.to_string().into_bytes();
    assert!(bytes.len() <= 4 * 1024 * 1024, "{} bytes", bytes.len());
    bytes
}

/// The 0.5 s asked of an optimised build (about 0.16 s measured with the release binary and
/// curl); the suite's debug build parses with unoptimised serde code and gets 2 s. The
/// quadratic de-duplication this guards against took minutes.
const MANIFEST_BUDGET: Duration = if cfg!(debug_assertions) {
    Duration::from_secs(2)
} else {
    Duration::from_millis(500)
};

async fn put_huge(app: &TestApp, body: &[u8]) -> crate::common::Resp {
    let oci = "application/vnd.oci.image.manifest.v1+json";
    app.put_manifest("big/app", "v1", oci, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_with_38000_layers_is_answered_quickly_and_stalls_nothing() {
    let app = Arc::new(TestApp::new());
    let body = huge_manifest(38_000);
    let started = Instant::now();
    put_huge(&app, &body)
        .await
        .assert_error(400, "MANIFEST_BLOB_UNKNOWN");
    let one = started.elapsed();
    assert!(one < MANIFEST_BUDGET, "one manifest took {one:?}");
    // Four at once, while someone else asks for /v2/.
    let puts: Vec<_> = (0..4)
        .map(|_| {
            let (app, body) = (app.clone(), body.clone());
            tokio::spawn(async move { put_huge(&app, &body).await.status })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let t = Instant::now();
        app.get("/v2/").await.assert(200);
        slowest = slowest.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for p in puts {
        assert_eq!(p.await.unwrap().as_u16(), 400);
    }
    assert!(
        slowest < Duration::from_millis(300),
        "GET /v2/ took {slowest:?}"
    );
}

#[tokio::test]
async fn a_pathological_anonymous_pattern_costs_nothing() {
    let mut app = TestApp::new();
    berth::auth::accounts::set_anonymous(
        app.state.auth.db(),
        app.clock.now(),
        &berth::auth::accounts::CLI,
        "**a**a**a**a**a**a**a**a**a**a**a**a**b",
        true,
    )
    .unwrap();
    app.auth_header = None;
    let name = "a/".repeat(60) + "a";
    let started = Instant::now();
    let r = app.get(&format!("/v2/{name}/tags/list")).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.status.as_u16(), 401);
}
