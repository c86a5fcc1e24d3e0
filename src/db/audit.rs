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

fn entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    Ok(Entry {
        at: r.get(0)?,
        actor: r.get(1)?,
        client_addr: r.get(2)?,
        action: r.get(3)?,
        detail: r.get(4)?,
    })
}

/// The newest entries first.
pub fn recent(c: &Connection, limit: i64) -> Result<Vec<Entry>> {
    let mut st = c.prepare(
        "SELECT at, actor, client_addr, action, detail FROM audit ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = st.query_map([limit], entry)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// What the audit log is narrowed to; empty fields do not narrow.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Exactly this actor.
    pub actor: String,
    /// Actions starting with this (`token.` for every token change).
    pub action: String,
    /// Text found in the detail or the client address.
    pub text: String,
}

/// One page of the entries that pass `f`, newest first, and how many pass in all.
pub fn page(c: &Connection, f: &Filter, offset: u64, limit: u64) -> Result<(u64, Vec<Entry>)> {
    const WHERE: &str = "WHERE (?1 = '' OR actor = ?1)
          AND (?2 = '' OR action LIKE ?2 || '%' ESCAPE '\\')
          AND (?3 = '' OR detail LIKE '%' || ?3 || '%' ESCAPE '\\'
               OR client_addr LIKE '%' || ?3 || '%' ESCAPE '\\')";
    let (action, text) = (super::like_literal(&f.action), super::like_literal(&f.text));
    let total: i64 = c
        .prepare_cached(&format!("SELECT count(*) FROM audit {WHERE}"))?
        .query_row(params![f.actor, action, text], |r| r.get(0))?;
    let mut st = c.prepare_cached(&format!(
        "SELECT at, actor, client_addr, action, detail FROM audit {WHERE}
         ORDER BY id DESC LIMIT ?4 OFFSET ?5"
    ))?;
    let rows = st.query_map(
        params![f.actor, action, text, limit as i64, offset as i64],
        entry,
    )?;
    Ok((total as u64, rows.collect::<rusqlite::Result<_>>()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_filter_by_actor_action_prefix_and_text() {
        let c = crate::db::tests_support::memory();
        for (i, (actor, action, detail)) in [
            ("ann", "token.create", "ci of ann"),
            ("bob", "tag.delete", "team/app:v1"),
            ("ann", "tag.delete", "team/app:v2"),
            ("ann", "tag.delete", "100%_sure"),
        ]
        .iter()
        .enumerate()
        {
            let e = Entry {
                at: i as i64,
                actor: Some(actor.to_string()),
                client_addr: Some("10.0.0.1".into()),
                action: action.to_string(),
                detail: Some(detail.to_string()),
            };
            insert(&c, &e).unwrap();
        }
        let f = |actor: &str, action: &str, text: &str| Filter {
            actor: actor.into(),
            action: action.into(),
            text: text.into(),
        };
        let (n, rows) = page(&c, &f("", "", ""), 0, 2).unwrap();
        assert_eq!((n, rows.len(), rows[0].at), (4, 2, 3));
        assert_eq!(page(&c, &f("ann", "tag.", ""), 0, 10).unwrap().0, 2);
        assert_eq!(page(&c, &f("", "", "app:v"), 0, 10).unwrap().0, 2);
        assert_eq!(
            page(&c, &f("", "", "%_"), 0, 10).unwrap().0,
            1,
            "literal, not wildcards"
        );
        assert_eq!(
            page(&c, &f("", "", "10.0.0"), 0, 10).unwrap().0,
            4,
            "addresses match too"
        );
        assert_eq!(page(&c, &f("", "tag", ""), 0, 10).unwrap().0, 3);
        assert_eq!(page(&c, &f("carl", "", ""), 0, 10).unwrap().0, 0);
    }
}
