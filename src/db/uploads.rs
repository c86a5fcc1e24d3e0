//! `uploads`: blob upload sessions in progress.

use super::Result;
use rusqlite::{Connection, OptionalExtension, params};

pub fn insert(c: &Connection, id: &str, repo_id: i64, owner: &str, now: i64) -> Result<()> {
    c.execute(
        "INSERT INTO uploads (id, repository_id, owner, created_at, active_at)
         VALUES (?1, ?2, ?3, ?4, ?4)",
        params![id, repo_id, owner, now],
    )?;
    Ok(())
}

/// Sessions `owner` has open and used since `since` (idle ones are on their way out and do
/// not count, also when no collection runs to remove them).
pub fn count_owned(c: &Connection, owner: &str, since: i64) -> Result<u64> {
    Ok(
        c.prepare_cached("SELECT count(*) FROM uploads WHERE owner = ?1 AND active_at >= ?2")?
            .query_row(params![owner, since], |r| r.get::<_, i64>(0))? as u64,
    )
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

/// Record activity on a session (a chunk arrived), so that it does not expire. `false` if
/// the session does not exist (any more).
pub fn touch(c: &Connection, id: &str, now: i64) -> Result<bool> {
    let n = c
        .prepare_cached("UPDATE uploads SET active_at = max(active_at, ?2) WHERE id = ?1")?
        .execute(params![id, now])?;
    Ok(n > 0)
}

pub fn delete(c: &Connection, id: &str) -> Result<bool> {
    Ok(c.execute("DELETE FROM uploads WHERE id = ?1", [id])? > 0)
}
