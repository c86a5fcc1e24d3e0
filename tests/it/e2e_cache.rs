//! The pull-through cache with real clients and real upstreams: two more `berth` servers
//! with authentication (they speak the Docker token flow, as Docker Hub does) hold the
//! images; a third, configured with both as upstreams, is what the clients pull from.
//! skopeo and the Docker daemon use the path prefix, containerd's `ctr` the `?ns=` a
//! `hosts.toml` mirror adds. Every digest must equal the upstream's.

use std::path::Path;
use std::process::Command;

use berth::oci::Digest;

use crate::common::cmd::{output, run};
use crate::common::containers::{Clients, containerd_socket};
use crate::common::curl::curl;
use crate::common::docker::Docker;
use crate::common::images::{write_oci_index_layout, write_oci_layout};
use crate::common::{ADMIN_PASSWORD, Server, require_tool};

/// An upstream berth holding, in `lib/`: an OCI image (`app:1`), the same as Docker schema2
/// (`docker:1`) and a two-platform OCI index (`multi:1`).
struct Upstream {
    server: Server,
}

fn creds() -> String {
    format!("admin:{ADMIN_PASSWORD}")
}

fn start_upstream(clients: &Clients, dir: &Path, seed: u64) -> Upstream {
    let server = Server::start(&dir.join("data"), &[]);
    let host = server.host();
    let layout = dir.join("img");
    write_oci_layout(&layout, "1", seed);
    let index_layout = dir.join("multi");
    write_oci_index_layout(
        &index_layout,
        "1",
        &[("linux/amd64", seed + 1), ("linux/arm64", seed + 2)],
    );
    let dest = |repo: &str| format!("docker://{host}/lib/{repo}:1");
    let c = creds();
    clients.skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &c,
        &format!("oci:{}:1", layout.display()),
        &dest("app"),
    ]);
    clients.skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &c,
        "--format",
        "v2s2",
        &format!("oci:{}:1", layout.display()),
        &dest("docker"),
    ]);
    clients.skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        "--dest-creds",
        &c,
        &format!("oci:{}:1", index_layout.display()),
        &dest("multi"),
    ]);
    Upstream { server }
}

/// The digest of the manifest (or index) skopeo reads at `reference`.
fn raw_digest(clients: &Clients, reference: &str) -> Digest {
    let raw = clients.skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        &creds(),
        reference,
    ]);
    Digest::sha256_of(raw.as_bytes())
}

/// A berth caching `a` and `b`, as registries `a.example` and `b.example`.
fn start_cache(dir: &Path, a: &Server, b: &Server) -> Server {
    let password = dir.join("upstream-password");
    std::fs::write(&password, ADMIN_PASSWORD).unwrap();
    let config = dir.join("berth.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[upstreams]]
name = "a"
url = "{}"
registries = ["a.example"]
username = "admin"
password_file = "{}"

[[upstreams]]
name = "b"
url = "{}"
registries = ["b.example"]
username = "admin"
password_file = "{}"
"#,
            a.url(""),
            password.display(),
            b.url(""),
            password.display()
        ),
    )
    .unwrap();
    Server::start(
        &dir.join("data"),
        &[("BERTH_CONFIG", config.to_str().unwrap())],
    )
}

#[test]
fn skopeo_pulls_through_the_path_prefix_with_the_upstreams_digests() {
    let clients = Clients::new();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("a")).unwrap();
    std::fs::create_dir_all(tmp.path().join("b")).unwrap();
    std::fs::create_dir_all(tmp.path().join("c")).unwrap();
    let a = start_upstream(&clients, &tmp.path().join("a"), 61);
    let b = start_upstream(&clients, &tmp.path().join("b"), 71);
    let cache = start_cache(&tmp.path().join("c"), &a.server, &b.server);
    let (ah, ch) = (a.server.host(), cache.host());
    for repo in ["app", "docker", "multi"] {
        let upstream = raw_digest(&clients, &format!("docker://{ah}/lib/{repo}:1"));
        let through = raw_digest(&clients, &format!("docker://{ch}/a/lib/{repo}:1"));
        assert_eq!(through, upstream, "{repo}: the upstream's digest");
        // A full copy out (one platform of the index), every blob verified by skopeo.
        let out = tmp.path().join(format!("out-{repo}"));
        clients.skopeo(&[
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            &creds(),
            &format!("docker://{ch}/a/lib/{repo}:1"),
            &format!("dir:{}", out.display()),
        ]);
    }
    // The second upstream through the same listener.
    let bh = b.server.host();
    assert_eq!(
        raw_digest(&clients, &format!("docker://{ch}/b/lib/app:1")),
        raw_digest(&clients, &format!("docker://{bh}/lib/app:1"))
    );
    // A push into the cache is refused with the reason; elsewhere it works.
    let copy = |to: &str| -> Vec<String> {
        let c = creds();
        ["copy", "--src-tls-verify=false", "--dest-tls-verify=false"]
            .into_iter()
            .map(String::from)
            .chain(["--src-creds".into(), c.clone(), "--dest-creds".into(), c])
            .chain([
                format!("docker://{ah}/lib/app:1"),
                format!("docker://{ch}/{to}"),
            ])
            .collect()
    };
    let text = clients.skopeo_fails(&copy("a/lib/app:pushed"));
    assert!(text.contains("read-only cache"), "{text}");
    clients.skopeo(&copy("team/app:1"));
}

