//! Configuration: embedded defaults < config file < `BERTH_*` environment < command-line
//! flags, merged by figment and validated once into a `Config` that lives in the app state.

pub mod keys;
mod tls;
pub mod upstreams;

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
    pub listen: Option<String>,
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
    #[serde(default)]
    pub gc: Gc,
    #[serde(default)]
    pub metrics: Metrics,
    /// Registries berth caches, each under a repository prefix (`[[upstreams]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<upstreams::Upstream>,
}

/// Where `/metrics` (Prometheus) is served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// A plain-HTTP listener of its own for `/metrics`, `/healthz` and `/readyz`, without
    /// credentials: keep it on loopback or a private network. `off` for none.
    pub listen: String,
    /// A file holding a token: with it, `/metrics` is also served on the main listener to
    /// requests with `Authorization: Bearer <token>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            listen: "127.0.0.1:9464".into(),
            token_file: None,
        }
    }
}

impl Metrics {
    /// The listener's address, `None` when off (validated at load).
    pub fn addr(&self) -> Option<std::net::SocketAddr> {
        match self.listen.as_str() {
            "off" => None,
            a => keys::parse_addr(a).ok(),
        }
    }
}

/// Garbage collection and upload expiry (see `core::gc`). Durations are seconds (`3600`) or a
/// number with a unit: `90s`, `15m`, `6h`, `7d`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Gc {
    /// Whether the server collects on its own schedule (`berth gc` works either way).
    pub enabled: bool,
    /// Time between scheduled runs.
    pub interval: Span,
    /// `HH:MM-HH:MM` (UTC): scheduled runs start only inside this daily window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// How long a blob nothing uses is kept after a client was last told it exists (upload,
    /// mount, HEAD), and a file without a database row after it was written.
    pub grace: Span,
    /// How long an untagged manifest is kept after its last push or pull; `never` keeps them.
    pub untagged_grace: Span,
    /// How long an upload session is kept after its last activity.
    pub upload_expiry: Span,
}

impl Default for Gc {
    fn default() -> Self {
        Gc {
            enabled: true,
            interval: Span::Text("1h".into()),
            window: None,
            grace: Span::Text("6h".into()),
            untagged_grace: Span::Text("24h".into()),
            upload_expiry: Span::Text("24h".into()),
        }
    }
}

impl Gc {
    /// Seconds between scheduled runs and the daily window, when the server collects on its
    /// own (values as checked by `load`).
    pub fn schedule(&self) -> Option<(i64, Option<(u32, u32)>)> {
        if !self.enabled {
            return None;
        }
        let interval = self
            .interval
            .seconds()
            .ok()
            .flatten()
            .unwrap_or(3600)
            .max(1) as i64;
        let window = self.window.as_deref().and_then(|w| parse_window(w).ok());
        Some((interval, window))
    }
}

impl Gc {
    /// Settings short enough to collect what a push in progress still needs; allowed (tests
    /// and soak runs use them), but said at start.
    pub fn risks(&self) -> Vec<String> {
        let secs = |s: &Span| s.seconds().ok().flatten();
        let mut out = Vec::new();
        if self.enabled && secs(&self.grace).is_some_and(|g| g < 600) {
            out.push("gc.grace is under 10 minutes: a blob uploaded for a push still in progress may be collected before its manifest arrives".to_string());
        }
        if self.enabled && secs(&self.untagged_grace).is_some_and(|g| g < 3600) {
            out.push("gc.untagged_grace is under an hour: the platform manifests of a multi-arch push may be collected before its index arrives".to_string());
        }
        out
    }
}

/// `90m` → (90, "m"): the leading digits and what follows them.
fn number_and_unit(text: &str) -> Option<(u64, &str)> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    Some((num.parse().ok()?, unit))
}

/// A duration as written: seconds, or text such as `6h` (or `never` where allowed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Span {
    Secs(u64),
    Text(String),
}

