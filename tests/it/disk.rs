//! Running out of room: the per-credential cap on upload sessions (router), and a full file
//! system under the real binary (a 64 MiB tmpfs the test mounts; needs root, as CI has).

use std::process::Command;

use axum::body::Body;
use berth::oci::Digest;

use crate::common::cmd::run;
use crate::common::containers::Clients;
use crate::common::images::write_oci_layout;
use crate::common::net::client;
use crate::common::tmpfs::Tmpfs;
use crate::common::{ADMIN_PASSWORD, Server, TestApp};

#[tokio::test]
async fn a_credential_opening_sessions_in_a_loop_stops_at_its_cap() {
    let app = TestApp::with_config(|c| c.limits.max_upload_sessions = 5);
    let ci = app.user("ci", &[("**", "pull,push")]);
    let post = |auth: String| {
        let app = &app;
        async move {
            app.call(
                "POST",
                "/v2/r/blobs/uploads/",
                &[("authorization", auth.as_str())],
                Body::empty(),
            )
            .await
        }
    };
    let mut locations = Vec::new();
    for _ in 0..5 {
        let r = post(ci.clone()).await;
        r.assert(202);
        locations.push(r.header("location").unwrap().to_string());
    }
    let r = post(ci.clone()).await;
    r.assert_error(429, "TOOMANYREQUESTS");
    let msg = r.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("\"ci\" has 5 upload sessions open"), "{msg}");
    // The refusal left no file behind.
    let files = std::fs::read_dir(app.dir.path().join("uploads"))
        .unwrap()
        .count();
    assert_eq!(files, 5);
    // Other credentials are not affected.
    app.call("POST", "/v2/r/blobs/uploads/", &[], Body::empty())
        .await
        .assert(202);
    // Cancelling one makes room again.
    app.call(
        "DELETE",
        &locations[0],
        &[("authorization", ci.as_str())],
        Body::empty(),
    )
    .await
    .assert(204);
    post(ci.clone()).await.assert(202);
    post(ci.clone()).await.assert_error(429, "TOOMANYREQUESTS");
    // Sessions idle past the upload expiry no longer count, even before a collection.
    app.clock.advance(24 * 3600 + 1);
    post(ci).await.assert(202);
}

const MIB: usize = 1 << 20;

async fn post_blob(server: &Server, repo: &str, bytes: Vec<u8>) -> (u16, Digest) {
    let d = Digest::sha256_of(&bytes);
    let r = client()
        .post(server.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")))
        .body(bytes)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), d)
}

