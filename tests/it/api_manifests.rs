//! Manifests: push, pull by tag and digest, validation, deletes.

use serde_json::json;

use crate::common::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, TestApp, digest_of};

#[tokio::test]
async fn oci_image_roundtrip_exact_bytes() {
    let app = TestApp::new();
    let (bytes, d) = app.push_image("img/oci", "v1", OCI_MANIFEST, 1).await;
    for reference in ["v1".to_string(), d.to_string()] {
        let r = app.get(&format!("/v2/img/oci/manifests/{reference}")).await;
        r.assert(200);
        assert_eq!(r.body.as_ref(), &bytes[..], "exact bytes for {reference}");
        assert_eq!(r.header("content-type"), Some(OCI_MANIFEST));
        assert_eq!(
            r.header("docker-content-digest"),
            Some(d.to_string().as_str())
        );
        let h = app
            .head(&format!("/v2/img/oci/manifests/{reference}"))
            .await;
        h.assert(200);
        assert!(h.body.is_empty());
        assert_eq!(
            h.header("content-length"),
            Some(bytes.len().to_string().as_str())
        );
        assert_eq!(
            h.header("docker-content-digest"),
            Some(d.to_string().as_str())
        );
    }
}

#[tokio::test]
async fn put_response_headers() {
    let app = TestApp::new();
    let cfg = app.push_blob("h", b"{}").await;
    let m = json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":cfg,"size":2},"layers":[]});
    let bytes = serde_json::to_vec(&m).unwrap();
    let d = digest_of(&bytes);
    let r = app.put_manifest("h", "latest", OCI_MANIFEST, &bytes).await;
    r.assert(201);
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/h/manifests/{d}").as_str())
    );
    assert_eq!(
        r.header("docker-content-digest"),
        Some(d.to_string().as_str())
    );
    assert!(r.header("oci-subject").is_none());
    // By digest: must match.
    app.put_manifest("h", &d.to_string(), OCI_MANIFEST, &bytes)
        .await
        .assert(201);
    let other = digest_of(b"other");
    app.put_manifest("h", &other.to_string(), OCI_MANIFEST, &bytes)
        .await
        .assert_error(400, "DIGEST_INVALID");
}

#[tokio::test]
async fn docker_schema2_and_manifest_list() {
    let app = TestApp::new();
    let (_, amd) = app.push_image("multi", "amd64", DOCKER_MANIFEST, 2).await;
    let (_, arm) = app.push_image("multi", "arm64", DOCKER_MANIFEST, 3).await;
    let list = json!({"schemaVersion":2,"mediaType":DOCKER_LIST,"manifests":[
        {"mediaType":DOCKER_MANIFEST,"digest":amd,"size":1,"platform":{"architecture":"amd64","os":"linux"}},
        {"mediaType":DOCKER_MANIFEST,"digest":arm,"size":1,"platform":{"architecture":"arm64","os":"linux"}}]});
    let bytes = serde_json::to_vec(&list).unwrap();
    app.put_manifest("multi", "latest", DOCKER_LIST, &bytes)
        .await
        .assert(201);
    let r = app.get("/v2/multi/manifests/latest").await;
    assert_eq!(r.header("content-type"), Some(DOCKER_LIST));
    assert_eq!(r.body.as_ref(), &bytes[..]);
    // An OCI index of OCI images, by tag and by digest, byte for byte.
    let (_, oci) = app.push_image("multi", "oci", OCI_MANIFEST, 4).await;
    let index = json!({"schemaVersion":2,"mediaType":OCI_INDEX,"manifests":[
        {"mediaType":OCI_MANIFEST,"digest":oci,"size":1,"platform":{"architecture":"amd64","os":"linux"}}],
        "annotations":{"org.example":"index"}});
    let bytes = serde_json::to_vec_pretty(&index).unwrap();
    app.put_manifest("multi", "index", OCI_INDEX, &bytes)
        .await
        .assert(201);
    for reference in ["index".to_string(), digest_of(&bytes).to_string()] {
        let r = app.get(&format!("/v2/multi/manifests/{reference}")).await;
        r.assert(200);
        assert_eq!(r.header("content-type"), Some(OCI_INDEX));
        assert_eq!(r.body.as_ref(), &bytes[..], "{reference}");
        assert_eq!(
            r.header("docker-content-digest"),
            Some(digest_of(&bytes).to_string().as_str())
        );
    }
    // An index whose child is missing is refused.
    let missing = json!({"schemaVersion":2,"mediaType":OCI_INDEX,"manifests":[
        {"mediaType":OCI_MANIFEST,"digest":digest_of(b"no such manifest"),"size":1}]});
    app.put_manifest(
        "multi",
        "broken",
        OCI_INDEX,
        &serde_json::to_vec(&missing).unwrap(),
    )
    .await
    .assert_error(400, "MANIFEST_BLOB_UNKNOWN");
    // A child of another repository does not count.
    let elsewhere = json!({"schemaVersion":2,"mediaType":DOCKER_LIST,"manifests":[
        {"mediaType":DOCKER_MANIFEST,"digest":amd,"size":1}]});
    app.put_manifest(
        "other",
        "x",
        DOCKER_LIST,
        &serde_json::to_vec(&elsewhere).unwrap(),
    )
    .await
    .assert_error(400, "MANIFEST_BLOB_UNKNOWN");
}

