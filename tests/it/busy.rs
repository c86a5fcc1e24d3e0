//! Another process holding the database's write lock (a backup tool, a stuck script, an
//! administrator's sqlite3 shell): writes are answered 503 with Retry-After once the busy
//! timeout passes, never 500, and reads, robot pulls and logins do not wait for it.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::net::client;
use crate::common::{ADMIN_PASSWORD, Server, basic, require_tool};

/// How long the other process holds the lock: longer than berth's busy timeout (10 s).
const HOLD_SECS: u64 = 14;

#[tokio::test]
async fn a_write_lock_held_elsewhere_is_a_503_for_pushes_and_nothing_for_pulls() {
    let python = require_tool("python3");
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let c = client();
    let admin = basic("admin", ADMIN_PASSWORD);
    // Something to pull: a blob and a manifest, and a pull-only robot token.
    let blob = b"layer bytes";
    let d = berth::oci::Digest::sha256_of(blob);
    assert_eq!(start_upload(&c, &server, &admin, Some(blob)).await.0, 201);
    let cfg = berth::oci::Digest::sha256_of(b"{}");
    assert_eq!(start_upload(&c, &server, &admin, Some(b"{}")).await.0, 201);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg.to_string(), "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.to_string(), "size": blob.len()}],
    });
    let r = c
        .put(server.url("/v2/busy/app/manifests/v1"))
        .header("authorization", &admin)
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let robot = server.admin(&[
        "token",
        "create",
        "--user",
        "admin",
        "--name",
        "puller",
        "--scope",
        "busy/*:pull",
    ]);
    let robot = basic("puller", robot.trim());
    server.admin_with_stdin(
        &["user", "add", "dev", "--password-stdin"],
        "dev-password\n",
    );
    server.admin(&["user", "grant", "dev", "busy/*", "pull"]);

    // Another process takes the write lock and holds it.
    let db = server.data_dir.join("berth.db");
    let script = format!(
        "import sqlite3, sys, time\n\
         c = sqlite3.connect({db:?}, isolation_level=None)\n\
         c.execute('BEGIN IMMEDIATE')\n\
         print('locked', flush=True)\n\
         time.sleep({HOLD_SECS})\n\
         c.execute('COMMIT')\n",
        db = db.display().to_string()
    );
    let mut holder = Command::new(python)
        .arg("-c")
        .arg(script)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    let locked_at = Instant::now();

    // Pulls, a robot's first use and a first password login are not held up.
    for (who, auth) in [
        ("robot", &robot),
        ("password", &basic("dev", "dev-password")),
    ] {
        for path in [
            "/v2/busy/app/manifests/v1".to_string(),
            format!("/v2/busy/app/blobs/{d}"),
            "/v2/busy/app/tags/list".to_string(),
        ] {
            let t = Instant::now();
            let r = c
                .get(server.url(&path))
                .header("authorization", auth.as_str())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200, "{who} GET {path}");
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "{who} GET {path} waited {:?}",
                t.elapsed()
            );
        }
    }
    // A push waits at most the busy timeout, then is told to come back.
    let (status, retry_after, body) = start_upload(&c, &server, &admin, None).await;
    assert!(
        locked_at.elapsed() < Duration::from_secs(HOLD_SECS),
        "the lock was released first"
    );
    assert_eq!(status, 503);
    assert_eq!(retry_after.as_deref(), Some("5"));
    assert_eq!(body["errors"][0]["code"], "UNAVAILABLE");
    assert!(holder.wait().unwrap().success());
    // Once the lock is gone, pushes go through again.
    assert_eq!(start_upload(&c, &server, &admin, None).await.0, 202);
    assert!(!server.log().contains("internal error"), "{}", server.log());
}

/// `POST /v2/busy/app/blobs/uploads/`, monolithic when `blob` is given: status, Retry-After
/// and the body as JSON (null when it is not JSON).
async fn start_upload(
    c: &reqwest::Client,
    server: &Server,
    auth: &str,
    blob: Option<&[u8]>,
) -> (u16, Option<String>, serde_json::Value) {
    let mut url = server.url("/v2/busy/app/blobs/uploads/");
    let mut req = c.post(&url).header("authorization", auth);
    if let Some(b) = blob {
        url = format!("{url}?digest={}", berth::oci::Digest::sha256_of(b));
        req = c.post(&url).header("authorization", auth).body(b.to_vec());
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let body = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or_default();
    (status, retry, body)
}
