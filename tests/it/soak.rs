//! Garbage collection under load, against the real binary: 16 pushers of images that share
//! layers, a loop that moves and deletes tags, and a collection every second with a 5-second
//! grace. Afterwards every acknowledged tag pulls and every blob hashes to its digest; no
//! push ever saw `MANIFEST_BLOB_UNKNOWN` or a 5xx.
//!
//! It runs for 15 seconds in the suite; `BERTH_SOAK_SECS=600 cargo test soak` runs it for
//! ten minutes (run before changing anything in `core/gc`).
//!
//! Also: `berth gc` killed with SIGKILL in the middle of its sweep leaves no record without
//! its file, and the next run removes what the killed one left.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth::oci::Digest;

use crate::common::blob_files;
use crate::common::net::client;
use crate::common::{OCI_MANIFEST, Server};

const PUSHERS: usize = 16;
/// Layers every pusher draws from, so that pushes share blobs.
const SHARED: usize = 8;

fn layer(n: usize) -> Vec<u8> {
    format!("shared layer {n} ").repeat(200).into_bytes()
}

#[derive(Default)]
struct Tally {
    pushed: usize,
    blob_unknown: usize,
    server_errors: Vec<String>,
    /// Tags acknowledged and not deleted since, with their manifest.
    live: HashMap<String, (String, Vec<u8>)>,
}

