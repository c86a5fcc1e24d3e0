//! `berth backup`, `berth restore` and `berth fsck` against the real binary: a backup taken
//! while 16 pushers push, restored into a new data directory that passes `fsck --deep` and
//! serves every manifest it records; a second backup to the same folder copies only the new
//! blobs; the tar form round-trips; damage is named, by fsck and by restore.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use berth::oci::Digest;
use serde_json::Value;

use crate::common::cmd::{berth, expect_failure, output, run};
use crate::common::net::{client, fetch_hashed};
use crate::common::{OCI_MANIFEST, Server};

const PUSHERS: usize = 16;

fn json(cmd: &mut Command) -> Value {
    let out = run(cmd);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Push a small image (a config, a layer shared between pushes, a layer of its own) under
/// `repo:tag`; the manifest digest once acknowledged.
async fn push(server: &Server, c: &reqwest::Client, repo: &str, tag: &str, seed: usize) -> Digest {
    let blobs = [
        format!("config {repo} {tag} {seed}").into_bytes(),
        format!("shared layer {} ", seed % 4)
            .repeat(500)
            .into_bytes(),
        format!("own layer {repo} {tag} {seed} ")
            .repeat(300)
            .into_bytes(),
    ];
    let mut descriptors = Vec::new();
    for b in &blobs {
        let d = Digest::sha256_of(b);
        let r = c
            .post(server.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")))
            .body(b.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "blob upload");
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
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "manifest push");
    Digest::sha256_of(&manifest)
}

/// Every manifest a database records, (repository, digest).
fn manifests(db: &Path) -> Vec<(String, String)> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let mut st = c
        .prepare("SELECT r.name, m.digest FROM manifests m JOIN repositories r ON r.id = m.repository_id")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Every manifest of `data`'s database pulls from `server`, with the blobs it lists.
async fn all_pull(server: &Server, data: &Path) -> usize {
    let c = client();
    let list = manifests(&data.join("berth.db"));
    for (repo, digest) in &list {
        let r = c
            .get(server.url(&format!("/v2/{repo}/manifests/{digest}")))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{repo}@{digest}");
        let body = r.bytes().await.unwrap();
        assert_eq!(Digest::sha256_of(&body).to_string(), *digest);
        let m: Value = serde_json::from_slice(&body).unwrap();
        let mut blobs = vec![m["config"]["digest"].as_str().unwrap().to_string()];
        for l in m["layers"].as_array().unwrap() {
            blobs.push(l["digest"].as_str().unwrap().to_string());
        }
        for b in blobs {
            let f = fetch_hashed(&c, &server.url(&format!("/v2/{repo}/blobs/{b}"))).await;
            assert_eq!(f.status, 200, "{repo} blob {b}");
            assert_eq!(f.digest.map(|d| d.to_string()), Some(b));
        }
    }
    list.len()
}

/// Inode of every blob file under a backup folder.
fn inodes(dir: &Path) -> HashMap<PathBuf, u64> {
    let mut out = HashMap::new();
    let mut stack = vec![dir.join("blobs")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.path(), e.metadata().unwrap().ino());
            }
        }
    }
    out
}

