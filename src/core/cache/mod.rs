//! The pull-through cache: each configured upstream owns the repositories under its name
//! (`dockerhub/library/nginx` caches Docker Hub's `library/nginx`). Clients read them as any
//! repository, with the same grants; what berth does not hold yet is fetched from the
//! upstream when it is first asked for, and stored through the same paths as a push. Nobody
//! pushes into them.
//!
//! - Manifests (`manifests.rs`): a tag is served as cached within the upstream's check
//!   interval; after it a `HEAD` (free on Docker Hub) says whether it moved. A digest is
//!   fetched once. Upstream bytes are kept exactly. When the upstream fails, what is cached is
//!   served with a warning; what is not gets an error naming the upstream's trouble.
//! - Blobs (`fill.rs`): one upstream download per missing blob however many clients ask,
//!   streamed to all of them while it is written and hashed; stored only once verified.
//!
//! Layering: `core` room; reads upstreams through `upstream::Client`.

pub mod evict;
mod fill;
mod manifests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use fill::Fills;

use super::{Error, Result};
use crate::auth::pattern::Pattern;
use crate::oci::RepoName;
use crate::upstream::{self, UpstreamError};

/// One upstream as configured.
#[derive(Clone, Debug)]
pub struct Settings {
    pub name: String,
    pub url: String,
    pub credentials: Option<(String, String)>,
    /// Registry names `?ns=` maps here (lower case).
    pub registries: Vec<String>,
    /// `Host` names whose requests all go here (lower case).
    pub mirror_hosts: Vec<String>,
    /// Upstream repositories that may be cached; empty for all.
    pub repositories: Vec<Pattern>,
    /// Docker Hub: a one-part name is under `library/`.
    pub docker_hub: bool,
    /// Seconds a cached tag is served without asking the upstream.
    pub check_interval: i64,
    pub max_concurrent: usize,
    /// The largest blob fetched (none when unset).
    pub max_blob: Option<u64>,
    /// When cached manifests are evicted.
    pub eviction: evict::Limits,
}

/// One upstream and its client.
pub struct Cache {
    pub settings: Settings,
    client: upstream::Client,
    /// Blob downloads from the upstream at once.
    slots: tokio::sync::Semaphore,
    /// Manifest requests at once: apart, so that slow blobs never hold up tag checks.
    manifest_slots: tokio::sync::Semaphore,
    /// One tag check or manifest fetch at a time per repository and reference: concurrent
    /// pulls of the same image ask the upstream once.
    resolving: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Cache {
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// The upstream's rate-limit headers from its last answer that had them.
    pub fn rate_limit(&self) -> Option<upstream::RateLimit> {
        self.client.rate_limit()
    }

    /// The local repository of an upstream repository named as clients of that registry
    /// name it (`nginx` on Docker Hub is `library/nginx`).
    pub fn local(&self, upstream_repo: &RepoName) -> Result<RepoName> {
        let full = format!(
            "{}/{}",
            self.settings.name,
            self.hub_name(upstream_repo.as_str())
        );
        RepoName::parse(&full).map_err(|_| Error::NotCached(format!("{full} is too long a name")))
    }

    /// The upstream's name of a repository of this cache (`<name>/<rest>`), if it may be
    /// cached.
    fn upstream_name(&self, repo: &RepoName) -> Result<RepoName> {
        let rest = repo
            .as_str()
            .strip_prefix(&self.settings.name)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| Error::NotCached(format!("{repo} is not in {}/", self.name())))?;
        let rest = self.hub_name(rest);
        let allowed = self.settings.repositories.is_empty()
            || self.settings.repositories.iter().any(|p| p.matches(&rest));
        if !allowed {
            return Err(Error::NotCached(format!(
                "{rest} is not among the repositories berth caches from {}",
                self.name()
            )));
        }
        RepoName::parse(&rest).map_err(|_| Error::NotCached(format!("{rest} is not a name")))
    }

