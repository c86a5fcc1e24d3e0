//! Garbage collection's queries: a consistent snapshot of what references what, the deletes
//! that repeat their "is it still garbage?" predicate inside the transaction, and the stored
//! run reports.
//!
//! The predicates here and the plan in `core::gc::plan` state the same rules; the plan decides
//! what a run will try, the predicates make sure nothing that became live since is touched.

use rusqlite::{Connection, OptionalExtension, params};

use super::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRow {
    pub id: i64,
    pub repo_id: i64,
    pub digest: String,
    pub subject: Option<String>,
    pub tagged: bool,
    /// The latest of its last push, its last pull and the moment it last lost a tag.
    pub touched_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRow {
    pub repo_id: i64,
    pub digest: String,
    pub seen_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRow {
    pub id: String,
    pub repo_id: i64,
    pub active_at: i64,
}

/// Everything a collection decides on, read in one transaction.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub repos: Vec<(i64, String)>,
    pub manifests: Vec<ManifestRow>,
    /// (index id, child digest).
    pub children: Vec<(i64, String)>,
    /// (manifest id, blob digest).
    pub manifest_blobs: Vec<(i64, String)>,
    pub links: Vec<LinkRow>,
    /// (digest, size).
    pub blobs: Vec<(String, u64)>,
    pub uploads: Vec<UploadRow>,
}

pub fn snapshot(c: &Connection) -> Result<Snapshot> {
    // One read transaction: every table as of the same moment.
    let tx = c.unchecked_transaction()?;
    let s = read_snapshot(&tx)?;
    tx.finish()?;
    Ok(s)
}

fn read_snapshot(tx: &Connection) -> Result<Snapshot> {
    let mut s = Snapshot::default();
    let mut st = tx.prepare("SELECT id, name FROM repositories")?;
    s.repos = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut st = tx.prepare(
        "SELECT m.id, m.repository_id, m.digest, m.subject_digest,
                EXISTS (SELECT 1 FROM tags t WHERE t.manifest_id = m.id),
                max(m.pushed_at, coalesce(m.last_pulled_at, 0), coalesce(m.untagged_at, 0))
         FROM manifests m",
    )?;
    s.manifests = st
        .query_map([], |r| {
            Ok(ManifestRow {
                id: r.get(0)?,
                repo_id: r.get(1)?,
                digest: r.get(2)?,
                subject: r.get(3)?,
                tagged: r.get(4)?,
                touched_at: r.get(5)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut st = tx.prepare("SELECT manifest_id, child_digest FROM manifest_children")?;
    s.children = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut st = tx.prepare("SELECT manifest_id, digest FROM manifest_blobs")?;
    s.manifest_blobs = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut st = tx.prepare("SELECT repository_id, digest, seen_at FROM repository_blobs")?;
    s.links = st
        .query_map([], |r| {
            Ok(LinkRow {
                repo_id: r.get(0)?,
                digest: r.get(1)?,
                seen_at: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut st = tx.prepare("SELECT digest, size FROM blobs")?;
    s.blobs = st
        .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut st = tx.prepare("SELECT id, repository_id, active_at FROM uploads")?;
    s.uploads = st
        .query_map([], |r| {
            Ok(UploadRow {
                id: r.get(0)?,
                repo_id: r.get(1)?,
                active_at: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(s)
}

/// Delete manifest `id` if it is still garbage: untagged, not pushed, pulled or untagged
/// since `cutoff`, listed by
/// no index of its repository, and not a referrer of a manifest its repository holds.
/// Returns whether it went.
pub fn delete_manifest(c: &Connection, id: i64, cutoff: i64) -> Result<bool> {
    let n = c
        .prepare_cached(
            "DELETE FROM manifests
             WHERE id = ?1
               AND max(pushed_at, coalesce(last_pulled_at, 0), coalesce(untagged_at, 0)) < ?2
               AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.manifest_id = manifests.id)
               AND NOT EXISTS (
                   SELECT 1 FROM manifest_children mc JOIN manifests p ON p.id = mc.manifest_id
                   WHERE p.repository_id = manifests.repository_id
                     AND mc.child_digest = manifests.digest)
               AND (subject_digest IS NULL OR NOT EXISTS (
                   SELECT 1 FROM manifests s
                   WHERE s.repository_id = manifests.repository_id
                     AND s.digest = manifests.subject_digest))",
        )?
        .execute(params![id, cutoff])?;
    Ok(n > 0)
}

/// End a repository's link to a blob if no manifest of the repository uses it and no client
/// was told of it since `cutoff`. Returns whether it went.
pub fn delete_link(c: &Connection, repo_id: i64, digest: &str, cutoff: i64) -> Result<bool> {
    let n = c
        .prepare_cached(
            "DELETE FROM repository_blobs
             WHERE repository_id = ?1 AND digest = ?2 AND seen_at < ?3
               AND NOT EXISTS (
                   SELECT 1 FROM manifest_blobs mb JOIN manifests m ON m.id = mb.manifest_id
                   WHERE m.repository_id = ?1 AND mb.digest = ?2)",
        )?
        .execute(params![repo_id, digest, cutoff])?;
    Ok(n > 0)
}

/// Forget a blob that no repository links and no manifest references. Returns its recorded
/// size if it went.
pub fn delete_blob(c: &Connection, digest: &str) -> Result<Option<u64>> {
    Ok(c.prepare_cached(
        "DELETE FROM blobs
         WHERE digest = ?1
           AND NOT EXISTS (SELECT 1 FROM repository_blobs WHERE digest = ?1)
           AND NOT EXISTS (SELECT 1 FROM manifest_blobs WHERE digest = ?1)
         RETURNING size",
    )?
    .query_row([digest], |r| r.get::<_, i64>(0))
    .optional()?
    .map(|s| s as u64))
}

/// Delete an upload session idle since before `cutoff`. Returns whether it went.
pub fn delete_idle_upload(c: &Connection, id: &str, cutoff: i64) -> Result<bool> {
    let n = c
        .prepare_cached("DELETE FROM uploads WHERE id = ?1 AND active_at < ?2")?
        .execute(params![id, cutoff])?;
    Ok(n > 0)
}

/// Whether an upload session row exists.
pub fn upload_exists(c: &Connection, id: &str) -> Result<bool> {
    Ok(c.prepare_cached("SELECT 1 FROM uploads WHERE id = ?1")?
        .exists([id])?)
}

/// Runs kept in `gc_runs`; older ones are dropped as new ones are stored.
const KEPT_RUNS: i64 = 500;

/// Store a run's report; returns its id.
pub fn insert_run(
    c: &Connection,
    trigger: &str,
    dry_run: bool,
    started_at: i64,
    finished_at: i64,
    bytes_freed: u64,
    report: &str,
) -> Result<i64> {
    c.execute(
        "INSERT INTO gc_runs (trigger, dry_run, started_at, finished_at, bytes_freed, report)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            trigger,
            dry_run,
            started_at,
            finished_at,
            bytes_freed as i64,
            report
        ],
    )?;
    let id = c.last_insert_rowid();
    c.execute(
        "DELETE FROM gc_runs WHERE id <= ?1",
        params![id - KEPT_RUNS],
    )?;
    Ok(id)
}

/// The stored report of run `id`, if it is still kept.
pub fn run(c: &Connection, id: i64) -> Result<Option<String>> {
    Ok(
        c.prepare_cached("SELECT report FROM gc_runs WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{blobs, manifests, repos, tags};

    fn manifest(c: &Connection, repo: i64, digest: &str, blobs: &[&str], children: &[&str]) -> i64 {
        let blobs: Vec<String> = blobs.iter().map(|s| s.to_string()).collect();
        let children: Vec<String> = children.iter().map(|s| s.to_string()).collect();
        manifests::insert(
            c,
            &manifests::NewManifest {
                repo_id: repo,
                digest,
                media_type: "m/t",
                artifact_type: None,
                subject: None,
                annotations: None,
                content: b"{}",
                blobs: &blobs,
                children: &children,
                now: 10,
                pushed_by: None,
            },
        )
        .unwrap()
    }

    #[test]
    fn deletes_repeat_their_predicates() {
        let c = crate::db::tests_support::memory();
        let r = repos::ensure(&c, "r", 0).unwrap();
        blobs::insert(&c, "sha256:b", 5, 0).unwrap();
        blobs::link(&c, r, "sha256:b", 10).unwrap();
        let child = manifest(&c, r, "sha256:child", &["sha256:b"], &[]);
        let index = manifest(&c, r, "sha256:index", &[], &["sha256:child"]);
        tags::set(&c, r, "v1", index, 10).unwrap();
        // Too recent, tagged, or listed by an index: kept.
        assert!(!delete_manifest(&c, child, 10).unwrap());
        assert!(!delete_manifest(&c, index, 11).unwrap());
        assert!(!delete_manifest(&c, child, 11).unwrap());
        tags::delete(&c, r, "v1", 10).unwrap();
        assert!(delete_manifest(&c, index, 11).unwrap());
        // The link is used by the child; the blob by the link and the child.
        assert!(!delete_link(&c, r, "sha256:b", 11).unwrap());
        assert_eq!(delete_blob(&c, "sha256:b").unwrap(), None);
        assert!(delete_manifest(&c, child, 11).unwrap());
        // Seen at 10: kept for a cutoff of 10, ended for 11.
        assert!(!delete_link(&c, r, "sha256:b", 10).unwrap());
        assert!(delete_link(&c, r, "sha256:b", 11).unwrap());
        assert_eq!(delete_blob(&c, "sha256:b").unwrap(), Some(5));
        assert_eq!(delete_blob(&c, "sha256:b").unwrap(), None);
    }

    #[test]
    fn snapshot_and_runs() {
        let c = crate::db::tests_support::memory();
        let r = repos::ensure(&c, "r", 0).unwrap();
        blobs::insert(&c, "sha256:b", 5, 0).unwrap();
        blobs::link(&c, r, "sha256:b", 3).unwrap();
        let m = manifest(&c, r, "sha256:m", &["sha256:b"], &[]);
        tags::set(&c, r, "t", m, 10).unwrap();
        crate::db::uploads::insert(&c, "u1", r, "u:1", 4).unwrap();
        let s = snapshot(&c).unwrap();
        assert_eq!(s.repos, vec![(r, "r".to_string())]);
        assert!(s.manifests[0].tagged);
        assert_eq!(s.manifest_blobs, vec![(m, "sha256:b".to_string())]);
        assert_eq!(s.links[0].seen_at, 3);
        assert_eq!(s.uploads[0].active_at, 4);
        assert!(!delete_idle_upload(&c, "u1", 4).unwrap());
        assert!(delete_idle_upload(&c, "u1", 5).unwrap());
        for i in 0..KEPT_RUNS + 3 {
            insert_run(&c, "cli", false, i, i, 0, "{}").unwrap();
        }
        let runs = crate::db::runs::recent(&c, crate::db::runs::Runs::Gc, 1000).unwrap();
        assert_eq!(runs.len() as i64, KEPT_RUNS);
        assert_eq!(runs[0].0, KEPT_RUNS + 3);
    }
}