impl Span {
    /// Seconds; `None` for `never`.
    pub fn seconds(&self) -> Result<Option<u64>, String> {
        let text = match self {
            Span::Secs(n) => return Ok(Some(*n)),
            Span::Text(t) => t.trim(),
        };
        if text == "never" {
            return Ok(None);
        }
        let bad = || {
            format!(
                "{text:?} is not a duration: give seconds, or a number with s, m, h or d (\"6h\")"
            )
        };
        let (n, unit) = number_and_unit(text).ok_or_else(bad)?;
        let mult = match unit {
            "" | "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(bad()),
        };
        n.checked_mul(mult).map(Some).ok_or_else(bad)
    }
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
    /// Free space the data directory's file system keeps: below it new uploads are refused
    /// (pulls, deletes and garbage collection go on).
    pub min_free_space: Size,
    /// Upload sessions one credential (user, robot token, or anonymous) may have open.
    pub max_upload_sessions: u32,
    /// The largest blob an upload may bring (unset: no limit but the free-space floor).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_upload_size: Option<Size>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            header_timeout_secs: 30,
            idle_timeout_secs: 120,
            min_free_space: Size::Text("1GiB".into()),
            max_upload_sessions: 1000,
            max_upload_size: None,
        }
    }
}

/// A size as written: bytes, or text such as `512MiB`, `1GiB` (`K`, `M`, `G`, `T`, with or
/// without `iB`, are powers of 1024).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    pub fn bytes(&self) -> Result<u64, String> {
        let text = match self {
            Size::Bytes(n) => return Ok(*n),
            Size::Text(t) => t.trim(),
        };
        let bad = || {
            format!(
                "{text:?} is not a size: give bytes, or a number with KiB, MiB, GiB or TiB (\"1GiB\")"
            )
        };
        let (n, unit) = number_and_unit(text).ok_or_else(bad)?;
        let shift = match unit.trim() {
            "" | "B" => 0,
            "K" | "KiB" | "k" => 10,
            "M" | "MiB" => 20,
            "G" | "GiB" => 30,
            "T" | "TiB" => 40,
            _ => return Err(bad()),
        };
        n.checked_mul(1u64 << shift).ok_or_else(bad)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    PowerLoss,
    ProcessCrash,
}

impl Config {
    /// The data directory, which names every path under it.
    pub fn data(&self) -> crate::storage::DataDir {
        crate::storage::DataDir::new(&self.data_dir)
    }
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
            gc: Gc::default(),
            metrics: Metrics::default(),
            upstreams: Vec::new(),
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

/// What loading found: the configuration, and warnings worth a line on stderr.
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

/// Merge every layer and validate. `file` is `--config`; without it the default path is
/// read when present.
pub fn load(file: Option<&Path>, cli: &Overrides) -> Result<Loaded, ConfigError> {
    let mut fig = Figment::from(Serialized::defaults(Config::default()));
    match file {
        Some(p) if !p.exists() => return Err(ConfigError::MissingFile(p.to_path_buf())),
        Some(p) => fig = fig.merge(Toml::file_exact(p)),
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
            fig = fig.merge(Toml::file_exact(DEFAULT_CONFIG_PATH))
        }
        None => {}
    }
    // Only variables that name a key are read (nested keys with a double underscore:
    // BERTH_TLS__MODE=acme); others, such as a CI's BERTH_TOKEN, are not berth's.
    fig = fig.merge(
        Env::prefixed("BERTH_")
            .split("__")
            .filter(|k| keys::is_key(k.as_str())),
    );
    fig = fig.merge(Serialized::globals(cli));
    let config: Config = fig
        .extract()
        .map_err(|e| ConfigError::Invalid(one_line(&keys::describe(&e))))?;
    validate(&config, &fig)?;
    let warnings = keys::env_warnings(std::env::vars().map(|(k, _)| k));
    Ok(Loaded { config, warnings })
}