    /// A name as the upstream knows it: on Docker Hub a one-part name is under `library/`.
    fn hub_name(&self, name: &str) -> String {
        if self.settings.docker_hub && !name.contains('/') {
            format!("library/{name}")
        } else {
            name.to_string()
        }
    }

    /// Hold the single-flight slot of `key` (a repository and reference).
    async fn resolving(&self, key: String) -> Resolving<'_> {
        let lock = {
            let mut map = self.resolving.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(key.clone()).or_default().clone()
        };
        let guard = lock.clone().lock_owned().await;
        Resolving {
            cache: self,
            key,
            lock,
            _guard: guard,
        }
    }

    /// The error a client gets for an upstream failure.
    fn failed(&self, e: UpstreamError) -> Error {
        let retry_after = match &e {
            UpstreamError::RateLimited { retry_after } => *retry_after,
            _ => None,
        };
        Error::Upstream {
            upstream: self.name().to_string(),
            why: e.to_string(),
            retry_after,
        }
    }
}

/// A held single-flight slot; the map forgets the key when its last holder is done.
struct Resolving<'a> {
    cache: &'a Cache,
    key: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for Resolving<'_> {
    fn drop(&mut self) {
        let mut map = self
            .cache
            .resolving
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // The map's, this one's and the guard's: nobody else waits.
        if Arc::strong_count(&self.lock) <= 3 {
            map.remove(&self.key);
        }
    }
}

/// Every configured upstream.
#[derive(Default)]
pub struct Caches {
    list: Vec<Arc<Cache>>,
}

impl Caches {
    pub fn new(settings: Vec<Settings>) -> std::result::Result<Caches, String> {
        let mut list = Vec::new();
        for s in settings {
            let client = upstream::Client::new(upstream::Upstream {
                url: s.url.clone(),
                credentials: s.credentials.clone(),
            })
            .map_err(|e| format!("upstream {}: {e}", s.name))?;
            list.push(Arc::new(Cache {
                slots: tokio::sync::Semaphore::new(s.max_concurrent.max(1)),
                manifest_slots: tokio::sync::Semaphore::new(s.max_concurrent.max(1)),
                settings: s,
                client,
                resolving: Mutex::default(),
            }));
        }
        Ok(Caches { list })
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn all(&self) -> &[Arc<Cache>] {
        &self.list
    }

    /// The upstream of a registry name given as `?ns=`.
    pub fn by_registry(&self, ns: &str) -> Option<&Arc<Cache>> {
        let ns = ns.to_ascii_lowercase();
        self.list
            .iter()
            .find(|c| c.settings.registries.contains(&ns))
    }

    /// The upstream whose mirror host name is `host` (as in the `Host` header).
    pub fn by_host(&self, host: &str) -> Option<&Arc<Cache>> {
        let host = host.to_ascii_lowercase();
        self.list
            .iter()
            .find(|c| c.settings.mirror_hosts.contains(&host))
    }

    /// The cache a repository belongs to: its first component is an upstream's name.
    pub fn of(&self, repo: &RepoName) -> Option<&Arc<Cache>> {
        let first = repo.as_str().split('/').next()?;
        self.list.iter().find(|c| c.settings.name == first)
    }

    /// What `?ns=` may name, for an error.
    pub fn registries(&self) -> String {
        let names: Vec<&str> = self
            .list
            .iter()
            .flat_map(|c| c.settings.registries.iter().map(String::as_str))
            .collect();
        if names.is_empty() {
            "none is configured".into()
        } else {
            names.join(", ")
        }
    }
}

impl super::Registry {
    /// The configured upstreams.
    pub fn caches(&self) -> &Caches {
        &self.caches
    }

    /// Refuse a write into a cache repository.
    pub fn writable(&self, repo: &RepoName) -> Result<()> {
        match self.caches.of(repo) {
            Some(c) => Err(Error::ReadOnlyCache {
                repo: repo.to_string(),
                upstream: c.name().to_string(),
                url: c.settings.url.clone(),
            }),
            None => Ok(()),
        }
    }
}
