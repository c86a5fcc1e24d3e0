//! Application state shared by every request.

use std::sync::Arc;

use crate::auth::Auth;
use crate::clock::Clock;
use crate::config::{self, Config, Proxies, TlsMode};
use crate::core::Registry;
use crate::db::{self, Db};
use crate::http::origin::{self, Origin};
use crate::storage::{self, Store};

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub registry: Registry,
    pub auth: Auth,
    proxies: Arc<Proxies>,
}

impl AppState {
    /// Open the data directory: database (migrated) and blob store. Blocking; start-up only.
    pub fn open(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<AppState> {
        use anyhow::Context as _;
        let repaired = storage::secure::secure_data_dir(&config.data_dir).with_context(|| {
            format!(
                "cannot secure the data directory {}",
                config.data_dir.display()
            )
        })?;
        warn_repaired(&repaired);
        let (db_sync, blob_sync) = match config.durability {
            config::Durability::PowerLoss => (db::Durability::PowerLoss, storage::Sync::Always),
            config::Durability::ProcessCrash => {
                (db::Durability::ProcessCrash, storage::Sync::Never)
            }
        };
        let db_path = config.data_dir.join("berth.db");
        // SQLite gives its -wal and -shm files the mode of the database file: make that 0600
        // before SQLite creates it (an empty file is an empty database).
        storage::secure::file_options()
            .append(true)
            .create(true)
            .open(&db_path)
            .with_context(|| format!("cannot create database {}", db_path.display()))?;
        let db = Db::open(&db_path, db_sync)
            .with_context(|| format!("cannot open database {}", db_path.display()))?;
        let store = Store::open(&config.data_dir, blob_sync)
            .with_context(|| format!("cannot open blob store in {}", config.data_dir.display()))?;
        let auth =
            Auth::open(db.clone(), clock.clone()).context("cannot load the token signing key")?;
        let proxies = config.proxies().map_err(|e| anyhow::anyhow!(e))?;
        Ok(AppState {
            proxies: Arc::new(proxies),
            config: Arc::new(config),
            registry: Registry::new(db, store, clock),
            auth,
        })
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
}
