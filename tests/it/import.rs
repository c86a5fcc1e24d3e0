//! `berth import registry2` on the storage of a real registry:2 (Debian's `docker-registry`)
//! that skopeo pushed to: an OCI image, a Docker schema2 image, a two-platform index and tags
//! sharing blobs, plus what registry:2's own garbage collection leaves behind (a manifest
//! whose blob is gone, a tag pointing at nothing). Imported while berth serves; pulled back
//! with skopeo by the digests registry:2 reported.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth::oci::Digest;
use serde_json::Value;

use crate::common::cmd::{berth, expect_failure, output, run};
use crate::common::containers::Clients;
use crate::common::images::{write_oci_index_layout, write_oci_layout};
use crate::common::registry2::Registry2;
use crate::common::{ADMIN_PASSWORD, Server, require_tool};

fn import(data: &Path, source: &Path, extra: &[&str]) -> Value {
    let mut cmd = berth(data, &["import", "registry2", "--json"]);
    cmd.arg(source).args(extra);
    serde_json::from_str(&run(&mut cmd)).unwrap()
}

/// Every file under `root` with a hash of its bytes and its mode: the source must never
/// change.
fn tree(root: &Path) -> BTreeMap<PathBuf, (Digest, u32)> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<PathBuf, (Digest, u32)>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                walk(&e.path(), root, out);
            } else {
                let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
                let mode = e.metadata().unwrap().mode();
                out.insert(rel, (Digest::sha256_of(&fs::read(e.path()).unwrap()), mode));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Push with skopeo into registry:2; the manifest digest it reports.
fn push(clients: &Clients, from: &str, to: &str, extra: &[&str], scratch: &Path) -> Digest {
    let digest_file = scratch.join("digest");
    let mut args = vec!["copy", "--dest-tls-verify=false", "--digestfile"];
    let df = digest_file.to_str().unwrap().to_string();
    args.push(&df);
    args.extend_from_slice(extra);
    args.push(from);
    args.push(to);
    clients.skopeo(&args);
    Digest::parse(fs::read_to_string(&digest_file).unwrap().trim()).unwrap()
}

/// The digest berth serves for `repo:reference`, and a full pull into a folder (skopeo checks
/// every blob it receives against its digest).
fn pull_back(clients: &Clients, server: &Server, repo: &str, reference: &str, all: bool) -> Digest {
    let creds = format!("admin:{ADMIN_PASSWORD}");
    let sep = if reference.starts_with("sha256:") {
        "@"
    } else {
        ":"
    };
    let image = format!("docker://{}/{repo}{sep}{reference}", server.host());
    let raw = clients.skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        &creds,
        &image,
    ]);
    let out = tempfile::tempdir().unwrap();
    let dest = format!("dir:{}", out.path().join("img").display());
    let mut args = vec!["copy", "--src-tls-verify=false", "--src-creds", &creds];
    if all {
        args.push("--all");
    }
    args.push(&image);
    args.push(&dest);
    clients.skopeo(&args);
    Digest::sha256_of(raw.as_bytes())
}

fn missing(clients: &Clients, server: &Server, image: &str) -> String {
    let creds = format!("admin:{ADMIN_PASSWORD}");
    clients.skopeo_fails(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        &creds,
        &format!("docker://{}/{image}", server.host()),
    ])
}

