//! Crash safety of the real binary. `kill -9` while concurrent pushes are in flight, restart on
//! the same data directory: every acknowledged (201) blob and manifest is served exactly, and
//! nothing unacknowledged is ever served with the wrong bytes. An upload session survives a
//! restart.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth::oci::Digest;
use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use serde_json::json;
use tokio::sync::watch;

use crate::common::images::{OCI_CONFIG, OCI_LAYER_GZIP};
use crate::common::net::{absolute, client, error_code, fetch_hashed, with_query};
use crate::common::prng::Prng;
use crate::common::{OCI_MANIFEST, Server};

const PUSHES: u64 = 16;
/// Paced bodies are sent in pieces of this size, with a pause before each.
const PIECE: usize = 64 * 1024;
/// Chunk size of chunked (`Content-Range`) uploads.
const CHUNK: usize = 1 << 20;
const OCTETS: &str = "application/octet-stream";

#[derive(Clone, Copy, Debug)]
enum Method {
    /// `POST ?digest=` with the whole body and a `Content-Length`.
    Monolithic,
    /// `POST`, `PATCH`es with `Content-Range`, then `PUT ?digest=`.
    Chunked,
    /// `POST`, one `PATCH` streamed without a length, then `PUT ?digest=`.
    Streamed,
}

struct Blob {
    bytes: Bytes,
    digest: Digest,
}

impl Blob {
    fn new(bytes: Vec<u8>) -> Blob {
        Blob {
            digest: Digest::sha256_of(&bytes),
            bytes: Bytes::from(bytes),
        }
    }
}

/// One push: a blob, then for some a config blob and an image manifest tagged `latest`.
struct Plan {
    repo: String,
    method: Method,
    blob: Blob,
    /// Pause before each piece of the body, so that pushes are still running at the kill.
    pace: Duration,
    image: Option<(Blob, Blob)>,
}

impl Plan {
    fn new(i: u64) -> Plan {
        let mut prng = Prng::new(1000 + i);
        let size = prng.range(1 << 20, 8 << 20) as usize;
        let blob = Blob::new(prng.bytes(size));
        let image = i.is_multiple_of(2).then(|| {
            let config = Blob::new(
                json!({"architecture": "amd64", "os": "linux", "push": i})
                    .to_string()
                    .into_bytes(),
            );
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config.digest.to_string(),
                           "size": config.bytes.len()},
                "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": blob.digest.to_string(),
                            "size": size}],
            });
            (config, Blob::new(serde_json::to_vec(&manifest).unwrap()))
        });
        Plan {
            repo: format!("crash/p{i}"),
            method: [Method::Monolithic, Method::Chunked, Method::Streamed][(i % 3) as usize],
            blob,
            pace: Duration::from_millis(i % 4),
            image,
        }
    }
}

/// What the pushes saw, shared between them and the test.
struct Shared {
    base: String,
    client: reqwest::Client,
    /// Set just before the kill: transport errors are expected only after it.
    killed: AtomicBool,
    /// Pushes that completed every step.
    done: AtomicUsize,
    /// `(repo, digest)` of every blob acknowledged with 201.
    acked_blobs: Mutex<Vec<(String, Digest)>>,
    acked_manifests: Mutex<Vec<(String, Digest)>>,
    /// (data blobs, manifests) acknowledged so far, to time the kill.
    progress: watch::Sender<(usize, usize)>,
    /// Responses no correct server gives, and failures before the kill.
    wrong: Mutex<Vec<String>>,
}

impl Shared {
    /// Send and expect `status`; anything else is recorded unless the kill explains it.
    async fn send(
        &self,
        what: &str,
        req: reqwest::RequestBuilder,
        status: u16,
    ) -> Result<reqwest::Response, ()> {
        match req.send().await {
            Ok(r) if r.status().as_u16() == status => Ok(r),
            Ok(r) => {
                let got = r.status();
                let body = r.text().await.unwrap_or_default();
                self.wrong
                    .lock()
                    .unwrap()
                    .push(format!("{what}: expected {status}, got {got}: {body}"));
                Err(())
            }
            Err(e) => {
                if !self.killed.load(Ordering::SeqCst) {
                    self.wrong
                        .lock()
                        .unwrap()
                        .push(format!("{what}: failed before the kill: {e:?}"));
                }
                Err(())
            }
        }
    }

    fn location(&self, what: &str, r: &reqwest::Response) -> Result<String, ()> {
        match r.headers().get(LOCATION).and_then(|v| v.to_str().ok()) {
            Some(l) => Ok(absolute(&self.base, l)),
            None => {
                self.wrong
                    .lock()
                    .unwrap()
                    .push(format!("{what}: no Location header"));
                Err(())
            }
        }
    }

