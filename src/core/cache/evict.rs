//! Eviction: each upstream's cache kept under its quota and rid of what nobody pulls, least
//! recently used first. It removes cached manifests only (which the next pull fetches again);
//! the blobs go with garbage collection's reference counts, so a blob a pushed image also uses
//! stays, and nothing pulled within the protection window is touched, even over quota.

use std::collections::{HashMap, HashSet};

use super::{Error, Result};
use crate::core::Registry;
use crate::db::cache::{self, Cached};
use crate::oci::{Digest, Reference, RepoName};

/// When a cache is evicted from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of blobs the cache may hold that nothing outside it uses.
    pub quota: Option<u64>,
    /// Seconds after its last use a manifest goes.
    pub unpulled_expiry: Option<i64>,
    /// Seconds after its last use a manifest is never evicted.
    pub keep_pulled_within: i64,
}

/// What eviction decided for one cache.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decided {
    /// (repository, digest) of the manifests to remove.
    pub evict: Vec<(String, String)>,
    /// Bytes of blobs only the cache uses, before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Still over quota: only protected manifests are left to evict.
    pub over_quota: bool,
}

/// Decide, from manifests least recently used first: a pure function of its inputs.
pub fn decide(cached: &[Cached], shared: &HashSet<String>, now: i64, limits: Limits) -> Decided {
    let mut refs: HashMap<&str, (u32, u64)> = HashMap::new();
    for m in cached {
        for (d, size) in &m.blobs {
            refs.entry(d.as_str()).or_insert((0, *size)).0 += 1;
        }
    }
    let own = |d: &str| !shared.contains(d);
    let mut bytes: u64 = refs
        .iter()
        .filter(|(d, _)| own(d))
        .map(|(_, (_, s))| s)
        .sum();
    let mut out = Decided {
        bytes_before: bytes,
        ..Decided::default()
    };
    for m in cached {
        let age = now - m.used_at;
        if age < limits.keep_pulled_within {
            // Everything after it is newer still.
            break;
        }
        let expired = limits.unpulled_expiry.is_some_and(|e| age >= e);
        let over = limits.quota.is_some_and(|q| bytes > q);
        if !expired && !over {
            break;
        }
        out.evict.push((m.repo.clone(), m.digest.clone()));
        for (d, _) in &m.blobs {
            if let Some((n, size)) = refs.get_mut(d.as_str()) {
                *n -= 1;
                if *n == 0 && own(d) {
                    bytes -= *size;
                }
            }
        }
    }
    out.bytes_after = bytes;
    out.over_quota = limits.quota.is_some_and(|q| bytes > q);
    out
}

impl Registry {
    /// Evict from every cache by its limits (with `dry_run`, only decide). Returns the
    /// (repository, digest) of the manifests evicted.
    pub async fn evict_caches(&self, dry_run: bool) -> Result<Vec<(String, String)>> {
        let mut all = Vec::new();
        for c in self.caches.all() {
            let limits = c.settings.eviction;
            if limits.quota.is_none() && limits.unpulled_expiry.is_none() {
                continue;
            }
            let name = c.name().to_string();
            let (cached, shared) = self
                .db
                .read(move |conn| cache::cached(conn, &name).map_err(Error::from))
                .await?;
            let decided = decide(&cached, &shared, self.now(), limits);
            if decided.over_quota {
                tracing::warn!(
                    upstream = c.name(),
                    bytes = decided.bytes_after,
                    "the cache is over its quota, but all it holds was pulled within keep_pulled_within"
                );
            }
            if !decided.evict.is_empty() {
                tracing::info!(
                    upstream = c.name(),
                    manifests = decided.evict.len(),
                    bytes_before = decided.bytes_before,
                    bytes_after = decided.bytes_after,
                    dry_run,
                    "cache eviction"
                );
            }
            if !dry_run {
                for (repo, digest) in &decided.evict {
                    let (Ok(r), Ok(d)) = (RepoName::parse(repo), Digest::parse(digest)) else {
                        continue;
                    };
                    match self.delete_manifest(&r, &Reference::Digest(d)).await {
                        Ok(()) | Err(Error::ManifestUnknown) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            all.extend(decided.evict);
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, used_at: i64, blobs: &[(&str, u64)]) -> Cached {
        Cached {
            repo: "hub/x".into(),
            digest: name.into(),
            used_at,
            blobs: blobs.iter().map(|(d, s)| (d.to_string(), *s)).collect(),
        }
    }

    const DAY: i64 = 86_400;

    #[test]
    fn least_recently_used_first_until_under_quota() {
        let now = 100 * DAY;
        let cached = [
            m("old", now - 30 * DAY, &[("a", 100), ("s", 50)]),
            m("mid", now - 20 * DAY, &[("b", 100), ("c", 10)]),
            m("new", now - 10 * DAY, &[("c", 10), ("d", 100)]),
            m("hot", now - DAY, &[("e", 1000)]),
        ];
        let shared: HashSet<String> = ["s".to_string()].into();
        let limits = Limits {
            quota: Some(1250),
            unpulled_expiry: None,
            keep_pulled_within: 7 * DAY,
        };
        let d = decide(&cached, &shared, now, limits);
        // 100+100+10+100+1000 = 1310 own bytes (the shared 50 never count).
        assert_eq!(d.bytes_before, 1310);
        assert_eq!(d.evict, vec![("hub/x".into(), "old".into())]);
        assert_eq!(d.bytes_after, 1210);
        // A tighter quota goes on, but a blob still used by a kept manifest frees nothing.
        let d = decide(
            &cached,
            &shared,
            now,
            Limits {
                quota: Some(1150),
                ..limits
            },
        );
        assert_eq!(d.evict.len(), 2);
        assert_eq!(d.bytes_after, 1110, "c is still used by new");
        // Protected manifests stay even over quota.
        let d = decide(
            &cached,
            &shared,
            now,
            Limits {
                quota: Some(0),
                ..limits
            },
        );
        assert_eq!(d.evict.len(), 3);
        assert!(d.over_quota);
        assert_eq!(d.bytes_after, 1000);
    }

    #[test]
    fn unpulled_manifests_expire() {
        let now = 100 * DAY;
        let cached = [
            m("a", now - 40 * DAY, &[]),
            m("b", now - 31 * DAY, &[]),
            m("c", now - 29 * DAY, &[]),
        ];
        let limits = Limits {
            quota: None,
            unpulled_expiry: Some(30 * DAY),
            keep_pulled_within: 7 * DAY,
        };
        let d = decide(&cached, &HashSet::new(), now, limits);
        let names: Vec<&str> = d.evict.iter().map(|(_, d)| d.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
    }
}
