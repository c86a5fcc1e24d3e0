//! A push the credentials do not allow fails at once, in every client, with a message that
//! names the refusal: a pull-only robot token, and a token scoped to another repository, with
//! the Docker CLI, containerd's `ctr`, skopeo and podman. (A refusal these clients read as
//! worth retrying makes `docker push` retry for about 50 seconds before a bare "denied".)

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::cmd::{combined, output, run};
use crate::common::containers::{Clients, containerd_socket};
use crate::common::docker::{Docker, busybox_rootfs};
use crate::common::images::write_oci_layout;
use crate::common::{ADMIN_PASSWORD, Server, require_tool};

/// The most a refused push may take, start to exit.
const AT_ONCE: Duration = Duration::from_secs(5);

/// A server holding `team/app:1`, with a pull-only token `cluster` on `team/*` and a push
/// token `elsewhere` scoped to `other/*`. Returns the server and both secrets.
fn setup(clients: &Clients, dir: &Path) -> (Server, String, String) {
    let server = Server::start(&dir.join("data"), &[]);
    let layout = dir.join("layout");
    write_oci_layout(&layout, "v1", 31);
    clients.skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("--dest-creds=admin:{ADMIN_PASSWORD}"),
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{}/team/app:1", server.host()),
    ]);
    server.admin_with_stdin(&["user", "add", "ci", "--password-stdin"], "ci-password\n");
    server.admin(&["user", "grant", "ci", "**", "pull,push"]);
    let token = |name: &str, scope: &str| {
        let args = [
            "token", "create", "--user", "ci", "--name", name, "--scope", scope,
        ];
        server.admin(&args).trim().to_string()
    };
    let pull_only = token("cluster", "team/*:pull");
    let elsewhere = token("elsewhere", "other/*:pull,push");
    (server, pull_only, elsewhere)
}

/// Run a push that must be refused: it fails within `AT_ONCE` and its output names the
/// refusal. Returns the output.
#[track_caller]
fn refused(what: &str, cmd: &mut Command, words: &[&str]) -> String {
    let started = Instant::now();
    let out: Output = output(cmd);
    let took = started.elapsed();
    let text = combined(&out);
    assert!(!out.status.success(), "{what} should fail:\n{text}");
    assert!(took < AT_ONCE, "{what} took {took:?} to give up:\n{text}");
    let lower = text.to_lowercase();
    assert!(
        words.iter().any(|w| lower.contains(w)),
        "{what}: expected one of {words:?} in:\n{text}"
    );
    text
}

#[test]
fn refused_pushes_fail_at_once_in_skopeo_and_podman() {
    let clients = Clients::new();
    let tmp = tempfile::tempdir().unwrap();
    let (server, pull_only, elsewhere) = setup(&clients, tmp.path());
    let host = server.host();
    let layout = format!("oci:{}:v1", tmp.path().join("layout").display());
    for (creds, dest) in [
        (format!("cluster:{pull_only}"), "team/app:2"),
        (format!("cluster:{pull_only}"), "team/new:1"),
        (format!("elsewhere:{elsewhere}"), "team/app:2"),
    ] {
        let mut cmd = clients.command(
            "skopeo",
            &[
                "copy",
                "--dest-tls-verify=false",
                &format!("--dest-creds={creds}"),
                &layout,
                &format!("docker://{host}/{dest}"),
            ],
        );
        let text = refused("skopeo copy", &mut cmd, &["may not push", "403", "denied"]);
        assert!(text.contains(dest.split(':').next().unwrap()), "{text}");
    }

    // podman, with an image store of its own (and an auth file, which it wants to exist).
    require_tool("podman");
    std::fs::write(clients.authfile(), br#"{"auths":{}}"#).unwrap();
    let store = tmp.path().join("podman");
    let podman = |args: &[&str]| {
        let mut full = vec![
            "--root".to_string(),
            store.join("root").display().to_string(),
            "--runroot".to_string(),
            store.join("run").display().to_string(),
            "--storage-driver".to_string(),
            "vfs".to_string(),
        ];
        full.extend(args.iter().map(|a| a.to_string()));
        clients.command("podman", &full)
    };
    run(&mut podman(&[
        "pull",
        "--tls-verify=false",
        &format!("--creds=admin:{ADMIN_PASSWORD}"),
        &format!("{host}/team/app:1"),
    ]));
    for (creds, dest) in [
        (format!("cluster:{pull_only}"), "team/app:2"),
        (format!("elsewhere:{elsewhere}"), "team/new:1"),
    ] {
        let mut cmd = podman(&[
            "push",
            "--tls-verify=false",
            &format!("--creds={creds}"),
            &format!("{host}/team/app:1"),
            &format!("{host}/{dest}"),
        ]);
        let text = refused("podman push", &mut cmd, &["may not push", "403", "denied"]);
        assert!(text.contains(dest.split(':').next().unwrap()), "{text}");
    }
}

#[test]
fn refused_pushes_fail_at_once_with_docker() {
    let clients = Clients::new();
    let mut docker = Docker::new();
    let tmp = tempfile::tempdir().unwrap();
    let (server, pull_only, elsewhere) = setup(&clients, tmp.path());
    let host = server.host();
    let root = tmp.path().join("rootfs");
    busybox_rootfs(&root);
    let image = format!("{host}/team/fresh:1");
    docker.import(&root, &image);
    for (user, secret) in [("cluster", &pull_only), ("elsewhere", &elsewhere)] {
        docker.login(&host, user, secret);
        let mut cmd = docker.command(&["push", &image]);
        let text = refused("docker push", &mut cmd, &["may not push"]);
        assert!(text.contains("team/fresh"), "{text}");
        assert!(text.contains(user), "{text}");
    }
}

#[test]
fn refused_pushes_fail_at_once_with_ctr() {
    let ctr_bin = require_tool("ctr");
    let clients = Clients::new();
    let tmp = tempfile::tempdir().unwrap();
    let (server, pull_only, elsewhere) = setup(&clients, tmp.path());
    let host = server.host();
    let namespace = format!("berth-test-{}", std::process::id());
    let ctr = |args: &[&str]| {
        let mut c = Command::new(&ctr_bin);
        c.args(["--address", containerd_socket(), "--namespace", &namespace])
            .args(args);
        c
    };
    let source = format!("{host}/team/app:1");
    run(&mut ctr(&[
        "images",
        "pull",
        "--plain-http",
        "--user",
        &format!("admin:{ADMIN_PASSWORD}"),
        &source,
    ]));
    let cases = [
        (format!("cluster:{pull_only}"), format!("{host}/team/app:2")),
        (
            format!("elsewhere:{elsewhere}"),
            format!("{host}/team/new:1"),
        ),
    ];
    for (creds, dest) in &cases {
        run(&mut ctr(&["images", "tag", &source, dest]));
        let mut cmd = ctr(&["images", "push", "--plain-http", "--user", creds, dest]);
        refused("ctr images push", &mut cmd, &["403", "denied", "forbidden"]);
    }
    let mut names = vec![source.clone()];
    names.extend(cases.iter().map(|(_, d)| d.clone()));
    let mut rm = vec!["images", "rm"];
    rm.extend(names.iter().map(String::as_str));
    let _ = output(&mut ctr(&rm));
    let _ = output(&mut ctr(&["content", "prune", "references"]));
}
