//! Authentication with real clients against the real binary: robot tokens and their scopes
//! through the Docker daemon and skopeo, podman and skopeo logins, Basic and bearer
//! credentials with curl, anonymous pulls. Each test makes its users and tokens with the
//! `berth` CLI on the running server's data directory, and keeps client credentials in
//! temporary files, never in ~/.docker or ~/.config/containers.
//!
//! The client calls block the test's thread; nothing else runs on its runtime meanwhile (the
//! server is another process), so that is harmless.

use std::path::Path;
use std::time::Instant;

use crate::common::cmd::{combined, expect_failure, output, run};
use crate::common::containers::Clients;
use crate::common::curl::curl;
use crate::common::docker::{Docker, busybox_rootfs};
use crate::common::images::{Image, write_oci_layout};
use crate::common::net::{client, error_code};
use crate::common::{ADMIN_PASSWORD, Server, require_tool};

/// `berth user add NAME` with `grants` (pattern, actions).
fn add_user(server: &Server, name: &str, grants: &[(&str, &str)]) {
    server.admin_with_stdin(
        &["user", "add", name, "--password-stdin"],
        &format!("{name}-password\n"),
    );
    for (pattern, actions) in grants {
        server.admin(&["user", "grant", name, pattern, actions]);
    }
}

/// `berth token create`; returns the secret.
fn create_token(server: &Server, user: &str, name: &str, scopes: &[&str]) -> String {
    let mut args = vec!["token", "create", "--user", user, "--name", name];
    for s in scopes {
        args.extend(["--scope", s]);
    }
    let out = server.admin(&args);
    let secret = out.trim();
    assert!(
        !secret.is_empty() && !secret.contains(char::is_whitespace),
        "token create should print the secret alone: {out:?}"
    );
    secret.to_string()
}

/// Push a small OCI image (seeded) to `repo:tag` as the administrator.
fn push_as_admin(
    clients: &Clients,
    server: &Server,
    dir: &Path,
    repo_tag: &str,
    seed: u64,
) -> Image {
    let image = write_oci_layout(dir, "v1", seed);
    clients.skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("--dest-creds=admin:{ADMIN_PASSWORD}"),
        &format!("oci:{}:v1", dir.display()),
        &format!("docker://{}/{repo_tag}", server.host()),
    ]);
    image
}

/// The tags of `repo` as the administrator sees them; `None` when the repository is unknown.
async fn tags(server: &Server, repo: &str) -> Option<Vec<String>> {
    let resp = client()
        .get(server.url(&format!("/v2/{repo}/tags/list")))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap();
    if status == 404 && error_code(&body) == "NAME_UNKNOWN" {
        return None;
    }
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut tags: Vec<String> = serde_json::from_value(v["tags"].clone()).unwrap();
    tags.sort();
    Some(tags)
}

#[track_caller]
fn assert_mentions(output: &str, words: &[&str]) {
    let lower = output.to_lowercase();
    assert!(
        words.iter().any(|w| lower.contains(w)),
        "expected the output to mention one of {words:?}:\n{output}"
    );
}

