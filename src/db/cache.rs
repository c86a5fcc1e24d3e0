//! The pull-through cache's rows: cached manifests whose blobs have not arrived yet
//! (`cache_pending`), and when the upstream last confirmed a cached tag (`tags.checked_at`).

use super::Result;
use super::manifests::{self, NewManifest};
use super::{blobs, tags};
use rusqlite::{Connection, OptionalExtension, params};

/// Store a manifest fetched from the upstream named `upstream` (a no-op when the repository
/// has it), and point `tag` at it, confirmed `now`. References to blobs this cache holds become
/// ordinary references, and the repository's links; the others wait in `cache_pending`. Returns the
/// manifest's id.
pub fn store(
    c: &Connection,
    m: &NewManifest<'_>,
    upstream: &str,
    tag: Option<&str>,
) -> Result<i64> {
    let existing: Option<i64> = c
        .prepare_cached("SELECT id FROM manifests WHERE repository_id = ?1 AND digest = ?2")?
        .query_row(params![m.repo_id, m.digest], |r| r.get(0))
        .optional()?;
    let id = match existing {
        Some(id) => id,
        None => {
            let mut held = Vec::new();
            let mut missing = Vec::new();
            // Only what this cache fetched from its upstream counts as held: a blob pushed
            // elsewhere is not the upstream's because its manifest names the digest.
            let prefix = format!("{upstream}/");
            for d in m.blobs {
                if held_by(c, &prefix, d)? {
                    held.push(d.clone());
                } else {
                    missing.push(d);
                }
            }
            let id = manifests::insert(c, &NewManifest { blobs: &held, ..*m })?;
            for d in &held {
                blobs::link(c, m.repo_id, d, m.now)?;
            }
            let mut pending = c.prepare_cached(
                "INSERT INTO cache_pending (manifest_id, digest) VALUES (?1, ?2)
                 ON CONFLICT DO NOTHING",
            )?;
            for d in missing {
                pending.execute(params![id, d])?;
            }
            c.prepare_cached("UPDATE manifests SET upstream = ?2 WHERE id = ?1")?
                .execute(params![id, upstream])?;
            id
        }
    };
    if let Some(t) = tag {
        tags::set_at(c, m.repo_id, t, id, m.now, m.now, None)?;
        checked(c, m.repo_id, t, m.now)?;
    }
    Ok(id)
}

/// The upstream confirmed `tag` at `now`.
pub fn checked(c: &Connection, repo_id: i64, tag: &str, now: i64) -> Result<()> {
    c.prepare_cached("UPDATE tags SET checked_at = ?3 WHERE repository_id = ?1 AND name = ?2")?
        .execute(params![repo_id, tag, now])?;
    Ok(())
}

/// A blob fetched for the repository `repo_id` was recorded: link it there, and every
/// manifest waiting for it now references it.
pub fn arrived(c: &Connection, repo_id: i64, digest: &str, now: i64) -> Result<()> {
    blobs::link(c, repo_id, digest, now)?;
    c.prepare_cached(
        "INSERT INTO manifest_blobs (manifest_id, digest)
         SELECT manifest_id, digest FROM cache_pending WHERE digest = ?1
         ON CONFLICT DO NOTHING",
    )?
    .execute(params![digest])?;
    c.prepare_cached("DELETE FROM cache_pending WHERE digest = ?1")?
        .execute(params![digest])?;
    Ok(())
}

/// A repository under `prefix` that holds a manifest no upstream sent (pushed or imported
/// before the prefix became a cache's), if any.
pub fn pushed_under(c: &Connection, prefix: &str) -> Result<Option<String>> {
    Ok(c.prepare_cached(
        "SELECT r.name FROM manifests m JOIN repositories r ON r.id = m.repository_id
         WHERE substr(r.name, 1, length(?1)) = ?1 AND m.upstream IS NULL LIMIT 1",
    )?
    .query_row(params![prefix], |r| r.get(0))
    .optional()?)
}

/// Whether a repository whose name starts with `prefix` links `digest`.
pub fn held_by(c: &Connection, prefix: &str, digest: &str) -> Result<bool> {
    Ok(c.prepare_cached(
        "SELECT 1 FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id
         WHERE rb.digest = ?2 AND substr(r.name, 1, length(?1)) = ?1 LIMIT 1",
    )?
    .exists(params![prefix, digest])?)
}