fn validate(c: &Config, fig: &Figment) -> Result<(), ConfigError> {
    let invalid = |key: &str, what: String| {
        ConfigError::Invalid(format!("{}: {what}", keys::written(fig, key)))
    };
    if c.data_dir.as_os_str().is_empty() {
        return Err(invalid("data_dir", "must not be empty".into()));
    }
    if let Some(l) = &c.listen {
        keys::parse_addr(l).map_err(|e| invalid("listen", e))?;
    }
    keys::check_log(&c.log).map_err(|e| invalid("log", e))?;
    c.tls.validate().map_err(ConfigError::Invalid)?;
    if let Err(e) = c.proxies() {
        // "external_url: …" or "trusted_proxies: …": name the key as it was written.
        return Err(match e.split_once(": ") {
            Some((key, what)) => invalid(key, what.to_string()),
            None => ConfigError::Invalid(e),
        });
    }
    if c.metrics.listen != "off" {
        keys::parse_addr(&c.metrics.listen)
            .map_err(|e| invalid("metrics.listen", format!("{e} (or \"off\")")))?;
    }
    let l = &c.limits;
    for (key, v, max) in [
        ("limits.max_connections", l.max_connections as u64, 1 << 20),
        ("limits.header_timeout_secs", l.header_timeout_secs, 3600),
        ("limits.idle_timeout_secs", l.idle_timeout_secs, 86_400),
    ] {
        if v == 0 || v > max {
            return Err(invalid(key, format!("{v} is out of range: 1 to {max}")));
        }
    }
    l.min_free_space
        .bytes()
        .map_err(|e| invalid("limits.min_free_space", e))?;
    if let Some(s) = &l.max_upload_size
        && s.bytes()
            .map_err(|e| invalid("limits.max_upload_size", e))?
            == 0
    {
        return Err(invalid(
            "limits.max_upload_size",
            "must be more than 0".into(),
        ));
    }
    if l.max_upload_sessions == 0 || l.max_upload_sessions > 1_000_000 {
        return Err(invalid(
            "limits.max_upload_sessions",
            format!("{} is out of range: 1 to 1000000", l.max_upload_sessions),
        ));
    }
    upstreams::validate(&c.upstreams).map_err(|e| invalid("upstreams", e))?;
    let g = &c.gc;
    for (key, span, never_ok, min) in [
        ("gc.interval", &g.interval, false, 1),
        ("gc.grace", &g.grace, false, 0),
        ("gc.untagged_grace", &g.untagged_grace, true, 0),
        ("gc.upload_expiry", &g.upload_expiry, false, 1),
    ] {
        match span.seconds().map_err(|e| invalid(key, e))? {
            None if !never_ok => return Err(invalid(key, "cannot be never".into())),
            Some(n) if n < min || n > 10 * 365 * 86_400 => {
                return Err(invalid(
                    key,
                    format!("{n} seconds is out of range: {min} to ten years"),
                ));
            }
            _ => {}
        }
    }
    if let Some(w) = &g.window {
        parse_window(w).map_err(|e| invalid("gc.window", e))?;
    }
    if c.shutdown_grace_secs > 3600 {
        return Err(invalid(
            "shutdown_grace_secs",
            format!("{} is out of range: 0 to 3600", c.shutdown_grace_secs),
        ));
    }
    Ok(())
}

/// `HH:MM-HH:MM` → (start, end) in seconds after midnight UTC. The window may cross
/// midnight (`22:00-04:00`); equal ends are refused.
pub fn parse_window(w: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{w:?} is not a daily window: write HH:MM-HH:MM in UTC (\"02:00-05:00\")");
    let time = |t: &str| -> Option<u32> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60 && t.trim().len() == 5).then_some(h * 3600 + m * 60)
    };
    let (a, b) = w.split_once('-').ok_or_else(bad)?;
    let (a, b) = (time(a).ok_or_else(bad)?, time(b).ok_or_else(bad)?);
    if a == b {
        return Err(bad());
    }
    Ok((a, b))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Config {
    /// The main listener's address, after the mode-dependent default.
    pub fn listen_addr(&self) -> SocketAddr {
        let given = self
            .listen
            .as_deref()
            .and_then(|l| keys::parse_addr(l).ok());
        given.unwrap_or(match self.tls.mode {
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
        shown.listen = Some(self.listen_addr().to_string());
        if self.tls.mode != TlsMode::Off && shown.tls.http_listen.is_none() {
            shown.tls.http_listen = Some(tls::DEFAULT_HTTP_LISTEN.into());
        }
        shown.external_url = shown.external_url.as_deref().map(keys::redact_url);
        let text = match toml::to_string(&shown) {
            Ok(t) => t,
            Err(e) => return format!("# cannot render configuration: {e}\n"),
        };
        // Keys without a value (TOML has no null) are named, so every key shows.
        let table: toml::Table = text.parse().unwrap_or_default();
        let unset: Vec<&str> = keys::KEYS
            .iter()
            .copied()
            .filter(|k| {
                let mut v = Some(&table);
                let mut parts = k.split('.').peekable();
                while let Some(p) = parts.next() {
                    match (v.and_then(|t| t.get(p)), parts.peek()) {
                        (Some(toml::Value::Table(t)), Some(_)) => v = Some(t),
                        (Some(_), None) => return false,
                        _ => return true,
                    }
                }
                true
            })
            .collect();
        if unset.is_empty() {
            text
        } else {
            format!("# not set: {}\n{text}", unset.join(", "))
        }
    }
}
