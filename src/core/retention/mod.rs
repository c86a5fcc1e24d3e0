//! Retention: policies that decide, per tag, what to keep; a run deletes the tags no keep rule
//! holds (never a sibling tag, never a manifest or blob: what becomes unreferenced is left to
//! garbage collection). A preview is the same decision with the deletes left out, on saved
//! policies or on a draft.
//!
//! Each repository is governed by the first saved policy (in the order they were added) whose
//! patterns match it; repositories no policy matches keep everything.

mod decide;
mod policy;

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

pub use decide::{Decision, TagInfo, decide};
pub use policy::{Policy, PolicySpec, RuleSpec};

use super::gc::Trigger;
use super::{Error, Registry, Result};
use crate::db::retention as q;
use crate::db::runs::{self, Runs};
use crate::db::{Db, gc::Snapshot};

/// Which policies a run applies.
#[derive(Clone, Debug)]
pub enum Which {
    /// Every saved policy, each to the repositories it governs.
    Saved,
    /// One saved policy, to the repositories it governs.
    Named(String),
    /// A policy not saved, to every repository it matches.
    Draft(Box<PolicySpec>),
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RetentionReport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    pub trigger: String,
    pub dry_run: bool,
    pub started_at: i64,
    pub finished_at: i64,
    /// Every tag of every repository a policy applied to, with what was decided and why.
    pub decisions: Vec<Decision>,
    /// Tags deleted (in a preview: to delete).
    pub deleted: u64,
    /// Bytes the deletions free once garbage is collected: blobs that only the manifests
    /// losing their last tag use (not the images' total size).
    pub bytes_to_free: u64,
    /// Tags that moved since they were decided on, and were left alone.
    pub skipped: Vec<String>,
    /// The name of the draft a preview applied, when it was not the saved policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft: Option<String>,
    pub errors: Vec<String>,
}

impl RetentionReport {
    pub fn summary(&self) -> String {
        let kept = self.decisions.len() as u64 - self.deleted.min(self.decisions.len() as u64);
        let stopped: HashSet<&str> = self
            .decisions
            .iter()
            .filter(|d| d.reason.starts_with("stopped:"))
            .map(|d| d.repo.as_str())
            .collect();
        let mut s = format!(
            "{} {} of {} tags, kept {kept}; frees {} once garbage is collected",
            if self.dry_run {
                "would delete"
            } else {
                "deleted"
            },
            self.deleted,
            self.decisions.len(),
            super::gc::human_bytes(self.bytes_to_free),
        );
        if !stopped.is_empty() {
            let mut names: Vec<&str> = stopped.into_iter().collect();
            names.sort();
            s.push_str(&format!(
                "; stopped by max_delete_share in {} (use --force)",
                names.join(", ")
            ));
        }
        if !self.skipped.is_empty() {
            s.push_str(&format!(
                "; {} tags moved meanwhile and were left",
                self.skipped.len()
            ));
        }
        s
    }
}

/// Check and save a policy; returns whether it is new (else it replaced one of its name).
pub async fn save(db: &Db, now: i64, spec: PolicySpec) -> Result<bool> {
    spec.compile().map_err(Error::PolicyInvalid)?;
    let json = serde_json::to_string(&spec).map_err(|e| Error::PolicyInvalid(e.to_string()))?;
    let name = spec.name.clone();
    db.write(move |tx| q::put_policy(tx, &name, &json, now).map_err(Error::from))
        .await
}

/// Saved policies, in the order they apply.
pub async fn list(db: &Db) -> Result<Vec<PolicySpec>> {
    let rows = db.read(|c| q::policies(c).map_err(Error::from)).await?;
    rows.iter().map(|j| parse_stored(j)).collect()
}

pub async fn get(db: &Db, name: &str) -> Result<Option<PolicySpec>> {
    let n = name.to_string();
    let row = db
        .read(move |c| q::get_policy(c, &n).map_err(Error::from))
        .await?;
    row.map(|j| parse_stored(&j)).transpose()
}

pub async fn remove(db: &Db, name: &str) -> Result<bool> {
    let n = name.to_string();
    db.write(move |tx| q::delete_policy(tx, &n).map_err(Error::from))
        .await
}

/// A stored run as a history lists it: its report without the decisions (a run's can hold
/// ten thousand, which a list of runs has no use for and need not allocate).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RunSummary {
    #[serde(default)]
    pub id: Option<i64>,
    pub trigger: String,
    pub dry_run: bool,
    pub started_at: i64,
    pub deleted: u64,
    pub bytes_to_free: u64,
    #[serde(default)]
    pub errors: Vec<String>,
    #[serde(default)]
    pub draft: Option<String>,
}

