//! The command line: `berth serve`, `berth config show`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::clock::SystemClock;
use crate::config::{self, Config, ConfigError, Overrides};
use crate::state::AppState;

#[derive(Parser, Debug)]
#[command(
    name = "berth",
    version,
    about = "A private container registry in one binary"
)]
pub struct Cli {
    /// Config file (TOML). Default: /etc/berth/berth.toml when it exists.
    #[arg(long, global = true, env = "BERTH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Folder for the database and blobs [config: data_dir, env: BERTH_DATA_DIR; default ./berth-data]
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on [config: listen, env: BERTH_LISTEN; default 127.0.0.1:5000]
    #[arg(long, global = true, value_name = "ADDR")]
    pub listen: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the registry.
    Serve,
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print the effective configuration (defaults < file < BERTH_* env < flags) as TOML.
    Show,
}

/// Exit code for configuration mistakes, as for command-line mistakes.
const EXIT_CONFIG: u8 = 2;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = Overrides {
        listen: cli.listen.clone(),
        data_dir: cli.data_dir.clone(),
    };
    let config = match config::load(cli.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e @ (ConfigError::Invalid(_) | ConfigError::MissingFile(_))) => {
            eprintln!("berth: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match cli.command {
        Command::Config(ConfigCommand::Show) => {
            print!("{}", config.to_toml());
            ExitCode::SUCCESS
        }
        Command::Serve => match serve(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("berth: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn init_logging(filter: &str) -> anyhow::Result<()> {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    let targets: Targets = filter
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid log filter {filter:?}: {e}"))?;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(targets)
        .init();
    Ok(())
}

fn serve(config: Config) -> anyhow::Result<()> {
    use anyhow::Context as _;
    init_logging(&config.log)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let listen = config.listen;
        let data_dir = config.data_dir.clone();
        // Opening migrates the database: done before the listener binds.
        let state = tokio::task::spawn_blocking(move || AppState::open(config, Arc::new(SystemClock)))
            .await
            .context("start-up task failed")??;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        tracing::info!(addr = %listener.local_addr()?, data_dir = %data_dir.display(), "berth is serving");
        crate::server::run(state, listener, crate::server::shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(())
    })
}
