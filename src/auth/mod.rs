//! Authentication and access: users with argon2id passwords, robot tokens stored as SHA-256,
//! grants on repository patterns, signed short-lived bearer tokens, throttled logins.
//!
//! Layering: `registry` and `cli` call `auth`; `auth` calls `db` and speaks in `oci` names,
//! never the reverse. Argon2 runs on the blocking pool, once per login or bearer token (a
//! verified password is cached by its SHA-256 until the user's hash changes); robot secrets
//! are a hash lookup. Every request checks the auth epoch, which every change to accounts
//! moves, before it is answered (manifest reads check it in their own database read,
//! `deferred`), so disabling a user or revoking or expiring a token takes effect at once,
//! also for bearer tokens handed out.

pub mod accounts;
pub mod bearer;
mod cache;
mod deferred;
pub mod htpasswd;
mod login;
pub mod password;
pub mod pattern;
mod robots;
pub mod secret;
pub mod sessions;
mod subject;
pub mod throttle;
mod trail;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use bearer::Holder;
pub use deferred::Deferred;
pub use pattern::{Action, Actions, Pattern};
pub use subject::Subject;
use subject::parse_rules;

use crate::clock::Clock;
use crate::db::{Conn, Db, DbError, audit, settings, tokens, users};

/// How long a bearer token from `/token` is valid, seconds.
pub const TOKEN_TTL: i64 = 300;
/// How long a verified password stays cached, seconds.
const PASSWORD_CACHE_TTL: i64 = 15 * 60;
/// Failed-login audit writes that may wait at once.
const AUDIT_WRITERS: usize = 16;
/// A robot token's last-use time is written at most this often, seconds.
const TOUCH_EVERY: i64 = 60;

/// What a request presented.
#[derive(Clone)]
pub enum Credentials {
    None,
    Basic { user: String, password: String },
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::Basic { user, .. } => write!(f, "Basic({user:?}, <redacted>)"),
            Credentials::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("too many failed logins; retry in {0} seconds")]
    Locked(i64),
    #[error("database: {0}")]
    Db(#[from] DbError),
    #[error("{0}")]
    Internal(String),
}

#[derive(Clone)]
pub struct Auth {
    db: Db,
    clock: Arc<dyn Clock>,
    key: Arc<Vec<u8>>,
    throttle: Arc<throttle::Throttle>,
    cache: Arc<cache::Cache>,
    /// Argon2 runs (each about 19 MiB and tens of milliseconds) at most this many at once, so
    /// a flood of logins cannot exhaust memory or the blocking pool.
    argon2: Arc<tokio::sync::Semaphore>,
    touched: Arc<Mutex<HashMap<i64, i64>>>,
    flights: Arc<login::Flights>,
    /// Failed-login audit writes waiting at once, at most (`login::login_failed`).
    audit_writers: Arc<tokio::sync::Semaphore>,
    audits_dropped: Arc<std::sync::atomic::AtomicU64>,
}

impl Auth {
    /// Load (or create) the token signing key. Blocking; start-up only.
    pub fn open(db: Db, clock: Arc<dyn Clock>) -> Result<Auth, AuthError> {
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh).map_err(|e| AuthError::Internal(e.to_string()))?;
        let key =
            db.write_blocking(|tx| settings::get_or_insert(tx, "token_signing_key", &fresh))?;
        Ok(Auth {
            db,
            clock,
            key: Arc::new(key),
            throttle: Arc::default(),
            cache: Arc::default(),
            argon2: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
            )),
            touched: Arc::default(),
            flights: Arc::default(),
            audit_writers: Arc::new(tokio::sync::Semaphore::new(AUDIT_WRITERS)),
            audits_dropped: Arc::default(),
        })
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Establish who sent a request. `addr` is the client address, for throttling and audit.
    pub async fn authenticate(
        &self,
        creds: &Credentials,
        addr: &str,
    ) -> Result<Subject, AuthError> {
        match creds {
            Credentials::None => self
                .state(Holder::Anonymous)
                .await?
                .ok_or(AuthError::Unauthorized("no such holder")),
            Credentials::Bearer(t) => {
                let claims = self.bearer_claims(t)?;
                let state = self.state(claims.sub.clone()).await?;
                bearer_subject(&claims, state).ok_or(AuthError::Unauthorized(
                    "the token's holder is disabled, revoked or expired",
                ))
            }
            Credentials::Basic { user, password } => self.login(user, password, addr).await,
        }
    }

    /// The holder's current state, from the cache when the auth epoch has not moved.
    async fn state(&self, holder: Holder) -> Result<Option<Subject>, AuthError> {
        self.cached(holder_key(&holder), move |c, now| {
            read_subject(c, holder, now)
        })
        .await
    }

    /// One database read: the auth epoch, and only when the cached state of `key` is from an
    /// older epoch (or missing), `miss` to read it afresh, which is then cached.
    async fn cached<F>(&self, key: String, miss: F) -> Result<Option<Subject>, AuthError>
    where
        F: FnOnce(&Conn, i64) -> Result<Option<(Subject, Option<i64>)>, DbError> + Send + 'static,
    {
        let (now, cache) = (self.now(), self.cache.clone());
        let subject = self
            .db
            .read(move |c| -> Result<_, DbError> {
                let epoch = settings::auth_epoch(c)?;
                if let Some(s) = cache.get(&key, epoch, now, i64::MAX) {
                    return Ok(Some(s));
                }
                let found = miss(c, now)?;
                Ok(cache.keep(key, epoch, now, found))
            })
            .await?;
        Ok(subject)
    }

    /// Sign a bearer token for `subject` covering what it may do of `requested`
    /// (repository name, actions asked). Returns the token and what was granted.
    pub fn issue(
        &self,
        subject: &Subject,
        requested: &[(String, Actions)],
    ) -> (String, Vec<(String, Actions)>) {
        let granted: Vec<(String, Actions)> = requested
            .iter()
            .map(|(repo, want)| (repo.clone(), want.intersect(subject.allowed(repo))))
            .filter(|(_, a)| !a.is_empty())
            .collect();
        let claims = bearer::Claims {
            sub: subject.holder.clone(),
            iat: self.now(),
            st: subject.stamp,
            exp: self.now() + TOKEN_TTL,
            acc: granted
                .iter()
                .map(|(r, a)| (r.clone(), a.to_string()))
                .collect(),
        };
        (bearer::sign(&self.key, &claims), granted)
    }

    /// Record an audited event, after what it records succeeded: a failure to write it is
    /// logged, not returned (the event happened either way).
    pub async fn audit(&self, subject: &Subject, addr: &str, action: &str, detail: String) {
        if let Err(e) = self
            .record(subject.name.clone(), addr, action, Some(detail))
            .await
        {
            tracing::error!(error = %e, action, "could not write an audit entry");
        }
    }

    /// Write an audit entry now, by `actor` from `addr`.
    async fn record(
        &self,
        actor: Option<String>,
        addr: &str,
        action: &str,
        detail: Option<String>,
    ) -> Result<(), AuthError> {
        let e = audit::Entry {
            at: self.now(),
            actor,
            client_addr: Some(addr.to_string()),
            action: action.to_string(),
            detail,
        };
        Ok(self.db.write(move |tx| audit::insert(tx, &e)).await?)
    }
}

