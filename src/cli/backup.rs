//! `berth backup`, `berth restore`, `berth fsck`. Backups and checks read the data
//! directory beside a running server (SQLite's online backup; a check looks again before it
//! reports); a restore builds a new data directory, with no server on it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::core::backup::{self, Destination, RestoreSource, fsck::FsckReport};
use crate::storage::{BlobStore, FsStore, Sync};

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// A folder (made if missing; a backup already there is brought up to date, copying only
    /// new blobs), or - for a tar stream on stdout.
    pub dest: PathBuf,
    /// Print the report as JSON (on stderr with -).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// A backup folder, a tar file of `berth backup -`, or - for that stream on stdin. The
    /// data directory (--data-dir) must not exist or be empty.
    pub src: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct FsckArgs {
    /// Also re-hash every blob (reads everything).
    #[arg(long)]
    pub deep: bool,
    #[arg(long)]
    pub json: bool,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn store(config: &Config) -> anyhow::Result<Arc<dyn BlobStore>> {
    let data = config.data();
    if !data.database().is_file() {
        bail!(
            "no berth database at {} (is --data-dir right?)",
            data.database().display()
        );
    }
    Ok(Arc::new(FsStore::open(&data.blobs(), Sync::Never)?))
}

pub fn backup(config: Config, args: BackupArgs) -> anyhow::Result<()> {
    let store = store(&config)?;
    let to_stdout = args.dest.as_os_str() == "-";
    let dest = if to_stdout {
        Destination::Tar(Box::new(std::io::BufWriter::with_capacity(
            1 << 20,
            std::io::stdout(),
        )))
    } else {
        Destination::Dir(args.dest.clone())
    };
    let report = runtime()?.block_on(backup::backup(
        &config.data(),
        store,
        dest,
        SystemClock.now(),
    ))?;
    let text = if args.json {
        serde_json::to_string_pretty(&report)?
    } else {
        report.summary()
    };
    if to_stdout {
        eprintln!("{text}");
    } else {
        println!("{text}");
    }
    Ok(())
}

pub fn restore(config: Config, args: RestoreArgs) -> anyhow::Result<()> {
    let src = if args.src.as_os_str() == "-" {
        RestoreSource::Tar(Box::new(std::io::stdin()))
    } else if args.src.is_dir() {
        RestoreSource::Dir(args.src.clone())
    } else {
        let file = std::fs::File::open(&args.src)
            .with_context(|| format!("cannot open {}", args.src.display()))?;
        RestoreSource::Tar(Box::new(std::io::BufReader::with_capacity(1 << 20, file)))
    };
    let report = runtime()?.block_on(backup::restore(src, &config.data()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.summary());
    }
    Ok(())
}

/// Exit 0 when sound, 1 when a problem was found, 2 when the check could not run.
pub fn fsck(config: Config, args: FsckArgs) -> ExitCode {
    let run = || -> anyhow::Result<FsckReport> {
        let store = store(&config)?;
        Ok(runtime()?.block_on(backup::fsck::fsck(&config.data(), store, args.deep))?)
    };
    let report = match run() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("berth: {}", format!("{e:#}").replace('\n', " "));
            return ExitCode::from(2);
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(j) => println!("{j}"),
            Err(e) => {
                eprintln!("berth: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        for p in &report.problems {
            println!("{:<9} {}: {}", p.kind, p.what, p.detail);
        }
        println!("{}", report.summary());
    }
    if report.is_sound() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
