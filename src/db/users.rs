//! `users`, `grants` and `anonymous_pulls`.

use rusqlite::{Connection, OptionalExtension, params};

use super::Result;

#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub password_hash: String,
    pub is_admin: bool,
    pub disabled: bool,
    pub created_at: i64,
    pub last_login_at: Option<i64>,
    /// Drawn anew on creation, password change, disable and enable: bearer tokens carry it.
    pub stamp: i64,
}

const COLUMNS: &str =
    "id, name, password_hash, is_admin, disabled, created_at, last_login_at, stamp";

fn user(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        name: r.get(1)?,
        password_hash: r.get(2)?,
        is_admin: r.get(3)?,
        disabled: r.get(4)?,
        created_at: r.get(5)?,
        last_login_at: r.get(6)?,
        stamp: r.get(7)?,
    })
}

pub fn count(c: &Connection) -> Result<i64> {
    Ok(c.query_row("SELECT count(*) FROM users", [], |r| r.get(0))?)
}

/// Insert a user; `false` when the name is taken.
pub fn insert(c: &Connection, name: &str, hash: &str, admin: bool, now: i64) -> Result<bool> {
    let n = c.execute(
        "INSERT INTO users (name, password_hash, is_admin, created_at, stamp)
         VALUES (?1, ?2, ?3, ?4, random()) ON CONFLICT(name) DO NOTHING",
        params![name, hash, admin, now],
    )?;
    Ok(n > 0)
}

pub fn by_name(c: &Connection, name: &str) -> Result<Option<User>> {
    Ok(
        c.prepare_cached(&format!("SELECT {COLUMNS} FROM users WHERE name = ?1"))?
            .query_row([name], user)
            .optional()?,
    )
}

pub fn by_id(c: &Connection, id: i64) -> Result<Option<User>> {
    Ok(
        c.prepare_cached(&format!("SELECT {COLUMNS} FROM users WHERE id = ?1"))?
            .query_row([id], user)
            .optional()?,
    )
}

pub fn list(c: &Connection) -> Result<Vec<User>> {
    let mut st = c.prepare(&format!("SELECT {COLUMNS} FROM users ORDER BY name"))?;
    let rows = st.query_map([], user)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn set_password(c: &Connection, id: i64, hash: &str) -> Result<()> {
    c.execute(
        "UPDATE users SET password_hash = ?2, stamp = random() WHERE id = ?1",
        params![id, hash],
    )?;
    Ok(())
}

/// Replace an imported hash by an argon2id one of the same password, unless the password
/// changed meanwhile. The stamp stays: tokens issued under the old hash remain valid.
pub fn upgrade_hash(c: &Connection, id: i64, old: &str, new: &str) -> Result<bool> {
    Ok(c.execute(
        "UPDATE users SET password_hash = ?3 WHERE id = ?1 AND password_hash = ?2",
        params![id, old, new],
    )? > 0)
}

pub fn set_disabled(c: &Connection, id: i64, disabled: bool) -> Result<()> {
    c.execute(
        "UPDATE users SET disabled = ?2, stamp = random() WHERE id = ?1 AND disabled != ?2",
        params![id, disabled],
    )?;
    Ok(())
}

pub fn delete(c: &Connection, id: i64) -> Result<()> {
    c.execute("DELETE FROM users WHERE id = ?1", [id])?;
    Ok(())
}

pub fn touch_login(c: &Connection, id: i64, now: i64) -> Result<()> {
    c.execute(
        "UPDATE users SET last_login_at = ?2 WHERE id = ?1",
        params![id, now],
    )?;
    Ok(())
}

/// Grants of a user as (pattern, actions) text pairs, sorted by pattern.
pub fn grants(c: &Connection, user_id: i64) -> Result<Vec<(String, String)>> {
    let mut st = c.prepare_cached(
        "SELECT pattern, actions FROM grants WHERE user_id = ?1 ORDER BY pattern",
    )?;
    let rows = st.query_map([user_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Set (replace) the actions of a user on a pattern.
pub fn grant(c: &Connection, user_id: i64, pattern: &str, actions: &str) -> Result<()> {
    c.execute(
        "INSERT INTO grants (user_id, pattern, actions) VALUES (?1, ?2, ?3)
         ON CONFLICT(user_id, pattern) DO UPDATE SET actions = excluded.actions",
        params![user_id, pattern, actions],
    )?;
    Ok(())
}

pub fn revoke(c: &Connection, user_id: i64, pattern: &str) -> Result<bool> {
    let n = c.execute(
        "DELETE FROM grants WHERE user_id = ?1 AND pattern = ?2",
        params![user_id, pattern],
    )?;
    Ok(n > 0)
}

pub fn anonymous_patterns(c: &Connection) -> Result<Vec<String>> {
    let mut st = c.prepare_cached("SELECT pattern FROM anonymous_pulls ORDER BY pattern")?;
    let rows = st.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn set_anonymous(c: &Connection, pattern: &str, open: bool) -> Result<bool> {
    let n = if open {
        c.execute(
            "INSERT INTO anonymous_pulls (pattern) VALUES (?1) ON CONFLICT DO NOTHING",
            [pattern],
        )?
    } else {
        c.execute("DELETE FROM anonymous_pulls WHERE pattern = ?1", [pattern])?
    };
    Ok(n > 0)
}
