//! install.sh on a fresh Debian 12 with systemd as PID 1 (a container built from this
//! machine's apt sources with mmdebstrap, cached as an image), the release artifacts (built
//! by tests/release.sh for glibc 2.31) served from the host: the one-liner with `--http`
//! installs and starts berth, which survives `systemctl restart` and a container restart and
//! takes a push and a pull from skopeo on the host; the unit scores 2.0 or better in
//! `systemd-analyze security`; a second release upgrades in place with the data kept; a wrong
//! checksum installs nothing; `--uninstall` keeps the data. The release binary also runs on
//! Debian 11 (glibc 2.31).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::cmd::{output, run};
use crate::common::containers::Clients;
use crate::common::images::write_oci_layout;
use crate::common::require_tool;
use crate::common::server::free_port;

const IMAGE: &str = "berth-test/debian-systemd:bookworm";
const DEBIAN11: &str = "berth-test/debian:bullseye";
const HOST: &str = "dl.example.test";

fn docker(args: &[&str]) -> String {
    run(Command::new(require_tool("docker")).args(args))
}

/// The Debian 12 image with systemd, built once per machine.
fn image() {
    let have = output(Command::new(require_tool("docker")).args(["image", "inspect", IMAGE]));
    if have.status.success() {
        return;
    }
    let sources = "/etc/apt/sources.list.d/debian.sources";
    assert!(
        Path::new(sources).is_file(),
        "{sources} is needed to build the test image from this machine's mirror"
    );
    let script = format!(
        "set -o pipefail; {} --variant=minbase --include=systemd,systemd-sysv,dbus,curl,ca-certificates,iproute2,procps,passwd bookworm - {sources} | docker import -c 'CMD [\"/lib/systemd/systemd\"]' - {IMAGE}",
        require_tool("mmdebstrap").display()
    );
    run(Command::new("bash").args(["-c", &script]));
}

/// A minimal Debian 11 image, built once per machine.
fn debian11() {
    let have = output(Command::new(require_tool("docker")).args(["image", "inspect", DEBIAN11]));
    if have.status.success() {
        return;
    }
    let script = format!(
        "set -o pipefail; {} --variant=minbase bullseye - 'deb http://deb.debian.org/debian bullseye main' | docker import - {DEBIAN11}",
        require_tool("mmdebstrap").display()
    );
    run(Command::new("bash").args(["-c", &script]));
}

/// The release artifacts of `version`, built by tests/release.sh.
fn release(version: &str) -> PathBuf {
    // One build at a time (both tests here ask for it; cargo would wait anyway, the venv
    // would not).
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/dist").join(version);
    run(Command::new(root.join("tests/release.sh"))
        .arg(&dir)
        .arg(version)
        .current_dir(root));
    dir
}

/// A static file server on the Docker bridge's gateway, as a release site.
struct Site {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
}

impl Site {
    fn start(gateway: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new(require_tool("python3"))
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                gateway,
                "--directory",
            ])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect((gateway, port)).is_err() {
            assert!(Instant::now() < deadline, "the file server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("install.sh"),
            dir.path().join("install.sh"),
        )
        .unwrap();
        Site {
            child,
            dir,
            url: format!("http://{HOST}:{port}"),
        }
    }

    /// Publish release artifacts as `<version>/…`.
    fn publish(&self, version: &str, from: &Path) -> PathBuf {
        let to = self.dir.path().join(version);
        std::fs::create_dir_all(&to).unwrap();
        for f in ["berth-x86_64-linux", "SHA256SUMS"] {
            std::fs::copy(from.join(f), to.join(f)).unwrap();
        }
        to
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A container booted with systemd as PID 1 (the flags that work on this kind of machine).
struct Machine {
    id: String,
}

impl Machine {
    fn boot(image: &str, gateway: &str) -> Machine {
        let id = docker(&[
            "run",
            "-d",
            "--stop-signal",
            "SIGRTMIN+3",
            "--cap-add",
            "ALL",
            "--cap-drop",
            "SYS_RESOURCE",
            "--security-opt",
            "seccomp=unconfined",
            "--cgroupns=host",
            "-v",
            "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            "--tmpfs",
            "/run",
            "--tmpfs",
            "/run/lock",
            "--add-host",
            &format!("{HOST}:{gateway}"),
            image,
            "/lib/systemd/systemd",
        ])
        .trim()
        .to_string();
        let m = Machine { id };
        m.wait_booted();
        m
    }

    fn wait_booted(&self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let out = self.exec_output("systemctl is-system-running --wait");
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if state == "running" || state == "degraded" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the container did not boot: {state}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn exec_output(&self, script: &str) -> std::process::Output {
        output(Command::new(require_tool("docker")).args(["exec", &self.id, "sh", "-c", script]))
    }

    /// Run a shell script inside; panics unless it succeeds. Returns stdout and stderr.
    fn sh(&self, script: &str) -> String {
        let out = self.exec_output(script);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "`{script}` failed:\n{text}");
        text
    }

    fn address(&self) -> String {
        docker(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", &self.id])
            .trim()
            .to_string()
    }

    fn restart(&self) {
        docker(&["restart", &self.id]);
        self.wait_booted();
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.id]).output();
    }
}

