//! `tokens` and `token_scopes`: robot credentials, stored by the SHA-256 of their secret.

use rusqlite::{Connection, OptionalExtension, params};

use super::Result;

#[derive(Debug, Clone)]
pub struct Token {
    pub id: i64,
    pub name: String,
    pub user_id: i64,
    pub user_name: String,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub last_used_addr: Option<String>,
    pub revoked_at: Option<i64>,
    /// Drawn anew on creation and rotation: bearer tokens carry it.
    pub stamp: i64,
}

const SELECT: &str = "SELECT t.id, t.name, t.user_id, u.name, t.expires_at, t.created_at,
        t.last_used_at, t.last_used_addr, t.revoked_at, t.stamp
    FROM tokens t JOIN users u ON u.id = t.user_id";

fn token(r: &rusqlite::Row<'_>) -> rusqlite::Result<Token> {
    Ok(Token {
        id: r.get(0)?,
        name: r.get(1)?,
        user_id: r.get(2)?,
        user_name: r.get(3)?,
        expires_at: r.get(4)?,
        created_at: r.get(5)?,
        last_used_at: r.get(6)?,
        last_used_addr: r.get(7)?,
        revoked_at: r.get(8)?,
        stamp: r.get(9)?,
    })
}

pub struct NewToken<'a> {
    pub name: &'a str,
    pub user_id: i64,
    pub secret_sha256: &'a str,
    pub expires_at: Option<i64>,
    pub scopes: &'a [(String, String)],
    pub now: i64,
}

/// Insert a token and its scopes; `None` when the name is taken.
pub fn insert(c: &Connection, t: &NewToken<'_>) -> Result<Option<i64>> {
    let n = c.execute(
        "INSERT INTO tokens (name, user_id, secret_sha256, expires_at, created_at, stamp)
         VALUES (?1, ?2, ?3, ?4, ?5, random()) ON CONFLICT(name) DO NOTHING",
        params![t.name, t.user_id, t.secret_sha256, t.expires_at, t.now],
    )?;
    if n == 0 {
        return Ok(None);
    }
    let id = c.last_insert_rowid();
    let mut st =
        c.prepare("INSERT INTO token_scopes (token_id, pattern, actions) VALUES (?1, ?2, ?3)")?;
    for (pattern, actions) in t.scopes {
        st.execute(params![id, pattern, actions])?;
    }
    Ok(Some(id))
}

pub fn by_secret(c: &Connection, secret_sha256: &str) -> Result<Option<Token>> {
    Ok(
        c.prepare_cached(&format!("{SELECT} WHERE t.secret_sha256 = ?1"))?
            .query_row([secret_sha256], token)
            .optional()?,
    )
}

pub fn by_id(c: &Connection, id: i64) -> Result<Option<Token>> {
    Ok(c.prepare_cached(&format!("{SELECT} WHERE t.id = ?1"))?
        .query_row([id], token)
        .optional()?)
}

pub fn by_name(c: &Connection, name: &str) -> Result<Option<Token>> {
    Ok(c.prepare_cached(&format!("{SELECT} WHERE t.name = ?1"))?
        .query_row([name], token)
        .optional()?)
}

/// All tokens, or those of one user, by name.
pub fn list(c: &Connection, user_id: Option<i64>) -> Result<Vec<Token>> {
    let mut st = c.prepare(&format!(
        "{SELECT} WHERE ?1 IS NULL OR t.user_id = ?1 ORDER BY t.name"
    ))?;
    let rows = st.query_map([user_id], token)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn scopes(c: &Connection, token_id: i64) -> Result<Vec<(String, String)>> {
    let mut st = c.prepare_cached(
        "SELECT pattern, actions FROM token_scopes WHERE token_id = ?1 ORDER BY pattern",
    )?;
    let rows = st.query_map([token_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn revoke(c: &Connection, id: i64, now: i64) -> Result<bool> {
    let n = c.execute(
        "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        params![id, now],
    )?;
    Ok(n > 0)
}

/// Give a token a new secret and stamp (ending the bearer tokens issued for the old one).
pub fn rotate(c: &Connection, id: i64, secret_sha256: &str) -> Result<()> {
    c.execute(
        "UPDATE tokens SET secret_sha256 = ?2, stamp = random() WHERE id = ?1",
        params![id, secret_sha256],
    )?;
    Ok(())
}

/// Delete a token and its scopes.
pub fn delete(c: &Connection, id: i64) -> Result<()> {
    c.execute("DELETE FROM tokens WHERE id = ?1", [id])?;
    Ok(())
}

pub fn touch(c: &Connection, id: i64, now: i64, addr: &str) -> Result<()> {
    c.prepare_cached("UPDATE tokens SET last_used_at = ?2, last_used_addr = ?3 WHERE id = ?1")?
        .execute(params![id, now, addr])?;
    Ok(())
}
