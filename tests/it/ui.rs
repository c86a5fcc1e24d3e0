//! The web UI through the real router: sign-in and sessions, cross-site refusal, access by
//! role, the repository pages, tag deletes, readable errors.

use axum::body::Body;
use berth::auth::accounts;
use berth::auth::sessions::{IDLE, LIFETIME};
use berth::clock::Clock;

use crate::common::browser::{Browser, text};
use crate::common::{ADMIN_PASSWORD, OCI_INDEX, OCI_MANIFEST, Resp, TestApp};

#[track_caller]
pub fn assert_sign_in_page(r: &Resp) {
    assert_eq!(r.status.as_u16(), 303, "{}", text(r));
    assert!(
        r.header("location").unwrap().starts_with("/signin"),
        "{:?}",
        r.header("location")
    );
}

#[tokio::test]
async fn anonymous_visitors_are_sent_to_sign_in_and_back() {
    let app = TestApp::new();
    let b = Browser::new(&app);
    for path in ["/", "/repositories", "/repositories/a/b"] {
        assert_sign_in_page(&b.get(path).await);
    }
    let r = b.get("/repositories?q=x&page=2").await;
    assert_eq!(
        r.header("location"),
        Some("/signin?next=/repositories%3Fq%3Dx%26page%3D2")
    );
    let r = b.get("/signin?next=/repositories").await;
    r.assert(200);
    assert!(text(&r).contains(r#"name="next" value="/repositories""#));
    // Only paths of this site are followed after sign-in.
    let r = b.get("/signin?next=//evil.example/x").await;
    assert!(text(&r).contains(r#"name="next" value="/""#));
}

#[tokio::test]
async fn sign_in_sets_a_strict_session_cookie_and_sign_out_ends_it() {
    let app = TestApp::new();
    let mut b = Browser::new(&app);
    let r = b.sign_in("admin", "wrong").await;
    r.assert(401);
    assert!(text(&r).contains("Wrong name or password."));
    assert!(r.header("set-cookie").is_none());
    let r = b.sign_in("admin", ADMIN_PASSWORD).await;
    r.assert(303);
    assert_eq!(r.header("location"), Some("/"));
    let set = r.header("set-cookie").unwrap();
    assert!(set.starts_with("berth_session="), "{set}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(
        !set.contains("Secure"),
        "plain HTTP: browsers would drop a Secure cookie"
    );
    let r = b.get("/").await;
    r.assert(200);
    assert!(text(&r).contains("Dashboard"));
    assert!(text(&r).contains("admin (admin)"));

    let old = b.cookie.clone();
    let r = b.post("/signout", "", &[]).await;
    r.assert(303);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    let replay = Browser {
        app: &app,
        cookie: old,
    };
    assert_sign_in_page(&replay.get("/").await);
    let audit = app
        .state
        .auth
        .db()
        .read_blocking(|c| berth::db::audit::recent(c, 10));
    let actions: Vec<String> = audit.unwrap().into_iter().map(|e| e.action).collect();
    assert!(actions.contains(&"ui.sign_in".to_string()), "{actions:?}");
    assert!(actions.contains(&"ui.sign_out".to_string()), "{actions:?}");
}

#[tokio::test]
async fn behind_https_the_cookie_is_host_prefixed_and_secure() {
    let app = TestApp::with_config(|c| c.external_url = Some("https://r.example.com".into()));
    let mut b = Browser::new(&app);
    let r = b
        .post(
            "/signin",
            &format!("name=admin&password={ADMIN_PASSWORD}"),
            &[("origin", "https://r.example.com")],
        )
        .await;
    r.assert(303);
    let set = r.header("set-cookie").unwrap();
    assert!(set.starts_with("__Host-berth_session="), "{set}");
    assert!(set.contains("; Secure"), "{set}");
    b.cookie = Some(set.split(';').next().unwrap().to_string());
    b.get("/").await.assert(200);
    // The plain name is not read under HTTPS.
    let plain = b.cookie.as_ref().unwrap().replace("__Host-", "");
    let other = Browser {
        app: &app,
        cookie: Some(plain),
    };
    assert_sign_in_page(&other.get("/").await);
}

#[tokio::test]
async fn robot_tokens_cannot_sign_in() {
    let app = TestApp::new();
    let secret = app.token("admin", "ci", &["**:pull"], None);
    let mut b = Browser::new(&app);
    let r = b.sign_in("ci", &secret).await;
    r.assert(401);
    assert!(
        text(&r).contains("robot tokens cannot sign in"),
        "{}",
        text(&r)
    );
    assert!(b.cookie.is_none());
}

#[tokio::test]
async fn password_change_disable_and_removal_end_sessions() {
    let app = TestApp::new();
    app.user("ann", &[]);
    let (db, now) = (app.state.auth.db(), app.clock.now());
    let b = Browser::signed_in(&app, "ann", "ann-password").await;
    b.get("/").await.assert(200);
    accounts::set_password(db, now, &accounts::CLI, "ann", "a-new-password").unwrap();
    assert_sign_in_page(&b.get("/").await);

    let b = Browser::signed_in(&app, "ann", "a-new-password").await;
    b.get("/").await.assert(200);
    accounts::set_disabled(db, now, &accounts::CLI, "ann", true).unwrap();
    assert_sign_in_page(&b.get("/").await);
    accounts::set_disabled(db, now, &accounts::CLI, "ann", false).unwrap();
    assert_sign_in_page(&b.get("/").await);

    let b = Browser::signed_in(&app, "ann", "a-new-password").await;
    accounts::remove_user(db, now, &accounts::CLI, "ann").unwrap();
    assert_sign_in_page(&b.get("/").await);
}

#[tokio::test]
async fn sessions_expire_when_idle_and_when_old() {
    let app = TestApp::new();
    let b = Browser::signed_in(&app, "admin", ADMIN_PASSWORD).await;
    app.clock.advance(IDLE - 10);
    b.get("/").await.assert(200);
    app.clock.advance(IDLE - 10);
    // Used 10 seconds before the idle limit: still there, and the use counts.
    b.get("/").await.assert(200);
    app.clock.advance(IDLE);
    assert_sign_in_page(&b.get("/").await);

    // Used every half hour, a session still ends at its lifetime.
    let b = Browser::signed_in(&app, "admin", ADMIN_PASSWORD).await;
    let mut used = 0;
    while used + 1800 < LIFETIME {
        app.clock.advance(1800);
        used += 1800;
        b.get("/").await.assert(200);
    }
    app.clock.advance(LIFETIME - used);
    assert_sign_in_page(&b.get("/").await);
}

#[tokio::test]
async fn cross_site_posts_are_refused() {
    let app = TestApp::new();
    let b = Browser::signed_in(&app, "admin", ADMIN_PASSWORD).await;
    // A page on another port of the same host: same-site, and SameSite cookies go along.
    for headers in [
        vec![
            ("sec-fetch-site", "same-site"),
            ("origin", "http://localhost:18081"),
        ],
        vec![
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://evil.example"),
        ],
        // A browser that sends no Fetch Metadata: the Origin decides.
        vec![("sec-fetch-site", ""), ("origin", "http://localhost:18081")],
    ] {
        let headers: Vec<(&str, &str)> =
            headers.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        let r = app
            .call(
                "POST",
                "/signout",
                &[
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("cookie", b.cookie.as_deref().unwrap()),
                    ("authorization", ""),
                ]
                .into_iter()
                .chain(headers.iter().copied())
                .collect::<Vec<_>>(),
                Body::empty(),
            )
            .await;
        r.assert(403);
        assert!(text(&r).contains("came from another site"), "{}", text(&r));
        assert!(text(&r).contains("request id"));
        // The session is untouched.
        b.get("/").await.assert(200);
    }
    // Sign-in itself is guarded too: no login CSRF.
    let r = app
        .call(
            "POST",
            "/signin",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("sec-fetch-site", "same-site"),
            ],
            format!("name=admin&password={ADMIN_PASSWORD}"),
        )
        .await;
    r.assert(403);
    assert!(r.header("set-cookie").is_none());
    // The registry API is not a page: clients without Origin are unaffected.
    app.get("/v2/").await.assert(200);
}

#[tokio::test]
async fn failed_sign_ins_are_throttled() {
    let app = TestApp::new();
    let mut b = Browser::new(&app);
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(b.sign_in("admin", "nope").await.status.as_u16());
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    let r = b.sign_in("admin", ADMIN_PASSWORD).await;
    r.assert(429);
    assert!(text(&r).contains("Too many failed sign-ins"));
}

#[tokio::test]
async fn pages_carry_security_headers_and_assets_are_cached() {
    let app = TestApp::new();
    let b = Browser::signed_in(&app, "admin", ADMIN_PASSWORD).await;
    let r = b.get("/").await;
    let csp = r.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let html = text(&r);
    assert!(!html.contains("<script>"), "no inline script");
    assert!(!html.contains("style="), "no inline style");
    let css = html
        .split('"')
        .find(|s| s.starts_with("/static/berth.") && s.ends_with(".css"))
        .unwrap()
        .to_string();
    let r = b.get(&css).await;
    r.assert(200);
    assert_eq!(
        r.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(r.header("content-type"), Some("text/css; charset=utf-8"));
    b.get("/static/berth.css").await.assert(404);
}

#[tokio::test]
async fn errors_are_readable_pages_with_a_request_id() {
    let app = TestApp::new();
    let b = Browser::signed_in(&app, "admin", ADMIN_PASSWORD).await;
    for (path, status, says) in [
        ("/nowhere", 404, "there is no page at this address"),
        ("/repositories/Not_A_Name", 404, "not a repository name"),
        ("/repositories/none/here", 404, "no such repository"),
        ("/repositories/a/-/manifests/sha256:zz", 404, "not a digest"),
        ("/repositories/a/-/what", 404, "no such page"),
    ] {
        let r = b.get(path).await;
        r.assert(status);
        let html = text(&r);
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        assert!(html.contains(says), "{path}: {html}");
        assert!(html.contains("request id <code>"), "{path}");
    }
    // A form the server cannot read is a readable refusal, not a 500.
    let r = b.post("/repositories/a/-/delete", "%zz=%", &[]).await;
    assert!(r.status.is_client_error(), "{}", r.status);
}

/// Push two platform images and an index over them tagged `multi` into `repo`.
async fn push_index(app: &TestApp, repo: &str) -> (String, [String; 2]) {
    let (a_bytes, a) = app.push_image(repo, "amd64", OCI_MANIFEST, 3).await;
    let (b_bytes, b) = app.push_image(repo, "arm64", OCI_MANIFEST, 5).await;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": a.to_string(), "size": a_bytes.len(),
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": OCI_MANIFEST, "digest": b.to_string(), "size": b_bytes.len(),
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        ],
    });
    let bytes = serde_json::to_vec(&index).unwrap();
    app.put_manifest(repo, "multi", OCI_INDEX, &bytes)
        .await
        .assert(201);
    (
        crate::common::digest_of(&bytes).to_string(),
        [a.to_string(), b.to_string()],
    )
}

#[tokio::test]
async fn users_see_only_the_repositories_they_may_pull() {
    let app = TestApp::new();
    app.push_image("team/app", "v1", OCI_MANIFEST, 1).await;
    app.push_image("other/secret", "v1", OCI_MANIFEST, 2).await;
    app.user("nobody", &[]);
    app.user("member", &[("team/*", "pull")]);
    let b = Browser::signed_in(&app, "nobody", "nobody-password").await;
    let html = text(&b.get("/repositories").await);
    assert!(html.contains("No repositories you may pull yet."), "{html}");
    assert!(!html.contains("team/app") && !html.contains("other/secret"));
    b.get("/repositories/team/app").await.assert(404);

    let b = Browser::signed_in(&app, "member", "member-password").await;
    let html = text(&b.get("/repositories").await);
    assert!(html.contains(r#"href="/repositories/team/app""#), "{html}");
    assert!(!html.contains("other/secret"));
    b.get("/repositories/team/app").await.assert(200);
    let r = b.get("/repositories/other/secret").await;
    r.assert(404);
    assert!(
        text(&r).contains("no such repository"),
        "a hidden repository is absent"
    );
}

#[tokio::test]
async fn the_tag_page_shows_digests_platforms_sizes_and_pushers() {
    let app = TestApp::new();
    let (index, children) = push_index(&app, "team/app").await;
    let b = Browser::signed_in(&app, "admin", ADMIN_PASSWORD).await;
    let html = text(&b.get("/repositories/team/app").await);
    assert!(html.contains(&format!("title=\"{index}\"")), "{html}");
    assert!(html.contains("linux/amd64"), "{html}");
    assert!(html.contains("linux/arm64/v8"), "{html}");
    // Each platform image: a config (about 50 bytes) and a 1000-byte layer.
    assert!(
        html.contains("<li>linux/amd64 <span class=\"muted\">1.0 KiB</span></li>"),
        "{html}"
    );
    // The harness pushes with its robot token.
    assert!(
        html.contains(r#"<span class="pushed-by">test-robot</span>"#),
        "{html}"
    );
    assert!(
        html.contains(&format!("docker pull localhost/team/app@{index}")),
        "{html}"
    );
    assert!(html.contains("podman pull --tls-verify=false localhost/team/app:multi"));

    // The manifest page: the index's platforms link to their images.
    let html = text(
        &b.get(&format!("/repositories/team/app/-/manifests/{index}"))
            .await,
    );
    assert!(html.contains("index (multi-platform)"), "{html}");
    assert!(html.contains(&format!(
        "/repositories/team/app/-/manifests/{}",
        children[0]
    )));
    let html = text(
        &b.get(&format!(
            "/repositories/team/app/-/manifests/{}",
            children[1]
        ))
        .await,
    );
    assert!(html.contains("image manifest"), "{html}");
    assert!(
        html.contains("linux/amd64"),
        "the child's own config names its platform: {html}"
    );
    assert!(html.contains("1000 B"), "the layer's size: {html}");
    assert!(html.contains("no other image"), "{html}");

    // The list shows the repository with its size, own and shared.
    let html = text(&b.get("/repositories?sort=size&dir=desc").await);
    assert!(html.contains("team/app"), "{html}");
    assert!(html.contains(" own · 0 B shared"), "{html}");
}

#[tokio::test]
async fn repository_lists_page_sort_and_filter_on_the_server() {
    let app = TestApp::new();
    for i in 0..55 {
        app.push_image(&format!("r{i:02}"), "v1", OCI_MANIFEST, (i % 200) as u8 + 1)
            .await;
    }
    app.push_image("r07", "v2", OCI_MANIFEST, 9).await;
    let b = Browser::signed_in(&app, "admin", ADMIN_PASSWORD).await;
    let html = text(&b.get("/repositories").await);
    assert!(html.contains("1–50 of 55"), "{html}");
    assert!(
        html.contains(r#"href="/repositories/r49""#)
            && !html.contains(r#"href="/repositories/r50""#)
    );
    let html = text(&b.get("/repositories?page=2").await);
    assert!(html.contains("51–55 of 55"));
    assert!(html.contains(r#"href="/repositories/r54""#));
    let html = text(&b.get("/repositories?sort=tags&dir=desc").await);
    let first = html.find(r#"href="/repositories/r"#).unwrap();
    assert!(
        html[first..].starts_with(r#"href="/repositories/r07""#),
        "most tags first"
    );
    let html = text(&b.get("/repositories?q=r1").await);
    assert!(html.contains("1–10 of 10"), "{html}");
}

#[tokio::test]
async fn deleting_tags_needs_the_delete_action_and_a_typed_confirmation() {
    let app = TestApp::new();
    for t in ["a", "b", "c", "keep"] {
        app.push_image("team/app", t, OCI_MANIFEST, 4).await;
    }
    app.user("puller", &[("team/*", "pull,push")]);
    app.user("deleter", &[("team/*", "pull,delete")]);
    let b = Browser::signed_in(&app, "puller", "puller-password").await;
    let html = text(&b.get("/repositories/team/app").await);
    assert!(
        !html.contains("Delete selected"),
        "no delete form without the action"
    );
    let r = b
        .post("/repositories/team/app/-/delete", "tag=a", &[])
        .await;
    r.assert(403);

    let b = Browser::signed_in(&app, "deleter", "deleter-password").await;
    assert!(text(&b.get("/repositories/team/app").await).contains("Delete selected"));
    let r = b
        .post(
            "/repositories/team/app/-/delete",
            "tag=a&tag=b&confirm=team",
            &[],
        )
        .await;
    r.assert(400);
    assert!(
        text(&r).contains("type the repository&#39;s name"),
        "{}",
        text(&r)
    );
    let r = b
        .post(
            "/repositories/team/app/-/delete",
            "tag=a&tag=b&tag=c&confirm=team%2Fapp",
            &[],
        )
        .await;
    r.assert(303);
    // One tag needs no typing.
    let html = text(&b.get("/repositories/team/app").await);
    for gone in ["a", "b", "c"] {
        assert!(
            !html.contains(&format!("value=\"{gone}\"")),
            "{gone} still listed"
        );
    }
    assert!(html.contains("value=\"keep\""));
    app.get("/v2/team/app/manifests/a").await.assert(404);
    app.get("/v2/team/app/manifests/keep").await.assert(200);
    let audit = app
        .state
        .auth
        .db()
        .read_blocking(|c| berth::db::audit::recent(c, 20))
        .unwrap();
    let deletes: Vec<_> = audit
        .iter()
        .filter(|e| e.action == "tag.delete")
        .map(|e| (e.actor.clone().unwrap(), e.detail.clone().unwrap()))
        .collect();
    assert_eq!(deletes.len(), 3, "{deletes:?}");
    assert!(deletes.contains(&("deleter".into(), "team/app:b".into())));
}

#[tokio::test]
async fn tags_of_one_image_share_its_parts_and_the_config_gives_platform_and_labels() {
    let app = TestApp::new();
    let config = br#"{"architecture":"arm64","os":"linux","config":{"Labels":{"org.opencontainers.image.source":"https://example.com/app"}}}"#;
    let cd = app.push_blob("team/app", config).await;
    let ld = app.push_blob("team/app", b"a layer").await;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld.to_string(), "size": 7}],
        "annotations": {"org.example.note": "hello"},
    });
    let bytes = serde_json::to_vec(&manifest).unwrap();
    for tag in ["1.0", "latest"] {
        app.put_manifest("team/app", tag, OCI_MANIFEST, &bytes)
            .await
            .assert(201);
    }
    let b = Browser::signed_in(&app, "admin", ADMIN_PASSWORD).await;
    let html = text(&b.get("/repositories/team/app?sort=name").await);
    let digest = crate::common::digest_of(&bytes);
    let line = format!(
        "<li>linux/arm64 <span class=\"muted\">{} B</span></li>",
        config.len() + 7
    );
    assert_eq!(html.matches(&line).count(), 2, "both tags: {html}");
    assert_eq!(html.matches(&format!("title=\"{digest}\"")).count(), 2);
    let html = text(
        &b.get(&format!("/repositories/team/app/-/manifests/{digest}"))
            .await,
    );
    assert!(html.contains("linux/arm64"), "{html}");
    assert!(
        html.contains("<dt>org.opencontainers.image.source</dt><dd>https://example.com/app</dd>"),
        "labels from the config: {html}"
    );
    assert!(
        html.contains("<dt>org.example.note</dt><dd>hello</dd>"),
        "{html}"
    );
}
