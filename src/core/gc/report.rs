//! What a collection removed (or, in a dry run, would remove), as stored and printed.

use serde::{Deserialize, Serialize};

use super::plan::FoundFile;
use super::{Names, Plan, Trigger};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The stored run's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    pub trigger: String,
    pub dry_run: bool,
    pub started_at: i64,
    pub finished_at: i64,
    pub duration_ms: u64,
    /// Untagged manifests removed.
    pub manifests: Vec<ManifestItem>,
    /// Manifests of the pull-through cache evicted (quota or expiry) before the collection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evicted: Vec<ManifestItem>,
    /// Repository links to blobs ended (nothing in the repository used them).
    pub links: Vec<LinkItem>,
    /// Blobs removed, with the bytes their files held.
    pub blobs: Vec<BlobItem>,
    /// Upload sessions expired, with the bytes their files held.
    pub uploads: Vec<UploadItem>,
    /// Files with no database row (left by a crash), removed.
    pub orphan_files: Vec<FileItem>,
    /// Bytes of files removed (in a dry run: that would be).
    pub bytes_freed: u64,
    /// Bytes of blobs nothing uses that are kept until their grace ends.
    pub bytes_waiting: u64,
    pub errors: Vec<String>,
    /// The run stopped early because the server was shutting down.
    #[serde(default)]
    pub interrupted: bool,
    /// Items left out of the stored copy of a very large report.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub items_not_stored: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ManifestItem {
    pub repo: String,
    pub digest: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LinkItem {
    pub repo: String,
    pub digest: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlobItem {
    pub digest: String,
    pub size: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UploadItem {
    pub repo: String,
    pub id: String,
    pub size: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileItem {
    /// `blob` or `upload`.
    pub kind: String,
    pub name: String,
    pub size: u64,
}

impl FileItem {
    pub(super) fn blob(name: &str, size: u64) -> FileItem {
        FileItem {
            kind: "blob".into(),
            name: name.into(),
            size,
        }
    }

    pub(super) fn upload(name: &str, size: u64) -> FileItem {
        FileItem {
            kind: "upload".into(),
            name: name.into(),
            size,
        }
    }
}

/// Items kept per list in the stored copy of a report (the returned one has them all).
const STORED_ITEMS: usize = 10_000;

impl Report {
    pub(super) fn new(trigger: Trigger, dry_run: bool, now: i64) -> Report {
        Report {
            trigger: trigger.as_str().into(),
            dry_run,
            started_at: now,
            finished_at: now,
            ..Report::default()
        }
    }

    /// Fill a dry run's report from the plan: what a real run would remove.
    pub(super) fn planned(
        &mut self,
        plan: &Plan,
        names: &Names,
        blob_files: &[FoundFile],
        upload_files: &[FoundFile],
    ) {
        for round in &plan.manifest_rounds {
            self.manifests
                .extend(round.iter().map(|id| names.manifest(*id)));
        }
        self.links = plan
            .links
            .iter()
            .map(|(repo, digest)| LinkItem {
                repo: names.repo(*repo),
                digest: digest.clone(),
            })
            .collect();
        // The size a run reports is that of the file it removes (none for a row whose file
        // is missing). Blob files come in digest order.
        self.blobs = plan
            .blobs
            .iter()
            .map(|(digest, _)| BlobItem {
                digest: digest.clone(),
                size: blob_files
                    .binary_search_by(|f| f.name.as_str().cmp(digest))
                    .map_or(0, |i| blob_files[i].size),
            })
            .collect();
        let upload_sizes: std::collections::HashMap<&str, u64> = upload_files
            .iter()
            .map(|f| (f.name.as_str(), f.size))
            .collect();
        self.uploads = plan
            .uploads
            .iter()
            .map(|id| UploadItem {
                repo: names.upload_repo(id),
                id: id.clone(),
                size: upload_sizes.get(id.as_str()).copied().unwrap_or(0),
            })
            .collect();
        self.orphan_files = plan
            .orphan_blobs
            .iter()
            .map(|f| FileItem::blob(&f.name, f.size))
            .chain(
                plan.orphan_uploads
                    .iter()
                    .map(|f| FileItem::upload(&f.name, f.size)),
            )
            .collect();
        self.bytes_freed = self.blobs.iter().map(|b| b.size).sum::<u64>()
            + self.uploads.iter().map(|u| u.size).sum::<u64>()
            + self.orphan_files.iter().map(|f| f.size).sum::<u64>();
    }

    /// One line for people: what went (or would go) and what it freed.
    pub fn summary(&self) -> String {
        let verb = if self.dry_run {
            "would remove"
        } else {
            "removed"
        };
        let mut s = format!(
            "{verb} {}, {}, {}, {} and {}; {} {}, {} waiting for the grace period; {:.1} s",
            count(self.manifests.len(), "manifest", "manifests"),
            count(self.links.len(), "blob link", "blob links"),
            count(self.blobs.len(), "blob", "blobs"),
            count(self.uploads.len(), "upload session", "upload sessions"),
            count(
                self.orphan_files.len(),
                "file without a record",
                "files without a record"
            ),
            human_bytes(self.bytes_freed),
            if self.dry_run { "to free" } else { "freed" },
            human_bytes(self.bytes_waiting),
            self.duration_ms as f64 / 1000.0,
        );
        if !self.evicted.is_empty() {
            let verb = if self.dry_run {
                "would evict"
            } else {
                "evicted"
            };
            s.push_str(&format!(
                "; {verb} {} from the pull-through cache",
                count(self.evicted.len(), "image", "images")
            ));
        }
        if self.interrupted {
            s.push_str("; stopped early by shutdown");
        }
        if !self.errors.is_empty() {
            s.push_str(&format!(
                "; {}",
                count(self.errors.len(), "error", "errors")
            ));
        }
        s
    }

    /// Log the run's outcome (scheduled runs).
    pub fn log(&self) {
        if self.errors.is_empty() {
            tracing::info!(
                bytes_freed = self.bytes_freed,
                "garbage collection: {}",
                self.summary()
            );
        } else {
            tracing::warn!(
                bytes_freed = self.bytes_freed,
                first_error = %self.errors[0],
                "garbage collection: {}",
                self.summary()
            );
        }
    }

    /// The JSON stored for the run: every list cut to `STORED_ITEMS`.
    pub(super) fn stored_json(&self) -> String {
        let mut r = self.clone();
        let mut cut = 0u64;
        fn keep<T>(v: &mut Vec<T>, cut: &mut u64) {
            if v.len() > STORED_ITEMS {
                *cut += (v.len() - STORED_ITEMS) as u64;
                v.truncate(STORED_ITEMS);
            }
        }
        keep(&mut r.manifests, &mut cut);
        keep(&mut r.links, &mut cut);
        keep(&mut r.blobs, &mut cut);
        keep(&mut r.uploads, &mut cut);
        keep(&mut r.orphan_files, &mut cut);
        keep(&mut r.errors, &mut cut);
        r.items_not_stored = cut;
        r.id = None;
        serde_json::to_string(&r).unwrap_or_else(|_| "{}".into())
    }
}

/// `1.5 GiB`, `12.0 MiB`, `512 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `1 blob`, `2 blobs`.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
