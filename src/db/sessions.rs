//! `ui_sessions`: web UI sign-ins, stored by the SHA-256 of the cookie value.

use rusqlite::{Connection, OptionalExtension, params};

use super::Result;

/// A stored session with what decides whether it still holds.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: i64,
    /// The user's stamp when they signed in.
    pub stamp: i64,
    pub created_at: i64,
    pub seen_at: i64,
}

/// Sessions one user may hold at once; signing in beyond it ends the oldest.
pub const MAX_PER_USER: i64 = 32;

pub struct NewSession<'a> {
    pub id_sha256: &'a str,
    pub user_id: i64,
    pub stamp: i64,
    pub now: i64,
    pub client_addr: &'a str,
    pub user_agent: &'a str,
}

/// Store a session, ending the user's oldest ones beyond `MAX_PER_USER`.
pub fn insert(c: &Connection, s: &NewSession<'_>) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO ui_sessions (id_sha256, user_id, stamp, created_at, seen_at, client_addr,
             user_agent) VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6)",
    )?
    .execute(params![
        s.id_sha256,
        s.user_id,
        s.stamp,
        s.now,
        s.client_addr,
        s.user_agent
    ])?;
    c.prepare_cached(
        "DELETE FROM ui_sessions WHERE user_id = ?1 AND id_sha256 NOT IN
             (SELECT id_sha256 FROM ui_sessions WHERE user_id = ?1
              ORDER BY created_at DESC, id_sha256 LIMIT ?2)",
    )?
    .execute(params![s.user_id, MAX_PER_USER])?;
    Ok(())
}

pub fn get(c: &Connection, id_sha256: &str) -> Result<Option<Session>> {
    Ok(c.prepare_cached(
        "SELECT user_id, stamp, created_at, seen_at FROM ui_sessions WHERE id_sha256 = ?1",
    )?
    .query_row(params![id_sha256], |r| {
        Ok(Session {
            user_id: r.get(0)?,
            stamp: r.get(1)?,
            created_at: r.get(2)?,
            seen_at: r.get(3)?,
        })
    })
    .optional()?)
}

pub fn touch(c: &Connection, id_sha256: &str, now: i64) -> Result<()> {
    c.prepare_cached("UPDATE ui_sessions SET seen_at = ?2 WHERE id_sha256 = ?1")?
        .execute(params![id_sha256, now])?;
    Ok(())
}

pub fn delete(c: &Connection, id_sha256: &str) -> Result<bool> {
    Ok(
        c.prepare_cached("DELETE FROM ui_sessions WHERE id_sha256 = ?1")?
            .execute(params![id_sha256])?
            > 0,
    )
}

/// Remove sessions idle since before `idle_cutoff` or started before `start_cutoff`.
pub fn delete_expired(c: &Connection, idle_cutoff: i64, start_cutoff: i64) -> Result<usize> {
    Ok(
        c.prepare_cached("DELETE FROM ui_sessions WHERE seen_at < ?1 OR created_at < ?2")?
            .execute(params![idle_cutoff, start_cutoff])?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_holds_a_bounded_number_of_sessions() {
        let c = crate::db::tests_support::memory();
        c.execute(
            "INSERT INTO users (id, name, password_hash, created_at) VALUES (1, 'a', 'x', 0)",
            [],
        )
        .unwrap();
        for i in 0..MAX_PER_USER + 3 {
            let id = format!("s{i:03}");
            let s = NewSession {
                id_sha256: &id,
                user_id: 1,
                stamp: 7,
                now: i,
                client_addr: "127.0.0.1",
                user_agent: "t",
            };
            insert(&c, &s).unwrap();
        }
        assert!(get(&c, "s000").unwrap().is_none(), "the oldest ended");
        assert!(get(&c, "s002").unwrap().is_none());
        let newest = get(&c, &format!("s{:03}", MAX_PER_USER + 2)).unwrap();
        assert_eq!(newest.unwrap().stamp, 7);
        touch(&c, "s010", 100).unwrap();
        assert_eq!(get(&c, "s010").unwrap().unwrap().seen_at, 100);
        // Idle since before 50 (all but s010), or started before 5 (s010 is not).
        assert_eq!(
            delete_expired(&c, 50, 5).unwrap(),
            MAX_PER_USER as usize - 1
        );
        assert!(get(&c, "s010").unwrap().is_some());
        assert!(delete(&c, "s010").unwrap());
        assert!(!delete(&c, "s010").unwrap());
    }
}
