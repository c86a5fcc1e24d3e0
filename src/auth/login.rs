//! Basic credentials: a name with a password (argon2id, verified once and then cached) or with
//! a robot token's secret (by its SHA-256), throttled per client address and audited on
//! failure.

use super::cache;
use super::{
    Auth, AuthError, Holder, PASSWORD_CACHE_TTL, Subject, TOUCH_EVERY, password, read_subject,
    secret,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::db::{DbError, settings, tokens, users};

impl Auth {
    /// Check a name and password (or robot secret), throttled and audited on failure.
    pub(super) async fn login(
        &self,
        user: &str,
        password: &str,
        addr: &str,
    ) -> Result<Subject, AuthError> {
        let now = self.now();
        if let Some(wait) = self.throttle.locked(addr, user, now) {
            return Err(AuthError::Locked(wait));
        }
        if secret::is_robot_secret(password) {
            // A hash lookup: nothing to guess at (the secret is 256 random bits), so a failure
            // is counted when it is known.
            return match self.robot_login(user, password, addr).await? {
                Some(s) => {
                    self.throttle.success(addr, user);
                    Ok(s)
                }
                None => {
                    self.throttle.failure(addr, user, now);
                    self.login_failed(user, addr, true);
                    Err(AuthError::Unauthorized("invalid username or password"))
                }
            };
        }
        match self.password_login(user, password, addr).await? {
            Some(s) => Ok(s),
            None => {
                self.login_failed(user, addr, false);
                Err(AuthError::Unauthorized("invalid username or password"))
            }
        }
    }

    /// Audit a failed login without making the answer wait for the write. A name that is
    /// not an account is not stored as typed: people type passwords into the name field. At
    /// most `AUDIT_WRITERS` such writes wait at once; beyond, a flood of failures (robot-shaped
    /// secrets cost no argon2) is counted in the log rather than queued without end.
    fn login_failed(&self, user: &str, addr: &str, robot: bool) {
        crate::metrics::global().login_failures.inc();
        let Ok(permit) = self.audit_writers.clone().try_acquire_owned() else {
            let n = self
                .audits_dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n.is_multiple_of(1000) {
                tracing::warn!(
                    dropped = n + 1,
                    "failed logins faster than they can be audited; some are not recorded"
                );
            }
            return;
        };
        let (auth, user, addr) = (self.clone(), user.to_string(), addr.to_string());
        tokio::spawn(async move {
            let _permit = permit;
            let known = auth
                .db
                .read(move |c| -> Result<(bool, String), DbError> {
                    let known = if robot {
                        tokens::by_name(c, &user)?.is_some()
                    } else {
                        users::by_name(c, &user)?.is_some()
                    };
                    Ok((known, user))
                })
                .await;
            let actor = match known {
                Ok((true, user)) => user,
                Ok((false, user)) => {
                    format!("(unknown name {})", &secret::sha256_hex(&user)[..12])
                }
                Err(_) => "(unknown name)".to_string(),
            };
            if let Err(e) = auth.record(Some(actor), &addr, "login.failed", None).await {
                tracing::warn!(error = %e, "could not audit a failed login");
            }
        });
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
            .cached(robot_key(&hash), move |c, now| {
                match tokens::by_secret(c, &hash)? {
                    Some(t) => read_subject(c, Holder::Robot(t.id), now),
                    None => Ok(None),
                }
            })
            .await?;
        // The name given must be the token's.
        let subject = subject.filter(|s| s.name.as_deref() == Some(name));
        if let Some(Holder::Robot(id)) = subject.as_ref().map(|s| &s.holder) {
            self.touch_token(*id, addr);
        }
        Ok(subject)
    }

    pub(super) fn touch_token(&self, id: i64, addr: &str) {
        let now = self.now();
        {
            let mut t = self.touched.lock().unwrap_or_else(|p| p.into_inner());
            if t.get(&id).is_some_and(|last| now - last < TOUCH_EVERY) {
                return;
            }
            t.insert(id, now);
        }
        let addr = addr.to_string();
        self.db.write_detached("a token's last use", move |tx| {
            tokens::touch(tx, id, now, &addr)
        });
    }

    /// One database read: the epoch, and on a cache miss the user and their state; argon2
    /// only on a miss (a verified password is cached until the auth epoch moves, which a
    /// password change does, or for `PASSWORD_CACHE_TTL`).
    async fn password_login(
        &self,
        name: &str,
        password: &str,
        addr: &str,
    ) -> Result<Option<Subject>, AuthError> {
        let key = password_key(name, password);
        let now = self.now();
        let found = self.lookup(name, &key, now).await?;
        if let Lookup::Hit(s) = found {
            self.throttle.success(addr, name);
            return Ok(Some(s));
        }
        // One check at a time per name and password: requests sent together with the same
        // credentials (a client that sends Basic on every request) wait for the first check
        // and are answered from the cache, rather than each counting as an attempt.
        let flight = self.flights.enter(&key).await;
        let found = if flight.waited {
            // Another check of the same credentials ran meanwhile: it may have cached them.
            self.lookup(name, &key, now).await?
        } else {
            found
        };
        if !matches!(found, Lookup::Hit(_)) {
            // Whatever was cached for this name and password is out of date: forget it, so
            // that nothing answers from it, and cache it again below if it is still good.
            self.cache.remove(&key);
        }
        let miss = match found {
            Lookup::Hit(s) => {
                self.throttle.success(addr, name);
                return Ok(Some(s));
            }
            Lookup::Miss {
                user_id,
                hash,
                subject,
                epoch,
            } => Some((user_id, hash, subject, epoch)),
            Lookup::Unknown => None,
        };
        // From here on the password is checked: the check takes its place in the allowance
        // while it runs, so guesses sent at once cannot all be checked.
        let attempt = self
            .throttle
            .begin(addr, name, self.now())
            .map_err(AuthError::Locked)?;
        let Some((user_id, hash, subject, epoch)) = miss else {
            // Spend the same time as for a real user, so names cannot be probed by timing.
            let p = password.to_string();
            let _permit = self.argon2.acquire().await;
            let _ = tokio::task::spawn_blocking(move || password::verify(&p, dummy_hash())).await;
            attempt.failed(self.now());
            return Ok(None);
        };
        let p = password.to_string();
        let permit = self.argon2.acquire().await;
        let old = hash.clone();
        let ok = tokio::task::spawn_blocking(move || password::verify(&p, &old))
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        drop(permit);
        if !ok {
            attempt.failed(self.now());
            return Ok(None);
        }
        attempt.succeeded();
        if super::htpasswd::is_bcrypt(&hash) {
            self.upgrade_hash(user_id, hash, password).await;
        }
        self.db.write_detached("a login time", move |tx| {
            users::touch_login(tx, user_id, now)
        });
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
}

impl Auth {
    /// Replace an imported bcrypt hash by argon2id of the password that just matched it. A
    /// failure only postpones it to the next login.
    async fn upgrade_hash(&self, user_id: i64, old: String, password: &str) {
        let p = password.to_string();
        let permit = self.argon2.acquire().await;
        let new = tokio::task::spawn_blocking(move || password::hash(&p)).await;
        drop(permit);
        let Ok(Ok(new)) = new else {
            tracing::warn!(user_id, "cannot hash a password to replace its bcrypt hash");
            return;
        };
        let replaced = self
            .db
            .write(move |tx| users::upgrade_hash(tx, user_id, &old, &new))
            .await;
        match replaced {
            Ok(true) => tracing::info!(user_id, "imported bcrypt hash replaced by argon2id"),
            Ok(false) => {}
            Err(e) => tracing::warn!(user_id, error = %e, "cannot replace a bcrypt hash"),
        }
    }

    /// One database read: the auth epoch and, unless `key` is cached at that epoch, the user
    /// and their state.
    async fn lookup(&self, name: &str, key: &str, now: i64) -> Result<Lookup, AuthError> {
        let (cache, n, k) = (self.cache.clone(), name.to_string(), key.to_string());
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
        Ok(found)
    }
}

/// Password checks in flight, by cache key: a second request with the same name and password
/// waits for the first check instead of starting its own.
#[derive(Default)]
pub(super) struct Flights(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

/// Held while a check runs or waits for one; the entry goes when nobody holds or waits for
/// it (also when the waiting request is cancelled).
pub(super) struct Flight<'a> {
    /// Whether another check of the same key had to finish first.
    pub(super) waited: bool,
    flights: &'a Flights,
    key: String,
    entry: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Flights {
    pub(super) async fn enter(&self, key: &str) -> Flight<'_> {
        let entry = {
            let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(key.to_string()).or_default().clone()
        };
        let mut flight = Flight {
            waited: false,
            flights: self,
            key: key.to_string(),
            entry: entry.clone(),
            guard: None,
        };
        flight.guard = Some(match entry.clone().try_lock_owned() {
            Ok(g) => g,
            Err(_) => {
                flight.waited = true;
                entry.lock_owned().await
            }
        });
        flight
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.flights.0.lock().unwrap_or_else(|p| p.into_inner());
        // The map's reference and ours: nobody else holds or waits for this entry.
        let ours = map
            .get(&self.key)
            .is_some_and(|e| Arc::ptr_eq(e, &self.entry));
        if ours && Arc::strong_count(&self.entry) <= 2 {
            map.remove(&self.key);
        }
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

/// Cache keys of a robot secret (by its hash) and of a name with a password.
pub(super) fn robot_key(secret_hash: &str) -> String {
    format!("r:{secret_hash}")
}

pub(super) fn password_key(name: &str, password: &str) -> String {
    format!("p:{}", secret::sha256_hex(&format!("{name}\0{password}")))
}

/// A valid argon2id hash of a password nobody knows, to verify against for unknown names.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| password::hash("berth: no such user").unwrap_or_default())
}
