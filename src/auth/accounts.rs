//! Administration of users, grants, robot tokens and anonymous pulls. Blocking functions
//! (argon2 and SQLite): the CLI calls them directly, the server on the blocking pool. Every
//! change is one transaction, with its audit entry.

use crate::db::{Conn, Db, DbError, audit, users};

use super::password;
use super::pattern::{Actions, Pattern, PatternError};
pub use super::robots::{
    TokenInfo, create_token, list_tokens, parse_scope, remove_token, revoke_token, rotate_token,
    token_owner,
};

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error(
        "invalid name {0:?}: use 1 to 64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
    )]
    InvalidName(String),
    #[error("user {0:?} already exists")]
    UserExists(String),
    #[error("no user named {0:?}")]
    NoSuchUser(String),
    #[error("a token named {0:?} already exists")]
    TokenExists(String),
    #[error("no token named {0:?}")]
    NoSuchToken(String),
    #[error("token {0:?} is already revoked")]
    AlreadyRevoked(String),
    #[error("token {0:?} is revoked or expired; create a new one")]
    NotActive(String),
    #[error("token {0:?} is still active; revoke it first")]
    StillActive(String),
    #[error("user {0:?} has no grant on {1:?}")]
    NoSuchGrant(String, String),
    #[error("{0}")]
    Pattern(#[from] PatternError),
    #[error("invalid scope {0:?}: expected PATTERN:ACTIONS, e.g. team-a/*:pull,push")]
    Scope(String),
    #[error("the password must not be empty")]
    EmptyPassword,
    #[error("{0}")]
    Internal(String),
    #[error("database: {0}")]
    Db(#[from] DbError),
}

/// Who made a change, for the audit trail.
pub struct Actor<'a> {
    pub name: &'a str,
    pub addr: &'a str,
}

/// The CLI acts as the local operator.
pub const CLI: Actor<'static> = Actor {
    name: "cli",
    addr: "local",
};

pub(super) fn valid_name(s: &str) -> Result<(), AccountError> {
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(AccountError::InvalidName(s.to_string()))
    }
}

pub(super) fn log(
    tx: &Conn,
    now: i64,
    actor: &Actor<'_>,
    action: &str,
    detail: String,
) -> Result<(), DbError> {
    audit::insert(
        tx,
        &audit::Entry {
            at: now,
            actor: Some(actor.name.to_string()),
            client_addr: Some(actor.addr.to_string()),
            action: action.to_string(),
            detail: Some(detail),
        },
    )
}

pub fn add_user(
    db: &Db,
    now: i64,
    actor: &Actor<'_>,
    name: &str,
    pass: &str,
    admin: bool,
) -> Result<(), AccountError> {
    valid_name(name)?;
    if pass.is_empty() {
        return Err(AccountError::EmptyPassword);
    }
    let hash = password::hash(pass).map_err(AccountError::Internal)?;
    db.write_blocking(|tx| {
        if !users::insert(tx, name, &hash, admin, now)? {
            return Err(AccountError::UserExists(name.to_string()));
        }
        log(
            tx,
            now,
            actor,
            "user.add",
            format!("{name}{}", if admin { " (admin)" } else { "" }),
        )?;
        Ok(())
    })
}

/// Add a user with a bcrypt hash from an htpasswd file or Caddyfile (checked by
/// `htpasswd::check_hash`), and grants. The hash is replaced by argon2id at the user's first
/// successful login. An existing user is left as it is: `Ok(false)`.
pub fn import_user(
    db: &Db,
    now: i64,
    actor: &Actor<'_>,
    name: &str,
    bcrypt_hash: &str,
    grants: &[(Pattern, Actions)],
) -> Result<bool, AccountError> {
    valid_name(name)?;
    let hash = super::htpasswd::check_hash(bcrypt_hash).map_err(AccountError::Internal)?;
    db.write_blocking(|tx| {
        if !users::insert(tx, name, &hash, false, now)? {
            return Ok(false);
        }
        let id = user_id(tx, name)?;
        for (pattern, actions) in grants {
            users::grant(tx, id, pattern.as_str(), &actions.to_string())?;
        }
        let granted: Vec<String> = grants.iter().map(|(p, a)| format!(" {p}:{a}")).collect();
        log(
            tx,
            now,
            actor,
            "user.import",
            format!("{name} (bcrypt){}", granted.concat()),
        )?;
        Ok(true)
    })
}

pub(super) fn user_id(tx: &Conn, name: &str) -> Result<i64, AccountError> {
    users::by_name(tx, name)?
        .map(|u| u.id)
        .ok_or_else(|| AccountError::NoSuchUser(name.to_string()))
}

