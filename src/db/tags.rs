//! `tags`: a name in a repository pointing at one manifest.

use super::Result;
use rusqlite::{Connection, OptionalExtension, params};

/// The manifest `tag` points at.
fn target(c: &Connection, repo_id: i64, tag: &str) -> Result<Option<i64>> {
    Ok(
        c.prepare_cached("SELECT manifest_id FROM tags WHERE repository_id = ?1 AND name = ?2")?
            .query_row(params![repo_id, tag], |r| r.get(0))
            .optional()?,
    )
}

/// Record that a manifest lost a tag at `now` (garbage collection's untagged grace counts
/// from it).
fn untagged(c: &Connection, manifest_id: i64, now: i64) -> Result<()> {
    c.prepare_cached("UPDATE manifests SET untagged_at = ?2 WHERE id = ?1")?
        .execute(params![manifest_id, now])?;
    Ok(())
}

/// Point `tag` at `manifest_id`, moving it if it pointed elsewhere. A push of the same tag
/// again counts as a push (retention's push time is the tag's).
pub fn set(c: &Connection, repo_id: i64, tag: &str, manifest_id: i64, now: i64) -> Result<()> {
    set_at(c, repo_id, tag, manifest_id, now, now, None)
}

/// `set`, recording the tag as set at `at` (an import keeps the source's time) by `by`.
pub fn set_at(
    c: &Connection,
    repo_id: i64,
    tag: &str,
    manifest_id: i64,
    at: i64,
    now: i64,
    by: Option<&str>,
) -> Result<()> {
    if let Some(old) = target(c, repo_id, tag)?.filter(|old| *old != manifest_id) {
        untagged(c, old, now)?;
    }
    c.prepare_cached(
        "INSERT INTO tags (repository_id, name, manifest_id, updated_at, pushed_by)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(repository_id, name) DO UPDATE
         SET manifest_id = excluded.manifest_id, updated_at = excluded.updated_at,
             pushed_by = excluded.pushed_by",
    )?
    .execute(params![repo_id, tag, manifest_id, at, by])?;
    Ok(())
}

pub fn delete(c: &Connection, repo_id: i64, tag: &str, now: i64) -> Result<bool> {
    let Some(old) = target(c, repo_id, tag)? else {
        return Ok(false);
    };
    c.execute(
        "DELETE FROM tags WHERE repository_id = ?1 AND name = ?2",
        params![repo_id, tag],
    )?;
    untagged(c, old, now)?;
    Ok(true)
}

/// Tags of a repository in byte order, after `last`, at most `limit`.
pub fn list(c: &Connection, repo_id: i64, last: Option<&str>, limit: i64) -> Result<Vec<String>> {
    let mut st = c.prepare_cached(
        "SELECT name FROM tags WHERE repository_id = ?1 AND name > ?2 ORDER BY name LIMIT ?3",
    )?;
    Ok(st
        .query_map(params![repo_id, last.unwrap_or(""), limit], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?)
}
