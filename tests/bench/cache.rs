//! The pull-through cache: berth in front of another berth (with authentication, as Docker
//! Hub has), reached through a link of `LINK_MIB_S` (a throttling proxy in this process: an
//! upstream is a network away, not on loopback). Each round pushes a new big blob to the
//! upstream, then pulls it with curl, warm (the upstream's file in its page cache, so the
//! link is the limit):
//!
//! - from the upstream directly over the link: the rate the cache can at best get;
//! - through the cache the first time (a miss: streamed from the upstream while it is
//!   written and hashed): target 90% of the direct rate;
//! - through the cache again (a hit, from berth's own disk, its file evicted from the page
//!   cache first, and then warm): target at least the direct rate.
//!
//! A last line pulls a miss without the link, on loopback, beside the upstream's own warm
//! rate there: what the cache's write, hash and disk cost when the upstream is faster than
//! the disk.

use anyhow::{Context, Result};

use crate::auth::basic;
use crate::blob::Source;
use crate::peers::Registry;
use crate::pulls;
use crate::server::{ROBOT, Server};
use crate::workloads::{self, Target};
use crate::{CONNECTIONS, ROUNDS, median};

/// The link between the cache and its upstream, MiB/s.
const LINK_MIB_S: u64 = 100;

pub struct Rates {
    pub direct: f64,
    pub miss: f64,
    pub hit: f64,
    pub hit_warm: f64,
    pub loopback: f64,
    pub loopback_miss: f64,
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
    let upstream_addr = upstream
        .base
        .socket_addrs(|| None)?
        .first()
        .copied()
        .context("the upstream's address")?;
    let link_addr = link(upstream_addr, LINK_MIB_S << 20).await?;
    let link_base = reqwest::Url::parse(&format!("http://{link_addr}/"))?;
    let up_link = Target::new(link_base.clone(), Some(&basic(ROBOT, &secret)), CONNECTIONS)?;
    let dir = tempfile::tempdir()?;
    let password = dir.path().join("upstream-secret");
    std::fs::write(&password, &secret)?;
    let config = dir.path().join("berth.toml");
    std::fs::write(
        &config,
        format!(
            "[[upstreams]]\nname = \"up\"\nurl = \"{}\"\nusername = \"{ROBOT}\"\npassword_file = \"{}\"\n\n\
             [[upstreams]]\nname = \"fast\"\nurl = \"{}\"\nusername = \"{ROBOT}\"\npassword_file = \"{}\"\n",
            link_base.as_str().trim_end_matches('/'),
            password.display(),
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
    let mut rows: [Vec<f64>; 6] = Default::default();
    for round in 1..=ROUNDS {
        let blob = source.blob(1000 + round as u64);
        let repo = format!("lib/cached{round}");
        workloads::push_monolithic(&up, &repo, &blob)
            .await
            .context("push to the upstream")?;
        let direct = workloads::pull_curl(&up_link, &repo, &blob).await?;
        let cached = format!("up/{repo}");
        let miss = workloads::pull_curl(&through, &cached, &blob)
            .await
            .map_err(|e| e.context(cache.log()))?;
        // The commit (an fsync) may still be running when the client has its last byte.
        let cache_file = wait_for_file(&cache, &cached, &blob.digest).await?;
        pulls::evict(&cache_file)?;
        let hit = workloads::pull_curl(&through, &cached, &blob).await?;
        let hit_warm = workloads::pull_curl(&through, &cached, &blob).await?;
        // Without the link: the upstream on loopback, warm, and a miss through a second
        // cache repository of the loopback upstream.
        let loopback = workloads::pull_curl(&up, &repo, &blob).await?;
        let loopback_miss = workloads::pull_curl(&through, &format!("fast/{repo}"), &blob)
            .await
            .map_err(|e| e.context(cache.log()))?;
        eprintln!(
            "  cache round {round}/{ROUNDS}  {size_label}: over the link direct {direct:>4.0}, first pull through berth {miss:>4.0} ({:.2}), cached {hit:>5.0} cold, {hit_warm:>5.0} warm; loopback direct {loopback:>5.0}, first pull {loopback_miss:>5.0} MiB/s",
            miss / direct,
        );
        for (row, v) in rows
            .iter_mut()
            .zip([direct, miss, hit, hit_warm, loopback, loopback_miss])
        {
            row.push(v);
        }
    }
    let [direct, miss, hit, hit_warm, loopback, loopback_miss] = rows.map(|r| median(&r));
    Ok(Rates {
        direct,
        miss,
        hit,
        hit_warm,
        loopback,
        loopback_miss,
    })
}

/// A TCP proxy to `to` whose answers (upstream to client) flow at most `rate` bytes a
/// second per connection: a network link between the cache and its upstream.
async fn link(to: std::net::SocketAddr, rate: u64) -> Result<std::net::SocketAddr> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(to).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                    let _ = sw.shutdown().await;
                });
                // When the link is free again; idle time earns no credit.
                let mut free_at = tokio::time::Instant::now();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    let took = std::time::Duration::from_secs_f64(n as f64 / rate as f64);
                    let now = tokio::time::Instant::now();
                    free_at = free_at.max(now) + took;
                    // Sleeps in steps the timer can keep (it ticks in milliseconds).
                    if free_at > now + std::time::Duration::from_millis(5) {
                        tokio::time::sleep_until(free_at).await;
                    }
                }
                let _ = cw.shutdown().await;
            });
        }
    });
    Ok(addr)
}

/// The cache's file of a blob, once it is there.
async fn wait_for_file(cache: &Server, repo: &str, digest: &str) -> Result<std::path::PathBuf> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Ok(Some(p)) = pulls::blob_file(cache, repo, digest) {
            return Ok(p);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the cache did not store the blob within 60 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

pub fn print(r: &Rates, size_label: &str) {
    println!();
    println!(
        "Pull-through cache (berth in front of an upstream berth over a {LINK_MIB_S} MiB/s link), {size_label}, curl, median of {ROUNDS} rounds:"
    );
    println!();
    println!("| pull | MiB/s | ratio to the upstream directly | target |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| upstream directly, over the link | {:.0} | 1.00 | |",
        r.direct
    );
    println!(
        "| first pull through the cache (miss) | {:.0} | {:.2} | 0.90 |",
        r.miss,
        r.miss / r.direct
    );
    println!(
        "| cached pull (hit), cold | {:.0} | {:.2} | 1.00 |",
        r.hit,
        r.hit / r.direct
    );
    println!(
        "| cached pull (hit), warm | {:.0} | {:.2} | 1.00 |",
        r.hit_warm,
        r.hit_warm / r.direct
    );
    println!(
        "| without the link: upstream directly, warm / first pull through the cache | {:.0} / {:.0} | {:.2} | (disk-bound) |",
        r.loopback,
        r.loopback_miss,
        r.loopback_miss / r.loopback
    );
}
