//! Authentication and access: users with argon2id passwords, robot tokens stored as SHA-256,
//! grants on repository patterns, signed short-lived bearer tokens, throttled logins.
//!
//! Layering: `registry` and `cli` call `auth`; `auth` calls `db` and speaks in `oci` names,
//! never the reverse. Argon2 runs on the blocking pool, once per login or bearer token (a
//! verified password is cached by its SHA-256 until the user's hash changes); robot secrets
//! are a hash lookup. Every request re-reads the holder's state, so disabling a user or
//! revoking or expiring a token takes effect at once, also for bearer tokens handed out.

pub mod accounts;
pub mod bearer;
mod cache;
pub mod password;
pub mod pattern;
pub mod secret;
mod subject;
pub mod throttle;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use bearer::Holder;
pub use pattern::{Action, Actions, Pattern};
pub use subject::Subject;
use subject::parse_rules;

use crate::clock::Clock;
use crate::db::{Conn, Db, DbError, audit, settings, tokens, users};

/// How long a bearer token from `/token` is valid, seconds.
pub const TOKEN_TTL: i64 = 300;
/// How long a verified password stays cached, seconds.
const PASSWORD_CACHE_TTL: i64 = 15 * 60;
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
                let claims =
                    bearer::verify(&self.key, t).ok_or(AuthError::Unauthorized("invalid token"))?;
                if claims.exp <= self.now() {
                    return Err(AuthError::Unauthorized("token expired"));
                }
                let access = claims
                    .acc
                    .iter()
                    .filter_map(|(n, a)| Some((n.clone(), Actions::parse(a).ok()?)))
                    .collect();
                let subject = self
                    .state(claims.sub)
                    .await?
                    // Created after the token: a new holder reusing a deleted one's id.
                    .filter(|s| s.since <= claims.iat)
                    .ok_or(AuthError::Unauthorized(
                        "the token's holder is disabled, revoked or expired",
                    ))?;
                Ok(Subject {
                    token_access: Some(access),
                    ..subject
                })
            }
            Credentials::Basic { user, password } => self.login(user, password, addr).await,
        }
    }

    /// Check a name and password (or robot secret), throttled and audited on failure.
    async fn login(&self, user: &str, password: &str, addr: &str) -> Result<Subject, AuthError> {
        let now = self.now();
        if let Some(wait) = self.throttle.locked(addr, user, now) {
            return Err(AuthError::Locked(wait));
        }
        let found = if secret::is_robot_secret(password) {
            self.robot_login(user, password, addr).await?
        } else {
            self.password_login(user, password).await?
        };
        match found {
            Some(s) => {
                self.throttle.success(addr, user);
                Ok(s)
            }
            None => {
                self.throttle.failure(addr, user, now);
                let (actor, addr) = (user.to_string(), addr.to_string());
                self.db
                    .write(move |tx| {
                        audit::insert(
                            tx,
                            &audit::Entry {
                                at: now,
                                actor: Some(actor),
                                client_addr: Some(addr),
                                action: "login.failed".into(),
                                detail: None,
                            },
                        )
                    })
                    .await?;
                Err(AuthError::Unauthorized("invalid username or password"))
            }
        }
    }

    /// One database read: the epoch, and on a cache miss the token by the hash of its secret
    /// with its holder's state.
    async fn robot_login(
        &self,
        name: &str,
        secret: &str,
        addr: &str,
    ) -> Result<Option<Subject>, AuthError> {
        let hash = secret::sha256_hex(secret);
        let subject = self
            .cached(
                format!("r:{hash}"),
                move |c, now| match tokens::by_secret(c, &hash)? {
                    Some(t) => read_subject(c, Holder::Robot(t.id), now),
                    None => Ok(None),
                },
            )
            .await?;
        // The name given must be the token's.
        let subject = subject.filter(|s| s.name.as_deref() == Some(name));
        if let Some(Holder::Robot(id)) = subject.as_ref().map(|s| &s.holder) {
            self.touch_token(*id, addr).await;
        }
        Ok(subject)
    }

    async fn touch_token(&self, id: i64, addr: &str) {
        let now = self.now();
        {
            let mut t = self.touched.lock().unwrap_or_else(|p| p.into_inner());
            if t.get(&id).is_some_and(|last| now - last < TOUCH_EVERY) {
                return;
            }
            t.insert(id, now);
        }
        let addr = addr.to_string();
        if let Err(e) = self
            .db
            .write(move |tx| tokens::touch(tx, id, now, &addr))
            .await
        {
            tracing::warn!(error = %e, "could not record a token's last use");
        }
    }

    /// One database read: the epoch, and on a cache miss the user and their state; argon2
    /// only on a miss (a verified password is cached until the auth epoch moves, which a
    /// password change does, or for `PASSWORD_CACHE_TTL`).
    async fn password_login(
        &self,
        name: &str,
        password: &str,
    ) -> Result<Option<Subject>, AuthError> {
        let key = format!("p:{}", secret::sha256_hex(&format!("{name}\0{password}")));
        let (now, cache, n, k) = (
            self.now(),
            self.cache.clone(),
            name.to_string(),
            key.clone(),
        );
        let found = self
            .db
            .read(move |c| -> Result<_, DbError> {
                let epoch = settings::auth_epoch(c)?;
                if let Some(s) = cache.get(&k, epoch, now, PASSWORD_CACHE_TTL) {
                    return Ok(Lookup::Hit(s));
                }
                let Some(user) = users::by_name(c, &n)? else {
                    return Ok(Lookup::Unknown);
                };
                let subject = read_subject(c, Holder::User(user.id), now)?.map(|(s, _)| s);
                Ok(Lookup::Miss {
                    user_id: user.id,
                    hash: user.password_hash,
                    subject,
                    epoch,
                })
            })
            .await?;
        let (user_id, hash, subject, epoch) = match found {
            Lookup::Hit(s) => return Ok(Some(s)),
            Lookup::Miss {
                user_id,
                hash,
                subject,
                epoch,
            } => (user_id, hash, subject, epoch),
            Lookup::Unknown => {
                // Spend the same time as for a real user, so names cannot be probed by timing.
                let p = password.to_string();
                let _permit = self.argon2.acquire().await;
                let _ =
                    tokio::task::spawn_blocking(move || password::verify(&p, dummy_hash())).await;
                return Ok(None);
            }
        };
        let p = password.to_string();
        let permit = self.argon2.acquire().await;
        let ok = tokio::task::spawn_blocking(move || password::verify(&p, &hash))
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        drop(permit);
        if !ok {
            return Ok(None);
        }
        self.db
            .write(move |tx| users::touch_login(tx, user_id, now))
            .await?;
        // `None` here: the password is right but the user is disabled.
        if let Some(s) = &subject {
            self.cache.put(
                key,
                cache::Entry {
                    subject: s.clone(),
                    epoch,
                    expires_at: None,
                    at: now,
                },
            );
        }
        Ok(subject)
    }

    /// The holder's current state, from the cache when the auth epoch has not moved.
    async fn state(&self, holder: Holder) -> Result<Option<Subject>, AuthError> {
        let key = match &holder {
            Holder::Anonymous => "a".to_string(),
            Holder::User(id) => format!("u:{id}"),
            Holder::Robot(id) => format!("t:{id}"),
        };
        self.cached(key, move |c, now| read_subject(c, holder, now))
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
            exp: self.now() + TOKEN_TTL,
            acc: granted
                .iter()
                .map(|(r, a)| (r.clone(), a.to_string()))
                .collect(),
        };
        (bearer::sign(&self.key, &claims), granted)
    }

    /// Record an audited event.
    pub async fn audit(
        &self,
        subject: &Subject,
        addr: &str,
        action: &str,
        detail: String,
    ) -> Result<(), AuthError> {
        let e = audit::Entry {
            at: self.now(),
            actor: subject.name.clone(),
            client_addr: Some(addr.to_string()),
            action: action.to_string(),
            detail: Some(detail),
        };
        Ok(self.db.write(move |tx| audit::insert(tx, &e)).await?)
    }
}

/// What a password login found in one read.
enum Lookup {
    Hit(Subject),
    Miss {
        user_id: i64,
        hash: String,
        subject: Option<Subject>,
        epoch: i64,
    },
    Unknown,
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
                since: 0,
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
                Some((t.name, t.expires_at, t.created_at)),
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
    let (name, expires_at, since) = match token_name {
        Some((name, expires_at, created)) => (name, expires_at, created),
        None => (user.name, None, user.created_at),
    };
    let s = Subject {
        holder,
        since,
        name: Some(name),
        admin: user.is_admin,
        grants,
        scopes,
        anonymous,
        token_access: None,
    };
    Ok(Some((s, expires_at)))
}

/// A valid argon2id hash of a password nobody knows, to verify against for unknown names.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| password::hash("berth: no such user").unwrap_or_default())
}
