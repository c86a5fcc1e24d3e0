//! Pushing, pulling and deleting manifests.

use bytes::Bytes;

use super::{Error, Registry, Result};
use crate::db::{blobs, manifests, repos, settings, tags};
use crate::oci::manifest;
use crate::oci::{Algorithm, Digest, Hasher, Reference, RepoName};

/// A manifest as stored: the exact pushed bytes and media type.
pub struct ManifestRead {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// Empty for a HEAD.
    pub content: Vec<u8>,
    /// Served from the pull-through cache without the upstream's confirmation (why).
    pub warning: Option<String>,
}

/// Parse a manifest body and compute its digest (and compare it with the one it was pushed
/// by). Blocking: CPU work proportional to the body.
fn check_manifest(
    content_type: Option<&str>,
    pushed_by: Option<&Digest>,
    body: Bytes,
) -> Result<(manifest::ParsedManifest, Digest, Bytes)> {
    let parsed =
        manifest::parse(content_type, &body).map_err(|e| Error::ManifestInvalid(e.to_string()))?;
    let digest = match pushed_by {
        Some(d) if d.algorithm() == Algorithm::Sha512 => {
            let mut h = Hasher::new(Algorithm::Sha512);
            h.update(&body);
            h.finish()
        }
        _ => Digest::sha256_of(&body),
    };
    if let Some(d) = pushed_by
        && d != &digest
    {
        return Err(Error::DigestInvalid(format!(
            "manifest content has digest {digest}, not {d}"
        )));
    }
    Ok((parsed, digest, body))
}

/// A checked manifest as it is stored (owned, to move into a write): its bytes and what its
/// rows record beside them.
pub(super) struct Record {
    digest: String,
    media_type: String,
    artifact_type: Option<String>,
    subject: Option<String>,
    annotations: Option<String>,
    blobs: Vec<String>,
    children: Vec<String>,
    content: Bytes,
}

impl Record {
    pub(super) fn new(
        parsed: &manifest::ParsedManifest,
        digest: &Digest,
        content: Bytes,
    ) -> Record {
        let strings = |ds: &[Digest]| ds.iter().map(ToString::to_string).collect();
        Record {
            digest: digest.to_string(),
            media_type: parsed.media_type.clone(),
            artifact_type: parsed.artifact_type.clone(),
            subject: parsed.subject.as_ref().map(ToString::to_string),
            annotations: parsed
                .annotations
                .as_ref()
                .map(|a| serde_json::to_string(a).unwrap_or_default()),
            blobs: strings(&parsed.blobs),
            children: strings(&parsed.children),
            content,
        }
    }

    /// The row of repository `repo_id`, stored `now` by `pushed_by`.
    pub(super) fn row<'a>(
        &'a self,
        repo_id: i64,
        now: i64,
        pushed_by: Option<&'a str>,
    ) -> manifests::NewManifest<'a> {
        manifests::NewManifest {
            repo_id,
            digest: &self.digest,
            media_type: &self.media_type,
            artifact_type: self.artifact_type.as_deref(),
            subject: self.subject.as_deref(),
            annotations: self.annotations.as_deref(),
            content: &self.content,
            blobs: &self.blobs,
            children: &self.children,
            now,
            pushed_by,
        }
    }
}

/// What a successful push reports.
pub struct Pushed {
    pub digest: Digest,
    pub subject: Option<Digest>,
}

