//! Failed-login throttling per (client address, account name): after a few failures each
//! new failure doubles a lockout, up to a ceiling. A success clears the record. Keyed by both
//! so that an attacker guessing one account from one address locks out only that pair: the
//! owner, from elsewhere, still gets in. An address that fails with many different names
//! (spraying, or random names to dodge the per-pair count) is locked out as a whole after a
//! larger allowance. Records are forgotten after a quiet period.
//!
//! Password checks in flight count against the allowance too (`begin`): of many guesses sent
//! at once, only as many are checked as failures are still free; the others are refused at
//! once. A check that ends (`Attempt::succeeded`, `Attempt::failed`, or dropped when its
//! request is cancelled) gives its place back; only a failure is remembered.

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

#[derive(Clone, Copy, Default)]
struct Record {
    failures: u32,
    in_flight: u32,
    locked_until: i64,
    last: i64,
}

type Map = HashMap<(String, String), Record>;

fn key(addr: &str, name: &str) -> (String, String) {
    (addr.to_string(), name.to_string())
}

/// A password check under way: its place in the allowance until it ends.
pub struct Attempt<'a> {
    throttle: &'a Throttle,
    addr: String,
    name: String,
    done: bool,
}

/// How a check ended.
enum Outcome {
    Right,
    Wrong(i64),
    Cancelled,
}

impl Attempt<'_> {
    /// The password was right: the pair is clear.
    pub fn succeeded(mut self) {
        self.finish(Outcome::Right);
    }

    /// The password was wrong (at `now`): a failure, which may lock the pair or the address
    /// out.
    pub fn failed(mut self, now: i64) {
        self.finish(Outcome::Wrong(now));
    }

    /// Give the check's place back, then record how it ended.
    fn finish(&mut self, outcome: Outcome) {
        self.done = true;
        let mut map = self.throttle.lock();
        leave(&mut map, &self.addr, &self.name);
        leave(&mut map, &self.addr, ANY);
        match outcome {
            Outcome::Right => clear(&mut map, &self.addr, &self.name),
            Outcome::Wrong(now) => count_failure(&mut map, &self.addr, &self.name, now),
            Outcome::Cancelled => {}
        }
    }
}

impl Drop for Attempt<'_> {
    /// Cancelled before an answer (the client went away): neither success nor failure.
    fn drop(&mut self) {
        if !self.done {
            self.finish(Outcome::Cancelled);
        }
    }
}

/// Forget a pair's failures and lockout, keeping the count of its other checks under way.
fn clear(map: &mut Map, addr: &str, name: &str) {
    let k = key(addr, name);
    match map.get_mut(&k) {
        Some(r) if r.in_flight > 0 => {
            r.failures = 0;
            r.locked_until = 0;
        }
        Some(_) => {
            map.remove(&k);
        }
        None => {}
    }
}

fn leave(map: &mut Map, addr: &str, name: &str) {
    if let Some(r) = map.get_mut(&key(addr, name)) {
        r.in_flight = r.in_flight.saturating_sub(1);
    }
}

impl Throttle {
    fn lock(&self) -> std::sync::MutexGuard<'_, Map> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Some(seconds)` to wait when the pair, or the address as a whole, is locked out.
    pub fn locked(&self, addr: &str, name: &str, now: i64) -> Option<i64> {
        locked_in(&self.lock(), addr, name, now)
    }

    /// Start a password check: refused with the seconds to wait when the pair or the address
    /// is locked out, or when the checks already under way would use up what is left of its
    /// allowance.
    pub fn begin(&self, addr: &str, name: &str, now: i64) -> Result<Attempt<'_>, i64> {
        let mut map = self.lock();
        if let Some(wait) = locked_in(&map, addr, name, now) {
            return Err(wait);
        }
        make_room(&mut map, now);
        for (n, free) in [(name, FREE_FAILURES), (ANY, FREE_FAILURES_PER_ADDRESS)] {
            let r = map.get(&key(addr, n)).copied().unwrap_or_default();
            let failures = if now - r.last > MAX_LOCK_SECS {
                0
            } else {
                r.failures
            };
            if failures + r.in_flight >= free {
                return Err(1);
            }
        }
        for n in [name, ANY] {
            let r = map.entry(key(addr, n)).or_insert(Record {
                last: now,
                ..Record::default()
            });
            r.in_flight += 1;
        }
        Ok(Attempt {
            throttle: self,
            addr: addr.to_string(),
            name: name.to_string(),
            done: false,
        })
    }

    /// A failure of an attempt that was not started with `begin` (a robot secret).
    pub fn failure(&self, addr: &str, name: &str, now: i64) {
        let mut map = self.lock();
        make_room(&mut map, now);
        count_failure(&mut map, addr, name, now);
    }

    /// A success clears the pair (the address record decays on its own).
    pub fn success(&self, addr: &str, name: &str) {
        clear(&mut self.lock(), addr, name);
    }
}

fn locked_in(map: &Map, addr: &str, name: &str, now: i64) -> Option<i64> {
    [name, ANY]
        .iter()
        .filter_map(|n| map.get(&key(addr, n)))
        .filter(|r| r.locked_until > now)
        .map(|r| r.locked_until - now)
        .max()
}

/// Keep the map bounded: forget quiet records, or everything but checks under way when a
/// flood of recent distinct names fills it.
fn make_room(map: &mut Map, now: i64) {
    if map.len() >= MAX_ENTRIES {
        let cutoff = now - MAX_LOCK_SECS;
        map.retain(|_, r| r.last > cutoff || r.in_flight > 0);
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, r| r.in_flight > 0);
        }
    }
}

fn count_failure(map: &mut Map, addr: &str, name: &str, now: i64) {
    for (n, free) in [(name, FREE_FAILURES), (ANY, FREE_FAILURES_PER_ADDRESS)] {
        let r = map.entry(key(addr, n)).or_insert(Record {
            last: now,
            ..Record::default()
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
    fn checks_in_flight_use_up_the_allowance_and_only_failures_stay() {
        let t = Throttle::default();
        // Fifty guesses arriving together: only the free ones start.
        let started: Vec<_> = (0..50)
            .filter_map(|_| t.begin("1.1.1.1", "bob", 100).ok())
            .collect();
        assert_eq!(started.len() as u32, FREE_FAILURES);
        for a in started {
            a.failed(100);
        }
        assert!(t.locked("1.1.1.1", "bob", 100).is_some());
        // Many right passwords from one address, one after another or cancelled: no lockout.
        let t = Throttle::default();
        for i in 0..100 {
            let name = format!("user{i}");
            t.begin("2.2.2.2", &name, 100).unwrap().succeeded();
            drop(t.begin("2.2.2.2", &name, 100).unwrap());
        }
        assert_eq!(t.locked("2.2.2.2", "anyone", 100), None);
        assert!(t.begin("2.2.2.2", "carol", 100).is_ok());
        // A success (a cached password, say) while other checks of the pair run does not
        // free their places.
        let t = Throttle::default();
        let running: Vec<_> = (0..FREE_FAILURES)
            .map(|_| t.begin("3.3.3.3", "bob", 100).unwrap())
            .collect();
        t.success("3.3.3.3", "bob");
        assert!(t.begin("3.3.3.3", "bob", 100).is_err());
        drop(running);
        assert!(t.begin("3.3.3.3", "bob", 100).is_ok());
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
