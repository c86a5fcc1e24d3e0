//! Robot token secrets: a recognisable prefix and 32 random bytes, shown once; only the
//! SHA-256 is stored, so a lookup is a hash and an index read, never argon2.

use std::fmt;

use crate::oci::Digest;

/// Every robot secret starts with this, so secret scanners and people can recognise it.
pub const PREFIX: &str = "berth_rt_";

/// A freshly made secret. `Debug` never shows it.
pub struct Secret(String);

impl Secret {
    pub fn generate() -> Result<Secret, String> {
        use base64::Engine as _;
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| e.to_string())?;
        Ok(Secret(format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        )))
    }

    /// The secret itself, to show exactly once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn sha256(&self) -> String {
        sha256_hex(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Whether a presented password looks like a robot secret.
pub fn is_robot_secret(s: &str) -> bool {
    s.starts_with(PREFIX)
}

/// The stored form of a presented secret.
pub fn sha256_hex(s: &str) -> String {
    Digest::sha256_of(s.as_bytes()).hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_have_prefix_and_hide_in_debug() {
        let s = Secret::generate().unwrap();
        assert!(s.expose().starts_with(PREFIX));
        assert_eq!(s.expose().len(), PREFIX.len() + 43);
        assert!(is_robot_secret(s.expose()));
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(s.sha256(), sha256_hex(s.expose()));
        assert_ne!(Secret::generate().unwrap().expose(), s.expose());
    }
}
