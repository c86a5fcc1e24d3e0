//! Authentication and access on `/v2` and `/token`, through the router.

use berth::auth::accounts::{self, CLI};
use berth::clock::Clock;
use berth::db::audit;

use crate::common::{ADMIN_PASSWORD, OCI_MANIFEST, Resp, TestApp, basic, digest_of};

const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const UPLOAD: &str = "0123456789abcdef0123456789abcdef";

fn anonymous(app: &mut TestApp) {
    app.auth_header = None;
}

#[track_caller]
pub fn challenged(r: &Resp) {
    r.assert_error(401, "UNAUTHORIZED");
    let c = r
        .header("www-authenticate")
        .expect("a 401 carries WWW-Authenticate");
    assert!(c.starts_with("Bearer realm=\""), "{c}");
    assert!(c.contains("/token\""), "{c}");
    assert!(c.contains("service=\"berth\""), "{c}");
}

#[tokio::test]
async fn every_route_needs_credentials() {
    let mut app = TestApp::new();
    app.push_image("secret/app", "v1", OCI_MANIFEST, 1).await;
    anonymous(&mut app);
    let routes = [
        ("GET", "/v2/".to_string()),
        ("GET", "/v2/_catalog".to_string()),
        ("GET", "/v2/secret/app/tags/list".to_string()),
        ("GET", "/v2/secret/app/manifests/v1".to_string()),
        ("HEAD", "/v2/secret/app/manifests/v1".to_string()),
        ("PUT", "/v2/secret/app/manifests/v2".to_string()),
        ("DELETE", "/v2/secret/app/manifests/v1".to_string()),
        ("GET", format!("/v2/secret/app/blobs/{D}")),
        ("HEAD", format!("/v2/secret/app/blobs/{D}")),
        ("DELETE", format!("/v2/secret/app/blobs/{D}")),
        ("POST", "/v2/secret/app/blobs/uploads/".to_string()),
        ("GET", format!("/v2/secret/app/blobs/uploads/{UPLOAD}")),
        ("PATCH", format!("/v2/secret/app/blobs/uploads/{UPLOAD}")),
        (
            "PUT",
            format!("/v2/secret/app/blobs/uploads/{UPLOAD}?digest={D}"),
        ),
        ("DELETE", format!("/v2/secret/app/blobs/uploads/{UPLOAD}")),
        ("GET", format!("/v2/secret/app/referrers/{D}")),
    ];
    for (method, path) in &routes {
        let r = app.call(method, path, &[], "").await;
        if *method == "HEAD" {
            // No body on HEAD; the status and challenge still say it.
            r.assert(401);
            assert!(
                r.header("www-authenticate")
                    .unwrap()
                    .starts_with("Bearer realm=")
            );
        } else {
            challenged(&r);
        }
    }
    // A repository route names the scope to ask for.
    let r = app.get("/v2/secret/app/manifests/v1").await;
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("scope=\"repository:secret/app:pull\"")
    );
    let r = app
        .call("POST", "/v2/secret/app/blobs/uploads/", &[], "")
        .await;
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("scope=\"repository:secret/app:pull,push\"")
    );
    // Malformed credentials are a 401 too, never a 500.
    for bad in [
        "Basic !!!",
        "Basic dXNlcg==",
        "Digest x",
        "Bearer nonsense",
        "Bearer",
    ] {
        let r = app.call("GET", "/v2/", &[("authorization", bad)], "").await;
        challenged(&r);
    }
}

