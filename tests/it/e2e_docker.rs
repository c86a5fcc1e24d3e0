//! The Docker daemon against the real binary: push, pull and run a busybox image, and push a
//! 600 MB layer. Loopback registries are insecure-allowed by default, so plain HTTP works.
//!
//! The docker calls block the test's thread; nothing else runs on its runtime meanwhile (the
//! server is another process), so that is harmless.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use berth::oci::Digest;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};

use crate::common::cmd::{output, pipe, run, run_to_file};
use crate::common::net::{client, fetch_hashed};
use crate::common::{ADMIN_PASSWORD, DOCKER_MANIFEST, Server, require_tool};

/// The docker CLI, after checking once that the daemon answers.
fn docker_cli() -> &'static Path {
    static CLI: OnceLock<PathBuf> = OnceLock::new();
    CLI.get_or_init(|| {
        let docker = require_tool("docker");
        let out = output(Command::new(&docker).arg("info"));
        assert!(
            out.status.success(),
            "`docker info` failed, so the Docker daemon is not usable; these tests need it \
             (start dockerd, or run as a member of the docker group):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        docker
    })
}

fn docker(args: &[&str]) -> String {
    run(Command::new(docker_cli()).args(args))
}

/// Image references this test created; removed from the daemon however the test ends, and
/// the registry logged out of.
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = Command::new("docker")
                .args(["rmi", "--force", image])
                .output();
            if let Some((host, _)) = image.split_once('/') {
                let _ = Command::new("docker").args(["logout", host]).output();
            }
        }
    }
}

/// `docker login HOST -u USER --password-stdin`.
pub fn login(host: &str, user: &str, secret: &str) -> String {
    pipe(
        Command::new("printf").arg("%s").arg(secret),
        Command::new(docker_cli()).args(["login", host, "-u", user, "--password-stdin"]),
    )
}

/// A repository name no other run uses, so parallel runs and leftovers never collide.
fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("e2e/{prefix}-{}-{nanos}", std::process::id())
}

/// A root filesystem with a static busybox as `/bin/busybox` and `/bin/sh`.
fn busybox_rootfs(root: &Path) {
    let bin = root.join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy(require_tool("busybox"), bin.join("busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", bin.join("sh")).unwrap();
}

/// `tar -C root -c . | docker import - image`
fn import(root: &Path, image: &str) {
    pipe(
        Command::new(require_tool("tar"))
            .arg("-C")
            .arg(root)
            .args(["-c", "."]),
        Command::new(docker_cli()).args(["import", "-", image]),
    );
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
    docker_cli();
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let root = tmp.path().join("rootfs");
    busybox_rootfs(&root);
    let repo = unique("busybox");
    let image = format!("{}/{repo}:1", server.host());
    let _cleanup = Images(vec![image.clone()]);

    import(&root, &image);
    login(&server.host(), "admin", ADMIN_PASSWORD);
    docker(&["push", &image]);
    stored_manifest(&server, &repo, "1").await;
    docker(&["rmi", &image]);
    assert!(
        !output(Command::new(docker_cli()).args(["image", "inspect", &image]))
            .status
            .success(),
        "the image should be gone from the daemon before the pull"
    );
    docker(&["pull", &image]);
    let out = docker(&["run", "--rm", &image, "/bin/busybox", "echo", "hello"]);
    assert_eq!(out.trim(), "hello");
}

#[tokio::test]
async fn docker_pushes_a_600_mb_layer() {
    docker_cli();
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
    let _cleanup = Images(vec![image.clone()]);
    import(&root, &image);
    // The daemon has its own copy now.
    fs::remove_file(root.join("random.bin")).unwrap();

    let started = Instant::now();
    login(&server.host(), "admin", ADMIN_PASSWORD);
    docker(&["push", &image]);
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
    docker(&["rmi", &image]);
}