#[test]
fn ctr_pulls_from_two_upstreams_through_ns() {
    let ctr_bin = require_tool("ctr");
    let clients = Clients::new();
    let tmp = tempfile::tempdir().unwrap();
    for d in ["a", "b", "c"] {
        std::fs::create_dir_all(tmp.path().join(d)).unwrap();
    }
    let a = start_upstream(&clients, &tmp.path().join("a"), 81);
    let b = start_upstream(&clients, &tmp.path().join("b"), 91);
    let cache = start_cache(&tmp.path().join("c"), &a.server, &b.server);
    // berth is the mirror of both registry names: containerd adds `?ns=<name>`.
    let hosts = tmp.path().join("hosts.d");
    for name in ["a.example", "b.example"] {
        std::fs::create_dir_all(hosts.join(name)).unwrap();
        std::fs::write(
            hosts.join(name).join("hosts.toml"),
            format!(
                "server = \"https://{name}\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
                cache.host()
            ),
        )
        .unwrap();
    }
    let namespace = format!("berth-cache-test-{}", std::process::id());
    let ctr = |args: &[&str]| {
        let mut c = Command::new(&ctr_bin);
        c.args(["--address", containerd_socket(), "--namespace", &namespace])
            .args(args);
        c
    };
    let mut pulled = Vec::new();
    for (name, upstream) in [("a.example", &a.server), ("b.example", &b.server)] {
        for repo in ["app", "docker"] {
            let image = format!("{name}/lib/{repo}:1");
            run(&mut ctr(&[
                "images",
                "pull",
                "--hosts-dir",
                hosts.to_str().unwrap(),
                "--user",
                &creds(),
                &image,
            ]));
            let want = raw_digest(
                &clients,
                &format!("docker://{}/lib/{repo}:1", upstream.host()),
            );
            let listed = run(&mut ctr(&["images", "ls"]));
            let line = listed
                .lines()
                .find(|l| l.starts_with(&image))
                .unwrap_or_else(|| panic!("{image} not listed: {listed}"));
            assert!(
                line.contains(&want.to_string()),
                "{image}: {line}, want {want}"
            );
            pulled.push(image);
        }
    }
    // They came through berth: its cache repositories hold them.
    let catalog = curl(&["-u", &creds(), &cache.url("/v2/_catalog")]);
    let repos = catalog.assert(200).json()["repositories"].clone();
    for r in ["a/lib/app", "a/lib/docker", "b/lib/app", "b/lib/docker"] {
        assert!(
            repos.as_array().unwrap().iter().any(|x| x == r),
            "{r} in {repos}"
        );
    }
    let mut rm = vec!["images", "rm"];
    rm.extend(pulled.iter().map(String::as_str));
    let _ = output(&mut ctr(&rm));
    let _ = output(&mut ctr(&["content", "prune", "references"]));
}

#[test]
fn docker_pulls_through_the_path_prefix() {
    let mut docker = Docker::new();
    let clients = Clients::new();
    let tmp = tempfile::tempdir().unwrap();
    for d in ["a", "b", "c"] {
        std::fs::create_dir_all(tmp.path().join(d)).unwrap();
    }
    let a = start_upstream(&clients, &tmp.path().join("a"), 101);
    let b = start_upstream(&clients, &tmp.path().join("b"), 111);
    let cache = start_cache(&tmp.path().join("c"), &a.server, &b.server);
    let want = raw_digest(
        &clients,
        &format!("docker://{}/lib/docker:1", a.server.host()),
    );
    let image = format!("{}/a/lib/docker:1", cache.host());
    docker.login(&cache.host(), "admin", ADMIN_PASSWORD);
    docker.track(&image);
    docker.run(&["pull", &image]);
    let digests = docker.run(&[
        "image",
        "inspect",
        "--format",
        "{{json .RepoDigests}}",
        &image,
    ]);
    assert!(
        digests.contains(&want.to_string()),
        "{digests}, want {want}"
    );
}
