//! Bearer tokens end with what they stood for: a removed user (even when a new one gets the
//! same row id in the same second), a password change, a disable (also after the enable that
//! follows), a rotated robot token. Nothing here moves the clock: each change happens in the
//! same second as the token it must end.

use berth::auth::accounts::{self, CLI};
use berth::clock::Clock;

use crate::api_auth::{challenged, token};
use crate::common::{OCI_MANIFEST, TestApp, basic};

const PATH: &str = "/v2/ids/app/manifests/v1";

async fn app_with_image() -> TestApp {
    let app = TestApp::new();
    app.push_image("ids/app", "v1", OCI_MANIFEST, 10).await;
    app
}

async fn reads(app: &TestApp, bearer: &str) -> u16 {
    app.call("GET", PATH, &[("authorization", bearer)], "")
        .await
        .status
        .as_u16()
}

#[tokio::test]
async fn a_new_user_with_a_reused_id_in_the_same_second_does_not_inherit_a_bearer_token() {
    let app = app_with_image().await;
    let old = app.user("leaver", &[("ids/*", "pull")]);
    let bearer = token(&app, &old, "repository:ids/app:pull").await;
    assert_eq!(reads(&app, &bearer).await, 200);
    accounts::remove_user(app.state.auth.db(), app.clock.now(), &CLI, "leaver").unwrap();
    app.user("newcomer", &[("ids/*", "pull")]);
    challenged(
        &app.call("GET", PATH, &[("authorization", bearer.as_str())], "")
            .await,
    );
}

#[tokio::test]
async fn a_password_change_ends_the_bearer_tokens_issued_before_it() {
    let app = app_with_image().await;
    let auth = app.user("dev", &[("ids/*", "pull")]);
    let bearer = token(&app, &auth, "repository:ids/app:pull").await;
    assert_eq!(reads(&app, &bearer).await, 200);
    let db = app.state.auth.db();
    accounts::set_password(db, app.clock.now(), &CLI, "dev", "a-new-password").unwrap();
    assert_eq!(reads(&app, &bearer).await, 401);
    // The new password gets a new token that works.
    let fresh = token(
        &app,
        &basic("dev", "a-new-password"),
        "repository:ids/app:pull",
    )
    .await;
    assert_eq!(reads(&app, &fresh).await, 200);
}

#[tokio::test]
async fn enabling_a_user_again_does_not_revive_tokens_from_before_the_disable() {
    let app = app_with_image().await;
    let auth = app.user("dev", &[("ids/*", "pull")]);
    let bearer = token(&app, &auth, "repository:ids/app:pull").await;
    let db = app.state.auth.db();
    accounts::set_disabled(db, app.clock.now(), &CLI, "dev", true).unwrap();
    assert_eq!(reads(&app, &bearer).await, 401);
    accounts::set_disabled(db, app.clock.now(), &CLI, "dev", false).unwrap();
    assert_eq!(reads(&app, &bearer).await, 401);
    let fresh = token(&app, &auth, "repository:ids/app:pull").await;
    assert_eq!(reads(&app, &fresh).await, 200);
}

#[tokio::test]
async fn a_rotated_robot_token_refuses_its_old_secret_and_bearer_tokens() {
    let app = app_with_image().await;
    let db = app.state.auth.db();
    let old_secret = app.token("admin", "ci", &["ids/*:pull"], None);
    let old_basic = basic("ci", &old_secret);
    let bearer = token(&app, &old_basic, "repository:ids/app:pull").await;
    assert_eq!(reads(&app, &bearer).await, 200);
    let new_secret = accounts::rotate_token(db, app.clock.now(), &CLI, "ci").unwrap();
    assert_ne!(new_secret.expose(), old_secret);
    assert_eq!(reads(&app, &bearer).await, 401);
    assert_eq!(reads(&app, &old_basic).await, 401);
    let new_basic = basic("ci", new_secret.expose());
    assert_eq!(reads(&app, &new_basic).await, 200);
    // Same name, scopes and expiry: still pull-only.
    let listed = accounts::list_tokens(db, None).unwrap();
    let ci = listed.iter().find(|t| t.token.name == "ci").unwrap();
    assert_eq!(ci.scopes, vec![("ids/*".to_string(), "pull".to_string())]);
    assert_eq!(ci.token.expires_at, None);
    app.call("DELETE", PATH, &[("authorization", new_basic.as_str())], "")
        .await
        .assert_error(403, "DENIED");
    let audit = berth::db::audit::recent;
    let entries = db.read_blocking(|c| audit(c, 5)).unwrap();
    assert!(entries.iter().any(|e| e.action == "token.rotate"));
}

#[tokio::test]
async fn only_revoked_or_expired_tokens_are_removed_and_their_names_come_free() {
    let app = TestApp::new();
    let db = app.state.auth.db();
    let now = app.clock.now();
    app.token("admin", "ci", &["**:pull"], None);
    let e = accounts::remove_token(db, now, &CLI, "ci").unwrap_err();
    assert!(e.to_string().contains("still active"), "{e}");
    assert!(accounts::rotate_token(db, now, &CLI, "nope").is_err());
    accounts::revoke_token(db, now, &CLI, "ci").unwrap();
    let e = accounts::rotate_token(db, now, &CLI, "ci").unwrap_err();
    assert!(e.to_string().contains("revoked or expired"), "{e}");
    accounts::remove_token(db, now, &CLI, "ci").unwrap();
    assert!(
        accounts::list_tokens(db, None)
            .unwrap()
            .iter()
            .all(|t| t.token.name != "ci")
    );
    // The name is free again, and an expired token can be removed too.
    app.token("admin", "ci", &["**:pull"], Some(now + 10));
    app.clock.advance(11);
    accounts::remove_token(db, app.clock.now(), &CLI, "ci").unwrap();
}
