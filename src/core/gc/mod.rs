//! Online garbage collection: removes what nothing references any more while pushes and
//! pulls go on.
//!
//! SQLite is the one source of truth for "does this blob exist": every answer a client gets
//! (HEAD, mount, manifest PUT validation) and every delete decision is made against the same
//! rows, and SQLite runs write transactions one at a time. A HEAD, mount or upload marks the
//! repository's link as seen, so a client told "it exists" has the grace period to push the
//! manifest that references it. Files are removed only after the commit that forgets them,
//! under a per-digest stripe lock that an upload committing the same digest also takes: a
//! crash leaves at most files without rows, which a later run removes once older than the
//! grace.
//!
//! A run reads a snapshot, makes a plan (`plan`, pure), then carries it out in small batches,
//! each delete repeating its rule in its transaction. A dry run stops after the plan.

mod plan;
mod report;
pub mod schedule;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;

pub use plan::{Cutoffs, FoundFile, Plan};
pub use report::{
    BlobItem, FileItem, LinkItem, ManifestItem, Report, UploadItem, count, human_bytes,
};

use super::{Error, Registry, Result};
use crate::db::gc as q;
use crate::db::runs::{self, Runs};
use crate::db::{blobs, gc::Snapshot};
use crate::oci::{Digest, UploadId};
use crate::storage::StoreError;

/// How long things are kept, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// A blob link no manifest uses is kept this long after a client was last told of it;
    /// files without rows are kept this long after they were written.
    pub grace: i64,
    /// Untagged manifests are kept this long after their last push or pull; `None`: for ever.
    pub untagged_grace: Option<i64>,
    /// Upload sessions are kept this long after their last activity.
    pub upload_expiry: i64,
}

impl Settings {
    /// How stale a link's seen-at mark may be before a `HEAD` writes a new one: most answers
    /// then stay reads.
    pub fn mark_every(&self) -> i64 {
        self.grace / 4
    }

    /// Links seen before this go (if nothing uses them). The slack of `mark_every` makes
    /// sure every answer, also one that wrote no mark, is followed by a full `grace`.
    pub fn link_cutoff(&self, now: i64) -> i64 {
        now - self.grace - self.mark_every()
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            grace: 6 * 3600,
            untagged_grace: Some(24 * 3600),
            upload_expiry: 24 * 3600,
        }
    }
}

/// A point in a run where a test may hold it (`Registry::set_gc_hook`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Point {
    /// The plan is made; nothing is removed yet.
    Planned,
    /// Blob rows are deleted and committed; their files are not removed yet.
    BlobRowsDeleted(Vec<Digest>),
}

pub type Hook = Arc<dyn Fn(Point) -> BoxFuture<'static, ()> + Send + Sync>;

const STRIPES: usize = 64;
/// Rows per write transaction: small, so pushes never wait long for the writer.
const BATCH: usize = 64;
/// Blobs per transaction and per hold of a stripe lock (an upload finishing a digest of that
/// stripe waits for the batch's files to go).
const BLOB_BATCH: usize = 32;

/// Collection state shared by every clone of the registry.
pub(crate) struct Gc {
    settings: Settings,
    /// Held by a run while it deletes a blob (rows, then file) and by an upload while it
    /// commits one (file, then rows), for the stripe of the digest.
    stripes: Vec<tokio::sync::Mutex<()>>,
    /// One run at a time.
    running: tokio::sync::Mutex<()>,
    /// Set at shutdown: a run stops at its next batch boundary.
    pub(crate) stop: AtomicBool,
    hook: Mutex<Option<Hook>>,
}

impl Gc {
    pub(crate) fn new(settings: Settings) -> Gc {
        Gc {
            settings,
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            running: tokio::sync::Mutex::new(()),
            stop: AtomicBool::new(false),
            hook: Mutex::new(None),
        }
    }

    pub(crate) fn settings(&self) -> Settings {
        self.settings
    }

    fn stripe_of(d: &Digest) -> usize {
        usize::from_str_radix(&d.hex()[..2], 16).unwrap_or(0) % STRIPES
    }

    /// The lock an upload holds while it commits `d`.
    pub(crate) async fn lock_digest(&self, d: &Digest) -> tokio::sync::MutexGuard<'_, ()> {
        self.stripes[Self::stripe_of(d)].lock().await
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    async fn at(&self, point: Point) {
        let hook = self.hook.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(h) = hook {
            h(point).await;
        }
    }
}

/// How a run was started, as the report records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Schedule,
    Cli,
    /// The web UI, by an administrator.
    Ui,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Cli => "cli",
            Trigger::Ui => "ui",
        }
    }
}

