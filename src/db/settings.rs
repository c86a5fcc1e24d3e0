//! `settings`: server-wide values.

use rusqlite::{Connection, OptionalExtension, params};

use super::Result;

pub fn get(c: &Connection, key: &str) -> Result<Option<Vec<u8>>> {
    Ok(
        c.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .optional()?,
    )
}

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
