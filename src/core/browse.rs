//! What the web UI shows of stored content: repositories with their figures, a repository's
//! tags with platforms and sizes, one manifest's parts. Reads only; every list is paged.

use std::collections::HashMap;

use futures_util::StreamExt as _;
use serde_json::Value;

use super::{Error, Registry, Result};
use crate::db::browse::{self as q, ManifestRow, RepoRow, TagOrder};
use crate::db::repos;
use crate::db::runs::{self, Runs};
use crate::oci::{Digest, RepoName};

/// A config blob larger than this is not read for its platform and labels.
const MAX_CONFIG_BYTES: u64 = 256 * 1024;
/// Referrers listed per manifest.
const MAX_REFERRERS: u64 = 50;
/// Platforms listed per index (an index may list thousands of children; a page reads a few).
const MAX_PLATFORMS: usize = 64;

/// How the repository list is ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepoSort {
    Name,
    Tags,
    Size,
    Pushed,
    Pulled,
}

/// A page of the repository list.
pub struct RepoQuery {
    pub filter: String,
    pub sort: RepoSort,
    pub descending: bool,
    pub offset: u64,
    pub limit: u64,
}

/// A repository in the list.
pub struct RepoSummary {
    pub row: RepoRow,
    /// All bytes, and bytes no other repository uses.
    pub size: (u64, u64),
}

/// One platform of an image or an index.
#[derive(Debug, Clone)]
pub struct Platform {
    /// `os/architecture[/variant]`, or `unknown` (attestations and artifacts).
    pub name: String,
    pub digest: String,
    /// Config and layer bytes; `None` when the child is not stored.
    pub size: Option<u64>,
}

/// A tag as a repository page shows it.
pub struct TagView {
    pub name: String,
    pub pushed_at: i64,
    pub pushed_by: Option<String>,
    pub manifest: ManifestRow,
    pub platforms: Vec<Platform>,
    /// (digest, artifact type) of manifests that name this one as their subject.
    pub referrers: Vec<(String, String)>,
}

/// A config or layer of an image.
pub struct Layer {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    /// Other manifests in the whole registry that use this blob.
    pub shared_with: u64,
}

/// One manifest or index with its parts.
pub struct ManifestView {
    pub row: ManifestRow,
    pub is_index: bool,
    pub platforms: Vec<Platform>,
    pub config: Option<Layer>,
    pub layers: Vec<Layer>,
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
    pub subject: Option<String>,
    pub referrers: Vec<(String, String)>,
    /// Tags of the repository that point here.
    pub tags: Vec<String>,
    /// The manifest as stored, pretty-printed when it is JSON.
    pub pretty: String,
}

impl Registry {
    /// One page of the repositories that pass `visible` and contain `filter`, with how many
    /// pass in all.
    pub async fn browse_repositories(
        &self,
        query: RepoQuery,
        visible: impl Fn(&str) -> bool + Send + 'static,
    ) -> Result<(u64, Vec<RepoSummary>)> {
        self.flush_pulls().await?;
        self.db
            .read(move |c| {
                let needle = query.filter.to_lowercase();
                let rows: Vec<RepoRow> = q::repositories(c)?
                    .into_iter()
                    .filter(|r| r.name.contains(&needle) && visible(&r.name))
                    .collect();
                let total = rows.len() as u64;
                // Sizes cost a query each: for the page only, unless the order needs them all.
                let mut rows: Vec<RepoSummary> = if query.sort == RepoSort::Size {
                    let sizes = q::all_sizes(c)?;
                    rows.into_iter()
                        .map(|row| RepoSummary {
                            size: sizes.get(&row.id).copied().unwrap_or((0, 0)),
                            row,
                        })
                        .collect()
                } else {
                    rows.into_iter()
                        .map(|row| RepoSummary { row, size: (0, 0) })
                        .collect()
                };
                rows.sort_by(|a, b| {
                    let o = match query.sort {
                        RepoSort::Name => std::cmp::Ordering::Equal,
                        RepoSort::Tags => a.row.tags.cmp(&b.row.tags),
                        RepoSort::Size => a.size.0.cmp(&b.size.0),
                        RepoSort::Pushed => a.row.pushed_at.cmp(&b.row.pushed_at),
                        RepoSort::Pulled => a.row.pulled_at.cmp(&b.row.pulled_at),
                    };
                    let o = if query.descending { o.reverse() } else { o };
                    o.then_with(|| a.row.name.cmp(&b.row.name))
                });
                let mut page: Vec<RepoSummary> = rows
                    .into_iter()
                    .skip(query.offset as usize)
                    .take(query.limit as usize)
                    .collect();
                for r in &mut page {
                    if query.sort != RepoSort::Size {
                        r.size = q::repo_size(c, r.row.id)?;
                    }
                    r.row.pushed_by = q::last_pusher(c, r.row.id)?;
                }
                Ok::<_, Error>((total, page))
            })
            .await
    }

