//! Read models for the web UI: repositories with their figures, a repository's tags a page at
//! a time, a manifest's parts. Every query is bounded by a page or by one manifest.

use rusqlite::{Connection, OptionalExtension, params};

use super::Result;

/// A repository as the repository list shows it.
#[derive(Debug, Clone)]
pub struct RepoRow {
    pub id: i64,
    pub name: String,
    pub tags: u64,
    /// The newest tag push (or manifest push, for untagged content) and who made it.
    pub pushed_at: Option<i64>,
    pub pushed_by: Option<String>,
    pub pulled_at: Option<i64>,
}

/// Every repository that holds a manifest, by name, with its figures (one pass over tags and
/// manifests, not one query per repository). `pushed_by` is left empty: `last_pusher` reads
/// it for the repositories a page shows.
pub fn repositories(c: &Connection) -> Result<Vec<RepoRow>> {
    let mut st = c.prepare_cached(
        "SELECT r.id, r.name, coalesce(t.n, 0), m.pushed, m.pulled, t.last
         FROM repositories r
         JOIN (SELECT repository_id, max(pushed_at) AS pushed, max(last_pulled_at) AS pulled
               FROM manifests GROUP BY repository_id) m ON m.repository_id = r.id
         LEFT JOIN (SELECT repository_id, count(*) AS n, max(updated_at) AS last
                    FROM tags GROUP BY repository_id) t ON t.repository_id = r.id
         ORDER BY r.name",
    )?;
    let rows = st.query_map([], |r| {
        let manifest_push: Option<i64> = r.get(3)?;
        let tag_push: Option<i64> = r.get(5)?;
        Ok(RepoRow {
            id: r.get(0)?,
            name: r.get(1)?,
            tags: r.get::<_, i64>(2)? as u64,
            pushed_at: tag_push.max(manifest_push),
            pushed_by: None,
            pulled_at: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Who made the repository's newest push (a tag, or a manifest pushed by digest): the push
/// `RepoRow::pushed_at` dates.
pub fn last_pusher(c: &Connection, repo_id: i64) -> Result<Option<String>> {
    Ok(c.prepare_cached(
        "SELECT who FROM (
             SELECT updated_at AS at, pushed_by AS who FROM tags WHERE repository_id = ?1
             UNION ALL
             SELECT pushed_at, pushed_by FROM manifests WHERE repository_id = ?1)
         ORDER BY at DESC LIMIT 1",
    )?
    .query_row(params![repo_id], |r| r.get(0))
    .optional()?
    .flatten())
}

/// Bytes a repository holds: its blobs and manifests, and the part of them no other
/// repository holds (its manifests are its own). A repository holds a blob once it was
/// pushed or mounted there (every blob its manifests reference is).
pub fn repo_size(c: &Connection, repo_id: i64) -> Result<(u64, u64)> {
    let (total, own): (i64, i64) = c
        .prepare_cached(
            "SELECT coalesce(sum(b.size), 0),
                    coalesce(sum(CASE WHEN EXISTS (
                        SELECT 1 FROM repository_blobs o
                        WHERE o.digest = rb.digest AND o.repository_id <> ?1)
                    THEN 0 ELSE b.size END), 0)
             FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest
             WHERE rb.repository_id = ?1",
        )?
        .query_row(params![repo_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let manifests: i64 = c
        .prepare_cached("SELECT coalesce(sum(size), 0) FROM manifests WHERE repository_id = ?1")?
        .query_row(params![repo_id], |r| r.get(0))?;
    Ok(((total + manifests) as u64, (own + manifests) as u64))
}

/// `repo_size` of every repository at once (two passes, not a query per repository), by id.
pub fn all_sizes(c: &Connection) -> Result<std::collections::HashMap<i64, (u64, u64)>> {
    let mut out = std::collections::HashMap::new();
    let mut st = c.prepare_cached(
        "SELECT rb.repository_id, sum(b.size), sum(CASE WHEN h.n = 1 THEN b.size ELSE 0 END)
         FROM repository_blobs rb
         JOIN blobs b ON b.digest = rb.digest
         JOIN (SELECT digest, count(*) AS n FROM repository_blobs GROUP BY digest) h
              ON h.digest = rb.digest
         GROUP BY rb.repository_id",
    )?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        let (total, own): (i64, i64) = (r.get(1)?, r.get(2)?);
        out.insert(r.get(0)?, (total as u64, own as u64));
    }
    let mut st =
        c.prepare_cached("SELECT repository_id, sum(size) FROM manifests GROUP BY repository_id")?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        let n = r.get::<_, i64>(1)? as u64;
        let e = out.entry(r.get(0)?).or_insert((0, 0));
        *e = (e.0 + n, e.1 + n);
    }
    Ok(out)
}

/// How a tag list is ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagOrder {
    NewestFirst,
    OldestFirst,
    Name,
}

/// A tag with the manifest it points at.
#[derive(Debug, Clone)]
pub struct TagRow {
    pub name: String,
    pub pushed_at: i64,
    pub pushed_by: Option<String>,
    pub manifest: ManifestRow,
}

/// A stored manifest's bookkeeping (its content is read separately, when wanted).
#[derive(Debug, Clone)]
pub struct ManifestRow {
    pub id: i64,
    pub digest: String,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub size: u64,
    pub pushed_at: i64,
    pub pushed_by: Option<String>,
    pub pulled_at: Option<i64>,
    pub pulled_by: Option<String>,
}

const MANIFEST_COLUMNS: &str = "m.id, m.digest, m.media_type, m.artifact_type, m.size,
    m.pushed_at, m.pushed_by, m.last_pulled_at, m.last_pulled_by";

fn manifest_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<ManifestRow> {
    Ok(ManifestRow {
        id: r.get(at)?,
        digest: r.get(at + 1)?,
        media_type: r.get(at + 2)?,
        artifact_type: r.get(at + 3)?,
        size: r.get::<_, i64>(at + 4)? as u64,
        pushed_at: r.get(at + 5)?,
        pushed_by: r.get(at + 6)?,
        pulled_at: r.get(at + 7)?,
        pulled_by: r.get(at + 8)?,
    })
}

/// `%text%` for LIKE, matching `text` literally.
fn contains(text: &str) -> String {
    format!("%{}%", super::like_literal(text))
}

/// One page of a repository's tags whose name contains `filter`, and how many match in all.
pub fn tags(
    c: &Connection,
    repo_id: i64,
    filter: &str,
    order: TagOrder,
    offset: u64,
    limit: u64,
) -> Result<(u64, Vec<TagRow>)> {
    let like = contains(filter);
    let total: i64 = c
        .prepare_cached(
            "SELECT count(*) FROM tags WHERE repository_id = ?1 AND name LIKE ?2 ESCAPE '\\'",
        )?
        .query_row(params![repo_id, like], |r| r.get(0))?;
    let order_by = match order {
        TagOrder::NewestFirst => "t.updated_at DESC, t.name",
        TagOrder::OldestFirst => "t.updated_at, t.name",
        TagOrder::Name => "t.name",
    };
    let sql = format!(
        "SELECT t.name, t.updated_at, t.pushed_by, {MANIFEST_COLUMNS}
         FROM tags t JOIN manifests m ON m.id = t.manifest_id
         WHERE t.repository_id = ?1 AND t.name LIKE ?2 ESCAPE '\\'
         ORDER BY {order_by} LIMIT ?3 OFFSET ?4"
    );
    let mut st = c.prepare_cached(&sql)?;
    let rows = st.query_map(params![repo_id, like, limit as i64, offset as i64], |r| {
        Ok(TagRow {
            name: r.get(0)?,
            pushed_at: r.get(1)?,
            pushed_by: r.get(2)?,
            manifest: manifest_row(r, 3)?,
        })
    })?;
    Ok((total as u64, rows.collect::<rusqlite::Result<_>>()?))
}

/// A manifest of a repository by digest, with its content.
pub fn manifest(
    c: &Connection,
    repo_id: i64,
    digest: &str,
) -> Result<Option<(ManifestRow, Vec<u8>)>> {
    let sql = format!(
        "SELECT {MANIFEST_COLUMNS}, m.content FROM manifests m
         WHERE m.repository_id = ?1 AND m.digest = ?2"
    );
    Ok(c.prepare_cached(&sql)?
        .query_row(params![repo_id, digest], |r| {
            Ok((manifest_row(r, 0)?, r.get(9)?))
        })
        .optional()?)
}

/// The id of a manifest of a repository.
pub fn manifest_id(c: &Connection, repo_id: i64, digest: &str) -> Result<Option<i64>> {
    Ok(
        c.prepare_cached("SELECT id FROM manifests WHERE repository_id = ?1 AND digest = ?2")?
            .query_row(params![repo_id, digest], |r| r.get(0))
            .optional()?,
    )
}

/// Tags of a repository that point at a manifest, by name, at most 100.
pub fn tags_of(c: &Connection, repo_id: i64, manifest_id: i64) -> Result<Vec<String>> {
    let mut st = c.prepare_cached(
        "SELECT name FROM tags WHERE repository_id = ?1 AND manifest_id = ?2
         ORDER BY name LIMIT 100",
    )?;
    let rows = st.query_map(params![repo_id, manifest_id], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The content of a manifest by id.
pub fn content(c: &Connection, manifest_id: i64) -> Result<Vec<u8>> {
    Ok(
        c.prepare_cached("SELECT content FROM manifests WHERE id = ?1")?
            .query_row(params![manifest_id], |r| r.get(0))?,
    )
}

/// The bytes of the blobs a manifest references (its config and layers).
pub fn blob_bytes(c: &Connection, manifest_id: i64) -> Result<u64> {
    let n: i64 = c
        .prepare_cached(
            "SELECT coalesce(sum(b.size), 0) FROM manifest_blobs mb
             JOIN blobs b ON b.digest = mb.digest WHERE mb.manifest_id = ?1",
        )?
        .query_row(params![manifest_id], |r| r.get(0))?;
    Ok(n as u64)
}

/// The size of a blob and how many manifests in the whole registry reference it.
pub fn blob_use(c: &Connection, digest: &str) -> Result<Option<(u64, u64)>> {
    Ok(c.prepare_cached(
        "SELECT b.size, (SELECT count(*) FROM manifest_blobs mb WHERE mb.digest = b.digest)
             FROM blobs b WHERE b.digest = ?1",
    )?
    .query_row(params![digest], |r| {
        Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
    })
    .optional()?)
}

/// Manifests of a repository whose subject is `digest`: (digest, artifact type or media
/// type), at most `limit`.
pub fn referrers(
    c: &Connection,
    repo_id: i64,
    digest: &str,
    limit: u64,
) -> Result<Vec<(String, String)>> {
    let mut st = c.prepare_cached(
        "SELECT digest, coalesce(artifact_type, media_type) FROM manifests
         WHERE repository_id = ?1 AND subject_digest = ?2 ORDER BY pushed_at DESC, digest
         LIMIT ?3",
    )?;
    let rows = st.query_map(params![repo_id, digest, limit as i64], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Figures for the dashboard at `now`: tags pushed and images pulled since `since`.
pub fn activity(c: &Connection, since: i64) -> Result<(u64, u64)> {
    let pushed: i64 = c
        .prepare_cached("SELECT count(*) FROM tags WHERE updated_at >= ?1")?
        .query_row(params![since], |r| r.get(0))?;
    let pulled: i64 = c
        .prepare_cached("SELECT count(*) FROM manifests WHERE last_pulled_at >= ?1")?
        .query_row(params![since], |r| r.get(0))?;
    Ok((pushed as u64, pulled as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{manifests, repos, tags as tag_table};

    fn blob(c: &Connection, d: &str, size: u64) {
        crate::db::blobs::insert(c, d, size, 1).unwrap();
    }

    fn manifest_in(c: &Connection, repo: i64, d: &str, blobs: &[&str], by: Option<&str>) -> i64 {
        let blobs: Vec<String> = blobs.iter().map(|s| s.to_string()).collect();
        manifests::insert(
            c,
            &manifests::NewManifest {
                repo_id: repo,
                digest: d,
                media_type: "application/vnd.oci.image.manifest.v1+json",
                artifact_type: None,
                subject: None,
                annotations: None,
                content: b"{}",
                blobs: &blobs,
                children: &[],
                now: 5,
                pushed_by: by,
            },
        )
        .unwrap()
    }

    #[test]
    fn sizes_split_own_and_shared_bytes() {
        let c = crate::db::tests_support::memory();
        let (a, b) = (
            repos::ensure(&c, "a", 1).unwrap(),
            repos::ensure(&c, "b", 1).unwrap(),
        );
        blob(&c, "sha256:shared", 100);
        blob(&c, "sha256:own", 10);
        for (r, d) in [
            (a, "sha256:shared"),
            (a, "sha256:own"),
            (b, "sha256:shared"),
        ] {
            crate::db::blobs::link(&c, r, d, 1).unwrap();
        }
        let m = manifest_in(
            &c,
            a,
            "sha256:m1",
            &["sha256:shared", "sha256:own"],
            Some("ci"),
        );
        manifest_in(&c, b, "sha256:m2", &["sha256:shared"], None);
        tag_table::set_at(&c, a, "v1", m, 7, 7, Some("ci")).unwrap();
        // Two bytes of manifest content each ("{}").
        assert_eq!(repo_size(&c, a).unwrap(), (112, 12));
        assert_eq!(repo_size(&c, b).unwrap(), (102, 2));
        let all = all_sizes(&c).unwrap();
        assert_eq!((all[&a], all[&b]), ((112, 12), (102, 2)));
        let rows = repositories(&c).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].name, "a");
        assert_eq!((rows[0].tags, rows[0].pushed_at), (1, Some(7)));
        assert_eq!(last_pusher(&c, a).unwrap().as_deref(), Some("ci"));
        assert_eq!(last_pusher(&c, b).unwrap(), None, "b's push named nobody");
        assert_eq!((rows[1].tags, rows[1].pushed_at), (0, Some(5)));
        assert_eq!(blob_use(&c, "sha256:shared").unwrap(), Some((100, 2)));
        assert_eq!(blob_bytes(&c, m).unwrap(), 110);
    }

    #[test]
    fn tag_pages_filter_literally_and_order() {
        let c = crate::db::tests_support::memory();
        let r = repos::ensure(&c, "a", 1).unwrap();
        let m = manifest_in(&c, r, "sha256:m", &[], None);
        for (i, t) in ["v1", "v_2", "v%3", "latest"].iter().enumerate() {
            tag_table::set_at(&c, r, t, m, 10 + i as i64, 10, None).unwrap();
        }
        let (n, rows) = tags(&c, r, "", TagOrder::NewestFirst, 0, 2).unwrap();
        assert_eq!(n, 4);
        let names: Vec<_> = rows.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["latest", "v%3"]);
        let (n, rows) = tags(&c, r, "_", TagOrder::Name, 0, 10).unwrap();
        assert_eq!(
            (n, rows[0].name.as_str()),
            (1, "v_2"),
            "_ is not a wildcard"
        );
        let (n, _) = tags(&c, r, "%", TagOrder::Name, 0, 10).unwrap();
        assert_eq!(n, 1, "% is not a wildcard");
        let (_, rows) = tags(&c, r, "v", TagOrder::OldestFirst, 1, 10).unwrap();
        let names: Vec<_> = rows.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["v_2", "v%3"]);
    }
}