#[tokio::test]
async fn wrong_unknown_expired_and_revoked_credentials() {
    let app = TestApp::new();
    let bob = app.user("bob", &[("**", "*")]);
    app.call("GET", "/v2/", &[("authorization", &bob)], "")
        .await
        .assert(200);
    for auth in [
        basic("bob", "wrong"),
        basic("nobody", "x"),
        basic("bob", ""),
    ] {
        challenged(
            &app.call("GET", "/v2/", &[("authorization", &auth)], "")
                .await,
        );
    }
    let now = app.clock.now();
    let secret = app.token("bob", "short", &["**:pull"], Some(now + 60));
    let robot = basic("short", &secret);
    app.call("GET", "/v2/", &[("authorization", &robot)], "")
        .await
        .assert(200);
    // The name must match the secret's token.
    challenged(
        &app.call(
            "GET",
            "/v2/",
            &[("authorization", &basic("other", &secret))],
            "",
        )
        .await,
    );
    app.clock.advance(61);
    challenged(
        &app.call("GET", "/v2/", &[("authorization", &robot)], "")
            .await,
    );

    let secret = app.token("bob", "revoked", &["**:pull"], None);
    let robot = basic("revoked", &secret);
    app.call("GET", "/v2/", &[("authorization", &robot)], "")
        .await
        .assert(200);
    let bearer = token(&app, &robot, "repository:any:pull").await;
    app.call(
        "GET",
        "/v2/any/tags/list",
        &[("authorization", &bearer)],
        "",
    )
    .await
    .assert_error(404, "NAME_UNKNOWN");
    accounts::revoke_token(app.state.auth.db(), now, &CLI, "revoked").unwrap();
    challenged(
        &app.call("GET", "/v2/", &[("authorization", &robot)], "")
            .await,
    );
    // Also the bearer token handed out before the revocation.
    challenged(
        &app.call(
            "GET",
            "/v2/any/tags/list",
            &[("authorization", &bearer)],
            "",
        )
        .await,
    );
}

/// `GET /token` with `auth` for `scope`; returns `Bearer <token>`.
pub async fn token(app: &TestApp, auth: &str, scope: &str) -> String {
    let r = app
        .call(
            "GET",
            &format!("/token?service=berth&scope={scope}"),
            &[("authorization", auth)],
            "",
        )
        .await;
    r.assert(200);
    let t = r.json()["token"].as_str().expect("a token").to_string();
    assert_eq!(r.json()["access_token"], t);
    assert_eq!(r.json()["expires_in"], 300);
    format!("Bearer {t}")
}

#[tokio::test]
async fn pull_only_token_is_denied_push_and_delete() {
    let app = TestApp::new();
    let (_, d) = app.push_image("team/app", "v1", OCI_MANIFEST, 2).await;
    app.user("ci", &[("team/*", "pull,push,delete")]);
    let secret = app.token("ci", "cluster", &["team/*:pull"], None);
    let pull = basic("cluster", &secret);
    let h = [("authorization", pull.as_str())];
    app.call("GET", "/v2/team/app/manifests/v1", &h, "")
        .await
        .assert(200);
    app.call("GET", "/v2/team/app/tags/list", &h, "")
        .await
        .assert(200);
    app.call("POST", "/v2/team/app/blobs/uploads/", &h, "")
        .await
        .assert_error(403, "DENIED");
    app.call("PUT", "/v2/team/app/manifests/v2", &h, "{}")
        .await
        .assert_error(403, "DENIED");
    app.call("DELETE", &format!("/v2/team/app/manifests/{d}"), &h, "")
        .await
        .assert_error(403, "DENIED");
    // With a bearer token the same holds: the token server grants only pull.
    let bearer = token(&app, &pull, "repository:team/app:pull,push").await;
    let h = [("authorization", bearer.as_str())];
    app.call("GET", "/v2/team/app/manifests/v1", &h, "")
        .await
        .assert(200);
    app.call("POST", "/v2/team/app/blobs/uploads/", &h, "")
        .await
        .assert_error(403, "DENIED");
}

#[tokio::test]
async fn scoped_token_cannot_reach_read_mount_or_list_other_repositories() {
    let app = TestApp::new();
    let foreign = app.push_blob("team-b/app", b"team b layer").await;
    app.push_image("team-b/app", "v1", OCI_MANIFEST, 3).await;
    app.push_image("team-a/app", "v1", OCI_MANIFEST, 4).await;
    app.user("alice", &[("**", "pull,push")]);
    let secret = app.token("alice", "team-a-ci", &["team-a/*:pull,push"], None);
    let auth = basic("team-a-ci", &secret);
    let h = [("authorization", auth.as_str())];
    app.call("GET", "/v2/team-a/app/manifests/v1", &h, "")
        .await
        .assert(200);
    app.call("GET", "/v2/team-b/app/manifests/v1", &h, "")
        .await
        .assert_error(403, "DENIED");
    app.call("GET", &format!("/v2/team-b/app/blobs/{foreign}"), &h, "")
        .await
        .assert_error(403, "DENIED");
    app.call("GET", "/v2/team-b/app/tags/list", &h, "")
        .await
        .assert_error(403, "DENIED");
    // Nested repositories are outside `team-a/*`.
    app.call("GET", "/v2/team-a/app/sub/tags/list", &h, "")
        .await
        .assert_error(403, "DENIED");
    // A mount from a repository it cannot read falls back to a plain upload.
    let r = app
        .call(
            "POST",
            &format!("/v2/team-a/app/blobs/uploads/?mount={foreign}&from=team-b/app"),
            &h,
            "",
        )
        .await;
    r.assert(202);
    app.call("HEAD", &format!("/v2/team-a/app/blobs/{foreign}"), &h, "")
        .await
        .assert(404);
    // The catalog shows only what it may pull.
    let r = app.call("GET", "/v2/_catalog", &h, "").await;
    assert_eq!(r.json()["repositories"], serde_json::json!(["team-a/app"]));
    // The admin's robot sees everything.
    let r = app.get("/v2/_catalog").await;
    assert_eq!(
        r.json()["repositories"],
        serde_json::json!(["team-a/app", "team-b/app"])
    );
}