/// The host's address on Docker's default bridge (docker0), where containers reach it.
fn gateway() -> String {
    let out = run(Command::new(require_tool("ip")).args(["-4", "-o", "addr", "show", "docker0"]));
    out.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("docker0 has no IPv4 address: {out}"))
}

/// The password install.sh printed for `admin`.
fn password(said: &str) -> String {
    said.lines()
        .find_map(|l| l.trim().strip_prefix("password:"))
        .map(|p| p.trim().to_string())
        .unwrap_or_else(|| panic!("no password in:\n{said}"))
}

fn push_and_pull(clients: &Clients, host: &str, password: &str, image_dir: &Path, tag: &str) {
    let creds = format!("admin:{password}");
    let to = format!("docker://{host}/smoke/app:{tag}");
    clients.skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        &format!("oci:{}:1", image_dir.display()),
        &to,
    ]);
    pull(clients, host, password, tag);
}

fn pull(clients: &Clients, host: &str, password: &str, tag: &str) {
    let creds = format!("admin:{password}");
    let out = tempfile::tempdir().unwrap();
    clients.skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &creds,
        &format!("docker://{host}/smoke/app:{tag}"),
        &format!("dir:{}", out.path().join("img").display()),
    ]);
}

#[test]
fn install_sh_on_a_fresh_debian_with_systemd() {
    image();
    let v1 = release("0.1.0-install-test.1");
    let v2 = release("0.1.0-install-test.2");
    let gw = gateway();
    let site = Site::start(&gw);
    site.publish("1", &v1);
    site.publish("2", &v2);
    // A release whose checksum file does not match its binary.
    let bad = site.publish("bad", &v2);
    std::fs::write(
        bad.join("SHA256SUMS"),
        format!("{}  berth-x86_64-linux\n", "0".repeat(64)),
    )
    .unwrap();

    let m = Machine::boot(IMAGE, &gw);
    let one_liner = |args: &str| {
        format!(
            "curl -fsSL {url}/install.sh | sh -s -- --base-url {url} {args}",
            url = site.url
        )
    };
    // Not root, and no options: one line each, nothing installed.
    let out = m.exec_output(&format!(
        "setpriv --reuid=65534 --regid=65534 --clear-groups sh -c '{}'",
        one_liner("--http --version 1")
    ));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("run this as root"));
    let out = m.exec_output(&one_liner("--version 1"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("give --domain D --email E"));

    // A wrong checksum on a fresh machine: nothing at all changes.
    let out = m.exec_output(&one_liner("--http --version bad"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"));
    for absent in [
        "id berth",
        "test -e /etc/berth",
        "test -e /usr/local/bin/berth",
        "test -e /etc/systemd/system/berth.service",
    ] {
        assert!(!m.exec_output(absent).status.success(), "{absent}");
    }

    // The documented one-liner with --http.
    let said = m.sh(&one_liner("--http --version 1"));
    assert!(
        said.contains("Installed berth 0.1.0-install-test.1"),
        "{said}"
    );
    let pw = password(&said);
    assert!(m.sh("systemctl is-active berth").trim() == "active");
    assert!(m.sh("stat -c %a /var/lib/berth").trim() == "700");
    assert!(m.sh("stat -c %U /var/lib/berth/berth.db").trim() == "berth");
    let host = format!("{}:5000", m.address());
    let clients = Clients::new();
    let layout = tempfile::tempdir().unwrap();
    write_oci_layout(layout.path(), "1", 301);
    push_and_pull(&clients, &host, &pw, layout.path(), "1");

    // Logs reach the journal without colour codes; Type=notify said it was ready.
    let log = m.sh("journalctl -u berth --no-pager -o cat");
    assert!(log.contains("berth is serving"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in the journal:\n{log}"
    );
    assert!(
        !log.contains(&pw),
        "the admin password is in the journal:\n{log}"
    );

    // systemctl restart, then a restart of the whole machine: still serving, data there.
    m.sh("systemctl restart berth");
    pull(&clients, &host, &pw, "1");
    m.restart();
    assert!(m.sh("systemctl is-active berth").trim() == "active");
    pull(&clients, &host, &pw, "1");

    // Hardening: 2.0 or better ("OK").
    let score = m.sh("systemd-analyze security berth.service --no-pager");
    let exposure: f64 = score
        .lines()
        .find_map(|l| l.strip_prefix("→ Overall exposure level for berth.service: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no score in:\n{score}"));
    assert!(exposure <= 2.0, "exposure {exposure}:\n{score}");
    println!("systemd-analyze security berth.service: {exposure}");

    // A wrong checksum installs nothing: the running version stays.
    let out = m.exec_output(&one_liner("--version bad"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("checksum mismatch") && err.contains("nothing was installed"),
        "{err}"
    );
    assert!(m.sh("berth --version").contains("0.1.0-install-test.1"));

    // Re-running upgrades in place, configuration and data kept.
    let config = m.sh("cat /etc/berth/berth.toml");
    let said = m.sh(&one_liner("--version 2"));
    assert!(
        said.contains("Upgraded berth 0.1.0-install-test.1 -> berth 0.1.0-install-test.2"),
        "{said}"
    );
    assert_eq!(m.sh("cat /etc/berth/berth.toml"), config);
    assert!(m.sh("systemctl is-active berth").trim() == "active");
    pull(&clients, &host, &pw, "1");

    // --uninstall: service and binary gone, data kept.
    let said = m.sh(&one_liner("--uninstall"));
    assert!(said.contains("kept the data"), "{said}");
    assert!(
        !m.exec_output("test -e /usr/local/bin/berth")
            .status
            .success()
    );
    assert!(!m.exec_output("systemctl cat berth").status.success());
    m.sh("test -s /var/lib/berth/berth.db");
    // --purge: the data, the configuration and the user go too.
    let said = m.sh(&one_liner("--uninstall --purge"));
    assert!(said.contains("removed"), "{said}");
    for absent in ["test -e /var/lib/berth", "test -e /etc/berth", "id berth"] {
        assert!(!m.exec_output(absent).status.success(), "{absent}");
    }
}

#[test]
fn the_release_binary_runs_on_debian_11() {
    debian11();
    let v1 = release("0.1.0-install-test.1");
    let bin = v1.join("berth-x86_64-linux");
    let mount = format!("{}:/berth:ro", bin.display());
    let out = docker(&["run", "--rm", "-v", &mount, DEBIAN11, "/berth", "--version"]);
    assert_eq!(out.trim(), "berth 0.1.0-install-test.1");
    let glibc = docker(&["run", "--rm", DEBIAN11, "ldd", "--version"]);
    assert!(
        glibc.lines().next().unwrap_or("").ends_with("2.31"),
        "{glibc}"
    );
    // It starts there too: its database, its first user, its listeners.
    let script = "/berth serve --data-dir /tmp/d --listen 127.0.0.1:5000 2>/tmp/log & \
        for i in $(seq 150); do grep -q 'berth is serving' /tmp/log && break; sleep 0.2; done; \
        cat /tmp/log; /berth --data-dir /tmp/d user list";
    let out = docker(&["run", "--rm", "-v", &mount, DEBIAN11, "sh", "-c", script]);
    assert!(out.contains("berth is serving"), "{out}");
    assert!(out.contains("admin"), "{out}");
}

/// `--domain D --email E`, run as the README's cloud-init runs it (the admin password chosen
/// there, a pull-only token for k3s written to registries.yaml): berth gets its certificate
/// over ACME by itself (pebble on the
/// Docker bridge stands in for Let's Encrypt; its DNS answers the container's address for
/// every name, and it validates on the container's ports 443 and 80). The registry then
/// answers on https://D with a certificate for D that chains to pebble's root, port 80
/// redirects to HTTPS, the web UI's sign-in page is there, and `berth tls status` names D.
#[test]
fn install_sh_with_a_domain_gets_its_certificate_over_acme() {
    const DOMAIN: &str = "registry.test";
    image();
    let v1 = release("0.1.0-install-test.1");
    let gw = gateway();
    let site = Site::start(&gw);
    site.publish("latest", &v1);
    let m = Machine::boot(IMAGE, &gw);
    let ip = m.address();
    let mut pebble = crate::common::pebble::Pebble::new_at(&gw, &ip, 443, 80, None);
    pebble.start();
    // The CA of pebble's API, where the service (ProtectSystem, its own user) can read it.
    let ca = "/usr/local/share/pebble-api-ca.pem";
    docker(&[
        "cp",
        &pebble.api_ca.display().to_string(),
        &format!("{}:{ca}", m.id),
    ]);
    m.sh(&format!("chmod 0644 {ca}"));

    // The README's cloud-init with the admin password and a k3s token, as cloud-init runs
    // its runcmd: each item a shell script, in order. Only the release site, the domain and
    // the test CA differ.
    let site_url = &site.url;
    let runcmd = readme_cloud_init_runcmd().into_iter().map(|item| {
        item.replace(
            "https://github.com/berth-registry/berth/releases/latest/download/install.sh",
            &format!("{site_url}/install.sh"),
        )
        .replace(
            " sh -s -- ",
            &format!(
                " BERTH_RELEASE_URL={site_url} sh -s -- --acme-directory {} --acme-ca-file {ca} ",
                pebble.directory
            ),
        )
        .replace("registry.example.com", DOMAIN)
    });
    let mut said = String::new();
    for item in runcmd {
        said.push_str(&m.sh(&item));
    }
    assert!(
        said.contains(&format!("registry:  https://{DOMAIN}")),
        "{said}"
    );
    assert!(
        said.contains(&format!("web UI:    https://{DOMAIN}/")),
        "{said}"
    );
    assert!(said.contains("open TCP ports 80 and 443"), "{said}");
    // registry.test resolves nowhere from inside: the installer warns, and goes on.
    assert!(
        said.contains(&format!("{DOMAIN} does not resolve yet")),
        "{said}"
    );

    // The certificate arrives within seconds; until then handshakes fail.
    let root = pebble.root();
    let resolve = format!("{DOMAIN}:443:{ip}");
    // The HTTP status of a GET of `path` on https://DOMAIN, as `user:secret` when given.
    let status = |path: &str, creds: Option<(&str, &str)>| {
        let mut cmd = Command::new(require_tool("curl"));
        cmd.args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--resolve",
            &resolve,
        ])
        .arg("--cacert")
        .arg(&root);
        if let Some((user, secret)) = creds {
            cmd.args(["-u", &format!("{user}:{secret}")]);
        }
        let out = cmd.arg(format!("https://{DOMAIN}{path}")).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if status("/v2/", None) == "401" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no certificate from pebble in time; berth's log:\n{}\npebble:\n{}",
            m.sh("journalctl -u berth --no-pager -o cat"),
            pebble.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(pebble.issued() >= 1, "{}", pebble.log());
    assert_eq!(status("/signin", None), "200");
    let redirect = run(Command::new(require_tool("curl")).args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        "-H",
        &format!("Host: {DOMAIN}"),
        &format!("http://{ip}/v2/"),
    ]));
    assert_eq!(redirect, format!("308 https://{DOMAIN}/v2/"));
    let tls = m.sh("runuser -u berth -- berth --config /etc/berth/berth.toml tls status");
    assert!(tls.contains(&format!("names: {DOMAIN}")), "{tls}");
    assert!(m.sh("systemctl is-active berth").trim() == "active");

    // The password cloud-init chose is the admin's; the k3s token it wrote works, for pulls.
    assert_eq!(
        status("/v2/", Some(("admin", "change-me-0123456789"))),
        "200"
    );
    assert_eq!(
        m.sh("stat -c %a /etc/rancher/k3s/registries.yaml").trim(),
        "600"
    );
    let yaml = m.sh("cat /etc/rancher/k3s/registries.yaml");
    assert!(yaml.contains(&format!("\"{DOMAIN}\":")), "{yaml}");
    let token = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("password: "))
        .unwrap_or_else(|| panic!("no token in:\n{yaml}"))
        .to_string();
    assert!(yaml.contains("username: k3s"), "{yaml}");
    assert_eq!(status("/v2/", Some(("k3s", &token))), "200");
    assert_eq!(status("/v2/", Some(("k3s", "wrong"))), "401");

    // skopeo pushes and pulls over HTTPS, trusting pebble's root, with registry.test
    // resolving to the container in a mount namespace of its own (the host's /etc/hosts
    // stays as it is).
    let certs = tempfile::tempdir().unwrap();
    std::fs::copy(&root, certs.path().join("pebble-root.crt")).unwrap();
    let hosts = tempfile::NamedTempFile::new().unwrap();
    let original = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    std::fs::write(hosts.path(), format!("{original}\n{ip} {DOMAIN}\n")).unwrap();
    let clients = Clients::new();
    let layout = tempfile::tempdir().unwrap();
    let image = write_oci_layout(layout.path(), "1", 302);
    let skopeo = |args: &[String]| {
        let inner = clients.command("skopeo", args);
        let mut cmd = Command::new(require_tool("unshare"));
        cmd.args([
            "-m",
            "sh",
            "-c",
            "mount --bind \"$0\" /etc/hosts && exec \"$@\"",
        ])
        .arg(hosts.path())
        .arg(inner.get_program())
        .args(inner.get_args());
        for (k, v) in inner.get_envs() {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        run(&mut cmd)
    };
    let cert_dir = certs.path().display().to_string();
    skopeo(&[
        "copy".into(),
        format!("--dest-cert-dir={cert_dir}"),
        "--dest-creds=admin:change-me-0123456789".into(),
        format!("oci:{}:1", layout.path().display()),
        format!("docker://{DOMAIN}/smoke/app:1"),
    ]);
    let back = tempfile::tempdir().unwrap();
    skopeo(&[
        "copy".into(),
        format!("--src-cert-dir={cert_dir}"),
        format!("--src-creds=k3s:{token}"),
        format!("docker://{DOMAIN}/smoke/app:1"),
        format!("oci:{}:1", back.path().display()),
    ]);
    let pulled = crate::common::images::read_oci_layout(back.path(), "1");
    assert_eq!(pulled.manifest, image.manifest);
}

/// The `runcmd` items of the README's second `#cloud-config` block (the one that sets the
/// admin password and writes k3s's registries.yaml).
fn readme_cloud_init_runcmd() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let block = readme
        .split("```yaml\n#cloud-config\n")
        .nth(2)
        .and_then(|b| b.split("```").next())
        .expect("a second #cloud-config block in the README");
    let mut items: Vec<String> = Vec::new();
    for line in block.lines().skip_while(|l| *l != "runcmd:").skip(1) {
        if let Some(item) = line.strip_prefix("  - ") {
            items.push(if item == "|" {
                String::new()
            } else {
                item.to_string()
            });
        } else if let (Some(body), Some(last)) = (line.strip_prefix("    "), items.last_mut()) {
            last.push_str(body);
            last.push('\n');
        }
    }
    assert!(items.len() >= 2, "runcmd items: {items:?}");
    items
}
