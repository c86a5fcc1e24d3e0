//! `gc_runs` and `retention_runs`: tables of the same shape (a row per run, real or dry, with
//! its JSON report), read the same way.

use rusqlite::{Connection, OptionalExtension};

use super::Result;

/// Which runs.
#[derive(Clone, Copy, Debug)]
pub enum Runs {
    Gc,
    Retention,
}

impl Runs {
    fn table(self) -> &'static str {
        match self {
            Runs::Gc => "gc_runs",
            Runs::Retention => "retention_runs",
        }
    }

    /// The column that says what a run did: bytes freed, tags deleted.
    fn did(self) -> &'static str {
        match self {
            Runs::Gc => "bytes_freed",
            Runs::Retention => "deleted",
        }
    }
}

/// The stored reports of the latest `limit` runs, newest first.
pub fn recent(c: &Connection, runs: Runs, limit: i64) -> Result<Vec<(i64, String)>> {
    let sql = format!(
        "SELECT id, report FROM {} ORDER BY id DESC LIMIT ?1",
        runs.table()
    );
    let mut st = c.prepare_cached(&sql)?;
    Ok(st
        .query_map([limit], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?)
}

/// The latest run that changed something (not a dry run): (finished at, what it did — bytes
/// freed or tags deleted —, trigger).
pub fn last_real(c: &Connection, runs: Runs) -> Result<Option<(i64, u64, String)>> {
    let sql = format!(
        "SELECT finished_at, {}, trigger FROM {} WHERE dry_run = 0 ORDER BY id DESC LIMIT 1",
        runs.did(),
        runs.table()
    );
    Ok(c.prepare_cached(&sql)?
        .query_row([], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?))
        })
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_real_run_skips_dry_runs() {
        let c = crate::db::tests_support::memory();
        assert_eq!(last_real(&c, Runs::Gc).unwrap(), None);
        crate::db::gc::insert_run(&c, "cli", false, 1, 2, 100, "{}").unwrap();
        crate::db::gc::insert_run(&c, "ui", true, 3, 4, 999, "{}").unwrap();
        assert_eq!(
            last_real(&c, Runs::Gc).unwrap(),
            Some((2, 100, "cli".into()))
        );
        crate::db::retention::insert_run(&c, "ui", false, 5, 6, 3, "{}").unwrap();
        crate::db::retention::insert_run(&c, "ui", true, 7, 8, 9, "{}").unwrap();
        assert_eq!(
            last_real(&c, Runs::Retention).unwrap(),
            Some((6, 3, "ui".into()))
        );
        let ids: Vec<i64> = recent(&c, Runs::Retention, 5)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, [2, 1], "newest first");
    }
}