#[tokio::test]
async fn manifest_blobs_must_be_in_the_repository() {
    let app = TestApp::new();
    let cfg = app.push_blob("one", b"{}").await;
    let layer = app.push_blob("elsewhere", b"layer").await;
    let m = json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":cfg,"size":2},
        "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":layer,"size":5}]});
    let r = app
        .put_manifest("one", "t", OCI_MANIFEST, &serde_json::to_vec(&m).unwrap())
        .await;
    r.assert_error(400, "MANIFEST_BLOB_UNKNOWN");
    assert!(
        r.json()["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains(&layer.to_string())
    );
    // Nothing was stored: no tag, no repository in the catalog.
    app.get("/v2/one/manifests/t")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    assert_eq!(
        app.get("/v2/_catalog").await.json()["repositories"],
        json!([])
    );
}

#[tokio::test]
async fn invalid_manifests_are_400() {
    let app = TestApp::new();
    let cfg = app.push_blob("v", b"{}").await;
    let good = json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":cfg,"size":2},"layers":[]});
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), OCI_MANIFEST),
        ("{}".into(), OCI_MANIFEST),
        (json!({"schemaVersion":1}).to_string(), OCI_MANIFEST),
        (good.to_string(), DOCKER_MANIFEST),
        (good.to_string(), "text/plain"),
        (json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,"config":{"mediaType":"x","digest":"sha256:1","size":1},"layers":[]}).to_string(), OCI_MANIFEST),
    ];
    for (body, ct) in cases {
        app.put_manifest("v", "t", ct, body.as_bytes())
            .await
            .assert_error(400, "MANIFEST_INVALID");
    }
    app.put_manifest("v", "bad:tag:x", OCI_MANIFEST, good.to_string().as_bytes())
        .await
        .assert_error(400, "DIGEST_INVALID");
    app.put_manifest("v", "-bad", OCI_MANIFEST, good.to_string().as_bytes())
        .await
        .assert_error(400, "MANIFEST_INVALID");
    app.put_manifest(
        "v",
        &"t".repeat(129),
        OCI_MANIFEST,
        good.to_string().as_bytes(),
    )
    .await
    .assert_error(400, "MANIFEST_INVALID");
    app.put_manifest("V", "t", OCI_MANIFEST, good.to_string().as_bytes())
        .await
        .assert_error(400, "NAME_INVALID");
}

#[tokio::test]
async fn manifests_over_4_mib_are_refused() {
    let app = TestApp::new();
    let big = vec![b' '; 4 * 1024 * 1024 + 1];
    app.put_manifest("big", "t", OCI_MANIFEST, &big)
        .await
        .assert_error(413, "SIZE_INVALID");
    // Without a Content-Length (streamed) the limit holds too.
    let stream = futures_util::stream::iter(
        (0..5).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 1024 * 1024]))),
    );
    app.call(
        "PUT",
        "/v2/big/manifests/t",
        &[("content-type", OCI_MANIFEST)],
        axum::body::Body::from_stream(stream),
    )
    .await
    .assert_error(413, "SIZE_INVALID");
}

#[tokio::test]
async fn delete_by_tag_keeps_the_manifest() {
    let app = TestApp::new();
    let (_, d) = app.push_image("del", "a", OCI_MANIFEST, 4).await;
    let bytes = app.get(&format!("/v2/del/manifests/{d}")).await.body;
    app.put_manifest("del", "b", OCI_MANIFEST, &bytes)
        .await
        .assert(201);
    app.delete("/v2/del/manifests/a").await.assert(202);
    app.get("/v2/del/manifests/a")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    app.get("/v2/del/manifests/b").await.assert(200);
    app.get(&format!("/v2/del/manifests/{d}")).await.assert(200);
    app.delete("/v2/del/manifests/a")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    // By digest: the manifest and every tag on it go.
    app.delete(&format!("/v2/del/manifests/{d}"))
        .await
        .assert(202);
    app.get(&format!("/v2/del/manifests/{d}"))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    app.get("/v2/del/manifests/b")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    app.delete("/v2/nope/manifests/latest")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn tags_move() {
    let app = TestApp::new();
    let (_, first) = app.push_image("mv", "latest", OCI_MANIFEST, 5).await;
    let (_, second) = app.push_image("mv", "latest", OCI_MANIFEST, 6).await;
    assert_ne!(first, second);
    let r = app.get("/v2/mv/manifests/latest").await;
    assert_eq!(
        r.header("docker-content-digest"),
        Some(second.to_string().as_str())
    );
    app.get(&format!("/v2/mv/manifests/{first}"))
        .await
        .assert(200);
}

#[tokio::test]
async fn artifacts_and_subject_header() {
    let app = TestApp::new();
    let (_, subject) = app.push_image("art", "v1", OCI_MANIFEST, 7).await;
    let empty = app.push_blob("art", b"{}").await;
    let sig = app.push_blob("art", b"signature").await;
    let artifact = json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,"artifactType":"application/vnd.example.sig",
        "config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":empty,"size":2},
        "layers":[{"mediaType":"application/octet-stream","digest":sig,"size":9}],
        "subject":{"mediaType":OCI_MANIFEST,"digest":subject,"size":1},
        "annotations":{"org.example":"yes"}});
    let bytes = serde_json::to_vec(&artifact).unwrap();
    let d = digest_of(&bytes);
    let r = app
        .put_manifest("art", &d.to_string(), OCI_MANIFEST, &bytes)
        .await;
    r.assert(201);
    assert_eq!(r.header("oci-subject"), Some(subject.to_string().as_str()));
    // A subject that does not exist (yet) is accepted, as OCI 1.1 asks.
    let dangling = json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,
        "config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":empty,"size":2},"layers":[],
        "subject":{"mediaType":OCI_MANIFEST,"digest":digest_of(b"future"),"size":1}});
    app.put_manifest(
        "art",
        "dangling",
        OCI_MANIFEST,
        &serde_json::to_vec(&dangling).unwrap(),
    )
    .await
    .assert(201);
}

