//! `Subject`: who sent a request and what they may do, as read from the database for that
//! request.

use super::bearer::Holder;
use super::pattern::{Action, Actions, Pattern};

/// The authenticated holder of a request, with what they may do now.
#[derive(Debug, Clone)]
pub struct Subject {
    pub holder: Holder,
    /// The holder's stamp (`db::users`, `db::tokens`): bearer tokens name the one they were
    /// issued under.
    pub stamp: i64,
    /// User or token name, for the audit trail (`None` when anonymous).
    pub name: Option<String>,
    pub(super) admin: bool,
    /// The user's grants (for a robot: its owner's).
    pub(super) grants: Vec<(Pattern, Actions)>,
    /// A robot token's own scopes, intersected with `grants` at every use.
    pub(super) scopes: Option<Vec<(Pattern, Actions)>>,
    pub(super) anonymous: Vec<Pattern>,
    /// When the request came with a bearer token: what that token was issued for.
    pub token_access: Option<Vec<(String, Actions)>>,
}

impl Subject {
    pub fn is_admin(&self) -> bool {
        self.admin
    }

    pub fn is_anonymous(&self) -> bool {
        self.holder == Holder::Anonymous
    }

    /// Actions the holder may take on `repo` at this moment.
    pub fn allowed(&self, repo: &str) -> Actions {
        let public = if self.anonymous.iter().any(|p| p.matches(repo)) {
            Actions::of(&[Action::Pull])
        } else {
            Actions::NONE
        };
        if self.holder == Holder::Anonymous {
            return public;
        }
        let own = if self.admin {
            Actions::ALL
        } else {
            union_matching(&self.grants, repo)
        };
        let own = match &self.scopes {
            Some(scopes) => own.intersect(union_matching(scopes, repo)),
            None => own,
        };
        own.union(public)
    }

    pub fn may(&self, repo: &str, action: Action) -> bool {
        self.allowed(repo).contains(action)
    }

    /// Whether the bearer token (if any) covers `action` on `repo`.
    pub fn token_covers(&self, repo: &str, action: Action) -> bool {
        match &self.token_access {
            None => true,
            Some(acc) => acc
                .iter()
                .any(|(name, a)| name == repo && a.contains(action)),
        }
    }
}

fn union_matching(list: &[(Pattern, Actions)], repo: &str) -> Actions {
    list.iter()
        .filter(|(p, _)| p.matches(repo))
        .fold(Actions::NONE, |acc, (_, a)| acc.union(*a))
}

pub(super) fn parse_rules(rows: Vec<(String, String)>) -> Vec<(Pattern, Actions)> {
    // Rows were validated on the way in; a row that no longer parses grants nothing.
    rows.into_iter()
        .filter_map(|(p, a)| Some((Pattern::parse(&p).ok()?, Actions::parse(&a).ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[(&str, &str)]) -> Vec<(Pattern, Actions)> {
        list.iter()
            .map(|(p, a)| (Pattern::parse(p).unwrap(), Actions::parse(a).unwrap()))
            .collect()
    }

    fn subject(
        holder: Holder,
        admin: bool,
        grants: &[(&str, &str)],
        scopes: Option<&[(&str, &str)]>,
    ) -> Subject {
        Subject {
            holder,
            stamp: 0,
            name: None,
            admin,
            grants: rules(grants),
            scopes: scopes.map(rules),
            anonymous: rules(&[("public/**", "pull")])
                .into_iter()
                .map(|(p, _)| p)
                .collect(),
            token_access: None,
        }
    }

    #[test]
    fn robots_get_the_intersection_and_everyone_public_pulls() {
        let robot = subject(
            Holder::Robot(1),
            false,
            &[("team/*", "pull,push")],
            Some(&[("**", "pull,delete")]),
        );
        assert_eq!(robot.allowed("team/app").to_string(), "pull");
        assert_eq!(robot.allowed("other/app").to_string(), "");
        assert_eq!(robot.allowed("public/x").to_string(), "pull");
        let admin_robot = subject(Holder::Robot(2), true, &[], Some(&[("team/*", "push")]));
        assert_eq!(admin_robot.allowed("team/app").to_string(), "push");
        assert_eq!(admin_robot.allowed("else").to_string(), "");
        let anon = subject(Holder::Anonymous, false, &[("**", "*")], None);
        assert_eq!(anon.allowed("team/app").to_string(), "");
        assert!(anon.may("public/a/b", Action::Pull));
        assert!(!anon.may("public/a/b", Action::Push));
        let mut bearer = subject(Holder::User(3), true, &[], None);
        assert!(bearer.token_covers("x", Action::Push));
        bearer.token_access = Some(vec![("x".into(), Actions::parse("pull").unwrap())]);
        assert!(bearer.token_covers("x", Action::Pull));
        assert!(!bearer.token_covers("x", Action::Push));
        assert!(!bearer.token_covers("y", Action::Pull));
    }
}
