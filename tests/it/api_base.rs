//! `GET /v2/`, unknown endpoints, unsupported methods.

use crate::common::TestApp;

#[tokio::test]
async fn base_answers_with_api_version() {
    let app = TestApp::new();
    for path in ["/v2/", "/v2"] {
        let r = app.get(path).await;
        r.assert(200);
        assert_eq!(
            r.header("docker-distribution-api-version"),
            Some("registry/2.0")
        );
        assert_eq!(r.json(), serde_json::json!({}));
    }
}

#[tokio::test]
async fn unknown_endpoints_are_404_json() {
    let app = TestApp::new();
    app.get("/v2/a/nothing/here")
        .await
        .assert_error(404, "UNSUPPORTED");
    app.get("/v2/a").await.assert_error(404, "UNSUPPORTED");
    app.get("/elsewhere").await.assert(404);
}

#[tokio::test]
async fn wrong_methods_are_405_unsupported() {
    let app = TestApp::new();
    app.call("POST", "/v2/a/tags/list", &[], "")
        .await
        .assert_error(405, "UNSUPPORTED");
    app.call("PATCH", "/v2/a/manifests/x", &[], "")
        .await
        .assert_error(405, "UNSUPPORTED");
    app.call("PUT", "/v2/_catalog", &[], "")
        .await
        .assert_error(405, "UNSUPPORTED");
}