fn skipped(report: &Value) -> Vec<(String, String)> {
    report["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["what"].as_str().unwrap().to_string(),
                s["why"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn imports_a_registry2_storage_directory_while_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("registry2");
    let clients = Clients::new();
    let r2 = Registry2::start(&root);
    let to = |image: &str| format!("docker://{}/{image}", r2.host());
    let scratch = tmp.path();

    // An OCI image, tagged twice and also pushed to a second repository (shared blobs).
    let oci = tmp.path().join("oci");
    write_oci_layout(&oci, "1", 101);
    let oci_src = format!("oci:{}:1", oci.display());
    let d_oci = push(&clients, &oci_src, &to("team/oci:1"), &[], scratch);
    push(&clients, &oci_src, &to("team/oci:latest"), &[], scratch);
    push(&clients, &oci_src, &to("other/oci:1"), &[], scratch);
    // A Docker schema2 image (skopeo converts the layout).
    let docker = tmp.path().join("docker");
    write_oci_layout(&docker, "1", 102);
    let docker_src = format!("oci:{}:1", docker.display());
    let d_docker = push(
        &clients,
        &docker_src,
        &to("docker/app:1"),
        &["--format", "v2s2"],
        scratch,
    );
    // A two-platform index.
    let multi = tmp.path().join("multi");
    let (_, platforms) =
        write_oci_index_layout(&multi, "m", &[("linux/amd64", 103), ("linux/arm64", 104)]);
    let multi_src = format!("oci:{}:m", multi.display());
    let d_multi = push(
        &clients,
        &multi_src,
        &to("multi/app:m"),
        &["--all"],
        scratch,
    );
    // An image whose layer registry:2's garbage collection removed, and a tag whose manifest
    // is gone altogether.
    let broken = tmp.path().join("broken");
    let broken_image = write_oci_layout(&broken, "1", 105);
    let broken_src = format!("oci:{}:1", broken.display());
    let d_broken = push(&clients, &broken_src, &to("broken/app:1"), &[], scratch);
    drop(r2);
    let v2 = Registry2::v2(&root);
    let layer = &broken_image.layers[0];
    fs::remove_dir_all(v2.join(format!(
        "blobs/sha256/{}/{}",
        &layer.hex()[..2],
        layer.hex()
    )))
    .unwrap();
    let nothing = Digest::sha256_of(b"a manifest registry:2 collected");
    let dangling = v2.join("repositories/team/oci/_manifests/tags/gone/current/link");
    fs::create_dir_all(dangling.parent().unwrap()).unwrap();
    fs::write(&dangling, nothing.to_string()).unwrap();
    // A schema1 manifest from older days, as registry:2 stored those.
    let schema1 = br#"{"schemaVersion":1,"name":"old/app","tag":"1","architecture":"amd64","fsLayers":[],"history":[],"signatures":[]}"#;
    let d_schema1 = Digest::sha256_of(schema1);
    let blob = v2.join(format!(
        "blobs/sha256/{}/{}/data",
        &d_schema1.hex()[..2],
        d_schema1.hex()
    ));
    fs::create_dir_all(blob.parent().unwrap()).unwrap();
    fs::write(&blob, schema1).unwrap();
    for link in [
        format!(
            "repositories/old/app/_manifests/revisions/sha256/{}/link",
            d_schema1.hex()
        ),
        "repositories/old/app/_manifests/tags/1/current/link".to_string(),
    ] {
        fs::create_dir_all(v2.join(&link).parent().unwrap()).unwrap();
        fs::write(v2.join(&link), d_schema1.to_string()).unwrap();
    }
    let before = tree(&root);

    let data = tmp.path().join("data");
    let mut server = Server::start(&data, &[]);
    // A dry run changes nothing and says what a run would do.
    let dry = import(&data, &root, &["--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["manifests"], 6, "{dry:#}");
    let absent = missing(&clients, &server, "team/oci:1");
    assert!(absent.contains("manifest unknown"), "{absent}");

    let report = import(&data, &root, &[]);
    // team/oci, other/oci, docker/app, multi/app (index + 2 images).
    assert_eq!(report["manifests"], 6, "{report:#}");
    // team/oci:1, team/oci:latest, other/oci:1, docker/app:1, multi/app:m.
    assert_eq!(report["tags"], 5, "{report:#}");
    assert_eq!(report["repositories"], 4, "{report:#}");
    assert_eq!(report["blobs"], dry["blobs"], "{report:#}");
    assert_eq!(report["bytes"], dry["bytes"], "{report:#}");
    // Same file system: no bytes copied.
    assert_eq!(report["linked"], report["blobs"], "{report:#}");
    assert_eq!(report["copied"], 0);
    let skipped = skipped(&report);
    let named = |what: &str| {
        skipped
            .iter()
            .find(|(w, _)| w == what)
            .map(|(_, why)| why.clone())
    };
    let why = named(&format!("broken/app@{d_broken}")).expect("the broken manifest is reported");
    assert!(
        why.contains(&layer.to_string()) && why.contains("missing"),
        "{why}"
    );
    assert!(
        named("broken/app:1").unwrap().contains("left out"),
        "{skipped:?}"
    );
    assert!(
        named("team/oci:gone").unwrap().contains("does not hold"),
        "{skipped:?}"
    );
    assert!(
        named(&format!("old/app@{d_schema1}"))
            .unwrap()
            .contains("schema1"),
        "{skipped:?}"
    );
    assert!(
        named("old/app:1").unwrap().contains("left out"),
        "{skipped:?}"
    );
    assert_eq!(skipped.len(), 5, "{skipped:?}");

    // Every good image pulls back with the digest registry:2 reported, blobs verified.
    assert_eq!(pull_back(&clients, &server, "team/oci", "1", false), d_oci);
    assert_eq!(
        pull_back(&clients, &server, "team/oci", "latest", false),
        d_oci
    );
    assert_eq!(pull_back(&clients, &server, "other/oci", "1", false), d_oci);
    assert_eq!(
        pull_back(&clients, &server, "docker/app", "1", false),
        d_docker
    );
    assert_eq!(
        pull_back(&clients, &server, "multi/app", "m", true),
        d_multi
    );
    for image in &platforms {
        let d = image.manifest.to_string();
        assert_eq!(
            pull_back(&clients, &server, "multi/app", &d, false),
            image.manifest
        );
    }
    // The broken ones are absent.
    missing(&clients, &server, "broken/app:1");
    missing(&clients, &server, &format!("broken/app@{d_broken}"));
    missing(&clients, &server, "team/oci:gone");
    // Blob files are the source's own, hard-linked.
    let config = platforms[0].config.hex().to_string();
    let linked =
        fs::metadata(data.join(format!("blobs/sha256/{}/{config}", &config[..2]))).unwrap();
    assert_eq!(linked.nlink(), 2);

    // Again: nothing to add.
    let again = import(&data, &root, &[]);
    for key in ["manifests", "tags", "blobs", "bytes"] {
        assert_eq!(again[key], 0, "{key}: {again:#}");
    }
    assert_eq!(again["present"]["manifests"], 6, "{again:#}");
    assert_eq!(again["present"]["tags"], 5, "{again:#}");
    // A restart repairs the modes of the data directory: not those of files it shares with
    // the source.
    server.terminate();
    let server = Server::start(&data, &[]);
    assert_eq!(pull_back(&clients, &server, "team/oci", "1", false), d_oci);
    assert_eq!(tree(&root), before, "the source changed");

    // A tag moved in berth since is kept unless the source is told to win.
    let creds = format!("admin:{ADMIN_PASSWORD}");
    clients.skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--src-creds",
        &creds,
        "--dest-creds",
        &creds,
        &format!("docker://{}/docker/app:1", server.host()),
        &format!("docker://{}/team/oci:latest", server.host()),
    ]);
    let kept = import(&data, &root, &[]);
    assert_eq!(kept["conflicts"][0]["what"], "team/oci:latest", "{kept:#}");
    assert_eq!(
        pull_back(&clients, &server, "team/oci", "latest", false),
        d_docker
    );
    let taken = import(&data, &root, &["--overwrite-tags"]);
    assert_eq!(taken["tags"], 1, "{taken:#}");
    assert_eq!(
        pull_back(&clients, &server, "team/oci", "latest", false),
        d_oci
    );

    // Not a registry:2 folder: one line, non-zero exit.
    let mut cmd = berth(&data, &["import", "registry2"]);
    cmd.arg(tmp.path().join("oci"));
    let out = output(&mut cmd);
    let err = expect_failure(&cmd, &out);
    assert!(err.contains("is not a registry:2 storage root"), "{err}");
}

/// Without a server, from another file system (a tmpfs): blobs are copied and verified, and
/// a blob whose bytes do not match its name is left out with its manifest.
#[tokio::test]
async fn imports_without_a_server_by_copying() {
    let shm = Path::new("/dev/shm");
    assert!(shm.is_dir(), "this test needs /dev/shm (a tmpfs)");
    let tmp = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir_in(shm).unwrap();
    let root = src.path().join("registry2");
    let clients = Clients::new();
    let r2 = Registry2::start(&root);
    let oci = tmp.path().join("oci");
    let image = write_oci_layout(&oci, "1", 201);
    let oci_src = format!("oci:{}:1", oci.display());
    let good = push(
        &clients,
        &oci_src,
        &format!("docker://{}/a:1", r2.host()),
        &[],
        tmp.path(),
    );
    let other = tmp.path().join("other");
    let corrupt = write_oci_layout(&other, "1", 202);
    let other_src = format!("oci:{}:1", other.display());
    push(
        &clients,
        &other_src,
        &format!("docker://{}/b:1", r2.host()),
        &[],
        tmp.path(),
    );
    // An image whose config file in the source is a symbolic link (to the right bytes):
    // only regular files are taken.
    let third = tmp.path().join("third");
    let linked_image = write_oci_layout(&third, "1", 203);
    let third_src = format!("oci:{}:1", third.display());
    push(
        &clients,
        &third_src,
        &format!("docker://{}/c:1", r2.host()),
        &[],
        tmp.path(),
    );
    drop(r2);
    let config = &linked_image.config;
    let config_path = Registry2::v2(&root).join(format!(
        "blobs/sha256/{}/{}/data",
        &config.hex()[..2],
        config.hex()
    ));
    let elsewhere = tmp.path().join("config-elsewhere");
    fs::copy(&config_path, &elsewhere).unwrap();
    fs::remove_file(&config_path).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &config_path).unwrap();
    // Flip the bytes of one of b's layers in the source.
    let layer = &corrupt.layers[1];
    let path = Registry2::v2(&root).join(format!(
        "blobs/sha256/{}/{}/data",
        &layer.hex()[..2],
        layer.hex()
    ));
    let mut bytes = fs::read(&path).unwrap();
    bytes[0] ^= 0xff;
    fs::write(&path, bytes).unwrap();

    let data = tmp.path().join("data");
    // The data directory exists once a server has started on it.
    drop(Server::start(&data, &[]));
    // On a terminal (script(1) gives it one) a progress bar counts bytes and objects.
    let shown = run(Command::new(require_tool("script"))
        .args(["-qec"])
        .arg(format!(
            "{} --data-dir {} import registry2 --dry-run {}",
            env!("CARGO_BIN_EXE_berth"),
            data.display(),
            root.display()
        ))
        .arg("/dev/null")
        .env_remove("BERTH_CONFIG"));
    assert!(
        shown.contains("100%") && shown.contains(" objects"),
        "{shown}"
    );
    assert!(shown.contains("would import 2 manifests"), "{shown}");
    let report = import(&data, &root, &[]);
    assert_eq!(report["manifests"], 1, "{report:#}");
    assert_eq!(report["linked"], 0, "{report:#}");
    assert_eq!(report["copied"], report["blobs"], "{report:#}");
    let why = skipped(&report)
        .into_iter()
        .find(|(w, _)| w.starts_with("b@"))
        .map(|(_, why)| why)
        .unwrap_or_else(|| panic!("{report:#}"));
    assert!(
        why.contains(&layer.to_string()) && why.contains("digest"),
        "{why}"
    );
    let why = skipped(&report)
        .into_iter()
        .find(|(w, _)| w.starts_with("c@"))
        .map(|(_, why)| why)
        .unwrap_or_else(|| panic!("{report:#}"));
    assert!(why.contains(&config.to_string()), "{why}");
    let mut stack = vec![data.join("blobs")];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            assert!(!t.is_symlink(), "{}", e.path().display());
            if t.is_dir() {
                stack.push(e.path());
            }
        }
    }
    let server = Server::start(&data, &[]);
    assert_eq!(pull_back(&clients, &server, "a", "1", false), good);
    let copied = image.config.hex().to_string();
    let meta = fs::metadata(data.join(format!("blobs/sha256/{}/{copied}", &copied[..2]))).unwrap();
    assert_eq!(meta.nlink(), 1);
    missing(&clients, &server, "b:1");
    // Nothing adopted is left in staging.
    let left: Vec<_> = fs::read_dir(data.join("uploads")).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}
