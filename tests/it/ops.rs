//! What operators watch: `/healthz`, `/readyz` check by check (a read-only data directory
//! fails it), `/metrics` (parsed as Prometheus text; counters move after a push and a pull)
//! on the main router with the metrics token and on the metrics listener of the real binary,
//! and a proxy in front that drops the body of a streamed PATCH, which the client is told
//! about, the log names and `/metrics` counts.

use std::collections::HashMap;

use axum::body::Body;
use berth::oci::Digest;
use serde_json::Value;

use crate::common::cmd::output;
use crate::common::net::client;
use crate::common::server::free_port;
use crate::common::{OCI_MANIFEST, Server, TestApp};

/// Samples of a scrape by name and labels (`name{k="v",…}` with labels sorted), checked by a
/// Prometheus text-format parser.
fn parse(text: &str) -> HashMap<String, f64> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    let mut out = HashMap::new();
    for s in scrape.samples {
        let mut labels: Vec<String> = s
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        labels.sort();
        let key = if labels.is_empty() {
            s.metric.clone()
        } else {
            format!("{}{{{}}}", s.metric, labels.join(","))
        };
        let v = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            other => panic!("unexpected sample {other:?}"),
        };
        out.insert(key, v);
    }
    out
}

fn value(m: &HashMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("no {key} in {:?}", m.keys().collect::<Vec<_>>()))
}

async fn scrape(app: &TestApp, auth: Option<&str>) -> (u16, String) {
    let mut req = axum::http::Request::get("/metrics");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let r = app.send(req.body(Body::empty()).unwrap()).await;
    (
        r.status.as_u16(),
        String::from_utf8_lossy(&r.body).to_string(),
    )
}

#[tokio::test]
async fn health_readiness_and_metrics_on_the_main_router() {
    let tokens = tempfile::tempdir().unwrap();
    let token_file = tokens.path().join("metrics-token");
    std::fs::write(&token_file, "a-long-metrics-token-0123456789\n").unwrap();
    let tf = token_file.clone();
    let app = TestApp::with_config(move |c| c.metrics.token_file = Some(tf));

    let r = app.get("/healthz").await;
    r.assert(200);
    assert_eq!(r.json()["status"], "ok");
    let r = app.get("/readyz").await;
    r.assert(200);
    let ready = r.json();
    for key in ["database", "data_dir"] {
        assert_eq!(ready[key], "ok", "{ready}");
    }
    assert_eq!(ready["uploads"], "accepted", "{ready}");
    assert_eq!(ready["status"], "ok", "{ready}");
    assert!(ready.get("certificate").is_none(), "no TLS: {ready}");

    // The main listener serves metrics only with the token.
    assert_eq!(scrape(&app, None).await.0, 401);
    assert_eq!(
        scrape(&app, Some("Bearer wrong-token-wrong-token")).await.0,
        401
    );
    let good = "Bearer a-long-metrics-token-0123456789";
    let (status, before) = scrape(&app, Some(good)).await;
    assert_eq!(status, 200);
    let before = parse(&before);

    let (_, d) = app.push_image("ops/app", "1", OCI_MANIFEST, 7).await;
    app.get(&format!("/v2/ops/app/manifests/{d}"))
        .await
        .assert(200);
    let (_, after) = scrape(&app, Some(good)).await;
    let after = parse(&after);
    for counter in ["berth_pushes_total", "berth_pulls_total"] {
        assert!(
            value(&after, counter) >= value(&before, counter) + 1.0,
            "{counter} did not move"
        );
    }
    assert!(
        value(&after, "berth_http_received_bytes_total")
            > value(&before, "berth_http_received_bytes_total")
    );
    assert!(
        value(&after, "berth_http_sent_bytes_total")
            > value(&before, "berth_http_sent_bytes_total")
    );
    assert!(
        value(
            &after,
            r#"berth_http_requests_total{group="v2_manifests",status="201"}"#
        ) >= 1.0
    );
    // Read when scraped, from this registry's own data directory.
    assert_eq!(value(&after, "berth_blobs"), 2.0);
    assert_eq!(value(&after, "berth_upload_sessions_open"), 0.0);
    assert!(value(&after, "berth_blob_store_bytes") > 1000.0);
    assert!(value(&after, "berth_disk_free_bytes") > 0.0);

    // Without a token configured there is nothing at /metrics on the main listener.
    let plain = TestApp::new();
    assert_eq!(scrape(&plain, Some(good)).await.0, 404);
}

/// The data directory bind-mounted read-only over itself (needs root, as CI has): new files
/// cannot be made there, while files already open stay writable, as after a remount.
struct ReadOnly(std::path::PathBuf);

