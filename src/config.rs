//! Configuration: embedded defaults < config file < `BERTH_*` environment < command-line
//! flags, merged by figment and validated once into a `Config` that lives in the app state.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Where the config file is looked for when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/berth/berth.toml";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address of the HTTP listener.
    pub listen: SocketAddr,
    /// Folder holding the database, blobs and upload sessions.
    pub data_dir: PathBuf,
    /// Log filter: a level (`info`) or `target=level` pairs (`berth=debug,info`).
    pub log: String,
    /// What an acknowledged push survives: `power-loss` (fsync everything) or `process-crash`.
    pub durability: Durability,
    /// Seconds in-flight requests get to finish after SIGTERM or ctrl-c.
    pub shutdown_grace_secs: u64,
    /// File holding the first administrator's password (read once, when no user exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    PowerLoss,
    ProcessCrash,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
            data_dir: PathBuf::from("./berth-data"),
            log: "info".into(),
            durability: Durability::PowerLoss,
            shutdown_grace_secs: 30,
            admin_password_file: None,
        }
    }
}

/// Values given on the command line; `None` leaves the lower layers in charge.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Merge every layer and validate. `file` is `--config`; without it the default path is
/// read when present.
pub fn load(file: Option<&Path>, cli: &Overrides) -> Result<Config, ConfigError> {
    let mut fig = Figment::from(Serialized::defaults(Config::default()));
    match file {
        Some(p) if !p.exists() => return Err(ConfigError::MissingFile(p.to_path_buf())),
        Some(p) => fig = fig.merge(Toml::file_exact(p)),
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
            fig = fig.merge(Toml::file_exact(DEFAULT_CONFIG_PATH))
        }
        None => {}
    }
    // `BERTH_CONFIG` names the file (read by the CLI); every other BERTH_* must be a key.
    fig = fig.merge(Env::prefixed("BERTH_").ignore(NOT_CONFIG_KEYS));
    fig = fig.merge(Serialized::globals(cli));
    let config: Config = fig
        .extract()
        .map_err(|e| ConfigError::Invalid(one_line(&e.to_string())))?;
    validate(&config)?;
    Ok(config)
}

/// `BERTH_*` variables that are not configuration keys (read elsewhere, or by the shell).
const NOT_CONFIG_KEYS: &[&str] = &["config", "admin_password"];

fn validate(c: &Config) -> Result<(), ConfigError> {
    if c.data_dir.as_os_str().is_empty() {
        return Err(ConfigError::Invalid("data_dir must not be empty".into()));
    }
    if let Err(e) = c.log.parse::<tracing_subscriber::filter::Targets>() {
        return Err(ConfigError::Invalid(format!("log: {e} in {:?}", c.log)));
    }
    Ok(())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Config {
    /// The configuration as TOML, as `berth config show` prints it.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}
