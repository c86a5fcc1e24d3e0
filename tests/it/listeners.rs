//! Limits of the listeners, on the real binary: silent, slow-header and idle connections are
//! closed within the configured timeouts on the plain, TLS and redirect listeners; a real
//! client is answered while the connection cap is reached; an upload that keeps moving is
//! not cut however long it takes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::net::{absolute, client};
use crate::common::pebble::self_signed;
use crate::common::server::{Server, free_port};
use crate::common::{ADMIN_PASSWORD, basic};

const SHORT: &[(&str, &str)] = &[
    ("BERTH_LIMITS__HEADER_TIMEOUT_SECS", "2"),
    ("BERTH_LIMITS__IDLE_TIMEOUT_SECS", "3"),
];

/// Seconds until the server closes `s` (reads return end of file or an error), at most
/// `limit`; `None` if it is still open then.
fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

/// Connections that send nothing, trickle a header byte every half second, or go idle after
/// one request, against `port`.
fn misbehaving_connections(port: u16) -> Vec<(&'static str, TcpStream)> {
    let silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    idle.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let trickle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut t = trickle.try_clone().unwrap();
    std::thread::spawn(move || {
        let _ = t.write_all(b"GET /v2/ HTTP/1.1\r\nX-Slow: ");
        for _ in 0..40 {
            std::thread::sleep(Duration::from_millis(500));
            if t.write_all(b"a").is_err() {
                return;
            }
        }
    });
    vec![("silent", silent), ("idle", idle), ("trickling", trickle)]
}

fn assert_all_closed(conns: Vec<(&'static str, TcpStream)>, within: Duration) {
    let handles: Vec<_> = conns
        .into_iter()
        .map(|(what, mut s)| std::thread::spawn(move || (what, closed_within(&mut s, within))))
        .collect();
    for h in handles {
        let (what, closed) = h.join().unwrap();
        assert!(
            closed.is_some(),
            "the {what} connection is still open after {within:?}"
        );
    }
}

#[test]
fn silent_trickling_and_idle_connections_are_closed_on_the_plain_listener() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), SHORT);
    // Header timeout 2 s, idle timeout 3 s: all gone well within 6 s.
    assert_all_closed(misbehaving_connections(server.port), Duration::from_secs(6));
}

#[test]
fn silent_trickling_and_idle_connections_are_closed_on_the_tls_and_redirect_listeners() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    self_signed(
        d,
        "cert",
        "30",
        "/CN=registry.test",
        &["subjectAltName=DNS:registry.test"],
    );
    let config = d.join("berth.toml");
    let http_port = free_port();
    std::fs::write(
        &config,
        format!(
            "[tls]\nmode = \"files\"\ncert_file = \"{}\"\nkey_file = \"{}\"\nhttp_listen = \"127.0.0.1:{http_port}\"\n",
            d.join("cert.pem").display(),
            d.join("cert.key").display()
        ),
    )
    .unwrap();
    let mut env = SHORT.to_vec();
    env.push(("BERTH_CONFIG", config.to_str().unwrap()));
    let server = Server::start(&d.join("data"), &env);
    // On the TLS port the silent one never starts a handshake and the trickling one sends
    // bytes that are not one: the handshake timeout ends both.
    let mut conns = misbehaving_connections(server.port);
    conns.retain(|(what, _)| *what != "idle");
    conns.extend(misbehaving_connections(http_port));
    // And one that completes its handshake, then trickles fewer bytes than any request.
    let tls_trickler = std::thread::spawn(move || tls_trickle_lasts(server.port));
    assert_all_closed(conns, Duration::from_secs(6));
    let lasted = tls_trickler.join().unwrap();
    assert!(
        lasted < Duration::from_secs(6),
        "a trickle after the TLS handshake lasted {lasted:?}"
    );
}