    fn ack_blob(&self, repo: &str, d: &Digest, data_blob: bool) {
        self.acked_blobs
            .lock()
            .unwrap()
            .push((repo.to_string(), d.clone()));
        if data_blob {
            self.progress.send_modify(|p| p.0 += 1);
        }
    }
}

/// `data` in pieces with a pause before each: a body that takes a while to arrive.
fn paced(data: Bytes, pace: Duration) -> reqwest::Body {
    let pieces: Vec<Bytes> = (0..data.len())
        .step_by(PIECE)
        .map(|i| data.slice(i..(i + PIECE).min(data.len())))
        .collect();
    reqwest::Body::wrap_stream(
        futures_util::stream::iter(pieces).then(move |p| async move {
            tokio::time::sleep(pace).await;
            Ok::<_, std::io::Error>(p)
        }),
    )
}

async fn push_blob(
    sh: &Shared,
    repo: &str,
    blob: &Blob,
    method: Method,
    pace: Duration,
) -> Result<(), ()> {
    let uploads = format!("{}/v2/{repo}/blobs/uploads/", sh.base);
    let d = blob.digest.to_string();
    let what = format!("{method:?} push of {d} to {repo}");
    let len = blob.bytes.len();
    let finish = match method {
        Method::Monolithic => {
            let req = sh
                .client
                .post(with_query(&uploads, "digest", &d))
                .header(CONTENT_TYPE, OCTETS)
                .header(CONTENT_LENGTH, len)
                .body(paced(blob.bytes.clone(), pace));
            sh.send(&what, req, 201).await?;
            return Ok(());
        }
        Method::Chunked => {
            let r = sh.send(&what, sh.client.post(&uploads), 202).await?;
            let mut loc = sh.location(&what, &r)?;
            for start in (0..len).step_by(CHUNK) {
                tokio::time::sleep(pace * (CHUNK / PIECE) as u32).await;
                let end = (start + CHUNK).min(len);
                let req = sh
                    .client
                    .patch(&loc)
                    .header(CONTENT_TYPE, OCTETS)
                    .header(CONTENT_RANGE, format!("{start}-{}", end - 1))
                    .body(blob.bytes.slice(start..end));
                let r = sh.send(&what, req, 202).await?;
                let range = r.headers().get(RANGE).and_then(|v| v.to_str().ok());
                if range != Some(&format!("0-{}", end - 1)) {
                    sh.wrong
                        .lock()
                        .unwrap()
                        .push(format!("{what}: chunk ending at {end}: Range is {range:?}"));
                    return Err(());
                }
                loc = sh.location(&what, &r)?;
            }
            loc
        }
        Method::Streamed => {
            let r = sh.send(&what, sh.client.post(&uploads), 202).await?;
            let loc = sh.location(&what, &r)?;
            let req = sh
                .client
                .patch(&loc)
                .header(CONTENT_TYPE, OCTETS)
                .body(paced(blob.bytes.clone(), pace));
            let r = sh.send(&what, req, 202).await?;
            sh.location(&what, &r)?
        }
    };
    let req = sh
        .client
        .put(with_query(&finish, "digest", &d))
        .header(CONTENT_LENGTH, 0);
    sh.send(&what, req, 201).await?;
    Ok(())
}

async fn push(sh: Arc<Shared>, plan: Arc<Plan>) {
    let repo = &plan.repo;
    let run = async {
        if let Some((config, _)) = &plan.image {
            push_blob(&sh, repo, config, Method::Monolithic, Duration::ZERO).await?;
            sh.ack_blob(repo, &config.digest, false);
        }
        push_blob(&sh, repo, &plan.blob, plan.method, plan.pace).await?;
        sh.ack_blob(repo, &plan.blob.digest, true);
        if let Some((_, manifest)) = &plan.image {
            let req = sh
                .client
                .put(format!("{}/v2/{repo}/manifests/latest", sh.base))
                .header(CONTENT_TYPE, OCI_MANIFEST)
                .body(manifest.bytes.clone());
            sh.send(&format!("manifest PUT to {repo}"), req, 201)
                .await?;
            sh.acked_manifests
                .lock()
                .unwrap()
                .push((repo.clone(), manifest.digest.clone()));
            sh.progress.send_modify(|p| p.1 += 1);
        }
        Ok::<_, ()>(())
    };
    if run.await.is_ok() {
        sh.done.fetch_add(1, Ordering::SeqCst);
    }
}