#[tokio::test]
async fn tokens_never_exceed_their_owner() {
    let app = TestApp::new();
    app.push_image("shared/app", "v1", OCI_MANIFEST, 5).await;
    app.user("dave", &[("shared/*", "pull")]);
    let secret = app.token("dave", "dave-ci", &["**:pull,push,delete"], None);
    let h_auth = basic("dave-ci", &secret);
    let h = [("authorization", h_auth.as_str())];
    app.call("GET", "/v2/shared/app/manifests/v1", &h, "")
        .await
        .assert(200);
    app.call("POST", "/v2/shared/app/blobs/uploads/", &h, "")
        .await
        .assert_error(403, "DENIED");
    // The owner loses the grant: the token loses it at once.
    accounts::revoke_grant(
        app.state.auth.db(),
        app.clock.now(),
        &CLI,
        "dave",
        "shared/*",
    )
    .unwrap();
    app.call("GET", "/v2/shared/app/manifests/v1", &h, "")
        .await
        .assert_error(403, "DENIED");
    // A disabled owner disables the token.
    accounts::grant(
        app.state.auth.db(),
        app.clock.now(),
        &CLI,
        "dave",
        "shared/*",
        "pull",
    )
    .unwrap();
    app.call("GET", "/v2/shared/app/manifests/v1", &h, "")
        .await
        .assert(200);
    accounts::set_disabled(app.state.auth.db(), app.clock.now(), &CLI, "dave", true).unwrap();
    challenged(&app.call("GET", "/v2/shared/app/manifests/v1", &h, "").await);
}

#[tokio::test]
async fn token_flow_get_and_oauth_post() {
    let app = TestApp::new();
    app.push_image("flow/app", "v1", OCI_MANIFEST, 6).await;
    let alice = app.user("alice", &[("flow/*", "pull,push")]);
    let bearer = token(&app, &alice, "repository:flow/app:pull").await;
    let h = [("authorization", bearer.as_str())];
    app.call("GET", "/v2/", &h, "").await.assert(200);
    app.call("GET", "/v2/flow/app/manifests/v1", &h, "")
        .await
        .assert(200);
    // Allowed for the holder but not in this token: a challenge for the wider scope.
    let r = app
        .call("POST", "/v2/flow/app/blobs/uploads/", &h, "")
        .await;
    challenged(&r);
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("scope=\"repository:flow/app:pull,push\"")
    );
    // Not allowed for the holder at all: denied.
    app.call("GET", "/v2/other/manifests/v1", &h, "")
        .await
        .assert_error(403, "DENIED");
    // Several scopes in one request, one of them beyond the holder: only the rest is granted.
    let bearer = token(
        &app,
        &alice,
        "repository:flow/app:pull,push&scope=repository:other:pull",
    )
    .await;
    let h = [("authorization", bearer.as_str())];
    app.call("POST", "/v2/flow/app/blobs/uploads/", &h, "")
        .await
        .assert(202);

    // The OAuth2 form containerd posts.
    let form = "grant_type=password&username=alice&password=alice-password&service=berth&scope=repository%3Aflow%2Fapp%3Apull&client_id=containerd";
    let r = app
        .call(
            "POST",
            "/token",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("authorization", ""),
            ],
            form,
        )
        .await;
    r.assert(200);
    let t = r.json()["access_token"].as_str().unwrap().to_string();
    app.call(
        "GET",
        "/v2/flow/app/manifests/v1",
        &[("authorization", &format!("Bearer {t}"))],
        "",
    )
    .await
    .assert(200);
    let bad =
        "grant_type=password&username=alice&password=nope&scope=repository%3Aflow%2Fapp%3Apull";
    app.call("POST", "/token", &[("authorization", "")], bad)
        .await
        .assert(401);
    let r = app
        .call(
            "POST",
            "/token",
            &[("authorization", "")],
            "grant_type=refresh_token&refresh_token=x",
        )
        .await;
    r.assert(400);
    assert_eq!(r.json()["error"], "unsupported_grant_type");

    // Wrong credentials at /token: 401 with a Basic challenge.
    let r = app
        .call(
            "GET",
            "/token?scope=repository:flow/app:pull",
            &[("authorization", &basic("alice", "x"))],
            "",
        )
        .await;
    r.assert(401);
    assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"berth\""));
    // A bearer token cannot be traded for another (wider or fresher) one.
    let narrow = token(&app, &alice, "repository:flow/app:pull").await;
    let r = app
        .call(
            "GET",
            "/token?scope=repository:flow/app:pull,push",
            &[("authorization", &narrow)],
            "",
        )
        .await;
    r.assert_error(401, "UNAUTHORIZED");
    assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"berth\""));
    // A forged token is refused.
    let forged = format!("{}x", bearer);
    challenged(
        &app.call("GET", "/v2/", &[("authorization", &forged)], "")
            .await,
    );
}