async fn json(r: reqwest::Response) -> serde_json::Value {
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

async fn get(server: &Server, path: &str) -> reqwest::Response {
    client().get(server.url(path)).send().await.unwrap()
}

#[tokio::test]
async fn a_full_disk_refuses_uploads_clearly_and_recovers_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(&tmp.path().join("mnt"), "64m");
    let data = fs.0.join("data");
    let env = [
        ("BERTH_LIMITS__MIN_FREE_SPACE", "8MiB"),
        ("BERTH_GC__GRACE", "0"),
        ("BERTH_GC__ENABLED", "false"),
    ];
    let mut server = Server::start(&data, &env);
    let (status, kept) = post_blob(&server, "r", vec![7u8; 24 * MIB]).await;
    assert_eq!(status, 201);
    // An image holds it, so collections keep it.
    let (status, config) = post_blob(&server, "r", b"{}".to_vec()).await;
    assert_eq!(status, 201);
    let manifest = serde_json::json!({"schemaVersion":2,"mediaType":crate::common::OCI_MANIFEST,
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":config,"size":2},
        "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":kept,"size":24 * MIB}]});
    let r = client()
        .put(server.url("/v2/r/manifests/kept"))
        .header("content-type", crate::common::OCI_MANIFEST)
        .body(serde_json::to_vec(&manifest).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);

    // A streamed PATCH larger than the space left: 507, and its bytes are given back.
    let before = fs.free();
    let loc = crate::common::net::start_upload(&client(), &server.url(""), "r").await;
    let big = tmp.path().join("big");
    std::fs::write(&big, vec![1u8; 48 * MIB]).unwrap();
    let out = run(Command::new("curl").args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-u",
        &format!("admin:{ADMIN_PASSWORD}"),
        "-X",
        "PATCH",
        "-H",
        "Content-Type: application/octet-stream",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{}", big.display()),
        &loc,
    ]));
    assert_eq!(out.trim(), "507", "the PATCH that filled the disk");
    assert!(
        fs.free() + MIB as u64 >= before,
        "the failed upload's bytes were not given back: {} free before, {} after",
        before,
        fs.free()
    );
    // Its session is gone: cancelling it is answered, never with a 500.
    let r = client().delete(&loc).send().await.unwrap();
    assert!([204, 404].contains(&r.status().as_u16()), "{}", r.status());

    // An upload whose bytes all arrive before the floor is crossed...
    let pending = crate::common::net::start_upload(&client(), &server.url(""), "r").await;
    let last = b"bytes that came before the disk filled".to_vec();
    let r = client()
        .patch(&pending)
        .header("content-type", "application/octet-stream")
        .body(last.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let pending =
        crate::common::net::absolute(&server.url(""), r.headers()["location"].to_str().unwrap());

    // Fill the disk past the floor: new uploads are refused with a message clients show.
    let (status, filler) = post_blob(&server, "r", vec![9u8; 34 * MIB]).await;
    assert_eq!(status, 201, "{} free", fs.free());
    assert!(fs.free() < 8 * MIB as u64, "{} free", fs.free());
    let r = client()
        .post(server.url("/v2/r/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let body = json(r).await;
    assert_eq!(body["errors"][0]["code"], "DENIED");
    let msg = body["errors"][0]["message"].as_str().unwrap();
    assert!(msg.contains("out of space"), "{msg}");
    // ...still finishes: its final PUT brings no new byte.
    let put =
        crate::common::net::with_query(&pending, "digest", &Digest::sha256_of(&last).to_string());
    let r = client().put(&put).send().await.unwrap();
    assert_eq!(
        r.status().as_u16(),
        201,
        "an empty final PUT below the floor"
    );
    let clients = Clients::new();
    let layout = tmp.path().join("layout");
    write_oci_layout(&layout, "v1", 5);
    let refused = clients.skopeo_fails(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("--dest-creds=admin:{ADMIN_PASSWORD}"),
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{}/r/app:1", server.host()),
    ]);
    assert!(refused.contains("out of space"), "{refused}");
    let ready = get(&server, "/readyz").await;
    assert_eq!(ready.status().as_u16(), 200);
    let ready = json(ready).await;
    assert_eq!(ready["status"], "degraded");
    assert!(
        ready["uploads"].as_str().unwrap().contains("out of space"),
        "{ready}"
    );
    let base = get(&server, "/v2/").await;
    assert_eq!(base.status().as_u16(), 200);
    let warning = base.headers()["warning"].to_str().unwrap().to_string();
    assert!(warning.contains("uploads refused"), "{warning}");

    // Pulls still work.
    let r = get(&server, &format!("/v2/r/blobs/{kept}")).await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(Digest::sha256_of(&r.bytes().await.unwrap()), kept);

    // Deleting and collecting frees the space; uploads work again, same process.
    let r = client()
        .delete(server.url(&format!("/v2/r/blobs/{filler}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = run(Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["--data-dir", data.to_str().unwrap(), "gc"])
        .env_remove("BERTH_CONFIG"));
    // The filler, and the small blob finished below the floor (nothing uses it either).
    assert!(out.contains("1 blob link, 2 blobs,"), "{out}");
    assert!(fs.free() > 30 * MIB as u64, "{} free", fs.free());
    let ready = json(get(&server, "/readyz").await).await;
    assert_eq!(ready["status"], "ok");
    clients.skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("--dest-creds=admin:{ADMIN_PASSWORD}"),
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{}/r/app:1", server.host()),
    ]);
    let anon = reqwest::Client::new()
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        anon.status().as_u16(),
        200,
        "readiness needs no credentials"
    );
    server.terminate();
}

#[tokio::test]
async fn uploads_past_the_size_limit_are_refused_and_dropped() {
    let app = TestApp::with_config(|c| {
        c.limits.max_upload_size = Some(berth::config::Size::Text("1KiB".into()));
    });
    let big = vec![5u8; 2000];
    let d = Digest::sha256_of(&big);
    let r = app
        .call(
            "POST",
            &format!("/v2/r/blobs/uploads/?digest={d}"),
            &[],
            big,
        )
        .await;
    r.assert_error(413, "SIZE_INVALID");
    assert!(
        r.json()["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("larger than 1024 bytes")
    );
    // Chunk by chunk: the one that crosses the limit is refused and the session dropped.
    let loc = app.start_upload("r").await;
    app.call("PATCH", &loc, &[], vec![1u8; 600])
        .await
        .assert(202);
    app.call("PATCH", &loc, &[], vec![1u8; 600])
        .await
        .assert_error(413, "SIZE_INVALID");
    app.get(&loc).await.assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    let staged = std::fs::read_dir(app.dir.path().join("uploads"))
        .unwrap()
        .count();
    assert_eq!(staged, 0, "refused uploads leave no file");
    // Within the limit, all is as usual.
    let small = vec![6u8; 1024];
    app.push_blob("r", &small).await;
}