/// A blob GET, summed up: `exact`, or what was served instead.
async fn check_blob(client: &reqwest::Client, server: &Server, repo: &str, blob: &Blob) -> String {
    let url = server.url(&format!("/v2/{repo}/blobs/{}", blob.digest));
    let got = fetch_hashed(client, &url).await;
    match (got.status, got.digest) {
        (200, Some(d)) if d == blob.digest && got.len == blob.bytes.len() as u64 => "exact".into(),
        (200, d) => format!("WRONG CONTENT: {} bytes, digest {d:?}", got.len),
        (s, _) => format!("{s} {}", got.code.unwrap_or(got.error_body)),
    }
}

async fn check_manifest(
    client: &reqwest::Client,
    server: &Server,
    repo: &str,
    reference: &str,
    manifest: &Blob,
) -> String {
    let url = server.url(&format!("/v2/{repo}/manifests/{reference}"));
    let r = client.get(&url).send().await.unwrap();
    let status = r.status().as_u16();
    let body = r.bytes().await.unwrap();
    match status {
        200 if body == manifest.bytes => "exact".into(),
        200 => format!("WRONG CONTENT: {}", String::from_utf8_lossy(&body)),
        s => format!("{s} {}", error_code(&body)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_pushes_loses_no_acknowledged_write() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = Server::start(&data, &[]);
    let plans: Vec<Arc<Plan>> = (0..PUSHES).map(|i| Arc::new(Plan::new(i))).collect();
    let (progress, mut watch_progress) = watch::channel((0, 0));
    let sh = Arc::new(Shared {
        base: server.url(""),
        client: client(),
        killed: AtomicBool::new(false),
        done: AtomicUsize::new(0),
        acked_blobs: Mutex::default(),
        acked_manifests: Mutex::default(),
        progress,
        wrong: Mutex::default(),
    });
    let tasks: Vec<_> = plans
        .iter()
        .map(|p| tokio::spawn(push(sh.clone(), p.clone())))
        .collect();

    // Kill once a few data blobs and a manifest are acknowledged, with the rest in flight.
    let waited = tokio::time::timeout(
        Duration::from_secs(60),
        watch_progress.wait_for(|&(blobs, manifests)| blobs >= 4 && manifests >= 1),
    )
    .await;
    sh.killed.store(true, Ordering::SeqCst);
    server.kill9();
    let done_at_kill = sh.done.load(Ordering::SeqCst);
    assert!(
        waited.is_ok(),
        "pushes did not get acknowledged: {:?}",
        sh.wrong.lock().unwrap()
    );
    for t in tasks {
        t.await.unwrap();
    }
    let wrong = sh.wrong.lock().unwrap().clone();
    assert!(wrong.is_empty(), "before the kill: {wrong:#?}");
    println!(
        "killed after {:?} with {done_at_kill} of {PUSHES} pushes complete, {} blobs and {} manifests acknowledged",
        started.elapsed(),
        sh.acked_blobs.lock().unwrap().len(),
        sh.acked_manifests.lock().unwrap().len()
    );
    assert!(
        done_at_kill < PUSHES as usize - 4,
        "too few pushes were in flight at the kill ({done_at_kill} of {PUSHES} done)"
    );

    let server = Server::start(&data, &[]);
    let client = client();
    let acked_blobs = sh.acked_blobs.lock().unwrap().clone();
    let acked_manifests = sh.acked_manifests.lock().unwrap().clone();
    let mut report = Vec::new();
    let mut failures = 0;
    for plan in &plans {
        let repo = &plan.repo;
        let mut blobs = vec![&plan.blob];
        if let Some((config, _)) = &plan.image {
            blobs.push(config);
        }
        for blob in blobs {
            let acked = acked_blobs.contains(&(repo.clone(), blob.digest.clone()));
            let seen = check_blob(&client, &server, repo, blob).await;
            // Acknowledged: exactly its bytes. Not: unknown, or exactly its bytes.
            let ok = seen == "exact" || (!acked && seen == "404 BLOB_UNKNOWN");
            failures += usize::from(!ok);
            report.push(format!(
                "{} blob {} in {repo} ({:?}, acknowledged: {acked}): {seen}",
                if ok { "ok " } else { "BAD" },
                blob.digest,
                plan.method
            ));
        }
        if let Some((_, manifest)) = &plan.image {
            let acked = acked_manifests.contains(&(repo.clone(), manifest.digest.clone()));
            for reference in ["latest".to_string(), manifest.digest.to_string()] {
                let seen = check_manifest(&client, &server, repo, &reference, manifest).await;
                let ok = seen == "exact" || (!acked && seen == "404 MANIFEST_UNKNOWN");
                failures += usize::from(!ok);
                report.push(format!(
                    "{} manifest {repo}:{reference} (acknowledged: {acked}): {seen}",
                    if ok { "ok " } else { "BAD" },
                ));
            }
        }
    }
    assert!(
        failures == 0,
        "after the restart:\n{}\nserver log:\n{}",
        report.join("\n"),
        server.log()
    );

    // A client retries what was not acknowledged; leftovers of the crash must not get in the way.
    for plan in &plans {
        let repo = &plan.repo;
        let blobs = std::iter::once(&plan.blob).chain(plan.image.as_ref().map(|(c, _)| c));
        for blob in blobs {
            if !acked_blobs.contains(&(repo.clone(), blob.digest.clone())) {
                let url = server.url(&format!("/v2/{repo}/blobs/uploads/?digest={}", blob.digest));
                let r = client
                    .post(&url)
                    .body(blob.bytes.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    r.status().as_u16(),
                    201,
                    "retry of {}: {}",
                    blob.digest,
                    r.text().await.unwrap()
                );
                assert_eq!(check_blob(&client, &server, repo, blob).await, "exact");
            }
        }
        if let Some((_, manifest)) = &plan.image {
            let r = client
                .put(server.url(&format!("/v2/{repo}/manifests/latest")))
                .header(CONTENT_TYPE, OCI_MANIFEST)
                .body(manifest.bytes.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status().as_u16(),
                201,
                "manifest retry in {repo}: {}",
                r.text().await.unwrap()
            );
            assert_eq!(
                check_manifest(&client, &server, repo, "latest", manifest).await,
                "exact"
            );
        }
    }
    assert!(
        !server.log().contains("panicked"),
        "server log:\n{}",
        server.log()
    );
    println!("crash test took {:?}", started.elapsed());
}

#[tokio::test]
async fn upload_session_survives_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = Server::start(&data, &[]);
    let client = client();
    let blob = Blob::new(Prng::new(77).bytes((5 << 20) + 12345));
    let first = 3 << 20;

    let r = client
        .post(server.url("/v2/crash/session/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let path = r.headers()[LOCATION].to_str().unwrap().to_string();
    let r = client
        .patch(absolute(&server.url(""), &path))
        .header(CONTENT_TYPE, OCTETS)
        .header(CONTENT_RANGE, format!("0-{}", first - 1))
        .body(blob.bytes.slice(..first))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let path = r.headers()[LOCATION].to_str().unwrap().to_string();
    assert!(
        server.terminate().success(),
        "server log:\n{}",
        server.log()
    );

    let server = Server::start(&data, &[]);
    let loc = absolute(&server.url(""), &path);
    let r = client.get(&loc).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204, "{}", server.log());
    assert_eq!(
        r.headers()[RANGE].to_str().unwrap(),
        format!("0-{}", first - 1)
    );
    let loc = absolute(&server.url(""), r.headers()[LOCATION].to_str().unwrap());
    let len = blob.bytes.len();
    let r = client
        .patch(&loc)
        .header(CONTENT_TYPE, OCTETS)
        .header(CONTENT_RANGE, format!("{first}-{}", len - 1))
        .body(blob.bytes.slice(first..))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap());
    assert_eq!(
        r.headers()[RANGE].to_str().unwrap(),
        format!("0-{}", len - 1)
    );
    let loc = absolute(&server.url(""), r.headers()[LOCATION].to_str().unwrap());
    let r = client
        .put(with_query(&loc, "digest", &blob.digest.to_string()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    assert_eq!(
        check_blob(&client, &server, "crash/session", &blob).await,
        "exact"
    );
}

/// SIGTERM while a push is mid-body: the server lets that request finish (202 with every
/// byte), then exits cleanly, and the bytes are in the session after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_request_in_flight_finish() {
    const PIECE: usize = 1 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = Server::start(&data, &[]);
    let client = client();
    let base = server.url("");
    let r = client
        .post(server.url("/v2/term/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let loc = absolute(&base, r.headers()[LOCATION].to_str().unwrap());

    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    let patch = tokio::spawn(
        client
            .patch(&loc)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap_stream(body))
            .send(),
    );
    tx.send(Bytes::from(vec![1u8; PIECE])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.signal_term();
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.send(Bytes::from(vec![2u8; PIECE])).await.unwrap();
    drop(tx);
    let r = patch.await.unwrap().unwrap();
    assert_eq!(r.status().as_u16(), 202, "the request in flight finishes");
    assert_eq!(
        r.headers()[RANGE].to_str().unwrap(),
        format!("0-{}", 2 * PIECE - 1)
    );
    let status = tokio::task::spawn_blocking(move || (server.wait(), server))
        .await
        .unwrap();
    assert!(status.0.success(), "clean exit, got {}", status.0);
    drop(status.1);

    let server = Server::start(&data, &[]);
    let r = client
        .get(server.url(loc.strip_prefix(&base).unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(
        r.headers()[RANGE].to_str().unwrap(),
        format!("0-{}", 2 * PIECE - 1)
    );
}
