//! Failed-login throttling per (client address, account name): after a few failures each
//! new failure doubles a lockout, up to a ceiling. A success clears the record. Keyed by both
//! so that an attacker guessing one account from one address locks out only that pair: the
//! owner, from elsewhere, still gets in.

use std::collections::HashMap;
use std::sync::Mutex;

/// Failures allowed before any lockout.
const FREE_FAILURES: u32 = 5;
/// Longest lockout, seconds.
const MAX_LOCK_SECS: i64 = 15 * 60;
/// Entries kept at most; the oldest are dropped beyond (a flood of random names).
const MAX_ENTRIES: usize = 100_000;

#[derive(Default)]
pub struct Throttle(Mutex<HashMap<(String, String), Record>>);

#[derive(Clone, Copy)]
struct Record {
    failures: u32,
    locked_until: i64,
    last: i64,
}

impl Throttle {
    /// `Some(seconds)` to wait when the pair is locked out at `now`.
    pub fn locked(&self, addr: &str, name: &str, now: i64) -> Option<i64> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(addr.to_string(), name.to_string()))
            .filter(|r| r.locked_until > now)
            .map(|r| r.locked_until - now)
    }

    pub fn failure(&self, addr: &str, name: &str, now: i64) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ENTRIES {
            let cutoff = now - MAX_LOCK_SECS;
            map.retain(|_, r| r.last > cutoff);
        }
        let r = map
            .entry((addr.to_string(), name.to_string()))
            .or_insert(Record {
                failures: 0,
                locked_until: 0,
                last: now,
            });
        r.failures += 1;
        r.last = now;
        if r.failures >= FREE_FAILURES {
            let exp = (r.failures - FREE_FAILURES).min(20);
            r.locked_until = now + (1i64 << exp).min(MAX_LOCK_SECS);
        }
    }

    pub fn success(&self, addr: &str, name: &str) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&(addr.to_string(), name.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockout_grows_and_is_per_pair() {
        let t = Throttle::default();
        for _ in 0..4 {
            t.failure("1.1.1.1", "bob", 100);
        }
        assert_eq!(t.locked("1.1.1.1", "bob", 100), None);
        t.failure("1.1.1.1", "bob", 100);
        assert_eq!(t.locked("1.1.1.1", "bob", 100), Some(1));
        t.failure("1.1.1.1", "bob", 100);
        assert_eq!(t.locked("1.1.1.1", "bob", 100), Some(2));
        assert_eq!(t.locked("2.2.2.2", "bob", 100), None);
        assert_eq!(t.locked("1.1.1.1", "bob", 103), None);
        for _ in 0..40 {
            t.failure("1.1.1.1", "bob", 200);
        }
        assert_eq!(t.locked("1.1.1.1", "bob", 200), Some(MAX_LOCK_SECS));
        t.success("1.1.1.1", "bob");
        assert_eq!(t.locked("1.1.1.1", "bob", 200), None);
    }
}