pub fn set_password(
    db: &Db,
    now: i64,
    actor: &Actor<'_>,
    name: &str,
    pass: &str,
) -> Result<(), AccountError> {
    if pass.is_empty() {
        return Err(AccountError::EmptyPassword);
    }
    let hash = password::hash(pass).map_err(AccountError::Internal)?;
    db.write_blocking(|tx| {
        let id = user_id(tx, name)?;
        users::set_password(tx, id, &hash)?;
        log(tx, now, actor, "user.passwd", name.to_string())?;
        Ok(())
    })
}

pub fn set_disabled(
    db: &Db,
    now: i64,
    actor: &Actor<'_>,
    name: &str,
    disabled: bool,
) -> Result<(), AccountError> {
    db.write_blocking(|tx| {
        let id = user_id(tx, name)?;
        users::set_disabled(tx, id, disabled)?;
        log(
            tx,
            now,
            actor,
            if disabled {
                "user.disable"
            } else {
                "user.enable"
            },
            name.to_string(),
        )?;
        Ok(())
    })
}

pub fn remove_user(db: &Db, now: i64, actor: &Actor<'_>, name: &str) -> Result<(), AccountError> {
    db.write_blocking(|tx| {
        let id = user_id(tx, name)?;
        users::delete(tx, id)?;
        log(tx, now, actor, "user.remove", name.to_string())?;
        Ok(())
    })
}

pub fn grant(
    db: &Db,
    now: i64,
    actor: &Actor<'_>,
    name: &str,
    pattern: &str,
    actions: &str,
) -> Result<(), AccountError> {
    let pattern = Pattern::parse(pattern)?;
    let actions = Actions::parse(actions)?;
    db.write_blocking(|tx| {
        let id = user_id(tx, name)?;
        users::grant(tx, id, pattern.as_str(), &actions.to_string())?;
        log(
            tx,
            now,
            actor,
            "user.grant",
            format!("{name} {pattern} {actions}"),
        )?;
        Ok(())
    })
}

pub fn revoke_grant(
    db: &Db,
    now: i64,
    actor: &Actor<'_>,
    name: &str,
    pattern: &str,
) -> Result<(), AccountError> {
    db.write_blocking(|tx| {
        let id = user_id(tx, name)?;
        if !users::revoke(tx, id, pattern)? {
            return Err(AccountError::NoSuchGrant(
                name.to_string(),
                pattern.to_string(),
            ));
        }
        log(tx, now, actor, "user.revoke", format!("{name} {pattern}"))?;
        Ok(())
    })
}

/// A user with their grants, for listings.
pub struct UserInfo {
    pub user: users::User,
    pub grants: Vec<(String, String)>,
}

pub fn list_users(db: &Db) -> Result<Vec<UserInfo>, AccountError> {
    db.read_blocking(|c| {
        let mut out = Vec::new();
        for user in users::list(c)? {
            let grants = users::grants(c, user.id)?;
            out.push(UserInfo { user, grants });
        }
        Ok(out)
    })
}

/// Open (or close) a repository pattern to pulls without credentials.
pub fn set_anonymous(
    db: &Db,
    now: i64,
    actor: &Actor<'_>,
    pattern: &str,
    open: bool,
) -> Result<bool, AccountError> {
    let pattern = Pattern::parse(pattern)?;
    db.write_blocking(|tx| {
        let changed = users::set_anonymous(tx, pattern.as_str(), open)?;
        if changed {
            log(
                tx,
                now,
                actor,
                if open {
                    "anonymous.allow"
                } else {
                    "anonymous.deny"
                },
                pattern.to_string(),
            )?;
        }
        Ok(changed)
    })
}

pub fn anonymous_patterns(db: &Db) -> Result<Vec<String>, AccountError> {
    db.read_blocking(|c| Ok(users::anonymous_patterns(c)?))
}

/// The first start: with no user at all, create `admin`. Returns the password when it was
/// generated here (to show once), `None` when one was given or users exist.
pub fn bootstrap_admin(
    db: &Db,
    now: i64,
    given: Option<&str>,
) -> Result<Option<String>, AccountError> {
    if db.read_blocking(users::count)? > 0 {
        return Ok(None);
    }
    let (pass, generated) = match given {
        Some(p) => (p.to_string(), false),
        None => (password::random().map_err(AccountError::Internal)?, true),
    };
    match add_user(
        db,
        now,
        &Actor {
            name: "berth",
            addr: "local",
        },
        "admin",
        &pass,
        true,
    ) {
        Ok(()) => Ok(generated.then_some(pass)),
        // Another process created it first: fine.
        Err(AccountError::UserExists(_)) => Ok(None),
        Err(e) => Err(e),
    }
}
