//! The web UI's management pages through the real router: robot tokens (secret once,
//! snippets, rotate, revoke), users and grants, the audit log, retention previews and runs,
//! garbage collection.

use crate::common::browser::{Browser, text};
use crate::common::{ADMIN_PASSWORD, OCI_MANIFEST, TestApp, basic, blob_files};
use crate::ui::assert_sign_in_page;

/// The secret shown in a token page (`<code id="secret">…</code>`).
fn secret_in(html: &str) -> String {
    let start = html
        .find(r#"<code id="secret">"#)
        .expect("a secret on the page")
        + 18;
    let end = start + html[start..].find("</code>").unwrap();
    html[start..end].to_string()
}

#[tokio::test]
async fn a_token_secret_is_shown_once_with_snippets_and_works() {
    let app = TestApp::new();
    app.push_image("team/app", "v1", OCI_MANIFEST, 1).await;
    app.user("dev", &[("team/*", "pull,push")]);
    let b = Browser::signed_in(&app, "dev", "dev-password").await;
    let r = b
        .post(
            "/tokens",
            "name=ci&repositories=team%2F*&action=pull&action=push&expires=30",
            &[],
        )
        .await;
    r.assert(200);
    let html = text(&r);
    let secret = secret_in(&html);
    assert!(secret.starts_with("berth_rt_"), "{secret}");
    assert!(
        html.contains(&format!(
            "printf &#39;%s&#39; &#39;{secret}&#39; | docker login localhost -u ci --password-stdin"
        )),
        "{html}"
    );
    assert!(html.contains("registries.yaml") && html.contains("docker/login-action@v3"));
    assert!(html.contains("kubectl create secret docker-registry berth-ci"));
    // The secret is a working credential with the scopes asked for.
    let auth = basic("ci", &secret);
    let r = app
        .call(
            "GET",
            "/v2/team/app/manifests/v1",
            &[("authorization", &auth), ("accept", OCI_MANIFEST)],
            axum::body::Body::empty(),
        )
        .await;
    r.assert(200);
    // Listed with its scopes and expiry, and the secret nowhere any more.
    let html = text(&b.get("/tokens").await);
    assert!(!html.contains(&secret), "the secret is shown only once");
    assert!(html.contains("<code>team/*: pull,push</code>"), "{html}");
    assert!(html.contains("in 30 days"), "{html}");

    // Rotate: a new secret, once; the old one stops working.
    let r = b.post("/tokens/ci/rotate", "", &[]).await;
    r.assert(200);
    let fresh = secret_in(&text(&r));
    assert_ne!(fresh, secret);
    let old = app
        .call(
            "GET",
            "/v2/team/app/tags/list",
            &[("authorization", &auth)],
            axum::body::Body::empty(),
        )
        .await;
    old.assert(401);
    // Revoke: listed as revoked, refused.
    b.post("/tokens/ci/revoke", "", &[]).await.assert(303);
    assert!(text(&b.get("/tokens").await).contains("revoked"));
    let r = app
        .call(
            "GET",
            "/v2/team/app/tags/list",
            &[("authorization", &basic("ci", &fresh))],
            axum::body::Body::empty(),
        )
        .await;
    r.assert(401);
}

#[tokio::test]
async fn token_forms_explain_refusals_and_users_manage_only_their_own() {
    let app = TestApp::new();
    app.user("dev", &[("team/*", "pull")]);
    app.user("other", &[]);
    app.token("other", "others-token", &["**:pull"], None);
    let b = Browser::signed_in(&app, "dev", "dev-password").await;
    // Each refusal is explained on the page, and no secret is shown.
    for (form, says) in [
        (
            "name=ci&repositories=&action=pull&expires=30",
            "name at least one repository",
        ),
        (
            "name=Bad+Name&repositories=a&action=pull&expires=7",
            "invalid name",
        ),
        (
            "name=x&repositories=a&expires=7",
            "choose at least one action",
        ),
        (
            "name=others-token&repositories=a&action=pull&expires=7",
            "already exists",
        ),
    ] {
        let html = text(&b.post("/tokens", form, &[]).await);
        assert!(html.contains(says), "{form}: {html}");
        assert!(!html.contains(r#"<code id="secret">"#), "{form}");
    }
    // Someone else's token is neither listed nor reachable.
    assert!(!text(&b.get("/tokens").await).contains("others-token"));
    b.post("/tokens/others-token/revoke", "", &[])
        .await
        .assert(404);
    // The administrator sees every token, with its owner.
    let admin = Browser::signed_in(&app, "admin", ADMIN_PASSWORD).await;
    let html = text(&admin.get("/tokens").await);
    assert!(
        html.contains("others-token") && html.contains("All tokens"),
        "{html}"
    );
}

#[tokio::test]
async fn a_cross_site_token_creation_is_refused_and_creates_nothing() {
    let app = TestApp::new();
    let b = Browser::signed_in(&app, "admin", ADMIN_PASSWORD).await;
    let r = b
        .post(
            "/tokens",
            "name=stolen&repositories=**&action=pull&action=push&expires=never",
            &[
                ("sec-fetch-site", "same-site"),
                ("origin", "http://localhost:18081"),
            ],
        )
        .await;
    r.assert(403);
    assert!(!text(&b.get("/tokens").await).contains("stolen"));
}

#[tokio::test]
async fn management_pages_are_for_administrators() {
    let app = TestApp::new();
    app.user("dev", &[("**", "pull,push,delete")]);
    let b = Browser::signed_in(&app, "dev", "dev-password").await;
    for path in ["/users", "/audit", "/retention", "/gc", "/gc/1"] {
        let r = b.get(path).await;
        r.assert(403);
        assert!(
            text(&r).contains("this page is for administrators"),
            "{path}"
        );
    }
    for (path, form) in [
        ("/users", "name=x&password=long-enough-password"),
        ("/users/admin/disable", ""),
        ("/anonymous", "pattern=**&open=yes"),
        ("/retention", "do=run"),
        ("/gc", "mode=run"),
    ] {
        b.post(path, form, &[]).await.assert(403);
    }
    let html = text(&b.get("/").await);
    assert!(
        !html.contains(r#"href="/users""#),
        "no admin links for users"
    );
    assert!(html.contains(r#"href="/tokens""#));
    // Nothing was changed by the refused posts.
    let users = berth::auth::accounts::list_users(app.state.auth.db()).unwrap();
    assert!(!users.iter().any(|u| u.user.name == "x"));
    assert!(
        berth::auth::accounts::anonymous_patterns(app.state.auth.db())
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn administrators_manage_users_grants_and_anonymous_pulls() {
    let app = TestApp::new();
    app.push_image("team/app", "v1", OCI_MANIFEST, 1).await;
    let admin = Browser::signed_in(&app, "admin", ADMIN_PASSWORD).await;
    let r = admin.post("/users", "name=ann&password=short", &[]).await;
    assert!(text(&r).contains("at least 12 characters"), "{}", text(&r));
    let r = admin
        .post("/users", "name=ann&password=ann-long-password", &[])
        .await;
    assert!(text(&r).contains("added user ann"), "{}", text(&r));
    let ann = Browser::signed_in(&app, "ann", "ann-long-password").await;
    assert!(!text(&ann.get("/repositories").await).contains("team/app"));
    admin
        .post("/users/ann/grant", "pattern=team%2F*&action=pull", &[])
        .await
        .assert(200);
    assert!(text(&ann.get("/repositories").await).contains("team/app"));
    let r = admin
        .post("/users/ann/grant", "pattern=Bad+Pattern&action=pull", &[])
        .await;
    assert!(text(&r).contains("role=\"alert\""), "{}", text(&r));
    admin
        .post("/users/ann/revoke", "pattern=team%2F*", &[])
        .await
        .assert(200);
    assert!(!text(&ann.get("/repositories").await).contains("team/app"));
    // Disabling ends the user's sessions; an administrator cannot disable themselves.
    admin.post("/users/ann/disable", "", &[]).await.assert(200);
    assert_sign_in_page(&ann.get("/").await);
    let r = admin.post("/users/admin/disable", "", &[]).await;
    assert!(text(&r).contains("you cannot disable or remove yourself"));
    admin.get("/").await.assert(200);
    // A password reset ends sessions too.
    admin.post("/users/ann/enable", "", &[]).await.assert(200);
    let ann = Browser::signed_in(&app, "ann", "ann-long-password").await;
    admin
        .post("/users/ann/password", "password=another-long-password", &[])
        .await
        .assert(200);
    assert_sign_in_page(&ann.get("/").await);
    // Anonymous pulls, opened and closed.
    admin
        .post("/anonymous", "pattern=team%2F*&open=yes", &[])
        .await
        .assert(200);
    let anonymous = axum::http::Request::get("/v2/team/app/tags/list")
        .body(axum::body::Body::empty())
        .unwrap();
    app.send(anonymous).await.assert(200);
    admin
        .post("/anonymous", "pattern=team%2F*&open=no", &[])
        .await
        .assert(200);
    admin.post("/users/ann/remove", "", &[]).await.assert(200);
    assert!(!text(&admin.get("/users").await).contains("id=\"user-ann\""));
    // Every change is in the audit log, by the administrator.
    let html = text(&admin.get("/audit?actor=admin&action=user.").await);
    for action in [
        "user.add",
        "user.grant",
        "user.revoke",
        "user.disable",
        "user.remove",
    ] {
        assert!(
            html.contains(&format!("<code>{action}</code>")),
            "{action}: {html}"
        );
    }
    assert!(
        !html.contains("<code>anonymous.allow</code>"),
        "filtered by action prefix"
    );
    let html = text(&admin.get("/audit?q=team").await);
    assert!(html.contains("<code>anonymous.allow</code>"), "{html}");
}

#[tokio::test]
async fn a_retention_preview_deletes_nothing_and_the_run_deletes_what_it_showed() {
    let app = TestApp::new();
    for (i, t) in ["old-1", "old-2", "old-3", "keep-me"].iter().enumerate() {
        app.push_image("team/app", t, OCI_MANIFEST, i as u8 + 1)
            .await;
        app.clock.advance(60);
    }
    let admin = Browser::signed_in(&app, "admin", ADMIN_PASSWORD).await;
    let html = text(&admin.get("/retention").await);
    assert!(html.contains("None: every tag is kept."));
    let policy = "name = \"p\"\nrepositories = [\"team/*\"]\nmax_delete_share = 1.0\n[keep]\ntag = \"keep-.*\"\n";
    let form = format!(
        "do=preview&policy={}",
        crate::common::browser::urlencode(policy)
    );
    let r = admin.post("/retention", &form, &[]).await;
    r.assert(200);
    let html = text(&r);
    assert!(html.contains("would delete 3 of 4 tags"), "{html}");
    assert_eq!(
        html.matches("<span class=\"delete\">delete</span>").count(),
        3
    );
    assert!(html.contains("no keep rule holds"), "{html}");
    // Nothing was deleted by the preview.
    app.get("/v2/team/app/manifests/old-1").await.assert(200);
    // A broken draft is explained, not saved.
    let r = admin
        .post("/retention", "do=save&policy=name+%3D+", &[])
        .await;
    assert!(
        text(&r).contains("the policy ends where a value is expected"),
        "{}",
        text(&r)
    );
    let form = format!(
        "do=save&policy={}",
        crate::common::browser::urlencode(policy)
    );
    admin.post("/retention", &form, &[]).await.assert(303);
    let html = text(&admin.get("/retention").await);
    assert!(html.contains("<strong>p</strong>"), "{html}");
    let r = admin.post("/retention", "do=run", &[]).await;
    let html = text(&r);
    assert!(html.contains("deleted 3 of 4 tags"), "{html}");
    for t in ["old-1", "old-2", "old-3"] {
        app.get(&format!("/v2/team/app/manifests/{t}"))
            .await
            .assert(404);
    }
    app.get("/v2/team/app/manifests/keep-me").await.assert(200);
    let html = text(&admin.get("/").await);
    assert!(
        html.contains("Last run: just now, deleted 3 tags (ui)"),
        "{html}"
    );
    let html = text(&admin.get("/retention").await);
    assert!(
        html.contains("preview of the draft &#34;p&#34; (ui)"),
        "a draft's preview is named in the history: {html}"
    );
    assert!(
        html.contains(
            "<td data-label=\"Kind\">run (ui)</td><td data-label=\"Outcome\">deleted 3 tags;"
        ),
        "the run is in the history: {html}"
    );
    // The saved policies previewed again: nothing more to delete. The editor opens a saved
    // policy; removing it leaves none.
    let html = text(&admin.post("/retention", "do=dry-run", &[]).await);
    assert!(html.contains("would delete 0 of 1 tags"), "{html}");
    let html = text(&admin.get("/retention?edit=p").await);
    assert!(html.contains("tag = &#34;keep-.*&#34;"), "{html}");
    admin.get("/retention?edit=nope").await.assert(404);
    admin
        .post("/retention", "do=remove&name=p", &[])
        .await
        .assert(303);
    assert!(text(&admin.get("/retention").await).contains("None: every tag is kept."));
    admin
        .post("/retention", "do=remove&name=p", &[])
        .await
        .assert(404);
    let html = text(&admin.get("/audit?action=retention.").await);
    for action in ["retention.save", "retention.run", "retention.remove"] {
        assert!(html.contains(action), "{action}: {html}");
    }
}

/// Blob file sizes by name under a data directory.
fn blob_sizes(data: &std::path::Path) -> std::collections::HashMap<String, u64> {
    let mut out = std::collections::HashMap::new();
    let mut stack = vec![data.join("blobs")];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            out.insert(name, std::fs::metadata(&p).unwrap().len());
        }
    }
    out
}

#[tokio::test]
async fn gc_dry_run_and_run_add_history_rows_with_what_they_freed() {
    let app = TestApp::with_config(|c| {
        c.gc.grace = berth::config::Span::Text("0s".into());
        c.gc.untagged_grace = berth::config::Span::Text("0s".into());
    });
    app.push_image("team/app", "v1", OCI_MANIFEST, 1).await;
    app.push_image("team/app", "v2", OCI_MANIFEST, 2).await;
    app.delete("/v2/team/app/manifests/v1").await.assert(202);
    app.clock.advance(10);
    let admin = Browser::signed_in(&app, "admin", ADMIN_PASSWORD).await;
    let before = blob_files(app.dir.path());
    let sizes = blob_sizes(app.dir.path());
    let r = admin.post("/gc", "mode=dry-run", &[]).await;
    r.assert(303);
    let report = r.header("location").unwrap().to_string();
    let html = text(&admin.get(&report).await);
    assert!(html.contains("(dry run)"), "{html}");
    assert_eq!(
        blob_files(app.dir.path()),
        before,
        "a dry run removes nothing"
    );
    let r = admin.post("/gc", "mode=run", &[]).await;
    r.assert(303);
    let after = blob_files(app.dir.path());
    assert!(after.len() < before.len(), "{before:?} {after:?}");
    let freed: u64 = before
        .iter()
        .filter(|f| !after.contains(f))
        .map(|f| sizes[f])
        .sum();
    let html = text(&admin.get(r.header("location").unwrap()).await);
    let shown = format!(
        "<dt>Freed</dt><dd class=\"freed\">{}</dd>",
        berth::core::gc::human_bytes(freed)
    );
    assert!(html.contains(&shown), "{shown} in {html}");
    let html = text(&admin.get("/gc").await);
    assert_eq!(html.matches("class=\"gc-run\"").count(), 2, "{html}");
    assert!(html.contains("dry run (ui)") && html.contains("run (ui)"));
    // The dashboard: the last real run from its row, the estimate from the latest report.
    let html = text(&admin.get("/").await);
    assert!(!html.contains("No collection has run yet."));
    let last = format!(
        "Last run: just now, freed {} (ui)",
        berth::core::gc::human_bytes(freed)
    );
    assert!(html.contains(&last), "{last} in {html}");
    admin.post("/gc", "mode=sideways", &[]).await.assert(400);
    admin.get("/gc/999").await.assert(404);
    admin.get("/gc/x").await.assert(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_collection_is_refused_while_one_runs() {
    use futures_util::future::BoxFuture;
    let app = std::sync::Arc::new(TestApp::new());
    app.push_image("team/app", "v1", OCI_MANIFEST, 1).await;
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let (held_tx, mut held_rx) = tokio::sync::mpsc::channel::<()>(1);
    let hook: berth::core::gc::Hook =
        std::sync::Arc::new(move |p: berth::core::gc::Point| -> BoxFuture<'static, ()> {
            let (mut release, held) = (release_rx.clone(), held_tx.clone());
            Box::pin(async move {
                if p == berth::core::gc::Point::Planned {
                    let _ = held.send(()).await;
                    let _ = release.wait_for(|r| *r).await;
                }
            })
        });
    app.state.registry.set_gc_hook(Some(hook));
    let admin = Browser::signed_in(&app, "admin", ADMIN_PASSWORD).await;
    let cookie = admin.cookie.clone();
    let a = app.clone();
    let first = tokio::spawn(async move {
        let b = Browser { app: &a, cookie };
        b.post("/gc", "mode=run", &[]).await.status.as_u16()
    });
    held_rx.recv().await.unwrap();
    let r = admin.post("/gc", "mode=dry-run", &[]).await;
    r.assert(429);
    assert!(text(&r).contains("a collection is running"), "{}", text(&r));
    release_tx.send(true).unwrap();
    assert_eq!(first.await.unwrap(), 303);
    app.state.registry.set_gc_hook(None);
}

#[tokio::test]
async fn review_findings_stay_fixed() {
    let app = TestApp::new();
    app.push_image("team/app", "v1", OCI_MANIFEST, 1).await;
    app.user("dev", &[("team/*", "pull")]);
    // A user's home page shows what they may reach, not the registry's disk and certificate.
    let dev = Browser::signed_in(&app, "dev", "dev-password").await;
    let html = text(&dev.get("/").await);
    assert!(html.contains("<p class=\"figure\">1</p>"), "{html}");
    assert!(!html.contains("Disk") && !html.contains("HTTPS"), "{html}");
    // A cookie planted beside ours (another port or subdomain over plain HTTP) is not trusted.
    let mine = dev.cookie.clone().unwrap();
    let tossed = Browser {
        app: &app,
        cookie: Some(format!("berth_session=planted; {mine}")),
    };
    crate::ui::assert_sign_in_page(&tossed.get("/").await);
    // After sign-in, only paths of this site are followed: no tab to turn into `//`.
    let r = Browser::new(&app)
        .get("/signin?next=/%09/evil.example")
        .await;
    assert!(
        text(&r).contains(r#"name="next" value="/""#),
        "{}",
        text(&r)
    );
    // A form posted after the session ended goes back to the home page, not to the form's
    // target.
    let r = Browser::new(&app).post("/tokens", "name=x", &[]).await;
    assert_eq!(r.header("location"), Some("/signin?next=/"));
    // Page numbers far past the end neither overflow nor fail.
    for path in [
        "/repositories?page=18446744073709551615",
        "/repositories/team/app?page=18446744073709551615",
    ] {
        dev.get(path).await.assert(200);
    }
    let admin = Browser::signed_in(&app, "admin", ADMIN_PASSWORD).await;
    admin
        .get("/audit?page=18446744073709551615")
        .await
        .assert(200);
    // The catch-all 404 carries the security headers too.
    let r = dev.get("/no/such/page").await;
    r.assert(404);
    assert!(r.header("content-security-policy").is_some());
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
}

/// A request as a TLS-terminating proxy berth trusts forwards it.
async fn via_proxy(
    app: &TestApp,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    body: &str,
) -> crate::common::Resp {
    let mut b = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "10.0.0.9:5000")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "r.example.com")
        .header("x-forwarded-for", "203.0.113.7")
        .header("sec-fetch-site", "same-origin")
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        b = b.header("cookie", c);
    }
    let mut req = b.body(axum::body::Body::from(body.to_string())).unwrap();
    let peer: std::net::SocketAddr = "10.0.0.1:40000".parse().unwrap();
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    app.send(req).await
}

#[tokio::test]
async fn behind_a_trusted_proxy_pages_name_the_https_address() {
    let app = TestApp::with_config(|c| c.trusted_proxies = vec!["10.0.0.1".into()]);
    app.push_image("team/app", "v1", OCI_MANIFEST, 1).await;
    let form = format!("name=admin&password={ADMIN_PASSWORD}");
    let r = via_proxy(&app, "POST", "/signin", None, &form).await;
    r.assert(303);
    let set = r.header("set-cookie").unwrap();
    assert!(
        set.starts_with("__Host-berth_session=") && set.contains("; Secure"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    let html = text(&via_proxy(&app, "GET", "/repositories/team/app", Some(&cookie), "").await);
    assert!(
        html.contains("podman pull r.example.com/team/app:v1"),
        "{html}"
    );
    assert!(!html.contains("--tls-verify=false"), "{html}");
    let form = "name=ci&repositories=team%2F*&action=pull&expires=7";
    let html = text(&via_proxy(&app, "POST", "/tokens", Some(&cookie), form).await);
    assert!(html.contains("docker login r.example.com -u ci"), "{html}");
    assert!(html.contains("- &#34;https://r.example.com&#34;"), "{html}");
    // The audit names the client the proxy forwarded for, not the proxy.
    let html = text(&via_proxy(&app, "GET", "/audit?action=token.", Some(&cookie), "").await);
    assert!(html.contains("203.0.113.7"), "{html}");
}