#[tokio::test]
async fn references_that_are_neither_tag_nor_digest_find_nothing() {
    // What the OCI conformance suite asks with `.INVALID_MANIFEST_NAME`: nothing can be stored
    // under such a reference, so a read is 404 MANIFEST_UNKNOWN, and a push is 400 with a code
    // from the spec's table.
    let app = TestApp::new();
    app.push_image("refs/app", "v1", OCI_MANIFEST, 3).await;
    for r in [
        ".INVALID_MANIFEST_NAME",
        "-bad",
        &"t".repeat(129),
        "bad:tag",
    ] {
        let path = format!("/v2/refs/app/manifests/{r}");
        app.get(&path).await.assert_error(404, "MANIFEST_UNKNOWN");
        let head = app.head(&path).await;
        assert_eq!(head.status.as_u16(), 404, "HEAD {r}");
        assert!(head.body.is_empty());
        app.delete(&path)
            .await
            .assert_error(404, "MANIFEST_UNKNOWN");
    }
    let body = app.get("/v2/refs/app/manifests/v1").await.body;
    app.put_manifest("refs/app", ".INVALID_MANIFEST_NAME", OCI_MANIFEST, &body)
        .await
        .assert_error(400, "MANIFEST_INVALID");
    app.put_manifest("refs/app", "bad:tag", OCI_MANIFEST, &body)
        .await
        .assert_error(400, "DIGEST_INVALID");
    // Without credentials the repository is still private: a challenge, not a 404.
    let mut anon = app;
    anon.auth_header = None;
    anon.get("/v2/refs/app/manifests/.INVALID_MANIFEST_NAME")
        .await
        .assert_error(401, "UNAUTHORIZED");
}

/// Every error code berth emits is one of the OCI distribution spec's table, or one of the
/// two server-side ones (`UNKNOWN`, `UNAVAILABLE`) that only a fault of the server produces.
#[tokio::test]
async fn error_codes_come_from_the_spec_table() {
    const TABLE: &[&str] = &[
        "BLOB_UNKNOWN",
        "BLOB_UPLOAD_INVALID",
        "BLOB_UPLOAD_UNKNOWN",
        "DIGEST_INVALID",
        "MANIFEST_BLOB_UNKNOWN",
        "MANIFEST_INVALID",
        "MANIFEST_UNKNOWN",
        "NAME_INVALID",
        "NAME_UNKNOWN",
        "SIZE_INVALID",
        "UNAUTHORIZED",
        "DENIED",
        "UNSUPPORTED",
        "TOOMANYREQUESTS",
    ];
    let app = TestApp::new();
    let d = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let requests = [
        ("GET", "/v2/nothing/here".to_string()),
        ("GET", "/v2/A/tags/list".into()),
        ("GET", "/v2/none/tags/list".into()),
        ("GET", "/v2/none/tags/list?n=-1".into()),
        ("GET", format!("/v2/none/blobs/{d}")),
        ("GET", "/v2/none/blobs/sha256:xyz".into()),
        (
            "GET",
            "/v2/none/blobs/uploads/0123456789abcdef0123456789abcdef".into(),
        ),
        ("GET", "/v2/none/manifests/v1".into()),
        ("GET", "/v2/none/manifests/-bad".into()),
        ("PUT", "/v2/none/manifests/-bad".into()),
        ("PUT", "/v2/none/manifests/v1".into()),
        ("POST", "/v2/none/tags/list".into()),
        ("PUT", format!("/v2/none/blobs/uploads/x?digest={d}")),
    ];
    for (method, path) in requests {
        let r = app.call(method, &path, &[], "").await;
        assert!(r.status.is_client_error(), "{method} {path}: {}", r.status);
        let code = r.error_code();
        assert!(TABLE.contains(&code.as_str()), "{method} {path}: {code}");
    }
}
