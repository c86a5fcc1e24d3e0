//! `berth user`, `berth token`, `berth anonymous` and the first administrator, through the
//! real binary on a real data directory.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common::{Server, basic, require_tool};

pub fn berth(data: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("BERTH_CONFIG");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(text) = stdin {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

#[track_caller]
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[track_caller]
pub fn fails(o: &Output, needle: &str) {
    assert!(
        !o.status.success(),
        "should fail; stdout: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "{needle:?} in {err}");
}

pub fn status(server: &Server, path: &str, auth: &str) -> u16 {
    let out = Command::new(require_tool("curl"))
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("Authorization: {auth}"))
        .arg(server.url(path))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).parse().unwrap()
}

#[test]
fn first_start_creates_admin_with_a_private_random_password() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = Server::start_on(
        &data,
        crate::common::server::free_port(),
        &[("BERTH_ADMIN_PASSWORD", "")],
    );
    let file = data.join("initial-admin-password");
    let password = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert_eq!(password.len(), 24);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(server.log().contains(&password), "printed once on stderr");
    assert_eq!(status(&server, "/v2/", &basic("admin", &password)), 200);
    assert_eq!(
        status(&server, "/v2/", &basic("admin", "test-admin-password")),
        401
    );
    // A restart neither creates another admin nor prints a password again.
    server.terminate();
    let server = Server::start_on(
        &data,
        crate::common::server::free_port(),
        &[("BERTH_ADMIN_PASSWORD", "")],
    );
    assert!(!server.log().contains(&password));
    assert_eq!(status(&server, "/v2/", &basic("admin", &password)), 200);
}

#[test]
fn admin_password_from_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data, &[]);
    assert!(!data.join("initial-admin-password").exists());
    assert_eq!(
        status(
            &server,
            "/v2/",
            &basic("admin", crate::common::ADMIN_PASSWORD)
        ),
        200
    );
}

