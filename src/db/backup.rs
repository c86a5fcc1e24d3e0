//! The database side of backups, restores and checks, on connections of their own (these
//! run in CLI commands, beside a server that may be writing). Blocking.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, params};

use super::Result;

/// A read-only connection to a database, which may be in use by a server.
pub fn open_read_only(path: &Path) -> Result<Connection> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    c.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(c)
}

/// A read-write connection to a database no server uses (a backup copy, a restore).
pub fn open_private(path: &Path) -> Result<Connection> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    c.pragma_update(None, "foreign_keys", "ON")?;
    Ok(c)
}

/// Copy the database at `live` to a new file `to` with SQLite's online backup, in one step:
/// one read transaction, so the copy is the database at one instant, while writers go on
/// (WAL). The copy is a single file (no WAL), synced.
pub fn snapshot(live: &Path, to: &Path) -> Result<()> {
    let src = open_read_only(live)?;
    let mut dst = Connection::open(to)?;
    {
        let backup = rusqlite::backup::Backup::new(&src, &mut dst)?;
        backup.step(-1)?;
    }
    dst.pragma_update(None, "journal_mode", "DELETE")?;
    dst.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

/// Every blob row: (digest, size), in digest order.
pub fn blobs(c: &Connection) -> Result<Vec<(String, u64)>> {
    let mut st = c.prepare("SELECT digest, size FROM blobs ORDER BY digest")?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Whether a blob row exists.
pub fn has_blob(c: &Connection, digest: &str) -> Result<bool> {
    Ok(c.query_row(
        "SELECT EXISTS(SELECT 1 FROM blobs WHERE digest = ?1)",
        [digest],
        |r| r.get(0),
    )?)
}

/// A blob recorded in the snapshot `snap` is gone from the store. When the server collected it
/// since (the live database `live` has no record of it, nor of any manifest of the snapshot
/// that uses it, nor of any index over those), drop it and those manifests from the snapshot
/// and return `None`: the backup is then the registry at the snapshot's instant less images
/// deleted and collected during the backup. Otherwise the data directory is damaged: `Some`
/// says what still needs the blob.
pub fn forget_collected(
    snap: &mut Connection,
    live: &Connection,
    digest: &str,
) -> Result<Option<String>> {
    if has_blob(live, digest)? {
        return Ok(Some("it is still recorded".into()));
    }
    let tx = snap.transaction()?;
    let mut gone: Vec<i64> = Vec::new();
    let mut queue: Vec<(i64, String, i64, String)> = {
        let mut st = tx.prepare(
            "SELECT m.id, r.name, m.repository_id, m.digest FROM manifest_blobs mb
             JOIN manifests m ON m.id = mb.manifest_id
             JOIN repositories r ON r.id = m.repository_id WHERE mb.digest = ?1",
        )?;
        st.query_map([digest], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<rusqlite::Result<_>>()?
    };
    while let Some((id, repo, repo_id, m)) = queue.pop() {
        if gone.contains(&id) {
            continue;
        }
        let live_has: bool = live.query_row(
            "SELECT EXISTS(SELECT 1 FROM manifests m JOIN repositories r ON r.id = m.repository_id
                           WHERE r.name = ?1 AND m.digest = ?2)",
            params![repo, m],
            |r| r.get(0),
        )?;
        if live_has {
            return Ok(Some(format!("{repo}@{m} uses it")));
        }
        gone.push(id);
        let mut st = tx.prepare(
            "SELECT m.id, m.digest FROM manifest_children mc JOIN manifests m ON m.id = mc.manifest_id
             WHERE m.repository_id = ?1 AND mc.child_digest = ?2",
        )?;
        let parents: Vec<(i64, String)> = st
            .query_map(params![repo_id, m], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (pid, pd) in parents {
            queue.push((pid, repo.clone(), repo_id, pd));
        }
    }
    for id in gone {
        // Tags, blob lists and child lists go with it (ON DELETE CASCADE).
        tx.execute("DELETE FROM manifests WHERE id = ?1", [id])?;
    }
    tx.execute("DELETE FROM repository_blobs WHERE digest = ?1", [digest])?;
    tx.execute("DELETE FROM blobs WHERE digest = ?1", [digest])?;
    tx.commit()?;
    Ok(None)
}

/// Make a snapshot a backup: no upload sessions (their bytes are not in it).
pub fn drop_uploads(c: &Connection) -> Result<()> {
    c.execute("DELETE FROM uploads", [])?;
    Ok(())
}

/// Repositories, manifests and tags, for reports.
pub fn counts(c: &Connection) -> Result<(u64, u64, u64)> {
    Ok(c.query_row(
        "SELECT (SELECT count(*) FROM repositories), (SELECT count(*) FROM manifests),
                (SELECT count(*) FROM tags)",
        [],
        |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as u64,
            ))
        },
    )?)
}

