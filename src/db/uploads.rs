//! `uploads`: blob upload sessions in progress.

use super::Result;
use rusqlite::{Connection, OptionalExtension, params};

pub fn insert(c: &Connection, id: &str, repo_id: i64, now: i64) -> Result<()> {
    c.execute(
        "INSERT INTO uploads (id, repository_id, created_at) VALUES (?1, ?2, ?3)",
        params![id, repo_id, now],
    )?;
    Ok(())
}

/// The repository id of the session `id`, if it exists and belongs to the repository `repo`.
pub fn find(c: &Connection, repo: &str, id: &str) -> Result<Option<i64>> {
    Ok(c.prepare_cached(
        "SELECT u.repository_id FROM uploads u JOIN repositories r ON r.id = u.repository_id
         WHERE u.id = ?1 AND r.name = ?2",
    )?
    .query_row(params![id, repo], |r| r.get(0))
    .optional()?)
}

pub fn delete(c: &Connection, id: &str) -> Result<bool> {
    Ok(c.execute("DELETE FROM uploads WHERE id = ?1", [id])? > 0)
}
