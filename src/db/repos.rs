//! `repositories`: one row per repository name.

use super::Result;
use rusqlite::{Connection, OptionalExtension, params};

/// The id of `name`, creating the row if needed.
pub fn ensure(c: &Connection, name: &str, now: i64) -> Result<i64> {
    c.execute(
        "INSERT INTO repositories (name, created_at) VALUES (?1, ?2) ON CONFLICT(name) DO NOTHING",
        params![name, now],
    )?;
    Ok(
        c.query_row("SELECT id FROM repositories WHERE name = ?1", [name], |r| {
            r.get(0)
        })?,
    )
}

pub fn find(c: &Connection, name: &str) -> Result<Option<i64>> {
    Ok(
        c.prepare_cached("SELECT id FROM repositories WHERE name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?,
    )
}

/// Repositories that hold at least one manifest and pass `keep`, sorted, after `last`, at
/// most `limit`.
pub fn catalog(
    c: &Connection,
    last: Option<&str>,
    limit: i64,
    keep: &dyn Fn(&str) -> bool,
) -> Result<Vec<String>> {
    let mut st = c.prepare_cached(
        "SELECT r.name FROM repositories r
         WHERE r.name > ?1 AND EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = r.id)
         ORDER BY r.name",
    )?;
    let mut rows = st.query(params![last.unwrap_or("")])?;
    let mut out = Vec::new();
    while (out.len() as i64) < limit {
        let Some(row) = rows.next()? else { break };
        let name: String = row.get(0)?;
        if keep(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensure_is_idempotent() {
        let c = crate::db::tests_support::memory();
        let a = ensure(&c, "a/b", 1).unwrap();
        assert_eq!(ensure(&c, "a/b", 2).unwrap(), a);
        assert_eq!(find(&c, "a/b").unwrap(), Some(a));
        assert_eq!(find(&c, "zz").unwrap(), None);
        // No manifests yet, so not in the catalog.
        assert!(catalog(&c, None, 10, &|_| true).unwrap().is_empty());
    }
}