/// What is wrong inside the database: SQLite's own check, references to rows that do not
/// exist, and indexes that list manifests their repository does not hold. Empty when sound.
pub fn problems(c: &Connection) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut st = c.prepare("PRAGMA quick_check")?;
    for row in st.query_map([], |r| r.get::<_, String>(0))? {
        let row = row?;
        if row != "ok" {
            out.push(format!("database: {row}"));
        }
    }
    let mut st = c.prepare("PRAGMA foreign_key_check")?;
    for row in st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<i64>>(1)?,
            r.get::<_, String>(2)?,
        ))
    })? {
        let (table, rowid, parent) = row?;
        if table == "manifest_blobs" {
            // Said better below.
            continue;
        }
        let at = rowid.map_or(String::new(), |id| format!(" (row {id})"));
        out.push(format!(
            "database: a row of {table}{at} refers to a missing row of {parent}"
        ));
    }
    let mut st = c.prepare(
        "SELECT r.name, m.digest, mc.child_digest FROM manifest_children mc
         JOIN manifests m ON m.id = mc.manifest_id
         JOIN repositories r ON r.id = m.repository_id
         WHERE m.upstream IS NULL
           AND NOT EXISTS (SELECT 1 FROM manifests c
                           WHERE c.repository_id = m.repository_id AND c.digest = mc.child_digest)
         ORDER BY r.name, m.digest",
    )?;
    for row in st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })? {
        let (repo, index, child) = row?;
        out.push(format!(
            "{repo}@{index} lists {child}, which the repository does not hold"
        ));
    }
    let mut st = c.prepare(
        "SELECT r.name, m.digest, mb.digest FROM manifest_blobs mb
         JOIN manifests m ON m.id = mb.manifest_id
         JOIN repositories r ON r.id = m.repository_id
         WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.digest = mb.digest)
         ORDER BY r.name, m.digest",
    )?;
    for row in st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })? {
        let (repo, m, blob) = row?;
        out.push(format!("{repo}@{m} uses blob {blob}, which has no record"));
    }
    Ok(out)
}

/// The manifests of every repository, (repository, digest), for checks after a restore.
pub fn manifests(c: &Connection) -> Result<Vec<(String, String)>> {
    let mut st = c.prepare(
        "SELECT r.name, m.digest FROM manifests m JOIN repositories r ON r.id = m.repository_id
         ORDER BY r.name, m.digest",
    )?;
    let rows = st.query_map(params![], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::tests_support::memory;

    /// repo `r`: image `m1` (blobs a, b) listed by index `i1`; image `m2` (blob b), tagged.
    fn registry() -> Connection {
        let c = memory();
        c.execute_batch(
            "INSERT INTO repositories (id, name, created_at) VALUES (1, 'r', 0);
             INSERT INTO blobs (digest, size, created_at) VALUES ('a', 1, 0), ('b', 2, 0);
             INSERT INTO repository_blobs (repository_id, digest, seen_at) VALUES (1, 'a', 0), (1, 'b', 0);
             INSERT INTO manifests (id, repository_id, digest, media_type, size, content, pushed_at)
               VALUES (1, 1, 'm1', 'x', 1, X'00', 0), (2, 1, 'i1', 'x', 1, X'00', 0),
                      (3, 1, 'm2', 'x', 1, X'00', 0);
             INSERT INTO manifest_blobs (manifest_id, digest) VALUES (1, 'a'), (1, 'b'), (3, 'b');
             INSERT INTO manifest_children (manifest_id, child_digest) VALUES (2, 'm1');
             INSERT INTO tags (repository_id, name, manifest_id, updated_at) VALUES (1, 'v1', 2, 0), (1, 'v2', 3, 0);",
        )
        .unwrap();
        c
    }

    fn manifests_of(c: &Connection) -> Vec<String> {
        let mut st = c
            .prepare("SELECT digest FROM manifests ORDER BY digest")
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    #[test]
    fn a_blob_collected_with_its_images_leaves_the_snapshot_with_them() {
        let mut snap = registry();
        // Live: tag v1 deleted, then i1, m1 and blob a collected.
        let live = registry();
        live.execute_batch(
            "DELETE FROM manifests WHERE id IN (1, 2);
             DELETE FROM repository_blobs WHERE digest = 'a'; DELETE FROM blobs WHERE digest = 'a';",
        )
        .unwrap();
        assert_eq!(forget_collected(&mut snap, &live, "a").unwrap(), None);
        assert_eq!(manifests_of(&snap), ["m2"]);
        assert!(!has_blob(&snap, "a").unwrap());
        assert!(has_blob(&snap, "b").unwrap());
        assert!(
            problems(&snap).unwrap().is_empty(),
            "{:?}",
            problems(&snap).unwrap()
        );
    }

    #[test]
    fn a_blob_missing_while_something_live_needs_it_is_damage() {
        let mut snap = registry();
        let live = registry();
        // Still recorded live.
        assert!(
            forget_collected(&mut snap, &live, "a")
                .unwrap()
                .unwrap()
                .contains("still recorded")
        );
        // Record gone, but the image using it is still live: not what a collection does.
        live.execute_batch("DELETE FROM manifest_blobs WHERE digest = 'a'; DELETE FROM repository_blobs WHERE digest = 'a'; DELETE FROM blobs WHERE digest = 'a';")
            .unwrap();
        let why = forget_collected(&mut snap, &live, "a").unwrap().unwrap();
        assert_eq!(why, "r@m1 uses it");
        assert_eq!(manifests_of(&snap), ["i1", "m1", "m2"], "nothing dropped");
    }
}
