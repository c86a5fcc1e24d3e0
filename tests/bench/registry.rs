//! Throughput, latency and memory of berth against registry:2, on loopback, in one run.
//!
//! `cargo bench --bench registry`. Knobs: `BENCH_SIZE_MIB` (size of the big blob, default
//! 1024), `BENCH_ONLY=berth` (skip registry:2), `BENCH_ONLY=auth` (only the authentication
//! section). registry:2 is Debian's `docker-registry` package; without it only berth is
//! measured. The servers run one after the other, each on a fresh temp data dir, so they
//! never compete for the two cores or the page cache.
//!
//! berth requires authentication: the table's workloads send the Basic credentials of a
//! robot token made with `berth token create` (a SHA-256 lookup, no argon2), as CI would;
//! registry:2 runs without authentication. After berth's table, the authentication section
//! (auth.rs) compares anonymous pulls with each kind of credentials.
//!
//! Client and server share the machine: the numbers compare registries under the same
//! client, they are not the registry's ceiling.

mod auth;
mod server;
mod workloads;

use anyhow::{Context, Result, bail, ensure};
use sha2::{Digest as _, Sha256};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use server::{Kind, ROBOT, Server};
use workloads::{Manifests, Target};

const MIB: u64 = 1024 * 1024;
/// Chunk size of the chunked push.
const CHUNK_MIB: u64 = 64;
/// Sequential requests for the manifest latency lines.
pub const LATENCY_REQUESTS: usize = 500;
/// Concurrency and duration of the manifest GET throughput line.
pub const CONNECTIONS: usize = 32;
pub const RPS_SECS: f64 = 5.0;
/// The many-layer image, with docker's 5 uploads in flight.
const LAYERS: usize = 200;
const LAYER_BYTES: usize = 16 * 1024;

/// xorshift64: fast, and incompressible enough that nothing on the path can shrink it.
pub struct XorShift(pub u64);

impl XorShift {
    fn fill(&mut self, buf: &mut [u8]) {
        for word in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            word.copy_from_slice(&self.0.to_le_bytes()[..word.len()]);
        }
    }

    pub fn bytes(&mut self, n: usize) -> bytes::Bytes {
        let mut buf = vec![0; n];
        self.fill(&mut buf);
        buf.into()
    }
}

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// The big blob: written once to a file, hashed before any timing, streamed from disk by
/// every push so the client holds little memory.
pub struct BigBlob {
    pub path: PathBuf,
    pub size: u64,
    pub digest: String,
}

