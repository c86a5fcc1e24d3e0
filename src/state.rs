//! Application state shared by every request.

use std::sync::Arc;

use crate::auth::Auth;
use crate::clock::Clock;
use crate::config::{self, Config, Proxies, TlsMode};
use crate::core::{Registry, gc};
use crate::db::{self, Db};
use crate::http::origin::{self, Origin};
use crate::storage::{self, FsStore, Staging};

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub registry: Registry,
    pub auth: Auth,
    proxies: Arc<Proxies>,
    /// SHA-256 (hex) of the metrics token, when `metrics.token_file` is set.
    metrics_token: Option<Arc<str>>,
}

impl AppState {
    /// Open the data directory: database (migrated), blob store and upload staging.
    /// Blocking; start-up only.
    pub fn open(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<AppState> {
        use anyhow::Context as _;
        let data = config.data();
        let repaired = storage::secure::secure_data_dir(data.root()).with_context(|| {
            format!("cannot secure the data directory {}", data.root().display())
        })?;
        warn_repaired(&repaired);
        let db = open_database(&data, config.durability, true)?;
        let sync = blob_sync(config.durability);
        let store = FsStore::open(&data.blobs(), sync)
            .with_context(|| format!("cannot open the blob store {}", data.blobs().display()))?;
        let max_upload = config
            .limits
            .max_upload_size
            .as_ref()
            .map(|s| s.bytes().map_err(|e| anyhow::anyhow!(e)))
            .transpose()?;
        let staging = Staging::open(&data.uploads(), sync)
            .with_context(|| format!("cannot open the upload folder {}", data.uploads().display()))?
            .with_max_upload(max_upload);
        staging
            .sweep_fills()
            .context("cannot remove the cache downloads a stopped server left")?;
        let caches = caches(&config, max_upload)?;
        for u in &config.upstreams {
            let prefix = format!("{}/", u.name);
            let pushed = db
                .read_blocking(|c| crate::db::cache::pushed_under(c, &prefix))
                .context("cannot read the database")?;
            if let Some(repo) = pushed {
                anyhow::bail!(
                    "upstream {:?}: the repository {repo} holds pushed images, and everything under {prefix} would become the read-only cache of {}; give the upstream another name",
                    u.name,
                    u.base_url()
                );
            }
        }
        let auth =
            Auth::open(db.clone(), clock.clone()).context("cannot load the token signing key")?;
        let proxies = config.proxies().map_err(|e| anyhow::anyhow!(e))?;
        let options = crate::core::Options {
            gc: gc_settings(&config)?,
            uploads: crate::core::UploadLimits {
                min_free_space: config
                    .limits
                    .min_free_space
                    .bytes()
                    .map_err(|e| anyhow::anyhow!(e))?,
                max_sessions: u64::from(config.limits.max_upload_sessions),
            },
        };
        let metrics_token = match &config.metrics.token_file {
            None => None,
            Some(f) => {
                let t = std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read metrics.token_file {}", f.display()))?;
                let t = t.trim();
                if t.len() < 16 {
                    anyhow::bail!(
                        "metrics.token_file {}: the token must be at least 16 characters",
                        f.display()
                    );
                }
                Some(Arc::from(crate::auth::secret::sha256_hex(t)))
            }
        };
        Ok(AppState {
            metrics_token,
            proxies: Arc::new(proxies),
            config: Arc::new(config),
            registry: Registry::new(db, Arc::new(store), staging, clock, options)
                .with_caches(caches),
            auth,
        })
    }
}

impl AppState {
    /// SHA-256 (hex) of the metrics token, if one is configured.
    pub fn metrics_token(&self) -> Option<&str> {
        self.metrics_token.as_deref()
    }
}

/// The database of a data directory a server has set up, for CLI commands: a missing
/// database is an error (a mistyped `--data-dir`), not a new empty registry.
pub fn open_existing_database(config: &Config) -> anyhow::Result<Db> {
    let data = config.data();
    if !data.database().exists() {
        anyhow::bail!(
            "no berth database at {} (is --data-dir right?)",
            data.database().display()
        );
    }
    open_database(&data, config.durability, false)
}

fn open_database(
    data: &storage::DataDir,
    durability: config::Durability,
    create: bool,
) -> anyhow::Result<Db> {
    use anyhow::Context as _;
    let path = data.database();
    if create {
        // SQLite gives its -wal and -shm files the mode of the database file: make that 0600
        // before SQLite creates it (an empty file is an empty database).
        storage::secure::file_options()
            .append(true)
            .create(true)
            .open(&path)
            .with_context(|| format!("cannot create database {}", path.display()))?;
    }
    let durability = match durability {
        config::Durability::PowerLoss => db::Durability::PowerLoss,
        config::Durability::ProcessCrash => db::Durability::ProcessCrash,
    };
    Db::open(&path, durability).with_context(|| format!("cannot open database {}", path.display()))
}

/// The collector's settings; `config::load` has checked every value.
fn gc_settings(config: &Config) -> anyhow::Result<gc::Settings> {
    let secs = |s: &config::Span| -> anyhow::Result<Option<i64>> {
        Ok(s.seconds()
            .map_err(|e| anyhow::anyhow!(e))?
            .map(|n| n as i64))
    };
    let g = &config.gc;
    Ok(gc::Settings {
        grace: secs(&g.grace)?.unwrap_or(0),
        untagged_grace: secs(&g.untagged_grace)?,
        upload_expiry: secs(&g.upload_expiry)?.unwrap_or(0),
    })
}

/// The pull-through cache's upstreams; `config::load` has checked every entry.
fn caches(config: &Config, max_blob: Option<u64>) -> anyhow::Result<crate::core::cache::Caches> {
    use crate::auth::pattern::Pattern;
    let mut list = Vec::new();
    for u in &config.upstreams {
        let password = u
            .password()
            .map_err(|e| anyhow::anyhow!("upstream {}: {e}", u.name))?;
        list.push(crate::core::cache::Settings {
            name: u.name.clone(),
            url: u.base_url(),
            credentials: u.username.clone().zip(password),
            registries: u.registry_names(),
            mirror_hosts: u.mirror_hosts.iter().map(|h| h.to_lowercase()).collect(),
            repositories: u
                .repositories
                .iter()
                .map(|p| Pattern::parse(p))
                .collect::<Result<_, _>>()
                .map_err(|e| anyhow::anyhow!("upstream {}: {e}", u.name))?,
            docker_hub: u.is_docker_hub(),
            check_interval: u
                .check_interval
                .seconds()
                .map_err(|e| anyhow::anyhow!(e))?
                .unwrap_or(0) as i64,
            max_concurrent: u.max_concurrent as usize,
            max_blob,
            eviction: crate::core::cache::evict::Limits {
                quota: u
                    .quota
                    .as_ref()
                    .map(|q| q.bytes())
                    .transpose()
                    .map_err(|e| anyhow::anyhow!(e))?,
                unpulled_expiry: u
                    .unpulled_expiry
                    .as_ref()
                    .map(|s| s.seconds())
                    .transpose()
                    .map_err(|e| anyhow::anyhow!(e))?
                    .flatten()
                    .map(|s| s as i64),
                keep_pulled_within: u
                    .keep_pulled_within
                    .seconds()
                    .map_err(|e| anyhow::anyhow!(e))?
                    .unwrap_or(0) as i64,
            },
        });
    }
    crate::core::cache::Caches::new(list).map_err(|e| anyhow::anyhow!(e))
}

fn blob_sync(durability: config::Durability) -> storage::Sync {
    match durability {
        config::Durability::PowerLoss => storage::Sync::Always,
        config::Durability::ProcessCrash => storage::Sync::Never,
    }
}

/// Say what start-up had to make private (group or other permissions taken away).
fn warn_repaired(repaired: &[std::path::PathBuf]) {
    if let Some(first) = repaired.first() {
        tracing::warn!(
            count = repaired.len(),
            first = %first.display(),
            "the data directory was readable by other accounts; made it owner-only"
        );
    }
}

impl AppState {
    /// Where a request comes from and how its client reaches berth.
    pub fn origin<B>(&self, req: &axum::http::Request<B>) -> Origin {
        origin::origin(req, &self.proxies, self.config.tls.mode != TlsMode::Off)
    }

    /// `origin`, from a request's parts.
    pub fn origin_of(&self, parts: &axum::http::request::Parts) -> Origin {
        let tls = self.config.tls.mode != TlsMode::Off;
        origin::of(
            &parts.headers,
            &parts.uri,
            &parts.extensions,
            &self.proxies,
            tls,
        )
    }
}
