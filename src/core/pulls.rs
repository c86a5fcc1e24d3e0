//! Pull times, gathered in memory and written in batches: a manifest GET must not cost a
//! database write, yet retention needs to know what was pulled when.

use std::collections::HashMap;
use std::sync::Mutex;

use super::Result;
use crate::db::{Db, manifests};

#[derive(Default)]
pub(super) struct PullLog(Mutex<HashMap<i64, i64>>);

impl PullLog {
    pub(super) fn record(&self, manifest_id: i64, at: i64) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let e = map.entry(manifest_id).or_insert(at);
        *e = (*e).max(at);
    }

    pub(super) async fn flush(&self, db: &Db) -> Result<()> {
        let batch: Vec<(i64, i64)> =
            std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
                .into_iter()
                .collect();
        if batch.is_empty() {
            return Ok(());
        }
        db.write(move |tx| manifests::record_pulls(tx, &batch).map_err(Into::into))
            .await
    }
}
