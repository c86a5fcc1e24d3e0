//! `audit`: who did what, when, from where.

use rusqlite::{Connection, params};

use super::Result;

#[derive(Debug, Clone)]
pub struct Entry {
    pub at: i64,
    pub actor: Option<String>,
    pub client_addr: Option<String>,
    pub action: String,
    pub detail: Option<String>,
}

pub fn insert(c: &Connection, e: &Entry) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO audit (at, actor, client_addr, action, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![e.at, e.actor, e.client_addr, e.action, e.detail])?;
    Ok(())
}

/// The newest entries first.
pub fn recent(c: &Connection, limit: i64) -> Result<Vec<Entry>> {
    let mut st = c.prepare(
        "SELECT at, actor, client_addr, action, detail FROM audit ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = st.query_map([limit], |r| {
        Ok(Entry {
            at: r.get(0)?,
            actor: r.get(1)?,
            client_addr: r.get(2)?,
            action: r.get(3)?,
            detail: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
