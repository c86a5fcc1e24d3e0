//! What a collection will remove: a pure function of a database snapshot, the files found,
//! the settings and the time. A dry run reports this plan; a real run carries it out, each
//! delete repeating its rule inside a transaction (`db::gc`), so on a quiet registry the two
//! remove exactly the same things.
//!
//! The rules:
//! - a manifest goes when it is untagged, neither pushed nor pulled since the untagged grace,
//!   listed by no index of its repository that stays, and not a referrer of a manifest its
//!   repository keeps. Removing an index or a subject can free its children and referrers,
//!   so manifests go in rounds: parents before children.
//! - a repository's link to a blob goes when no manifest of that repository that stays uses
//!   it and no client was told of it (upload, mount, HEAD) within the grace.
//! - a blob goes when no link and no manifest that stays holds it.
//! - an upload session goes when idle for the upload expiry.
//! - a blob file or an upload file with no row goes when older than the grace.

use std::collections::{HashMap, HashSet};

use crate::db::gc::Snapshot;

/// Cut-offs in Unix seconds: what was last touched before them may go.
#[derive(Debug, Clone, Copy)]
pub struct Cutoffs {
    /// Links to blobs no manifest uses.
    pub links: i64,
    /// Files without a row.
    pub files: i64,
    /// Untagged manifests; `None` keeps them all.
    pub untagged: Option<i64>,
    /// Upload sessions, by last activity.
    pub upload: i64,
}

/// A file found in the blob store or in upload staging, with its modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundFile {
    pub name: String,
    pub size: u64,
    pub modified: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Manifest ids, round by round (each round after the one before it).
    pub manifest_rounds: Vec<Vec<i64>>,
    /// (repository id, digest).
    pub links: Vec<(i64, String)>,
    /// (digest, size).
    pub blobs: Vec<(String, u64)>,
    /// Upload session ids.
    pub uploads: Vec<String>,
    /// Blob files with no blob row.
    pub orphan_blobs: Vec<FoundFile>,
    /// Upload files with no session row.
    pub orphan_uploads: Vec<FoundFile>,
    /// Bytes of blobs that only the grace keeps (nothing uses them).
    pub bytes_waiting: u64,
}

pub fn plan(
    s: &Snapshot,
    blob_files: &[FoundFile],
    upload_files: &[FoundFile],
    cut: Cutoffs,
) -> Plan {
    let mut plan = Plan::default();
    let alive = manifest_rounds(s, cut, &mut plan);

    // What the manifests that stay use: per repository, and anywhere.
    let repo_of: HashMap<i64, i64> = s.manifests.iter().map(|m| (m.id, m.repo_id)).collect();
    let mut used_in_repo: HashSet<(i64, &str)> = HashSet::new();
    let mut used: HashSet<&str> = HashSet::new();
    for (mid, d) in &s.manifest_blobs {
        if alive.contains(mid) {
            used_in_repo.insert((repo_of[mid], d.as_str()));
            used.insert(d.as_str());
        }
    }

    // Links: those kept by a manifest, by the grace, or going.
    let mut linked: HashSet<&str> = HashSet::new();
    for l in &s.links {
        if used_in_repo.contains(&(l.repo_id, l.digest.as_str())) || l.seen_at >= cut.links {
            linked.insert(&l.digest);
        } else {
            plan.links.push((l.repo_id, l.digest.clone()));
        }
    }
    plan.links.sort();

    for (d, size) in &s.blobs {
        if used.contains(d.as_str()) {
            continue;
        }
        if linked.contains(d.as_str()) {
            // Used by no manifest that stays, yet linked: only a grace keeps it.
            plan.bytes_waiting += size;
        } else {
            plan.blobs.push((d.clone(), *size));
        }
    }
    plan.blobs.sort();

    plan.uploads = s
        .uploads
        .iter()
        .filter(|u| u.active_at < cut.upload)
        .map(|u| u.id.clone())
        .collect();
    plan.uploads.sort();

    let rows: HashSet<&str> = s.blobs.iter().map(|(d, _)| d.as_str()).collect();
    plan.orphan_blobs = orphans(blob_files, &rows, cut.files);
    let sessions: HashSet<&str> = s.uploads.iter().map(|u| u.id.as_str()).collect();
    plan.orphan_uploads = orphans(upload_files, &sessions, cut.files);
    plan
}