/// Whether a manifest of the repository `repo` references `digest` (held or still
/// pending): such a blob came from its upstream's description, so the upstream has it.
pub fn referenced(c: &Connection, repo: &str, digest: &str) -> Result<bool> {
    Ok(c.prepare_cached(
        "SELECT 1 FROM manifest_blobs mb JOIN manifests m ON m.id = mb.manifest_id
             JOIN repositories r ON r.id = m.repository_id
         WHERE mb.digest = ?2 AND r.name = ?1
         UNION ALL
         SELECT 1 FROM cache_pending p JOIN manifests m ON m.id = p.manifest_id
             JOIN repositories r ON r.id = m.repository_id
         WHERE p.digest = ?2 AND r.name = ?1
         LIMIT 1",
    )?
    .exists(params![repo, digest])?)
}

/// A manifest of a cache, as eviction sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cached {
    pub repo: String,
    pub digest: String,
    /// Its last pull, or when it was fetched if later.
    pub used_at: i64,
    /// The blobs it references, with their sizes.
    pub blobs: Vec<(String, u64)>,
}

/// Every manifest fetched from `upstream`, least recently used first, and which of their
/// blobs a manifest elsewhere references too.
pub fn cached(
    c: &Connection,
    upstream: &str,
) -> Result<(Vec<Cached>, std::collections::HashSet<String>)> {
    let prefix = format!("{upstream}/");
    let mut out = Vec::new();
    let mut index = std::collections::HashMap::new();
    // A platform manifest is in use as long as an index listing it is: clients whose image
    // is up to date pull the index only.
    let mut st = c.prepare_cached(
        "SELECT m.id, r.name, m.digest,
                max(m.pushed_at, coalesce(m.last_pulled_at, 0),
                    coalesce((SELECT max(max(p.pushed_at, coalesce(p.last_pulled_at, 0)))
                              FROM manifest_children mc JOIN manifests p ON p.id = mc.manifest_id
                              WHERE mc.child_digest = m.digest
                                AND p.repository_id = m.repository_id), 0)) AS used
         FROM manifests m JOIN repositories r ON r.id = m.repository_id
         WHERE substr(r.name, 1, length(?1)) = ?1 AND m.upstream = ?2
         ORDER BY used, m.id",
    )?;
    let mut rows = st.query(params![prefix, upstream])?;
    while let Some(r) = rows.next()? {
        index.insert(r.get::<_, i64>(0)?, out.len());
        out.push(Cached {
            repo: r.get(1)?,
            digest: r.get(2)?,
            used_at: r.get(3)?,
            blobs: Vec::new(),
        });
    }
    let mut st = c.prepare_cached(
        "SELECT mb.manifest_id, mb.digest, b.size FROM manifest_blobs mb
         JOIN blobs b ON b.digest = mb.digest
         JOIN manifests m ON m.id = mb.manifest_id
         JOIN repositories r ON r.id = m.repository_id
         WHERE substr(r.name, 1, length(?1)) = ?1 AND m.upstream = ?2",
    )?;
    let mut rows = st.query(params![prefix, upstream])?;
    while let Some(r) = rows.next()? {
        if let Some(&i) = index.get(&r.get::<_, i64>(0)?) {
            out[i].blobs.push((r.get(1)?, r.get::<_, i64>(2)? as u64));
        }
    }
    let mut st = c.prepare_cached(
        "SELECT DISTINCT mb.digest FROM manifest_blobs mb
         JOIN manifests m ON m.id = mb.manifest_id
         JOIN repositories r ON r.id = m.repository_id
         WHERE (substr(r.name, 1, length(?1)) <> ?1 OR m.upstream IS NOT ?2)
           AND mb.digest IN (
               SELECT mb2.digest FROM manifest_blobs mb2
               JOIN manifests m2 ON m2.id = mb2.manifest_id
               JOIN repositories r2 ON r2.id = m2.repository_id
               WHERE substr(r2.name, 1, length(?1)) = ?1 AND m2.upstream = ?2)",
    )?;
    let shared = st
        .query_map(params![prefix, upstream], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok((out, shared))
}
