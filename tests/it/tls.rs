//! HTTPS inside the binary: certificates from a real ACME CA (pebble) over TLS-ALPN-01 and
//! HTTP-01, the certificate cache, renewal, an ACME server that is down at start, PEM files
//! with reload, and plain HTTP behind nginx with trusted forwarded headers.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::cmd::run;
use crate::common::pebble::{Pebble, self_signed};
use crate::common::server::free_port;
use crate::common::{ADMIN_PASSWORD, Server, require_tool};

const DOMAIN: &str = "registry.test";

/// A config file for ACME against `pebble`.
fn acme_config(dir: &Path, pebble: &Pebble, challenge: &str, http: &str) -> std::path::PathBuf {
    let path = dir.join("berth.toml");
    std::fs::write(
        &path,
        format!(
            "[tls]\nmode = \"acme\"\ndomains = [\"{DOMAIN}\", \"localhost\"]\nemail = \"ops@registry.test\"\n\
             directory = \"{}\"\ndirectory_ca_file = \"{}\"\nchallenge = \"{challenge}\"\nhttp_listen = \"{http}\"\n",
            pebble.directory,
            pebble.api_ca.display()
        ),
    )
    .unwrap();
    path
}

/// `curl` over HTTPS to `registry.test:port` trusting `ca`; returns (status, http version,
/// headers).
fn https(port: u16, ca: &Path, path: &str, extra: &[&str]) -> Option<(u16, String, String)> {
    let out = Command::new(require_tool("curl"))
        .args([
            "-s",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
            "--max-time",
            "5",
            "--cacert",
        ])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{DOMAIN}:{port}:127.0.0.1"))
        .args(extra)
        .arg(format!("https://{DOMAIN}:{port}{path}"))
        .output()
        .unwrap();
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let last = text.lines().last()?.to_string();
    let (code, version) = last.split_once(' ')?;
    Some((code.parse().ok()?, version.to_string(), text))
}

/// Wait until berth serves a certificate that `ca` trusts.
fn wait_for_cert(
    port: u16,
    ca_of: impl Fn() -> std::path::PathBuf,
    secs: u64,
    server: &Server,
) -> std::path::PathBuf {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let ca = ca_of();
        if https(port, &ca, "/v2/", &[]).is_some() {
            return ca;
        }
        assert!(
            Instant::now() < deadline,
            "no trusted certificate after {secs} s; berth log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn tls_status(data: &Path, config: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .args(["tls", "status"])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn serial(status: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix("serial: "))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn acme_tls_alpn_01_issues_serves_and_restarts_from_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut pebble = Pebble::new(port, free_port(), None);
    pebble.start();
    let config = acme_config(tmp.path(), &pebble, "tls-alpn-01", "off");
    let data = tmp.path().join("data");
    let config_env = config.to_str().unwrap();
    let mut server = Server::start_on(&data, port, &[("BERTH_CONFIG", config_env)]);
    let root = wait_for_cert(port, || pebble.root(), 60, &server);

    let (code, version, headers) = https(port, &root, "/v2/", &[]).unwrap();
    assert_eq!(code, 401);
    assert_eq!(version, "2", "HTTP/2 offered by ALPN");
    let lower = headers.to_ascii_lowercase();
    assert!(
        lower.contains("strict-transport-security: max-age="),
        "{headers}"
    );
    assert!(
        lower.contains(&format!(
            "www-authenticate: bearer realm=\"https://{DOMAIN}:{port}/token\""
        )),
        "{headers}"
    );
    let (code, version, _) = https(
        port,
        &root,
        "/v2/",
        &["--http1.1", "-u", &format!("admin:{ADMIN_PASSWORD}")],
    )
    .unwrap();
    assert_eq!((code, version.as_str()), (200, "1.1"));
    assert!(
        https(port, &root, "/v2/", &["--tls-max", "1.1"]).is_none(),
        "TLS 1.1 is refused"
    );

    let (ok, status) = tls_status(&data, &config);
    assert!(ok, "{status}");
    assert!(
        status.contains(&format!("names: {DOMAIN}, localhost")),
        "{status}"
    );
    assert!(
        status.contains("issuer: CN=Pebble Intermediate CA"),
        "{status}"
    );
    let first = serial(&status);
    assert!(!first.is_empty());
    let key_dir = data.join("acme");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&key_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );

    // skopeo pushes and pulls through the certificate.
    let certs = tmp.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&root, certs.join("ca.crt")).unwrap();
    let layout = tmp.path().join("layout");
    let pushed = crate::common::images::write_oci_layout(&layout, "v1", 3);
    let creds = format!("admin:{ADMIN_PASSWORD}");
    let skopeo = require_tool("skopeo");
    run(Command::new(&skopeo)
        .args([
            "--insecure-policy",
            "copy",
            "--dest-creds",
            &creds,
            "--dest-cert-dir",
        ])
        .arg(&certs)
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://localhost:{port}/tls/app:v1")));
    let back = tmp.path().join("back");
    run(Command::new(&skopeo)
        .args([
            "--insecure-policy",
            "copy",
            "--src-creds",
            &creds,
            "--src-cert-dir",
        ])
        .arg(&certs)
        .arg(format!("docker://localhost:{port}/tls/app:v1"))
        .arg(format!("oci:{}:v1", back.display())));
    assert_eq!(crate::common::images::read_oci_layout(&back, "v1"), pushed);

    // A restart serves the cached certificate at once: no new order.
    let issued = pebble.issued();
    assert_eq!(issued, 1, "{}", pebble.log());
    server.terminate();
    let server = Server::start_on(&data, port, &[("BERTH_CONFIG", config_env)]);
    wait_for_cert(port, || root.clone(), 5, &server);
    assert_eq!(serial(&tls_status(&data, &config).1), first);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(pebble.issued(), issued, "no new order after a restart");
}

