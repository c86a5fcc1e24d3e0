//! `uploads`: blob upload sessions in progress.

use super::Result;
use rusqlite::{Connection, OptionalExtension, params};

pub fn insert(c: &Connection, id: &str, repo_id: i64, now: i64) -> Result<()> {
    c.execute(
        "INSERT INTO uploads (id, repository_id, created_at, active_at) VALUES (?1, ?2, ?3, ?3)",
        params![id, repo_id, now],
    )?;
    Ok(())
}

/// The repository id and last activity of the session `id`, if it exists and belongs to the
/// repository `repo`.
pub fn find(c: &Connection, repo: &str, id: &str) -> Result<Option<(i64, i64)>> {
    Ok(c.prepare_cached(
        "SELECT u.repository_id, u.active_at FROM uploads u
         JOIN repositories r ON r.id = u.repository_id
         WHERE u.id = ?1 AND r.name = ?2",
    )?
    .query_row(params![id, repo], |r| Ok((r.get(0)?, r.get(1)?)))
    .optional()?)
}

/// Record activity on a session (a chunk arrived), so that it does not expire.
pub fn touch(c: &Connection, id: &str, now: i64) -> Result<()> {
    c.prepare_cached("UPDATE uploads SET active_at = max(active_at, ?2) WHERE id = ?1")?
        .execute(params![id, now])?;
    Ok(())
}

pub fn delete(c: &Connection, id: &str) -> Result<bool> {
    Ok(c.execute("DELETE FROM uploads WHERE id = ?1", [id])? > 0)
}