/// The latest stored runs, newest first.
pub async fn history(db: &Db, limit: i64) -> Result<Vec<RunSummary>> {
    let rows = db
        .read(move |c| runs::recent(c, Runs::Retention, limit).map_err(Error::from))
        .await?;
    Ok(super::parse_runs(rows, |r: &mut RunSummary, id| {
        r.id = Some(id)
    }))
}

fn parse_stored(json: &str) -> Result<PolicySpec> {
    serde_json::from_str(json).map_err(|e| {
        Error::Io(std::io::Error::other(format!(
            "stored policy is corrupt: {e}"
        )))
    })
}

/// Deletions per write transaction.
const BATCH: usize = 256;
/// Decisions kept in the stored copy of a report: the deletions (the full list is returned).
const STORED_DELETIONS: usize = 10_000;

impl Registry {
    /// Apply retention (or, with `dry_run`, preview it). `force` lifts `max_delete_share`.
    pub async fn apply_retention(
        &self,
        which: Which,
        trigger: Trigger,
        dry_run: bool,
        force: bool,
    ) -> Result<RetentionReport> {
        let now = self.now();
        if matches!(which, Which::Draft(_)) && !dry_run {
            return Err(Error::PolicyInvalid(
                "a draft can only be previewed: save it to run it".into(),
            ));
        }
        let saved = match &which {
            Which::Draft(_) => Vec::new(),
            Which::Saved | Which::Named(_) => list(&self.db).await?,
        };
        let mut report = RetentionReport {
            trigger: trigger.as_str().into(),
            draft: match &which {
                Which::Draft(spec) => Some(spec.name.clone()),
                _ => None,
            },
            dry_run,
            started_at: now,
            finished_at: now,
            ..RetentionReport::default()
        };
        // No policy, nothing to decide: no reads of every tag, no stored run.
        if matches!(which, Which::Saved) && saved.is_empty() {
            return Ok(report);
        }
        self.flush_pulls().await?;
        let (tags, snapshot) = self
            .db
            .read(|c| Ok::<_, Error>((q::tags(c)?, crate::db::gc::snapshot(c)?)))
            .await?;
        // Compiling policies and deciding over every tag is CPU work: off the async workers.
        let (decisions, targets, bytes) =
            tokio::task::spawn_blocking(move || plan(&which, &saved, &tags, &snapshot, now, force))
                .await
                .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))??;
        report.decisions = decisions;
        report.deleted = targets.len() as u64;
        report.bytes_to_free = bytes;

        if !dry_run {
            let mut deleted = 0u64;
            for batch in targets.chunks(BATCH) {
                let batch = batch.to_vec();
                let gone = self
                    .db
                    .write(move |tx| {
                        let mut out = Vec::new();
                        for (repo_id, tag, manifest_id, pushed_at) in batch {
                            let went =
                                q::delete_tag(tx, repo_id, &tag, manifest_id, pushed_at, now)?;
                            out.push((tag, went));
                        }
                        Ok::<_, Error>(out)
                    })
                    .await;
                match gone {
                    Ok(list) => {
                        for (tag, went) in list {
                            if went {
                                deleted += 1;
                            } else {
                                report.skipped.push(tag);
                            }
                        }
                    }
                    Err(e) => report.errors.push(format!("deleting tags: {e}")),
                }
            }
            report.deleted = deleted;
        }
        report.finished_at = self.now();
        let mut stored = report.clone();
        stored.decisions.retain(|d| d.delete);
        stored.decisions.truncate(STORED_DELETIONS);
        let json = serde_json::to_string(&stored).unwrap_or_else(|_| "{}".into());
        let (t, s, f, n) = (
            trigger.as_str(),
            report.started_at,
            report.finished_at,
            report.deleted,
        );
        report.id = Some(
            self.db
                .write(move |tx| q::insert_run(tx, t, dry_run, s, f, n, &json).map_err(Error::from))
                .await?,
        );
        Ok(report)
    }

    pub fn db(&self) -> &Db {
        &self.db
    }
}

/// (repository id, tag, manifest id, pushed at): what a deletion must still find.
type Target = (i64, String, i64, i64);