fn orphans(files: &[FoundFile], rows: &HashSet<&str>, grace: i64) -> Vec<FoundFile> {
    let mut out: Vec<FoundFile> = files
        .iter()
        .filter(|f| !rows.contains(f.name.as_str()) && f.modified < grace)
        .cloned()
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Fill `plan.manifest_rounds`; returns the ids of the manifests that stay.
fn manifest_rounds(s: &Snapshot, cut: Cutoffs, plan: &mut Plan) -> HashSet<i64> {
    let mut alive: HashSet<i64> = s.manifests.iter().map(|m| m.id).collect();
    let Some(untagged) = cut.untagged else {
        return alive;
    };
    // (repository, digest) → manifest id, and how many manifests that stay list each child.
    let by_key: HashMap<(i64, &str), i64> = s
        .manifests
        .iter()
        .map(|m| ((m.repo_id, m.digest.as_str()), m.id))
        .collect();
    let repo_of: HashMap<i64, i64> = s.manifests.iter().map(|m| (m.id, m.repo_id)).collect();
    let mut parents: HashMap<(i64, &str), usize> = HashMap::new();
    let mut children_of: HashMap<i64, Vec<&str>> = HashMap::new();
    for (pid, child) in &s.children {
        if let Some(&repo) = repo_of.get(pid) {
            *parents.entry((repo, child.as_str())).or_default() += 1;
            children_of.entry(*pid).or_default().push(child.as_str());
        }
    }
    let mut candidates: Vec<&crate::db::gc::ManifestRow> = s
        .manifests
        .iter()
        .filter(|m| !m.tagged && m.touched_at < untagged)
        .collect();
    candidates.sort_by_key(|m| m.id);
    loop {
        let round: Vec<i64> = candidates
            .iter()
            .filter(|m| alive.contains(&m.id))
            .filter(|m| {
                parents
                    .get(&(m.repo_id, m.digest.as_str()))
                    .copied()
                    .unwrap_or(0)
                    == 0
            })
            .filter(|m| match &m.subject {
                None => true,
                Some(subject) => !by_key
                    .get(&(m.repo_id, subject.as_str()))
                    .is_some_and(|sid| alive.contains(sid)),
            })
            .map(|m| m.id)
            .collect();
        if round.is_empty() {
            return alive;
        }
        for id in &round {
            alive.remove(id);
            for child in children_of.get(id).into_iter().flatten() {
                if let Some(n) = parents.get_mut(&(repo_of[id], *child)) {
                    *n -= 1;
                }
            }
        }
        plan.manifest_rounds.push(round);
    }
}

#[cfg(test)]
// Each case starts from an empty snapshot and fills in the tables it is about.
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use crate::db::gc::{LinkRow, ManifestRow, UploadRow};

    fn m(id: i64, digest: &str, tagged: bool, touched_at: i64) -> ManifestRow {
        ManifestRow {
            id,
            repo_id: 1,
            digest: digest.into(),
            subject: None,
            tagged,
            touched_at,
        }
    }

    fn link(digest: &str, seen_at: i64) -> LinkRow {
        LinkRow {
            repo_id: 1,
            digest: digest.into(),
            seen_at,
        }
    }

    const CUT: Cutoffs = Cutoffs {
        links: 100,
        files: 100,
        untagged: Some(100),
        upload: 100,
    };

    #[test]
    fn untagged_index_goes_before_its_children_and_shared_children_stay() {
        let mut s = Snapshot::default();
        // Index 1 (untagged, old) lists children 2 and 3; index 4 (tagged) lists child 3.
        s.manifests = vec![
            m(1, "i1", false, 0),
            m(2, "c2", false, 0),
            m(3, "c3", false, 0),
            m(4, "i4", true, 0),
        ];
        s.children = vec![(1, "c2".into()), (1, "c3".into()), (4, "c3".into())];
        s.manifest_blobs = vec![(2, "b2".into()), (3, "b3".into())];
        s.links = vec![link("b2", 0), link("b3", 0)];
        s.blobs = vec![("b2".into(), 20), ("b3".into(), 30)];
        let p = plan(&s, &[], &[], CUT);
        assert_eq!(p.manifest_rounds, vec![vec![1], vec![2]]);
        assert_eq!(p.links, vec![(1, "b2".to_string())]);
        assert_eq!(p.blobs, vec![("b2".to_string(), 20)]);
        assert_eq!(p.bytes_waiting, 0);
    }

    #[test]
    fn referrers_stay_with_their_subject_and_go_after_it() {
        let mut s = Snapshot::default();
        let mut sig = m(2, "sig", false, 0);
        sig.subject = Some("img".into());
        s.manifests = vec![m(1, "img", true, 0), sig.clone()];
        assert!(plan(&s, &[], &[], CUT).manifest_rounds.is_empty());
        s.manifests[0].tagged = false;
        assert_eq!(
            plan(&s, &[], &[], CUT).manifest_rounds,
            vec![vec![1], vec![2]]
        );
        // A subject this repository never held keeps nothing.
        s.manifests = vec![sig];
        assert_eq!(plan(&s, &[], &[], CUT).manifest_rounds, vec![vec![2]]);
    }

    #[test]
    fn graces_keep_recent_things() {
        let mut s = Snapshot::default();
        s.manifests = vec![m(1, "recent", false, 100), m(2, "old", false, 99)];
        s.manifest_blobs = vec![(1, "b1".into()), (2, "b2".into())];
        // b2's link was seen at the cutoff: it waits; b3 is linked by nothing that stays.
        s.links = vec![link("b1", 0), link("b2", 100), link("b3", 99)];
        s.blobs = vec![("b1".into(), 1), ("b2".into(), 2), ("b3".into(), 3)];
        s.uploads = vec![
            UploadRow {
                id: "u-idle".into(),
                repo_id: 1,
                active_at: 99,
            },
            UploadRow {
                id: "u-busy".into(),
                repo_id: 1,
                active_at: 100,
            },
        ];
        let file = |name: &str, modified| FoundFile {
            name: name.into(),
            size: 7,
            modified,
        };
        let blob_files = [
            file("b1", 0),
            file("orphan-old", 99),
            file("orphan-new", 100),
        ];
        let upload_files = [file("u-idle", 0), file("u-lost", 50)];
        let p = plan(&s, &blob_files, &upload_files, CUT);
        assert_eq!(p.manifest_rounds, vec![vec![2]]);
        assert_eq!(p.links, vec![(1, "b3".to_string())]);
        assert_eq!(p.blobs, vec![("b3".to_string(), 3)]);
        assert_eq!(p.bytes_waiting, 2);
        assert_eq!(p.uploads, vec!["u-idle".to_string()]);
        assert_eq!(p.orphan_blobs, vec![file("orphan-old", 99)]);
        assert_eq!(p.orphan_uploads, vec![file("u-lost", 50)]);
        // `never` keeps every untagged manifest.
        let keep = Cutoffs {
            untagged: None,
            ..CUT
        };
        assert!(plan(&s, &[], &[], keep).manifest_rounds.is_empty());
    }

    #[test]
    fn links_are_per_repository() {
        let mut s = Snapshot::default();
        s.manifests = vec![m(1, "m", true, 0)];
        s.manifest_blobs = vec![(1, "b".into())];
        // Repository 2 links the same blob but no manifest of it uses it.
        s.links = vec![
            link("b", 0),
            LinkRow {
                repo_id: 2,
                digest: "b".into(),
                seen_at: 0,
            },
        ];
        s.blobs = vec![("b".into(), 5)];
        let p = plan(&s, &[], &[], CUT);
        assert_eq!(p.links, vec![(2, "b".to_string())]);
        assert!(p.blobs.is_empty());
    }
}
