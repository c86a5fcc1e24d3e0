//! Memory stays bounded whatever the blob size: a 2 GiB blob pushed as one streamed PATCH
//! (no `Content-Length`, as `docker push` sends) and pulled back through the real binary. The
//! test never holds the blob either: it is generated, hashed and checked on the fly.
//! The push does not fill the page cache either: what is on disk is dropped from it as the
//! upload goes (drop-behind).

use std::time::Instant;

use reqwest::header::{CONTENT_LENGTH, LOCATION};

use crate::common::net::{absolute, client, fetch_hashed, patch_streamed, with_query};
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

    let r = client
        .post(server.url("/v2/memory/big/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let loc = absolute(&base, r.headers()[LOCATION].to_str().unwrap());

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
