//! Memory stays bounded whatever the blob size: a 2 GiB blob pushed as one streamed PATCH
//! (no `Content-Length`, as `docker push` sends) and pulled back through the real binary. The
//! test never holds the blob either: it is generated, hashed and checked on the fly.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use berth::oci::{Algorithm, Hasher};
use futures_util::StreamExt;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RANGE};

use crate::common::Server;
use crate::common::net::{absolute, client, fetch_hashed, with_query};
use crate::common::prng;

const SIZE: u64 = 2 << 30;
const LIMIT_KIB: u64 = 100 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gib_blob_streams_through_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
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

    let hasher = Arc::new(Mutex::new(Hasher::new(Algorithm::Sha256)));
    let h = hasher.clone();
    let body = futures_util::stream::iter(prng::Stream::new(2024, SIZE, 1 << 20)).map(move |b| {
        h.lock().unwrap().update(&b);
        Ok::<_, std::io::Error>(b)
    });
    let r = client
        .patch(&loc)
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap());
    assert_eq!(
        r.headers()[RANGE].to_str().unwrap(),
        format!("0-{}", SIZE - 1)
    );
    let loc = absolute(&base, r.headers()[LOCATION].to_str().unwrap());
    // The server has every byte (Range above), so the stream has hashed every byte.
    let digest = hasher.lock().unwrap().clone().finish();
    let r = client
        .put(with_query(&loc, "digest", &digest.to_string()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    let pushed = started.elapsed();

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
        "2 GiB blob: push {pushed:?}, push+pull {:?}; server peak RSS (VmHWM) {} KiB = {:.1} MiB",
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
