//! Adopting a registry:2 storage directory: every repository, tag, manifest and blob, with
//! the same digests, while the registry serves. The source is only read; blobs are
//! hard-linked into the store when they can be (same file system, permission to link) and
//! copied otherwise, and re-hashed either way before they count.
//!
//! First every repository is read and resolved (what can come in whole, `resolve`), which
//! gives the totals for progress; then blobs, manifests (children before indexes) and tags
//! go in through the same rules and locks as a push. Anything broken in the source (a tag
//! whose manifest is gone, a manifest whose blob is gone, a schema1 manifest) is reported and
//! left out, never half imported. A second run finds everything present and adds nothing.

mod report;
mod resolve;
mod source;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;

pub use report::{ImportProgress, ImportReport, Present, Skipped};
use resolve::{Parsed, Refs};
use source::{Source, SourceRepo};

use super::{Error, Registry, Result};
use crate::db::{blobs, manifests, repos, tags};
use crate::oci::manifest::{self, MAX_MANIFEST_BYTES};
use crate::oci::{Digest, Reference, RepoName};

/// How an import is told to behave.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    pub dry_run: bool,
    /// Point tags that exist in berth with another target at the source's target.
    pub overwrite_tags: bool,
    /// Set to end the import between two steps (each step is whole: a blob stored and
    /// recorded, a manifest, a tag).
    pub stop: Arc<AtomicBool>,
}

impl ImportOptions {
    fn check_stop(&self) -> Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(Error::ImportSource(
                "the import was interrupted; run it again to finish".into(),
            ));
        }
        Ok(())
    }
}

/// Called as an import goes.
pub type OnProgress = Arc<dyn Fn(ImportProgress) + Send + Sync>;

/// One repository of the source, read and resolved.
struct Planned {
    repo: SourceRepo,
    name: Option<RepoName>,
    refs: HashMap<Digest, Refs>,
    order: Vec<Digest>,
    skipped: HashMap<Digest, String>,
}

enum Adopt {
    Present,
    Linked(u64),
    Copied(u64),
}

