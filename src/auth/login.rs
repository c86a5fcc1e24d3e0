//! Basic credentials: a name with a password (argon2id, verified once and then cached) or with
//! a robot token's secret (by its SHA-256), throttled per client address and audited on
//! failure.

use super::cache;
use super::{
    Auth, AuthError, Holder, PASSWORD_CACHE_TTL, Subject, TOUCH_EVERY, password, read_subject,
    secret,
};
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
                self.record(Some(user.to_string()), addr, "login.failed", None)
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
            self.touch_token(*id, addr).await;
        }
        Ok(subject)
    }

    pub(super) async fn touch_token(&self, id: i64, addr: &str) {
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
        let key = password_key(name, password);
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
        if !matches!(found, Lookup::Hit(_)) {
            // Whatever was cached for this name and password is out of date: forget it, so
            // that nothing answers from it, and cache it again below if it is still good.
            self.cache.remove(&key);
        }
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
