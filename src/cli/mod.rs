//! The command line: `berth serve`, `berth config show`, and administration of users,
//! robot tokens and anonymous pulls on the data directory.

mod accounts;
mod backup;
mod gc;
mod import;
mod retention;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::clock::SystemClock;
use crate::config::{self, Config, ConfigError, Overrides};
use crate::state::AppState;

/// What `berth --version` says: the crate's version, or `BERTH_VERSION` given to the build
/// (a release build names its version that way).
pub const VERSION: &str = match option_env!("BERTH_VERSION") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};

#[derive(Parser, Debug)]
#[command(
    name = "berth",
    version = VERSION,
    about = "A private container registry in one binary"
)]
pub struct Cli {
    /// Config file (TOML). Default: /etc/berth/berth.toml when it exists.
    #[arg(long, global = true, env = "BERTH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Folder for the database and blobs [config: data_dir, env: BERTH_DATA_DIR; default ./berth-data]
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Main listener, HOST:PORT, :PORT or localhost:PORT: plain HTTP, or HTTPS when tls.mode is acme or files [config: listen, env: BERTH_LISTEN; default 127.0.0.1:5000, or 0.0.0.0:443 with TLS]
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
    /// Manage users and their grants.
    #[command(subcommand)]
    User(accounts::UserCommand),
    /// Manage robot tokens (for CI and clusters).
    #[command(subcommand)]
    Token(accounts::TokenCommand),
    /// Open repositories to pulls without credentials (off by default).
    #[command(subcommand)]
    Anonymous(accounts::AnonymousCommand),
    /// Inspect HTTPS.
    #[command(subcommand)]
    Tls(TlsCommand),
    /// Collect garbage now: untagged manifests, unreferenced blobs, idle upload sessions (safe
    /// while the server runs; the server also does it on its schedule, see [gc] in the config).
    Gc(gc::GcArgs),
    /// Retention policies: which tags to keep (newest N per branch, highest versions, pulled
    /// recently, …); preview them, run them (scheduled collections run them first).
    #[command(subcommand)]
    Retention(retention::RetentionCommand),
    /// Move in from another registry: `berth import registry2 DIR` adopts a registry:2
    /// storage directory (safe while the server runs; run it again to catch up).
    #[command(subcommand)]
    Import(import::ImportCommand),
    /// Back up the data directory while berth serves: a consistent copy of the database and
    /// every blob it records, into a folder (incremental) or a tar stream on stdout.
    Backup(backup::BackupArgs),
    /// Build a new data directory (--data-dir) from a backup, verifying every blob.
    Restore(backup::RestoreArgs),
    /// Check a data directory: every recorded blob present with its size (--deep: digest),
    /// no file without a record, no broken reference. Exit 0 sound, 1 problems, 2 no check.
    Fsck(backup::FsckArgs),
}

#[derive(Subcommand, Debug)]
pub enum TlsCommand {
    /// The certificate in use (names, issuer, expiry) and the last ACME error; exits 1 when
    /// TLS is on but no valid certificate is available.
    Status,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print the effective configuration (defaults < file < BERTH_* env < flags) as TOML.
    Show,
}

/// Exit code for configuration mistakes, as for command-line mistakes.
const EXIT_CONFIG: u8 = 2;

