//! skopeo against the real binary: an OCI image and a Docker schema2 image pushed and pulled
//! back unchanged, tags listed, a manifest deleted.
//!
//! The skopeo calls block the test's thread; nothing else runs on its runtime meanwhile (the
//! server is another process), so that is harmless.

use std::path::Path;
use std::process::Command;

use berth::oci::Digest;
use reqwest::header::{ACCEPT, CONTENT_TYPE};

use crate::common::cmd::run;
use crate::common::images::{Image, read_dir_image, read_oci_layout, write_oci_layout};
use crate::common::net::{client, error_code};
use crate::common::{DOCKER_MANIFEST, OCI_MANIFEST, Server, require_tool};

// The administrator `Server` starts with (`common::ADMIN_PASSWORD`).
const CREDS: &str = "--creds=admin:test-admin-password";
const SRC_CREDS: &str = "--src-creds=admin:test-admin-password";
const DEST_CREDS: &str = "--dest-creds=admin:test-admin-password";

const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// `skopeo --insecure-policy ARGS` (no /etc/containers/policy.json needed); panics on failure.
fn skopeo(args: &[&str]) -> String {
    run(Command::new(require_tool("skopeo"))
        .arg("--insecure-policy")
        .args(args))
}

fn oci_ref(dir: &Path, tag: &str) -> String {
    format!("oci:{}:{tag}", dir.display())
}

/// A stored manifest as the registry serves it.
struct Served {
    status: u16,
    content_type: String,
    digest_header: String,
    body: Vec<u8>,
}

async fn get_manifest(server: &Server, repo: &str, reference: &str) -> Served {
    let resp = client()
        .get(server.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header(ACCEPT, format!("{OCI_MANIFEST}, {DOCKER_MANIFEST}"))
        .send()
        .await
        .unwrap();
    let header = |name| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    Served {
        status: resp.status().as_u16(),
        content_type: header(CONTENT_TYPE.as_str()),
        digest_header: header("docker-content-digest"),
        body: resp.bytes().await.unwrap().to_vec(),
    }
}

/// The manifest is served with `media_type`, exactly the bytes of `digest`.
#[track_caller]
fn assert_served(m: &Served, media_type: &str, digest: &Digest) {
    assert_eq!(
        m.status,
        200,
        "manifest GET failed: {}",
        String::from_utf8_lossy(&m.body)
    );
    assert_eq!(m.content_type, media_type);
    assert_eq!(m.digest_header, digest.to_string());
    assert_eq!(&Digest::sha256_of(&m.body), digest, "served bytes differ");
}

#[track_caller]
fn assert_manifest_unknown(m: &Served) {
    assert_eq!(
        (m.status, error_code(&m.body)),
        (404, "MANIFEST_UNKNOWN".to_string()),
        "body: {}",
        String::from_utf8_lossy(&m.body)
    );
}

fn list_tags(server: &Server, repo: &str) -> Vec<String> {
    let out = skopeo(&[
        "list-tags",
        "--tls-verify=false",
        CREDS,
        &format!("docker://{}/{repo}", server.host()),
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Repository"], format!("{}/{repo}", server.host()));
    let mut tags: Vec<String> = serde_json::from_value(v["Tags"].clone()).unwrap();
    tags.sort();
    tags
}

#[tokio::test]
async fn skopeo_round_trips_an_oci_image() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let src = tmp.path().join("src");
    let pushed = write_oci_layout(&src, "v1", 1);
    let dest = format!("docker://{}/e2e/oci:v1", server.host());

    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        DEST_CREDS,
        &oci_ref(&src, "v1"),
        &dest,
    ]);
    assert_served(
        &get_manifest(&server, "e2e/oci", "v1").await,
        OCI_MANIFEST,
        &pushed.manifest,
    );

    let back = tmp.path().join("back");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        SRC_CREDS,
        &dest,
        &oci_ref(&back, "v1"),
    ]);
    let pulled = read_oci_layout(&back, "v1");
    assert_eq!(pulled, pushed, "the image came back different");
}

#[tokio::test]
async fn skopeo_round_trips_a_docker_schema2_image() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let src = tmp.path().join("src");
    let original = write_oci_layout(&src, "v1", 2);
    let dest = format!("docker://{}/e2e/docker:v1", server.host());

    skopeo(&[
        "copy",
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
        DEST_CREDS,
        &oci_ref(&src, "v1"),
        &dest,
    ]);
    let served = get_manifest(&server, "e2e/docker", "v1").await;
    let stored = Digest::sha256_of(&served.body);
    assert_served(&served, DOCKER_MANIFEST, &stored);
    let m: serde_json::Value = serde_json::from_slice(&served.body).unwrap();
    assert_eq!(m["mediaType"], DOCKER_MANIFEST);
    assert_eq!(m["config"]["mediaType"], DOCKER_CONFIG);
    let layers = m["layers"].as_array().unwrap();
    assert!(layers.iter().all(|l| l["mediaType"] == DOCKER_LAYER), "{m}");

    let back = tmp.path().join("back");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        SRC_CREDS,
        &dest,
        &format!("dir:{}", back.display()),
    ]);
    let pulled: Image = read_dir_image(&back);
    assert_eq!(
        pulled.manifest, stored,
        "skopeo pulled other manifest bytes"
    );
    assert_eq!(
        pulled.layers, original.layers,
        "conversion to schema2 keeps the gzip layers as they are"
    );
}

#[tokio::test]
async fn skopeo_lists_tags_and_deletes_a_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let image_a = write_oci_layout(&a, "latest", 3);
    let image_b = write_oci_layout(&b, "latest", 4);
    let repo = "e2e/tags";
    for (dir, tag) in [(&a, "v1"), (&a, "v2"), (&b, "v3")] {
        skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            DEST_CREDS,
            &oci_ref(dir, "latest"),
            &format!("docker://{}/{repo}:{tag}", server.host()),
        ]);
    }
    assert_eq!(list_tags(&server, repo), ["v1", "v2", "v3"]);

    skopeo(&[
        "delete",
        "--tls-verify=false",
        CREDS,
        &format!("docker://{}/{repo}:v3", server.host()),
    ]);
    assert_manifest_unknown(&get_manifest(&server, repo, "v3").await);
    assert_manifest_unknown(&get_manifest(&server, repo, &image_b.manifest.to_string()).await);
    // The other image, under its two tags, is untouched.
    assert_eq!(list_tags(&server, repo), ["v1", "v2"]);
    for tag in ["v1", "v2"] {
        assert_served(
            &get_manifest(&server, repo, tag).await,
            OCI_MANIFEST,
            &image_a.manifest,
        );
    }
}