#[tokio::test]
async fn anonymous_pulls_only_where_opened() {
    let mut app = TestApp::new();
    app.push_image("public/tool", "v1", OCI_MANIFEST, 7).await;
    app.push_image("private/tool", "v1", OCI_MANIFEST, 8).await;
    accounts::set_anonymous(
        app.state.auth.db(),
        app.clock.now(),
        &CLI,
        "public/**",
        true,
    )
    .unwrap();
    anonymous(&mut app);
    app.get("/v2/public/tool/manifests/v1").await.assert(200);
    app.get("/v2/public/tool/tags/list").await.assert(200);
    challenged(&app.get("/v2/private/tool/manifests/v1").await);
    challenged(
        &app.call("POST", "/v2/public/tool/blobs/uploads/", &[], "")
            .await,
    );
    challenged(
        &app.call("DELETE", "/v2/public/tool/manifests/v1", &[], "")
            .await,
    );
    // docker pull's anonymous token dance: a token without credentials covers public pulls.
    let r = app.get("/token?service=berth&scope=repository:public/tool:pull&scope=repository:private/tool:pull").await;
    r.assert(200);
    let bearer = format!("Bearer {}", r.json()["token"].as_str().unwrap());
    let h = [("authorization", bearer.as_str())];
    app.call("GET", "/v2/", &h, "").await.assert(200);
    app.call("GET", "/v2/public/tool/manifests/v1", &h, "")
        .await
        .assert(200);
    challenged(
        &app.call("GET", "/v2/private/tool/manifests/v1", &h, "")
            .await,
    );
    // Closing it again takes effect at once.
    accounts::set_anonymous(
        app.state.auth.db(),
        app.clock.now(),
        &CLI,
        "public/**",
        false,
    )
    .unwrap();
    challenged(&app.get("/v2/public/tool/manifests/v1").await);
}

#[tokio::test]
async fn failed_logins_are_throttled_per_address_and_audited() {
    let app = TestApp::new();
    let good = basic("admin", ADMIN_PASSWORD);
    let bad = basic("admin", "guess");
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(
            app.call_from("10.0.0.1", "GET", "/v2/", &[("authorization", &bad)])
                .await
                .status
                .as_u16(),
        );
    }
    assert_eq!(&statuses[..5], [401; 5], "{statuses:?}");
    assert!(
        statuses[5..].contains(&429),
        "a burst locks out: {statuses:?}"
    );
    // Locked out: even the right password from that address waits.
    let r = app
        .call_from("10.0.0.1", "GET", "/v2/", &[("authorization", &good)])
        .await;
    r.assert_error(429, "TOOMANYREQUESTS");
    assert!(r.header("retry-after").unwrap().parse::<i64>().unwrap() >= 1);
    // From another address the owner gets in.
    app.call_from("10.0.0.2", "GET", "/v2/", &[("authorization", &good)])
        .await
        .assert(200);
    // The lockout passes with time.
    app.clock.advance(3600);
    app.call_from("10.0.0.1", "GET", "/v2/", &[("authorization", &good)])
        .await
        .assert(200);

    let entries = app
        .state
        .auth
        .db()
        .read_blocking(|c| audit::recent(c, 100))
        .unwrap();
    let failures: Vec<_> = entries
        .iter()
        .filter(|e| e.action == "login.failed")
        .collect();
    assert!(failures.len() >= 5, "{}", failures.len());
    assert_eq!(failures[0].actor.as_deref(), Some("admin"));
    assert_eq!(failures[0].client_addr.as_deref(), Some("10.0.0.1"));
}