impl Registry {
    /// Import the registry:2 storage root `dir` (see the module documentation).
    pub async fn import_registry2(
        &self,
        dir: PathBuf,
        options: ImportOptions,
        on_progress: OnProgress,
    ) -> Result<ImportReport> {
        let started = Instant::now();
        // One import at a time: each owns the adopted files in staging while it runs.
        let _one = self.importing.lock().await;
        if !options.dry_run {
            self.staging.sweep_adopted().await?;
        }
        let source_name = dir.display().to_string();
        let (source, repos) = tokio::task::spawn_blocking(move || {
            let source = Source::open(&dir).map_err(Error::ImportSource)?;
            let repos = source.repositories()?;
            Ok::<_, Error>((source, repos))
        })
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))??;
        let source = Arc::new(source);
        let mut report = ImportReport {
            source: source_name,
            dry_run: options.dry_run,
            ..ImportReport::default()
        };

        let mut planned = Vec::with_capacity(repos.len());
        for repo in repos {
            planned.push(self.plan_repo(&source, repo).await?);
        }
        let src = source.clone();
        let (planned, mut progress) = tokio::task::spawn_blocking(move || {
            let p = totals(&src, &planned);
            (planned, p)
        })
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
        on_progress(progress);

        let mut adopted_here: HashSet<Digest> = HashSet::new();
        for plan in planned {
            self.import_repo(
                &source,
                plan,
                &options,
                &mut report,
                &mut progress,
                &mut adopted_here,
                &on_progress,
            )
            .await?;
        }
        report.skipped.sort_by(|a, b| a.what.cmp(&b.what));
        report.duration_ms = started.elapsed().as_millis() as u64;
        on_progress(progress);
        Ok(report)
    }

    /// Read every manifest of a repository and decide what can come in.
    async fn plan_repo(&self, source: &Arc<Source>, repo: SourceRepo) -> Result<Planned> {
        let name = RepoName::parse(&repo.name).ok();
        let src = source.clone();
        let revisions = repo.revisions.clone();
        let parsed: HashMap<Digest, Parsed> = tokio::task::spawn_blocking(move || {
            revisions
                .iter()
                .map(|d| (d.clone(), read_refs(&src, d)))
                .collect()
        })
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
        // Blobs the source lacks may be in berth already (an earlier import or a push).
        let wanted: Vec<String> = parsed
            .values()
            .flatten()
            .flat_map(|r| r.blobs.iter())
            .map(ToString::to_string)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let here: HashSet<String> = self
            .db
            .read(move |c| {
                let mut have = HashSet::new();
                for d in wanted {
                    if blobs::size(c, &d)?.is_some() {
                        have.insert(d);
                    }
                }
                Ok::<_, Error>(have)
            })
            .await?;
        let (src, revisions) = (source.clone(), repo.revisions.clone());
        let (resolved, parsed) = tokio::task::spawn_blocking(move || {
            let resolved = resolve::resolve(&revisions, &parsed, |b| {
                here.contains(&b.to_string()) || src.blob_size(b).is_some()
            });
            (resolved, parsed)
        })
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
        let refs = parsed
            .into_iter()
            .filter_map(|(d, p)| p.ok().map(|r| (d, r)))
            .collect();
        Ok(Planned {
            repo,
            name,
            refs,
            order: resolved.order,
            skipped: resolved.skipped,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn import_repo(
        &self,
        source: &Arc<Source>,
        plan: Planned,
        options: &ImportOptions,
        report: &mut ImportReport,
        progress: &mut ImportProgress,
        adopted_here: &mut HashSet<Digest>,
        on_progress: &OnProgress,
    ) -> Result<()> {
        let repo_name = plan.repo.name.clone();
        for (what, why) in &plan.repo.unreadable {
            report.skipped.push(Skipped {
                what: what.clone(),
                why: why.clone(),
            });
        }
        let Some(name) = plan.name else {
            report.skipped.push(Skipped {
                what: repo_name,
                why: "not a valid repository name".into(),
            });
            return Ok(());
        };
        if let Err(e) = self.writable(&name) {
            report.skipped.push(Skipped {
                what: repo_name,
                why: e.to_string(),
            });
            return Ok(());
        }
        for (d, why) in &plan.skipped {
            report.skipped.push(Skipped {
                what: format!("{name}@{d}"),
                why: why.clone(),
            });
        }
        let mut stored: HashSet<Digest> = HashSet::new();
        let mut blobs_done: HashSet<Digest> = HashSet::new();
        let mut touched = false;
        for d in &plan.order {
            options.check_stop()?;
            let refs = &plan.refs[d];
            if let Some(child) = refs.children.iter().find(|c| !stored.contains(*c)) {
                report.skipped.push(Skipped {
                    what: format!("{name}@{d}"),
                    why: format!("it lists {child}, which could not be imported"),
                });
                progress.objects_done += 1;
                continue;
            }
            let mut failed = None;
            for b in &refs.blobs {
                if !blobs_done.insert(b.clone()) {
                    continue;
                }
                options.check_stop()?;
                let counted = adopted_here.insert(b.clone());
                let outcome = if options.dry_run {
                    self.blob_known(b).await.map(|known| {
                        if known || !counted {
                            Adopt::Present
                        } else {
                            Adopt::Copied(source.blob_size(b).unwrap_or(0))
                        }
                    })
                } else {
                    self.adopt_blob(&name, b, &source.blob_path(b)).await
                };
                if counted {
                    progress.objects_done += 1;
                }
                match outcome {
                    Ok(Adopt::Present) => {
                        if counted {
                            report.present.blobs += 1;
                        }
                    }
                    Ok(Adopt::Linked(size) | Adopt::Copied(size)) if options.dry_run => {
                        report.blobs += 1;
                        report.bytes += size;
                        progress.bytes_done += size;
                    }
                    Ok(Adopt::Linked(size)) => {
                        report.blobs += 1;
                        report.linked += 1;
                        report.bytes += size;
                        progress.bytes_done += size;
                    }
                    Ok(Adopt::Copied(size)) => {
                        report.blobs += 1;
                        report.copied += 1;
                        report.bytes += size;
                        progress.bytes_done += size;
                    }
                    Err(e) if fatal(&e) => return Err(e),
                    Err(e) => {
                        // Another manifest of this run may retry it; this one is left out.
                        blobs_done.remove(b);
                        adopted_here.remove(b);
                        failed = Some(format!("its blob {b}: {e}"));
                        break;
                    }
                }
                on_progress(*progress);
            }
            if let Some(why) = failed {
                report.skipped.push(Skipped {
                    what: format!("{name}@{d}"),
                    why,
                });
                progress.objects_done += 1;
                continue;
            }
            match self.import_manifest(source, &name, d, refs, options).await {
                Ok(true) => {
                    report.manifests += 1;
                    stored.insert(d.clone());
                    touched = true;
                }
                Ok(false) => {
                    report.present.manifests += 1;
                    stored.insert(d.clone());
                    touched = true;
                }
                Err(e) if fatal(&e) => return Err(e),
                Err(e) => report.skipped.push(Skipped {
                    what: format!("{name}@{d}"),
                    why: e.to_string(),
                }),
            }
            progress.objects_done += 1;
            on_progress(*progress);
        }
        for tag in &plan.repo.tags {
            options.check_stop()?;
            progress.objects_done += 1;
            let what = format!("{name}:{}", tag.name);
            if !stored.contains(&tag.target) {
                let why = match plan.skipped.get(&tag.target) {
                    Some(why) => format!("it points at {}, which is left out: {why}", tag.target),
                    None if plan.refs.contains_key(&tag.target) => {
                        format!("it points at {}, which could not be imported", tag.target)
                    }
                    None => format!(
                        "it points at {}, which the repository does not hold",
                        tag.target
                    ),
                };
                report.skipped.push(Skipped { what, why });
                continue;
            }
            let current = self.tag_target(&name, &tag.name).await?;
            match current {
                Some(c) if c == tag.target.to_string() => report.present.tags += 1,
                Some(c) if !options.overwrite_tags => report.conflicts.push(Skipped {
                    what,
                    why: format!("berth has it at {c}, the source at {}", tag.target),
                }),
                _ => {
                    if !options.dry_run {
                        let at = if tag.set_at > 0 {
                            tag.set_at.min(self.now())
                        } else {
                            self.now()
                        };
                        self.set_tag_at(&name, &tag.name, &tag.target, at).await?;
                    }
                    report.tags += 1;
                    touched = true;
                }
            }
            on_progress(*progress);
        }
        if touched {
            report.repositories += 1;
        }
        Ok(())
    }

    /// Whether berth holds a blob's bytes (recorded).
    async fn blob_known(&self, d: &Digest) -> Result<bool> {
        let d = d.to_string();
        self.db
            .read(move |c| Ok::<_, Error>(blobs::size(c, &d)?.is_some()))
            .await
    }

    /// Bring one blob in and link it to `repo`.
    async fn adopt_blob(&self, repo: &RepoName, d: &Digest, src: &Path) -> Result<Adopt> {
        let (r, ds, now) = (repo.to_string(), d.to_string(), self.now());
        let linked = self
            .db
            .write(move |tx| {
                if blobs::size(tx, &ds)?.is_none() {
                    return Ok(false);
                }
                let id = repos::ensure(tx, &r, now)?;
                blobs::link(tx, id, &ds, now)?;
                Ok::<_, Error>(true)
            })
            .await?;
        if linked {
            return Ok(Adopt::Present);
        }
        self.check_space().await?;
        let adopted = self.staging.adopt(src, d.algorithm()).await?;
        let actual = adopted.progress.hasher.clone().finish();
        if &actual != d {
            adopted.discard().await;
            return Err(Error::DigestInvalid(format!(
                "its bytes in the source have digest {actual}"
            )));
        }
        let (size, hard_linked) = (adopted.progress.len, adopted.linked);
        let (r, ds) = (repo.to_string(), d.to_string());
        self.commit_blob(adopted.into_staged(), d, size, move |tx, now| {
            let id = repos::ensure(tx, &r, now)?;
            blobs::link(tx, id, &ds, now)?;
            Ok(())
        })
        .await?;
        Ok(if hard_linked {
            Adopt::Linked(size)
        } else {
            Adopt::Copied(size)
        })
    }

    /// Store one manifest by digest unless the repository has it; `true` when stored (or,
    /// in a dry run, when it would be).
    async fn import_manifest(
        &self,
        source: &Arc<Source>,
        repo: &RepoName,
        d: &Digest,
        refs: &Refs,
        options: &ImportOptions,
    ) -> Result<bool> {
        let (r, ds) = (repo.to_string(), d.to_string());
        let present = self
            .db
            .read(move |c| Ok::<_, Error>(manifests::by_digest(c, &r, &ds, false)?.is_some()))
            .await?;
        if present {
            return Ok(false);
        }
        if options.dry_run {
            return Ok(true);
        }
        let (src, dd) = (source.clone(), d.clone());
        let body = tokio::task::spawn_blocking(move || src.read_manifest(&dd, MAX_MANIFEST_BYTES))
            .await
            .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?
            .map_err(Error::ManifestInvalid)?;
        self.put_manifest(
            repo,
            &Reference::Digest(d.clone()),
            Some(&refs.media_type),
            Bytes::from(body),
            None,
        )
        .await?;
        Ok(true)
    }

    /// The digest a tag points at in berth.
    async fn tag_target(&self, repo: &RepoName, tag: &str) -> Result<Option<String>> {
        let (r, t) = (repo.to_string(), tag.to_string());
        self.db
            .read(move |c| Ok::<_, Error>(manifests::by_tag(c, &r, &t, false)?.map(|m| m.digest)))
            .await
    }

    /// Point a tag at a manifest the repository holds, as set at `at` (the source's time:
    /// retention's push time is the tag's).
    async fn set_tag_at(&self, repo: &RepoName, tag: &str, d: &Digest, at: i64) -> Result<()> {
        let (r, t, ds, now) = (repo.to_string(), tag.to_string(), d.to_string(), self.now());
        self.db
            .write(move |tx| {
                let id = repos::ensure(tx, &r, now)?;
                let m = manifests::by_digest(tx, &r, &ds, false)?.ok_or(Error::ManifestUnknown)?;
                tags::set_at(tx, id, &t, m.id, at, now, None)?;
                Ok::<_, Error>(())
            })
            .await
    }
}

/// Objects and bytes the import will handle, for progress.
fn totals(source: &Source, planned: &[Planned]) -> ImportProgress {
    let mut blobs_seen: HashSet<&Digest> = HashSet::new();
    let mut p = ImportProgress::default();
    for plan in planned.iter().filter(|p| p.name.is_some()) {
        p.objects_total += (plan.order.len() + plan.repo.tags.len()) as u64;
        for d in &plan.order {
            for b in &plan.refs[d].blobs {
                if blobs_seen.insert(b) {
                    p.objects_total += 1;
                    p.bytes_total += source.blob_size(b).unwrap_or(0);
                }
            }
        }
    }
    p
}

/// Errors that end the whole import: the destination cannot take more.
fn fatal(e: &Error) -> bool {
    e.is_storage_full() || matches!(e, Error::OutOfSpace { .. } | Error::Db(_))
}

/// A manifest's references, or why it cannot come in.
fn read_refs(source: &Source, d: &Digest) -> Parsed {
    let body = source.read_manifest(d, MAX_MANIFEST_BYTES)?;
    if is_schema1(&body) {
        return Err("a Docker schema1 manifest, which berth does not store".into());
    }
    let parsed = manifest::parse(None, &body).map_err(|e| format!("not a valid manifest: {e}"))?;
    Ok(Refs {
        media_type: parsed.media_type,
        blobs: parsed.blobs,
        children: parsed.children,
    })
}

fn is_schema1(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Head {
        schema_version: Option<i64>,
        media_type: Option<String>,
    }
    serde_json::from_slice::<Head>(body).is_ok_and(|h| {
        h.schema_version == Some(1)
            || h.media_type
                .is_some_and(|m| m.starts_with("application/vnd.docker.distribution.manifest.v1"))
    })
}
