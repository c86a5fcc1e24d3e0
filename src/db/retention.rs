//! `retention_policies` and `retention_runs`, and the reads and deletes of a retention run.

use rusqlite::{Connection, OptionalExtension, params};

use super::Result;

/// Store a policy (its JSON), replacing one of the same name. Returns whether it was new.
pub fn put_policy(c: &Connection, name: &str, spec: &str, now: i64) -> Result<bool> {
    let existed = get_policy(c, name)?.is_some();
    c.execute(
        "INSERT INTO retention_policies (name, spec, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)
         ON CONFLICT(name) DO UPDATE SET spec = excluded.spec, updated_at = excluded.updated_at",
        params![name, spec, now],
    )?;
    Ok(!existed)
}

pub fn get_policy(c: &Connection, name: &str) -> Result<Option<String>> {
    Ok(
        c.prepare_cached("SELECT spec FROM retention_policies WHERE name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?,
    )
}

/// Every policy's JSON, in the order they were first added (the first that matches a
/// repository applies to it).
pub fn policies(c: &Connection) -> Result<Vec<String>> {
    let mut st = c.prepare_cached("SELECT spec FROM retention_policies ORDER BY id")?;
    Ok(st
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?)
}

pub fn delete_policy(c: &Connection, name: &str) -> Result<bool> {
    Ok(c.execute("DELETE FROM retention_policies WHERE name = ?1", [name])? > 0)
}

/// A tag with what retention decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRow {
    pub repo_id: i64,
    pub repo: String,
    pub tag: String,
    pub manifest_id: i64,
    pub digest: String,
    /// When the tag was last pushed (or moved).
    pub pushed_at: i64,
    pub pulled_at: Option<i64>,
    pub pulled_by: Option<String>,
}

/// Every tag of every repository, by repository.
pub fn tags(c: &Connection) -> Result<Vec<TagRow>> {
    let mut st = c.prepare(
        "SELECT r.id, r.name, t.name, m.id, m.digest, t.updated_at, m.last_pulled_at,
                m.last_pulled_by
         FROM tags t JOIN repositories r ON r.id = t.repository_id
         JOIN manifests m ON m.id = t.manifest_id
         ORDER BY r.name, t.name",
    )?;
    Ok(st
        .query_map([], |r| {
            Ok(TagRow {
                repo_id: r.get(0)?,
                repo: r.get(1)?,
                tag: r.get(2)?,
                manifest_id: r.get(3)?,
                digest: r.get(4)?,
                pushed_at: r.get(5)?,
                pulled_at: r.get(6)?,
                pulled_by: r.get(7)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?)
}

/// Delete a tag if it is still what the decision was about: the same manifest, not pushed
/// since (a tag pushed again meanwhile is a new push). Records the untagging. Returns whether
/// it went.
pub fn delete_tag(
    c: &Connection,
    repo_id: i64,
    tag: &str,
    manifest_id: i64,
    pushed_at: i64,
    now: i64,
) -> Result<bool> {
    let n = c
        .prepare_cached(
            "DELETE FROM tags WHERE repository_id = ?1 AND name = ?2 AND manifest_id = ?3
               AND updated_at = ?4",
        )?
        .execute(params![repo_id, tag, manifest_id, pushed_at])?;
    if n > 0 {
        c.prepare_cached("UPDATE manifests SET untagged_at = ?2 WHERE id = ?1")?
            .execute(params![manifest_id, now])?;
    }
    Ok(n > 0)
}

const KEPT_RUNS: i64 = 500;

pub fn insert_run(
    c: &Connection,
    trigger: &str,
    dry_run: bool,
    started_at: i64,
    finished_at: i64,
    deleted: u64,
    report: &str,
) -> Result<i64> {
    c.execute(
        "INSERT INTO retention_runs (trigger, dry_run, started_at, finished_at, deleted, report)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            trigger,
            dry_run,
            started_at,
            finished_at,
            deleted as i64,
            report
        ],
    )?;
    let id = c.last_insert_rowid();
    c.execute(
        "DELETE FROM retention_runs WHERE id <= ?1",
        [id - KEPT_RUNS],
    )?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{manifests, repos, tags};

    #[test]
    fn a_tag_pushed_again_since_the_decision_stays() {
        let c = crate::db::tests_support::memory();
        let r = repos::ensure(&c, "r", 0).unwrap();
        let m = manifests::insert(
            &c,
            &manifests::NewManifest {
                repo_id: r,
                digest: "sha256:m",
                media_type: "m/t",
                artifact_type: None,
                subject: None,
                annotations: None,
                content: b"{}",
                blobs: &[],
                children: &[],
                now: 1,
                pushed_by: None,
            },
        )
        .unwrap();
        tags::set(&c, r, "nightly", m, 1).unwrap();
        let decided = tags(&c).unwrap().remove(0);
        assert_eq!(decided.pushed_at, 1);
        // CI pushes it again (same manifest) before the run reaches it.
        tags::set(&c, r, "nightly", m, 5).unwrap();
        assert!(!delete_tag(&c, r, "nightly", m, decided.pushed_at, 6).unwrap());
        assert!(delete_tag(&c, r, "nightly", m, 5, 6).unwrap());
    }
}
