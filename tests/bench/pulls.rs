//! Pulls as clusters make them, each measured against a limit:
//!
//! - the big blob pulled **cold** (its file evicted from the page cache first, with
//!   `posix_fadvise(DONTNEED)`, the way a pull some time after the push finds it) and then
//!   **warm**, beside the rate at which this process reads the same file cold (what `dd`
//!   reports), so each line is a share of what the disk gives, and beside the rate at which
//!   nginx sends the same file warm with `sendfile(2)` to the same client, the ceiling of a
//!   warm pull on this machine (for a peer whose blob file is not where peers.rs looks, these
//!   lines are skipped; without nginx, the ceiling is);
//! - a many-layer image pulled as docker does (several layers in flight), where per-request
//!   latency decides;
//! - the server's anonymous memory (heap, stacks: not mapped files) while many clients push
//!   and pull at once, and after.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use futures_util::{StreamExt, TryStreamExt, stream};
use reqwest::StatusCode;

use crate::XorShift;
use crate::peers;
use crate::server::{Kind, Server};
use crate::workloads::{self, Target};

const MIB: f64 = 1024.0 * 1024.0;

/// The file holding blob `digest` (`sha256:…`) of `repo` in a server's data directory;
/// None for a peer that keeps it elsewhere.
pub fn blob_file(server: &Server, repo: &str, digest: &str) -> Result<Option<PathBuf>> {
    let hex = digest
        .strip_prefix("sha256:")
        .context("not a sha256 digest")?;
    let data = server.data();
    let path = match server.kind {
        Kind::Berth => data.join("blobs/sha256").join(&hex[..2]).join(hex),
        Kind::Registry2 => data
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data"),
        Kind::Nora | Kind::Trow => {
            let path = peers::blob_file(server.kind, data, repo, digest);
            return Ok(path.is_file().then_some(path));
        }
    };
    ensure!(path.is_file(), "no blob file at {}", path.display());
    Ok(Some(path))
}

/// Drop a file's pages from the page cache (written back first, so none stays dirty).
pub fn evict(path: &Path) -> Result<()> {
    let file = std::fs::File::open(path)?;
    file.sync_all()?;
    rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed)?;
    Ok(())
}

/// MiB/s at which `path` reads cold, in 4 MiB reads, as `dd bs=4M` does.
pub fn raw_cold_read(path: &Path) -> Result<f64> {
    evict(path)?;
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 4 << 20];
    let (start, mut total) = (Instant::now(), 0u64);
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    Ok(total as f64 / MIB / start.elapsed().as_secs_f64())
}

/// The figures of one round: the disk's cold read of the blob's file, then the blob pulled
/// (with curl) cold and warm, and the file sent warm by nginx. MiB/s each, and the server's
/// CPU per GiB of the cold pull. None when the blob's file is not found.
pub struct ColdWarm {
    pub raw: f64,
    pub cold: f64,
    pub warm: f64,
    pub cold_cpu: f64,
    /// None without nginx.
    pub sendfile: Option<f64>,
}

pub async fn cold_and_warm(
    t: &Target,
    server: &Server,
    repo: &str,
    blob: &crate::blob::Blob,
) -> Result<Option<ColdWarm>> {
    let Some(path) = blob_file(server, repo, &blob.digest)? else {
        return Ok(None);
    };
    let raw = {
        let p = path.clone();
        tokio::task::spawn_blocking(move || raw_cold_read(&p)).await??
    };
    evict(&path)?;
    let cpu = server.cpu_secs()?;
    let cold = workloads::pull_curl(t, repo, blob).await?;
    let gib = blob.size as f64 / (1024.0 * MIB);
    let cold_cpu = (server.cpu_secs()? - cpu) / gib;
    let warm = workloads::pull_curl(t, repo, blob).await?;
    let sendfile = {
        let p = path.clone();
        tokio::task::spawn_blocking(move || sendfile_ceiling(&p)).await??
    };
    Ok(Some(ColdWarm {
        raw,
        cold,
        warm,
        cold_cpu,
        sendfile,
    }))
}

/// Debian's nginx, for the warm ceiling.
const NGINX: &str = "/usr/sbin/nginx";

