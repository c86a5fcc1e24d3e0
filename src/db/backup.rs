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

/// Whether a manifest lists the blob.
pub fn blob_in_use(c: &Connection, digest: &str) -> Result<bool> {
    Ok(c.query_row(
        "SELECT EXISTS(SELECT 1 FROM manifest_blobs WHERE digest = ?1)",
        [digest],
        |r| r.get(0),
    )?)
}

/// Make a snapshot a backup: no upload sessions (their bytes are not in it), and no rows of
/// blobs collected between the snapshot and their copy (nothing listed them).
pub fn trim_snapshot(c: &mut Connection, collected: &[String]) -> Result<()> {
    let tx = c.transaction()?;
    tx.execute("DELETE FROM uploads", [])?;
    for d in collected {
        tx.execute("DELETE FROM repository_blobs WHERE digest = ?1", [d])?;
        tx.execute("DELETE FROM blobs WHERE digest = ?1", [d])?;
    }
    tx.commit()?;
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
         WHERE NOT EXISTS (SELECT 1 FROM manifests c
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