    /// One page of a repository's tags whose name contains `filter`, with how many match.
    pub async fn browse_tags(
        &self,
        repo: &RepoName,
        filter: &str,
        order: TagOrder,
        offset: u64,
        limit: u64,
    ) -> Result<(u64, Vec<TagView>)> {
        self.flush_pulls().await?;
        let (r, filter) = (repo.to_string(), filter.to_string());
        // Tags of one manifest (`latest` and `1.2.3`, say) share its parts: read once each.
        let (total, rows, mut parts) = self
            .db
            .read(move |c| {
                let id = repos::find(c, &r)?.ok_or(Error::NameUnknown)?;
                let (total, rows) = q::tags(c, id, &filter, order, offset, limit)?;
                let mut parts: HashMap<i64, (ManifestParts, Vec<(String, String)>)> =
                    HashMap::new();
                for t in &rows {
                    if parts.contains_key(&t.manifest.id) {
                        continue;
                    }
                    let json = parse_json(&q::content(c, t.manifest.id)?);
                    let p = match index_platforms(c, id, &json)? {
                        Some(platforms) => ManifestParts::Index(platforms),
                        None => ManifestParts::Image {
                            config: json["config"]["digest"].as_str().map(str::to_string),
                            bytes: q::blob_bytes(c, t.manifest.id)?,
                        },
                    };
                    let referrers = q::referrers(c, id, &t.manifest.digest, MAX_REFERRERS)?;
                    parts.insert(t.manifest.id, (p, referrers));
                }
                Ok::<_, Error>((total, rows, parts))
            })
            .await?;
        // An image's platform is in its config blob: one read per config on the page.
        let mut platform_of: HashMap<String, String> = HashMap::new();
        for (p, _) in parts.values_mut() {
            if let ManifestParts::Image {
                config: Some(d), ..
            } = p
                && !platform_of.contains_key(d.as_str())
            {
                platform_of.insert(d.clone(), self.config_platform(d).await);
            }
        }
        let tags = rows
            .into_iter()
            .map(|t| {
                let (p, referrers) = &parts[&t.manifest.id];
                let platforms = match p {
                    ManifestParts::Index(platforms) => platforms.clone(),
                    ManifestParts::Image { config, bytes } => vec![Platform {
                        name: config
                            .as_ref()
                            .and_then(|d| platform_of.get(d).cloned())
                            .unwrap_or_else(|| "unknown".into()),
                        digest: t.manifest.digest.clone(),
                        size: Some(*bytes),
                    }],
                };
                TagView {
                    name: t.name,
                    pushed_at: t.pushed_at,
                    pushed_by: t.pushed_by,
                    manifest: t.manifest,
                    platforms,
                    referrers: referrers.clone(),
                }
            })
            .collect();
        Ok((total, tags))
    }

    /// One manifest of a repository with its platforms or layers, labels and referrers.
    pub async fn browse_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<ManifestView> {
        self.flush_pulls().await?;
        let (r, d) = (repo.to_string(), digest.to_string());
        type Parts = (
            ManifestRow,
            Vec<u8>,
            Value,
            Option<Vec<Platform>>,
            Vec<Layer>,
            Vec<(String, String)>,
            Vec<String>,
        );
        let (row, content, json, platforms, mut layers, referrers, tags): Parts = self
            .db
            .read(move |c| {
                let id = repos::find(c, &r)?.ok_or(Error::NameUnknown)?;
                let (row, content) = q::manifest(c, id, &d)?.ok_or(Error::ManifestUnknown)?;
                let json = parse_json(&content);
                let platforms = index_platforms(c, id, &json)?;
                let mut layers = Vec::new();
                let descriptors = std::iter::once(&json["config"])
                    .chain(json["layers"].as_array().into_iter().flatten());
                for desc in descriptors {
                    let Some(digest) = desc["digest"].as_str() else {
                        continue;
                    };
                    // A layer stored elsewhere (`urls`) has no blob here: its descriptor's size.
                    let declared = desc["size"].as_u64().unwrap_or(0);
                    let (size, users) = q::blob_use(c, digest)?.unwrap_or((declared, 0));
                    layers.push(Layer {
                        digest: digest.to_string(),
                        media_type: desc["mediaType"].as_str().unwrap_or("").to_string(),
                        size,
                        shared_with: users.saturating_sub(1),
                    });
                }
                let referrers = q::referrers(c, id, &d, MAX_REFERRERS)?;
                let tags = q::tags_of(c, id, row.id)?;
                Ok::<_, Error>((row, content, json, platforms, layers, referrers, tags))
            })
            .await?;
        let config = if json["config"].is_object() && !layers.is_empty() {
            Some(layers.remove(0))
        } else {
            None
        };
        // The config blob, read once: the platform and the labels are in it.
        let config_json = match config.as_ref().map(|c| Digest::parse(&c.digest)) {
            Some(Ok(d)) => self.small_json_blob(&d).await,
            _ => None,
        };
        let labels = config_json
            .as_ref()
            .map_or_else(Vec::new, |v| string_pairs(&v["config"]["Labels"]));
        let is_index = platforms.is_some();
        let platforms = match platforms {
            Some(p) => p,
            None if config.is_some() => vec![Platform {
                name: config_json
                    .as_ref()
                    .map_or_else(|| "unknown".into(), platform_name),
                digest: row.digest.clone(),
                size: Some(config.iter().chain(&layers).map(|l| l.size).sum()),
            }],
            None => Vec::new(),
        };
        let annotations = string_pairs(&json["annotations"]);
        let pretty = match &json {
            Value::Null => String::from_utf8_lossy(&content).into_owned(),
            v => serde_json::to_string_pretty(v).unwrap_or_default(),
        };
        Ok(ManifestView {
            subject: json["subject"]["digest"].as_str().map(str::to_string),
            row,
            is_index,
            platforms,
            config,
            layers,
            labels,
            annotations,
            referrers,
            tags,
            pretty,
        })
    }

