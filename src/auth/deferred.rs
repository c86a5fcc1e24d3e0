//! Authentication from the cache alone, for reads that check the auth epoch themselves.
//!
//! The usual path reads the auth epoch before a request goes on: a database trip of its own.
//! A manifest read can instead read the epoch in its own trip (`core`'s `*_at_epoch` reads)
//! and be answered only if the epoch is still the one the cached state was read at; if it
//! has moved, the request takes the usual path. Either way a change made before the request
//! arrived (a revoked token, a disabled user, a grant taken away, in whichever process)
//! applies to it.

use super::login::{password_key, robot_key};
use super::{
    Auth, Credentials, Holder, PASSWORD_CACHE_TTL, Subject, bearer_subject, holder_key, secret,
};

/// A subject taken from the cache, valid if the auth epoch is still `epoch`.
pub struct Deferred {
    pub subject: Subject,
    pub epoch: i64,
}

impl Auth {
    /// The subject of `creds` if the cache holds everything needed to establish it. `None`
    /// whenever the usual path is needed: nothing cached, a password due for checking again,
    /// a throttled address, an invalid or expired bearer token. Nothing is recorded here:
    /// what a login records happens in `confirmed`, once the epoch is known not to have moved.
    pub fn deferred(&self, creds: &Credentials, addr: &str) -> Option<Deferred> {
        let now = self.now();
        let peek = |key: &str, max_age: i64| self.cache.peek(key, now, max_age);
        let (subject, epoch) = match creds {
            Credentials::None => peek(&holder_key(&Holder::Anonymous), i64::MAX)?,
            Credentials::Bearer(t) => {
                let claims = self.bearer_claims(t).ok()?;
                let (state, epoch) = peek(&holder_key(&claims.sub), i64::MAX)?;
                (bearer_subject(&claims, Some(state))?, epoch)
            }
            Credentials::Basic { user, password } => {
                if self.throttle.locked(addr, user, now).is_some() {
                    return None;
                }
                if secret::is_robot_secret(password) {
                    let key = robot_key(&secret::sha256_hex(password));
                    let (s, epoch) = peek(&key, i64::MAX)?;
                    if s.name.as_deref() != Some(user.as_str()) {
                        return None;
                    }
                    (s, epoch)
                } else {
                    peek(&password_key(user, password), PASSWORD_CACHE_TTL)?
                }
            }
        };
        Some(Deferred { subject, epoch })
    }

    /// What a successful login records, for a deferred subject whose epoch turned out
    /// current: the address's good login (throttling) and a robot token's last use.
    pub fn confirmed(&self, d: &Deferred, creds: &Credentials, addr: &str) {
        if let Credentials::Basic { user, .. } = creds {
            self.throttle.success(addr, user);
            if let Holder::Robot(id) = d.subject.holder {
                self.touch_token(id, addr);
            }
        }
    }
}
