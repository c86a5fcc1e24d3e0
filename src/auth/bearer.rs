//! Bearer tokens handed out by `/token`: a signed, short-lived statement of who the holder is
//! and which actions on which repositories were granted. Format:
//! `b1.<base64url(json claims)>.<base64url(HMAC-SHA256(key, "b1." + claims))>`.
//! Clients treat it as opaque; only berth reads it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

const VERSION: &str = "b1.";

/// Who holds the token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Holder {
    #[serde(rename = "a")]
    Anonymous,
    #[serde(rename = "u")]
    User(i64),
    #[serde(rename = "t")]
    Robot(i64),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Holder,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// The holder's stamp when the token was issued: a different one now means the password
    /// changed, the user was disabled or enabled, the robot token rotated, or the row id
    /// belongs to a new holder.
    pub st: i64,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Granted access: repository name (or `*` for the catalog) and actions (`pull,push`).
    pub acc: Vec<(String, String)>,
}

pub fn sign(key: &[u8], claims: &Claims) -> String {
    let json = serde_json::to_vec(claims).expect("claims serialise");
    let body = format!("{VERSION}{}", B64.encode(json));
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body.as_bytes());
    format!("{body}.{}", B64.encode(mac.finalize().into_bytes()))
}

/// Check the signature (in constant time) and decode; the caller checks expiry.
pub fn verify(key: &[u8], token: &str) -> Option<Claims> {
    let (body, sig) = token.rsplit_once('.')?;
    let payload = body.strip_prefix(VERSION)?;
    let sig = B64.decode(sig).ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
    mac.update(body.as_bytes());
    mac.verify_slice(&sig).ok()?;
    serde_json::from_slice(&B64.decode(payload).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_tamper() {
        let c = Claims {
            sub: Holder::Robot(4),
            iat: 1,
            st: 42,
            exp: 99,
            acc: vec![("a/b".into(), "pull".into())],
        };
        let t = sign(b"key", &c);
        assert!(t.starts_with("b1."));
        assert_eq!(verify(b"key", &t), Some(c.clone()));
        assert_eq!(verify(b"other key", &t), None);
        // Changing the claims breaks the signature.
        let forged = sign(
            b"key",
            &Claims {
                acc: vec![("a/b".into(), "pull,push".into())],
                ..c
            },
        );
        let (_, sig) = t.rsplit_once('.').unwrap();
        let (body, _) = forged.rsplit_once('.').unwrap();
        assert_eq!(verify(b"key", &format!("{body}.{sig}")), None);
        for junk in ["", "b1.", "b1..", "x.y.z", "b1.!!!.???"] {
            assert_eq!(verify(b"key", junk), None);
        }
    }
}