impl Auth {
    /// The claims of a bearer token signed by this registry and not expired.
    fn bearer_claims(&self, token: &str) -> Result<bearer::Claims, AuthError> {
        let claims =
            bearer::verify(&self.key, token).ok_or(AuthError::Unauthorized("invalid token"))?;
        if claims.exp <= self.now() {
            return Err(AuthError::Unauthorized("token expired"));
        }
        Ok(claims)
    }
}

/// A bearer token's subject: its holder's current `state`, limited to the token's access.
/// `None` if the holder is gone or its stamp changed since the token was issued (password
/// change, disable or enable, rotation, or a new holder reusing a deleted one's id).
fn bearer_subject(claims: &bearer::Claims, state: Option<Subject>) -> Option<Subject> {
    let access = claims
        .acc
        .iter()
        .filter_map(|(n, a)| Some((n.clone(), Actions::parse(a).ok()?)))
        .collect();
    let subject = state.filter(|s| s.stamp == claims.st)?;
    Some(Subject {
        token_access: Some(access),
        ..subject
    })
}

/// The cache key of a holder's state.
fn holder_key(holder: &Holder) -> String {
    match holder {
        Holder::Anonymous => "a".to_string(),
        Holder::User(id) => format!("u:{id}"),
        Holder::Robot(id) => format!("t:{id}"),
    }
}

/// The holder's state at `now`, within a read the caller already holds; `None` when the
/// holder is disabled, revoked, expired or gone.
/// Also returns a robot token's expiry.
fn read_subject(
    c: &Conn,
    holder: Holder,
    now: i64,
) -> Result<Option<(Subject, Option<i64>)>, DbError> {
    let anonymous: Vec<Pattern> = users::anonymous_patterns(c)?
        .iter()
        .filter_map(|p| Pattern::parse(p).ok())
        .collect();
    let (user_id, token_name, scopes) = match &holder {
        Holder::Anonymous => {
            let s = Subject {
                holder,
                stamp: 0,
                name: None,
                admin: false,
                grants: Vec::new(),
                scopes: None,
                anonymous,
                token_access: None,
            };
            return Ok(Some((s, None)));
        }
        Holder::User(id) => (*id, None, None),
        Holder::Robot(id) => {
            let Some(t) = tokens::by_id(c, *id)? else {
                return Ok(None);
            };
            if t.revoked_at.is_some() || t.expires_at.is_some_and(|e| e <= now) {
                return Ok(None);
            }
            (
                t.user_id,
                Some((t.name, t.expires_at, t.stamp)),
                Some(parse_rules(tokens::scopes(c, *id)?)),
            )
        }
    };
    let Some(user) = users::by_id(c, user_id)? else {
        return Ok(None);
    };
    if user.disabled {
        return Ok(None);
    }
    let grants = if user.is_admin {
        Vec::new()
    } else {
        parse_rules(users::grants(c, user.id)?)
    };
    // A robot's bearer tokens end with the robot's stamp or its owner's.
    let (name, expires_at, stamp) = match token_name {
        Some((name, expires_at, stamp)) => (name, expires_at, stamp ^ user.stamp),
        None => (user.name, None, user.stamp),
    };
    let s = Subject {
        holder,
        stamp,
        name: Some(name),
        admin: user.is_admin,
        grants,
        scopes,
        anonymous,
        token_access: None,
    };
    Ok(Some((s, expires_at)))
}
