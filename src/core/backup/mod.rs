//! Online backups, restores and checks of a data directory.
//!
//! A backup is the database at one instant (SQLite's online backup, one read transaction,
//! while the server goes on writing) plus every blob that copy records, each re-hashed on the
//! way. Into a folder it is incremental: blobs already there with the right size are not
//! copied again, blobs no longer recorded are removed, and the new database replaces the old
//! one by rename only once every blob it records is in place, so the folder always holds a
//! complete backup, the previous one until the new one is whole. As a tar stream it goes to
//! any writer (stdout).
//!
//! ```text
//! <backup>/berth.db                        the database copy (one file, no WAL)
//! <backup>/blobs/<alg>/<hex[0..2]>/<hex>   the blobs, as in a data directory
//! <backup>/backup.json                     when, what version, how much
//! ```
//!
//! A restore builds a new data directory from either form and verifies every blob against its
//! digest; `fsck` checks a data directory in place.

pub mod fsck;
mod restore;
mod tarball;

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};

pub use restore::{RestoreReport, RestoreSource, restore};

use super::{Error, Result};
use crate::db::backup as q;
use crate::oci::Digest;
use crate::storage::{BlobStore, DataDir, FsStore, StoreError, Sync, secure};

/// Where a backup goes.
pub enum Destination {
    /// A folder: incremental against the backup already in it.
    Dir(PathBuf),
    /// A tar stream.
    Tar(Box<dyn Write + Send>),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupReport {
    pub destination: String,
    pub created_at: i64,
    pub berth_version: String,
    pub repositories: u64,
    pub manifests: u64,
    pub tags: u64,
    /// Blobs the backup holds, and their bytes.
    pub blobs: u64,
    pub bytes: u64,
    /// Of those, copied by this run (the others were in the folder already).
    pub blobs_copied: u64,
    pub bytes_copied: u64,
    /// Blobs in the folder no longer recorded, removed.
    pub blobs_removed: u64,
    /// Blobs collected by the server between the snapshot and their copy: nothing used them.
    pub collected_meanwhile: u64,
    pub duration_ms: u64,
}

impl BackupReport {
    pub fn summary(&self) -> String {
        if self.destination == TAR {
            return format!(
                "backed up {} repositories, {} manifests, {} tags and {} blobs ({}) to a tar stream",
                self.repositories,
                self.manifests,
                self.tags,
                self.blobs,
                super::gc::human_bytes(self.bytes),
            );
        }
        format!(
            "backed up {} repositories, {} manifests, {} tags and {} blobs ({}) to {}: {} blobs ({}) copied, the rest already there{}",
            self.repositories,
            self.manifests,
            self.tags,
            self.blobs,
            super::gc::human_bytes(self.bytes),
            self.destination,
            self.blobs_copied,
            super::gc::human_bytes(self.bytes_copied),
            if self.blobs_removed > 0 {
                format!("; {} blobs no longer recorded removed", self.blobs_removed)
            } else {
                String::new()
            }
        )
    }
}

/// The name of the database copy in a backup.
const DATABASE: &str = "berth.db";
/// The summary written beside it.
const SUMMARY: &str = "backup.json";
/// The destination of a tar backup, as reported.
const TAR: &str = "a tar stream";
/// Where a folder backup keeps its work in progress.
const PARTIAL: &str = "partial";

/// Run blocking work (SQLite, file system walks) off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?
}

fn parse_digest(d: &str) -> Result<Digest> {
    Digest::parse(d).map_err(|_| Error::Backup(format!("the database records a blob named {d:?}")))
}

