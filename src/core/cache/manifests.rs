//! Manifests of a cache repository: served from the database when berth holds them (and,
//! for a tag, the upstream confirmed it within the check interval), fetched otherwise.

use std::sync::Arc;

use super::{Cache, Error, Result};
use crate::core::manifests::Record;
use crate::core::{ManifestRead, Registry};
use crate::db::{cache, manifests, repos};
use crate::oci::{Digest, Reference, RepoName, manifest};
use crate::upstream::{Described, UpstreamError};

impl Registry {
    /// GET or HEAD (`with_content` false) a manifest of the cache repository `repo`. A GET
    /// counts as a pull by `puller`.
    pub async fn cached_manifest(
        &self,
        cache: &Arc<Cache>,
        repo: &RepoName,
        reference: &Reference,
        with_content: bool,
        puller: &str,
    ) -> Result<ManifestRead> {
        let upstream_repo = cache.upstream_name(repo)?;
        // Held, and (a tag) confirmed by the upstream within the check interval.
        let current = |m: &manifests::Stored| {
            matches!(reference, Reference::Digest(_))
                || m.checked_at
                    .is_some_and(|c| self.now() - c < cache.settings.check_interval)
        };
        // The common case: no upstream, no lock.
        let held = self.read_cached(repo, reference, with_content).await?;
        if let Some(m) = held.filter(|m| current(m)) {
            return self.served(Some(m), with_content, puller);
        }
        let _one = cache.resolving(format!("{repo}:{reference}")).await;
        // Another request may have done it while this one waited.
        let held = self.read_cached(repo, reference, with_content).await?;
        if let Some(m) = held.as_ref().filter(|m| current(m)) {
            return self.served(Some(m.clone()), with_content, puller);
        }
        let Reference::Tag(tag) = reference else {
            let (described, body) = cache
                .fetch(&upstream_repo, reference)
                .await
                .map_err(|e| cache.failed(e))?;
            self.store_cached(cache.name(), repo, None, &described, body)
                .await?;
            return self
                .served_cached(repo, reference, with_content, puller)
                .await;
        };
        let held_digest = held.as_ref().map(|m| m.digest.clone());
        let moved = match cache.head(&upstream_repo, reference).await {
            Ok(d) if Some(d.digest.to_string()) == held_digest => {
                self.confirm_tag(repo, tag.as_str()).await?;
                return self.served(held, with_content, puller);
            }
            Ok(d) => {
                self.follow_tag(cache, repo, &upstream_repo, tag.as_str(), &d)
                    .await?
            }
            Err(UpstreamError::NotFound(_)) => return Err(Error::ManifestUnknown),
            Err(e) => Err(e),
        };
        match moved {
            Ok(()) => {
                self.served_cached(repo, reference, with_content, puller)
                    .await
            }
            // Rate limited (a GET counts on Docker Hub, a HEAD does not), down, or broken:
            // the copy held is better than nothing, said so.
            Err(e) => {
                let Some(stored) = held else {
                    return Err(cache.failed(e));
                };
                crate::metrics::global().cache_stale.inc();
                tracing::warn!(upstream = cache.name(), %repo, %reference, error = %e, "serving a cached tag the upstream could not confirm");
                let mut read = self.served(Some(stored), with_content, puller)?;
                read.warning = Some(format!("upstream {} unavailable: {e}", cache.name()));
                Ok(read)
            }
        }
    }

    /// Point the cached `tag` at the manifest the upstream now names, fetching it unless
    /// the repository holds it. The inner error is the upstream's (a stale copy may be
    /// served); the outer one berth's.
    async fn follow_tag(
        &self,
        cache: &Cache,
        repo: &RepoName,
        upstream_repo: &RepoName,
        tag: &str,
        described: &Described,
    ) -> Result<std::result::Result<(), UpstreamError>> {
        let by_digest = Reference::Digest(described.digest.clone());
        if self.read_cached(repo, &by_digest, false).await?.is_some() {
            self.retag_cached(repo, tag, &described.digest).await?;
            return Ok(Ok(()));
        }
        let (described, body) = match cache.fetch(upstream_repo, &by_digest).await {
            Ok(fetched) => fetched,
            Err(e) => return Ok(Err(e)),
        };
        match self
            .store_cached(cache.name(), repo, Some(tag), &described, body)
            .await
        {
            Ok(()) => Ok(Ok(())),
            // A manifest berth cannot store is the upstream's fault; berth's own failures
            // are its own.
            Err(Error::Upstream { why, .. }) => Ok(Err(UpstreamError::Invalid(why))),
            Err(e) => Err(e),
        }
    }

