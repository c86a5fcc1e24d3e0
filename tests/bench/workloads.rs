//! The measured workloads. Each one checks every status code, digest and byte count it sees
//! and fails with the request that went wrong, so a number is only printed when it is right.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures_util::{StreamExt, TryStreamExt, stream};
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, HeaderMap, HeaderValue,
    LOCATION,
};
use reqwest::{Body, Client, Response, StatusCode, Url};

use crate::blob::Blob;
use crate::{XorShift, sha256_digest};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const MIB: f64 = 1024.0 * 1024.0;

/// One registry as seen by one client: its own connection pool, and the `Authorization`
/// value (if any) sent on every request.
pub struct Target {
    pub http: Client,
    pub base: Url,
    /// The `Authorization` value, for requests made by other clients (curl).
    authorization: Option<String>,
}

impl Target {
    pub fn new(base: Url, authorization: Option<&str>, conns: usize) -> Result<Target> {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            let mut value = HeaderValue::from_str(value)?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let http = Client::builder()
            .default_headers(headers)
            .pool_max_idle_per_host(2 * conns)
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(600))
            .build()?;
        Ok(Target {
            http,
            base,
            authorization: authorization.map(str::to_string),
        })
    }
}

/// Fail unless the response has the expected status; the error carries the body.
async fn expect(resp: Response, want: StatusCode, what: &str) -> Result<Response> {
    if resp.status() == want {
        return Ok(resp);
    }
    let got = resp.status();
    let body = resp.text().await.unwrap_or_default();
    bail!("{what}: expected {want}, got {got}: {body}")
}

fn header<'a>(resp: &'a Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

impl Target {
    /// The `Authorization` value every request carries.
    pub fn authorization(&self) -> Option<&str> {
        self.authorization.as_deref()
    }

    pub fn url_of(&self, path: &str) -> Result<Url> {
        self.url(path)
    }

    fn url(&self, path: &str) -> Result<Url> {
        Ok(self.base.join(path)?)
    }

    /// The `Location` of an upload response, absolute (registry:2) or relative (berth).
    fn location(&self, resp: &Response) -> Result<Url> {
        let loc = header(resp, LOCATION.as_str()).context("upload response without Location")?;
        Ok(self.base.join(loc)?)
    }

    /// POST /v2/<name>/blobs/uploads/ → 202 and the session's Location.
    async fn start_upload(&self, repo: &str) -> Result<Url> {
        let resp = self
            .http
            .post(self.url(&format!("v2/{repo}/blobs/uploads/"))?)
            .send()
            .await?;
        let resp = expect(resp, StatusCode::ACCEPTED, "POST blobs/uploads/").await?;
        self.location(&resp)
    }

    /// PATCH <location> with a body, with or without a length → 202 and the next Location.
    async fn patch(&self, loc: Url, body: Body, range: Option<(u64, u64)>) -> Result<Url> {
        let mut req = self.http.patch(loc).body(body);
        if let Some((start, len)) = range {
            req = req
                .header(CONTENT_RANGE, format!("{}-{}", start, start + len - 1))
                .header(CONTENT_LENGTH, len);
        }
        let resp = expect(req.send().await?, StatusCode::ACCEPTED, "PATCH upload").await?;
        self.location(&resp)
    }

    /// PUT <location>?digest=<d>, with the whole blob or nothing → 201 with that digest.
    async fn finish(&self, mut loc: Url, digest: &str, body: Option<(Body, u64)>) -> Result<()> {
        loc.query_pairs_mut().append_pair("digest", digest);
        let req = match body {
            Some((body, len)) => self.http.put(loc).header(CONTENT_LENGTH, len).body(body),
            None => self.http.put(loc),
        };
        let resp = expect(req.send().await?, StatusCode::CREATED, "PUT upload").await?;
        let got = header(&resp, "Docker-Content-Digest");
        ensure!(
            got == Some(digest),
            "PUT upload: Docker-Content-Digest {got:?}, pushed {digest}"
        );
        Ok(())
    }

