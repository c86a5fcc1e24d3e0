//! `settings`: server-wide values.

use rusqlite::{Connection, params};

use super::Result;

/// Store `value` unless the key has one already; returns the value in force.
pub fn get_or_insert(c: &Connection, key: &str, value: &[u8]) -> Result<Vec<u8>> {
    c.execute(
        "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO NOTHING",
        params![key, value],
    )?;
    Ok(
        c.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
            r.get(0)
        })?,
    )
}

/// The auth epoch: moves forward with every change to users, grants, tokens, scopes and
/// anonymous pulls (triggers in the same transaction).
pub fn auth_epoch(c: &Connection) -> Result<i64> {
    Ok(c.prepare_cached("SELECT n FROM auth_epoch WHERE id = 1")?
        .query_row([], |r| r.get(0))?)
}

/// A real write (readiness): the time of the last probe.
pub fn probe_write(c: &Connection, now: i64) -> Result<()> {
    c.execute(
        "INSERT INTO settings (key, value) VALUES ('ready_probe', ?1)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![now.to_string().into_bytes()],
    )?;
    Ok(())
}

/// Blobs recorded, their bytes, and upload sessions open (for /metrics).
pub fn stats(c: &Connection) -> Result<(u64, u64, u64)> {
    Ok(c.prepare_cached(
        "SELECT (SELECT count(*) FROM blobs), (SELECT coalesce(sum(size), 0) FROM blobs),
                (SELECT count(*) FROM uploads)",
    )?
    .query_row([], |r| {
        Ok((
            r.get::<_, i64>(0)? as u64,
            r.get::<_, i64>(1)? as u64,
            r.get::<_, i64>(2)? as u64,
        ))
    })?)
}

/// A trivial read: does the database answer?
pub fn ping(c: &Connection) -> Result<()> {
    c.prepare_cached("SELECT 1")?.query_row([], |_| Ok(()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::users;

    #[test]
    fn auth_changes_move_the_epoch_and_bookkeeping_does_not() {
        let c = crate::db::tests_support::memory();
        let e0 = auth_epoch(&c).unwrap();
        users::insert(&c, "u", "hash", false, 0).unwrap();
        let e1 = auth_epoch(&c).unwrap();
        assert!(e1 > e0);
        users::touch_login(&c, 1, 5).unwrap();
        assert_eq!(auth_epoch(&c).unwrap(), e1, "last login is bookkeeping");
        users::set_disabled(&c, 1, true).unwrap();
        let e2 = auth_epoch(&c).unwrap();
        assert!(e2 > e1);
        users::grant(&c, 1, "a/*", "pull").unwrap();
        users::set_anonymous(&c, "p/**", true).unwrap();
        assert!(auth_epoch(&c).unwrap() > e2 + 1);
    }
}