impl Registry {
    /// Hold garbage collection at the points a test wants to race against.
    #[doc(hidden)]
    pub fn set_gc_hook(&self, hook: Option<Hook>) {
        *self.gc.hook.lock().unwrap_or_else(|p| p.into_inner()) = hook;
    }

    /// Make runs in progress stop at their next batch (shutdown).
    pub fn stop_collecting(&self) {
        self.gc.stop.store(true, Ordering::Relaxed);
    }

    /// Whether a collection is running now.
    pub fn collecting(&self) -> bool {
        self.gc.running.try_lock().is_err()
    }

    /// Collect garbage now (or, with `dry_run`, say what would go). Runs wait for each other.
    /// The report is stored and returned.
    pub async fn collect_garbage(&self, trigger: Trigger, dry_run: bool) -> Result<Report> {
        let _one = self.gc.running.lock().await;
        let started = std::time::Instant::now();
        let now = self.now();
        let set = self.gc.settings;
        let cut = Cutoffs {
            links: set.link_cutoff(now),
            files: now - set.grace,
            untagged: set.untagged_grace.map(|g| now - g),
            upload: now - set.upload_expiry,
        };
        // Pull times decide what an untagged manifest's grace counts from, and what the
        // cache evicts.
        self.flush_pulls().await?;
        let evicted = self.evict_caches(dry_run).await?;
        let snapshot = self
            .db
            .read(|c| q::snapshot(c).map_err(Error::from))
            .await?;
        let blob_files = self.blob_files().await?;
        let upload_files: Vec<FoundFile> = self
            .staging
            .list()
            .await?
            .into_iter()
            .map(|f| FoundFile {
                name: f.id.to_string(),
                size: f.size,
                modified: f.modified,
            })
            .collect();
        // Planning over every row is CPU work: off the async workers, so that requests served
        // meanwhile do not wait behind it.
        let (plan, names, blob_files, upload_files) = tokio::task::spawn_blocking(move || {
            let plan = plan::plan(&snapshot, &blob_files, &upload_files, cut);
            (plan, Names::new(&snapshot), blob_files, upload_files)
        })
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
        let mut report = Report::new(trigger, dry_run, now);
        report.evicted = evicted
            .into_iter()
            .map(|(repo, digest)| report::ManifestItem { repo, digest })
            .collect();
        report.bytes_waiting = plan.bytes_waiting;
        if dry_run {
            report.planned(&plan, &names, &blob_files, &upload_files);
        } else {
            self.gc.at(Point::Planned).await;
            self.carry_out(&plan, cut, &names, &mut report).await;
        }
        report.finished_at = self.now();
        report.duration_ms = started.elapsed().as_millis() as u64;
        if !dry_run {
            let m = crate::metrics::global();
            m.gc_runs.inc();
            m.gc_freed_bytes.inc_by(report.bytes_freed);
            m.gc_last_run.set(report.finished_at);
        }
        let stored = report.stored_json();
        let (t, (s, f, b)) = (
            trigger.as_str(),
            (report.started_at, report.finished_at, report.bytes_freed),
        );
        report.id = Some(
            self.db
                .write(move |tx| {
                    q::insert_run(tx, t, dry_run, s, f, b, &stored).map_err(Error::from)
                })
                .await?,
        );
        Ok(report)
    }

    /// The latest stored reports, newest first.
    pub async fn gc_history(&self, limit: i64) -> Result<Vec<Report>> {
        let rows = self
            .db
            .read(move |c| runs::recent(c, Runs::Gc, limit).map_err(Error::from))
            .await?;
        Ok(super::parse_runs(rows, |r: &mut Report, id| {
            r.id = Some(id)
        }))
    }

    /// The stored report of run `id`, if it is still kept.
    pub async fn gc_report(&self, id: i64) -> Result<Option<Report>> {
        let row = self
            .db
            .read(move |c| q::run(c, id).map_err(Error::from))
            .await?;
        Ok(row.and_then(|json| {
            super::parse_runs(vec![(id, json)], |r: &mut Report, id| r.id = Some(id)).pop()
        }))
    }

    /// The latest run that removed (not a dry run): (finished at, bytes freed, trigger).
    pub async fn last_gc_run(&self) -> Result<Option<(i64, u64, String)>> {
        self.db
            .read(|c| runs::last_real(c, Runs::Gc).map_err(Error::from))
            .await
    }

    /// Every blob file of the store, page by page.
    async fn blob_files(&self) -> Result<Vec<FoundFile>> {
        let mut out = Vec::new();
        let mut after: Option<Digest> = None;
        loop {
            let page = self.store.list(after.as_ref(), 1000).await?;
            let Some(last) = page.last() else {
                return Ok(out);
            };
            after = Some(last.digest.clone());
            out.extend(page.into_iter().map(|l| FoundFile {
                name: l.digest.to_string(),
                size: l.size,
                modified: l.modified,
            }));
        }
    }

