//! `manifests`, `manifest_blobs` and `manifest_children`: stored manifests and what they
//! reference.

use super::Result;
use rusqlite::{Connection, OptionalExtension, Row, params};

/// A manifest about to be stored.
pub struct NewManifest<'a> {
    pub repo_id: i64,
    pub digest: &'a str,
    pub media_type: &'a str,
    pub artifact_type: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub annotations: Option<&'a str>,
    pub content: &'a [u8],
    pub blobs: &'a [String],
    pub children: &'a [String],
    pub now: i64,
    /// A user's or a robot token's name; `None` when nobody pushed it (an import).
    pub pushed_by: Option<&'a str>,
}

#[derive(Debug, Clone)]
pub struct Stored {
    pub id: i64,
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    /// Empty when only the head was asked for.
    pub content: Vec<u8>,
    /// Read by tag: when the upstream last confirmed the tag (a pull-through cache's), if
    /// ever.
    pub checked_at: Option<i64>,
}

/// Store a manifest with its references; returns its id. Storing the same digest again in
/// the same repository keeps the first row (the bytes are identical by construction).
pub fn insert(c: &Connection, m: &NewManifest<'_>) -> Result<i64> {
    let inserted = c
        .prepare_cached(
            "INSERT INTO manifests (repository_id, digest, media_type, artifact_type,
                 subject_digest, annotations, size, content, pushed_at, pushed_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT(repository_id, digest) DO NOTHING",
        )?
        .execute(params![
            m.repo_id,
            m.digest,
            m.media_type,
            m.artifact_type,
            m.subject,
            m.annotations,
            m.content.len() as i64,
            m.content,
            m.now,
            m.pushed_by
        ])?;
    let id: i64 = c
        .prepare_cached("SELECT id FROM manifests WHERE repository_id = ?1 AND digest = ?2")?
        .query_row(params![m.repo_id, m.digest], |r| r.get(0))?;
    if inserted > 0 {
        let mut blob = c.prepare_cached(
            "INSERT INTO manifest_blobs (manifest_id, digest) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        )?;
        for d in m.blobs {
            blob.execute(params![id, d])?;
        }
        let mut child = c.prepare_cached(
            "INSERT INTO manifest_children (manifest_id, child_digest) VALUES (?1, ?2)
             ON CONFLICT DO NOTHING",
        )?;
        for d in m.children {
            child.execute(params![id, d])?;
        }
    } else {
        // A re-push counts as a push for retention.
        c.execute(
            "UPDATE manifests SET pushed_at = ?2 WHERE id = ?1",
            params![id, m.now],
        )?;
    }
    Ok(id)
}

fn stored(r: &Row<'_>) -> rusqlite::Result<Stored> {
    Ok(Stored {
        id: r.get(0)?,
        digest: r.get(1)?,
        media_type: r.get(2)?,
        size: r.get::<_, i64>(3)? as u64,
        content: r.get(4)?,
        checked_at: r.get(5)?,
    })
}

/// A manifest of the repository `repo` by digest; `with_content` false leaves `content` empty.
pub fn by_digest(
    c: &Connection,
    repo: &str,
    digest: &str,
    with_content: bool,
) -> Result<Option<Stored>> {
    let sql = if with_content {
        "SELECT m.id, m.digest, m.media_type, m.size, m.content, NULL FROM manifests m
         JOIN repositories r ON r.id = m.repository_id WHERE r.name = ?1 AND m.digest = ?2"
    } else {
        "SELECT m.id, m.digest, m.media_type, m.size, X'', NULL FROM manifests m
         JOIN repositories r ON r.id = m.repository_id WHERE r.name = ?1 AND m.digest = ?2"
    };
    Ok(c.prepare_cached(sql)?
        .query_row(params![repo, digest], stored)
        .optional()?)
}

/// The manifest a tag points at.
pub fn by_tag(c: &Connection, repo: &str, tag: &str, with_content: bool) -> Result<Option<Stored>> {
    let sql = if with_content {
        "SELECT m.id, m.digest, m.media_type, m.size, m.content, t.checked_at FROM tags t
         JOIN repositories r ON r.id = t.repository_id JOIN manifests m ON m.id = t.manifest_id
         WHERE r.name = ?1 AND t.name = ?2"
    } else {
        "SELECT m.id, m.digest, m.media_type, m.size, X'', t.checked_at FROM tags t
         JOIN repositories r ON r.id = t.repository_id JOIN manifests m ON m.id = t.manifest_id
         WHERE r.name = ?1 AND t.name = ?2"
    };
    Ok(c.prepare_cached(sql)?
        .query_row(params![repo, tag], stored)
        .optional()?)
}

/// Those of `digests` that are not manifests of the repository.
pub fn first_missing(c: &Connection, repo_id: i64, digests: &[String]) -> Result<Option<String>> {
    let mut st =
        c.prepare_cached("SELECT 1 FROM manifests WHERE repository_id = ?1 AND digest = ?2")?;
    for d in digests {
        if !st.exists(params![repo_id, d])? {
            return Ok(Some(d.clone()));
        }
    }
    Ok(None)
}

/// Delete a manifest, its tags and its reference rows.
/// Delete a manifest (its tags and references go with it). Returns the blobs it referenced,
/// `None` if there was no such manifest.
pub fn delete(c: &Connection, repo_id: i64, digest: &str) -> Result<Option<Vec<String>>> {
    let Some(id) = c
        .prepare_cached("SELECT id FROM manifests WHERE repository_id = ?1 AND digest = ?2")?
        .query_row(params![repo_id, digest], |r| r.get::<_, i64>(0))
        .optional()?
    else {
        return Ok(None);
    };
    let blobs: Vec<String> = c
        .prepare_cached("SELECT digest FROM manifest_blobs WHERE manifest_id = ?1")?
        .query_map([id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    c.execute("DELETE FROM manifests WHERE id = ?1", [id])?;
    Ok(Some(blobs))
}

/// One entry of a referrers response.
#[derive(Debug, Clone)]
pub struct Referrer {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub annotations: Option<String>,
}

/// Manifests of `repo` whose subject is `subject`, optionally of one artifact type.
pub fn referrers(
    c: &Connection,
    repo: &str,
    subject: &str,
    artifact_type: Option<&str>,
) -> Result<Vec<Referrer>> {
    let mut st = c.prepare_cached(
        "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations FROM manifests m
         JOIN repositories r ON r.id = m.repository_id
         WHERE r.name = ?1 AND m.subject_digest = ?2 AND (?3 IS NULL OR m.artifact_type = ?3)
         ORDER BY m.digest",
    )?;
    let rows = st.query_map(params![repo, subject, artifact_type], |r| {
        Ok(Referrer {
            digest: r.get(0)?,
            media_type: r.get(1)?,
            size: r.get::<_, i64>(2)? as u64,
            artifact_type: r.get(3)?,
            annotations: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Store the newest pull of each manifest id: (id, time, who).
pub fn record_pulls(c: &Connection, pulls: &[(i64, i64, String)]) -> Result<()> {
    let mut st = c.prepare_cached(
        "UPDATE manifests SET last_pulled_at = ?2, last_pulled_by = ?3
         WHERE id = ?1 AND (last_pulled_at IS NULL OR last_pulled_at <= ?2)",
    )?;
    for (id, at, who) in pulls {
        st.execute(params![id, at, who])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{blobs, repos, tags};

    fn new<'a>(
        repo_id: i64,
        digest: &'a str,
        blobs: &'a [String],
        children: &'a [String],
    ) -> NewManifest<'a> {
        NewManifest {
            repo_id,
            digest,
            media_type: "m/t",
            artifact_type: Some("a/t"),
            subject: Some("sha256:s"),
            annotations: None,
            content: b"{}",
            blobs,
            children,
            now: 7,
            pushed_by: None,
        }
    }

    #[test]
    fn store_tag_find_and_delete() {
        let c = crate::db::tests_support::memory();
        let r = repos::ensure(&c, "r", 0).unwrap();
        blobs::insert(&c, "sha256:b", 1, 0).unwrap();
        let id = insert(&c, &new(r, "sha256:m", &["sha256:b".into()], &[])).unwrap();
        assert_eq!(insert(&c, &new(r, "sha256:m", &[], &[])).unwrap(), id);
        tags::set(&c, r, "v1", id, 8).unwrap();
        assert_eq!(by_tag(&c, "r", "v1", true).unwrap().unwrap().content, b"{}");
        assert!(
            by_digest(&c, "r", "sha256:m", false)
                .unwrap()
                .unwrap()
                .content
                .is_empty()
        );
        assert_eq!(referrers(&c, "r", "sha256:s", None).unwrap().len(), 1);
        assert_eq!(
            referrers(&c, "r", "sha256:s", Some("x/y")).unwrap().len(),
            0
        );
        assert_eq!(
            first_missing(&c, r, &["sha256:m".into(), "sha256:n".into()]).unwrap(),
            Some("sha256:n".to_string())
        );
        assert_eq!(repos::catalog(&c, None, 10, &|_| true).unwrap(), ["r"]);
        assert!(
            repos::catalog(&c, None, 10, &|n| n != "r")
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            delete(&c, r, "sha256:m").unwrap(),
            Some(vec!["sha256:b".to_string()])
        );
        assert!(by_tag(&c, "r", "v1", false).unwrap().is_none());
        let refs: i64 = c
            .query_row("SELECT count(*) FROM manifest_blobs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(refs, 0);
    }
}