#[tokio::test]
async fn token_changes_and_deletes_are_audited() {
    let app = TestApp::new();
    let (_, d) = app.push_image("aud/app", "v1", OCI_MANIFEST, 9).await;
    let blob = app.push_blob("aud/app", b"to delete").await;
    app.call_from(
        "10.1.1.1",
        "DELETE",
        "/v2/aud/app/manifests/v1",
        &[("authorization", app.auth_header.as_deref().unwrap())],
    )
    .await
    .assert(202);
    app.delete(&format!("/v2/aud/app/manifests/{d}"))
        .await
        .assert(202);
    app.delete(&format!("/v2/aud/app/blobs/{blob}"))
        .await
        .assert(202);
    app.token("admin", "later-revoked", &["**:pull"], None);
    accounts::revoke_token(app.state.auth.db(), app.clock.now(), &CLI, "later-revoked").unwrap();
    let entries = app
        .state
        .auth
        .db()
        .read_blocking(|c| audit::recent(c, 100))
        .unwrap();
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e.action.as_str(), e.detail.as_deref().unwrap_or("")))
        .collect();
    for (action, detail) in [
        ("manifest.delete", "aud/app:v1".to_string()),
        ("manifest.delete", format!("aud/app:{d}")),
        ("blob.delete", format!("aud/app@{blob}")),
        (
            "token.create",
            "test-robot of admin [**:pull,push,delete]".to_string(),
        ),
        ("token.revoke", "later-revoked".to_string()),
    ] {
        assert!(
            actions.contains(&(action, detail.as_str())),
            "{action} {detail} in {actions:?}"
        );
    }
    let first = entries
        .iter()
        .find(|e| e.detail.as_deref() == Some("aud/app:v1"))
        .unwrap();
    assert_eq!(first.actor.as_deref(), Some("test-robot"));
    assert_eq!(first.client_addr.as_deref(), Some("10.1.1.1"));
    // Nothing secret is recorded.
    let _ = digest_of(b"");
}

#[tokio::test]
async fn a_bearer_token_does_not_pass_to_a_new_user_with_a_reused_id() {
    let app = TestApp::new();
    app.push_image("reuse/app", "v1", OCI_MANIFEST, 10).await;
    let old = app.user("leaver", &[("reuse/*", "pull")]);
    let bearer = token(&app, &old, "repository:reuse/app:pull").await;
    let h = [("authorization", bearer.as_str())];
    app.call("GET", "/v2/reuse/app/manifests/v1", &h, "")
        .await
        .assert(200);
    accounts::remove_user(app.state.auth.db(), app.clock.now(), &CLI, "leaver").unwrap();
    app.clock.advance(1);
    // The new user gets the deleted one's row id (SQLite reuses the highest rowid).
    app.user("newcomer", &[("reuse/*", "pull")]);
    challenged(&app.call("GET", "/v2/reuse/app/manifests/v1", &h, "").await);
}

/// GET and HEAD of `path` with `auth` (`None`: no credentials); their statuses.
async fn manifest_statuses(app: &TestApp, path: &str, auth: Option<&str>) -> (u16, u16) {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
    let get = app.call("GET", path, &headers, "").await;
    let head = app.call("HEAD", path, &headers, "").await;
    (get.status.as_u16(), head.status.as_u16())
}