/// MiB/s at which nginx, a static file server with `sendfile(2)` (no copy on the sending side),
/// sends the warm file at `path` to curl: what a warm pull could reach here. Median of three.
/// None when nginx is not installed.
pub fn sendfile_ceiling(path: &Path) -> Result<Option<f64>> {
    if !Path::new(NGINX).exists() {
        return Ok(None);
    }
    let (dir, name) = (
        path.parent().context("blob file without a folder")?,
        path.file_name().context("blob file without a name")?,
    );
    let tmp = tempfile::tempdir()?;
    let port = crate::server::free_port()?;
    let t = tmp.path().display();
    // One process, no privilege change: it reads the file as this process can.
    let config = format!(
        "daemon off; master_process off; pid {t}/pid; error_log {t}/error.log;\n\
         events {{ worker_connections 16; }}\n\
         http {{ access_log off; sendfile on;\n\
         client_body_temp_path {t}/b; proxy_temp_path {t}/p; fastcgi_temp_path {t}/f;\n\
         uwsgi_temp_path {t}/u; scgi_temp_path {t}/s;\n\
         server {{ listen 127.0.0.1:{port}; root {}; }} }}\n",
        dir.display()
    );
    std::fs::write(tmp.path().join("nginx.conf"), config)?;
    let mut child = std::process::Command::new(NGINX)
        .arg("-p")
        .arg(tmp.path())
        .arg("-e")
        .arg(tmp.path().join("error.log"))
        .arg("-c")
        .arg(tmp.path().join("nginx.conf"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("start nginx")?;
    let result = (|| {
        let url = format!("http://127.0.0.1:{port}/{}", name.to_string_lossy());
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            ensure!(Instant::now() < deadline, "nginx did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut rates = Vec::new();
        for _ in 0..3 {
            let out = std::process::Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code} %{speed_download}",
                ])
                .arg(&url)
                .output()
                .context("run curl")?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let mut parts = text.split_whitespace();
            ensure!(parts.next() == Some("200"), "nginx GET {url}: {text}");
            let speed: f64 = parts.next().unwrap_or("0").parse()?;
            rates.push(speed / MIB);
        }
        Ok(Some(crate::median(&rates)))
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Pull every layer of an image as docker does (`in_flight` at once), checking each length.
/// Seconds.
pub async fn layered_pull(
    t: &Target,
    repo: &str,
    layers: &[(String, usize)],
    in_flight: usize,
) -> Result<f64> {
    let start = Instant::now();
    stream::iter(layers)
        .map(|(digest, len)| async move {
            let url = t.url_of(&format!("v2/{repo}/blobs/{digest}"))?;
            let resp = t.http.get(url).send().await?;
            ensure!(
                resp.status() == StatusCode::OK,
                "GET layer: {}",
                resp.status()
            );
            let body = resp.bytes().await?;
            ensure!(
                body.len() == *len,
                "GET layer: {} bytes, expected {len}",
                body.len()
            );
            Ok(())
        })
        .buffer_unordered(in_flight)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(start.elapsed().as_secs_f64())
}

/// The server's anonymous memory (MiB): its peak while `clients` clients, each with a
/// connection of its own, push a blob of `blob_kib` KiB and pull it back `rounds` times, and
/// what is left five seconds after (berth hands free heap back every two seconds).
pub async fn many_clients(
    server: &Server,
    authorization: Option<&str>,
    clients: usize,
    rounds: usize,
    blob_kib: usize,
) -> Result<(f64, f64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let pid_status = format!("/proc/{}/status", server.pid());
    let sampler = {
        let stop = stop.clone();
        tokio::task::spawn_blocking(move || {
            let mut peak = 0.0f64;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(anon_mib(&pid_status).unwrap_or(0.0));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let t = Target::new(server.base.clone(), authorization, 1);
            tokio::spawn(async move {
                let t = t?;
                let repo = format!("bench/many-{i}");
                for round in 0..rounds {
                    let mut rng = XorShift(0x5eed_1000 + (i * rounds + round) as u64);
                    let data = rng.bytes(blob_kib * 1024);
                    let digest = workloads::push_small(&t, &repo, data).await?;
                    let url = t.url_of(&format!("v2/{repo}/blobs/{digest}"))?;
                    let got = t.http.get(url).send().await?.bytes().await?;
                    ensure!(got.len() == blob_kib * 1024, "pulled {} bytes", got.len());
                }
                anyhow::Ok(())
            })
        })
        .collect();
    let mut failed = None;
    for task in tasks {
        if let Err(e) = task.await? {
            failed.get_or_insert(e);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.await?;
    if let Some(e) = failed {
        return Err(e);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = anon_mib(&format!("/proc/{}/status", server.pid()))?;
    Ok((peak, after))
}

fn anon_mib(status_path: &str) -> Result<f64> {
    let status = std::fs::read_to_string(status_path)?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
        .context("no RssAnon")?;
    Ok(kib / 1024.0)
}
