//! Web UI page render time at scale: `cargo bench --bench ui`.
//!
//! Builds, in process on a real data directory, 2,000 repositories of one image each and one
//! repository with 10,000 tags (each on its own manifest), through berth's own API; signs in;
//! then times the pages through the real router (server time: routing, session check,
//! queries, rendering): the repository list (first page, by name; the last page; sorted by
//! size, which reads every repository's size), a filtered list, the tag list of the big
//! repository (first page, newest first; a late page, by name) and its manifest page.
//! Target on a 2-core machine: under 50 ms each. `BENCH_UI_SCALE=0.1` builds a tenth.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use axum::body::Body;
use axum::http::Request;
use berth::clock::ManualClock;
use berth::config::{Config, Durability};
use berth::core::{Registry, Uploader};
use berth::oci::{Digest, Reference, RepoName, Tag};
use bytes::Bytes;

#[path = "setup.rs"]
mod setup;
use http_body_util::BodyExt;
use setup::push_blob;
use tower::ServiceExt;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const ROUNDS: usize = 30;

fn manifest(config: &(Digest, usize), layer: &(Digest, usize), n: usize) -> Bytes {
    Bytes::from(
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0, "size": config.1},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.0, "size": layer.1}],
            "annotations": {"n": n.to_string()}}))
        .expect("json"),
    )
}

async fn image(
    reg: &Registry,
    repo: &RepoName,
    who: &Uploader,
    seed: usize,
) -> Result<((Digest, usize), (Digest, usize))> {
    let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":{seed}}}");
    let config = push_blob(reg, repo, who, config.into_bytes()).await?;
    let layer = push_blob(
        reg,
        repo,
        who,
        format!("layer {seed}").repeat(50).into_bytes(),
    )
    .await?;
    Ok((config, layer))
}

async fn time(
    router: &axum::Router,
    cookie: &str,
    path: &str,
) -> Result<(Duration, Duration, usize)> {
    let mut samples = Vec::with_capacity(ROUNDS);
    let mut size = 0;
    for _ in 0..ROUNDS {
        let req = Request::get(path)
            .header("cookie", cookie)
            .body(Body::empty())?;
        let start = Instant::now();
        let resp = router.clone().oneshot(req).await?;
        anyhow::ensure!(resp.status() == 200, "{path}: {}", resp.status());
        let body = resp.into_body().collect().await?.to_bytes();
        samples.push(start.elapsed());
        size = body.len();
    }
    samples.sort();
    Ok((samples[ROUNDS / 2], samples[ROUNDS * 95 / 100], size))
}

#[tokio::main]
async fn main() -> Result<()> {
    let repos = (2000.0 * setup::scale("BENCH_UI_SCALE")) as usize;
    let tags = (10_000.0 * setup::scale("BENCH_UI_SCALE")) as usize;
    let dir = tempfile::tempdir()?;
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        durability: Durability::ProcessCrash,
        ..Config::default()
    };
    let clock = ManualClock::at(1_700_000_000);
    let state = berth::AppState::open(config, Arc::new(clock.clone()))?;
    let db = state.auth.db().clone();
    berth::auth::accounts::add_user(
        &db,
        1_700_000_000,
        &berth::auth::accounts::CLI,
        "admin",
        "bench-admin-password",
        true,
    )?;
    let reg = state.registry.clone();
    let who = Uploader {
        key: "u:bench".into(),
        name: "bench".into(),
    };
    let started = Instant::now();
    for r in 0..repos {
        let repo = RepoName::parse(&format!("team-{:02}/app-{r:04}", r % 40))?;
        let (config, layer) = image(&reg, &repo, &who, r).await?;
        reg.put_manifest(
            &repo,
            &Reference::Tag(Tag::parse("latest")?),
            Some(OCI_MANIFEST),
            manifest(&config, &layer, r),
            Some("ci"),
        )
        .await?;
    }
    let big = RepoName::parse("big/app")?;
    let (config, layer) = image(&reg, &big, &who, 999_999).await?;
    for t in 0..tags {
        clock.advance(1);
        reg.put_manifest(
            &big,
            &Reference::Tag(Tag::parse(&format!("build-{t:05}"))?),
            Some(OCI_MANIFEST),
            manifest(&config, &layer, t),
            Some("ci"),
        )
        .await?;
    }
    println!(
        "built {repos} repositories and {tags} tags in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let router = berth::router(state.clone());
    let req = Request::post("/signin")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("name=admin&password=bench-admin-password"))?;
    let resp = router.clone().oneshot(req).await?;
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .ok_or_else(|| anyhow::anyhow!("no session cookie"))?
        .to_string();
    let last_page = repos.div_ceil(50);
    let (_, newest) = reg
        .browse_tags(&big, "", berth::db::browse::TagOrder::NewestFirst, 0, 1)
        .await?;
    let digest = newest[0].manifest.digest.clone();
    let pages = [
        ("repository list, first page", "/repositories".to_string()),
        (
            "repository list, last page",
            format!("/repositories?page={last_page}"),
        ),
        (
            "repository list, by size",
            "/repositories?sort=size&dir=desc".to_string(),
        ),
        (
            "repository list, filtered",
            "/repositories?q=team-07".to_string(),
        ),
        (
            "tag list (10,000), newest first",
            "/repositories/big/app".to_string(),
        ),
        (
            "tag list (10,000), page 150 by name",
            "/repositories/big/app?sort=name&page=150".to_string(),
        ),
        (
            "manifest page",
            format!("/repositories/big/app/-/manifests/{digest}"),
        ),
        ("dashboard", "/".to_string()),
    ];
    println!(
        "{:<40} {:>10} {:>10} {:>10}",
        "page", "p50 ms", "p95 ms", "bytes"
    );
    for (name, path) in pages {
        let (p50, p95, size) = time(&router, &cookie, &path).await?;
        println!(
            "{name:<40} {:>10.1} {:>10.1} {size:>10}",
            p50.as_secs_f64() * 1000.0,
            p95.as_secs_f64() * 1000.0
        );
    }
    Ok(())
}