    /// HEAD /v2/<name>/blobs/<d>: the blob's size, or None on 404.
    async fn blob_size(&self, repo: &str, digest: &str) -> Result<Option<u64>> {
        let resp = self
            .http
            .head(self.url(&format!("v2/{repo}/blobs/{digest}"))?)
            .send()
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = expect(resp, StatusCode::OK, "HEAD blob").await?;
        let len = header(&resp, CONTENT_LENGTH.as_str()).and_then(|v| v.parse().ok());
        Ok(Some(len.context("HEAD blob without Content-Length")?))
    }

    /// After a timed push: the registry must report the blob with its full size.
    async fn check_pushed(&self, repo: &str, blob: &Blob) -> Result<()> {
        let size = self.blob_size(repo, &blob.digest).await?;
        ensure!(
            size == Some(blob.size),
            "HEAD {repo}@{} after push: size {size:?}, pushed {}",
            blob.digest,
            blob.size
        );
        Ok(())
    }
}

fn mib_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / MIB / took.as_secs_f64()
}

/// POST, then PUT ?digest= with the whole blob and its Content-Length. MiB/s.
pub async fn push_monolithic(t: &Target, repo: &str, blob: &Blob) -> Result<f64> {
    let start = Instant::now();
    let loc = t.start_upload(repo).await?;
    let body = blob.body(0..blob.size);
    t.finish(loc, &blob.digest, Some((body, blob.size))).await?;
    let took = start.elapsed();
    t.check_pushed(repo, blob).await?;
    Ok(mib_per_s(blob.size, took))
}

/// POST, PATCH chunks with Content-Range and Content-Length, then PUT ?digest=. MiB/s.
pub async fn push_chunked(t: &Target, repo: &str, blob: &Blob, chunk: u64) -> Result<f64> {
    let start = Instant::now();
    let mut loc = t.start_upload(repo).await?;
    let mut offset = 0;
    while offset < blob.size {
        let len = chunk.min(blob.size - offset);
        let body = blob.body(offset..offset + len);
        loc = t.patch(loc, body, Some((offset, len))).await?;
        offset += len;
    }
    t.finish(loc, &blob.digest, None).await?;
    let took = start.elapsed();
    t.check_pushed(repo, blob).await?;
    Ok(mib_per_s(blob.size, took))
}

/// POST, one PATCH with a chunked-encoded body of unknown length (as `docker push`), then
/// PUT ?digest=. MiB/s.
pub async fn push_streamed(t: &Target, repo: &str, blob: &Blob) -> Result<f64> {
    let start = Instant::now();
    let loc = t.start_upload(repo).await?;
    let loc = t.patch(loc, blob.body(0..blob.size), None).await?;
    t.finish(loc, &blob.digest, None).await?;
    let took = start.elapsed();
    t.check_pushed(repo, blob).await?;
    Ok(mib_per_s(blob.size, took))
}

/// GET /v2/<name>/blobs/<d>, counting bytes (the digest header is checked, the bytes are
/// not hashed). MiB/s.
pub async fn pull(t: &Target, repo: &str, blob: &Blob) -> Result<f64> {
    let start = Instant::now();
    let url = t.url(&format!("v2/{repo}/blobs/{}", blob.digest))?;
    let resp = expect(t.http.get(url).send().await?, StatusCode::OK, "GET blob").await?;
    let got = header(&resp, "Docker-Content-Digest").map(str::to_string);
    ensure!(
        got.as_deref() == Some(blob.digest.as_str()),
        "GET blob: Docker-Content-Digest {got:?}, expected {}",
        blob.digest
    );
    let mut count = 0u64;
    let mut chunks = resp.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        count += chunk?.len() as u64;
    }
    let took = start.elapsed();
    ensure!(
        count == blob.size,
        "GET blob: {count} bytes, expected {}",
        blob.size
    );
    Ok(mib_per_s(blob.size, took))
}

