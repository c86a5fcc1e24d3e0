//! Upload sessions: monolithic, POST+PUT, chunked, streamed, status, cancel, mount.

use axum::body::Body;
use bytes::Bytes;

use crate::common::{TestApp, digest_of};

#[tokio::test]
async fn monolithic_post_with_digest() {
    let app = TestApp::new();
    let d = digest_of(b"abc");
    let r = app
        .call(
            "POST",
            &format!("/v2/m/blobs/uploads/?digest={d}"),
            &[],
            "abc",
        )
        .await;
    r.assert(201);
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/m/blobs/{d}").as_str())
    );
    assert_eq!(
        r.header("docker-content-digest"),
        Some(d.to_string().as_str())
    );
    // A wrong digest is refused and leaves no session behind.
    let wrong = digest_of(b"other");
    app.call(
        "POST",
        &format!("/v2/m/blobs/uploads/?digest={wrong}"),
        &[],
        "abc",
    )
    .await
    .assert_error(400, "DIGEST_INVALID");
    app.get(&format!("/v2/m/blobs/{wrong}"))
        .await
        .assert_error(404, "BLOB_UNKNOWN");
    let left = std::fs::read_dir(app.dir.path().join("uploads"))
        .unwrap()
        .count();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn post_then_put_with_body() {
    let app = TestApp::new();
    let loc = app.start_upload("p").await;
    let d = digest_of(b"whole body");
    app.call("PUT", &format!("{loc}?digest={d}"), &[], "whole body")
        .await
        .assert(201);
    assert_eq!(
        app.get(&format!("/v2/p/blobs/{d}")).await.body.as_ref(),
        b"whole body"
    );
    // The session is gone once finished.
    app.get(&loc).await.assert_error(404, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn chunked_upload_with_content_range_and_status() {
    let app = TestApp::new();
    let loc = app.start_upload("c").await;
    let r = app.get(&loc).await;
    r.assert(204);
    assert_eq!(r.header("range"), Some("0-0"));
    let id = loc.rsplit('/').next().unwrap();
    assert_eq!(r.header("docker-upload-uuid"), Some(id));

    let r = app
        .call(
            "PATCH",
            &loc,
            &[("content-range", "0-4"), ("content-length", "5")],
            "hello",
        )
        .await;
    r.assert(202);
    assert_eq!(r.header("range"), Some("0-4"));
    assert_eq!(r.header("location"), Some(loc.as_str()));

    // A gap and an overlap are both 416 with the current range.
    for cr in ["6-7", "3-4"] {
        let r = app
            .call("PATCH", &loc, &[("content-range", cr)], "xx")
            .await;
        r.assert_error(416, "BLOB_UPLOAD_INVALID");
        assert_eq!(r.header("range"), Some("0-4"), "{cr}");
    }
    app.call("PATCH", &loc, &[("content-range", "5-10")], " world")
        .await
        .assert(202);
    let r = app.get(&loc).await;
    assert_eq!(r.header("range"), Some("0-10"));

    let d = digest_of(b"hello world");
    app.call("PUT", &format!("{loc}?digest={d}"), &[], "")
        .await
        .assert(201);
    assert_eq!(
        app.get(&format!("/v2/c/blobs/{d}")).await.body.as_ref(),
        b"hello world"
    );
}

#[tokio::test]
async fn streamed_patch_without_length() {
    let app = TestApp::new();
    let loc = app.start_upload("s").await;
    let chunks: Vec<Result<Bytes, std::io::Error>> = (0..100u8)
        .map(|i| Ok(Bytes::from(vec![i; 10_000])))
        .collect();
    let all: Vec<u8> = (0..100u8).flat_map(|i| vec![i; 10_000]).collect();
    let body = Body::from_stream(futures_util::stream::iter(chunks));
    let r = app.call("PATCH", &loc, &[], body).await;
    r.assert(202);
    assert_eq!(r.header("range"), Some("0-999999"));
    let d = digest_of(&all);
    app.call("PUT", &format!("{loc}?digest={d}"), &[], "")
        .await
        .assert(201);
    assert_eq!(
        app.get(&format!("/v2/s/blobs/{d}")).await.body.as_ref(),
        &all[..]
    );
}

#[tokio::test]
async fn digest_mismatch_and_missing_digest_on_put() {
    let app = TestApp::new();
    let loc = app.start_upload("d").await;
    app.call("PATCH", &loc, &[], "data").await.assert(202);
    app.call("PUT", &loc, &[], "")
        .await
        .assert_error(400, "DIGEST_INVALID");
    let wrong = digest_of(b"not data");
    app.call("PUT", &format!("{loc}?digest={wrong}"), &[], "")
        .await
        .assert_error(400, "DIGEST_INVALID");
    app.call("PUT", &format!("{loc}?digest=sha256:nothex"), &[], "")
        .await
        .assert_error(400, "DIGEST_INVALID");
    // The session is still usable with the right digest.
    app.call(
        "PUT",
        &format!("{loc}?digest={}", digest_of(b"data")),
        &[],
        "",
    )
    .await
    .assert(201);
}

#[tokio::test]
async fn cancel_and_unknown_sessions() {
    let app = TestApp::new();
    let loc = app.start_upload("x").await;
    app.delete(&loc).await.assert(204);
    app.get(&loc).await.assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    app.call("PATCH", &loc, &[], "a")
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    app.delete(&loc)
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    // A session belongs to its repository.
    let loc = app.start_upload("x").await;
    let other = loc.replace("/v2/x/", "/v2/y/");
    app.get(&other)
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    app.get("/v2/x/blobs/uploads/0123456789abcdef0123456789abcdef")
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn sha512_uploads_are_verified() {
    let app = TestApp::new();
    let mut h = berth::oci::Hasher::new(berth::oci::Algorithm::Sha512);
    h.update(b"five hundred twelve");
    let d = h.finish();
    let loc = app.start_upload("z").await;
    app.call("PATCH", &loc, &[], "five hundred twelve")
        .await
        .assert(202);
    app.call("PUT", &format!("{loc}?digest={d}"), &[], "")
        .await
        .assert(201);
    assert_eq!(
        app.get(&format!("/v2/z/blobs/{d}")).await.body.as_ref(),
        b"five hundred twelve"
    );
}

#[tokio::test]
async fn cross_repository_mount() {
    let app = TestApp::new();
    let d = app.push_blob("src/repo", b"shared").await;
    let r = app
        .call(
            "POST",
            &format!("/v2/dst/repo/blobs/uploads/?mount={d}&from=src/repo"),
            &[],
            "",
        )
        .await;
    r.assert(201);
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/dst/repo/blobs/{d}").as_str())
    );
    assert_eq!(
        r.header("docker-content-digest"),
        Some(d.to_string().as_str())
    );
    app.get(&format!("/v2/dst/repo/blobs/{d}"))
        .await
        .assert(200);

    // Not in the source repository: an ordinary upload session instead.
    let unknown = digest_of(b"elsewhere");
    let r = app
        .call(
            "POST",
            &format!("/v2/dst/repo/blobs/uploads/?mount={unknown}&from=src/repo"),
            &[],
            "",
        )
        .await;
    r.assert(202);
    assert!(
        r.header("location")
            .unwrap()
            .starts_with("/v2/dst/repo/blobs/uploads/")
    );
    app.get(&format!("/v2/dst/repo/blobs/{unknown}"))
        .await
        .assert(404);
    // A blob of another repository cannot be mounted by naming a repository that lacks it.
    let r = app
        .call(
            "POST",
            &format!("/v2/thief/blobs/uploads/?mount={d}&from=nothere"),
            &[],
            "",
        )
        .await;
    r.assert(202);
    app.get(&format!("/v2/thief/blobs/{d}")).await.assert(404);
    app.call(
        "POST",
        "/v2/dst/blobs/uploads/?mount=bad&from=src/repo",
        &[],
        "",
    )
    .await
    .assert_error(400, "DIGEST_INVALID");
}

#[tokio::test]
async fn sessions_survive_a_restart() {
    let app = TestApp::new();
    let loc = app.start_upload("keep").await;
    app.call("PATCH", &loc, &[("content-range", "0-2")], "abc")
        .await
        .assert(202);
    // A new state over the same data directory: nothing in memory carries over.
    let config = (*app.state.config).clone();
    let state = berth::AppState::open(config, std::sync::Arc::new(app.clock.clone())).unwrap();
    let again = TestApp {
        router: berth::router(state.clone()),
        state,
        dir: app.dir,
        clock: app.clock,
        auth_header: app.auth_header,
    };
    let r = again.get(&loc).await;
    r.assert(204);
    assert_eq!(r.header("range"), Some("0-2"));
    again
        .call("PATCH", &loc, &[("content-range", "3-5")], "def")
        .await
        .assert(202);
    let d = digest_of(b"abcdef");
    again
        .call("PUT", &format!("{loc}?digest={d}"), &[], "")
        .await
        .assert(201);
    assert_eq!(
        again
            .get(&format!("/v2/keep/blobs/{d}"))
            .await
            .body
            .as_ref(),
        b"abcdef"
    );
}

#[tokio::test]
async fn concurrent_finishes_of_one_session() {
    let app = TestApp::new();
    let loc = app.start_upload("race").await;
    let data = vec![7u8; 300_000];
    app.call("PATCH", &loc, &[], data.clone()).await.assert(202);
    let d = digest_of(&data);
    let put = format!("{loc}?digest={d}");
    let (a, b) = tokio::join!(
        app.call("PUT", &put, &[], ""),
        app.call("PUT", &put, &[], "")
    );
    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort();
    assert_eq!(
        statuses,
        [201, 404],
        "one finishes, the other finds no session"
    );
    let loser = if a.status == 404 { &a } else { &b };
    assert_eq!(loser.error_code(), "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(
        app.get(&format!("/v2/race/blobs/{d}")).await.body.len(),
        300_000
    );
}

#[tokio::test]
async fn a_chunk_shorter_or_longer_than_its_range_is_not_kept() {
    let app = TestApp::new();
    let loc = app.start_upload("short").await;
    // A range whose length does not fit in 64 bits is refused up front, without a panic.
    app.call(
        "PATCH",
        &loc,
        &[("content-range", "0-18446744073709551615")],
        "abc",
    )
    .await
    .assert_error(416, "BLOB_UPLOAD_INVALID");
    for (range, body) in [("0-9", "abc"), ("0-1", "abc")] {
        app.call("PATCH", &loc, &[("content-range", range)], body)
            .await
            .assert_error(400, "BLOB_UPLOAD_INVALID");
        let r = app.get(&loc).await;
        assert_eq!(r.header("range"), Some("0-0"), "nothing kept after {range}");
    }
    // The same chunk with the right range goes in, as if nothing had happened.
    app.call("PATCH", &loc, &[("content-range", "0-2")], "abc")
        .await
        .assert(202);
    let d = digest_of(b"abc");
    app.call("PUT", &format!("{loc}?digest={d}"), &[], "")
        .await
        .assert(201);
    assert_eq!(
        app.get(&format!("/v2/short/blobs/{d}")).await.body.as_ref(),
        b"abc"
    );
}

#[tokio::test]
async fn a_request_dropped_mid_body_leaves_a_consistent_session() {
    let app = TestApp::new();
    let loc = app.start_upload("dropped").await;
    let chunk = vec![5u8; 64 * 1024];
    let c = chunk.clone();
    let slow = futures_util::stream::unfold(0u32, move |i| {
        let c = c.clone();
        async move {
            if i == 20 {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            Some((Ok::<_, std::io::Error>(Bytes::from(c)), i + 1))
        }
    });
    // The client gives up while the body is still arriving...
    let patch = app.call("PATCH", &loc, &[], Body::from_stream(slow));
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(100), patch)
            .await
            .is_err()
    );
    // ...and the next request on the session waits for the writer, then sees exactly what
    // the file holds; the upload finishes with the right digest.
    let r = app.get(&loc).await;
    r.assert(204);
    let all: Vec<u8> = chunk
        .iter()
        .copied()
        .cycle()
        .take(20 * chunk.len())
        .collect();
    assert_eq!(
        r.header("range"),
        Some(format!("0-{}", all.len() - 1).as_str())
    );
    let d = digest_of(&all);
    app.call("PUT", &format!("{loc}?digest={d}"), &[], "")
        .await
        .assert(201);
    assert_eq!(
        app.get(&format!("/v2/dropped/blobs/{d}")).await.body.len(),
        all.len()
    );
}

#[tokio::test]
async fn bytes_written_behind_the_servers_back_are_caught_before_they_become_a_blob() {
    // The hash state of a session lives in memory (known from the start for a new session,
    // whose file is empty). Before a blob is stored, the file must hold exactly the bytes
    // hashed: if anything else wrote to it, the commit refuses, and the next request hashes
    // the file again. The file's length is read back by the append when the PUT has a body,
    // and looked up when it has none.
    let app = TestApp::new();
    let cases = [
        ("last-chunk", None, "abc", b"xyzabc".as_slice()),
        (
            "chunk-then-empty-put",
            Some("abc"),
            "",
            b"abcxyz".as_slice(),
        ),
        (
            "chunk-then-last-chunk",
            Some("abc"),
            "def",
            b"abcxyzdef".as_slice(),
        ),
    ];
    for (repo, chunk, last, on_disk) in cases {
        let loc = app.start_upload(repo).await;
        let mut hashed = Vec::new();
        if let Some(c) = chunk {
            app.call("PATCH", &loc, &[], c).await.assert(202);
            hashed.extend_from_slice(c.as_bytes());
        }
        hashed.extend_from_slice(last.as_bytes());
        let id = loc.rsplit('/').next().unwrap();
        let file = app.dir.path().join("uploads").join(id);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap();
        std::io::Write::write_all(&mut f, b"xyz").unwrap();
        drop(f);

        let d = digest_of(&hashed);
        app.call("PUT", &format!("{loc}?digest={d}"), &[], last)
            .await
            .assert_error(400, "BLOB_UPLOAD_INVALID");
        app.get(&format!("/v2/{repo}/blobs/{d}"))
            .await
            .assert_error(404, "BLOB_UNKNOWN");
        assert_eq!(std::fs::read(&file).unwrap(), on_disk, "{repo}");

        // The retry hashes what the file holds.
        let r = app.get(&loc).await;
        r.assert(204);
        let range = format!("0-{}", on_disk.len() - 1);
        assert_eq!(r.header("range"), Some(range.as_str()), "{repo}");
        let d = digest_of(on_disk);
        app.call("PUT", &format!("{loc}?digest={d}"), &[], "")
            .await
            .assert(201);
        assert_eq!(
            app.get(&format!("/v2/{repo}/blobs/{d}"))
                .await
                .body
                .as_ref(),
            on_disk,
            "{repo}"
        );
    }
}

#[tokio::test]
async fn a_session_whose_file_was_removed_is_unknown_not_an_error() {
    // The file of a new session, or of one with a chunk, removed behind the server's back:
    // the next request with a body finds the session gone (404), not a server error, and
    // the session stays gone.
    let app = TestApp::new();
    for (repo, chunk) in [("fresh", None), ("chunked", Some("abc"))] {
        for method in ["PATCH", "PUT"] {
            let loc = app.start_upload(repo).await;
            if let Some(c) = chunk {
                app.call("PATCH", &loc, &[], c).await.assert(202);
            }
            let id = loc.rsplit('/').next().unwrap();
            std::fs::remove_file(app.dir.path().join("uploads").join(id)).unwrap();
            let uri = match method {
                "PUT" => format!("{loc}?digest={}", digest_of(b"abcdef")),
                _ => loc.clone(),
            };
            app.call(method, &uri, &[], "def")
                .await
                .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
            app.get(&loc).await.assert_error(404, "BLOB_UPLOAD_UNKNOWN");
        }
    }
}