pub fn main() -> ExitCode {
    // Everything berth creates is its owner's alone: the database holds the token signing key.
    crate::storage::secure::owner_only_umask();
    crate::http::memory::configure_allocator();
    let cli = Cli::parse();
    let overrides = Overrides {
        listen: cli.listen.clone(),
        data_dir: cli.data_dir.clone(),
    };
    let config = match config::load(cli.config.as_deref(), &overrides) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("berth: warning: {w}");
            }
            loaded.config
        }
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
        Command::Serve => done(serve(config)),
        Command::User(cmd) => done(accounts::user(&config, cmd)),
        Command::Token(cmd) => done(accounts::token(&config, cmd)),
        Command::Anonymous(cmd) => done(accounts::anonymous(&config, cmd)),
        Command::Gc(args) => done(gc::gc(config, args)),
        Command::Retention(cmd) => done(retention::retention(config, cmd)),
        Command::Import(cmd) => done(import::import(config, cmd)),
        Command::Backup(args) => done(backup::backup(config, args)),
        Command::Restore(args) => done(backup::restore(config, args)),
        Command::Fsck(args) => backup::fsck(config, args),
        Command::Tls(TlsCommand::Status) => {
            use crate::clock::Clock as _;
            match crate::tls::status::report(&config, SystemClock.now()) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(text) => {
                    print!("{text}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// One line on stderr and exit code 1 for a failed command.
fn done(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

/// On the very first start, create `admin`: with `BERTH_ADMIN_PASSWORD` or the configured
/// password file (read only then), else a random password shown once on stderr and kept (mode 0600) in
/// `<data-dir>/initial-admin-password`.
fn bootstrap_admin(state: &AppState) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let config = &state.config;
    // Once there is a user, the password file is not needed (an installer removes it).
    if state.auth.db().read_blocking(crate::db::users::count)? > 0 {
        return Ok(());
    }
    let given = match (
        std::env::var("BERTH_ADMIN_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty()),
        &config.admin_password_file,
    ) {
        (Some(p), _) => Some(p),
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read admin_password_file {}", file.display()))?;
            Some(text.trim_end_matches(['\n', '\r']).to_string())
        }
        (None, None) => None,
    };
    let now = state.auth.now();
    let created = crate::auth::accounts::bootstrap_admin(state.auth.db(), now, given.as_deref())?;
    if let Some(password) = created {
        let path = config.data().initial_admin_password();
        write_private(&path, &format!("{password}\n"))
            .with_context(|| format!("cannot write {}", path.display()))?;
        if std::env::var_os("JOURNAL_STREAM").is_some() {
            // Under systemd stderr is the journal, which keeps it and shows it to more people.
            eprintln!(
                "berth: created user \"admin\"; its password is in {} (change it with `berth user passwd admin`)",
                path.display()
            );
        } else {
            eprintln!(
                "berth: created user \"admin\" with password {password} (also in {}; change it with `berth user passwd admin`)",
                path.display()
            );
        }
    }
    Ok(())
}

fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut f = crate::storage::secure::file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
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
    for w in config.gc.risks() {
        tracing::warn!("{w}");
    }
    // The listeners first: a busy port stops here, before anything is created on disk.
    let listen = config.listen_addr();
    let http_listen = config.tls.http_addr();
    let listeners = crate::server::Listeners::bind(listen, http_listen, config.metrics.addr())?;
    // One server per data directory; CLI commands beside it need no lock.
    let _lock =
        crate::storage::secure::lock_data_dir(&config.data()).map_err(|e| anyhow::anyhow!(e))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = rt.block_on(async move {
        let data_dir = config.data_dir.clone();
        // Opening migrates the database: done before the listeners serve.
        let state = tokio::task::spawn_blocking(move || {
            let state = AppState::open(config, Arc::new(SystemClock))?;
            bootstrap_admin(&state)?;
            anyhow::Ok(state)
        })
        .await
        .context("start-up task failed")??;
        let mode = state.config.tls.mode;
        tracing::info!(addr = %listeners.main.local_addr()?, tls = ?mode, http = ?http_listen, data_dir = %data_dir.display(), "berth is serving");
        let grace = std::time::Duration::from_secs(state.config.shutdown_grace_secs);
        let signalled = crate::server::signal_watchdog(grace)?;
        crate::server::run(state, listeners, async move {
            let _ = signalled.await;
        })
        .await?;
        tracing::info!("stopped");
        anyhow::Ok(())
    });
    // Blocking work still running (a write waiting on a busy database) gets a moment, not more.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}
