//! `tls.mode = off` behind a reverse proxy: nginx from Debian terminates nothing here but
//! forwards with `X-Forwarded-*` headers, which berth believes from its trusted proxy only;
//! the absolute URLs berth emits use the external scheme and host; a 600 MB streamed push
//! goes through. And `external_url`, through the router.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_LENGTH, LOCATION, WWW_AUTHENTICATE};

use crate::common::net::{client, patch_streamed, with_query};
use crate::common::server::free_port;
use crate::common::{Server, TestApp, require_tool};

const EXTERNAL: &str = "registry.test";

struct Nginx {
    child: Child,
    /// Holds the configuration and logs while nginx runs.
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers too (SIGKILL would orphan them).
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn nginx(port: u16, upstream: u16) -> Nginx {
    let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| require_tool("nginx"));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // As a streaming proxy should be set up in front of a registry: no request buffering, no
    // body size cap, HTTP/1.1 upstream (chunked bodies pass through), long timeouts.
    let conf = format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n{user}\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           server {{\n    listen 127.0.0.1:{port};\n    client_max_body_size 0;\n\
             location / {{\n      proxy_pass http://127.0.0.1:{upstream};\n      proxy_http_version 1.1;\n\
               proxy_request_buffering off;\n      proxy_buffering off;\n\
               proxy_set_header Host $http_host;\n\
               proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
               proxy_set_header X-Forwarded-Proto https;\n\
               proxy_set_header X-Forwarded-Host {EXTERNAL};\n\
               proxy_read_timeout 600s;\n      proxy_send_timeout 600s;\n    }}\n  }}\n}}\n",
        // Workers of a root master would switch to `nobody`, who cannot use the temp folders.
        user = if is_root() { "user root;\n" } else { "" },
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let child = Command::new(bin)
        .arg("-p")
        .arg(dir.path())
        .arg("-e")
        .arg(dir.path().join("startup.log"))
        .arg("-c")
        .arg(&conf_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "nginx did not start: {log}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Nginx { child, _dir: dir }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_nginx_with_trusted_forwarded_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(
        &tmp.path().join("data"),
        &[("BERTH_TRUSTED_PROXIES", "[\"127.0.0.1\"]")],
    );
    let port = free_port();
    let proxy = nginx(port, server.port);
    let base = format!("http://127.0.0.1:{port}");
    let http = client();

    // The token realm uses the external scheme and host.
    let r = reqwest::Client::new()
        .get(format!("{base}/v2/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let challenge = r.headers()[WWW_AUTHENTICATE].to_str().unwrap().to_string();
    assert!(
        challenge.starts_with(&format!("Bearer realm=\"https://{EXTERNAL}/token\"")),
        "{challenge}"
    );
    // Upload locations are absolute, external URLs.
    let r = http
        .post(format!("{base}/v2/proxy/big/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let loc = r.headers()[LOCATION].to_str().unwrap().to_string();
    let prefix = format!("https://{EXTERNAL}/v2/proxy/big/blobs/uploads/");
    assert!(loc.starts_with(&prefix), "{loc}");
    // The client here reaches the proxy on another address than the external one.
    let path = &loc[format!("https://{EXTERNAL}").len()..];

    // A 600 MB body streamed with chunked encoding, no Content-Length.
    const SIZE: u64 = 600 * 1024 * 1024;
    let started = Instant::now();
    let (_, digest) = patch_streamed(&http, &format!("{base}{path}"), 600, SIZE).await;
    let r = http
        .put(with_query(
            &format!("{base}{path}"),
            "digest",
            &digest.to_string(),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        201,
        "{}",
        r.text().await.unwrap_or_default()
    );
    assert_eq!(
        r.headers()[LOCATION].to_str().unwrap(),
        format!("https://{EXTERNAL}/v2/proxy/big/blobs/{digest}")
    );
    println!(
        "600 MB streamed push through nginx: {:?}",
        started.elapsed()
    );
    let r = http
        .head(format!("{base}/v2/proxy/big/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()[CONTENT_LENGTH].to_str().unwrap(),
        SIZE.to_string()
    );
    drop(proxy);
}

#[tokio::test]
async fn external_url_decides_absolute_urls() {
    let mut app = TestApp::with_config(|c| c.external_url = Some("https://r.example.com".into()));
    let r = app
        .call(
            "POST",
            "/v2/ext/blobs/uploads/",
            &[("host", "10.0.0.9:5000")],
            "",
        )
        .await;
    r.assert(202);
    assert!(
        r.header("location")
            .unwrap()
            .starts_with("https://r.example.com/v2/ext/blobs/uploads/")
    );
    app.auth_header = None;
    // The realm comes from external_url, whatever Host the client sends.
    for host in ["r.example.com", "evil.example", "10.0.0.9:5000"] {
        let r = app.call("GET", "/v2/", &[("host", host)], "").await;
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"https://r.example.com/token\",service=\"berth\""),
            "Host: {host}"
        );
    }
    // Without external_url and without a trusted proxy, forwarded headers are ignored and
    // locations stay relative.
    let plain = TestApp::new();
    let r = plain
        .call(
            "POST",
            "/v2/ext/blobs/uploads/",
            &[
                ("x-forwarded-host", "evil.example"),
                ("x-forwarded-proto", "https"),
            ],
            "",
        )
        .await;
    assert!(
        r.header("location")
            .unwrap()
            .starts_with("/v2/ext/blobs/uploads/")
    );
}
