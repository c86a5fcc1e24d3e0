//! Repository patterns of grants and token scopes, and the actions they allow.
//!
//! A pattern is a repository name in which `*` stands for any run of characters within one
//! path component and `**` for any run of characters across components: `team-a/*` matches
//! `team-a/app` but not `team-a/app/x`; `team-a/**` matches both; `**` matches everything.

use std::fmt;

/// What may be done with a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Pull, Action::Push, Action::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Action::Pull => 1,
            Action::Push => 2,
            Action::Delete => 4,
        }
    }
}

/// A set of actions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Actions(u8);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("unknown action {0:?} (expected pull, push, delete or *)")]
    Action(String),
    #[error("invalid repository pattern {0:?}")]
    Pattern(String),
}

impl Actions {
    pub const NONE: Actions = Actions(0);
    pub const ALL: Actions = Actions(7);

    pub fn of(list: &[Action]) -> Actions {
        Actions(list.iter().fold(0, |acc, a| acc | a.bit()))
    }

    /// `pull,push`, `*` for all; blanks around items are ignored.
    pub fn parse(s: &str) -> Result<Actions, PatternError> {
        let mut out = 0;
        for item in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
            out |= match item {
                "pull" => 1,
                "push" => 2,
                "delete" => 4,
                "*" => 7,
                other => return Err(PatternError::Action(other.to_string())),
            };
        }
        Ok(Actions(out))
    }

    pub fn contains(self, a: Action) -> bool {
        self.0 & a.bit() != 0
    }

    pub fn union(self, o: Actions) -> Actions {
        Actions(self.0 | o.0)
    }

    pub fn intersect(self, o: Actions) -> Actions {
        Actions(self.0 & o.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Action> {
        Action::ALL.into_iter().filter(move |a| self.contains(*a))
    }
}

impl fmt::Display for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Action::as_str).collect();
        f.write_str(&names.join(","))
    }
}

/// A validated repository pattern.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pattern(String);

impl Pattern {
    /// Lower-case name characters, `/`, `*`; no empty components, no `..`.
    pub fn parse(s: &str) -> Result<Pattern, PatternError> {
        let ok = !s.is_empty()
            && s.len() <= 255
            && s.split('/').all(|c| {
                !c.is_empty()
                    && c != "."
                    && c != ".."
                    && c.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-*".contains(&b)
                    })
            });
        if ok {
            Ok(Pattern(s.to_string()))
        } else {
            Err(PatternError::Pattern(s.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, name: &str) -> bool {
        glob(self.0.as_bytes(), name.as_bytes())
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A glob as a set of states run over the name once (no backtracking): time is
/// O(pattern × name) whatever the stars, so no pattern can make a match slow.
/// `*` matches a run without `/`, `**` any run.
fn glob(p: &[u8], s: &[u8]) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum Tok {
        Lit(u8),
        Star,
        Any,
    }
    let mut toks: Vec<Tok> = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        let t = if p[i] != b'*' {
            Tok::Lit(p[i])
        } else if p.get(i + 1) == Some(&b'*') {
            i += 1;
            Tok::Any
        } else {
            Tok::Star
        };
        i += 1;
        // A star next to `**` adds nothing: `***` and `**` match the same names.
        match (toks.last_mut(), t) {
            (Some(last @ (Tok::Star | Tok::Any)), Tok::Star | Tok::Any) => {
                if t == Tok::Any {
                    *last = Tok::Any;
                }
            }
            _ => toks.push(t),
        }
    }
    let n = toks.len();
    // States are positions in `toks`; a star may match nothing, so it also enables the next.
    let close = |st: &mut Vec<bool>| {
        for k in 0..n {
            if st[k] && matches!(toks[k], Tok::Star | Tok::Any) {
                st[k + 1] = true;
            }
        }
    };
    let mut cur = vec![false; n + 1];
    cur[0] = true;
    close(&mut cur);
    let mut next = vec![false; n + 1];
    for &c in s {
        next.iter_mut().for_each(|x| *x = false);
        let mut any = false;
        for k in 0..n {
            if !cur[k] {
                continue;
            }
            match toks[k] {
                Tok::Lit(l) if l == c => next[k + 1] = true,
                Tok::Lit(_) => continue,
                Tok::Star if c == b'/' => continue,
                Tok::Star | Tok::Any => next[k] = true,
            }
            any = true;
        }
        if !any {
            return false;
        }
        close(&mut next);
        std::mem::swap(&mut cur, &mut next);
    }
    cur[n]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Pattern::parse(p).unwrap().matches(s)
    }

    #[test]
    fn globs() {
        assert!(m("**", "a/b/c"));
        assert!(m("team-a/*", "team-a/app"));
        assert!(!m("team-a/*", "team-a/app/x"));
        assert!(!m("team-a/*", "team-ab/app"));
        assert!(!m("team-a/*", "team-a"));
        assert!(m("team-a/**", "team-a/app/x"));
        assert!(m("exact/name", "exact/name"));
        assert!(!m("exact/name", "exact/name2"));
        assert!(m("*-prod", "web-prod"));
        assert!(!m("*-prod", "x/web-prod"));
        assert!(m("**/cache", "a/b/cache"));
        assert!(!m("**/cache", "cache"));
        assert!(m("a/**/z", "a/b/c/z"));
        assert!(m("a*b*c", "axxbyyc"));
        assert!(!m("a*b*c", "axxbyy/c"));
        assert!(m("***", "a/b"));
        assert!(m("a/*", "a/"));
    }

    #[test]
    fn pathological_patterns_match_quickly() {
        // Backtracking over these took minutes; the state set takes microseconds.
        let p = Pattern::parse("**a**a**a**a**a**a**a**a**a**a**a**a**b").unwrap();
        let name = "a".repeat(250);
        let start = std::time::Instant::now();
        for _ in 0..100 {
            assert!(!p.matches(&name));
        }
        let p2 = Pattern::parse("*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b").unwrap();
        assert!(!p2.matches(&name));
        assert!(p.matches(&format!("{name}b")));
        assert!(
            start.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn patterns_and_actions_parse() {
        for bad in ["", "A", "a//b", "../x", "a/./b", "a b", "/a"] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?}");
        }
        let a = Actions::parse("pull, push").unwrap();
        assert!(
            a.contains(Action::Pull) && a.contains(Action::Push) && !a.contains(Action::Delete)
        );
        assert_eq!(Actions::parse("*").unwrap(), Actions::ALL);
        assert_eq!(a.to_string(), "pull,push");
        assert!(Actions::parse("pull,write").is_err());
        assert_eq!(
            a.intersect(Actions::parse("push,delete").unwrap())
                .to_string(),
            "push"
        );
    }
}
