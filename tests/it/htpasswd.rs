//! `berth user import-htpasswd`: users from an `htpasswd -B` file and from a Caddyfile's
//! basicauth block keep their passwords (the real Docker CLI logs in with them), their bcrypt
//! hashes become argon2id at the first login, and wrong passwords are refused and throttled
//! as for any user.

use std::path::Path;
use std::process::Command;

use crate::common::cmd::{berth, expect_failure, output, run};
use crate::common::docker::Docker;
use crate::common::net::client;
use crate::common::{Server, basic, require_tool};

/// `htpasswd -nbB -C COST USER PASS`: the bcrypt hash apache2-utils writes.
fn bcrypt(user: &str, pass: &str) -> String {
    let out = run(Command::new(require_tool("htpasswd")).args(["-nbB", "-C", "6", user, pass]));
    out.trim().split_once(':').unwrap().1.to_string()
}

fn stored_hash(data: &Path, user: &str) -> String {
    let db = rusqlite::Connection::open_with_flags(
        data.join("berth.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    db.query_row(
        "SELECT password_hash FROM users WHERE name = ?1",
        [user],
        |r| r.get(0),
    )
    .unwrap()
}

async fn status(server: &Server, user: &str, pass: &str) -> u16 {
    client()
        .get(server.url("/v2/"))
        .header("authorization", basic(user, pass))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn htpasswd_and_caddyfile_users_keep_their_passwords() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data, &[]);

    // An htpasswd file as `htpasswd -cB` makes it.
    let file = tmp.path().join("htpasswd");
    run(Command::new(require_tool("htpasswd"))
        .args(["-cbB", "-C", "6"])
        .arg(&file)
        .args(["ci", "ci-old-password"]));
    run(Command::new(require_tool("htpasswd"))
        .args(["-bB", "-C", "6"])
        .arg(&file)
        .args(["flux", "flux-old-password"]));
    let mut cmd = berth(
        &data,
        &["user", "import-htpasswd", "--grant", "team/**:pull,push"],
    );
    let out = run(cmd.arg(&file));
    assert!(out.contains("2 added, 0 already there, 0 skipped"), "{out}");
    assert!(stored_hash(&data, "ci").starts_with("$2y$"));

    // A Caddyfile: Caddy writes $2a$ hashes, older versions base64 of them; one line that
    // is not bcrypt is refused by name with a non-zero exit, the others still come in.
    use base64::Engine as _;
    let k3s = bcrypt("k3s", "k3s-old-password").replacen("$2y$", "$2a$", 1);
    let old_caddy =
        base64::engine::general_purpose::STANDARD.encode(bcrypt("legacy", "legacy-old-password"));
    let caddyfile = tmp.path().join("Caddyfile");
    std::fs::write(
        &caddyfile,
        format!(
            "registry.example.com {{\n\tbasicauth /v2/* {{\n\t\tk3s {k3s}\n\t\tlegacy {old_caddy}\n\t\tmd5 $apr1$abc$def\n\t\tci {}\n\t}}\n\treverse_proxy 127.0.0.1:5000\n}}\n",
            bcrypt("ci", "another")
        ),
    )
    .unwrap();
    let mut cmd = berth(&data, &["user", "import-htpasswd"]);
    cmd.arg(&caddyfile);
    let out = output(&mut cmd);
    let err = expect_failure(&cmd, &out);
    assert!(
        err.contains("skipped   md5 (line 5): an Apache MD5 hash"),
        "{err}"
    );
    assert!(err.contains("exists    ci"), "{err}");
    assert!(err.contains("2 added, 1 already there, 1 skipped"), "{err}");
    assert!(err.contains("berth: 1 of the users"), "{err}");

    // The old passwords work with the real Docker CLI; the hash is argon2id afterwards.
    let docker = Docker::new();
    let host = server.host();
    docker.login(&host, "ci", "ci-old-password");
    assert!(
        stored_hash(&data, "ci").starts_with("$argon2id$"),
        "{}",
        stored_hash(&data, "ci")
    );
    docker.login(&host, "k3s", "k3s-old-password");
    assert!(stored_hash(&data, "k3s").starts_with("$argon2id$"));
    assert_eq!(status(&server, "legacy", "legacy-old-password").await, 200);
    // And again after the re-hash (the ci login above was re-checked against argon2id).
    assert_eq!(status(&server, "ci", "ci-old-password").await, 200);
    // The grant came along: ci may push to team/**, not elsewhere.
    let r = client()
        .post(server.url("/v2/team/app/blobs/uploads/"))
        .header("authorization", basic("ci", "ci-old-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let r = client()
        .post(server.url("/v2/other/app/blobs/uploads/"))
        .header("authorization", basic("ci", "ci-old-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);

    // A wrong password is refused, by Docker too, and a burst of them is throttled; flux
    // (still bcrypt, never logged in) is refused the same way.
    let out = docker.try_login(&host, "flux", "wrong");
    assert!(!out.status.success());
    assert!(
        stored_hash(&data, "flux").starts_with("$2y$"),
        "a failed login changes nothing"
    );
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(status(&server, "flux", "guess").await);
    }
    assert!(statuses[..4].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
}
