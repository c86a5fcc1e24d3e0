//! A real ACME CA: Debian's `pebble`, with `pebble-challtestsrv` as its DNS server (every name
//! resolves to one address: 127.0.0.1, or a container's), its own API certificate made with
//! openssl, and free ports, on loopback or another address of the host (the Docker bridge, for
//! a container). One instance per test: pebble keeps its state in memory and makes a new root
//! on every start.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::require_tool;
use super::server::free_port;

pub struct Pebble {
    pub dir: tempfile::TempDir,
    pebble: Option<Child>,
    challtestsrv: Child,
    /// The ACME directory URL.
    pub directory: String,
    /// The CA of pebble's API certificate (what berth's ACME client must trust).
    pub api_ca: PathBuf,
    api_port: u16,
    mgmt_port: u16,
    dns_port: u16,
    config: PathBuf,
    /// The address pebble listens on.
    ip: String,
}

/// Run openssl in `dir`; panics with its error output on failure.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new(require_tool("openssl"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed P-256 certificate `<name>.pem` with its key `<name>.key` in `dir`, valid
/// `days`, for `subject`, with `-addext` extensions.
pub fn self_signed(dir: &Path, name: &str, days: &str, subject: &str, extensions: &[&str]) {
    let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
    let mut args = vec![
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &pem,
        "-days",
        days,
        "-subj",
        subject,
    ];
    for ext in extensions {
        args.extend(["-addext", ext]);
    }
    openssl(dir, &args);
}

impl Pebble {
    /// Configure pebble to validate TLS-ALPN-01 on `tls_port` and HTTP-01 on `http_port`
    /// (berth's listeners), with certificates valid `validity_secs` when given. Not started.
    pub fn new(tls_port: u16, http_port: u16, validity_secs: Option<u64>) -> Pebble {
        Self::new_at("127.0.0.1", "127.0.0.1", tls_port, http_port, validity_secs)
    }

    /// `new`, listening on `ip` (an address of this host), with every name resolving to
    /// `resolve_to` (where the server asking for certificates answers the challenges).
    pub fn new_at(
        ip: &str,
        resolve_to: &str,
        tls_port: u16,
        http_port: u16,
        validity_secs: Option<u64>,
    ) -> Pebble {
        require_tool("pebble");
        require_tool("pebble-challtestsrv");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        self_signed(
            d,
            "ca",
            "30",
            "/CN=pebble test api CA",
            &[
                "basicConstraints=critical,CA:TRUE",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "key.pem",
                "-out",
                "api.csr",
                "-subj",
                "/CN=localhost",
            ],
        );
        std::fs::write(
            d.join("ext.cnf"),
            format!("subjectAltName=DNS:localhost,IP:127.0.0.1,IP:{ip}\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n"),
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "api.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "cert.pem",
                "-days",
                "30",
                "-extfile",
                "ext.cnf",
            ],
        );
        let (api_port, mgmt_port, dns_port, chall_mgmt) =
            (free_port(), free_port(), free_port(), free_port());
        let validity = validity_secs
            .map(|s| format!(",\n    \"certificateValidityPeriod\": {s}"))
            .unwrap_or_default();
        let config = d.join("pebble-config.json");
        std::fs::write(
            &config,
            format!(
                "{{\n  \"pebble\": {{\n    \"listenAddress\": \"{ip}:{api_port}\",\n    \"managementListenAddress\": \"{ip}:{mgmt_port}\",\n    \"certificate\": \"cert.pem\",\n    \"privateKey\": \"key.pem\",\n    \"httpPort\": {http_port},\n    \"tlsPort\": {tls_port},\n    \"ocspResponderURL\": \"\",\n    \"externalAccountBindingRequired\": false{validity}\n  }}\n}}\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("challtestsrv.log")).unwrap();
        let challtestsrv = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", resolve_to, "-defaultIPv6", "", "-dns01"])
            .arg(format!("127.0.0.1:{dns_port}"))
            .args([
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
            ])
            .arg(format!("127.0.0.1:{chall_mgmt}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let api_host = if ip == "127.0.0.1" { "localhost" } else { ip };
        Pebble {
            directory: format!("https://{api_host}:{api_port}/dir"),
            ip: ip.to_string(),
            api_ca: d.join("ca.pem"),
            dir,
            pebble: None,
            challtestsrv,
            api_port,
            mgmt_port,
            dns_port,
            config,
        }
    }

    /// Start pebble and wait until its directory answers.
    pub fn start(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("pebble.log")).unwrap();
        let child = Command::new("pebble")
            .arg("-config")
            .arg(&self.config)
            .arg("-dnsserver")
            .arg(format!("127.0.0.1:{}", self.dns_port))
            .arg("-strict=false")
            .current_dir(self.dir.path())
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.pebble = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = Command::new(require_tool("curl"))
                .args(["-sf", "-o", "/dev/null", "--cacert"])
                .arg(&self.api_ca)
                .arg(&self.directory)
                .status()
                .unwrap()
                .success();
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "pebble did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }

    /// Certificates pebble has issued so far (orders finalized).
    pub fn issued(&self) -> usize {
        self.log().matches("Issued certificate serial").count()
    }

    /// Pebble's issuing root (fetched from its management API), written to a file.
    pub fn root(&self) -> PathBuf {
        let path = self.dir.path().join("root.pem");
        let out = Command::new(require_tool("curl"))
            .args(["-sf", "--cacert"])
            .arg(&self.api_ca)
            .arg(format!("https://{}:{}/roots/0", self.ip, self.mgmt_port))
            .output()
            .unwrap();
        assert!(out.status.success(), "cannot fetch pebble's root");
        std::fs::write(&path, &out.stdout).unwrap();
        path
    }

    pub fn api_port(&self) -> u16 {
        self.api_port
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        if let Some(mut p) = self.pebble.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
        let _ = self.challtestsrv.kill();
        let _ = self.challtestsrv.wait();
    }
}
