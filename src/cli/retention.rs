//! `berth retention …`: manage retention policies, preview them and run them. Previews and
//! runs go through a running server (its control socket) like `berth gc`, or run here when
//! no server runs on the data directory.

use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use clap::Subcommand;

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::control::{Answer, Request};
use crate::core::gc::Trigger;
use crate::core::retention::{self, PolicySpec, RetentionReport, Which};

#[derive(Subcommand, Debug)]
pub enum RetentionCommand {
    /// Save the policy in FILE (TOML; see the README), replacing one of the same name.
    Add {
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
    /// List the saved policies, in the order they apply (the first that matches a repository
    /// governs it).
    List,
    /// Print a saved policy as TOML.
    Show { name: String },
    /// Delete a saved policy.
    Remove { name: String },
    /// List every tag with keep or delete and the reason, and the bytes the deletions would
    /// free; changes nothing. A saved policy by NAME, all of them, or a draft --file.
    Preview {
        name: Option<String>,
        #[arg(long, value_name = "FILE", conflicts_with = "name")]
        file: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Delete the tags the saved policies (or the one named) decide to delete.
    Run {
        name: Option<String>,
        /// Delete also where a repository would lose more than max_delete_share of its tags.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
}

pub fn retention(config: Config, cmd: RetentionCommand) -> anyhow::Result<()> {
    match cmd {
        RetentionCommand::Add { file } => {
            let spec = read_policy(&file)?;
            let db = crate::state::open_existing_database(&config)?;
            let name = spec.name.clone();
            let new = block_on(retention::save(&db, SystemClock.now(), spec))?;
            println!(
                "{} retention policy {name:?}",
                if new { "added" } else { "replaced" }
            );
            Ok(())
        }
        RetentionCommand::List => {
            let db = crate::state::open_existing_database(&config)?;
            for p in block_on(retention::list(&db))? {
                println!(
                    "{}\t{}\tmin_keep {}\tmax_delete_share {}",
                    p.name,
                    p.repositories.join(","),
                    p.min_keep,
                    p.max_delete_share
                );
            }
            Ok(())
        }
        RetentionCommand::Show { name } => {
            let db = crate::state::open_existing_database(&config)?;
            let p = block_on(retention::get(&db, &name))?
                .ok_or_else(|| anyhow!("no retention policy named {name:?}"))?;
            print!("{}", toml::to_string(&p)?);
            Ok(())
        }
        RetentionCommand::Remove { name } => {
            let db = crate::state::open_existing_database(&config)?;
            if !block_on(retention::remove(&db, &name))? {
                bail!("no retention policy named {name:?}");
            }
            println!("removed retention policy {name:?}");
            Ok(())
        }
        RetentionCommand::Preview { name, file, json } => {
            let draft = file.map(|f| read_policy(&f).map(Box::new)).transpose()?;
            let report = apply(config, name, draft, true, false)?;
            print(&report, json, true)
        }
        RetentionCommand::Run { name, force, json } => {
            let report = apply(config, name, None, false, force)?;
            print(&report, json, false)?;
            if let Some(first) = report.errors.first() {
                bail!("{} errors; the first: {first}", report.errors.len());
            }
            Ok(())
        }
    }
}

fn read_policy(file: &std::path::Path) -> anyhow::Result<PolicySpec> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let spec = PolicySpec::from_toml(&text).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    spec.compile()
        .map_err(|e| anyhow!("{}: {e}", file.display()))?;
    Ok(spec)
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(f)
}

fn apply(
    config: Config,
    name: Option<String>,
    draft: Option<Box<PolicySpec>>,
    dry_run: bool,
    force: bool,
) -> anyhow::Result<RetentionReport> {
    let request = Request::Retention {
        policy: name.clone(),
        draft: draft.clone(),
        dry_run,
        force,
    };
    let which = match (name, draft) {
        (_, Some(d)) => Which::Draft(d),
        (Some(n), None) => Which::Named(n),
        (None, None) => Which::Saved,
    };
    super::gc::through_server_or_here(
        config,
        &request,
        |answer| match answer {
            Answer::Retention(r) => Ok(*r),
            Answer::Error(e) => bail!("{e}"),
            other => bail!("unexpected answer from the server: {other:?}"),
        },
        move |state| {
            Box::pin(async move {
                Ok(state
                    .registry
                    .apply_retention(which, Trigger::Cli, dry_run, force)
                    .await?)
            })
        },
    )
}

fn print(r: &RetentionReport, json: bool, all: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    for d in &r.decisions {
        if all || d.delete {
            let what = if d.delete { "delete" } else { "keep" };
            let pulled = match &d.pulled_by {
                Some(who) => format!("  [last pulled by {who}]"),
                None => String::new(),
            };
            println!("{what:<6} {}:{}  {}{pulled}", d.repo, d.tag, d.reason);
        }
    }
    println!("{}", r.summary());
    Ok(())
}
