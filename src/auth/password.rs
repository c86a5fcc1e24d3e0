//! Human passwords: argon2id PHC strings. Both functions are slow by design (tens of
//! milliseconds): call them on the blocking pool, and rarely.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// Hash a password with a fresh random salt.
pub fn hash(password: &str) -> Result<String, String> {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).map_err(|e| e.to_string())?;
    let salt = SaltString::encode_b64(&raw).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` matches the stored PHC string (a malformed string never matches), or
/// an imported bcrypt hash (`super::htpasswd`), which the login then replaces.
pub fn verify(password: &str, phc: &str) -> bool {
    if super::htpasswd::is_bcrypt(phc) {
        return bcrypt::verify(password, phc).unwrap_or(false);
    }
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A random password for the first administrator: 24 characters of base64url.
pub fn random() -> Result<String, String> {
    use base64::Engine as _;
    let mut raw = [0u8; 18];
    getrandom::fill(&mut raw).map_err(|e| e.to_string())?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify("correct horse", &h));
        assert!(!verify("wrong", &h));
        assert!(!verify("x", "not a hash"));
        assert_ne!(hash("correct horse").unwrap(), h, "salted");
        assert_eq!(random().unwrap().len(), 24);
    }

    #[test]
    fn imported_bcrypt_hashes_verify() {
        let h = bcrypt::hash("old secret", 4).unwrap();
        assert!(verify("old secret", &h));
        assert!(!verify("old secreT", &h));
        // htpasswd writes $2y$, Caddy $2a$: the same algorithm.
        let y = h.replacen("$2b$", "$2y$", 1);
        assert!(verify("old secret", &y));
    }
}