#[tokio::test]
async fn docker_pushes_and_pulls_with_robot_tokens_within_their_scopes() {
    let started = Instant::now();
    let mut docker = Docker::new();
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let host = server.host();
    let root = tmp.path().join("rootfs");
    busybox_rootfs(&root);
    add_user(&server, "ci", &[("team/*", "pull,push")]);
    let push_secret = create_token(&server, "ci", "ci-push", &["team/*:pull,push"]);

    let image = format!("{host}/team/app:1");
    docker.import(&root, &image);
    docker.login(&host, "ci-push", &push_secret);
    assert_eq!(docker.logins(), [host.as_str()]);
    docker.run(&["push", &image]);
    assert_eq!(tags(&server, "team/app").await, Some(vec!["1".into()]));
    docker.run(&["rmi", &image]);
    assert!(
        !docker.has_image(&image),
        "gone from the daemon before the pull"
    );
    docker.run(&["pull", &image]);
    let out = docker.run(&["run", "--rm", &image, "/bin/busybox", "echo", "hello"]);
    assert_eq!(out.trim(), "hello");

    // A pull-only token: pulls work, pushes are refused.
    let pull_secret = create_token(&server, "ci", "cluster", &["team/*:pull"]);
    docker.login(&host, "cluster", &pull_secret);
    docker.run(&["rmi", &image]);
    docker.run(&["pull", &image]);
    assert!(docker.has_image(&image));
    let second = format!("{host}/team/app:2");
    docker.track(&second);
    docker.run(&["tag", &image, &second]);
    let mut push = docker.command(&["push", &second]);
    let out = output(&mut push);
    assert_mentions(&expect_failure(&push, &out), &["denied"]);
    assert_eq!(
        tags(&server, "team/app").await,
        Some(vec!["1".into()]),
        "the refused push must not have tagged anything"
    );

    // Logged out, the daemon pulls anonymously, which this registry refuses.
    docker.run(&["logout", &host]);
    assert!(docker.logins().is_empty(), "{:?}", docker.logins());
    docker.run(&["rmi", &image, &second]);
    let mut pull = docker.command(&["pull", &image]);
    let out = output(&mut pull);
    assert_mentions(&expect_failure(&pull, &out), &["unauthorized"]);

    // A revoked token stops working at once, though the client still holds it.
    docker.login(&host, "cluster", &pull_secret);
    server.admin(&["token", "revoke", "cluster"]);
    let out = output(&mut pull);
    assert_mentions(&expect_failure(&pull, &out), &["unauthorized"]);
    assert!(!docker.has_image(&image));
    let out = docker.try_login(&host, "cluster", &pull_secret);
    assert!(
        !out.status.success(),
        "a revoked token must not log in: {}",
        combined(&out)
    );
    // The other token is untouched.
    docker.login(&host, "ci-push", &push_secret);
    docker.run(&["pull", &image]);
    println!("docker with robot tokens: {:?}", started.elapsed());
}

