//! Tag lists, the catalog and the referrers API.

use serde_json::json;

use crate::common::{OCI_INDEX, OCI_MANIFEST, TestApp, digest_of};

async fn tagged(app: &TestApp, repo: &str, tags: &[&str]) {
    let (bytes, _) = app.push_image(repo, tags[0], OCI_MANIFEST, 9).await;
    for t in &tags[1..] {
        app.put_manifest(repo, t, OCI_MANIFEST, &bytes)
            .await
            .assert(201);
    }
}

#[tokio::test]
async fn tags_are_sorted_and_paginated() {
    let app = TestApp::new();
    tagged(&app, "t/list", &["v2", "latest", "B", "a", "v10", "_x"]).await;
    let r = app.get("/v2/t/list/tags/list").await;
    r.assert(200);
    assert_eq!(
        r.json(),
        json!({"name":"t/list","tags":["B","_x","a","latest","v10","v2"]})
    );
    assert!(r.header("link").is_none());

    let r = app.get("/v2/t/list/tags/list?n=2").await;
    assert_eq!(r.json()["tags"], json!(["B", "_x"]));
    assert_eq!(
        r.header("link"),
        Some("</v2/t/list/tags/list?n=2&last=_x>; rel=\"next\"")
    );
    let r = app.get("/v2/t/list/tags/list?n=2&last=_x").await;
    assert_eq!(r.json()["tags"], json!(["a", "latest"]));
    let r = app.get("/v2/t/list/tags/list?n=2&last=latest").await;
    assert_eq!(r.json()["tags"], json!(["v10", "v2"]));
    assert!(
        r.header("link").is_none(),
        "no next page after the last one"
    );
    let r = app.get("/v2/t/list/tags/list?last=v10").await;
    assert_eq!(r.json()["tags"], json!(["v2"]));
    let r = app.get("/v2/t/list/tags/list?n=0").await;
    assert_eq!(r.json()["tags"], json!([]));
    app.get("/v2/t/list/tags/list?n=-1")
        .await
        .assert_error(400, "UNSUPPORTED");
    app.get("/v2/t/list/tags/list?n=abc")
        .await
        .assert_error(400, "UNSUPPORTED");
}

#[tokio::test]
async fn tags_of_unknown_repository() {
    let app = TestApp::new();
    app.get("/v2/never/tags/list")
        .await
        .assert_error(404, "NAME_UNKNOWN");
    app.get("/v2/Bad/tags/list")
        .await
        .assert_error(400, "NAME_INVALID");
}

#[tokio::test]
async fn catalog_is_sorted_and_paginated() {
    let app = TestApp::new();
    for repo in ["zeta", "alpha/one", "alpha", "mid/x/y"] {
        tagged(&app, repo, &["v1"]).await;
    }
    // A repository with only blobs is not listed.
    app.push_blob("blobs-only", b"x").await;
    let r = app.get("/v2/_catalog").await;
    assert_eq!(
        r.json(),
        json!({"repositories":["alpha","alpha/one","mid/x/y","zeta"]})
    );
    let r = app.get("/v2/_catalog?n=3").await;
    assert_eq!(
        r.json()["repositories"],
        json!(["alpha", "alpha/one", "mid/x/y"])
    );
    assert_eq!(
        r.header("link"),
        Some("</v2/_catalog?n=3&last=mid/x/y>; rel=\"next\"")
    );
    let r = app.get("/v2/_catalog?n=3&last=mid/x/y").await;
    assert_eq!(r.json()["repositories"], json!(["zeta"]));
    assert!(r.header("link").is_none());
}

#[tokio::test]
async fn referrers_with_artifact_type_filter() {
    let app = TestApp::new();
    let (_, subject) = app.push_image("ref", "v1", OCI_MANIFEST, 11).await;
    let empty = app.push_blob("ref", b"{}").await;
    let mut pushed = Vec::new();
    for (kind, note) in [
        ("application/vnd.example.sbom", "a"),
        ("application/vnd.example.sig", "b"),
    ] {
        let m = json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,"artifactType":kind,
            "config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":empty,"size":2},"layers":[],
            "subject":{"mediaType":OCI_MANIFEST,"digest":subject,"size":1},
            "annotations":{"note":note}});
        let bytes = serde_json::to_vec(&m).unwrap();
        app.put_manifest("ref", &digest_of(&bytes).to_string(), OCI_MANIFEST, &bytes)
            .await
            .assert(201);
        pushed.push((digest_of(&bytes), bytes.len(), kind, note));
    }
    // An index can refer too, its artifactType taken from the index itself.
    let idx = json!({"schemaVersion":2,"mediaType":OCI_INDEX,"artifactType":"application/vnd.example.bundle",
        "manifests":[],"subject":{"mediaType":OCI_MANIFEST,"digest":subject,"size":1}});
    let idx_bytes = serde_json::to_vec(&idx).unwrap();
    app.put_manifest("ref", "bundle", OCI_INDEX, &idx_bytes)
        .await
        .assert(201);

    let r = app.get(&format!("/v2/ref/referrers/{subject}")).await;
    r.assert(200);
    assert_eq!(r.header("content-type"), Some(OCI_INDEX));
    assert!(r.header("oci-filters-applied").is_none());
    let body = r.json();
    assert_eq!(body["schemaVersion"], 2);
    assert_eq!(body["mediaType"], OCI_INDEX);
    let list = body["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    for (d, size, kind, note) in &pushed {
        let e = list
            .iter()
            .find(|e| e["digest"] == d.to_string())
            .expect("referrer listed");
        assert_eq!(e["size"], *size);
        assert_eq!(e["artifactType"], *kind);
        assert_eq!(e["mediaType"], OCI_MANIFEST);
        assert_eq!(e["annotations"]["note"], *note);
    }

    let r = app
        .get(&format!(
            "/v2/ref/referrers/{subject}?artifactType=application/vnd.example.sig"
        ))
        .await;
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
    let list = r.json()["manifests"].as_array().unwrap().clone();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], pushed[1].0.to_string());

    // Unknown subject: an empty index, not an error.
    let r = app
        .get(&format!("/v2/ref/referrers/{}", digest_of(b"nothing")))
        .await;
    r.assert(200);
    assert_eq!(r.json()["manifests"], json!([]));
    app.get("/v2/ref/referrers/sha256:bad")
        .await
        .assert_error(400, "DIGEST_INVALID");
    // Referrers of one repository are not visible from another.
    let r = app.get(&format!("/v2/other/referrers/{subject}")).await;
    assert_eq!(r.json()["manifests"], json!([]));
}
