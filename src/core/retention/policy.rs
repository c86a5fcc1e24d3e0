//! Retention policies as written (TOML for `berth retention add --file`, JSON in the
//! database) and compiled (regexes and version ranges checked once).
//!
//! ```toml
//! name = "ci"
//! repositories = ["team/*"]      # the pattern language of grants
//! min_keep = 1                   # never fewer tags in a repository (default 1)
//! max_delete_share = 0.5         # a run deleting more of a repository's tags stops (default 0.5)
//! protect = ["^latest$"]         # tags never deleted (regexes)
//!
//! [keep]                         # a tag is kept when this holds
//! any = [
//!   { semver = ">=1.0.0" },
//!   { newest = 3, by = "push", per = "^(.+)-[0-9a-f]{7}$" },
//!   { all = [{ pulled_within = "30d" }, { newest = 10, by = "pull" }] },
//! ]
//! ```

use serde::{Deserialize, Serialize};

use crate::auth::pattern::Pattern;
use crate::config::Span;

/// A policy as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    pub name: String,
    pub repositories: Vec<String>,
    #[serde(default = "one")]
    pub min_keep: u32,
    #[serde(default = "half")]
    pub max_delete_share: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protect: Vec<String>,
    pub keep: RuleSpec,
}

fn one() -> u32 {
    1
}

fn half() -> f64 {
    0.5
}

/// A keep rule as written: exactly one of the selectors or combinators, with `by` and `per`
/// qualifying `newest` and `highest`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<Vec<RuleSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<Vec<RuleSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not: Option<Box<RuleSpec>>,
    /// The tag matches this regex (anchored at both ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The tag is a version (`1.2.3` or `v1.2.3`) within this range (`>=1.0, <2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed_within: Option<Span>,
    /// Never-pulled tags count as pulled when pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulled_within: Option<Span>,
    /// The N newest tags `by` push (default) or pull time, per group of `per`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// For `newest`: a regex; tags it matches are grouped by its first capture group (or all
    /// in one group), others are not selected. For `highest`: `major` or `minor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<String>,
    /// The N highest versions among the tags that are versions, per `major` or `minor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub highest: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum By {
    Push,
    Pull,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Major,
    Minor,
}

/// A compiled rule.
#[derive(Clone, Debug)]
pub enum Rule {
    All(Vec<Rule>),
    Any(Vec<Rule>),
    Not(Box<Rule>),
    Tag(regex::Regex),
    Semver(semver::VersionReq),
    PushedWithin(i64),
    PulledWithin(i64),
    Newest {
        n: usize,
        by: By,
        per: Option<regex::Regex>,
    },
    Highest {
        n: usize,
        per: Option<Level>,
    },
}

/// A compiled policy.
#[derive(Clone, Debug)]
pub struct Policy {
    pub spec: PolicySpec,
    pub repositories: Vec<Pattern>,
    pub protect: Vec<regex::Regex>,
    pub keep: Rule,
}

/// Regexes are compiled with a size limit: a policy is admin input, but a pathological one
/// must fail to load, not take the server's memory.
fn regex(at: &str, re: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(&format!("^(?:{re})$"))
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("{at}: invalid regex {re:?}: {e}"))
}

const MAX_DEPTH: usize = 16;
/// Rules (selectors and combinators) in one policy, and patterns in `protect`: a policy is
/// a handful of them; the bound keeps a mistaken or hostile one from costing the server.
const MAX_RULES: usize = 256;
const MAX_SPAN: u64 = 100 * 366 * 86_400;

impl PolicySpec {
    /// Parse a policy file (TOML).
    pub fn from_toml(text: &str) -> Result<PolicySpec, String> {
        toml::from_str(text).map_err(|e| match e.message().trim() {
            // toml says nothing for some cut-off texts (`name = ` at the end).
            "" => "the policy ends where a value is expected".to_string(),
            m => m.to_string(),
        })
    }

    pub fn compile(&self) -> Result<Policy, String> {
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(format!(
                "name {:?}: use 1 to 64 letters, digits, '-', '_' or '.'",
                self.name
            ));
        }
        if self.repositories.is_empty() {
            return Err("repositories: name at least one pattern (\"team/*\", \"**\")".into());
        }
        let repositories = self
            .repositories
            .iter()
            .map(|p| Pattern::parse(p).map_err(|e| format!("repositories: {p:?}: {e}")))
            .collect::<Result<_, _>>()?;
        if !(0.0..=1.0).contains(&self.max_delete_share) {
            return Err(format!(
                "max_delete_share: {} is not a share between 0 and 1",
                self.max_delete_share
            ));
        }
        let rules = self.keep.count();
        if rules > MAX_RULES || self.protect.len() > MAX_RULES {
            return Err(format!(
                "a policy holds at most {MAX_RULES} rules and {MAX_RULES} protect patterns ({rules} rules, {} patterns)",
                self.protect.len()
            ));
        }
        let protect = self
            .protect
            .iter()
            .map(|p| regex("protect", p))
            .collect::<Result<_, _>>()?;
        let keep = self.keep.compile("keep", 0)?;
        Ok(Policy {
            spec: self.clone(),
            repositories,
            protect,
            keep,
        })
    }
}

impl RuleSpec {
    /// Rules in this one, itself included.
    fn count(&self) -> usize {
        1 + self
            .all
            .iter()
            .chain(self.any.iter())
            .flatten()
            .map(RuleSpec::count)
            .sum::<usize>()
            + self.not.as_ref().map_or(0, |r| r.count())
    }