/// Back up the data directory `data`, whose blobs are in `store`, to `dest`.
pub async fn backup(
    data: &DataDir,
    store: Arc<dyn BlobStore>,
    dest: Destination,
    now: i64,
) -> Result<BackupReport> {
    let started = Instant::now();
    let live = data.database();
    if !live.is_file() {
        return Err(Error::Backup(format!(
            "no berth database at {} (is --data-dir right?)",
            live.display()
        )));
    }
    let mut report = BackupReport {
        created_at: now,
        berth_version: env!("CARGO_PKG_VERSION").to_string(),
        ..BackupReport::default()
    };
    match dest {
        Destination::Dir(dir) => {
            report.destination = dir.display().to_string();
            to_dir(&live, store.as_ref(), &dir, &mut report).await?;
        }
        Destination::Tar(out) => {
            report.destination = TAR.into();
            // The snapshot is made beside the data it copies (it may be large), under a name
            // that is no upload's, and removed whatever happens.
            let mut raw = [0u8; 8];
            getrandom::fill(&mut raw).map_err(|e| std::io::Error::other(e.to_string()))?;
            let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            for stale in data.stale_backup_snapshots(24 * 3600) {
                let _ = std::fs::remove_file(stale);
            }
            let snap = data.backup_snapshot(&hex);
            let result = to_tar(&live, store.as_ref(), &snap, out, &mut report).await;
            let _ = std::fs::remove_file(&snap);
            result?;
        }
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Take the snapshot and list its blobs.
async fn snapshot(live: &Path, snap: &Path) -> Result<Vec<(String, u64)>> {
    let (live, snap) = (live.to_path_buf(), snap.to_path_buf());
    blocking(move || {
        match std::fs::remove_file(&snap) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        q::snapshot(&live, &snap)?;
        Ok(q::blobs(&q::open_private(&snap)?)?)
    })
    .await
}

/// A blob recorded in the snapshot but gone from the store: fine when the server collected it
/// meanwhile (`q::forget_collected` drops it from the snapshot), else damage.
async fn vanished(live: &Path, snap: &Path, d: &str) -> Result<()> {
    let (live, snap, d) = (live.to_path_buf(), snap.to_path_buf(), d.to_string());
    blocking(move || {
        let live = q::open_read_only(&live)?;
        match q::forget_collected(&mut q::open_private(&snap)?, &live, &d)? {
            None => Ok(()),
            Some(why) => Err(Error::Backup(format!(
                "blob {d} is missing from the data directory, but {why}; run `berth fsck`"
            ))),
        }
    })
    .await
}

/// Drop upload sessions from the snapshot, and count what it holds.
async fn finish_snapshot(snap: &Path, report: &mut BackupReport) -> Result<()> {
    let snap = snap.to_path_buf();
    let (repos, manifests, tags) = blocking(move || {
        let c = q::open_private(&snap)?;
        q::drop_uploads(&c)?;
        Ok(q::counts(&c)?)
    })
    .await?;
    report.repositories = repos;
    report.manifests = manifests;
    report.tags = tags;
    Ok(())
}

fn mismatch(d: &Digest, actual: &Digest, len: u64, size: u64) -> Error {
    Error::Backup(format!(
        "blob {d} in the data directory reads as {len} bytes with digest {actual} (recorded: {size} bytes); run `berth fsck --deep`"
    ))
}

async fn to_dir(
    live: &Path,
    store: &dyn BlobStore,
    dir: &Path,
    report: &mut BackupReport,
) -> Result<()> {
    let partial = dir.join(PARTIAL);
    secure::create_dir(&partial)?;
    let staging = crate::storage::Staging::open(&partial, Sync::Always)?;
    staging.sweep_adopted().await?;
    let target = FsStore::open(&dir.join("blobs"), Sync::Always)?;
    let snap = partial.join(DATABASE);
    let rows = snapshot(live, &snap).await?;
    let mut kept: HashSet<Digest> = HashSet::with_capacity(rows.len());
    for (d, size) in &rows {
        let digest = parse_digest(d)?;
        match target.stat(&digest).await {
            Ok(s) if s == *size => {
                kept.insert(digest);
                report.blobs += 1;
                report.bytes += size;
                continue;
            }
            // A damaged copy from an earlier run: commit keeps a file already in place.
            Ok(_) => match target.delete(&digest).await {
                Ok(_) | Err(StoreError::NotFound) => {}
                Err(StoreError::Io(e)) => return Err(e.into()),
            },
            Err(_) => {}
        }
        let stream = match store.open(&digest, 0, *size).await {
            Ok(s) => s,
            Err(StoreError::NotFound) => {
                vanished(live, &snap, d).await?;
                report.collected_meanwhile += 1;
                continue;
            }
            Err(StoreError::Io(e)) => return Err(e.into()),
        };
        let copy = staging.receive(stream, digest.algorithm()).await?;
        let actual = copy.progress.hasher.clone().finish();
        if actual != digest || copy.progress.len != *size {
            let len = copy.progress.len;
            copy.discard().await;
            return Err(mismatch(&digest, &actual, len, *size));
        }
        target.commit(copy.into_staged(), &digest).await?;
        report.blobs += 1;
        report.bytes += size;
        report.blobs_copied += 1;
        report.bytes_copied += size;
        kept.insert(digest);
    }
    finish_snapshot(&snap, report).await?;
    // Every blob it records is in place: now the copy becomes the backup.
    let (from, to, folder) = (snap.clone(), dir.join(DATABASE), dir.to_path_buf());
    blocking(move || {
        std::fs::File::open(&from)?.sync_all()?;
        std::fs::rename(&from, &to)?;
        std::fs::File::open(&folder)?.sync_all()?;
        Ok(())
    })
    .await?;
    // Blobs of an earlier backup that this one does not record.
    let mut after: Option<Digest> = None;
    loop {
        let page = target.list(after.as_ref(), 1000).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.digest.clone());
        for listed in page {
            if !kept.contains(&listed.digest) {
                match target.delete(&listed.digest).await {
                    Ok(_) | Err(StoreError::NotFound) => report.blobs_removed += 1,
                    Err(StoreError::Io(e)) => return Err(e.into()),
                }
            }
        }
    }
    let summary = serde_json::to_vec_pretty(&report).map_err(std::io::Error::other)?;
    let path = dir.join(SUMMARY);
    blocking(move || {
        let tmp = path.with_extension("json.partial");
        let mut f = secure::file_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(&summary)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    })
    .await?;
    let _ = std::fs::remove_dir_all(&partial);
    Ok(())
}

async fn to_tar(
    live: &Path,
    store: &dyn BlobStore,
    snap: &Path,
    mut out: Box<dyn Write + Send>,
    report: &mut BackupReport,
) -> Result<()> {
    let rows = snapshot(live, snap).await?;
    for (d, size) in &rows {
        let digest = parse_digest(d)?;
        let mut stream = match store.open(&digest, 0, *size).await {
            Ok(s) => s,
            Err(StoreError::NotFound) => {
                vanished(live, snap, d).await?;
                report.collected_meanwhile += 1;
                continue;
            }
            Err(StoreError::Io(e)) => return Err(e.into()),
        };
        out.write_all(&tarball::header(
            &tarball::blob_path(&digest),
            *size,
            report.created_at,
        )?)?;
        let mut hasher = crate::oci::Hasher::new(digest.algorithm());
        let mut len = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            len += chunk.len() as u64;
            if len > *size {
                break;
            }
            hasher.update(&chunk);
            out.write_all(&chunk)?;
        }
        let actual = hasher.finish();
        if actual != digest || len != *size {
            // The stream is cut short here; a reader of it fails on the truncated entry.
            return Err(mismatch(&digest, &actual, len, *size));
        }
        out.write_all(&tarball::padding(*size))?;
        report.blobs += 1;
        report.bytes += size;
        report.blobs_copied += 1;
        report.bytes_copied += size;
    }
    finish_snapshot(snap, report).await?;
    let mut db = std::fs::File::open(snap)?;
    let db_len = db.metadata()?.len();
    out.write_all(&tarball::header(DATABASE, db_len, report.created_at)?)?;
    let copied = std::io::copy(&mut db, &mut out)?;
    if copied != db_len {
        return Err(Error::Backup(
            "the database copy changed while it was written".into(),
        ));
    }
    out.write_all(&tarball::padding(db_len))?;
    let summary = serde_json::to_vec_pretty(&report).map_err(std::io::Error::other)?;
    out.write_all(&tarball::header(
        SUMMARY,
        summary.len() as u64,
        report.created_at,
    )?)?;
    out.write_all(&summary)?;
    out.write_all(&tarball::padding(summary.len() as u64))?;
    out.write_all(&tarball::end())?;
    out.flush()?;
    Ok(())
}
