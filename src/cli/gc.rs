//! `berth gc`: collect garbage now. With a server running on the data directory, the server
//! does it (through its control socket, under the locks its uploads take); without one, this
//! process does, holding the data directory as a server would.

use std::sync::Arc;

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use futures_util::future::BoxFuture;

use crate::clock::SystemClock;
use crate::config::Config;
use crate::control::{self, Answer, Request};
use crate::core::gc::{Report, Trigger};
use crate::state::AppState;
use crate::storage::secure::LockError;

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
    let dry_run = args.dry_run;
    let report = through_server_or_here(
        config,
        &Request::Gc { dry_run },
        |answer| match answer {
            Answer::Report(r) => Ok(*r),
            Answer::Error(e) => bail!("{e}"),
            other => bail!("unexpected answer from the server: {other:?}"),
        },
        move |state| {
            Box::pin(async move {
                Ok(state
                    .registry
                    .collect_garbage(Trigger::Cli, dry_run)
                    .await?)
            })
        },
    )?;
    print(&report, args.json)?;
    if let Some(first) = report.errors.first() {
        bail!(
            "{} errors during garbage collection; the first: {first}",
            report.errors.len()
        );
    }
    Ok(())
}

/// How long a command waits for another one on the same data directory to finish.
const WAIT_FOR_OTHERS: Duration = Duration::from_secs(600);

/// Work that must run where the blobs' locks are: sent to the server running on the data
/// directory, or, with none, done here while holding the directory as a server would. A
/// command already doing such work here is waited for (two at once take turns).
pub(super) fn through_server_or_here<T>(
    config: Config,
    request: &Request,
    from_answer: impl Fn(Answer) -> anyhow::Result<T>,
    here: impl FnOnce(AppState) -> BoxFuture<'static, anyhow::Result<T>>,
) -> anyhow::Result<T> {
    through_server_or_here_with_progress(config, request, &|_| {}, from_answer, here)
}

/// `through_server_or_here`, with the server's progress lines handed to `on_progress`.
pub(super) fn through_server_or_here_with_progress<T>(
    config: Config,
    request: &Request,
    on_progress: &dyn Fn(crate::core::import::ImportProgress),
    from_answer: impl Fn(Answer) -> anyhow::Result<T>,
    here: impl FnOnce(AppState) -> BoxFuture<'static, anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let data = config.data();
    if !data.database().exists() {
        bail!(
            "no berth database at {} (is --data-dir right?)",
            data.database().display()
        );
    }
    let started = Instant::now();
    let mut said = false;
    let lock = loop {
        if let Some(answer) = control::request(&data, request, on_progress)? {
            return from_answer(answer);
        }
        match crate::storage::secure::lock_data_dir(&data) {
            Ok(lock) => break lock,
            Err(LockError::Held(who)) if started.elapsed() < WAIT_FOR_OTHERS => {
                if !said {
                    eprintln!("berth: waiting: {who}");
                    said = true;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => bail!("{e}"),
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Evicting from the pull-through cache needs its limits, not the upstreams' passwords
    // (which the administrator's shell may not have).
    let mut config = config;
    for u in &mut config.upstreams {
        (u.username, u.password_file, u.password_env) = (None, None, None);
    }
    let state = AppState::open(config, Arc::new(SystemClock))?;
    let out = rt.block_on(here(state));
    drop(lock);
    out
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
