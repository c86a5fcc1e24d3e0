//! Listings: tags of a repository, the catalog of repositories, referrers of a manifest.

use super::{Error, Registry, Result};
use crate::db::{manifests, repos, tags};
use crate::oci::{Digest, RepoName};

/// The most entries one page returns, whatever `n` asks for.
pub const MAX_PAGE: i64 = 10_000;

/// One page of a sorted listing; `more` tells whether entries follow the last one.
pub struct Page {
    pub items: Vec<String>,
    pub more: bool,
}

fn page(mut items: Vec<String>, limit: i64) -> Page {
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    Page { items, more }
}

/// A descriptor in a referrers response.
pub struct Referrer {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub annotations: Option<serde_json::Value>,
}

impl Registry {
    /// Tags of a repository in lexical order, after `last`, at most `n`.
    pub async fn list_tags(
        &self,
        repo: &RepoName,
        n: Option<i64>,
        last: Option<String>,
    ) -> Result<Page> {
        let limit = n.unwrap_or(MAX_PAGE).clamp(0, MAX_PAGE);
        let r = repo.to_string();
        let items = self
            .db
            .read(move |c| {
                let Some(id) = repos::find(c, &r)? else {
                    return Ok(None);
                };
                Ok::<_, Error>(Some(tags::list(c, id, last.as_deref(), limit + 1)?))
            })
            .await?
            .ok_or(Error::NameUnknown)?;
        Ok(page(items, limit))
    }

    /// Repository names that pass `visible`, in lexical order, after `last`, at most `n`.
    pub async fn catalog(
        &self,
        n: Option<i64>,
        last: Option<String>,
        visible: impl Fn(&str) -> bool + Send + 'static,
    ) -> Result<Page> {
        let limit = n.unwrap_or(MAX_PAGE).clamp(0, MAX_PAGE);
        let items = self
            .db
            .read(move |c| {
                repos::catalog(c, last.as_deref(), limit + 1, &visible).map_err(Error::from)
            })
            .await?;
        Ok(page(items, limit))
    }

    /// Manifests in `repo` whose subject is `subject`, optionally filtered by artifact type.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<String>,
    ) -> Result<Vec<Referrer>> {
        let (r, s) = (repo.to_string(), subject.to_string());
        let rows = self
            .db
            .read(move |c| {
                manifests::referrers(c, &r, &s, artifact_type.as_deref()).map_err(Error::from)
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|m| Referrer {
                digest: m.digest,
                media_type: m.media_type,
                size: m.size,
                artifact_type: m.artifact_type,
                annotations: m.annotations.and_then(|a| serde_json::from_str(&a).ok()),
            })
            .collect())
    }
}