/// A manifest read whose caller's state is cached decides access from the cache and checks in
/// its own database read that the auth epoch has not moved since. Every change made before a
/// read still applies to it, whoever made it; an unrelated change costs a fresh read, not
/// access.
#[tokio::test]
async fn cached_manifest_reads_see_every_change_made_before_them() {
    let mut app = TestApp::new();
    app.push_image("team/app", "v1", OCI_MANIFEST, 1).await;
    let path = "/v2/team/app/manifests/v1";
    let (db, now) = (app.state.auth.db().clone(), app.clock.now());
    // Twice each: the second read finds the state cached by the first.
    let twice_ok = async |app: &TestApp, auth: Option<&str>| {
        for _ in 0..2 {
            assert_eq!(manifest_statuses(app, path, auth).await, (200, 200));
        }
    };

    // A grant taken away.
    let carol = app.user("carol", &[("team/*", "pull")]);
    twice_ok(&app, Some(&carol)).await;
    accounts::revoke_grant(&db, now, &CLI, "carol", "team/*").unwrap();
    assert_eq!(
        manifest_statuses(&app, path, Some(&carol)).await,
        (403, 403)
    );

    // A user disabled.
    let dave = app.user("dave", &[("team/*", "pull")]);
    twice_ok(&app, Some(&dave)).await;
    accounts::set_disabled(&db, now, &CLI, "dave", true).unwrap();
    assert_eq!(manifest_statuses(&app, path, Some(&dave)).await, (401, 401));

    // A robot token revoked.
    let secret = app.token("admin", "ci", &["team/*:pull"], None);
    let robot = basic("ci", &secret);
    twice_ok(&app, Some(&robot)).await;
    accounts::revoke_token(&db, now, &CLI, "ci").unwrap();
    assert_eq!(
        manifest_statuses(&app, path, Some(&robot)).await,
        (401, 401)
    );

    // A bearer token's holder disabled after it was issued.
    let erin = app.user("erin", &[("team/*", "pull")]);
    let bearer = token(&app, &erin, "repository:team/app:pull").await;
    twice_ok(&app, Some(&bearer)).await;
    accounts::set_disabled(&db, now, &CLI, "erin", true).unwrap();
    assert_eq!(
        manifest_statuses(&app, path, Some(&bearer)).await,
        (401, 401)
    );

    // A repository closed to anonymous pulls again.
    accounts::set_anonymous(&db, now, &CLI, "team/*", true).unwrap();
    anonymous(&mut app);
    twice_ok(&app, None).await;
    accounts::set_anonymous(&db, now, &CLI, "team/*", false).unwrap();
    assert_eq!(manifest_statuses(&app, path, None).await, (401, 401));

    // An unrelated change: the state is read afresh and still grants; an unknown manifest
    // is a 404 only for a caller who may pull.
    let frank = app.user("frank", &[("team/*", "pull")]);
    twice_ok(&app, Some(&frank)).await;
    app.user("grace", &[]);
    twice_ok(&app, Some(&frank)).await;
    let missing = "/v2/team/app/manifests/missing";
    assert_eq!(
        manifest_statuses(&app, missing, Some(&frank)).await,
        (404, 404)
    );
    accounts::revoke_grant(&db, now, &CLI, "frank", "team/*").unwrap();
    assert_eq!(
        manifest_statuses(&app, missing, Some(&frank)).await,
        (403, 403)
    );
}

/// A client that keeps pulling manifests with a revoked robot token (a CI runner nobody
/// updated) is throttled like any failing login: its own pair is locked out, and other
/// accounts from the same address still get in. A cached state of the token must neither
/// answer for it nor clear its failure count.
#[tokio::test]
async fn a_revoked_token_pulling_manifests_locks_out_only_its_own_pair() {
    let app = TestApp::new();
    app.push_image("team/app", "v1", OCI_MANIFEST, 1).await;
    let path = "/v2/team/app/manifests/v1";
    let ip = "10.0.0.9";
    let secret = app.token("admin", "ci", &["team/*:pull"], None);
    let robot = basic("ci", &secret);
    let frank = app.user("frank", &[("team/*", "pull")]);
    for auth in [&robot, &robot, &frank] {
        app.call_from(ip, "GET", path, &[("authorization", auth)])
            .await
            .assert(200);
    }
    let now = app.clock.now();
    accounts::revoke_token(app.state.auth.db(), now, &CLI, "ci").unwrap();
    let mut statuses = Vec::new();
    for _ in 0..40 {
        let r = app
            .call_from(ip, "GET", path, &[("authorization", &robot)])
            .await;
        statuses.push(r.status.as_u16());
    }
    assert_eq!(&statuses[..5], [401; 5], "{statuses:?}");
    assert!(
        statuses[5..].iter().all(|&s| s == 429),
        "the pair stays locked: {statuses:?}"
    );
    app.call_from(ip, "GET", path, &[("authorization", &frank)])
        .await
        .assert(200);
}