    fn compile(&self, at: &str, depth: usize) -> Result<Rule, String> {
        if depth > MAX_DEPTH {
            return Err(format!("{at}: rules nest deeper than {MAX_DEPTH}"));
        }
        let set = [
            self.all.is_some(),
            self.any.is_some(),
            self.not.is_some(),
            self.tag.is_some(),
            self.semver.is_some(),
            self.pushed_within.is_some(),
            self.pulled_within.is_some(),
            self.newest.is_some(),
            self.highest.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if set != 1 {
            return Err(format!(
                "{at}: give exactly one of all, any, not, tag, semver, pushed_within, pulled_within, newest, highest"
            ));
        }
        if (self.by.is_some() && self.newest.is_none())
            || (self.per.is_some() && self.newest.is_none() && self.highest.is_none())
        {
            return Err(format!(
                "{at}: `by` goes with `newest`, `per` with `newest` or `highest`"
            ));
        }
        let list = |rules: &[RuleSpec], what: &str| -> Result<Vec<Rule>, String> {
            if rules.is_empty() {
                return Err(format!("{at}.{what}: an empty list"));
            }
            rules
                .iter()
                .enumerate()
                .map(|(i, r)| r.compile(&format!("{at}.{what}[{i}]"), depth + 1))
                .collect()
        };
        let secs = |s: &Span, what: &str| -> Result<i64, String> {
            match s.seconds() {
                Ok(Some(n)) if n <= MAX_SPAN => Ok(n as i64),
                Ok(Some(n)) => Err(format!(
                    "{at}.{what}: {n} seconds is more than a hundred years"
                )),
                Ok(None) => Err(format!("{at}.{what}: never is not a duration here")),
                Err(e) => Err(format!("{at}.{what}: {e}")),
            }
        };
        let count = |n: u32, what: &str| -> Result<usize, String> {
            if n == 0 {
                Err(format!("{at}.{what}: keep at least 1"))
            } else {
                Ok(n as usize)
            }
        };
        Ok(if let Some(r) = &self.all {
            Rule::All(list(r, "all")?)
        } else if let Some(r) = &self.any {
            Rule::Any(list(r, "any")?)
        } else if let Some(r) = &self.not {
            Rule::Not(Box::new(r.compile(&format!("{at}.not"), depth + 1)?))
        } else if let Some(t) = &self.tag {
            Rule::Tag(regex(&format!("{at}.tag"), t)?)
        } else if let Some(v) = &self.semver {
            Rule::Semver(
                semver::VersionReq::parse(v)
                    .map_err(|e| format!("{at}.semver: {v:?} is not a version range: {e}"))?,
            )
        } else if let Some(s) = &self.pushed_within {
            Rule::PushedWithin(secs(s, "pushed_within")?)
        } else if let Some(s) = &self.pulled_within {
            Rule::PulledWithin(secs(s, "pulled_within")?)
        } else if let Some(n) = self.newest {
            let by = match self.by.as_deref() {
                None | Some("push") => By::Push,
                Some("pull") => By::Pull,
                Some(o) => return Err(format!("{at}.by: {o:?}: use push or pull")),
            };
            let per = self
                .per
                .as_deref()
                .map(|p| regex(&format!("{at}.per"), p))
                .transpose()?;
            Rule::Newest {
                n: count(n, "newest")?,
                by,
                per,
            }
        } else if let Some(n) = self.highest {
            let per = match self.per.as_deref() {
                None => None,
                Some("major") => Some(Level::Major),
                Some("minor") => Some(Level::Minor),
                Some(o) => return Err(format!("{at}.per: {o:?}: use major or minor")),
            };
            Rule::Highest {
                n: count(n, "highest")?,
                per,
            }
        } else {
            unreachable!("exactly one selector is set")
        })
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let join = |f: &mut std::fmt::Formatter<'_>, word: &str, rules: &[Rule]| {
            write!(f, "{word} (")?;
            for (i, r) in rules.iter().enumerate() {
                if i > 0 {
                    write!(f, "; ")?;
                }
                write!(f, "{r}")?;
            }
            write!(f, ")")
        };
        let strip = |r: &regex::Regex| {
            let s = r.as_str();
            s[4..s.len() - 2].to_string()
        };
        match self {
            Rule::All(r) => join(f, "all of", r),
            Rule::Any(r) => join(f, "any of", r),
            Rule::Not(r) => write!(f, "not ({r})"),
            Rule::Tag(r) => write!(f, "tag matches {}", strip(r)),
            Rule::Semver(v) => write!(f, "version {v}"),
            Rule::PushedWithin(s) => write!(f, "pushed within {}", human_span(*s)),
            Rule::PulledWithin(s) => write!(f, "pulled within {}", human_span(*s)),
            Rule::Newest { n, by, per } => {
                let by = match by {
                    By::Push => "push",
                    By::Pull => "pull",
                };
                write!(f, "newest {n} by {by}")?;
                match per {
                    Some(p) => write!(f, " per {}", strip(p)),
                    None => Ok(()),
                }
            }
            Rule::Highest { n, per } => {
                write!(f, "highest {n} versions")?;
                match per {
                    Some(Level::Major) => write!(f, " per major"),
                    Some(Level::Minor) => write!(f, " per minor"),
                    None => Ok(()),
                }
            }
        }
    }
}

fn human_span(s: i64) -> String {
    match s {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
