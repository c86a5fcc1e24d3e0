//! `berth gc` against the real binary: through a running server's control socket, and on its
//! own when no server runs; and the Docker daemon pushing an image again after it was
//! deleted and collected (registry:2 needs a restart for that).

use std::path::Path;
use std::process::Command;

use berth::oci::Digest;

use crate::common::blob_files;
use crate::common::cmd::{expect_failure, output, run};
use crate::common::docker::{Docker, busybox_rootfs};
use crate::common::net::client;
use crate::common::{ADMIN_PASSWORD, DOCKER_MANIFEST, Server};

/// Collect at once: no grace for anything, no scheduled runs in the way.
const NOW: &[(&str, &str)] = &[
    ("BERTH_GC__GRACE", "0"),
    ("BERTH_GC__UNTAGGED_GRACE", "0s"),
    ("BERTH_GC__ENABLED", "false"),
];

fn berth_gc(data: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.arg("--data-dir")
        .arg(data)
        .arg("gc")
        .args(args)
        .env_remove("BERTH_CONFIG");
    for (k, v) in NOW {
        cmd.env(k, v);
    }
    cmd
}

async fn push_blob(server: &Server, repo: &str, bytes: &[u8]) -> Digest {
    let d = Digest::sha256_of(bytes);
    let r = client()
        .post(server.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")))
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    d
}

/// The seen-at and grace cut-offs count whole seconds: step past the current one.
fn next_second() {
    std::thread::sleep(std::time::Duration::from_millis(1100));
}

#[tokio::test]
async fn gc_through_the_server_and_without_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = Server::start(&data, NOW);
    let a = push_blob(&server, "r", b"first unreferenced blob").await;
    next_second();

    // Through the running server: the dry run lists the blob and removes nothing.
    let out = run(&mut berth_gc(&data, &["--dry-run", "--json"]));
    let dry: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["blobs"][0]["digest"], a.to_string());
    assert_eq!(blob_files(&data), vec![a.hex().to_string()]);
    let out = run(&mut berth_gc(&data, &[]));
    assert!(
        out.contains("removed 0 manifests, 1 blob link, 1 blob, 0 upload sessions"),
        "{out}"
    );
    assert!(blob_files(&data).is_empty());
    let r = client()
        .head(server.url(&format!("/v2/r/blobs/{a}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    // Without a server, the command does the work itself.
    let b = push_blob(&server, "r", b"second unreferenced blob").await;
    server.terminate();
    next_second();
    let out = run(&mut berth_gc(&data, &["--json"]));
    let real: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(real["dry_run"], false);
    assert_eq!(real["blobs"][0]["digest"], b.to_string());
    assert_eq!(real["bytes_freed"], 24);
    assert!(blob_files(&data).is_empty());

    // Two commands at once, with no server: the second waits for the first, then runs.
    let mut a = berth_gc(&data, &[]).spawn().unwrap();
    let b = berth_gc(&data, &[]).output().unwrap();
    assert!(a.wait().unwrap().success());
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));

    // A wrong data directory is one clear line, not a new empty registry.
    let missing = tmp.path().join("nothing-here");
    let mut cmd = berth_gc(&missing, &[]);
    let out = output(&mut cmd);
    let err = expect_failure(&cmd, &out);
    assert!(err.contains("no berth database"), "{err}");
    assert!(!missing.exists());
}

#[tokio::test]
async fn docker_pushes_again_after_delete_and_gc_without_a_restart() {
    let mut docker = Docker::new();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data, NOW);
    let root = tmp.path().join("rootfs");
    busybox_rootfs(&root);
    let image = format!("{}/gc/busybox:1", server.host());
    docker.import(&root, &image);
    docker.login(&server.host(), "admin", ADMIN_PASSWORD);
    docker.run(&["push", &image]);

    let head = client()
        .head(server.url("/v2/gc/busybox/manifests/1"))
        .header("accept", DOCKER_MANIFEST)
        .send()
        .await
        .unwrap();
    let digest = head.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_string();
    let del = client()
        .delete(server.url(&format!("/v2/gc/busybox/manifests/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status().as_u16(), 202);
    next_second();
    let out = run(&mut berth_gc(&data, &["--json"]));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["blobs"].as_array().unwrap().len(), 2, "{out}");
    assert!(blob_files(&data).is_empty());

    // The daemon remembers pushing these layers; the registry must make it send them again.
    docker.run(&["push", &image]);
    docker.run(&["rmi", &image]);
    docker.run(&["pull", &image]);
    let out = docker.run(&["run", "--rm", &image, "/bin/busybox", "echo", "hello"]);
    assert_eq!(out.trim(), "hello");
    assert_eq!(blob_files(&data).len(), 2);
}
