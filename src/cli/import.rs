//! `berth import registry2 DIR`: adopt a registry:2 storage directory. With a server running
//! on the data directory the server does it (through its control socket, so pushes and
//! garbage collection go on safely beside it); without one, this process does.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;

use crate::config::Config;
use crate::control::{Answer, Request};
use crate::core::gc::human_bytes;
use crate::core::import::{ImportOptions, ImportProgress, ImportReport};

#[derive(Subcommand, Debug)]
pub enum ImportCommand {
    /// Bring in every repository, tag, manifest and blob of a registry:2 (distribution)
    /// filesystem storage root, with the same digests. DIR is the folder holding
    /// docker/registry/v2; it is only read. Blobs are hard-linked when on the same file
    /// system, copied otherwise, and verified either way. Safe while berth serves; run it
    /// again to bring in what changed since.
    Registry2 {
        dir: PathBuf,
        /// Change nothing: report what would be imported.
        #[arg(long)]
        dry_run: bool,
        /// Where a tag exists in berth with another target, take the source's (default:
        /// keep berth's and report it).
        #[arg(long)]
        overwrite_tags: bool,
        /// Print the whole report as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn import(config: Config, cmd: ImportCommand) -> anyhow::Result<()> {
    let ImportCommand::Registry2 {
        dir,
        dry_run,
        overwrite_tags,
        json,
    } = cmd;
    // The server resolves the path itself: give it an absolute one.
    let dir =
        std::fs::canonicalize(&dir).with_context(|| format!("cannot open {}", dir.display()))?;
    let options = ImportOptions {
        dry_run,
        overwrite_tags,
        ..ImportOptions::default()
    };
    let bar = Arc::new(Bar::new());
    let shown = bar.clone();
    let on_progress = move |p: ImportProgress| shown.show(p);
    let here_progress = Arc::new(on_progress.clone());
    let report = super::gc::through_server_or_here_with_progress(
        config,
        &Request::Import {
            dir: dir.clone(),
            dry_run,
            overwrite_tags,
        },
        &on_progress,
        |answer| match answer {
            Answer::Import(r) => Ok(*r),
            Answer::Error(e) => bail!("{e}"),
            other => bail!("unexpected answer from the server: {other:?}"),
        },
        move |state| {
            Box::pin(async move {
                Ok(state
                    .registry
                    .import_registry2(dir, options, here_progress)
                    .await?)
            })
        },
    );
    bar.finish();
    print(&report?, json)
}

fn print(r: &ImportReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    for s in &r.skipped {
        println!("skipped   {}: {}", s.what, s.why);
    }
    for c in &r.conflicts {
        println!("kept      {}: {}", c.what, c.why);
    }
    println!("{}", r.summary());
    Ok(())
}

/// A one-line progress bar on a terminal's stderr; silent elsewhere.
struct Bar {
    on: bool,
    last: Mutex<Option<Instant>>,
}

impl Bar {
    fn new() -> Bar {
        Bar {
            on: std::io::stderr().is_terminal(),
            last: Mutex::new(None),
        }
    }

    fn show(&self, p: ImportProgress) {
        if !self.on {
            return;
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < Duration::from_millis(100))
            && p.objects_done < p.objects_total
        {
            return;
        }
        *last = Some(Instant::now());
        let share = if p.bytes_total > 0 {
            p.bytes_done as f64 / p.bytes_total as f64
        } else if p.objects_total > 0 {
            p.objects_done as f64 / p.objects_total as f64
        } else {
            1.0
        };
        const WIDTH: usize = 30;
        let full = ((share.clamp(0.0, 1.0) * WIDTH as f64) as usize).min(WIDTH);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r[{}{}] {:>3}%  {} / {}  {}/{} objects \x1b[K",
            "#".repeat(full),
            " ".repeat(WIDTH - full),
            (share * 100.0) as u32,
            human_bytes(p.bytes_done),
            human_bytes(p.bytes_total),
            p.objects_done,
            p.objects_total
        );
        let _ = err.flush();
    }

    fn finish(&self) {
        if self.on && self.last.lock().is_ok_and(|l| l.is_some()) {
            eprintln!();
        }
    }
}
