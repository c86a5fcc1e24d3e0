//! Rebuild a data directory from a backup (a folder or a tar stream), verifying every blob
//! against its digest and the size the database records. A restore that finds anything
//! wrong removes what it built and names the problems: a half-restored data directory is
//! never left to be served.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{DATABASE, SUMMARY, blocking, parse_digest, tarball};
use crate::core::{Error, Result};
use crate::db::backup as q;
use crate::oci::Digest;
use crate::storage::{BlobStore, DataDir, FsStore, StoreError, Sync, secure};

pub enum RestoreSource {
    Dir(PathBuf),
    Tar(Box<dyn Read + Send>),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreReport {
    pub data_dir: String,
    pub repositories: u64,
    pub manifests: u64,
    pub tags: u64,
    /// Blobs restored and verified, and their bytes.
    pub blobs: u64,
    pub bytes: u64,
    pub duration_ms: u64,
}

impl RestoreReport {
    pub fn summary(&self) -> String {
        format!(
            "restored {} repositories, {} manifests, {} tags and {} blobs ({}, every one verified) into {}",
            self.repositories,
            self.manifests,
            self.tags,
            self.blobs,
            crate::core::gc::human_bytes(self.bytes),
            self.data_dir
        )
    }
}

/// The most problems named in an error; the rest are counted.
const NAMED: usize = 10;

/// Restore `src` into the data directory `data`, which must not exist or be empty.
pub async fn restore(src: RestoreSource, data: &DataDir) -> Result<RestoreReport> {
    let started = Instant::now();
    let root = data.root().to_path_buf();
    let existed = match std::fs::read_dir(&root) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::Backup(format!(
                    "{} is not empty: restore into a new data directory",
                    root.display()
                )));
            }
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(e.into()),
    };
    // No server may start on it meanwhile.
    let lock = secure::lock_data_dir(data).map_err(|e| Error::Backup(e.to_string()))?;
    let result = build(src, data).await;
    match result {
        Ok(mut report) => {
            std::fs::rename(data.restoring_database(), data.database())?;
            std::fs::File::open(&root)?.sync_all()?;
            drop(lock);
            report.data_dir = root.display().to_string();
            report.duration_ms = started.elapsed().as_millis() as u64;
            Ok(report)
        }
        Err(e) => {
            // Remove what this restore made, and nothing else.
            let _ = std::fs::remove_dir_all(data.blobs());
            let _ = std::fs::remove_dir_all(data.uploads());
            let _ = std::fs::remove_file(data.restoring_database());
            drop(lock);
            let _ = std::fs::remove_file(data.lock_file());
            if !existed {
                let _ = std::fs::remove_dir(&root);
            }
            Err(e)
        }
    }
}