    /// Tags pushed and images pulled since `since`.
    pub async fn activity(&self, since: i64) -> Result<(u64, u64)> {
        self.flush_pulls().await?;
        self.db
            .read(move |c| q::activity(c, since).map_err(Error::from))
            .await
    }

    /// The latest retention run that deleted: (finished at, tags deleted, trigger).
    pub async fn last_retention_run(&self) -> Result<Option<(i64, u64, String)>> {
        self.db
            .read(|c| runs::last_real(c, Runs::Retention).map_err(Error::from))
            .await
    }

    /// The size of the file system holding the data directory, and the bytes free.
    pub async fn disk_space(&self) -> Result<(u64, u64)> {
        Ok(self.staging.disk_space().await?)
    }

    /// `os/arch[/variant]` of an image, from its config blob `digest`.
    async fn config_platform(&self, digest: &str) -> String {
        let config = match Digest::parse(digest) {
            Ok(d) => self.small_json_blob(&d).await,
            Err(_) => None,
        };
        config
            .as_ref()
            .map_or_else(|| "unknown".into(), platform_name)
    }

    /// A blob parsed as JSON, when it is small enough to read whole.
    async fn small_json_blob(&self, d: &Digest) -> Option<Value> {
        let size = self.store.stat(d).await.ok()?;
        if size > MAX_CONFIG_BYTES {
            return None;
        }
        let mut stream = self.store.open(d, 0, size).await.ok()?;
        let mut bytes = Vec::with_capacity(size as usize);
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk.ok()?);
        }
        serde_json::from_slice(&bytes).ok()
    }
}

/// What a tag's manifest shows in a tag list.
enum ManifestParts {
    Index(Vec<Platform>),
    /// An image: its config's digest (where its platform is) and its blobs' bytes.
    Image {
        config: Option<String>,
        bytes: u64,
    },
}

/// A stored manifest's JSON (`Null` if it is not JSON, which a stored manifest always is).
fn parse_json(content: &[u8]) -> Value {
    serde_json::from_slice(content).unwrap_or(Value::Null)
}

/// An object of strings (labels, annotations) as pairs; other values as empty strings.
fn string_pairs(v: &Value) -> Vec<(String, String)> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// `os/architecture[/variant]` of a platform object (an index entry's or a config's).
fn platform_name(v: &Value) -> String {
    let part = |k: &str| v[k].as_str().filter(|s| !s.is_empty());
    match (part("os"), part("architecture")) {
        (Some(os), Some(arch)) => match part("variant") {
            Some(variant) => format!("{os}/{arch}/{variant}"),
            None => format!("{os}/{arch}"),
        },
        _ => "unknown".into(),
    }
}

/// The platforms an index lists, each with its stored child's bytes; `None` when `content`
/// is not an index.
fn index_platforms(
    c: &crate::db::Conn,
    repo_id: i64,
    json: &Value,
) -> Result<Option<Vec<Platform>>> {
    let Some(children) = json["manifests"].as_array() else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(children.len().min(MAX_PLATFORMS));
    for child in children.iter().take(MAX_PLATFORMS) {
        let Some(digest) = child["digest"].as_str() else {
            continue;
        };
        let size = match q::manifest_id(c, repo_id, digest)? {
            Some(id) => Some(q::blob_bytes(c, id)?),
            None => None,
        };
        out.push(Platform {
            name: platform_name(&child["platform"]),
            digest: digest.to_string(),
            size,
        });
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_names() {
        let v: Value = serde_json::json!({"os": "linux", "architecture": "arm64", "variant": "v8"});
        assert_eq!(platform_name(&v), "linux/arm64/v8");
        let v: Value = serde_json::json!({"os": "linux", "architecture": "amd64", "variant": ""});
        assert_eq!(platform_name(&v), "linux/amd64");
        assert_eq!(platform_name(&Value::Null), "unknown");
        let v: Value = serde_json::json!({"os": "unknown", "architecture": "unknown"});
        assert_eq!(platform_name(&v), "unknown/unknown");
    }
}