    /// The stored manifest of a tag (with when the upstream confirmed it) or a digest.
    async fn read_cached(
        &self,
        repo: &RepoName,
        reference: &Reference,
        with_content: bool,
    ) -> Result<Option<manifests::Stored>> {
        Ok(self
            .read_manifest(repo, reference, with_content, false)
            .await?
            .0)
    }

    async fn served_cached(
        &self,
        repo: &RepoName,
        reference: &Reference,
        with_content: bool,
        puller: &str,
    ) -> Result<ManifestRead> {
        let stored = self.read_cached(repo, reference, with_content).await?;
        self.served(stored, with_content, puller)
    }

    async fn confirm_tag(&self, repo: &RepoName, tag: &str) -> Result<()> {
        let (r, t, now) = (repo.to_string(), tag.to_string(), self.now());
        self.db
            .write(move |tx| {
                if let Some(id) = repos::find(tx, &r)? {
                    cache::checked(tx, id, &t, now)?;
                }
                Ok(())
            })
            .await
    }

    /// Point a cached tag at a manifest the repository holds already.
    async fn retag_cached(&self, repo: &RepoName, tag: &str, digest: &Digest) -> Result<()> {
        let (r, t, d, now) = (
            repo.to_string(),
            tag.to_string(),
            digest.to_string(),
            self.now(),
        );
        self.db
            .write(move |tx| {
                let repo_id = repos::ensure(tx, &r, now)?;
                let stored =
                    manifests::by_digest(tx, &r, &d, false)?.ok_or(Error::ManifestUnknown)?;
                crate::db::tags::set_at(tx, repo_id, &t, stored.id, now, now, None)?;
                cache::checked(tx, repo_id, &t, now)?;
                Ok(())
            })
            .await
    }

    /// Store a manifest as the upstream sent it (its digest checked by the client), under
    /// `tag` if given. What it references need not be here yet.
    async fn store_cached(
        &self,
        upstream: &str,
        repo: &RepoName,
        tag: Option<&str>,
        described: &Described,
        body: bytes::Bytes,
    ) -> Result<()> {
        if body.len() > manifest::MAX_MANIFEST_BYTES {
            return Err(Error::Upstream {
                upstream: upstream.to_string(),
                why: "sent a manifest larger than berth takes".into(),
                retry_after: None,
            });
        }
        let media_type = described.media_type.clone();
        let (parsed, body) = tokio::task::spawn_blocking(move || {
            let ct = (!media_type.is_empty()).then_some(media_type.as_str());
            manifest::parse(ct, &body).map(|p| (p, body))
        })
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?
        .map_err(|e| Error::Upstream {
            upstream: upstream.to_string(),
            why: format!("sent a manifest berth cannot store: {e}"),
            retry_after: None,
        })?;
        let record = Record::new(&parsed, &described.digest, body);
        let (r, now) = (repo.to_string(), self.now());
        let (tag, upstream) = (tag.map(str::to_string), upstream.to_string());
        self.db
            .write(move |tx| {
                let repo_id = repos::ensure(tx, &r, now)?;
                cache::store(
                    tx,
                    &record.row(repo_id, now, None),
                    &upstream,
                    tag.as_deref(),
                )?;
                Ok::<_, Error>(())
            })
            .await
    }
}

/// How long a manifest request waits for one of the upstream's slots.
const SLOT_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

impl Cache {
    /// A slot for a manifest request, or an error if the upstream is that busy.
    pub(super) async fn manifest_slot(
        &self,
    ) -> std::result::Result<tokio::sync::SemaphorePermit<'_>, UpstreamError> {
        match tokio::time::timeout(SLOT_WAIT, self.manifest_slots.acquire()).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(UpstreamError::Unavailable(format!(
                "every one of berth's {} connections to it is busy",
                self.settings.max_concurrent
            ))),
        }
    }

    /// HEAD a manifest upstream, within the upstream's concurrency.
    async fn head(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> std::result::Result<Described, UpstreamError> {
        let _slot = self.manifest_slot().await?;
        self.client.head_manifest(repo, reference).await
    }

    /// GET a manifest from the upstream, within the upstream's concurrency.
    async fn fetch(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> std::result::Result<(Described, bytes::Bytes), UpstreamError> {
        let _slot = self.manifest_slot().await?;
        self.client.manifest(repo, reference).await
    }
}
