//! What an import brought in (or, in a dry run, would), and how far it has got.

use serde::{Deserialize, Serialize};

use crate::core::gc::{count, human_bytes};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    pub source: String,
    pub dry_run: bool,
    pub duration_ms: u64,
    /// Repositories that hold something from the source.
    pub repositories: u64,
    /// Manifests, tags and blobs added (in a dry run: that would be).
    pub manifests: u64,
    pub tags: u64,
    pub blobs: u64,
    /// Bytes of the blobs added.
    pub bytes: u64,
    /// Of the blobs added: hard-linked to the source's files (no bytes copied), copied.
    pub linked: u64,
    pub copied: u64,
    /// Found in berth already (an earlier import, or pushed): nothing to do.
    pub present: Present,
    /// What was left out, and why.
    pub skipped: Vec<Skipped>,
    /// Tags that point elsewhere in berth: berth's kept (unless told to take the source's).
    pub conflicts: Vec<Skipped>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Present {
    pub manifests: u64,
    pub tags: u64,
    pub blobs: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// `repo:tag`, `repo@digest` or a path.
    pub what: String,
    pub why: String,
}

/// Where an import stands: objects are manifests, tags and blobs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportProgress {
    pub objects_done: u64,
    pub objects_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

impl ImportReport {
    /// One paragraph for people.
    pub fn summary(&self) -> String {
        let verb = if self.dry_run {
            "would import"
        } else {
            "imported"
        };
        let mut s = format!(
            "{verb} {}, {}, {} and {} ({}) into {} from {}",
            count(self.manifests as usize, "manifest", "manifests"),
            count(self.tags as usize, "tag", "tags"),
            count(self.blobs as usize, "blob", "blobs"),
            human_bytes(self.bytes),
            if self.dry_run {
                "none copied yet".to_string()
            } else {
                format!("{} hard-linked, {} copied", self.linked, self.copied)
            },
            count(self.repositories as usize, "repository", "repositories"),
            self.source,
        );
        let p = &self.present;
        if p.manifests + p.tags + p.blobs > 0 {
            s.push_str(&format!(
                "; already here: {}, {}, {}",
                count(p.manifests as usize, "manifest", "manifests"),
                count(p.tags as usize, "tag", "tags"),
                count(p.blobs as usize, "blob", "blobs")
            ));
        }
        if !self.skipped.is_empty() {
            s.push_str(&format!(
                "; skipped {}",
                count(self.skipped.len(), "item", "items")
            ));
        }
        if !self.conflicts.is_empty() {
            s.push_str(&format!(
                "; {} kept as berth has them",
                count(self.conflicts.len(), "tag", "tags")
            ));
        }
        s
    }
}
