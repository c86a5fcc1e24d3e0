//! Web UI sessions: a user signs in with their password (robot tokens cannot), and gets a
//! random session secret for a cookie. Only its SHA-256 is stored, with the user's stamp at
//! sign-in, so a password change, a disable or a removal ends every session of the user at
//! once. Sessions end after `IDLE` without use and `LIFETIME` after sign-in, whatever the use.

use super::{Auth, AuthError, Holder, Subject, secret};
use crate::db::sessions;

/// A session unused for this long ends, seconds.
pub const IDLE: i64 = 60 * 60;
/// A session ends this long after sign-in, seconds.
pub const LIFETIME: i64 = 12 * 60 * 60;
/// A session's last use is written at most this often, seconds.
const TOUCH_EVERY: i64 = 60;

/// A session secret as the cookie carries it; `Debug` keeps it out of logs.
pub struct SessionSecret(String);

impl SessionSecret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionSecret(<redacted>)")
    }
}

/// The longest session secret looked up (ours are 43 characters).
const MAX_SECRET: usize = 128;

impl Auth {
    /// Check a user's password (throttled and audited like any login) and start a session.
    /// Robot tokens are refused: they are for clients, not people.
    pub async fn sign_in(
        &self,
        name: &str,
        password: &str,
        addr: &str,
        user_agent: &str,
    ) -> Result<(SessionSecret, Subject), AuthError> {
        if secret::is_robot_secret(password) {
            return Err(AuthError::Unauthorized(
                "robot tokens cannot sign in to the web UI; use your own password",
            ));
        }
        let subject = self.login(name, password, addr).await?;
        let Holder::User(user_id) = subject.holder else {
            return Err(AuthError::Unauthorized(
                "robot tokens cannot sign in to the web UI; use your own password",
            ));
        };
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| AuthError::Internal(e.to_string()))?;
        let value = {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        };
        let hash = secret::sha256_hex(&value);
        let (now, stamp) = (self.now(), subject.stamp);
        let (addr_s, agent) = (addr.to_string(), truncate(user_agent, 200));
        self.db
            .write(move |tx| {
                sessions::delete_expired(tx, now - IDLE, now - LIFETIME)?;
                sessions::insert(
                    tx,
                    &sessions::NewSession {
                        id_sha256: &hash,
                        user_id,
                        stamp,
                        now,
                        client_addr: &addr_s,
                        user_agent: &agent,
                    },
                )
            })
            .await?;
        // The session exists: a failed audit write is logged, not a failed sign-in.
        if let Err(e) = self
            .record(subject.name.clone(), addr, "ui.sign_in", None)
            .await
        {
            tracing::error!(error = %e, "could not audit a sign-in");
        }
        Ok((SessionSecret(value), subject))
    }

    /// The signed-in user a session secret stands for, now; `None` when the session is
    /// unknown, ended, idle too long, too old, or its user changed password, was disabled or
    /// removed.
    pub async fn session(&self, value: &str) -> Result<Option<Subject>, AuthError> {
        if value.is_empty() || value.len() > MAX_SECRET {
            return Ok(None);
        }
        let hash = secret::sha256_hex(value);
        let now = self.now();
        let h = hash.clone();
        let Some(s) = self
            .db
            .read(move |c| sessions::get(c, &h).map_err(AuthError::from))
            .await?
        else {
            return Ok(None);
        };
        if now - s.seen_at >= IDLE || now - s.created_at >= LIFETIME {
            return Ok(None);
        }
        let Some(subject) = self.state(Holder::User(s.user_id)).await? else {
            return Ok(None);
        };
        if subject.stamp != s.stamp {
            return Ok(None);
        }
        // Written before the answer (once a minute at most), so that the next request of
        // the session sees this use: a use just inside the idle limit keeps it alive.
        if now - s.seen_at >= TOUCH_EVERY
            && let Err(e) = self
                .db
                .write(move |tx| sessions::touch(tx, &hash, now))
                .await
        {
            tracing::warn!(error = %e, "could not record a session's last use");
        }
        Ok(Some(subject))
    }

    /// End a session (sign-out). Ending one that is gone is not an error.
    pub async fn sign_out(
        &self,
        value: &str,
        subject: &Subject,
        addr: &str,
    ) -> Result<(), AuthError> {
        let hash = secret::sha256_hex(value);
        self.db
            .write(move |tx| sessions::delete(tx, &hash).map_err(AuthError::from))
            .await?;
        self.record(subject.name.clone(), addr, "ui.sign_out", None)
            .await
    }
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}
