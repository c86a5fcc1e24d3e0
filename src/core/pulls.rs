//! Pull times and pullers, gathered in memory and written in batches: a manifest GET must not
//! cost a database write, yet retention needs to know what was pulled when, and by whom.
//! Reads berth makes itself (garbage collection, retention, previews) do not come through
//! here, so they never count as pulls.

use std::collections::HashMap;
use std::sync::Mutex;

use super::Result;
use crate::db::{Db, manifests};

#[derive(Default)]
pub(super) struct PullLog(Mutex<HashMap<i64, (i64, String)>>);

impl PullLog {
    pub(super) fn record(&self, manifest_id: i64, at: i64, who: &str) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match map.get_mut(&manifest_id) {
            Some(e) if e.0 > at => {}
            Some(e) => {
                e.0 = at;
                if e.1 != who {
                    e.1 = who.to_string();
                }
            }
            None => {
                map.insert(manifest_id, (at, who.to_string()));
            }
        }
    }

    /// Whether `manifest_id` was pulled since the last flush.
    pub(super) fn pending(&self, manifest_id: i64) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&manifest_id)
    }

    pub(super) async fn flush(&self, db: &Db) -> Result<()> {
        let batch: Vec<(i64, i64, String)> =
            std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
                .into_iter()
                .map(|(id, (at, who))| (id, at, who))
                .collect();
        if batch.is_empty() {
            return Ok(());
        }
        let kept = batch.clone();
        let written = db
            .write(move |tx| manifests::record_pulls(tx, &batch).map_err(Into::into))
            .await;
        if written.is_err() {
            // Keep them for the next flush: retention and collection count from them.
            for (id, at, who) in kept {
                self.record(id, at, &who);
            }
        }
        written
    }
}