#[tokio::test]
async fn skopeo_uses_tokens_only_within_their_scopes() {
    let started = Instant::now();
    let clients = Clients::new();
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let host = server.host();
    let src = tmp.path().join("src");
    push_as_admin(&clients, &server, &src, "team/app:1", 11);
    // The owner may push anywhere; only the tokens' scopes hold the clients back.
    add_user(&server, "deployer", &[("**", "pull,push")]);
    let pull_secret = create_token(&server, "deployer", "cluster", &["team/*:pull"]);
    let push_secret = create_token(&server, "deployer", "ci-push", &["team/*:pull,push"]);
    let pull_creds = format!("--creds=cluster:{pull_secret}");
    let push_creds = format!("--dest-creds=ci-push:{push_secret}");
    let layout = format!("oci:{}:v1", src.display());
    let to = |repo_tag: &str| format!("docker://{host}/{repo_tag}");

    let out = clients.skopeo(&[
        "list-tags",
        "--tls-verify=false",
        &pull_creds,
        &to("team/app"),
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Repository"], format!("{host}/team/app"));
    assert_eq!(v["Tags"], serde_json::json!(["1"]));

    // Within the push token's scope a copy works; outside it (another top-level name, or
    // one more path component than `*` covers) it is refused.
    let copy = |creds: &str, dest: &str| {
        vec![
            "copy".to_string(),
            "--dest-tls-verify=false".to_string(),
            creds.to_string(),
            layout.clone(),
            to(dest),
        ]
    };
    clients.skopeo(&copy(&push_creds, "team/copy:1"));
    assert_eq!(tags(&server, "team/copy").await, Some(vec!["1".into()]));
    for dest in ["other/app:1", "team/deep/app:1"] {
        let msg = clients.skopeo_fails(&copy(&push_creds, dest));
        assert_mentions(&msg, &["denied", "forbidden"]);
        let repo = dest.trim_end_matches(":1");
        assert_eq!(tags(&server, repo).await, None, "{repo} must not exist");
    }
    // The pull-only token cannot push even within its pattern.
    let msg = clients.skopeo_fails(&copy(
        &format!("--dest-creds=cluster:{pull_secret}"),
        "team/app:2",
    ));
    assert_mentions(&msg, &["denied", "forbidden"]);
    assert_eq!(tags(&server, "team/app").await, Some(vec!["1".into()]));

    // skopeo login / logout with the token, through the auth file only.
    let authfile = clients.authfile();
    let authfile = authfile.to_str().unwrap();
    let (ok, msg) = clients.login("skopeo", &host, "cluster", "not-the-secret");
    assert!(!ok, "a wrong secret must not log in:\n{msg}");
    assert!(clients.logins().is_empty(), "{:?}", clients.logins());
    let (ok, msg) = clients.login("skopeo", &host, "cluster", &pull_secret);
    assert!(ok, "skopeo login failed:\n{msg}");
    assert_eq!(clients.logins(), [host.as_str()]);
    let app = to("team/app");
    let listed = [
        "list-tags",
        "--tls-verify=false",
        "--authfile",
        authfile,
        &app,
    ];
    let out = clients.skopeo(&listed);
    assert!(out.contains("\"1\""), "{out}");
    clients.skopeo(&["logout", "--authfile", authfile, &host]);
    assert!(clients.logins().is_empty(), "{:?}", clients.logins());
    let msg = clients.skopeo_fails(&listed);
    assert_mentions(&msg, &["unauthorized"]);
    println!("skopeo with robot tokens: {:?}", started.elapsed());
}

#[tokio::test]
async fn podman_logs_in_and_out_with_a_token() {
    let started = Instant::now();
    require_tool("podman");
    let clients = Clients::new();
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let host = server.host();
    add_user(&server, "ci", &[("team/*", "pull,push")]);
    let secret = create_token(&server, "ci", "ci-push", &["team/*:pull,push"]);
    let authfile = clients.authfile();
    let authfile = authfile.to_str().unwrap();
    let get_login = || {
        output(&mut clients.command(
            "podman",
            &["login", "--get-login", "--authfile", authfile, &host],
        ))
    };

    // A wrong secret of the right shape (the robot path) and a plain wrong one (the
    // password path) are both refused, and nothing is stored.
    let tampered = format!("{}x", &secret[..secret.len() - 1]);
    for wrong in [tampered.as_str(), "not-the-secret"] {
        let (ok, msg) = clients.login("podman", &host, "ci-push", wrong);
        assert!(!ok, "podman login with {wrong:?} should fail:\n{msg}");
        assert_mentions(&msg, &["invalid username/password", "unauthorized"]);
        assert!(clients.logins().is_empty(), "{:?}", clients.logins());
    }

    let (ok, msg) = clients.login("podman", &host, "ci-push", &secret);
    assert!(ok, "podman login failed:\n{msg}");
    assert_mentions(&msg, &["login succeeded"]);
    assert_eq!(clients.logins(), [host.as_str()]);
    let out = get_login();
    assert!(out.status.success(), "{}", combined(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ci-push");

    run(&mut clients.command("podman", &["logout", "--authfile", authfile, &host]));
    assert!(clients.logins().is_empty(), "{:?}", clients.logins());
    let out = get_login();
    assert!(!out.status.success(), "still logged in: {}", combined(&out));
    println!("podman login/logout: {:?}", started.elapsed());
}

#[tokio::test]
async fn curl_with_basic_credentials_and_a_bearer_token() {
    let started = Instant::now();
    let clients = Clients::new();
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let host = server.host();
    push_as_admin(&clients, &server, &tmp.path().join("src"), "team/app:1", 12);
    add_user(&server, "ci", &[("team/*", "pull,push")]);
    let secret = create_token(&server, "ci", "ci-push", &["team/*:pull,push"]);
    let creds = format!("ci-push:{secret}");
    let url = server.url("/v2/team/app/tags/list");

    let r = curl(&["-u", &creds, &url]);
    r.assert(200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.json(),
        serde_json::json!({"name": "team/app", "tags": ["1"]})
    );

    let r = curl(&[&url]);
    r.assert_challenge(&host);
    assert_eq!(
        r.header("www-authenticate"),
        Some(
            format!(
                "Bearer realm=\"http://{host}/token\",service=\"berth\",\
                 scope=\"repository:team/app:pull\""
            )
            .as_str()
        ),
        "an anonymous request is told which scope to ask for"
    );
    curl(&["-u", "ci-push:not-the-secret", &url]).assert_challenge(&host);
    let tampered = format!("ci-push:{}x", &secret[..secret.len() - 1]);
    curl(&["-u", &tampered, &url]).assert_challenge(&host);
    // The secret belongs to this token name only.
    curl(&["-u", &format!("ci:{secret}"), &url]).assert_challenge(&host);

    // The token flow by hand: Basic at /token, then the bearer token on /v2.
    let token_url = server.url("/token?service=berth&scope=repository:team/app:pull");
    let r = curl(&["-u", &creds, &token_url]);
    r.assert(200);
    let bearer = r.json()["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {}", r.body))
        .to_string();
    let auth = format!("Authorization: Bearer {bearer}");
    let r = curl(&["-H", &auth, &url]);
    r.assert(200);
    assert_eq!(r.json()["tags"], serde_json::json!(["1"]));

    // Outside the grant and the token's scope: refused, not challenged.
    let r = curl(&["-u", &creds, &server.url("/v2/other/app/tags/list")]);
    r.assert(403);
    assert_eq!(error_code(r.body.as_bytes()), "DENIED");

    // Revoking a token stops both its secret and the bearer token handed out for it, at once.
    let reader = create_token(&server, "ci", "reader", &["team/*:pull"]);
    let r = curl(&["-u", &format!("reader:{reader}"), &token_url]);
    r.assert(200);
    let reader_auth = format!(
        "Authorization: Bearer {}",
        r.json()["token"].as_str().unwrap()
    );
    curl(&["-H", &reader_auth, &url]).assert(200);
    server.admin(&["token", "revoke", "reader"]);
    curl(&["-u", &format!("reader:{reader}"), &url]).assert_challenge(&host);
    curl(&["-H", &reader_auth, &url]).assert_challenge(&host);
    // The same for the owner's other token when the owner is disabled.
    curl(&["-u", &creds, &url]).assert(200);
    server.admin(&["user", "disable", "ci"]);
    curl(&["-u", &creds, &url]).assert_challenge(&host);
    curl(&["-H", &auth, &url]).assert_challenge(&host);
    println!("curl with Basic and bearer: {:?}", started.elapsed());
}

#[tokio::test]
async fn anonymous_pulls_only_where_allowed() {
    let started = Instant::now();
    let clients = Clients::new();
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let host = server.host();
    let public = push_as_admin(&clients, &server, &tmp.path().join("a"), "public/x:1", 13);
    push_as_admin(&clients, &server, &tmp.path().join("b"), "team/app:1", 14);
    let inspect = |repo_tag: &str| {
        vec![
            "inspect".to_string(),
            "--tls-verify=false".to_string(),
            "--no-creds".to_string(),
            format!("docker://{host}/{repo_tag}"),
        ]
    };

    let msg = clients.skopeo_fails(&inspect("public/x:1"));
    assert_mentions(&msg, &["unauthorized"]);

    server.admin(&["anonymous", "allow", "public/**"]);
    let out = clients.skopeo(&inspect("public/x:1"));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Digest"], public.manifest.to_string(), "{out}");
    assert_eq!(v["Name"], format!("{host}/public/x"));

    let msg = clients.skopeo_fails(&inspect("team/app:1"));
    assert_mentions(&msg, &["unauthorized"]);

    // Anonymous access is pull only, even where it is allowed.
    let msg = clients.skopeo_fails(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-no-creds",
        &format!("oci:{}:v1", tmp.path().join("a").display()),
        &format!("docker://{host}/public/x:2"),
    ]);
    assert_mentions(&msg, &["unauthorized", "denied"]);
    assert_eq!(tags(&server, "public/x").await, Some(vec!["1".into()]));
    println!("anonymous pulls: {:?}", started.elapsed());
}
