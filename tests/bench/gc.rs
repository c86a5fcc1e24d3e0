//! Garbage collection at scale: `cargo bench --bench gc`.
//!
//! Builds a registry of 200 repositories, 10,000 image manifests (50 per repository), 20,000
//! tags (two per manifest) and 100,000 blobs (ten per manifest) through berth's own API, in
//! process, on a real data directory; untags half the images and lets the graces pass (the
//! clock is the test's); then measures:
//!
//! - a retention preview of its 20,000 tags;
//! - a dry run and a full collection of that registry (5,000 manifests and 50,000 blobs go);
//! - the latency of manifest pushes (8 clients, 400 a second) alone, and while a collection of
//!   the same size runs, as p50/p99 and their ratio.
//!
//! `BENCH_GC_SCALE=0.1` builds a tenth of it (for a quick look). Targets on a 2-core machine:
//! a retention preview under 2 s; a full collection under 60 s; p99 of manifest pushes at most
//! 2x while it runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use berth::clock::ManualClock;
use berth::config::{Config, Durability, Span};
use berth::core::gc::Trigger;
use berth::core::retention::{PolicySpec, Which};
use berth::core::{Registry, Uploader};
use berth::oci::{Digest, Reference, RepoName, Tag};
use bytes::Bytes;

#[path = "setup.rs"]
mod setup;
use setup::push_blob;

const REPOS: usize = 200;
const MANIFESTS_PER_REPO: usize = 50;
const BLOBS_PER_MANIFEST: usize = 10;
const PACE: Duration = Duration::from_millis(20);
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn manifest(blobs: &[(Digest, usize)]) -> Bytes {
    let (config, layers) = blobs.split_first().expect("a config");
    let layers: Vec<_> = layers
        .iter()
        .map(|(d, n)| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n}))
        .collect();
    Bytes::from(
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0, "size": config.1},
            "layers": layers}))
        .expect("json"),
    )
}

/// Push one image of ten fresh blobs under two tags; returns its tags.
async fn push_image(reg: &Registry, repo: &RepoName, who: &Uploader, n: usize) -> Result<[Tag; 2]> {
    let mut blobs = Vec::with_capacity(BLOBS_PER_MANIFEST);
    for b in 0..BLOBS_PER_MANIFEST {
        let bytes = format!("{repo} image {n} blob {b}").into_bytes();
        blobs.push(push_blob(reg, repo, who, bytes).await?);
    }
    let body = manifest(&blobs);
    let tags = [
        Tag::parse(&format!("v{n}"))?,
        Tag::parse(&format!("build-{n}"))?,
    ];
    for t in &tags {
        reg.put_manifest(
            repo,
            &Reference::Tag(t.clone()),
            Some(OCI_MANIFEST),
            body.clone(),
            Some("bench"),
        )
        .await?;
    }
    Ok(tags)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Manifest pushes from 8 tasks, each of an image whose blobs exist, each task one every
/// `PACE` (400 a second in all: a busy CI fleet, not a saturated writer), `count` in all or
/// until `stop`; returns the latencies.
async fn manifest_pushes(
    reg: &Registry,
    count: usize,
    round: usize,
    stop: Arc<AtomicBool>,
) -> Result<Vec<Duration>> {
    let repo = RepoName::parse("bench/latency")?;
    let who = Uploader {
        key: "bench".into(),
        name: "bench".into(),
    };
    let (config, _) = push_blob(
        reg,
        &repo,
        &who,
        format!("{{\"round\":{round}}}").into_bytes(),
    )
    .await?;
    let (layer, _) = push_blob(
        reg,
        &repo,
        &who,
        format!("latency layer {round}").into_bytes(),
    )
    .await?;
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (reg, repo, config, layer) = (reg.clone(), repo.clone(), config.clone(), layer.clone());
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut next = tokio::time::Instant::now();
            for i in 0..count / 8 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                next += PACE;
                tokio::time::sleep_until(next).await;
                // A distinct manifest each time: annotations make the digest differ.
                let body = serde_json::to_vec(&serde_json::json!({
                    "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 12},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": 16}],
                    "annotations": {"n": format!("{round}-{t}-{i}")}}))
                .expect("json");
                let tag = Tag::parse(&format!("r{round}-t{t}-{i}")).expect("tag");
                let started = Instant::now();
                reg.put_manifest(&repo, &Reference::Tag(tag), Some(OCI_MANIFEST), Bytes::from(body), Some("bench"))
                    .await
                    .expect("manifest push");
                lat.push(started.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    all.sort();
    Ok(all)
}

/// Untag half the images of every repository (the odd ones).
async fn untag_half(reg: &Registry, images: &[(RepoName, [Tag; 2])]) -> Result<()> {
    for (i, (repo, tags)) in images.iter().enumerate() {
        if i % 2 == 1 {
            for t in tags {
                reg.delete_manifest(repo, &Reference::Tag(t.clone()))
                    .await?;
            }
        }
    }
    Ok(())
}