fn blob_count(db: &Path) -> u64 {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    c.query_row("SELECT count(*) FROM blobs", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_while_pushing_restores_and_is_incremental() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Arc::new(Server::start(&data, &[]));
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<std::sync::Mutex<Vec<(String, String, Digest)>>> = Arc::default();
    let mut pushers = Vec::new();
    for p in 0..PUSHERS {
        let (server, stop, acked) = (server.clone(), stop.clone(), acked.clone());
        pushers.push(tokio::spawn(async move {
            let c = client();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let (repo, tag) = (format!("team/p{p}"), format!("t{n}"));
                let d = push(&server, &c, &repo, &tag, p * 10_000 + n).await;
                acked.lock().unwrap().push((repo, tag, d));
                n += 1;
            }
        }));
    }
    while acked.lock().unwrap().len() < 200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A folder backup while the pushes go on: everything acknowledged before it started is in.
    let before: Vec<_> = acked.lock().unwrap().clone();
    let dest = tmp.path().join("backup");
    let (d, b) = (data.clone(), dest.clone());
    let first = tokio::task::spawn_blocking(move || json(berth(&d, &["backup", "--json"]).arg(&b)))
        .await
        .unwrap();
    assert!(first["blobs"].as_u64().unwrap() > 0, "{first:#}");
    assert_eq!(
        first["blobs"], first["blobs_copied"],
        "a new folder: {first:#}"
    );
    assert!(
        acked.lock().unwrap().len() > before.len(),
        "pushes went on during the backup"
    );
    // A tar backup, also during pushes.
    let tarball = tmp.path().join("backup.tar");
    let (d, t) = (data.clone(), tarball.clone());
    tokio::task::spawn_blocking(move || {
        let out = fs::File::create(&t).unwrap();
        let done = berth(&d, &["backup", "-"]).stdout(out).output().unwrap();
        assert!(done.status.success());
        let said = String::from_utf8_lossy(&done.stderr);
        assert!(
            said.starts_with("backed up ") && said.contains("to a tar stream"),
            "{said}"
        );
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    for p in pushers {
        p.await.unwrap();
    }
    let pushed = acked.lock().unwrap().len();

    // Restore the folder into a new data directory: sound, and everything pulls.
    let restored = tmp.path().join("restored");
    let r = json(berth(&restored, &["restore", "--json"]).arg(&dest));
    assert_eq!(r["blobs"], first["blobs"], "{r:#}");
    let fsck = run(&mut berth(&restored, &["fsck", "--deep"]));
    assert!(fsck.starts_with("sound: "), "{fsck}");
    {
        let again = Server::start(&restored, &[]);
        let n = all_pull(&again, &restored).await;
        assert_eq!(n as u64, first["manifests"].as_u64().unwrap());
        let c = client();
        for (repo, tag, digest) in &before {
            let r = c
                .head(again.url(&format!("/v2/{repo}/manifests/{tag}")))
                .header("accept", OCI_MANIFEST)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200, "{repo}:{tag}");
            assert_eq!(
                r.headers()["docker-content-digest"].to_str().unwrap(),
                digest.to_string()
            );
        }
    }

    // The tar form restores too.
    let from_tar = tmp.path().join("from-tar");
    let r = json(berth(&from_tar, &["restore", "--json"]).arg(&tarball));
    assert!(
        r["blobs"].as_u64().unwrap() >= first["blobs"].as_u64().unwrap(),
        "{r:#}"
    );
    let fsck = run(&mut berth(&from_tar, &["fsck", "--deep"]));
    assert!(fsck.starts_with("sound: "), "{fsck}");

    // Again to the same folder, now that the pushes stopped: only the new blobs are copied,
    // the old files stay as they were.
    let old = inodes(&dest);
    let second = json(berth(&data, &["backup", "--json"]).arg(&dest));
    let total = blob_count(&data.join("berth.db"));
    assert_eq!(second["blobs"].as_u64().unwrap(), total, "{second:#}");
    let copied = second["blobs_copied"].as_u64().unwrap();
    assert_eq!(
        copied,
        total - first["blobs"].as_u64().unwrap(),
        "{second:#}"
    );
    assert!(copied > 0, "pushes after the first backup: {pushed} in all");
    let now = inodes(&dest);
    for (path, ino) in &old {
        assert_eq!(
            now.get(path),
            Some(ino),
            "{} was copied again",
            path.display()
        );
    }
    assert_eq!(second["blobs_removed"], 0);
    // A copy in the folder that was cut short is copied again by the next run.
    let (cut, _) = now.iter().next().unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(cut)
        .unwrap()
        .set_len(1)
        .unwrap();
    let third = json(berth(&data, &["backup", "--json"]).arg(&dest));
    assert_eq!(third["blobs_copied"], 1, "{third:#}");
    let restored2 = tmp.path().join("restored2");
    json(berth(&restored2, &["restore", "--json"]).arg(&dest));
    let again = Server::start(&restored2, &[]);
    assert_eq!(
        all_pull(&again, &restored2).await,
        manifests(&data.join("berth.db")).len()
    );
    drop(again);

    // Damage in a backup is named, and nothing is left behind; a restore never writes over
    // a data directory.
    let (path, _) = now.iter().next().unwrap();
    let mut bytes = fs::read(path).unwrap();
    bytes[0] ^= 0xff;
    fs::write(path, bytes).unwrap();
    let bad = tmp.path().join("bad");
    let mut cmd = berth(&bad, &["restore"]);
    cmd.arg(&dest);
    let out = output(&mut cmd);
    let err = expect_failure(&cmd, &out);
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(
        err.contains("the backup is damaged") && err.contains(name),
        "{err}"
    );
    assert!(!bad.exists());
    let mut cmd = berth(&restored, &["restore"]);
    cmd.arg(&tarball);
    let out = output(&mut cmd);
    let err = expect_failure(&cmd, &out);
    assert!(err.contains("is not empty"), "{err}");
}

#[tokio::test]
async fn fsck_names_truncated_missing_corrupt_and_orphan_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data, &[]);
    let c = client();
    push(&server, &c, "app", "1", 1).await;
    push(&server, &c, "app", "2", 5).await;
    drop(server);
    let sound = run(&mut berth(&data, &["fsck", "--deep"]));
    assert!(
        sound.starts_with("sound: 1 repositories, 2 manifests, 2 tags, 5 blobs"),
        "{sound}"
    );

    let file = |d: &Digest| data.join(format!("blobs/sha256/{}/{}", &d.hex()[..2], d.hex()));
    let blobs: Vec<Digest> = {
        let c = rusqlite::Connection::open(data.join("berth.db")).unwrap();
        let mut st = c
            .prepare("SELECT digest FROM blobs ORDER BY digest")
            .unwrap();
        st.query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(|d| Digest::parse(&d.unwrap()).unwrap())
            .collect()
    };
    let (truncated, missing, corrupt) = (&blobs[0], &blobs[1], &blobs[2]);
    let f = fs::OpenOptions::new()
        .write(true)
        .open(file(truncated))
        .unwrap();
    f.set_len(3).unwrap();
    fs::remove_file(file(missing)).unwrap();
    let mut bytes = fs::read(file(corrupt)).unwrap();
    bytes[0] ^= 0xff;
    fs::write(file(corrupt), bytes).unwrap();
    let orphan_bytes = b"a file nothing records";
    let orphan = Digest::sha256_of(orphan_bytes);
    fs::create_dir_all(file(&orphan).parent().unwrap()).unwrap();
    fs::write(file(&orphan), orphan_bytes).unwrap();

    let mut cmd = berth(&data, &["fsck"]);
    let out = output(&mut cmd);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains(&format!("size      {truncated}: 3 bytes on disk")),
        "{text}"
    );
    assert!(text.contains(&format!("missing   {missing}")), "{text}");
    assert!(text.contains(&format!("orphan    {orphan}")), "{text}");
    assert!(
        !text.contains(&corrupt.to_string()),
        "same size: only --deep sees it\n{text}"
    );
    assert!(text.contains("3 problems in"), "{text}");
    let mut cmd = berth(&data, &["fsck", "--deep", "--json"]);
    let out = output(&mut cmd);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<(String, String)> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().into(),
                p["what"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("digest".into(), corrupt.to_string())),
        "{kinds:?}"
    );
    assert_eq!(kinds.len(), 4, "{kinds:?}");
    // No data directory at all: exit 2 with one line.
    let out = output(&mut berth(&tmp.path().join("nothing"), &["fsck"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no berth database"));
}
