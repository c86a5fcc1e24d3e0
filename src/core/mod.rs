//! Business rules of the registry: uploads, blobs, manifests, tags and referrers.
//!
//! Layering: `registry` (HTTP), `ui` and `cli` call `core`; `core` calls `db` and `storage`
//! and speaks in `oci` types; never the reverse. Handlers never open a transaction: every
//! change that touches several rows is one `Db::write` here.

pub mod backup;
mod blobs;
pub mod browse;
pub mod cache;
mod error;
pub mod gc;
pub mod import;
mod listing;
mod manifests;
mod pulls;
pub mod retention;
mod uploads;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use blobs::{BlobRead, ByteStream};
pub use error::Error;
pub use listing::{Page, Referrer};
pub use manifests::{ManifestRead, Pushed};
pub use uploads::{Uploader, WriteStatus};

use crate::clock::Clock;
use crate::db::Db;
use crate::oci::UploadId;
use crate::storage::{BlobStore, Progress, Staging};

pub type Result<T> = std::result::Result<T, Error>;

/// Stored run reports, `(id, JSON)` rows newest first, parsed; `set_id` gives each its row's
/// id. A row that no longer parses (written by another version) is left out.
fn parse_runs<T: serde::de::DeserializeOwned>(
    rows: Vec<(i64, String)>,
    set_id: impl Fn(&mut T, i64),
) -> Vec<T> {
    rows.into_iter()
        .filter_map(|(id, json)| {
            let mut r: T = serde_json::from_str(&json).ok()?;
            set_id(&mut r, id);
            Some(r)
        })
        .collect()
}

/// The registry service shared by every request.
#[derive(Clone)]
pub struct Registry {
    db: Db,
    /// Finished blobs.
    store: Arc<dyn BlobStore>,
    /// Uploads in progress.
    staging: Staging,
    clock: Arc<dyn Clock>,
    sessions: Arc<Sessions>,
    pulls: Arc<pulls::PullLog>,
    gc: Arc<gc::Gc>,
    uploads: UploadLimits,
    /// Held by the import running, if any.
    importing: Arc<tokio::sync::Mutex<()>>,
    /// The last readiness probe, with when it ran.
    probed: Arc<tokio::sync::Mutex<Option<(i64, Probed)>>>,
    /// The pull-through cache's upstreams, and its downloads in progress.
    caches: Arc<cache::Caches>,
    fills: Arc<cache::Fills>,
}

/// What a readiness probe found: each write, or why it failed.
#[derive(Clone, Debug)]
pub struct Probed {
    pub db: std::result::Result<(), String>,
    pub files: std::result::Result<(), String>,
}

/// What the registry needs from the configuration.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    pub gc: gc::Settings,
    pub uploads: UploadLimits,
}

/// Bounds on uploads.
#[derive(Clone, Copy, Debug)]
pub struct UploadLimits {
    /// Free bytes the file system keeps: below, new uploads are refused.
    pub min_free_space: u64,
    /// Open sessions per credential.
    pub max_sessions: u64,
}

impl Default for UploadLimits {
    fn default() -> Self {
        UploadLimits {
            min_free_space: 1 << 30,
            max_sessions: 1000,
        }
    }
}

/// In-memory state of upload sessions, one lock each so concurrent PATCHes to the same
/// session are serialised. `None` means "not known in memory": rebuilt from the file.
type Slot = Arc<tokio::sync::Mutex<Option<Progress>>>;

#[derive(Default)]
struct Sessions(Mutex<HashMap<UploadId, Slot>>);

impl Sessions {
    fn slot(&self, id: &UploadId) -> Slot {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(id.clone()).or_default().clone()
    }

    fn forget(&self, id: &UploadId) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

impl Registry {
    pub fn new(
        db: Db,
        store: Arc<dyn BlobStore>,
        staging: Staging,
        clock: Arc<dyn Clock>,
        options: Options,
    ) -> Registry {
        Registry {
            db,
            store,
            staging,
            clock,
            sessions: Arc::default(),
            pulls: Arc::default(),
            gc: Arc::new(gc::Gc::new(options.gc)),
            uploads: options.uploads,
            importing: Arc::default(),
            probed: Arc::default(),
            caches: Arc::default(),
            fills: Arc::default(),
        }
    }

    /// Serve these upstreams as a pull-through cache.
    pub fn with_caches(mut self, caches: cache::Caches) -> Registry {
        self.caches = Arc::new(caches);
        self
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<()> {
        self.db
            .read(|c| crate::db::settings::ping(c).map_err(Error::from))
            .await
    }

    /// Readiness: whether the database takes a write, and whether the upload folder takes a
    /// file (a read-only or full file system fails here before a push does). One probe at a
    /// time, and its answer serves the probes of the next two seconds: asking often costs
    /// nothing more.
    pub async fn probe_writes(&self) -> Probed {
        let mut last = self.probed.lock().await;
        let now = self.now();
        if let Some((at, probed)) = &*last
            && now - at < 2
        {
            return probed.clone();
        }
        let db = self
            .db
            .write(move |tx| crate::db::settings::probe_write(tx, now).map_err(Error::from))
            .await
            .map_err(|e| e.to_string());
        let files = self.staging.probe().await.map_err(|e| e.to_string());
        let probed = Probed { db, files };
        *last = Some((now, probed.clone()));
        probed
    }

    /// Blobs recorded, their bytes, and upload sessions open.
    pub async fn stats(&self) -> Result<(u64, u64, u64)> {
        self.db
            .read(|c| crate::db::settings::stats(c).map_err(Error::from))
            .await
    }

    /// Write the pull times gathered since the last flush (called periodically and at exit).
    pub async fn flush_pulls(&self) -> Result<()> {
        self.pulls.flush(&self.db).await
    }
}