impl Registry {
    /// Store a manifest under a tag or digest after checking it and everything it references.
    /// `pusher` (a user's or a robot token's name) is recorded with the manifest and the tag.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
        pusher: Option<&str>,
    ) -> Result<Pushed> {
        if body.len() > manifest::MAX_MANIFEST_BYTES {
            return Err(Error::SizeInvalid(format!(
                "manifest is larger than {} bytes",
                manifest::MAX_MANIFEST_BYTES
            )));
        }
        // Parsing and hashing up to 4 MiB is CPU work: off the async workers.
        let content_type = content_type.map(str::to_string);
        let reference_digest = match reference {
            Reference::Digest(d) => Some(d.clone()),
            Reference::Tag(_) => None,
        };
        let (parsed, digest, body) = tokio::task::spawn_blocking(move || {
            check_manifest(content_type.as_deref(), reference_digest.as_ref(), body)
        })
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))??;
        let (r, now) = (repo.to_string(), self.now());
        let tag = match reference {
            Reference::Tag(t) => Some(t.to_string()),
            Reference::Digest(_) => None,
        };
        let subject = parsed.subject.clone();
        let record = Record::new(&parsed, &digest, body);
        let pusher = pusher.map(str::to_string);
        self.db
            .write(move |tx| {
                let repo_id = repos::ensure(tx, &r, now)?;
                if let Some(m) = blobs::first_missing(tx, repo_id, &record.blobs)? {
                    return Err(Error::ManifestBlobUnknown(format!("blob {m}")));
                }
                if let Some(m) = manifests::first_missing(tx, repo_id, &record.children)? {
                    return Err(Error::ManifestBlobUnknown(format!("manifest {m}")));
                }
                let id = manifests::insert(tx, &record.row(repo_id, now, pusher.as_deref()))?;
                if let Some(t) = &tag {
                    tags::set_at(tx, repo_id, t, id, now, now, pusher.as_deref())?;
                }
                Ok(())
            })
            .await?;
        Ok(Pushed { digest, subject })
    }

    /// Fetch a manifest by tag or digest; `with_content` false for HEAD. A GET counts as a pull
    /// by `puller` (a user's or token's name, or `anonymous`).
    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        with_content: bool,
        puller: &str,
    ) -> Result<ManifestRead> {
        let (stored, _) = self
            .read_manifest(repo, reference, with_content, false)
            .await?;
        self.served(stored, with_content, puller)
    }

    /// `get_manifest` for a caller whose access was decided at auth epoch `epoch` without
    /// reading it (`auth::Deferred`): the epoch is read in the same database trip, and `None`
    /// (nothing served, no pull counted) means it has moved, or the read failed, so access
    /// must be decided again.
    pub async fn get_manifest_at_epoch(
        &self,
        repo: &RepoName,
        reference: &Reference,
        with_content: bool,
        epoch: i64,
        puller: &str,
    ) -> Option<Result<ManifestRead>> {
        match self
            .read_manifest(repo, reference, with_content, true)
            .await
        {
            Ok((stored, now)) if now == Some(epoch) => {
                Some(self.served(stored, with_content, puller))
            }
            // Not even an error is answered before access is confirmed: the usual path
            // decides first, then reads (and fails) again.
            Ok(_) | Err(_) => None,
        }
    }

    /// The stored manifest, if any, and with `with_epoch` the auth epoch, read after it in
    /// the same trip.
    pub(super) async fn read_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        with_content: bool,
        with_epoch: bool,
    ) -> Result<(Option<manifests::Stored>, Option<i64>)> {
        let r = repo.to_string();
        let reference = reference.clone();
        self.db
            .read(move |c| {
                let stored = match &reference {
                    Reference::Tag(t) => manifests::by_tag(c, &r, t.as_str(), with_content)?,
                    Reference::Digest(d) => {
                        manifests::by_digest(c, &r, &d.to_string(), with_content)?
                    }
                };
                let epoch = with_epoch.then(|| settings::auth_epoch(c)).transpose()?;
                Ok::<_, Error>((stored, epoch))
            })
            .await
    }

    pub(super) fn served(
        &self,
        stored: Option<manifests::Stored>,
        with_content: bool,
        puller: &str,
    ) -> Result<ManifestRead> {
        let stored = stored.ok_or(Error::ManifestUnknown)?;
        if with_content {
            self.pulls.record(stored.id, self.now(), puller);
        }
        let digest = Digest::parse(&stored.digest)
            .map_err(|e| std::io::Error::other(format!("stored digest is corrupt: {e}")))?;
        Ok(ManifestRead {
            digest,
            media_type: stored.media_type,
            size: stored.size,
            content: stored.content,
            warning: None,
        })
    }

    /// Delete by tag (only the tag goes) or by digest (the manifest and its tags go).
    pub async fn delete_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<()> {
        let (r, now) = (repo.to_string(), self.now());
        let link_cutoff = self.gc.settings().link_cutoff(now);
        let reference = reference.clone();
        let deleted = self
            .db
            .write(move |tx| {
                let Some(repo_id) = repos::find(tx, &r)? else {
                    return Ok(false);
                };
                Ok::<_, Error>(match &reference {
                    Reference::Tag(t) => tags::delete(tx, repo_id, t.as_str(), now)?,
                    Reference::Digest(d) => {
                        let Some(blobs) = manifests::delete(tx, repo_id, &d.to_string())? else {
                            return Ok(false);
                        };
                        // End the repository's links to the blobs no other manifest of it
                        // uses, unless a client was told of them within the grace (it may
                        // be pushing a manifest that needs them): those garbage
                        // collection ends later.
                        for b in blobs {
                            crate::db::gc::delete_link(tx, repo_id, &b, link_cutoff)?;
                        }
                        true
                    }
                })
            })
            .await?;
        if deleted {
            Ok(())
        } else {
            Err(Error::ManifestUnknown)
        }
    }
}
