//! Throughput, latency and memory of berth against other registries, on loopback, in one run.
//!
//! `cargo bench --bench registry`. Knobs: `BENCH_SIZE_MIB` (size of the big blob, default
//! 1024), `BENCH_ONLY=berth` (skip the other registries), `BENCH_ONLY=auth` (only the
//! authentication section), `BENCH_ONLY=cache` (only the pull-through cache section,
//! cache.rs), and where to find the optional peers (peers.rs):
//!
//! - registry:2 is Debian's `docker-registry` package (/usr/bin/docker-registry);
//! - NORA (`cargo install nora-registry`): `BENCH_NORA=/path/to/nora`, or `nora` on the PATH;
//! - Trow (built from its source with `SQLX_OFFLINE=true cargo build --release`):
//!   `BENCH_TROW=/path/to/trow`, or `trow` on the PATH;
//! - nginx (Debian's, /usr/sbin/nginx), not a peer: it sends each server's blob file with
//!   sendfile(2), the warm pull's ceiling (pulls.rs).
//!
//! A peer that is not found is skipped, with a line saying so; an empty `BENCH_NORA` or
//! `BENCH_TROW` skips that one. Each line of the table gives every registry's figure, then
//! berth's ratio to each peer.
//!
//! Each server has a fresh temp data dir. All run from the start, but only one is ever
//! under load: the big pushes take turns, server after server, for ROUNDS rounds and each
//! line reports its median round, so that a slow moment of the shared machine (its disk, or
//! a VM's first touch of fresh memory) costs one round of each server rather than the whole
//! line of one. The other workloads then run on one server after the other.
//!
//! berth requires authentication: the table's workloads send the Basic credentials of a
//! robot token made with `berth token create` (a SHA-256 lookup, no argon2), as CI would;
//! the peers run without authentication. After the table, the authentication section
//! (auth.rs) compares berth's anonymous pulls with each kind of credentials.
//!
//! Client and server share the machine: the numbers compare registries under the same
//! client, they are not the registry's ceiling.

mod auth;
mod blob;
mod cache;
mod peers;
mod pulls;
mod server;
mod settings;
mod table;
mod workloads;

use anyhow::{Context, Result, ensure};
use sha2::{Digest as _, Sha256};
use std::sync::Arc;

use blob::{Blob, Source};
use peers::Registry;
use server::{Kind, ROBOT, Server};
use settings::{Only, Settings};
use table::Column;
use workloads::{Manifests, Target};

const MIB: u64 = 1024 * 1024;
/// Chunk size of the chunked push.
const CHUNK_MIB: u64 = 64;
/// Sequential requests for the manifest latency lines.
pub const LATENCY_REQUESTS: usize = 500;
/// Concurrency and duration of the manifest GET throughput line.
pub const CONNECTIONS: usize = 32;
pub const RPS_SECS: f64 = 5.0;
/// Rounds of the big pushes and pulls, and of the authentication section; lines report the
/// median round.
pub const ROUNDS: usize = 3;
/// The many-layer image, with docker's 5 uploads in flight (and 3 downloads, docker's
/// default, when pulled).
const LAYERS: usize = 200;
const LAYER_BYTES: usize = 16 * 1024;
const PULLS_IN_FLIGHT: usize = 3;
/// The many-clients memory line: clients at once, each pushing and pulling ROUNDS blobs.
const MANY_CLIENTS: usize = 200;
const MANY_BLOB_KIB: usize = 1024;

/// xorshift64: fast, and incompressible enough that nothing on the path can shrink it.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn fill(&mut self, buf: &mut [u8]) {
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