async fn push_image(
    server: &Server,
    c: &reqwest::Client,
    repo: &str,
    tag: &str,
    blobs: &[Vec<u8>],
    tally: &Mutex<Tally>,
) -> Option<Vec<u8>> {
    let mut descriptors = Vec::new();
    for b in blobs {
        let d = Digest::sha256_of(b);
        let head = c
            .head(server.url(&format!("/v2/{repo}/blobs/{d}")))
            .send()
            .await
            .ok()?;
        if head.status().as_u16() != 200 {
            let r = c
                .post(server.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")))
                .body(b.clone())
                .send()
                .await
                .ok()?;
            let s = r.status().as_u16();
            if s >= 500 {
                tally
                    .lock()
                    .unwrap()
                    .server_errors
                    .push(format!("blob upload: {s}"));
                return None;
            }
            assert_eq!(s, 201, "blob upload");
        }
        descriptors.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": d, "size": b.len()}));
    }
    let config = descriptors.remove(0);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config["digest"], "size": config["size"]},
        "layers": descriptors}))
    .unwrap();
    let r = c
        .put(server.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    let body = r.bytes().await.unwrap_or_default();
    let mut t = tally.lock().unwrap();
    match status {
        201 => {
            t.pushed += 1;
            Some(manifest)
        }
        s if s >= 500 => {
            t.server_errors.push(format!("manifest put: {s}"));
            None
        }
        _ => {
            if String::from_utf8_lossy(&body).contains("MANIFEST_BLOB_UNKNOWN") {
                t.blob_unknown += 1;
            }
            panic!(
                "manifest push refused: {status} {}",
                String::from_utf8_lossy(&body)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collections_every_second_lose_nothing_under_pushes() {
    let secs: u64 = std::env::var("BERTH_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let tmp = tempfile::tempdir().unwrap();
    let server = Arc::new(Server::start(
        &tmp.path().join("data"),
        &[
            ("BERTH_GC__INTERVAL", "1"),
            ("BERTH_GC__GRACE", "5"),
            ("BERTH_GC__UNTAGGED_GRACE", "5"),
        ],
    ));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for p in 0..PUSHERS {
        let (server, tally) = (server.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut n = 0usize;
            while Instant::now() < until {
                // A config of its own, two shared layers, one new layer.
                let blobs = vec![
                    format!("{{\"pusher\":{p},\"n\":{n}}}").into_bytes(),
                    layer((p + n) % SHARED),
                    layer((p * 3 + n) % SHARED),
                    format!("layer of {p} number {n}").into_bytes(),
                ];
                let repo = format!("soak/r{}", p % 4);
                let tag = format!("p{p}-{n}");
                if let Some(m) = push_image(&server, &c, &repo, &tag, &blobs, &tally).await {
                    tally
                        .lock()
                        .unwrap()
                        .live
                        .insert(format!("{repo}:{tag}"), (repo.clone(), m));
                }
                n += 1;
            }
        }));
    }
    // Move and delete tags while the pushes go on: what loses its last tag becomes garbage.
    let (s, t) = (server.clone(), tally.clone());
    tasks.push(tokio::spawn(async move {
        let c = client();
        let mut round = 0usize;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let victim = {
                let t = t.lock().unwrap();
                let mut keys: Vec<&String> = t.live.keys().collect();
                keys.sort();
                keys.get(round % keys.len().max(1)).map(|k| (*k).clone())
            };
            round += 7;
            let Some(key) = victim else { continue };
            let (repo, tag) = key.split_once(':').unwrap();
            let r = c
                .delete(s.url(&format!("/v2/{repo}/manifests/{tag}")))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            assert!(status == 202 || status == 404, "tag delete: {status}");
            t.lock().unwrap().live.remove(&key);
        }
    }));
    for task in tasks {
        task.await.unwrap();
    }

    // Every task has ended: take the tally out of its lock.
    let t = std::mem::take(&mut *tally.lock().unwrap());
    assert!(t.server_errors.is_empty(), "{:?}", t.server_errors);
    assert_eq!(t.blob_unknown, 0);
    assert!(t.pushed > 50, "only {} pushes", t.pushed);
    // Every acknowledged tag that was not deleted pulls whole: its manifest byte for byte,
    // and every blob it references (each checked once per repository) hashing to its digest.
    use futures_util::StreamExt as _;
    let c = client();
    let mut blobs: std::collections::BTreeSet<(String, String)> = Default::default();
    for (repo, manifest) in t.live.values() {
        let m: serde_json::Value = serde_json::from_slice(manifest).unwrap();
        blobs.insert((repo.clone(), m["config"]["digest"].as_str().unwrap().into()));
        for l in m["layers"].as_array().unwrap() {
            blobs.insert((repo.clone(), l["digest"].as_str().unwrap().into()));
        }
    }
    let manifests = futures_util::stream::iter(t.live.iter().map(|(key, (repo, manifest))| {
        let (c, tag) = (c.clone(), key.split_once(':').unwrap().1.to_string());
        let url = server.url(&format!("/v2/{repo}/manifests/{tag}"));
        async move {
            let r = c.get(url).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200, "{key}");
            assert_eq!(&r.bytes().await.unwrap()[..], &manifest[..], "{key}");
        }
    }))
    .buffer_unordered(16)
    .count();
    let blob_checks = futures_util::stream::iter(blobs.iter().map(|(repo, d)| {
        let c = c.clone();
        let url = server.url(&format!("/v2/{repo}/blobs/{d}"));
        async move {
            let r = c.get(url).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200, "{repo}: {d}");
            let got = Digest::sha256_of(&r.bytes().await.unwrap());
            assert_eq!(&got.to_string(), d, "{repo}");
        }
    }))
    .buffer_unordered(16)
    .count();
    let (checked_manifests, checked_blobs) = tokio::join!(manifests, blob_checks);
    assert_eq!(checked_manifests, t.live.len());
    // The collections ran, and removed what the deletions left.
    let db = rusqlite::Connection::open_with_flags(
        server.data_dir.join("berth.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let (runs, manifests, blobs): (i64, i64, i64) = db
        .query_row(
            "SELECT count(*), sum(json_array_length(report, '$.manifests')),
                    sum(json_array_length(report, '$.blobs'))
             FROM gc_runs WHERE dry_run = 0",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    // A run starts a second after the last one ended; as the registry grows, runs take
    // longer (ten minutes of pushes leave tens of thousands of tags), so count loosely.
    assert!(runs >= (secs as i64 / 10).max(3), "{runs} runs in {secs} s");
    assert!(
        manifests > 0 && blobs > 0,
        "{manifests} manifests, {blobs} blobs removed"
    );
    eprintln!(
        "{} pushes, {} tags alive at the end ({checked_blobs} blobs checked), {runs} collections removed {manifests} manifests and {blobs} blobs, over {secs} s",
        t.pushed,
        t.live.len()
    );
}

fn blob_rows(data: &Path) -> Vec<String> {
    let db = rusqlite::Connection::open_with_flags(
        data.join("berth.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut st = db
        .prepare("SELECT digest FROM blobs ORDER BY digest")
        .unwrap();
    st.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|d| d.unwrap().split_once(':').unwrap().1.to_string())
        .collect()
}

#[tokio::test]
async fn a_sweep_killed_midway_leaves_no_record_without_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = Server::start(&data, &[("BERTH_GC__ENABLED", "false")]);
    let c = client();
    // One image that must survive, and 3,000 blobs nothing references.
    let keep = b"kept layer".to_vec();
    let kd = Digest::sha256_of(&keep);
    let cfg = b"{}".to_vec();
    let cd = Digest::sha256_of(&cfg);
    for (d, b) in [(&kd, &keep), (&cd, &cfg)] {
        let r = c
            .post(server.url(&format!("/v2/k/blobs/uploads/?digest={d}")))
            .body(b.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": kd, "size": keep.len()}]}))
    .unwrap();
    let r = c
        .put(server.url("/v2/k/manifests/v1"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    use futures_util::StreamExt as _;
    let statuses: Vec<u16> = futures_util::stream::iter(0..3000)
        .map(|i| {
            let c = c.clone();
            let b = format!("garbage {i}").into_bytes();
            let url = server.url(&format!(
                "/v2/g/blobs/uploads/?digest={}",
                Digest::sha256_of(&b)
            ));
            async move { c.post(url).body(b).send().await.unwrap().status().as_u16() }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 201));
    server.terminate();
    std::thread::sleep(Duration::from_millis(1100));
    let total = blob_files(&data).len();
    assert_eq!(total, 3002);

    // Kill the collector as soon as files start to go.
    let mut gc = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["--data-dir", data.to_str().unwrap(), "gc"])
        .env("BERTH_GC__GRACE", "0")
        .env_remove("BERTH_CONFIG")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut killed_at = None;
    while started.elapsed() < Duration::from_secs(60) {
        let n = blob_files(&data).len();
        if n < total {
            gc.kill().unwrap();
            killed_at = Some(n);
            break;
        }
        if gc.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = gc.wait();
    let killed_at = killed_at.expect("the collection ended before any file went");
    let (files, rows) = (blob_files(&data), blob_rows(&data));
    eprintln!(
        "killed with {killed_at} files left; then {} files, {} records",
        files.len(),
        rows.len()
    );
    assert!(files.len() > 2, "the run was not interrupted");
    for r in &rows {
        assert!(
            files.binary_search(r).is_ok(),
            "record {r} without its file"
        );
    }

    // The next run finishes the job; the image still pulls.
    let out = crate::common::cmd::run(
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["--data-dir", data.to_str().unwrap(), "gc"])
            .env("BERTH_GC__GRACE", "0")
            .env_remove("BERTH_CONFIG"),
    );
    assert!(out.contains("removed"), "{out}");
    let mut want = vec![kd.hex().to_string(), cd.hex().to_string()];
    want.sort();
    assert_eq!(blob_files(&data), want);
    assert_eq!(blob_rows(&data), want);
    let server = Server::start(&data, &[("BERTH_GC__ENABLED", "false")]);
    let r = c
        .get(server.url(&format!("/v2/k/blobs/{kd}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}