#[test]
fn acme_http_01_and_redirects_on_the_plain_listener() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, http_port) = (free_port(), free_port());
    let mut pebble = Pebble::new(free_port(), http_port, None);
    pebble.start();
    let config = acme_config(
        tmp.path(),
        &pebble,
        "http-01",
        &format!("127.0.0.1:{http_port}"),
    );
    let data = tmp.path().join("data");
    let server = Server::start_on(&data, port, &[("BERTH_CONFIG", config.to_str().unwrap())]);
    let root = wait_for_cert(port, || pebble.root(), 60, &server);
    assert_eq!(https(port, &root, "/v2/", &[]).unwrap().0, 401);

    // Everything but the challenge path is redirected to HTTPS.
    let out = run(Command::new(require_tool("curl"))
        .args(["-s", "-D", "-", "-o", "/dev/null", "-H"])
        .arg(format!("Host: {DOMAIN}:{http_port}"))
        .arg(format!(
            "http://127.0.0.1:{http_port}/v2/team/app/tags/list?n=1"
        )));
    assert!(out.starts_with("HTTP/1.1 308"), "{out}");
    assert!(
        out.to_ascii_lowercase().contains(&format!(
            "location: https://{DOMAIN}:{port}/v2/team/app/tags/list?n=1"
        )),
        "{out}"
    );
    let code = run(Command::new(require_tool("curl"))
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!(
            "http://127.0.0.1:{http_port}/.well-known/acme-challenge/unknown-token"
        )));
    assert_eq!(
        code, "404",
        "the challenge path is answered, not redirected"
    );
}