/// The middle value (the upper one of an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
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
async fn start(reg: &Registry) -> Result<Started> {
    let kind = reg.kind;
    let mut server = Server::start(reg)?;
    let idle_mib = server.wait_ready().await?;
    let robot = match kind {
        Kind::Berth => Some(server.create_robot()?),
        Kind::Registry2 | Kind::Nora | Kind::Trow => None,
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

/// The big pushes, in the order of each round.
const PUSHES: [&str; 3] = ["monolithic", "chunked", "streamed"];

/// One server's big pushes, a value per round: rate (MiB/s) and the server's CPU time per
/// GiB pushed (s). Also its last monolithic blob, pulled afterwards.
#[derive(Default)]
struct Pushes {
    rates: [Vec<f64>; 3],
    cpu: [Vec<f64>; 3],
    pulled: Option<Blob>,
}

/// Repository of the monolithic pushes, where the pulls read from.
const MONOLITHIC_REPO: &str = "bench/monolithic";

/// One round of the big pushes, each a new blob (numbered from `next`).
async fn push_round(
    s: &Started,
    source: &Source,
    next: &mut u64,
    round: usize,
    p: &mut Pushes,
) -> Result<()> {
    let t = &s.target;
    for (i, what) in PUSHES.iter().enumerate() {
        *next += 1;
        let blob = source.blob(*next);
        let cpu_before = s.server.cpu_secs()?;
        let rate = match i {
            0 => workloads::push_monolithic(t, MONOLITHIC_REPO, &blob).await?,
            1 => workloads::push_chunked(t, "bench/chunked", &blob, CHUNK_MIB * MIB).await?,
            _ => workloads::push_streamed(t, "bench/streamed", &blob).await?,
        };
        let gib = blob.size as f64 / (1024 * MIB) as f64;
        let cpu = (s.server.cpu_secs()? - cpu_before) / gib;
        eprintln!(
            "  {:<12} round {round}/{ROUNDS}  {what:<10} push {rate:>6.0} MiB/s, server CPU {cpu:.2} s/GiB",
            s.server.kind.label()
        );
        p.rates[i].push(rate);
        p.cpu[i].push(cpu);
        if i == 0 {
            p.pulled = Some(blob);
        }
    }
    Ok(())
}

/// Start every server, run the big pushes in turns, then every other workload on one
/// server after the other (and, for berth, the authentication section). Servers stop when
/// dropped.
async fn bench(
    registries: &[Registry],
    settings: &Settings,
    source: &Source,
) -> Result<(Vec<Column>, Option<Vec<auth::Row>>)> {
    let mut started = Vec::with_capacity(registries.len());
    for reg in registries {
        started.push(start(reg).await?);
    }
    let mut pushes: Vec<Pushes> = registries.iter().map(|_| Pushes::default()).collect();
    let mut next = 0;
    for round in 1..=ROUNDS {
        for (s, p) in started.iter().zip(&mut pushes) {
            push_round(s, source, &mut next, round, p)
                .await
                .map_err(|e| with_log(e, &s.server))?;
        }
    }

    let (mut results, mut auth_rows) = (Vec::new(), None);
    for (s, p) in started.iter().zip(pushes) {
        let kind = s.server.kind;
        eprintln!("benchmarking {}", kind.label());
        let size = settings.size_label();
        let mut col = Column::new(kind);
        for (i, what) in PUSHES.iter().enumerate() {
            col.record(format!("{what} push {size} (MiB/s)"), median(&p.rates[i]));
        }
        for (i, what) in PUSHES.iter().enumerate() {
            col.record(
                format!("server CPU, {what} push (s/GiB)"),
                median(&p.cpu[i]),
            );
        }
        let blob = p.pulled.as_ref().context("no blob was pushed")?;
        let manifests = workloads_after_pushes(&s.target, &s.server, settings, blob, &mut col)
            .await
            .map_err(|e| with_log(e, &s.server))?;
        col.record("idle RSS (MiB)".into(), s.idle_mib);
        col.record("peak RSS (MiB)".into(), s.server.memory_mib("VmHWM")?);
        if let Some(secret) = &s.robot {
            let rows = auth::section(&s.server, secret, manifests)
                .await
                .map_err(|e| with_log(e, &s.server))?;
            auth_rows = Some(rows);
        }
        results.push(col);
    }
    Ok((results, auth_rows))
}

/// BENCH_ONLY=auth: berth with the table's manifests pushed (untimed), then the section.
async fn auth_only() -> Result<Vec<auth::Row>> {
    let s = start(&Registry::berth()).await?;
    let secret = s.robot.as_deref().context("berth without a robot token")?;
    let run = async {
        eprintln!("  pushing {LATENCY_REQUESTS} manifests");
        let (_, manifests) = workloads::push_manifests(&s.target, LATENCY_REQUESTS).await?;
        auth::section(&s.server, secret, Arc::new(manifests)).await
    };
    run.await.map_err(|e| with_log(e, &s.server))
}

/// The cold pull as a share of the disk's cold read, and the warm pull as a share of nginx's,
/// each taken in its round and then the median.
const RATIO_LINES: [&str; 2] = [
    "cold pull / disk read, per round",
    "warm pull / nginx sendfile, per round",
];

/// Every workload but the big pushes, on one server.
async fn workloads_after_pushes(
    t: &Arc<Target>,
    server: &Server,
    settings: &Settings,
    blob: &Blob,
    col: &mut Column,
) -> Result<Arc<Manifests>> {
    let size = settings.size_label();
    let label = server.kind.label();
    let (mut rust, mut curl, mut cold_warm) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let v = workloads::pull(t, MONOLITHIC_REPO, blob).await?;
        let c = workloads::pull_curl(t, MONOLITHIC_REPO, blob).await?;
        let cw = pulls::cold_and_warm(t, server, MONOLITHIC_REPO, blob).await?;
        let cw_text = match &cw {
            Some(cw) => format!(
                "disk {:>5.0}, cold {:>5.0} ({:.2} s/GiB CPU), warm {:>5.0}, nginx sendfile {} MiB/s",
                cw.raw,
                cw.cold,
                cw.cold_cpu,
                cw.warm,
                cw.sendfile.map_or("-".into(), |v| format!("{v:.0}"))
            ),
            None => "no blob file found for the cold pull".into(),
        };
        eprintln!(
            "  {label:<12} round {round}/{ROUNDS}  pull {v:>6.0} MiB/s, curl {c:>6.0} MiB/s; {cw_text}"
        );
        rust.push(v);
        curl.push(c);
        cold_warm.extend(cw);
    }
    col.record(format!("blob pull {size} (MiB/s)"), median(&rust));
    col.record(
        format!("blob pull {size}, curl client (MiB/s)"),
        median(&curl),
    );
    let cold_warm_lines = [
        "disk: cold read of its file (MiB/s)".to_string(),
        format!("blob pull {size} cold, curl (MiB/s)"),
        "server CPU, cold pull (s/GiB)".into(),
        format!("blob pull {size} warm, curl (MiB/s)"),
        "ceiling: its file sent warm by nginx (sendfile), curl (MiB/s)".into(),
    ];
    if cold_warm.len() == ROUNDS {
        let figures: [fn(&pulls::ColdWarm) -> Option<f64>; 5] = [
            |c| Some(c.raw),
            |c| Some(c.cold),
            |c| Some(c.cold_cpu),
            |c| Some(c.warm),
            |c| c.sendfile,
        ];
        for (line, figure) in cold_warm_lines.into_iter().zip(figures) {
            match cold_warm.iter().map(figure).collect::<Option<Vec<f64>>>() {
                Some(values) => col.record(line, median(&values)),
                None => col.skip(line),
            }
        }
        // Each round's pair, so that a slow moment of the machine moves both sides.
        let ratios = |f: fn(&pulls::ColdWarm) -> Option<f64>| -> Option<Vec<f64>> {
            cold_warm.iter().map(f).collect()
        };
        let pairs: [fn(&pulls::ColdWarm) -> Option<f64>; 2] =
            [|c| Some(c.cold / c.raw), |c| c.sendfile.map(|s| c.warm / s)];
        for (line, pair) in RATIO_LINES.into_iter().zip(pairs) {
            match ratios(pair) {
                Some(r) => col.record(line.into(), median(&r)),
                None => col.skip(line.into()),
            }
        }
    } else {
        let path = peers::blob_file(server.kind, server.data(), MONOLITHIC_REPO, &blob.digest);
        col.note(format!(
            "cold and warm pulls skipped: the blob's file is not at {} (another version?)",
            path.display()
        ));
        for line in cold_warm_lines {
            col.skip(line);
        }
        for line in RATIO_LINES {
            col.skip(line.into());
        }
    }

    let (put, manifests) = workloads::push_manifests(t, LATENCY_REQUESTS).await?;
    let get = workloads::manifest_get_latency(t, &manifests).await?;
    col.record("manifest PUT median (ms)".into(), put.median);
    col.record("manifest PUT p99 (ms)".into(), put.p99);
    col.record("manifest GET median (ms)".into(), get.median);
    col.record("manifest GET p99 (ms)".into(), get.p99);
    let manifests = Arc::new(manifests);
    let (mut rps, mut layered, mut layered_pulls) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let r = workloads::manifest_get_rps(t, manifests.clone(), CONNECTIONS, RPS_SECS).await?;
        let (s, repo, layers) = workloads::layered_image(t, LAYERS, LAYER_BYTES, round).await?;
        let p = pulls::layered_pull(t, &repo, &layers, PULLS_IN_FLIGHT).await?;
        eprintln!(
            "  {label:<12} round {round}/{ROUNDS}  manifest GET {r:>6.0} req/s, {LAYERS} layers pushed in {s:.2} s, pulled in {p:.2} s"
        );
        rps.push(r);
        layered.push(s);
        layered_pulls.push(p);
    }
    col.record(
        format!("manifest GET, {CONNECTIONS} conns (req/s)"),
        median(&rps),
    );
    let kib = LAYER_BYTES / 1024;
    col.record(
        format!("push {LAYERS} x {kib} KiB layers (s)"),
        median(&layered),
    );
    col.record(
        format!("pull {LAYERS} x {kib} KiB layers (s)"),
        median(&layered_pulls),
    );
    let (peak, after) = pulls::many_clients(
        server,
        t.authorization(),
        MANY_CLIENTS,
        ROUNDS,
        MANY_BLOB_KIB,
    )
    .await?;
    eprintln!(
        "  {label:<12} {MANY_CLIENTS} clients: anonymous memory peak {peak:.0} MiB, after {after:.0} MiB"
    );
    col.record(
        format!("anon memory, {MANY_CLIENTS} clients: peak (MiB)"),
        peak,
    );
    col.record(
        format!("anon memory, {MANY_CLIENTS} clients: after (MiB)"),
        after,
    );
    Ok(manifests)
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
    if settings.only == Only::Cache {
        println!("BENCH_ONLY=cache: only the pull-through cache section");
        let source = Source::generate(settings.size_mib * MIB);
        eprintln!("benchmarking the pull-through cache");
        let rates = rt.block_on(cache::section(&source, &settings.size_label()))?;
        cache::print(&rates, &settings.size_label());
        return Ok(());
    }
    let mut registries = vec![Registry::berth()];
    if settings.only == Only::Berth {
        println!("BENCH_ONLY=berth: registry:2, NORA and Trow skipped");
    } else {
        registries.extend(peers::find()?);
    }

    eprintln!("generating a {} random blob", settings.size_label());
    let source = Source::generate(settings.size_mib * MIB);
    eprintln!("big pushes, {ROUNDS} rounds, the servers taking turns");
    let (results, auth_rows) = rt.block_on(bench(&registries, &settings, &source))?;
    table::print(&results);
    if let Some(rows) = auth_rows {
        auth::print(&rows);
    }
    eprintln!("benchmarking the pull-through cache");
    let rates = rt.block_on(cache::section(&source, &settings.size_label()))?;
    cache::print(&rates, &settings.size_label());
    Ok(())
}
