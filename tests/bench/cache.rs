//! The pull-through cache: berth in front of another berth (with authentication, as Docker
//! Hub has). Each round pushes a new big blob to the upstream, then pulls it with curl:
//! from the upstream directly (the rate the cache can at best get), through the cache the
//! first time (a miss: streamed from the upstream while it is written and hashed), and
//! through the cache again (a hit, from berth's own disk). Targets: the miss at least 90% of
//! the upstream's direct rate, the hit at least as fast as the upstream.

use anyhow::{Context, Result};

use crate::auth::basic;
use crate::blob::Source;
use crate::peers::Registry;
use crate::server::{ROBOT, Server};
use crate::workloads::{self, Target};
use crate::{CONNECTIONS, ROUNDS, median};

pub struct Rates {
    pub direct: f64,
    pub miss: f64,
    pub hit: f64,
}

pub async fn section(source: &Source, size_label: &str) -> Result<Rates> {
    let mut upstream = Server::start(&Registry::berth())?;
    upstream.wait_ready().await?;
    let secret = upstream.create_robot()?;
    let up = Target::new(
        upstream.base.clone(),
        Some(&basic(ROBOT, &secret)),
        CONNECTIONS,
    )?;
    let dir = tempfile::tempdir()?;
    let password = dir.path().join("upstream-secret");
    std::fs::write(&password, &secret)?;
    let config = dir.path().join("berth.toml");
    std::fs::write(
        &config,
        format!(
            "[[upstreams]]\nname = \"up\"\nurl = \"{}\"\nusername = \"{ROBOT}\"\npassword_file = \"{}\"\n",
            upstream.base.as_str().trim_end_matches('/'),
            password.display()
        ),
    )?;
    let mut cache = Server::start_configured(&Registry::berth(), Some(&config))?;
    cache.wait_ready().await?;
    let cache_secret = cache.create_robot()?;
    let through = Target::new(
        cache.base.clone(),
        Some(&basic(ROBOT, &cache_secret)),
        CONNECTIONS,
    )?;
    let (mut direct, mut miss, mut hit) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let blob = source.blob(1000 + round as u64);
        let repo = format!("lib/cached{round}");
        workloads::push_monolithic(&up, &repo, &blob)
            .await
            .context("push to the upstream")?;
        let d = workloads::pull_curl(&up, &repo, &blob).await?;
        let m = workloads::pull_curl(&through, &format!("up/{repo}"), &blob)
            .await
            .map_err(|e| e.context(cache.log()))?;
        let h = workloads::pull_curl(&through, &format!("up/{repo}"), &blob).await?;
        eprintln!(
            "  cache round {round}/{ROUNDS}  {size_label}: upstream direct {d:>6.0}, first pull through berth {m:>6.0} ({:.2}), cached {h:>6.0} MiB/s ({:.2})",
            m / d,
            h / d
        );
        direct.push(d);
        miss.push(m);
        hit.push(h);
    }
    Ok(Rates {
        direct: median(&direct),
        miss: median(&miss),
        hit: median(&hit),
    })
}

pub fn print(r: &Rates, size_label: &str) {
    println!();
    println!(
        "Pull-through cache (berth in front of an upstream berth), {size_label}, curl, median of {ROUNDS} rounds:"
    );
    println!();
    println!("| pull | MiB/s | ratio to the upstream direct |");
    println!("| --- | --- | --- |");
    println!("| from the upstream directly | {:.0} | 1.00 |", r.direct);
    println!(
        "| first pull through the cache (miss) | {:.0} | {:.2} (target 0.90) |",
        r.miss,
        r.miss / r.direct
    );
    println!(
        "| cached pull (hit) | {:.0} | {:.2} (target 1.00) |",
        r.hit,
        r.hit / r.direct
    );
}