/// The decisions of a run over every tag, the deletions they make and the bytes those free.
fn plan(
    which: &Which,
    saved: &[PolicySpec],
    tags: &[q::TagRow],
    snapshot: &Snapshot,
    now: i64,
    force: bool,
) -> Result<(Vec<Decision>, Vec<Target>, u64)> {
    let policies: Vec<Policy> = match which {
        Which::Draft(spec) => vec![spec.compile().map_err(Error::PolicyInvalid)?],
        Which::Saved | Which::Named(_) => saved
            .iter()
            .map(|s| s.compile().map_err(Error::PolicyInvalid))
            .collect::<Result<_>>()?,
    };
    if let Which::Named(name) = which
        && !policies.iter().any(|p| &p.spec.name == name)
    {
        return Err(Error::PolicyUnknown(name.clone()));
    }
    // Tags by repository (they come sorted by it), each with the policy that governs it.
    let mut by_repo: Vec<(&str, i64, Vec<&q::TagRow>)> = Vec::new();
    for t in tags {
        match by_repo.last_mut() {
            Some((name, _, list)) if *name == t.repo => list.push(t),
            _ => by_repo.push((&t.repo, t.repo_id, vec![t])),
        }
    }
    let mut decisions = Vec::new();
    let mut targets: Vec<Target> = Vec::new();
    for (repo, repo_id, rows) in &by_repo {
        let governing = match which {
            Which::Draft(_) => policies.first().filter(|p| matches(p, repo)),
            Which::Saved => policies.iter().find(|p| matches(p, repo)),
            Which::Named(name) => policies
                .iter()
                .find(|p| matches(p, repo))
                .filter(|p| &p.spec.name == name),
        };
        let Some(policy) = governing else { continue };
        let infos: Vec<TagInfo> = rows
            .iter()
            .map(|r| TagInfo {
                name: r.tag.clone(),
                digest: r.digest.clone(),
                pushed_at: r.pushed_at,
                pulled_at: r.pulled_at,
                pulled_by: r.pulled_by.clone(),
            })
            .collect();
        let decided = decide(policy, repo, &infos, now, force);
        for (d, r) in decided.iter().zip(rows) {
            if d.delete {
                targets.push((*repo_id, r.tag.clone(), r.manifest_id, r.pushed_at));
            }
        }
        decisions.extend(decided);
    }
    let bytes = bytes_to_free(snapshot, tags, &targets);
    Ok((decisions, targets, bytes))
}

fn matches(p: &Policy, repo: &str) -> bool {
    p.repositories.iter().any(|pat| pat.matches(repo))
}

/// The bytes of blobs that only manifests losing their last tag (and the children only they
/// list) use, across every repository.
fn bytes_to_free(s: &Snapshot, tags: &[q::TagRow], targets: &[Target]) -> u64 {
    let mut tag_count: HashMap<i64, usize> = HashMap::new();
    for t in tags {
        *tag_count.entry(t.manifest_id).or_default() += 1;
    }
    for (_, _, m, _) in targets {
        if let Some(n) = tag_count.get_mut(m) {
            *n -= 1;
        }
    }
    // Manifests that lose their last tag.
    let losing: HashSet<i64> = targets
        .iter()
        .map(|(_, _, m, _)| *m)
        .filter(|m| tag_count.get(m) == Some(&0))
        .collect();
    if losing.is_empty() {
        return 0;
    }
    let mut freed: HashSet<i64> = HashSet::new();
    let repo_of: HashMap<i64, i64> = s.manifests.iter().map(|m| (m.id, m.repo_id)).collect();
    let by_key: HashMap<(i64, &str), i64> = s
        .manifests
        .iter()
        .map(|m| ((m.repo_id, m.digest.as_str()), m.id))
        .collect();
    let mut parents: HashMap<i64, Vec<i64>> = HashMap::new();
    for (pid, child) in &s.children {
        if let Some(cid) = repo_of
            .get(pid)
            .and_then(|r| by_key.get(&(*r, child.as_str())))
        {
            parents.entry(*cid).or_default().push(*pid);
        }
    }
    // A manifest is freed when it has no tag left (it loses its last one, or is a child that
    // never had one) and every index listing it is freed (garbage collection keeps the
    // children of live indexes): parents first, to a fixpoint.
    let candidates: Vec<i64> = losing
        .iter()
        .copied()
        .chain(
            parents
                .keys()
                .copied()
                .filter(|c| tag_count.get(c).copied().unwrap_or(0) == 0),
        )
        .collect();
    loop {
        let more: Vec<i64> = candidates
            .iter()
            .copied()
            .filter(|m| {
                !freed.contains(m)
                    && parents
                        .get(m)
                        .is_none_or(|ps| ps.iter().all(|p| freed.contains(p)))
            })
            .collect();
        if more.is_empty() {
            break;
        }
        freed.extend(more);
    }
    let mut users: HashMap<&str, bool> = HashMap::new();
    for (mid, d) in &s.manifest_blobs {
        let only_freed = users.entry(d.as_str()).or_insert(true);
        *only_freed &= freed.contains(mid);
    }
    let sizes: HashMap<&str, u64> = s.blobs.iter().map(|(d, n)| (d.as_str(), *n)).collect();
    users
        .into_iter()
        .filter(|(_, only)| *only)
        .map(|(d, _)| sizes.get(d).copied().unwrap_or(0))
        .sum()
}
