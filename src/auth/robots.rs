//! Administration of robot tokens: create, list, revoke, rotate, remove. Blocking functions
//! (SQLite): the CLI calls them directly, the server on the blocking pool. Every change is
//! one transaction, with its audit entry.

use super::accounts::{AccountError, Actor, log, user_id, valid_name};
use super::pattern::{Actions, Pattern};
use super::secret::Secret;
use crate::db::{Db, tokens, users};

/// Parse `PATTERN:ACTIONS`.
pub fn parse_scope(s: &str) -> Result<(Pattern, Actions), AccountError> {
    let (p, a) = s
        .rsplit_once(':')
        .ok_or_else(|| AccountError::Scope(s.to_string()))?;
    let actions = Actions::parse(a)?;
    if actions.is_empty() {
        return Err(AccountError::Scope(s.to_string()));
    }
    Ok((Pattern::parse(p)?, actions))
}

/// Create a robot token; the secret is returned once and never stored.
pub fn create_token(
    db: &Db,
    now: i64,
    actor: &Actor<'_>,
    owner: &str,
    name: &str,
    scopes: &[(Pattern, Actions)],
    expires_at: Option<i64>,
) -> Result<Secret, AccountError> {
    valid_name(name)?;
    let secret = Secret::generate().map_err(AccountError::Internal)?;
    let rows: Vec<(String, String)> = scopes
        .iter()
        .map(|(p, a)| (p.to_string(), a.to_string()))
        .collect();
    db.write_blocking(|tx| {
        let user_id = user_id(tx, owner)?;
        let new = tokens::NewToken {
            name,
            user_id,
            secret_sha256: &secret.sha256(),
            expires_at,
            scopes: &rows,
            now,
        };
        if tokens::insert(tx, &new)?.is_none() {
            return Err(AccountError::TokenExists(name.to_string()));
        }
        let scope_text: Vec<String> = rows.iter().map(|(p, a)| format!("{p}:{a}")).collect();
        log(
            tx,
            now,
            actor,
            "token.create",
            format!("{name} of {owner} [{}]", scope_text.join(" ")),
        )?;
        Ok(())
    })?;
    Ok(secret)
}

pub struct TokenInfo {
    pub token: tokens::Token,
    pub scopes: Vec<(String, String)>,
}

pub fn list_tokens(db: &Db, owner: Option<&str>) -> Result<Vec<TokenInfo>, AccountError> {
    db.read_blocking(|c| {
        let user_id = match owner {
            Some(o) => Some(
                users::by_name(c, o)?
                    .ok_or_else(|| AccountError::NoSuchUser(o.to_string()))?
                    .id,
            ),
            None => None,
        };
        let mut out = Vec::new();
        for token in tokens::list(c, user_id)? {
            let scopes = tokens::scopes(c, token.id)?;
            out.push(TokenInfo { token, scopes });
        }
        Ok(out)
    })
}

pub fn revoke_token(db: &Db, now: i64, actor: &Actor<'_>, name: &str) -> Result<(), AccountError> {
    db.write_blocking(|tx| {
        let t = tokens::by_name(tx, name)?
            .ok_or_else(|| AccountError::NoSuchToken(name.to_string()))?;
        if !tokens::revoke(tx, t.id, now)? {
            return Err(AccountError::AlreadyRevoked(name.to_string()));
        }
        log(tx, now, actor, "token.revoke", name.to_string())?;
        Ok(())
    })
}

/// Give a token a new secret, shown once: the old secret (and every bearer token obtained
/// with it) is refused at once; name, owner, scopes and expiry stay, so the login name of the
/// machines using it does not change.
pub fn rotate_token(
    db: &Db,
    now: i64,
    actor: &Actor<'_>,
    name: &str,
) -> Result<Secret, AccountError> {
    let secret = Secret::generate().map_err(AccountError::Internal)?;
    db.write_blocking(|tx| {
        let t = tokens::by_name(tx, name)?
            .ok_or_else(|| AccountError::NoSuchToken(name.to_string()))?;
        if t.revoked_at.is_some() || t.expires_at.is_some_and(|e| e <= now) {
            return Err(AccountError::NotActive(name.to_string()));
        }
        tokens::rotate(tx, t.id, &secret.sha256())?;
        log(tx, now, actor, "token.rotate", name.to_string())?;
        Ok(())
    })?;
    Ok(secret)
}

/// The name of the user who owns token `name`, if there is such a token.
pub fn token_owner(db: &Db, name: &str) -> Result<Option<String>, AccountError> {
    db.read_blocking(|c| Ok(tokens::by_name(c, name)?.map(|t| t.user_name)))
}

/// Delete a revoked or expired token, so that its name can be used again.
pub fn remove_token(db: &Db, now: i64, actor: &Actor<'_>, name: &str) -> Result<(), AccountError> {
    db.write_blocking(|tx| {
        let t = tokens::by_name(tx, name)?
            .ok_or_else(|| AccountError::NoSuchToken(name.to_string()))?;
        if t.revoked_at.is_none() && t.expires_at.is_none_or(|e| e > now) {
            return Err(AccountError::StillActive(name.to_string()));
        }
        tokens::delete(tx, t.id)?;
        log(tx, now, actor, "token.remove", name.to_string())?;
        Ok(())
    })
}
