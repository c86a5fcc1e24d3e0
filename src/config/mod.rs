//! Configuration: embedded defaults < config file < `BERTH_*` environment < command-line
//! flags, merged by figment and validated once into a `Config` that lives in the app state.

mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use tls::{Challenge, Directory, Proxies, Tls, TlsMode};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Where the config file is looked for when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/berth/berth.toml";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address of the main listener: plain HTTP when `tls.mode` is `off` (default
    /// 127.0.0.1:5000), HTTPS otherwise (default 0.0.0.0:443).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
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
    /// The URL clients use to reach berth (`https://registry.example.com`), when it differs
    /// from what the request says (behind a reverse proxy). Decides the absolute URLs berth
    /// emits: the token realm and upload locations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_url: Option<String>,
    /// Addresses (or CIDR ranges) of reverse proxies whose X-Forwarded-For/-Proto/-Host
    /// headers are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default)]
    pub tls: Tls,
    #[serde(default)]
    pub limits: Limits,
}

/// Limits of every listener (see `http::serve`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Connections open at once, over all listeners (lowered to what the file limit allows).
    pub max_connections: usize,
    /// Seconds for a TLS handshake and for a request's headers (also how long a kept-alive
    /// HTTP/1.1 connection waits for its next request).
    pub header_timeout_secs: u64,
    /// Seconds a connection may stay open without a byte moving either way.
    pub idle_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            header_timeout_secs: 30,
            idle_timeout_secs: 120,
        }
    }
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
            listen: None,
            data_dir: PathBuf::from("./berth-data"),
            log: "info".into(),
            durability: Durability::PowerLoss,
            shutdown_grace_secs: 30,
            admin_password_file: None,
            external_url: None,
            trusted_proxies: Vec::new(),
            tls: Tls::default(),
            limits: Limits::default(),
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
    // Nested keys use a double underscore: BERTH_TLS__MODE=acme.
    fig = fig.merge(Env::prefixed("BERTH_").ignore(NOT_CONFIG_KEYS).split("__"));
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
    c.tls.validate().map_err(ConfigError::Invalid)?;
    let l = &c.limits;
    if l.max_connections == 0 || l.header_timeout_secs == 0 || l.idle_timeout_secs == 0 {
        return Err(ConfigError::Invalid(
            "limits.max_connections, limits.header_timeout_secs and limits.idle_timeout_secs must be at least 1".into(),
        ));
    }
    c.proxies().map_err(ConfigError::Invalid)?;
    Ok(())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Config {
    /// The main listener's address, after the mode-dependent default.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen.unwrap_or(match self.tls.mode {
            TlsMode::Off => SocketAddr::from(([127, 0, 0, 1], 5000)),
            TlsMode::Acme | TlsMode::Files => SocketAddr::from(([0, 0, 0, 0], 443)),
        })
    }

    /// External URL and trusted proxies, parsed (validated at load, so this does not fail
    /// on a loaded configuration).
    pub fn proxies(&self) -> Result<Proxies, String> {
        Proxies::parse(self.external_url.as_deref(), &self.trusted_proxies)
    }

    /// The configuration as TOML, as `berth config show` prints it, with defaults that
    /// depend on other keys filled in.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        shown.listen = Some(self.listen_addr());
        if self.tls.mode != TlsMode::Off && shown.tls.http_listen.is_none() {
            shown.tls.http_listen = Some(tls::DEFAULT_HTTP_LISTEN.into());
        }
        toml::to_string(&shown).unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}
