//! HTTP helpers for tests against the real binary (`Server`): a client, and blob reads that
//! hash the body as it arrives instead of holding it.

use std::time::Duration;

use berth::oci::{Algorithm, Digest, Hasher};
use futures_util::StreamExt;

/// A client that sends the test administrator's credentials with every request.
pub fn client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let auth = super::basic("admin", super::ADMIN_PASSWORD);
    headers.insert(
        reqwest::header::AUTHORIZATION,
        auth.parse().expect("valid header"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(300))
        .build()
        .expect("build an HTTP client")
}

/// An absolute URL for a `Location` header, which may be a path on `base`.
pub fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else {
        format!("{}{location}", base.trim_end_matches('/'))
    }
}

/// Open an upload session in `repo` on the registry at `base`; returns its absolute
/// location. Panics unless it is answered 202.
pub async fn start_upload(c: &reqwest::Client, base: &str, repo: &str) -> String {
    let r = c
        .post(format!(
            "{}/v2/{repo}/blobs/uploads/",
            base.trim_end_matches('/')
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "opening an upload in {repo}");
    absolute(base, r.headers()["location"].to_str().unwrap())
}

/// `url` with one more query parameter.
pub fn with_query(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={value}")
}

/// The response to a GET whose body was hashed, not kept.
#[derive(Debug)]
pub struct Fetched {
    pub status: u16,
    /// Body length and digest of a successful response.
    pub len: u64,
    pub digest: Option<Digest>,
    /// The spec error code of an error response.
    pub code: Option<String>,
    /// The text of an error response.
    pub error_body: String,
}

/// GET `url`, streaming a successful body through SHA-256.
pub async fn fetch_hashed(client: &reqwest::Client, url: &str) -> Fetched {
    let resp = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    if !resp.status().is_success() {
        let error_body = resp.text().await.unwrap_or_default();
        let code = serde_json::from_str::<serde_json::Value>(&error_body)
            .ok()
            .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_string));
        return Fetched {
            status,
            len: 0,
            digest: None,
            code,
            error_body,
        };
    }
    let mut hasher = Hasher::new(Algorithm::Sha256);
    let mut len = 0u64;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.unwrap_or_else(|e| panic!("GET {url}: body failed after {len} bytes: {e}"));
        hasher.update(&chunk);
        len += chunk.len() as u64;
    }
    Fetched {
        status,
        len,
        digest: Some(hasher.finish()),
        code: None,
        error_body: String::new(),
    }
}

/// The spec error code of an error body, or the whole body when it has none.
pub fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

/// PATCH `url` with `size` bytes of the PRNG stream `seed`, with chunked encoding and no
/// Content-Length (as `docker push` sends), hashed on the fly so nothing is held. Checks the
/// 202 and that the server's `Range` covers every byte; returns the response and the digest
/// of what was sent.
pub async fn patch_streamed(
    client: &reqwest::Client,
    url: &str,
    seed: u64,
    size: u64,
) -> (reqwest::Response, Digest) {
    use std::sync::{Arc, Mutex};
    let hasher = Arc::new(Mutex::new(Hasher::new(Algorithm::Sha256)));
    let h = hasher.clone();
    let body =
        futures_util::stream::iter(super::prng::Stream::new(seed, size, 1 << 20)).map(move |b| {
            h.lock().unwrap().update(&b);
            Ok::<_, std::io::Error>(b)
        });
    let r = client
        .patch(url)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "PATCH {url}");
    assert_eq!(
        r.headers()[reqwest::header::RANGE].to_str().unwrap(),
        format!("0-{}", size - 1)
    );
    // The server has every byte (the Range above), so the stream has hashed every byte.
    let digest = hasher.lock().unwrap().clone().finish();
    (r, digest)
}
