//! Failed-login throttling per (client address, account name): after a few failures each
//! new failure doubles a lockout, up to a ceiling. A success clears the record. Keyed by both
//! so that an attacker guessing one account from one address locks out only that pair: the
//! owner, from elsewhere, still gets in. An address that fails with many different names
//! (spraying, or random names to dodge the per-pair count) is locked out as a whole after a
//! larger allowance. Records are forgotten after a quiet period.
//!
//! A password check counts as a failure from the moment it starts (`begin`) until it
//! succeeds (`succeeded`): otherwise many guesses sent at once would all be checked before
//! the first failure was written down.

use std::collections::HashMap;
use std::sync::Mutex;

/// Failures allowed before any lockout, per (address, name) and per address.
const FREE_FAILURES: u32 = 5;
const FREE_FAILURES_PER_ADDRESS: u32 = 30;
/// The account-name slot of per-address records (no account is named this).
const ANY: &str = "\0any";
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
    /// `Some(seconds)` to wait when the pair, or the address as a whole, is locked out.
    pub fn locked(&self, addr: &str, name: &str, now: i64) -> Option<i64> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        locked_in(&map, addr, name, now)
    }

    /// Start an attempt that will be checked: refused with the seconds to wait when the pair
    /// or the address is locked out, else counted as a failure until `succeeded`.
    pub fn begin(&self, addr: &str, name: &str, now: i64) -> Result<(), i64> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(wait) = locked_in(&map, addr, name, now) {
            return Err(wait);
        }
        count_failure(&mut map, addr, name, now);
        Ok(())
    }

    /// An attempt started with `begin` succeeded: the pair is clear, and the address no
    /// longer counts it.
    pub fn succeeded(&self, addr: &str, name: &str) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&(addr.to_string(), name.to_string()));
        if let Some(r) = map.get_mut(&(addr.to_string(), ANY.to_string())) {
            r.failures = r.failures.saturating_sub(1);
        }
    }

    /// A failure of an attempt that was not started with `begin`.
    pub fn failure(&self, addr: &str, name: &str, now: i64) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        count_failure(&mut map, addr, name, now);
    }

    /// A success clears the pair (the address record decays on its own).
    pub fn success(&self, addr: &str, name: &str) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&(addr.to_string(), name.to_string()));
    }
}

type Map = HashMap<(String, String), Record>;

fn locked_in(map: &Map, addr: &str, name: &str, now: i64) -> Option<i64> {
    [name, ANY]
        .iter()
        .filter_map(|n| map.get(&(addr.to_string(), n.to_string())))
        .filter(|r| r.locked_until > now)
        .map(|r| r.locked_until - now)
        .max()
}

fn count_failure(map: &mut Map, addr: &str, name: &str, now: i64) {
    if map.len() >= MAX_ENTRIES {
        let cutoff = now - MAX_LOCK_SECS;
        map.retain(|_, r| r.last > cutoff);
        if map.len() >= MAX_ENTRIES {
            // A flood of recent distinct names: start over rather than scan each time.
            map.clear();
        }
    }
    for (key, free) in [(name, FREE_FAILURES), (ANY, FREE_FAILURES_PER_ADDRESS)] {
        let r = map
            .entry((addr.to_string(), key.to_string()))
            .or_insert(Record {
                failures: 0,
                locked_until: 0,
                last: now,
            });
        if now - r.last > MAX_LOCK_SECS {
            r.failures = 0;
        }
        r.failures += 1;
        r.last = now;
        if r.failures >= free {
            let exp = (r.failures - free).min(20);
            r.locked_until = now + (1i64 << exp).min(MAX_LOCK_SECS);
        }
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
        // The pair is clear; the address, after 46 failures, is still locked as a whole.
        assert!(t.locked("1.1.1.1", "bob", 200).is_some());
        assert_eq!(t.locked("1.1.1.1", "bob", 200 + MAX_LOCK_SECS + 1), None);
    }

    #[test]
    fn attempts_in_flight_count_as_failures() {
        let t = Throttle::default();
        // Fifty guesses arriving together: only the free ones start.
        let started = (0..50)
            .filter(|_| t.begin("1.1.1.1", "bob", 100).is_ok())
            .count();
        assert_eq!(started as u32, FREE_FAILURES);
        // A check that succeeds gives the address its count back and clears the pair.
        let t = Throttle::default();
        for _ in 0..FREE_FAILURES_PER_ADDRESS - 1 {
            t.begin("1.1.1.1", "bob", 100).unwrap();
            t.succeeded("1.1.1.1", "bob");
        }
        assert_eq!(t.locked("1.1.1.1", "bob", 100), None);
        assert!(t.begin("1.1.1.1", "carol", 100).is_ok());
    }

    #[test]
    fn random_names_lock_out_the_address() {
        let t = Throttle::default();
        for i in 0..FREE_FAILURES_PER_ADDRESS {
            t.failure("9.9.9.9", &format!("name{i}"), 100);
        }
        assert!(t.locked("9.9.9.9", "anyone", 100).is_some());
        assert_eq!(t.locked("8.8.8.8", "anyone", 100), None);
        // Old failures are forgotten after a quiet period.
        let t = Throttle::default();
        for _ in 0..4 {
            t.failure("1.1.1.1", "bob", 0);
        }
        t.failure("1.1.1.1", "bob", 10_000);
        assert_eq!(t.locked("1.1.1.1", "bob", 10_000), None);
    }
}
