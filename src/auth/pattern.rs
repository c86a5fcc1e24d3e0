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

/// Iterative glob with backtracking to the last star; `*` stops at `/`, `**` does not.
fn glob(p: &[u8], s: &[u8]) -> bool {
    if let Some(rest) = p.strip_prefix(b"**") {
        return (0..=s.len()).any(|i| glob(rest, &s[i..]));
    }
    match p.first() {
        None => s.is_empty(),
        Some(b'*') => {
            let rest = &p[1..];
            let mut i = 0;
            loop {
                if glob(rest, &s[i..]) {
                    return true;
                }
                if i == s.len() || s[i] == b'/' {
                    return false;
                }
                i += 1;
            }
        }
        Some(&c) => s.first() == Some(&c) && glob(&p[1..], &s[1..]),
    }
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
