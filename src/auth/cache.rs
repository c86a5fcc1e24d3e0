//! Credential states kept between requests. An entry is good while the database's auth epoch
//! is the one it was read at (every change to users, grants, tokens or anonymous pulls moves
//! the epoch, in whichever process), and until the token it describes expires.

use std::collections::HashMap;
use std::sync::Mutex;

use super::Subject;

/// Entries kept at most; beyond, the cache starts over (cheaply refilled).
const MAX_ENTRIES: usize = 10_000;

#[derive(Clone)]
pub(super) struct Entry {
    pub subject: Subject,
    pub epoch: i64,
    /// A robot token's expiry.
    pub expires_at: Option<i64>,
    /// When the state was read (password entries are re-verified after a while).
    pub at: i64,
}

#[derive(Default)]
pub(super) struct Cache(Mutex<HashMap<String, Entry>>);

impl Cache {
    /// The cached state of `key`, if read at `epoch`, unexpired at `now` and younger than
    /// `max_age` seconds.
    pub fn get(&self, key: &str, epoch: i64, now: i64, max_age: i64) -> Option<Subject> {
        self.peek(key, now, max_age)
            .filter(|(_, read_at)| *read_at == epoch)
            .map(|(subject, _)| subject)
    }

    /// The cached state of `key` with the epoch it was read at, if unexpired at `now` and
    /// younger than `max_age` seconds, whatever the current epoch.
    pub fn peek(&self, key: &str, now: i64, max_age: i64) -> Option<(Subject, i64)> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let e = map.get(key)?;
        let fresh = e.expires_at.is_none_or(|x| now < x) && now.saturating_sub(e.at) < max_age;
        fresh.then(|| (e.subject.clone(), e.epoch))
    }

    pub fn put(&self, key: String, entry: Entry) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(key, entry);
    }

    pub fn remove(&self, key: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    /// Remember a state just read (with its token expiry) and hand the state back. A state
    /// found gone (revoked, disabled, expired) is forgotten, so that nothing answers from
    /// the old one.
    pub fn keep(
        &self,
        key: String,
        epoch: i64,
        now: i64,
        found: Option<(Subject, Option<i64>)>,
    ) -> Option<Subject> {
        let Some((subject, expires_at)) = found else {
            self.remove(&key);
            return None;
        };
        self.put(
            key,
            Entry {
                subject: subject.clone(),
                epoch,
                expires_at,
                at: now,
            },
        );
        Some(subject)
    }
}