async fn build(
    reg: &Registry,
    repos: usize,
    per_repo: usize,
    from: usize,
) -> Result<Vec<(RepoName, [Tag; 2])>> {
    let who = Uploader {
        key: "seed".into(),
        name: "seed".into(),
    };
    let mut images = Vec::new();
    let mut tasks = Vec::new();
    for r in 0..repos {
        let reg = reg.clone();
        let who = who.clone();
        tasks.push(tokio::spawn(async move {
            let repo = RepoName::parse(&format!("team{}/app{r}", r % 10)).expect("name");
            let mut out = Vec::new();
            for n in from..from + per_repo {
                let tags = push_image(&reg, &repo, &who, n).await.expect("push");
                out.push((repo.clone(), tags));
            }
            out
        }));
        if tasks.len() == 8 {
            for t in tasks.drain(..) {
                images.extend(t.await?);
            }
        }
    }
    for t in tasks {
        images.extend(t.await?);
    }
    Ok(images)
}

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run())
}

async fn run() -> Result<()> {
    let s = setup::scale("BENCH_GC_SCALE");
    let repos = ((REPOS as f64 * s).ceil() as usize).max(1);
    let tmp = tempfile::tempdir()?;
    let clock = ManualClock::at(1_700_000_000);
    let mut config = Config {
        data_dir: tmp.path().join("data"),
        durability: Durability::ProcessCrash,
        ..Config::default()
    };
    config.limits.min_free_space = berth::config::Size::Bytes(0);
    config.gc.grace = Span::Secs(3600);
    config.gc.untagged_grace = Span::Secs(3600);
    let state = berth::AppState::open(config, Arc::new(clock.clone()))?;
    let reg = state.registry.clone();

    let started = Instant::now();
    let images = build(&reg, repos, MANIFESTS_PER_REPO, 0).await?;
    println!(
        "built {} repositories, {} manifests, {} tags, {} blobs in {:.1} s",
        repos,
        images.len(),
        images.len() * 2,
        images.len() * BLOBS_PER_MANIFEST,
        started.elapsed().as_secs_f64()
    );
    // A retention preview of every tag: the newest 30 of each repository's 100 tags.
    let draft = PolicySpec::from_toml(
        "name = \"bench\"\nrepositories = [\"**\"]\n[keep]\nnewest = 30\nby = \"push\"",
    )
    .map_err(anyhow::Error::msg)?;
    let t = Instant::now();
    let preview = reg
        .apply_retention(Which::Draft(Box::new(draft)), Trigger::Cli, true, true)
        .await?;
    println!(
        "retention preview: {:.2} s for {} tags ({} to delete) — target under 2 s",
        t.elapsed().as_secs_f64(),
        preview.decisions.len(),
        preview.deleted
    );
    untag_half(&reg, &images).await?;
    clock.advance(2 * 3600);

    let t = Instant::now();
    let dry = reg.collect_garbage(Trigger::Cli, true).await?;
    println!(
        "dry run: {:.2} s ({} manifests, {} blobs would go)",
        t.elapsed().as_secs_f64(),
        dry.manifests.len(),
        dry.blobs.len()
    );
    let t = Instant::now();
    let real = reg.collect_garbage(Trigger::Cli, false).await?;
    let full = t.elapsed();
    println!(
        "full collection: {:.2} s ({} manifests, {} links, {} blobs removed, {} errors) — target under 60 s",
        full.as_secs_f64(),
        real.manifests.len(),
        real.links.len(),
        real.blobs.len(),
        real.errors.len()
    );
    anyhow::ensure!(
        real.blobs.len() == dry.blobs.len(),
        "dry run and run differ"
    );

    // Manifest pushes alone, then while a collection of the same size runs.
    let pushes = 2000;
    let alone = manifest_pushes(&reg, pushes, 0, Arc::default()).await?;
    let more = build(&reg, repos, MANIFESTS_PER_REPO, MANIFESTS_PER_REPO).await?;
    untag_half(&reg, &more).await?;
    clock.advance(2 * 3600);
    let done = Arc::new(AtomicBool::new(false));
    let collector = {
        let (reg, done) = (reg.clone(), done.clone());
        tokio::spawn(async move {
            let r = reg.collect_garbage(Trigger::Cli, false).await;
            done.store(true, Ordering::Relaxed);
            r
        })
    };
    // Pushes for as long as the collection runs.
    let during = manifest_pushes(&reg, usize::MAX, 1, done).await?;
    let report = collector.await??;
    let (a50, a99) = (percentile(&alone, 0.5), percentile(&alone, 0.99));
    let (d50, d99) = (percentile(&during, 0.5), percentile(&during, 0.99));
    println!(
        "manifest pushes, 8 clients at 400/s: {} alone, p50 {:.2} ms p99 {:.2} ms; {} during a collection ({} blobs, {:.1} s), p50 {:.2} ms p99 {:.2} ms; p99 ratio {:.2} — target at most 2",
        alone.len(),
        a50.as_secs_f64() * 1e3,
        a99.as_secs_f64() * 1e3,
        during.len(),
        report.blobs.len(),
        report.duration_ms as f64 / 1e3,
        d50.as_secs_f64() * 1e3,
        d99.as_secs_f64() * 1e3,
        d99.as_secs_f64() / a99.as_secs_f64()
    );
    Ok(())
}