async fn build(src: RestoreSource, data: &DataDir) -> Result<RestoreReport> {
    let staging = crate::storage::Staging::open(&data.uploads(), Sync::Always)?;
    let store = FsStore::open(&data.blobs(), Sync::Always)?;
    let mut problems = Vec::new();
    let mut report = RestoreReport::default();
    match src {
        RestoreSource::Dir(dir) => {
            let db = dir.join(DATABASE);
            if !db.is_file() {
                return Err(Error::Backup(format!(
                    "{} is not a berth backup (no {DATABASE} in it)",
                    dir.display()
                )));
            }
            let to = data.restoring_database();
            blocking(move || {
                let mut from = std::fs::File::open(&db)?;
                let mut out = secure::file_options()
                    .write(true)
                    .create_new(true)
                    .open(&to)?;
                std::io::copy(&mut from, &mut out)?;
                out.sync_all()?;
                Ok(())
            })
            .await?;
            let rows = rows(data).await?;
            // The backup's blobs are read through a store of their own: the same layout.
            let from = FsStore::open(&dir.join("blobs"), Sync::Never)?;
            for (d, size) in rows {
                let digest = parse_digest(&d)?;
                let stream = match from.open(&digest, 0, size).await {
                    Ok(s) => s,
                    Err(StoreError::NotFound) => {
                        problems.push(format!("blob {d} is missing from the backup"));
                        continue;
                    }
                    Err(StoreError::Io(e)) => return Err(e.into()),
                };
                let copy = staging.receive(stream, digest.algorithm()).await?;
                let actual = copy.progress.hasher.clone().finish();
                if actual != digest || copy.progress.len != size {
                    problems.push(format!(
                        "blob {d} in the backup reads as {} bytes with digest {actual}",
                        copy.progress.len
                    ));
                    copy.discard().await;
                    continue;
                }
                store.commit(copy.into_staged(), &digest).await?;
                report.blobs += 1;
                report.bytes += size;
            }
        }
        RestoreSource::Tar(reader) => {
            let (staging, store2, db) = (staging.clone(), store.clone(), data.restoring_database());
            let handle = tokio::runtime::Handle::current();
            let (found, mut tar_problems) =
                blocking(move || untar(reader, &staging, &store2, &db, &handle)).await?;
            problems.append(&mut tar_problems);
            if !data.restoring_database().is_file() {
                return Err(Error::Backup(format!(
                    "the tar stream is not a berth backup (no {DATABASE} in it)"
                )));
            }
            let rows = rows(data).await?;
            let recorded: HashMap<Digest, u64> = rows
                .iter()
                .map(|(d, s)| Ok((parse_digest(d)?, *s)))
                .collect::<Result<_>>()?;
            for (d, size) in &recorded {
                match found.get(d) {
                    Some(len) if len == size => {
                        report.blobs += 1;
                        report.bytes += size;
                    }
                    Some(len) => problems.push(format!(
                        "blob {d} is {len} bytes in the backup, recorded as {size}"
                    )),
                    None => problems.push(format!("blob {d} is missing from the backup")),
                }
            }
            // Blobs in the stream that the database does not record: not part of this data.
            for d in found.keys().filter(|d| !recorded.contains_key(*d)) {
                let _ = store.delete(d).await;
            }
        }
    }
    if !problems.is_empty() {
        let n = problems.len();
        problems.sort();
        problems.truncate(NAMED);
        return Err(Error::Backup(format!(
            "the backup is damaged, nothing was restored: {}{}",
            problems.join("; "),
            if n > NAMED {
                format!("; and {} more", n - NAMED)
            } else {
                String::new()
            }
        )));
    }
    let db = data.restoring_database();
    let (repos, manifests, tags) = blocking(move || {
        let c = q::open_private(&db)?;
        let problems = q::problems(&c)?;
        if let Some(first) = problems.first() {
            return Err(Error::Backup(format!(
                "the backup's database is damaged, nothing was restored: {first}"
            )));
        }
        Ok(q::counts(&c)?)
    })
    .await?;
    report.repositories = repos;
    report.manifests = manifests;
    report.tags = tags;
    Ok(report)
}

async fn rows(data: &DataDir) -> Result<Vec<(String, u64)>> {
    let db = data.restoring_database();
    blocking(move || Ok(q::blobs(&q::open_private(&db)?)?)).await
}

/// Read a tar stream: the database to `db`, each blob verified against the digest its name
/// gives and committed. Returns the blobs found with their sizes, and the problems.
fn untar(
    reader: Box<dyn Read + Send>,
    staging: &crate::storage::Staging,
    store: &FsStore,
    db: &std::path::Path,
    handle: &tokio::runtime::Handle,
) -> Result<(HashMap<Digest, u64>, Vec<String>)> {
    let mut archive = tar::Archive::new(reader);
    let mut found = HashMap::new();
    let mut problems = Vec::new();
    let entries = archive
        .entries()
        .map_err(|e| Error::Backup(format!("not a tar stream: {e}")))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| Error::Backup(format!("the tar stream is cut or damaged: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| Error::Backup(format!("an entry of the tar stream has a bad name: {e}")))?
            .to_string_lossy()
            .to_string();
        if !entry.header().entry_type().is_file() {
            continue;
        }
        if path == DATABASE {
            let mut out = secure::file_options()
                .write(true)
                .create_new(true)
                .open(db)?;
            std::io::copy(&mut entry, &mut out)
                .map_err(|e| Error::Backup(format!("the tar stream is cut or damaged: {e}")))?;
            out.sync_all()?;
        } else if path == SUMMARY {
            continue;
        } else if let Some(d) = tarball::parse_blob_path(&path) {
            let copy = staging
                .receive_blocking(&mut entry, d.algorithm())
                .map_err(|e| Error::Backup(format!("the tar stream is cut or damaged: {e}")))?;
            let actual = copy.progress.hasher.clone().finish();
            if actual != d {
                problems.push(format!("blob {d} in the backup has digest {actual}"));
                handle.block_on(copy.discard());
                continue;
            }
            let len = copy.progress.len;
            handle.block_on(store.commit(copy.into_staged(), &d))?;
            found.insert(d, len);
        } else {
            return Err(Error::Backup(format!(
                "the tar stream holds {path:?}, which is not part of a berth backup"
            )));
        }
    }
    Ok((found, problems))
}