impl BigBlob {
    fn generate(path: PathBuf, size: u64) -> Result<BigBlob> {
        let mut file = std::fs::File::create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let (mut rng, mut hash) = (XorShift(0x0123_4567_89ab_cdef), Sha256::new());
        let mut buf = vec![0u8; MIB as usize];
        let mut left = size;
        while left > 0 {
            let n = left.min(MIB) as usize;
            rng.fill(&mut buf[..n]);
            hash.update(&buf[..n]);
            file.write_all(&buf[..n])?;
            left -= n as u64;
        }
        file.sync_all()?;
        let digest = format!("sha256:{:x}", hash.finalize());
        Ok(BigBlob { path, size, digest })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Only {
    All,
    Berth,
    Auth,
}

struct Settings {
    size_mib: u64,
    only: Only,
}

impl Settings {
    fn from_env() -> Result<Settings> {
        let size_mib = match std::env::var("BENCH_SIZE_MIB") {
            Ok(v) => v
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .with_context(|| format!("BENCH_SIZE_MIB={v:?} is not a positive number"))?,
            Err(_) => 1024,
        };
        let only = match std::env::var("BENCH_ONLY").as_deref() {
            Ok("berth") => Only::Berth,
            Ok("auth") => Only::Auth,
            Ok(other) => bail!("BENCH_ONLY={other:?}: accepted values are \"berth\" and \"auth\""),
            Err(_) => Only::All,
        };
        Ok(Settings { size_mib, only })
    }

    fn size_label(&self) -> String {
        if self.size_mib % 1024 == 0 {
            format!("{} GiB", self.size_mib / 1024)
        } else {
            format!("{} MiB", self.size_mib)
        }
    }
}

/// One line of the table per measurement, in the same order for every server.
type Lines = Vec<(String, f64)>;

fn record(lines: &mut Lines, kind: Kind, label: String, value: f64) {
    eprintln!("  {:<12} {label:<44} {value:>10.2}", kind.label());
    lines.push((label, value));
}

/// A started server with the client of the table's workloads.
struct Started {
    server: Server,
    idle_mib: f64,
    target: Arc<Target>,
    /// berth's robot token secret.
    robot: Option<String>,
}

/// Start a server, create berth's robot token, and check that `GET /v2/` answers 200.
async fn start(kind: Kind) -> Result<Started> {
    let mut server = Server::start(kind)?;
    let idle_mib = server.wait_ready().await?;
    let robot = match kind {
        Kind::Berth => Some(server.create_robot()?),
        Kind::Registry2 => None,
    };
    let authorization = robot.as_deref().map(|secret| auth::basic(ROBOT, secret));
    let target = Target::new(server.base.clone(), authorization.as_deref(), CONNECTIONS)?;
    let status = target
        .http
        .get(target.base.join("v2/")?)
        .send()
        .await?
        .status();
    ensure!(
        status == reqwest::StatusCode::OK,
        "GET /v2/ on {}: expected 200, got {status}",
        kind.label()
    );
    Ok(Started {
        server,
        idle_mib,
        target: Arc::new(target),
        robot,
    })
}

/// The error of a failed run, with the end of the server's log.
fn with_log(e: anyhow::Error, server: &Server) -> anyhow::Error {
    e.context(format!(
        "{} failed; its log ends with:\n{}",
        server.kind.label(),
        server.log()
    ))
}

/// Start one server, run every workload against it (then, for berth, the authentication
/// section), stop it.
async fn bench(
    kind: Kind,
    settings: &Settings,
    blob: &BigBlob,
) -> Result<(Lines, Option<Vec<auth::Row>>)> {
    let s = start(kind).await?;
    let mut lines = Vec::new();
    let manifests = workloads(&s.target, kind, settings, blob, &mut lines)
        .await
        .map_err(|e| with_log(e, &s.server))?;
    record(&mut lines, kind, "idle RSS (MiB)".into(), s.idle_mib);
    let peak = s.server.memory_mib("VmHWM")?;
    record(&mut lines, kind, "peak RSS (MiB)".into(), peak);
    let auth = match &s.robot {
        Some(secret) => Some(
            auth::section(&s.server, secret, manifests)
                .await
                .map_err(|e| with_log(e, &s.server))?,
        ),
        None => None,
    };
    Ok((lines, auth))
}

/// BENCH_ONLY=auth: berth with the table's manifests pushed (untimed), then the section.
async fn auth_only() -> Result<Vec<auth::Row>> {
    let s = start(Kind::Berth).await?;
    let secret = s.robot.as_deref().context("berth without a robot token")?;
    let run = async {
        eprintln!("  pushing {LATENCY_REQUESTS} manifests");
        let (_, manifests) = workloads::push_manifests(&s.target, LATENCY_REQUESTS).await?;
        auth::section(&s.server, secret, Arc::new(manifests)).await
    };
    run.await.map_err(|e| with_log(e, &s.server))
}

async fn workloads(
    t: &Arc<Target>,
    kind: Kind,
    settings: &Settings,
    blob: &BigBlob,
    lines: &mut Lines,
) -> Result<Arc<Manifests>> {
    let size = settings.size_label();
    // Three repositories, one blob: each push still uploads, hashes and stores every byte.
    let v = workloads::push_monolithic(t, "bench/monolithic", blob).await?;
    record(lines, kind, format!("monolithic push {size} (MiB/s)"), v);
    let v = workloads::push_chunked(t, "bench/chunked", blob, CHUNK_MIB * MIB).await?;
    record(lines, kind, format!("chunked push {size} (MiB/s)"), v);
    let v = workloads::push_streamed(t, "bench/streamed", blob).await?;
    record(lines, kind, format!("streamed push {size} (MiB/s)"), v);
    let v = workloads::pull(t, "bench/monolithic", blob).await?;
    record(lines, kind, format!("blob pull {size} (MiB/s)"), v);
    let v = workloads::pull_curl(t, "bench/monolithic", blob).await?;
    record(
        lines,
        kind,
        format!("blob pull {size}, curl client (MiB/s)"),
        v,
    );

    let (put, manifests) = workloads::push_manifests(t, LATENCY_REQUESTS).await?;
    let get = workloads::manifest_get_latency(t, &manifests).await?;
    record(lines, kind, "manifest PUT median (ms)".into(), put.median);
    record(lines, kind, "manifest PUT p99 (ms)".into(), put.p99);
    record(lines, kind, "manifest GET median (ms)".into(), get.median);
    record(lines, kind, "manifest GET p99 (ms)".into(), get.p99);
    let manifests = Arc::new(manifests);
    let rps = workloads::manifest_get_rps(t, manifests.clone(), CONNECTIONS, RPS_SECS).await?;
    let label = format!("manifest GET, {CONNECTIONS} conns (req/s)");
    record(lines, kind, label, rps);

    let secs = workloads::layered_image(t, LAYERS, LAYER_BYTES).await?;
    let label = format!("push {LAYERS} x {} KiB layers (s)", LAYER_BYTES / 1024);
    record(lines, kind, label, secs);
    Ok(manifests)
}

fn number(v: f64) -> String {
    match v.abs() {
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

fn print_table(results: &[(Kind, Lines)]) {
    let Some((_, first)) = results.first() else {
        return;
    };
    let width = first.iter().map(|(l, _)| l.len()).max().unwrap_or(0) + 2;
    let mut head = format!("{:<width$}", "workload");
    for (kind, _) in results {
        head += &format!("{:>12}", kind.label());
    }
    if results.len() == 2 {
        head += &format!("{:>9}", "ratio");
    }
    println!("\n{head}");
    for (i, (label, _)) in first.iter().enumerate() {
        let values: Vec<f64> = results.iter().map(|(_, lines)| lines[i].1).collect();
        let mut line = format!("{label:<width$}");
        for v in &values {
            line += &format!("{:>12}", number(*v));
        }
        if let [berth, other] = values[..] {
            line += &format!("{:>9.2}", berth / other);
        }
        println!("{line}");
    }
    if results.len() == 2 {
        println!("(ratio = berth / registry:2; for ms, s and MiB of RSS, lower is better)");
    }
}

fn main() -> Result<()> {
    let settings = Settings::from_env()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if settings.only == Only::Auth {
        println!("BENCH_ONLY=auth: only berth's authentication section");
        eprintln!("benchmarking berth's authentication");
        auth::print(&rt.block_on(auth_only())?);
        return Ok(());
    }
    let mut kinds = vec![Kind::Berth];
    if settings.only == Only::Berth {
        println!("BENCH_ONLY=berth: registry:2 skipped");
    } else if server::registry2_installed() {
        kinds.push(Kind::Registry2);
    } else {
        println!(
            "registry:2 is not installed ({} missing): measuring berth only",
            server::REGISTRY2_BIN
        );
    }

    let dir = tempfile::Builder::new().prefix("bench-client-").tempdir()?;
    eprintln!("generating a {} random blob", settings.size_label());
    let blob = BigBlob::generate(dir.path().join("blob"), settings.size_mib * MIB)?;
    eprintln!("  {}", blob.digest);

    let (mut results, mut auth_rows) = (Vec::new(), None);
    for kind in kinds {
        eprintln!("benchmarking {}", kind.label());
        let (lines, auth) = rt.block_on(bench(kind, &settings, &blob))?;
        results.push((kind, lines));
        auth_rows = auth_rows.or(auth);
    }
    print_table(&results);
    if let Some(rows) = auth_rows {
        auth::print(&rows);
    }
    Ok(())
}