/// How long the server keeps a TLS connection open that sends a byte every half second after
/// its handshake (at most 15 s).
fn tls_trickle_lasts(port: u16) -> Duration {
    use std::process::Stdio;
    let started = Instant::now();
    let mut child = std::process::Command::new(crate::common::require_tool("openssl"))
        .args([
            "s_client",
            "-quiet",
            "-servername",
            "registry.test",
            "-connect",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::spawn(move || {
        for b in b"GET /v2/ HTTP/1.1\r\nX" {
            if stdin.write_all(&[*b]).and_then(|()| stdin.flush()).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        // Then hold the connection open without a word.
        std::thread::sleep(Duration::from_secs(15));
    });
    while started.elapsed() < Duration::from_secs(15) {
        if child.try_wait().unwrap().is_some() {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    started.elapsed()
}

#[tokio::test]
async fn a_client_is_answered_while_the_connection_cap_is_reached() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(
        &tmp.path().join("data"),
        &[("BERTH_LIMITS__MAX_CONNECTIONS", "20")],
    );
    // Twice the cap of connections that say nothing, as an attacker would hold them.
    let hogs: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(("127.0.0.1", server.port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let r = client()
        .get(server.url("/v2/"))
        .header("authorization", basic("admin", ADMIN_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        server.log().contains("connection cap reached"),
        "{}",
        server.log()
    );
    drop(hogs);
}

#[tokio::test]
async fn a_slow_upload_that_keeps_moving_is_not_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), SHORT);
    let (c, auth) = (client(), basic("admin", ADMIN_PASSWORD));
    let loc = upload_session(&server, &c, &auth).await;
    // 100 MiB in 1 MiB pieces, 80 ms apart: about 8 s, longer than both timeouts.
    let started = Instant::now();
    let digest = patch_streamed_slowly(&c, &loc, &auth, 100).await;
    assert!(
        started.elapsed() > Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    let r = c
        .put(crate::common::net::with_query(
            &loc,
            "digest",
            &digest.to_string(),
        ))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
}

/// Start an upload session as the administrator; its absolute location.
async fn upload_session(server: &Server, c: &reqwest::Client, auth: &str) -> String {
    let r = c
        .post(server.url("/v2/slow/app/blobs/uploads/"))
        .header("authorization", auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    absolute(&server.url(""), r.headers()["location"].to_str().unwrap())
}

async fn patch_streamed_slowly(
    c: &reqwest::Client,
    url: &str,
    auth: &str,
    mib: u64,
) -> berth::oci::Digest {
    use futures_util::StreamExt as _;
    use std::sync::{Arc, Mutex};
    let hasher = Arc::new(Mutex::new(berth::oci::Hasher::new(
        berth::oci::Algorithm::Sha256,
    )));
    let h = hasher.clone();
    let body = futures_util::stream::iter(crate::common::prng::Stream::new(7, mib << 20, 1 << 20))
        .then(move |b| {
            let h = h.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(80)).await;
                h.lock().unwrap().update(&b);
                Ok::<_, std::io::Error>(b)
            }
        });
    let r = c
        .patch(url)
        .header("authorization", auth)
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "the slow PATCH was cut");
    assert_eq!(
        r.headers()["range"].to_str().unwrap(),
        format!("0-{}", (mib << 20) - 1)
    );
    hasher.lock().unwrap().clone().finish()
}

#[tokio::test]
async fn sigterm_during_an_endless_request_ends_the_process_within_the_grace_period() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(
        &tmp.path().join("data"),
        &[("BERTH_SHUTDOWN_GRACE_SECS", "2")],
    );
    let (c, auth) = (client(), basic("admin", ADMIN_PASSWORD));
    let loc = upload_session(&server, &c, &auth).await;
    // A PATCH that keeps moving and never ends (a kibibyte every 100 ms).
    let body = futures_util::stream::unfold((), |()| async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Some((Ok::<_, std::io::Error>(vec![0u8; 1024]), ()))
    });
    let endless = tokio::spawn(
        c.patch(&loc)
            .header("authorization", &auth)
            .body(reqwest::Body::wrap_stream(body))
            .send(),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let signalled = Instant::now();
    server.signal_term();
    let status = tokio::task::spawn_blocking(move || {
        let s = server.wait();
        (s, server.log())
    })
    .await
    .unwrap();
    let took = signalled.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?} after SIGTERM");
    assert!(
        took >= Duration::from_secs(2),
        "the request got its grace: {took:?}"
    );
    assert!(
        status.1.contains("still running after the grace period"),
        "{}",
        status.1
    );
    endless.abort();
}

#[tokio::test]
async fn small_blobs_on_a_kept_alive_connection_are_not_held_back() {
    // Without TCP_NODELAY, Nagle's algorithm holds the tail of each response until the
    // client's delayed ACK (40 ms on Linux): every small GET then takes about 44 ms.
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let c = client();
    let blob = vec![7u8; 16 * 1024];
    let d = berth::oci::Digest::sha256_of(&blob);
    let r = c
        .post(server.url(&format!("/v2/small/app/blobs/uploads/?digest={d}")))
        .body(blob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let url = server.url(&format!("/v2/small/app/blobs/{d}"));
    let mut times = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.bytes().await.unwrap().len(), 16 * 1024);
        times.push(t.elapsed());
    }
    times.sort();
    let median = times[times.len() / 2];
    assert!(
        median < Duration::from_millis(20),
        "median small GET {median:?}: {times:?}"
    );
}
