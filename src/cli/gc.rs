//! `berth gc`: collect garbage now. With a server running on the data directory, the server
//! does it (through its control socket, under the locks its uploads take); without one, this
//! process does, holding the data directory as a server would.

use std::sync::Arc;

use anyhow::{anyhow, bail};
use clap::Args;

use crate::clock::SystemClock;
use crate::config::Config;
use crate::control::{self, Answer, Request};
use crate::core::gc::{Report, Trigger};
use crate::state::AppState;

#[derive(Args, Debug)]
pub struct GcArgs {
    /// Remove nothing: list exactly what a run now would remove.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the whole report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn gc(config: Config, args: GcArgs) -> anyhow::Result<()> {
    let data = config.data();
    if !data.database().exists() {
        bail!(
            "no berth database at {} (is --data-dir right?)",
            data.database().display()
        );
    }
    let request = Request::Gc {
        dry_run: args.dry_run,
    };
    let report = match control::request(&data, &request)? {
        Some(Answer::Report(r)) => *r,
        Some(Answer::Error(e)) => bail!("{e}"),
        Some(Answer::Retention(_)) => bail!("the server answered with a retention report"),
        None => {
            let _lock = crate::storage::secure::lock_data_dir(&data).map_err(|e| anyhow!(e))?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let state = AppState::open(config, Arc::new(SystemClock))?;
            rt.block_on(state.registry.collect_garbage(Trigger::Cli, args.dry_run))?
        }
    };
    print(&report, args.json)?;
    if let Some(first) = report.errors.first() {
        bail!(
            "{} errors during garbage collection; the first: {first}",
            report.errors.len()
        );
    }
    Ok(())
}

fn print(r: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    if r.dry_run {
        for m in &r.manifests {
            println!("manifest  {}@{}", m.repo, m.digest);
        }
        for l in &r.links {
            println!("link      {} -> {}", l.repo, l.digest);
        }
        for b in &r.blobs {
            println!("blob      {} ({} bytes)", b.digest, b.size);
        }
        for u in &r.uploads {
            println!("upload    {} {} ({} bytes)", u.repo, u.id, u.size);
        }
        for f in &r.orphan_files {
            println!("file      {} {} ({} bytes)", f.kind, f.name, f.size);
        }
    }
    println!("{}", r.summary());
    Ok(())
}
