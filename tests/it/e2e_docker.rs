//! The Docker daemon against the real binary: push, pull and run a busybox image, and push a
//! 600 MB layer (helpers in `common::docker`).

use std::fs;
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use berth::oci::Digest;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};

use crate::common::cmd::run_to_file;
use crate::common::docker::{Docker, busybox_rootfs};
use crate::common::net::{client, fetch_hashed};
use crate::common::{ADMIN_PASSWORD, DOCKER_MANIFEST, Server, require_tool};

/// A repository name no other run uses, so parallel runs and leftovers never collide.
fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("e2e/{prefix}-{}-{nanos}", std::process::id())
}

/// The image manifest stored under `repo:tag`, which must be a Docker schema2 manifest.
async fn stored_manifest(server: &Server, repo: &str, tag: &str) -> serde_json::Value {
    let resp = client()
        .get(server.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header(ACCEPT, DOCKER_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers().get(CONTENT_TYPE).unwrap().to_str().unwrap(),
        DOCKER_MANIFEST
    );
    serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap()
}

#[tokio::test]
async fn docker_pushes_pulls_and_runs_busybox() {
    let mut docker = Docker::new();
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let root = tmp.path().join("rootfs");
    busybox_rootfs(&root);
    let repo = unique("busybox");
    let image = format!("{}/{repo}:1", server.host());

    docker.import(&root, &image);
    docker.login(&server.host(), "admin", ADMIN_PASSWORD);
    docker.run(&["push", &image]);
    stored_manifest(&server, &repo, "1").await;
    docker.run(&["rmi", &image]);
    assert!(
        !docker.has_image(&image),
        "the image should be gone from the daemon before the pull"
    );
    docker.run(&["pull", &image]);
    let out = docker.run(&["run", "--rm", &image, "/bin/busybox", "echo", "hello"]);
    assert_eq!(out.trim(), "hello");
}

#[tokio::test]
async fn docker_pushes_a_600_mb_layer() {
    let mut docker = Docker::new();
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let root = tmp.path().join("rootfs");
    fs::create_dir_all(&root).unwrap();
    run_to_file(
        Command::new(require_tool("head")).args(["-c", "600M", "/dev/urandom"]),
        &root.join("random.bin"),
    );
    let repo = unique("big");
    let image = format!("{}/{repo}:1", server.host());
    docker.import(&root, &image);
    // The daemon has its own copy now.
    fs::remove_file(root.join("random.bin")).unwrap();

    let started = Instant::now();
    docker.login(&server.host(), "admin", ADMIN_PASSWORD);
    docker.run(&["push", &image]);
    println!("docker push of a 600 MB layer: {:?}", started.elapsed());

    let m = stored_manifest(&server, &repo, "1").await;
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{m}");
    let digest = Digest::parse(layers[0]["digest"].as_str().unwrap()).unwrap();
    let size = layers[0]["size"].as_u64().unwrap();
    assert!(
        size > 600 << 20,
        "random data does not compress: {size} bytes"
    );

    let url = server.url(&format!("/v2/{repo}/blobs/{digest}"));
    let head = client().head(&url).send().await.unwrap();
    assert_eq!(head.status().as_u16(), 200);
    assert_eq!(
        head.headers()
            .get(CONTENT_LENGTH)
            .unwrap()
            .to_str()
            .unwrap(),
        size.to_string()
    );
    let got = fetch_hashed(&client(), &url).await;
    assert_eq!(got.status, 200, "{}", got.error_body);
    assert_eq!(got.len, size);
    assert_eq!(got.digest, Some(digest));
    docker.run(&["rmi", &image]);
}
