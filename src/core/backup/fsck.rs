//! `berth fsck`: is a data directory sound? Every recorded blob present with its recorded
//! size (and, deep, its digest), no file without a record, no reference to something that is
//! not there, and SQLite's own check. Safe beside a running server: a record or file that
//! changes during the check is looked up again before it counts as a problem.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};

use super::{blocking, parse_digest};
use crate::core::Result;
use crate::db::backup as q;
use crate::oci::Digest;
use crate::storage::{BlobStore, DataDir, StoreError};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsckReport {
    pub deep: bool,
    pub repositories: u64,
    pub manifests: u64,
    pub tags: u64,
    /// Blobs checked, and their bytes.
    pub blobs: u64,
    pub bytes: u64,
    pub problems: Vec<Problem>,
    pub duration_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// `missing`, `size`, `digest`, `orphan` or `database`.
    pub kind: String,
    /// A digest, or what in the database.
    pub what: String,
    pub detail: String,
}

impl FsckReport {
    pub fn is_sound(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn summary(&self) -> String {
        let checked = format!(
            "{} repositories, {} manifests, {} tags, {} blobs ({}){}",
            self.repositories,
            self.manifests,
            self.tags,
            self.blobs,
            crate::core::gc::human_bytes(self.bytes),
            if self.deep {
                ", every blob re-hashed"
            } else {
                ""
            }
        );
        if self.is_sound() {
            format!("sound: {checked}")
        } else {
            format!("{} problems in {checked}", self.problems.len())
        }
    }
}

/// Check the data directory `data`, whose blobs are in `store`.
pub async fn fsck(data: &DataDir, store: Arc<dyn BlobStore>, deep: bool) -> Result<FsckReport> {
    let started = Instant::now();
    let db = data.database();
    if !db.is_file() {
        return Err(crate::core::Error::Backup(format!(
            "no berth database at {} (is --data-dir right?)",
            db.display()
        )));
    }
    let mut report = FsckReport {
        deep,
        ..FsckReport::default()
    };
    let path = db.clone();
    let (inside, rows, counts) = blocking(move || {
        let c = q::open_read_only(&path)?;
        Ok((q::problems(&c)?, q::blobs(&c)?, q::counts(&c)?))
    })
    .await?;
    (report.repositories, report.manifests, report.tags) = counts;
    for detail in inside {
        report.problems.push(Problem {
            kind: "database".into(),
            what: "berth.db".into(),
            detail,
        });
    }
    let mut recorded: HashSet<Digest> = HashSet::with_capacity(rows.len());
    for (d, size) in rows {
        let digest = parse_digest(&d)?;
        report.blobs += 1;
        report.bytes += size;
        if let Some((kind, detail)) = check_blob(store.as_ref(), &digest, size, deep).await? {
            // Collected by a running server since the rows were read: not a problem.
            if still_recorded(&db, &d).await? {
                report.problems.push(Problem {
                    kind: kind.into(),
                    what: d.clone(),
                    detail,
                });
            }
        }
        recorded.insert(digest);
    }
    let mut after: Option<Digest> = None;
    loop {
        let page = store.list(after.as_ref(), 1000).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.digest.clone());
        for listed in page {
            if !recorded.contains(&listed.digest)
                && !still_recorded(&db, &listed.digest.to_string()).await?
            {
                report.problems.push(Problem {
                    kind: "orphan".into(),
                    what: listed.digest.to_string(),
                    detail: format!(
                        "a file of {} bytes with no record (garbage collection removes such files after the grace)",
                        listed.size
                    ),
                });
            }
        }
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

async fn still_recorded(db: &std::path::Path, d: &str) -> Result<bool> {
    let (db, d) = (db.to_path_buf(), d.to_string());
    blocking(move || Ok(q::has_blob(&q::open_read_only(&db)?, &d)?)).await
}

/// What is wrong with one blob, if anything.
async fn check_blob(
    store: &dyn BlobStore,
    d: &Digest,
    size: u64,
    deep: bool,
) -> Result<Option<(&'static str, String)>> {
    let actual = match store.stat(d).await {
        Ok(n) => n,
        Err(StoreError::NotFound) => {
            return Ok(Some((
                "missing",
                "recorded, but its file is missing".into(),
            )));
        }
        Err(StoreError::Io(e)) => return Err(e.into()),
    };
    if actual != size {
        return Ok(Some((
            "size",
            format!("{actual} bytes on disk, {size} recorded (truncated or overwritten)"),
        )));
    }
    if !deep {
        return Ok(None);
    }
    let mut stream = match store.open(d, 0, size).await {
        Ok(s) => s,
        Err(StoreError::NotFound) => {
            return Ok(Some((
                "missing",
                "recorded, but its file is missing".into(),
            )));
        }
        Err(StoreError::Io(e)) => return Err(e.into()),
    };
    let mut hasher = crate::oci::Hasher::new(d.algorithm());
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => hasher.update(&c),
            Err(e) => return Ok(Some(("digest", format!("cannot be read: {e}")))),
        }
    }
    let got = hasher.finish();
    Ok((&got != d).then(|| ("digest", format!("its bytes have digest {got}"))))
}