#[test]
fn acme_server_down_at_start_then_up() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut pebble = Pebble::new(port, free_port(), None);
    let config = acme_config(tmp.path(), &pebble, "tls-alpn-01", "off");
    let data = tmp.path().join("data");
    let metrics = format!("127.0.0.1:{}", free_port());
    let server = Server::start_on(
        &data,
        port,
        &[
            ("BERTH_CONFIG", config.to_str().unwrap()),
            ("BERTH_METRICS__LISTEN", &metrics),
        ],
    );
    let readyz = || {
        let out = Command::new(require_tool("curl"))
            .args(["-s", "-w", "\n%{http_code}"])
            .arg(format!("http://{metrics}/readyz"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.to_string(), body.to_string())
    };
    // berth runs, says why it has no certificate, and keeps trying.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !data.join("acme/last-error").exists() {
        assert!(
            Instant::now() < deadline,
            "no ACME error recorded:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, status) = tls_status(&data, &config);
    assert!(!ok, "no certificate yet is a failure: {status}");
    // Not ready without a certificate, and /readyz says why.
    let (code, body) = readyz();
    assert_eq!(code, "503", "{body}");
    assert!(
        body.contains(r#""certificate":"failed: no certificate yet""#),
        "{body}"
    );
    assert!(status.contains("certificate: none yet"), "{status}");
    assert!(status.contains("last ACME error:"), "{status}");
    assert!(
        server.log().contains("ACME: no new certificate yet"),
        "{}",
        server.log()
    );

    pebble.start();
    let root = wait_for_cert(port, || pebble.root(), 60, &server);
    assert_eq!(https(port, &root, "/v2/", &[]).unwrap().0, 401);
    let (ok, status) = tls_status(&data, &config);
    assert!(ok && !status.contains("last ACME error"), "{status}");
    let (code, body) = readyz();
    assert_eq!(code, "200", "{body}");
    assert!(body.contains(r#""certificate":"ok""#), "{body}");
}

#[test]
fn acme_renews_short_lived_certificates_without_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut pebble = Pebble::new(port, free_port(), Some(15));
    pebble.start();
    let config = acme_config(tmp.path(), &pebble, "tls-alpn-01", "off");
    let data = tmp.path().join("data");
    let server = Server::start_on(&data, port, &[("BERTH_CONFIG", config.to_str().unwrap())]);
    let root = wait_for_cert(port, || pebble.root(), 60, &server);
    let first = serial(&tls_status(&data, &config).1);
    // Renewal starts at two thirds of the 15 s lifetime.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let now = serial(&tls_status(&data, &config).1);
        if now != first && pebble.issued() >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not renewed; berth log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        https(port, &root, "/v2/", &[]).unwrap().0,
        401,
        "the renewed certificate is served"
    );
}

/// A certificate for DOMAIN, `<name>.pem` and `<name>.key`, valid `days`.
fn certificate(dir: &Path, name: &str, days: &str) {
    let (subject, san) = (
        format!("/CN={DOMAIN}"),
        format!("subjectAltName=DNS:{DOMAIN}"),
    );
    self_signed(dir, name, days, &subject, &[&san]);
}

#[test]
fn files_mode_serves_and_reloads_changed_files() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    certificate(d, "a", "30");
    certificate(d, "b", "60");
    std::fs::copy(d.join("a.pem"), d.join("cert.pem")).unwrap();
    std::fs::copy(d.join("a.key"), d.join("key.pem")).unwrap();
    let config = d.join("berth.toml");
    std::fs::write(
        &config,
        format!("[tls]\nmode = \"files\"\ncert_file = \"{}\"\nkey_file = \"{}\"\nhttp_listen = \"off\"\n", d.join("cert.pem").display(), d.join("key.pem").display()),
    )
    .unwrap();
    let port = free_port();
    let data = d.join("data");
    let server = Server::start_on(&data, port, &[("BERTH_CONFIG", config.to_str().unwrap())]);
    assert_eq!(https(port, &d.join("a.pem"), "/v2/", &[]).unwrap().0, 401);
    assert!(
        https(port, &d.join("b.pem"), "/v2/", &[]).is_none(),
        "b is not served yet"
    );
    // Replace the pair (key first, as a renewal tool might): b is served without a restart.
    std::fs::copy(d.join("b.key"), d.join("key.pem")).unwrap();
    std::fs::copy(d.join("b.pem"), d.join("cert.pem")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while https(port, &d.join("b.pem"), "/v2/", &[]).is_none() {
        assert!(Instant::now() < deadline, "not reloaded:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(server.log().contains("reloaded the TLS certificate"));
    let (ok, status) = tls_status(&data, &config);
    assert!(ok && status.contains("names: registry.test"), "{status}");

    // A key that does not match: one line and a non-zero exit at start (on a data directory
    // of its own: the first server holds this one).
    std::fs::copy(d.join("a.key"), d.join("key.pem")).unwrap();
    let other = d.join("data2");
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            other.to_str().unwrap(),
            "--listen",
        ])
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("serve")
        .env("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines()
            .any(|l| l.starts_with("berth: ") && l.contains("does not belong to")),
        "{err}"
    );
}
