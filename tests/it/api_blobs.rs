//! Blob reads, ranges, deletes and per-repository visibility.

use crate::common::{TestApp, digest_of};

#[tokio::test]
async fn get_head_and_ranges() {
    let app = TestApp::new();
    let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    let d = app.push_blob("r/one", &data).await;
    let path = format!("/v2/r/one/blobs/{d}");

    let r = app.get(&path).await;
    r.assert(200);
    assert_eq!(r.body.as_ref(), &data[..]);
    assert_eq!(
        r.header("docker-content-digest"),
        Some(d.to_string().as_str())
    );
    assert_eq!(r.header("content-length"), Some("10000"));

    let h = app.head(&path).await;
    h.assert(200);
    assert!(h.body.is_empty());
    assert_eq!(h.header("content-length"), Some("10000"));
    assert_eq!(
        h.header("docker-content-digest"),
        Some(d.to_string().as_str())
    );

    for (range, start, end) in [
        ("bytes=0-9", 0, 9),
        ("bytes=9990-", 9990, 9999),
        ("bytes=-5", 9995, 9999),
        ("bytes=100-99999", 100, 9999),
    ] {
        let r = app.call("GET", &path, &[("range", range)], "").await;
        r.assert(206);
        assert_eq!(r.body.as_ref(), &data[start..=end], "{range}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {start}-{end}/10000").as_str())
        );
        let h = app.call("HEAD", &path, &[("range", range)], "").await;
        h.assert(206);
        assert!(h.body.is_empty());
        assert_eq!(h.header("content-range"), r.header("content-range"));
        assert_eq!(
            h.header("content-length"),
            Some((end - start + 1).to_string().as_str())
        );
    }
    let r = app
        .call("GET", &path, &[("range", "bytes=10000-")], "")
        .await;
    r.assert(416);
    assert_eq!(r.header("content-range"), Some("bytes */10000"));
}

#[tokio::test]
async fn blobs_are_visible_only_where_pushed_or_mounted() {
    let app = TestApp::new();
    let d = app.push_blob("team-a/app", b"secret layer").await;
    app.get(&format!("/v2/team-b/app/blobs/{d}"))
        .await
        .assert_error(404, "BLOB_UNKNOWN");
    app.head(&format!("/v2/team-b/app/blobs/{d}"))
        .await
        .assert(404);
    // Pushing the same bytes elsewhere stores them once and links them there.
    app.push_blob("team-b/app", b"secret layer").await;
    app.get(&format!("/v2/team-b/app/blobs/{d}"))
        .await
        .assert(200);
    let files = walk(&app.dir.path().join("blobs"));
    assert_eq!(files.len(), 1, "{files:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p))
        } else {
            out.push(p)
        }
    }
    out
}

#[tokio::test]
async fn delete_unlinks_from_the_repository() {
    let app = TestApp::new();
    let d = app.push_blob("a", b"x").await;
    app.push_blob("b", b"x").await;
    let r = app.delete(&format!("/v2/a/blobs/{d}")).await;
    r.assert(202);
    app.get(&format!("/v2/a/blobs/{d}"))
        .await
        .assert_error(404, "BLOB_UNKNOWN");
    app.get(&format!("/v2/b/blobs/{d}")).await.assert(200);
    app.delete(&format!("/v2/a/blobs/{d}"))
        .await
        .assert_error(404, "BLOB_UNKNOWN");
    app.delete(&format!("/v2/nope/blobs/{d}"))
        .await
        .assert_error(404, "BLOB_UNKNOWN");
}

#[tokio::test]
async fn unknown_and_invalid_digests() {
    let app = TestApp::new();
    let unknown = digest_of(b"never pushed");
    app.get(&format!("/v2/a/blobs/{unknown}"))
        .await
        .assert_error(404, "BLOB_UNKNOWN");
    for bad in [
        "sha256:xyz",
        "sha256:ABC",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "nodigest:",
        "sha256:..%2f..%2fetc",
    ] {
        app.get(&format!("/v2/a/blobs/{bad}"))
            .await
            .assert_error(400, "DIGEST_INVALID");
    }
}

/// Every file under the test's folder (data directory and around it) with its length,
/// but the database's own files, which any request may write.
fn files_and_lengths(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut out: Vec<_> = walk(dir)
        .into_iter()
        .filter(|p| {
            !p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("berth.db")
        })
        .map(|p| {
            let len = std::fs::metadata(&p).unwrap().len();
            (p, len)
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn traversal_forms_never_reach_the_filesystem() {
    let app = TestApp::new();
    app.push_blob("a", b"some bytes").await;
    let before = files_and_lengths(app.dir.path());
    let empty = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    for p in [
        format!("/v2/../../etc/passwd/blobs/{empty}"),
        "/v2/a/..%2F..%2Fetc/tags/list".to_string(),
        "/v2/%2e%2e/manifests/latest".to_string(),
        "/v2/a/blobs/uploads/..%2F..%2Fberth.db".to_string(),
        "/v2/a/blobs/uploads/../../berth.db".to_string(),
        "/v2/a/blobs/uploads/..%2F..%2Fblobs".to_string(),
    ] {
        for method in ["GET", "HEAD", "PATCH", "PUT", "DELETE"] {
            let target = match method {
                "PUT" => format!("{p}?digest={empty}"),
                _ => p.clone(),
            };
            let r = app.call(method, &target, &[], "overwrite").await;
            assert!(r.status.is_client_error(), "{method} {p}: {}", r.status);
            if method != "HEAD" {
                let code = r.error_code();
                assert!(
                    [
                        "NAME_INVALID",
                        "BLOB_UPLOAD_UNKNOWN",
                        "NOT_FOUND",
                        "UNSUPPORTED"
                    ]
                    .contains(&code.as_str()),
                    "{method} {p}: {code}"
                );
            }
        }
    }
    assert_eq!(
        files_and_lengths(app.dir.path()),
        before,
        "no file was created, removed or changed"
    );
}

#[tokio::test]
async fn a_truncated_blob_file_is_an_error_not_a_crash() {
    let app = TestApp::new();
    let data = vec![9u8; 100_000];
    let d = app.push_blob("cut", &data).await;
    let file = walk(&app.dir.path().join("blobs")).pop().unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(10)
        .unwrap();
    app.get(&format!("/v2/cut/blobs/{d}"))
        .await
        .assert_error(500, "UNKNOWN");
    // The process (this test) is alive and other requests still work.
    app.get("/v2/").await.assert(200);
}
