//! Memory stays bounded whatever the blob size: a 2 GiB blob pushed as one streamed PATCH
//! (no `Content-Length`, as `docker push` sends) and pulled back through the real binary. The
//! test never holds the blob either: it is generated, hashed and checked on the fly.
//! The push does not fill the page cache either: what is on disk is dropped from it as the
//! upload goes (drop-behind).

use std::time::Instant;

use reqwest::header::{CONTENT_LENGTH, LOCATION};

use crate::common::net::{
    absolute, client, fetch_hashed, patch_streamed, start_upload, with_query,
};
use crate::common::{Server, require_tool};

const SIZE: u64 = 2 << 30;
const LIMIT_KIB: u64 = 100 * 1024;
/// At most this much of a freshly pushed big blob may still be in the page cache.
const CACHED_LIMIT: u64 = SIZE / 8;

/// Bytes of `path` in the page cache, by util-linux's fincore.
fn cached_bytes(path: &std::path::Path) -> u64 {
    let fincore = require_tool("fincore");
    let out = std::process::Command::new(fincore)
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "fincore {}: {text}", path.display());
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("fincore printed {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gib_blob_streams_through_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data, &[]);
    let client = client();
    let base = server.url("");
    let started = Instant::now();

    let loc = start_upload(&client, &base, "memory/big").await;

    let (r, digest) = patch_streamed(&client, &loc, 2024, SIZE).await;
    let loc = absolute(&base, r.headers()[LOCATION].to_str().unwrap());
    let r = client
        .put(with_query(&loc, "digest", &digest.to_string()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    let pushed = started.elapsed();
    let hex = digest.hex();
    let file = data.join("blobs/sha256").join(&hex[..2]).join(hex);
    let cached = cached_bytes(&file);
    assert!(
        cached <= CACHED_LIMIT,
        "{cached} bytes of the pushed blob are still in the page cache (limit {CACHED_LIMIT})"
    );

    let url = server.url(&format!("/v2/memory/big/blobs/{digest}"));
    let head = client.head(&url).send().await.unwrap();
    assert_eq!(head.status().as_u16(), 200);
    assert_eq!(
        head.headers()[CONTENT_LENGTH].to_str().unwrap(),
        SIZE.to_string()
    );
    let got = fetch_hashed(&client, &url).await;
    assert_eq!(got.status, 200, "{}", got.error_body);
    assert_eq!(got.len, SIZE);
    assert_eq!(got.digest, Some(digest));

    let peak = server.peak_rss_kib();
    println!(
        "2 GiB blob: push {pushed:?} ({} MiB left in the page cache), push+pull {:?}; \
         server peak RSS (VmHWM) {} KiB = {:.1} MiB",
        cached >> 20,
        started.elapsed(),
        peak,
        peak as f64 / 1024.0
    );
    assert!(peak > 0, "could not read the server's VmHWM");
    assert!(
        peak < LIMIT_KIB,
        "server peak RSS {peak} KiB exceeds {LIMIT_KIB} KiB"
    );
}

/// The highest value of a figure of the server, read every few milliseconds on a thread of
/// its own until stopped.
struct Peak {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl Peak {
    fn sample(server: &std::sync::Arc<Server>, every_ms: u64, read: fn(&Server) -> u64) -> Peak {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (server, stopped) = (server.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(read(&server));
                std::thread::sleep(std::time::Duration::from_millis(every_ms));
            }
            peak
        });
        Peak { stop, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// Clients at once in the many-connections test, and what each does.
const CLIENTS: usize = 200;
const BLOB_BYTES: u64 = 1 << 20;
const ROUNDS: usize = 2;
/// Anonymous memory bounds of the server under that load and after it.
const PEAK_ANON_LIMIT_KIB: u64 = 150 * 1024;
const AFTER_ANON_LIMIT_KIB: u64 = 40 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_connections_push_and_pull_in_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let server = std::sync::Arc::new(Server::start(&tmp.path().join("data"), &[]));
    let idle = server.rss_anon_kib();
    // Sample the server's anonymous memory while the load runs.
    let sampler = Peak::sample(&server, 20, Server::rss_anon_kib);
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let server = server.clone();
            tokio::spawn(async move {
                // A client of its own: one connection each, as many machines would.
                let c = client();
                let base = server.url("");
                for round in 0..ROUNDS {
                    let repo = format!("many/c{i}");
                    let loc = start_upload(&c, &base, &repo).await;
                    let seed = (i * ROUNDS + round) as u64;
                    let (r, digest) = patch_streamed(&c, &loc, seed, BLOB_BYTES).await;
                    let loc = absolute(&base, r.headers()[LOCATION].to_str().unwrap());
                    let r = c
                        .put(with_query(&loc, "digest", &digest.to_string()))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status().as_u16(), 201);
                    let url = server.url(&format!("/v2/{repo}/blobs/{digest}"));
                    let got = fetch_hashed(&c, &url).await;
                    assert_eq!(got.digest, Some(digest));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let took = started.elapsed();
    let peak = sampler.stop();
    // Freed memory goes back within a few seconds.
    let mut after = server.rss_anon_kib();
    let settle = Instant::now();
    while after >= AFTER_ANON_LIMIT_KIB && settle.elapsed() < std::time::Duration::from_secs(10) {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        after = server.rss_anon_kib();
    }
    println!(
        "{CLIENTS} clients x {ROUNDS} x (push + pull {} KiB) in {took:?}: server anonymous memory \
         idle {idle} KiB, peak {peak} KiB, after {after} KiB",
        BLOB_BYTES >> 10
    );
    assert!(peak > 0, "could not read the server's RssAnon");
    assert!(
        peak < PEAK_ANON_LIMIT_KIB,
        "peak anonymous memory {peak} KiB exceeds {PEAK_ANON_LIMIT_KIB} KiB"
    );
    assert!(
        after < AFTER_ANON_LIMIT_KIB,
        "anonymous memory after the load {after} KiB exceeds {AFTER_ANON_LIMIT_KIB} KiB"
    );
}

/// Downloads whose clients stopped reading, and how many threads the server may have while
/// they wait (it has a handful idle). A thread per download would let a few hundred slow
/// clients take every thread the database and the uploads need.
const STALLED: usize = 64;
const STALLED_THREADS_LIMIT: u64 = 24;
const STALLED_BLOB: usize = 16 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_downloads_hold_no_thread() {
    use std::io::{Read, Write};

    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let mut rng = 0x5eed_u64;
    let blob: Vec<u8> = (0..STALLED_BLOB)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng as u8
        })
        .collect();
    let digest = berth::oci::Digest::sha256_of(&blob);
    let r = client()
        .post(server.url(&format!("/v2/stall/app/blobs/uploads/?digest={digest}")))
        .body(blob.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);

    let request = format!(
        "GET /v2/stall/app/blobs/{digest} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\n\r\n",
        server.host(),
        crate::common::basic("admin", crate::common::ADMIN_PASSWORD)
    );
    // One after the other, each until its answer began: then it stops reading, with most of
    // the 16 MiB still to come (the socket buffers hold far less).
    let mut conns = Vec::new();
    for _ in 0..STALLED {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut first = [0u8; 4096];
        let n = s.read(&mut first).unwrap();
        let head = String::from_utf8_lossy(&first[..n]);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        conns.push((s, first[..n].to_vec()));
    }
    let threads = server.threads();
    println!("{STALLED} stalled downloads: the server has {threads} threads");
    assert!(
        threads < STALLED_THREADS_LIMIT,
        "{threads} server threads with {STALLED} stalled downloads (limit {STALLED_THREADS_LIMIT})"
    );
    let r = client()
        .get(server.url("/v2/_catalog"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // A stalled download that reads again gets every byte.
    let (mut s, mut got) = conns.pop().unwrap();
    drop(conns);
    let body_at = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut more = [0u8; 4096];
        let n = s.read(&mut more).unwrap();
        assert!(n > 0, "connection closed in the headers");
        got.extend_from_slice(&more[..n]);
    };
    let mut body = got.split_off(body_at);
    while body.len() < STALLED_BLOB {
        let mut more = vec![0u8; 1 << 20];
        let n = s.read(&mut more).unwrap();
        assert!(n > 0, "connection closed after {} bytes", body.len());
        body.extend_from_slice(&more[..n]);
    }
    assert_eq!(body.len(), STALLED_BLOB);
    assert!(
        body == blob,
        "the resumed download's bytes differ from the blob"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_uploads_hold_no_thread() {
    use std::io::{Read, Write};

    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let c = client();
    let base = server.url("");
    let auth = crate::common::basic("admin", crate::common::ADMIN_PASSWORD);
    // Each a streamed PATCH (as docker sends) whose client sent 300 KiB and then nothing.
    let sent = vec![7u8; 300 * 1024];
    let mut conns = Vec::new();
    for i in 0..STALLED {
        let loc = start_upload(&c, &base, &format!("stall/u{i}")).await;
        let path = loc
            .strip_prefix(base.trim_end_matches('/'))
            .unwrap()
            .to_string();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        write!(
            s,
            "PATCH {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {auth}\r\n\
             Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n\
             {:x}\r\n",
            server.host(),
            sent.len()
        )
        .unwrap();
        s.write_all(&sent).unwrap();
        s.write_all(b"\r\n").unwrap();
        conns.push((s, path));
    }
    // Their bytes are written (a write is on a thread only while it writes).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let threads = server.threads();
    println!("{STALLED} stalled uploads: the server has {threads} threads");
    assert!(
        threads < STALLED_THREADS_LIMIT,
        "{threads} server threads with {STALLED} stalled uploads (limit {STALLED_THREADS_LIMIT})"
    );

    // A stalled upload that goes on keeps every byte it sent.
    let (mut s, path) = conns.pop().unwrap();
    drop(conns);
    s.write_all(b"0\r\n\r\n").unwrap();
    let mut answer = [0u8; 4096];
    let n = s.read(&mut answer).unwrap();
    let head = String::from_utf8_lossy(&answer[..n]).to_lowercase();
    assert!(head.starts_with("http/1.1 202"), "{head}");
    let want = format!("range: 0-{}", sent.len() - 1);
    assert!(head.contains(&want), "{want} not in {head}");
    let r = c.get(server.url(&path)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(r.headers()["range"], want.trim_start_matches("range: "));
}

/// Clients at once in the database-turns test, the rounds each makes, and how many threads
/// the server may have meanwhile: a thread per waiting write came to over 200; what is left
/// are the short file operations of each round (the upload's file made and removed) and the
/// one writer (16 to 60 here).
const BURST_CLIENTS: usize = 200;
const BURST_REQUESTS: usize = 10;
const BURST_THREADS_LIMIT: u64 = 110;

/// Requests that need the database wait for a reader or the writer as tasks, not as blocking
/// threads: a burst of 200 clients would otherwise park a thread each behind the one writer
/// (a stack each; and for reads, a reader connection with its page cache each). Each client
/// opens upload sessions and cancels them: two writes a round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_requests_waits_for_database_turns_not_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let server = std::sync::Arc::new(Server::start(&tmp.path().join("data"), &[]));
    let sampler = Peak::sample(&server, 5, Server::threads);
    let tasks: Vec<_> = (0..BURST_CLIENTS)
        .map(|i| {
            let server = server.clone();
            tokio::spawn(async move {
                let c = client();
                let base = server.url("");
                let repo = format!("burst/c{i}");
                for _ in 0..BURST_REQUESTS {
                    let loc = start_upload(&c, &base, &repo).await;
                    let r = c.delete(&loc).send().await.unwrap();
                    assert_eq!(r.status().as_u16(), 204);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let peak = sampler.stop();
    println!(
        "{BURST_CLIENTS} clients x {BURST_REQUESTS} uploads opened and cancelled: at most {peak} \
         server threads"
    );
    assert!(peak > 0, "could not read the server's thread count");
    assert!(
        peak < BURST_THREADS_LIMIT,
        "{peak} server threads during a burst of {BURST_CLIENTS} clients (limit {BURST_THREADS_LIMIT})"
    );
}