    async fn carry_out(&self, plan: &Plan, cut: Cutoffs, names: &Names, report: &mut Report) {
        if let Some(untagged) = cut.untagged {
            for round in &plan.manifest_rounds {
                for batch in round.chunks(BATCH) {
                    if self.interrupted(report) {
                        return;
                    }
                    // Pulled since the run began (not in the database yet): no longer garbage.
                    let ids: Vec<i64> = batch
                        .iter()
                        .copied()
                        .filter(|id| !self.pulls.pending(*id))
                        .collect();
                    let gone = self
                        .db
                        .write_paced(move |tx| {
                            let mut gone = Vec::new();
                            for id in ids {
                                if q::delete_manifest(tx, id, untagged)? {
                                    gone.push(id);
                                }
                            }
                            Ok::<_, Error>(gone)
                        })
                        .await;
                    match gone {
                        Ok(gone) => report
                            .manifests
                            .extend(gone.iter().map(|id| names.manifest(*id))),
                        Err(e) => report.errors.push(format!("deleting manifests: {e}")),
                    }
                    tokio::task::yield_now().await;
                }
            }
        }

        for batch in plan.links.chunks(BATCH) {
            if self.interrupted(report) {
                return;
            }
            let links = batch.to_vec();
            let grace = cut.links;
            let gone = self
                .db
                .write_paced(move |tx| {
                    let mut gone = Vec::new();
                    for (repo, digest) in links {
                        if q::delete_link(tx, repo, &digest, grace)? {
                            gone.push((repo, digest));
                        }
                    }
                    Ok::<_, Error>(gone)
                })
                .await;
            match gone {
                Ok(gone) => report
                    .links
                    .extend(gone.into_iter().map(|(repo, digest)| LinkItem {
                        repo: names.repo(repo),
                        digest,
                    })),
                Err(e) => report.errors.push(format!("ending blob links: {e}")),
            }
            tokio::task::yield_now().await;
        }

        self.delete_blobs(plan, report).await;
        self.delete_orphan_blobs(plan, report).await;
        self.delete_uploads(plan, cut, names, report).await;
    }

    /// Whether the server is shutting down (the run then ends here, marked interrupted).
    fn interrupted(&self, report: &mut Report) -> bool {
        report.interrupted |= self.gc.stopping();
        report.interrupted
    }

    /// Blob rows, then their files, one stripe at a time.
    async fn delete_blobs(&self, plan: &Plan, report: &mut Report) {
        let mut by_stripe: HashMap<usize, Vec<Digest>> = HashMap::new();
        for (d, _) in &plan.blobs {
            match Digest::parse(d) {
                Ok(d) => by_stripe.entry(Gc::stripe_of(&d)).or_default().push(d),
                Err(e) => report.errors.push(format!("blob row {d}: {e}")),
            }
        }
        let mut stripes: Vec<_> = by_stripe.into_iter().collect();
        stripes.sort_by_key(|(s, _)| *s);
        for (stripe, digests) in stripes {
            for batch in digests.chunks(BLOB_BATCH) {
                if self.interrupted(report) {
                    return;
                }
                let _held = self.gc.stripes[stripe].lock().await;
                let names: Vec<String> = batch.iter().map(ToString::to_string).collect();
                let gone = self
                    .db
                    .write_paced(move |tx| {
                        let mut gone = Vec::new();
                        for d in names {
                            if let Some(size) = q::delete_blob(tx, &d)? {
                                gone.push((d, size));
                            }
                        }
                        Ok::<_, Error>(gone)
                    })
                    .await;
                let gone = match gone {
                    Ok(g) => g,
                    Err(e) => {
                        report.errors.push(format!("deleting blob rows: {e}"));
                        continue;
                    }
                };
                let digests: Vec<Digest> = gone
                    .iter()
                    .filter_map(|(d, _)| Digest::parse(d).ok())
                    .collect();
                self.gc.at(Point::BlobRowsDeleted(digests.clone())).await;
                for d in digests {
                    match self.store.delete(&d).await {
                        Ok(size) => {
                            report.bytes_freed += size;
                            report.blobs.push(BlobItem {
                                digest: d.to_string(),
                                size,
                            });
                        }
                        // A row without its file (a crash before the file was renamed into
                        // place): the row is gone now, nothing to free.
                        Err(StoreError::NotFound) => report.blobs.push(BlobItem {
                            digest: d.to_string(),
                            size: 0,
                        }),
                        Err(StoreError::Io(e)) => {
                            report.errors.push(format!("removing blob {d}: {e}"));
                        }
                    }
                }
                drop(_held);
                tokio::task::yield_now().await;
            }
        }
    }

