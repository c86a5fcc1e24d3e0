//! The decision of a policy over one repository's tags: a pure function of the tags (with
//! their push and pull times), the policy and the time. Preview and run both call it.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::policy::{By, Level, Policy, Rule};

/// A tag as retention sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagInfo {
    pub name: String,
    pub digest: String,
    pub pushed_at: i64,
    /// `None`: never pulled (counts as pulled when pushed).
    pub pulled_at: Option<i64>,
    pub pulled_by: Option<String>,
}

impl TagInfo {
    fn pulled(&self) -> i64 {
        self.pulled_at.unwrap_or(self.pushed_at).max(self.pushed_at)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub repo: String,
    pub tag: String,
    pub digest: String,
    pub delete: bool,
    pub pushed_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulled_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulled_by: Option<String>,
    /// Why: the rule that kept it, `protected by …`, `min_keep …`, `no keep rule holds`, or
    /// why the repository's deletions were stopped.
    pub reason: String,
}

/// Decide every tag of one repository. `force` lifts the share limit.
pub fn decide(
    policy: &Policy,
    repo: &str,
    tags: &[TagInfo],
    now: i64,
    force: bool,
) -> Vec<Decision> {
    let mut reasons = keep_reasons(&policy.keep, tags, now);
    keep_signatures(tags, &mut reasons);
    let mut out: Vec<Decision> = tags
        .iter()
        .zip(reasons)
        .map(|(t, kept)| {
            let protected = policy.protect.iter().find(|r| r.is_match(&t.name));
            let (delete, reason) = match (kept, protected) {
                (Some(reason), _) => (false, format!("kept: {reason}")),
                (None, Some(p)) => {
                    let s = p.as_str();
                    (false, format!("protected: {}", &s[4..s.len() - 2]))
                }
                (None, None) => (true, "no keep rule holds".to_string()),
            };
            Decision {
                repo: repo.to_string(),
                tag: t.name.clone(),
                digest: t.digest.clone(),
                delete,
                pushed_at: t.pushed_at,
                pulled_at: t.pulled_at,
                pulled_by: t.pulled_by.clone(),
                reason,
            }
        })
        .collect();

    // min_keep: the newest of those about to go stay until the repository has enough.
    let total = tags.len();
    let min_keep = policy.spec.min_keep as usize;
    let mut deleting: Vec<usize> = (0..total).filter(|i| out[*i].delete).collect();
    let keeping = total - deleting.len();
    if keeping < min_keep {
        deleting.sort_by_key(|i| std::cmp::Reverse((tags[*i].pushed_at, tags[*i].name.clone())));
        for i in deleting.iter().take(min_keep - keeping) {
            out[*i].delete = false;
            out[*i].reason = format!("kept: min_keep {min_keep}");
        }
    }
    let deleted = out.iter().filter(|d| d.delete).count();
    let limit = policy.spec.max_delete_share;
    if !force && total > 0 && deleted as f64 > limit * total as f64 {
        let why = format!(
            "stopped: would delete {deleted} of {total} tags, more than max_delete_share {limit}; run with --force to delete them"
        );
        for d in out.iter_mut().filter(|d| d.delete) {
            d.delete = false;
            d.reason = why.clone();
        }
    }
    out
}

/// Signatures, attestations and SBOMs that cosign stores as tags (`sha256-<hex>.sig`, `.att`,
/// `.sbom`) stay while a kept tag points at the image they are about: no rule has to name
/// them, and deleting an image's old tags never strips a kept image of its signature.
fn keep_signatures(tags: &[TagInfo], reasons: &mut [Option<String>]) {
    let kept: std::collections::HashSet<&str> = tags
        .iter()
        .zip(reasons.iter())
        .filter(|(_, r)| r.is_some())
        .map(|(t, _)| t.digest.as_str())
        .collect();
    for (t, r) in tags.iter().zip(reasons.iter_mut()) {
        if r.is_some() {
            continue;
        }
        let subject = t.name.strip_prefix("sha256-").and_then(|rest| {
            let (hex, kind) = rest.split_once('.')?;
            (hex.len() == 64
                && hex.bytes().all(|b| b.is_ascii_hexdigit())
                && ["sig", "att", "sbom"].contains(&kind))
            .then(|| format!("sha256:{hex}"))
        });
        if subject.is_some_and(|s| kept.contains(s.as_str())) {
            *r = Some("cosign signature, attestation or SBOM of a kept image".into());
        }
    }
}

/// For each tag, the description of the rule that keeps it, if one does. Under a top-level
/// `any`, the first alternative that holds is named.
fn keep_reasons(rule: &Rule, tags: &[TagInfo], now: i64) -> Vec<Option<String>> {
    match rule {
        Rule::Any(alternatives) => {
            let mut out = vec![None; tags.len()];
            for alt in alternatives {
                let held = eval(alt, tags, now);
                for (i, h) in held.into_iter().enumerate() {
                    if h && out[i].is_none() {
                        out[i] = Some(alt.to_string());
                    }
                }
            }
            out
        }
        _ => eval(rule, tags, now)
            .into_iter()
            .map(|h| h.then(|| rule.to_string()))
            .collect(),
    }
}

/// Which tags a rule holds for.
fn eval(rule: &Rule, tags: &[TagInfo], now: i64) -> Vec<bool> {
    match rule {
        Rule::All(rules) => rules.iter().fold(vec![true; tags.len()], |acc, r| {
            acc.into_iter()
                .zip(eval(r, tags, now))
                .map(|(a, b)| a && b)
                .collect()
        }),
        Rule::Any(rules) => rules.iter().fold(vec![false; tags.len()], |acc, r| {
            acc.into_iter()
                .zip(eval(r, tags, now))
                .map(|(a, b)| a || b)
                .collect()
        }),
        Rule::Not(r) => eval(r, tags, now).into_iter().map(|b| !b).collect(),
        Rule::Tag(re) => tags.iter().map(|t| re.is_match(&t.name)).collect(),
        Rule::Semver(req) => tags
            .iter()
            .map(|t| version(&t.name).is_some_and(|v| req.matches(&v)))
            .collect(),
        Rule::PushedWithin(s) => tags.iter().map(|t| t.pushed_at >= now - s).collect(),
        Rule::PulledWithin(s) => tags.iter().map(|t| t.pulled() >= now - s).collect(),
        Rule::Newest { n, by, per } => {
            // Group the tags `per` selects; the newest `n` of each group hold.
            let mut groups: HashMap<String, Vec<usize>> = HashMap::new();
            for (i, t) in tags.iter().enumerate() {
                let key = match per {
                    None => Some(String::new()),
                    Some(re) => re
                        .captures(&t.name)
                        .map(|c| c.get(1).map(|m| m.as_str().to_string()).unwrap_or_default()),
                };
                if let Some(k) = key {
                    groups.entry(k).or_default().push(i);
                }
            }
            let mut held = vec![false; tags.len()];
            for members in groups.values_mut() {
                let time = |i: usize| match by {
                    By::Push => tags[i].pushed_at,
                    By::Pull => tags[i].pulled(),
                };
                members.sort_by(|a, b| (time(*b), &tags[*b].name).cmp(&(time(*a), &tags[*a].name)));
                for i in members.iter().take(*n) {
                    held[*i] = true;
                }
            }
            held
        }
        Rule::Highest { n, per } => {
            let mut groups: HashMap<(u64, u64), Vec<(semver::Version, usize)>> = HashMap::new();
            for (i, t) in tags.iter().enumerate() {
                if let Some(v) = version(&t.name) {
                    let key = match per {
                        None => (0, 0),
                        Some(Level::Major) => (v.major, 0),
                        Some(Level::Minor) => (v.major, v.minor),
                    };
                    groups.entry(key).or_default().push((v, i));
                }
            }
            let mut held = vec![false; tags.len()];
            for members in groups.values_mut() {
                members.sort_by(|a, b| b.0.cmp(&a.0).then(tags[b.1].name.cmp(&tags[a.1].name)));
                for (_, i) in members.iter().take(*n) {
                    held[*i] = true;
                }
            }
            held
        }
    }
}

/// `1.2.3` or `v1.2.3` (with pre-release and build parts) as a version.
fn version(tag: &str) -> Option<semver::Version> {
    semver::Version::parse(tag.strip_prefix('v').unwrap_or(tag)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::retention::policy::PolicySpec;

    fn policy(toml: &str) -> Policy {
        PolicySpec::from_toml(&format!("name = \"p\"\nrepositories = [\"**\"]\n{toml}"))
            .unwrap()
            .compile()
            .unwrap()
    }

    fn tag(name: &str, pushed_at: i64, pulled_at: Option<i64>) -> TagInfo {
        TagInfo {
            name: name.into(),
            digest: format!("sha256:{name}"),
            pushed_at,
            pulled_at,
            pulled_by: None,
        }
    }

    fn kept(p: &Policy, tags: &[TagInfo], now: i64) -> Vec<String> {
        let mut k: Vec<String> = decide(p, "r", tags, now, true)
            .into_iter()
            .filter(|d| !d.delete)
            .map(|d| d.tag)
            .collect();
        k.sort();
        k
    }

    const H: i64 = 3600;

    /// Eight tags pushed an hour apart (t1 oldest); t2 and t5 pulled recently.
    fn eight() -> Vec<TagInfo> {
        (1..=8)
            .map(|i| {
                let pulled = [2, 5].contains(&i).then_some(100 * H);
                tag(&format!("t{i}"), i * H, pulled)
            })
            .collect()
    }

    #[test]
    fn and_or_truth_table() {
        let now = 100 * H;
        let tags = eight();
        let cases = [
            // newest 3 AND pushed within 96 h (t4 and later): t6, t7, t8.
            (
                "min_keep = 0\n[keep]\nall = [{ newest = 3 }, { pushed_within = \"96h\" }]",
                vec!["t6", "t7", "t8"],
            ),
            // newest 3 OR pushed within 95 h (t5 and later).
            (
                "min_keep = 0\n[keep]\nany = [{ newest = 3 }, { pushed_within = \"95h\" }]",
                vec!["t5", "t6", "t7", "t8"],
            ),
            // pulled within 1 h (t2, t5; never-pulled tags count from their push) OR tag t1.
            (
                "min_keep = 0\n[keep]\nany = [{ pulled_within = \"1h\" }, { tag = \"t1\" }]",
                vec!["t1", "t2", "t5"],
            ),
            // NOT (newest 6): the two oldest.
            (
                "min_keep = 0\n[keep]\nnot = { newest = 6 }",
                vec!["t1", "t2"],
            ),
            // newest 2 by pull: t2 and t5 (pulled now), whatever their push.
            (
                "min_keep = 0\n[keep]\nnewest = 2\nby = \"pull\"",
                vec!["t2", "t5"],
            ),
        ];
        for (toml, want) in cases {
            assert_eq!(kept(&policy(toml), &tags, now), want, "{toml}");
        }
    }

    #[test]
    fn newest_per_branch() {
        let mut tags = Vec::new();
        for (i, sha) in [
            "a1b2c3d", "b2c3d4e", "c3d4e5f", "d4e5f60", "e5f6071", "f607182",
        ]
        .iter()
        .enumerate()
        {
            tags.push(tag(&format!("main-{sha}"), i as i64, None));
            tags.push(tag(&format!("dev-{sha}"), 10 + i as i64, None));
        }
        tags.push(tag("latest", 0, None));
        let p = policy("[keep]\nnewest = 2\nper = \"^([a-z]+)-[0-9a-f]{7}$\"");
        assert_eq!(
            kept(&p, &tags, 100),
            ["dev-e5f6071", "dev-f607182", "main-e5f6071", "main-f607182"]
        );
    }

    #[test]
    fn highest_per_minor_goes_by_version_not_time() {
        let tags = vec![
            tag("v1.2.9", 1, None),
            tag("v1.2.10", 2, None),
            tag("v1.3.0", 3, None),
            tag("v1.3.1", 4, None),
            // Pushed last, but not among the two highest of 1.2.
            tag("v1.2.3", 5, None),
            tag("nightly", 6, None),
        ];
        let p = policy("min_keep = 0\n[keep]\nhighest = 2\nper = \"minor\"");
        assert_eq!(
            kept(&p, &tags, 10),
            ["v1.2.10", "v1.2.9", "v1.3.0", "v1.3.1"]
        );
        let p = policy("min_keep = 0\n[keep]\nsemver = \">=1.3.0\"");
        assert_eq!(kept(&p, &tags, 10), ["v1.3.0", "v1.3.1"]);
    }

    #[test]
    fn fresh_tags_survive_pull_rules_and_floors_hold() {
        let now = 1000;
        // Pushed a minute ago, never pulled: counts as pulled then.
        let tags = vec![tag("old", 0, Some(10)), tag("fresh", now - 60, None)];
        let p = policy("min_keep = 0\n[keep]\npulled_within = \"5m\"");
        assert_eq!(kept(&p, &tags, now), ["fresh"]);
        // min_keep keeps the newest of those that would go.
        let tags: Vec<_> = (0..5).map(|i| tag(&format!("x{i}"), i, None)).collect();
        let p = policy("min_keep = 2\n[keep]\ntag = \"none\"");
        assert_eq!(kept(&p, &tags, now), ["x3", "x4"]);
        let d = decide(&p, "r", &tags, now, true);
        assert!(d.iter().any(|d| d.reason == "kept: min_keep 2"));
        // The share limit stops a run unless forced.
        let stopped = decide(&p, "r", &tags, now, false);
        assert!(stopped.iter().all(|d| !d.delete));
        assert!(
            stopped[0]
                .reason
                .starts_with("stopped: would delete 3 of 5 tags")
        );
        // Protected tags stay, saying so.
        let p = policy("min_keep = 0\nprotect = [\"x[01]\"]\n[keep]\ntag = \"none\"");
        assert_eq!(kept(&p, &tags, now), ["x0", "x1"]);
        assert_eq!(
            decide(&p, "r", &tags, now, true)[0].reason,
            "protected: x[01]"
        );
    }

    #[test]
    fn cosign_tags_stay_with_the_images_they_sign() {
        let hex = "a".repeat(64);
        let mut kept_image = tag("v2", 2, None);
        kept_image.digest = format!("sha256:{hex}");
        let mut gone_image = tag("v1", 1, None);
        gone_image.digest = format!("sha256:{}", "b".repeat(64));
        let tags = vec![
            gone_image,
            kept_image,
            tag(&format!("sha256-{hex}.sig"), 0, None),
            tag(&format!("sha256-{}.sig", "b".repeat(64)), 0, None),
        ];
        let p = policy("min_keep = 0\n[keep]\nnewest = 1\nper = \"^v.*\"");
        assert_eq!(
            kept(&p, &tags, 10),
            [format!("sha256-{hex}.sig"), "v2".into()]
        );
    }

    #[test]
    fn policies_explain_their_mistakes() {
        let bad = |toml: &str| {
            PolicySpec::from_toml(&format!("name = \"p\"\nrepositories = [\"**\"]\n{toml}"))
                .and_then(|s| s.compile().map(drop))
                .unwrap_err()
        };
        assert!(bad("[keep]\nnewest = 0").contains("keep.newest: keep at least 1"));
        assert!(bad("[keep]\ntag = \"(\"").contains("keep.tag: invalid regex"));
        assert!(bad("[keep]\nany = [{ semver = \"banana\" }]").contains("keep.any[0].semver"));
        assert!(bad("[keep]\nnewest = 1\nhighest = 1").contains("exactly one"));
        assert!(bad("[keep]\nhighest = 1\nper = \"patch\"").contains("use major or minor"));
        assert!(bad("max_delete_share = 2.0\n[keep]\nnewest = 1").contains("max_delete_share"));
        assert!(bad("[keep]\nnewest = 1\ncolour = \"red\"").contains("colour"));
        assert!(bad("[keep]\npushed_within = \"9999999999d\"").contains("hundred years"));
        let many = format!("[keep]\nany = [{}]", vec!["{ newest = 1 }"; 300].join(", "));
        assert!(bad(&many).contains("at most 256 rules"));
    }
}