/// The same pull with curl, a leaner client than this process's: when the client's own
/// receive cost is the limit, both servers look alike; curl leaves more of the machine to
/// the server.
pub async fn pull_curl(t: &Target, repo: &str, blob: &Blob) -> Result<f64> {
    let url = t.url(&format!("v2/{repo}/blobs/{}", blob.digest))?;
    let mut cmd = std::process::Command::new("curl");
    cmd.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{size_download} %{time_total}",
    ]);
    if let Some(auth) = &t.authorization {
        cmd.arg("-H").arg(format!("Authorization: {auth}"));
    }
    cmd.arg(url.as_str());
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await?
        .context("run curl")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut parts = text.split_whitespace();
    let (code, size, secs) = (parts.next(), parts.next(), parts.next());
    ensure!(
        code == Some("200"),
        "curl GET blob: status {code:?} ({text})"
    );
    let size: u64 = size.unwrap_or("0").parse()?;
    ensure!(
        size == blob.size,
        "curl GET blob: {size} bytes, expected {}",
        blob.size
    );
    let secs: f64 = secs.unwrap_or("0").parse()?;
    ensure!(secs > 0.0, "curl GET blob: no timing ({text})");
    Ok(blob.size as f64 / MIB / secs)
}

/// Push a small blob the way docker does: HEAD → 404, POST, PATCH (no length), PUT ?digest=.
pub async fn push_small(t: &Target, repo: &str, data: bytes::Bytes) -> Result<String> {
    let digest = sha256_digest(&data);
    if let Some(size) = t.blob_size(repo, &digest).await? {
        bail!("HEAD {repo}@{digest} before push: expected 404, got 200 (size {size})");
    }
    let loc = t.start_upload(repo).await?;
    let body = Body::wrap_stream(stream::iter([Ok::<_, std::io::Error>(data)]));
    let loc = t.patch(loc, body, None).await?;
    t.finish(loc, &digest, None).await?;
    Ok(digest)
}

/// An OCI image manifest; `seq` makes each one distinct.
fn manifest(config: &(String, usize), layers: &[(String, usize)], seq: usize) -> Vec<u8> {
    let descriptor = |media: &str, (digest, size): &(String, usize)| serde_json::json!({"mediaType": media, "digest": digest, "size": size});
    let doc = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": layers.iter().map(|l| descriptor(OCI_LAYER, l)).collect::<Vec<_>>(),
        "annotations": {"org.example.bench.seq": seq.to_string()},
    });
    serde_json::to_vec(&doc).expect("a JSON value serializes")
}

async fn put_manifest(t: &Target, repo: &str, tag: &str, body: Vec<u8>) -> Result<()> {
    let digest = sha256_digest(&body);
    let url = t.url(&format!("v2/{repo}/manifests/{tag}"))?;
    let req = t
        .http
        .put(url)
        .header(CONTENT_TYPE, OCI_MANIFEST)
        .body(body);
    let resp = expect(req.send().await?, StatusCode::CREATED, "PUT manifest").await?;
    let got = header(&resp, "Docker-Content-Digest");
    ensure!(
        got == Some(digest.as_str()),
        "PUT manifest {repo}:{tag}: Docker-Content-Digest {got:?}, expected {digest}"
    );
    Ok(())
}

/// GET /v2/<name>/manifests/<tag>, checking the body's length and digest header.
pub async fn get_manifest(t: &Target, url: Url, digest: &str, len: usize) -> Result<()> {
    let req = t.http.get(url.clone()).header(ACCEPT, OCI_MANIFEST);
    let resp = expect(req.send().await?, StatusCode::OK, "GET manifest").await?;
    let got = header(&resp, "Docker-Content-Digest").map(str::to_string);
    let body = resp.bytes().await?;
    ensure!(
        got.as_deref() == Some(digest) && body.len() == len,
        "GET {url}: digest {got:?} and {} bytes, expected {digest} and {len}",
        body.len()
    );
    Ok(())
}

/// The repository of the manifest workloads.
pub const MANIFEST_REPO: &str = "bench/manifests";

/// Pushed manifests for the read workloads: (URL, digest, length).
pub type Manifests = Vec<(Url, String, usize)>;