impl ReadOnly {
    fn over(dir: &std::path::Path) -> ReadOnly {
        for args in [
            vec!["--bind", dir.to_str().unwrap(), dir.to_str().unwrap()],
            vec!["-o", "remount,bind,ro", dir.to_str().unwrap()],
        ] {
            let out = output(std::process::Command::new("mount").args(&args));
            assert!(
                out.status.success(),
                "this test bind-mounts a folder read-only, which needs root (CI runs as root): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        ReadOnly(dir.to_path_buf())
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_read_only_data_directory_fails_readiness_and_names_the_check() {
    let app = TestApp::new();
    app.get("/readyz").await.assert(200);
    let ro = ReadOnly::over(app.dir.path());
    // A probe's answer serves for two seconds.
    app.clock.advance(2);
    let r = app.get("/readyz").await;
    r.assert(503);
    let body = r.json();
    assert_eq!(body["status"], "down", "{body}");
    let data_dir = body["data_dir"].as_str().unwrap();
    assert!(
        data_dir.starts_with("failed: ") && data_dir.contains("Read-only"),
        "{body}"
    );
    // Liveness is another matter.
    app.get("/healthz").await.assert(200);
    drop(ro);
    app.clock.advance(2);
    let r = app.get("/readyz").await;
    r.assert(200);
    assert_eq!(r.json()["status"], "ok");
}

/// A proxy in front of berth that, like cloudflared (#1485), forwards a PATCH without
/// Content-Length with an empty body; everything else goes through untouched. It adds the
/// usual forwarding headers.
async fn body_dropping_proxy(upstream: String) -> u16 {
    use axum::extract::Request;
    use axum::response::IntoResponse;
    let port = free_port();
    let app = axum::Router::new().fallback(move |req: Request| {
        let upstream = upstream.clone();
        async move {
            let (parts, body) = req.into_parts();
            let drop_body = parts.method == axum::http::Method::PATCH
                && !parts.headers.contains_key("content-length");
            let bytes = axum::body::to_bytes(body, 1 << 30).await.unwrap();
            let url = format!("{upstream}{}", parts.uri.path_and_query().unwrap());
            let mut out = reqwest::Client::new().request(parts.method.clone(), url);
            for (k, v) in &parts.headers {
                if k != "host" && k != "content-length" && k != "transfer-encoding" {
                    out = out.header(k, v);
                }
            }
            out = out
                .header("x-forwarded-for", "203.0.113.7")
                .header("via", "1.1 test-proxy");
            let out = if drop_body {
                out.body(Vec::new())
            } else {
                out.body(bytes)
            };
            let resp = out.send().await.unwrap();
            let mut back = axum::http::Response::builder().status(resp.status());
            for (k, v) in resp.headers() {
                if k != "transfer-encoding" && k != "connection" && k != "content-length" {
                    back = back.header(k, v);
                }
            }
            back.body(Body::from(resp.bytes().await.unwrap()))
                .unwrap()
                .into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

#[tokio::test]
async fn a_proxy_that_drops_streamed_bodies_is_named_logged_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let metrics_port = free_port();
    let listen = format!("127.0.0.1:{metrics_port}");
    let server = Server::start(
        &tmp.path().join("data"),
        &[("BERTH_METRICS__LISTEN", &listen)],
    );
    let metrics_url = format!("http://{listen}/metrics");
    // The metrics listener needs no credentials; the main one has no token configured.
    let r = reqwest::get(&metrics_url).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let before = parse(&r.text().await.unwrap());
    assert_eq!(value(&before, "berth_proxy_dropped_bodies_total"), 0.0);
    assert_eq!(
        reqwest::get(format!("http://{listen}/healthz"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        client()
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        404
    );

    let proxy = body_dropping_proxy(server.url("")).await;
    let base = format!("http://127.0.0.1:{proxy}");
    let c = client();
    let location = crate::common::net::start_upload(&c, &base, "behind/proxy").await;
    let data = vec![7u8; 100_000];
    let d = Digest::sha256_of(&data);
    let stream = futures_util::stream::iter(
        data.chunks(10_000)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let r = c
        .patch(&location)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "the proxy passed an empty PATCH");
    let location = crate::common::net::absolute(&base, r.headers()["location"].to_str().unwrap());
    let put = crate::common::net::with_query(&location, "digest", &d.to_string());
    let r = c.put(&put).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(body["errors"][0]["code"], "DIGEST_INVALID");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("proxy in front of the registry probably dropped the body"),
        "{message}"
    );
    // A retry of the same PUT is answered alike, but logged and counted once.
    let r = c.put(&put).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let log = server.log();
    assert_eq!(
        log.matches("probably dropped the body of a streamed PATCH")
            .count(),
        1,
        "{log}"
    );
    assert!(
        log.contains("203.0.113.7") && log.contains("test-proxy"),
        "{log}"
    );
    let after = parse(
        &reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(value(&after, "berth_proxy_dropped_bodies_total"), 1.0);

    // Straight to berth, the same bytes push fine: nothing is flagged.
    let r = c
        .post(server.url(&format!("/v2/direct/blobs/uploads/?digest={d}")))
        .body(data)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    // A wrong digest with forwarding headers but no empty streamed PATCH: the message gives
    // the hint (a proxy is in front), but a header anyone can send is no evidence: no log
    // line, no count.
    let wrong = Digest::sha256_of(b"something else");
    let location = crate::common::net::start_upload(&c, &server.url(""), "direct").await;
    let r = c
        .put(crate::common::net::with_query(
            &location,
            "digest",
            &wrong.to_string(),
        ))
        .header("x-forwarded-for", "198.51.100.1")
        .body(b"these bytes".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("proxy in front"),
        "{body}"
    );
    let again = parse(
        &reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(value(&again, "berth_proxy_dropped_bodies_total"), 1.0);
    assert!(!server.log().contains("198.51.100.1"));
}