    /// Blob files that no row names (left by a crash between a commit and an unlink).
    async fn delete_orphan_blobs(&self, plan: &Plan, report: &mut Report) {
        for f in &plan.orphan_blobs {
            if self.interrupted(report) {
                return;
            }
            let Ok(d) = Digest::parse(&f.name) else {
                continue;
            };
            let _held = self.gc.lock_digest(&d).await;
            let name = f.name.clone();
            match self
                .db
                .read(move |c| blobs::size(c, &name).map_err(Error::from))
                .await
            {
                Ok(None) => {}
                // Committed since the snapshot: not an orphan.
                Ok(Some(_)) => continue,
                Err(e) => {
                    report.errors.push(format!("checking blob {d}: {e}"));
                    continue;
                }
            }
            match self.store.delete(&d).await {
                Ok(size) => {
                    report.bytes_freed += size;
                    report.orphan_files.push(FileItem::blob(&f.name, size));
                }
                Err(StoreError::NotFound) => {}
                Err(StoreError::Io(e)) => report.errors.push(format!("removing blob {d}: {e}")),
            }
        }
    }

    async fn delete_uploads(&self, plan: &Plan, cut: Cutoffs, names: &Names, report: &mut Report) {
        for batch in plan.uploads.chunks(BATCH) {
            if self.interrupted(report) {
                return;
            }
            // Hold each session as a request would: one that a request is using now (a
            // long streamed PATCH) is not idle, whatever its record says.
            let mut held = Vec::new();
            for id in batch {
                let Ok(uid) = UploadId::parse(id) else {
                    continue;
                };
                if let Ok(guard) = self.sessions.slot(&uid).try_lock_owned() {
                    held.push((uid, guard));
                }
            }
            let ids: Vec<String> = held.iter().map(|(u, _)| u.to_string()).collect();
            let cutoff = cut.upload;
            let gone = self
                .db
                .write_paced(move |tx| {
                    let mut gone = Vec::new();
                    for id in ids {
                        if q::delete_idle_upload(tx, &id, cutoff)? {
                            gone.push(id);
                        }
                    }
                    Ok::<_, Error>(gone)
                })
                .await;
            let gone = match gone {
                Ok(g) => g,
                Err(e) => {
                    report.errors.push(format!("expiring uploads: {e}"));
                    continue;
                }
            };
            for (uid, guard) in held {
                let id = uid.to_string();
                if !gone.contains(&id) {
                    continue;
                }
                let size = match self.staging.delete(&uid).await {
                    Ok(size) => size.unwrap_or(0),
                    Err(e) => {
                        report.errors.push(format!("removing upload {id}: {e}"));
                        0
                    }
                };
                drop(guard);
                self.sessions.forget(&uid);
                report.bytes_freed += size;
                report.uploads.push(UploadItem {
                    repo: names.upload_repo(&id),
                    id,
                    size,
                });
            }
        }
        for f in &plan.orphan_uploads {
            if self.interrupted(report) {
                return;
            }
            let Ok(uid) = UploadId::parse(&f.name) else {
                continue;
            };
            let name = f.name.clone();
            match self
                .db
                .read(move |c| q::upload_exists(c, &name).map_err(Error::from))
                .await
            {
                Ok(false) => {}
                Ok(true) => continue,
                Err(e) => {
                    report.errors.push(format!("checking upload {uid}: {e}"));
                    continue;
                }
            }
            match self.staging.delete(&uid).await {
                Ok(Some(size)) => {
                    report.bytes_freed += size;
                    report.orphan_files.push(FileItem::upload(&f.name, size));
                }
                Ok(None) => {}
                Err(e) => report.errors.push(format!("removing upload {uid}: {e}")),
            }
        }
    }
}

/// Names for the ids of a snapshot, for reports.
struct Names {
    repos: HashMap<i64, String>,
    manifests: HashMap<i64, (i64, String)>,
    uploads: HashMap<String, i64>,
}

impl Names {
    fn new(s: &Snapshot) -> Names {
        Names {
            repos: s.repos.iter().cloned().collect(),
            manifests: s
                .manifests
                .iter()
                .map(|m| (m.id, (m.repo_id, m.digest.clone())))
                .collect(),
            uploads: s
                .uploads
                .iter()
                .map(|u| (u.id.clone(), u.repo_id))
                .collect(),
        }
    }

    fn repo(&self, id: i64) -> String {
        self.repos.get(&id).cloned().unwrap_or_default()
    }

    fn manifest(&self, id: i64) -> ManifestItem {
        let (repo, digest) = self.manifests.get(&id).cloned().unwrap_or_default();
        ManifestItem {
            repo: self.repo(repo),
            digest,
        }
    }

    fn upload_repo(&self, id: &str) -> String {
        self.uploads
            .get(id)
            .map(|r| self.repo(*r))
            .unwrap_or_default()
    }
}
