//! `blobs` and `repository_blobs`: which blob files exist and which repository may serve them.

use super::Result;
use rusqlite::{Connection, OptionalExtension, params};

/// Record a blob file (a no-op when it is already known).
pub fn insert(c: &Connection, digest: &str, size: u64, now: i64) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO blobs (digest, size, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(digest) DO NOTHING",
    )?
    .execute(params![digest, size as i64, now])?;
    Ok(())
}

/// Make a known blob visible through a repository, or mark an existing link as just seen.
pub fn link(c: &Connection, repo_id: i64, digest: &str, now: i64) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO repository_blobs (repository_id, digest, seen_at) VALUES (?1, ?2, ?3)
         ON CONFLICT DO UPDATE SET seen_at = max(seen_at, excluded.seen_at)",
    )?
    .execute(params![repo_id, digest, now])?;
    Ok(())
}

pub fn unlink(c: &Connection, repo_id: i64, digest: &str) -> Result<bool> {
    let n = c.execute(
        "DELETE FROM repository_blobs WHERE repository_id = ?1 AND digest = ?2",
        params![repo_id, digest],
    )?;
    Ok(n > 0)
}

/// The size of `digest` if the repository named `repo` may serve it.
pub fn linked_size(c: &Connection, repo: &str, digest: &str) -> Result<Option<u64>> {
    Ok(linked(c, repo, digest)?.map(|(size, _)| size))
}

/// The size of `digest` and when a client was last told the repository has it, if it does.
pub fn linked(c: &Connection, repo: &str, digest: &str) -> Result<Option<(u64, i64)>> {
    Ok(c.prepare_cached(
        "SELECT b.size, rb.seen_at FROM repository_blobs rb
         JOIN repositories r ON r.id = rb.repository_id
         JOIN blobs b ON b.digest = rb.digest
         WHERE r.name = ?1 AND rb.digest = ?2",
    )?
    .query_row(params![repo, digest], |r| {
        Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)?))
    })
    .optional()?)
}

/// Mark the link of `repo` to `digest` as seen now; `false` if there is no such link (any
/// more: garbage collection may have ended it since it was read).
pub fn touch(c: &Connection, repo: &str, digest: &str, now: i64) -> Result<bool> {
    let n = c
        .prepare_cached(
            "UPDATE repository_blobs SET seen_at = max(seen_at, ?3)
             WHERE repository_id = (SELECT id FROM repositories WHERE name = ?1)
               AND digest = ?2",
        )?
        .execute(params![repo, digest, now])?;
    Ok(n > 0)
}

/// The size of a blob file berth holds, whichever repository it belongs to.
pub fn size(c: &Connection, digest: &str) -> Result<Option<u64>> {
    Ok(
        c.prepare_cached("SELECT size FROM blobs WHERE digest = ?1")?
            .query_row([digest], |r| r.get::<_, i64>(0))
            .optional()?
            .map(|s| s as u64),
    )
}

/// The first of `digests` that the repository cannot serve (a manifest push stops at it).
pub fn first_missing(c: &Connection, repo_id: i64, digests: &[String]) -> Result<Option<String>> {
    let mut st = c.prepare_cached(
        "SELECT 1 FROM repository_blobs WHERE repository_id = ?1 AND digest = ?2",
    )?;
    for d in digests {
        if !st.exists(params![repo_id, d])? {
            return Ok(Some(d.clone()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::repos;

    #[test]
    fn links_are_per_repository() {
        let c = crate::db::tests_support::memory();
        let a = repos::ensure(&c, "a", 0).unwrap();
        let b = repos::ensure(&c, "b", 0).unwrap();
        insert(&c, "sha256:x", 5, 0).unwrap();
        insert(&c, "sha256:x", 5, 0).unwrap();
        link(&c, a, "sha256:x", 0).unwrap();
        link(&c, a, "sha256:x", 0).unwrap();
        assert_eq!(linked_size(&c, "a", "sha256:x").unwrap(), Some(5));
        assert_eq!(linked_size(&c, "b", "sha256:x").unwrap(), None);
        let x = "sha256:x".to_string();
        assert_eq!(
            first_missing(&c, b, std::slice::from_ref(&x)).unwrap(),
            Some(x.clone())
        );
        assert_eq!(first_missing(&c, a, &[x]).unwrap(), None);
        assert!(unlink(&c, a, "sha256:x").unwrap());
        assert!(!unlink(&c, a, "sha256:x").unwrap());
        assert_eq!(size(&c, "sha256:x").unwrap(), Some(5));
    }
}