#[test]
fn users_grants_and_tokens_while_the_server_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data, &[]);

    ok(&berth(
        &data,
        &["user", "add", "carol", "--password-stdin"],
        Some("carol-pw\n"),
    ));
    let generated = ok(&berth(&data, &["user", "add", "dan"], None));
    assert_eq!(
        generated.trim().len(),
        24,
        "a generated password is printed"
    );
    fails(
        &berth(
            &data,
            &["user", "add", "carol", "--password-stdin"],
            Some("x\n"),
        ),
        "already exists",
    );
    fails(
        &berth(&data, &["user", "add", "Bad Name"], None),
        "invalid name",
    );
    ok(&berth(
        &data,
        &["user", "grant", "carol", "team/*", "pull,push"],
        None,
    ));
    fails(
        &berth(
            &data,
            &["user", "grant", "carol", "team/*", "pull,fly"],
            None,
        ),
        "unknown action",
    );
    fails(
        &berth(&data, &["user", "grant", "nobody", "team/*", "pull"], None),
        "no user",
    );
    let list = ok(&berth(&data, &["user", "list"], None));
    assert!(
        list.contains("carol") && list.contains("team/*:pull,push"),
        "{list}"
    );
    assert!(list.contains("admin") && list.contains("(all)"), "{list}");
    assert!(
        !list.contains("carol-pw") && !list.contains("argon2"),
        "no secrets: {list}"
    );

    let carol = basic("carol", "carol-pw");
    assert_eq!(status(&server, "/v2/", &carol), 200);
    assert_eq!(
        status(&server, "/v2/team/app/tags/list", &carol),
        404,
        "allowed, but no such repository"
    );
    assert_eq!(status(&server, "/v2/other/tags/list", &carol), 403);

    let out = berth(
        &data,
        &[
            "token",
            "create",
            "--user",
            "carol",
            "--name",
            "carol-ci",
            "--scope",
            "team/*:pull",
            "--expires",
            "30d",
        ],
        None,
    );
    let secret = ok(&out);
    assert_eq!(
        secret.lines().count(),
        1,
        "the secret alone on stdout: {secret}"
    );
    let secret = secret.trim();
    assert!(secret.starts_with("berth_rt_"), "{secret}");
    let robot = basic("carol-ci", secret);
    assert_eq!(status(&server, "/v2/team/app/tags/list", &robot), 404);
    fails(
        &berth(
            &data,
            &[
                "token", "create", "--user", "carol", "--name", "carol-ci", "--scope", "x:pull",
            ],
            None,
        ),
        "already exists",
    );
    fails(
        &berth(
            &data,
            &[
                "token",
                "create",
                "--user",
                "carol",
                "--name",
                "t2",
                "--scope",
                "x:pull",
                "--expires",
                "soon",
            ],
            None,
        ),
        "invalid expiry",
    );
    fails(
        &berth(
            &data,
            &[
                "token", "create", "--user", "carol", "--name", "t3", "--scope", "nocolon",
            ],
            None,
        ),
        "invalid scope",
    );
    let o = berth(
        &data,
        &["token", "create", "--user", "carol", "--name", "t4"],
        None,
    );
    assert_eq!(o.status.code(), Some(2), "--scope is required");

    let list = ok(&berth(&data, &["token", "list"], None));
    assert!(
        list.contains("carol-ci") && list.contains("team/*:pull") && list.contains("active"),
        "{list}"
    );
    assert!(
        list.contains("127.0.0.1"),
        "last use and address shown: {list}"
    );
    assert!(!list.contains(secret), "never the secret");
    let list = ok(&berth(&data, &["token", "list", "--user", "admin"], None));
    assert!(!list.contains("carol-ci"), "{list}");

    ok(&berth(&data, &["token", "revoke", "carol-ci"], None));
    assert_eq!(
        status(&server, "/v2/", &robot),
        401,
        "revocation takes effect at once"
    );
    fails(
        &berth(&data, &["token", "revoke", "carol-ci"], None),
        "already revoked",
    );
    fails(
        &berth(&data, &["token", "revoke", "nope"], None),
        "no token",
    );
    assert!(ok(&berth(&data, &["token", "list"], None)).contains("revoked"));

    ok(&berth(&data, &["user", "disable", "carol"], None));
    assert_eq!(status(&server, "/v2/", &carol), 401);
    ok(&berth(&data, &["user", "enable", "carol"], None));
    assert_eq!(status(&server, "/v2/", &carol), 200);
    ok(&berth(
        &data,
        &["user", "passwd", "carol", "--password-stdin"],
        Some("new-pw\n"),
    ));
    assert_eq!(
        status(&server, "/v2/", &carol),
        401,
        "the old password stops working"
    );
    assert_eq!(status(&server, "/v2/", &basic("carol", "new-pw")), 200);
    ok(&berth(&data, &["user", "revoke", "carol", "team/*"], None));
    fails(
        &berth(&data, &["user", "revoke", "carol", "team/*"], None),
        "no grant",
    );
    ok(&berth(&data, &["user", "remove", "carol"], None));
    assert_eq!(status(&server, "/v2/", &basic("carol", "new-pw")), 401);

    ok(&berth(&data, &["anonymous", "allow", "public/**"], None));
    assert_eq!(
        ok(&berth(&data, &["anonymous", "list"], None)).trim(),
        "public/**"
    );
    fails(
        &berth(&data, &["anonymous", "allow", "../x"], None),
        "invalid repository pattern",
    );
    ok(&berth(&data, &["anonymous", "deny", "public/**"], None));
    fails(
        &berth(&data, &["anonymous", "deny", "public/**"], None),
        "was not open",
    );
}

#[test]
fn commands_need_an_existing_data_directory() {
    let tmp = tempfile::tempdir().unwrap();
    fails(
        &berth(&tmp.path().join("nothing"), &["user", "list"], None),
        "no berth database",
    );
}