/// Latency percentiles in milliseconds.
pub struct Latency {
    pub median: f64,
    pub p99: f64,
}

fn latency(mut samples: Vec<Duration>) -> Latency {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    Latency {
        median: at(0.5),
        p99: at(0.99),
    }
}

/// One sequential GET of each manifest; the latency of each.
pub async fn manifest_get_latency(t: &Target, manifests: &Manifests) -> Result<Latency> {
    let mut gets = Vec::with_capacity(manifests.len());
    for (url, digest, len) in manifests {
        let start = Instant::now();
        get_manifest(t, url.clone(), digest, *len).await?;
        gets.push(start.elapsed());
    }
    Ok(latency(gets))
}

/// `n` manifests (with their config and layer) pushed to MANIFEST_REPO, each a new manifest
/// and tag, one PUT at a time; the latency of the PUTs.
pub async fn push_manifests(t: &Target, n: usize) -> Result<(Latency, Manifests)> {
    let repo = MANIFEST_REPO;
    let mut rng = XorShift(0x5eed_0001);
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let config = (
        push_small(t, repo, config.clone().into()).await?,
        config.len(),
    );
    let layer = rng.bytes(16 * 1024);
    let layer = (push_small(t, repo, layer.clone()).await?, layer.len());
    let mut puts = Vec::with_capacity(n);
    let mut pushed = Vec::with_capacity(n);
    for i in 0..n {
        let body = manifest(&config, std::slice::from_ref(&layer), i);
        let url = t.url(&format!("v2/{repo}/manifests/v{i}"))?;
        pushed.push((url, sha256_digest(&body), body.len()));
        let start = Instant::now();
        put_manifest(t, repo, &format!("v{i}"), body).await?;
        puts.push(start.elapsed());
    }
    Ok((latency(puts), pushed))
}

/// `conns` tasks GETting the pushed manifests in a loop for `secs` seconds. Requests/s.
pub async fn manifest_get_rps(
    t: &Arc<Target>,
    manifests: Arc<Manifests>,
    conns: usize,
    secs: f64,
) -> Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..conns)
        .map(|task| {
            let (t, manifests, done) = (t.clone(), manifests.clone(), done.clone());
            tokio::spawn(async move {
                let mut i = task;
                while Instant::now() < deadline {
                    let (url, digest, len) = &manifests[i % manifests.len()];
                    get_manifest(&t, url.clone(), digest, *len).await?;
                    done.fetch_add(1, Ordering::Relaxed);
                    i += conns;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// A `layers`-layer image of `layer_size` random bytes each, pushed as docker does (5 layers
/// in flight), then its config and manifest. Each `round` pushes other bytes (config
/// included) to another repository. Seconds, the repository and its layers (digest, size).
pub async fn layered_image(
    t: &Target,
    layers: usize,
    layer_size: usize,
    round: usize,
) -> Result<(f64, String, Vec<(String, usize)>)> {
    let repo = &format!("bench/layered-{round}");
    let mut rng = XorShift(0x5eed_0002 + round as u64);
    let blobs: Vec<_> = (0..layers).map(|_| rng.bytes(layer_size)).collect();
    // The config differs by round too: Trow answers HEAD of a blob that another repository
    // holds with 200, where push_small expects the 404 of a blob new to this repository.
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","layers":{layers},"config":{{"Labels":{{"org.example.bench.round":"{round}"}}}}}}"#
    );
    let start = Instant::now();
    let pushed: Vec<(String, usize)> = stream::iter(blobs)
        .map(|data| async move {
            let len = data.len();
            Ok::<_, anyhow::Error>((push_small(t, repo, data).await?, len))
        })
        .buffered(5)
        .try_collect()
        .await?;
    let config = (
        push_small(t, repo, config.clone().into()).await?,
        config.len(),
    );
    put_manifest(t, repo, "latest", manifest(&config, &pushed, 0)).await?;
    Ok((start.elapsed().as_secs_f64(), repo.clone(), pushed))
}
