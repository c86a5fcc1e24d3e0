//! The `[tls]` table and the reverse-proxy settings.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The plain-HTTP listener of the TLS modes (HTTP-01 answers and redirects to HTTPS).
pub const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:80";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plain HTTP: for development, or behind a reverse proxy that terminates TLS.
    #[default]
    Off,
    /// Certificates from an ACME CA (Let's Encrypt by default), obtained and renewed by berth.
    Acme,
    /// Certificate and key PEM files, reloaded when they change.
    Files,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Challenge {
    /// Answered on the HTTPS listener itself (port 443 must reach berth directly).
    #[default]
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// Answered on the plain-HTTP listener (port 80).
    #[serde(rename = "http-01")]
    Http01,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub mode: TlsMode,
    /// acme: the names on the certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    /// acme: contact address given to the CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// acme: `production` (Let's Encrypt), `staging` (Let's Encrypt staging) or a directory URL.
    pub directory: String,
    /// acme: an extra CA certificate (PEM) to trust for the directory, e.g. a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory_ca_file: Option<PathBuf>,
    /// acme: `tls-alpn-01` or `http-01`.
    pub challenge: Challenge,
    /// files: certificate chain PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// files: private key PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// acme and files: the plain-HTTP listener (`off` for none). Default 0.0.0.0:80.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<String>,
    /// Send Strict-Transport-Security on HTTPS responses.
    pub hsts: bool,
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            mode: TlsMode::Off,
            domains: Vec::new(),
            email: None,
            directory: "production".into(),
            directory_ca_file: None,
            challenge: Challenge::TlsAlpn01,
            cert_file: None,
            key_file: None,
            http_listen: None,
            hsts: true,
        }
    }
}

/// Where an ACME directory lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Directory {
    LetsEncrypt,
    LetsEncryptStaging,
    Url(String),
}

impl Tls {
    pub fn directory(&self) -> Directory {
        match self.directory.as_str() {
            "production" => Directory::LetsEncrypt,
            "staging" => Directory::LetsEncryptStaging,
            url => Directory::Url(url.to_string()),
        }
    }

    /// The plain-HTTP listener in the TLS modes; `None` when turned off (or in `off` mode).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        if self.mode == TlsMode::Off {
            return None;
        }
        match self.http_listen.as_deref().unwrap_or(DEFAULT_HTTP_LISTEN) {
            "off" => None,
            // Validated at load.
            a => super::keys::parse_addr(a).ok(),
        }
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        if let Some(a) = self.http_listen.as_deref().filter(|a| *a != "off") {
            super::keys::parse_addr(a).map_err(|e| format!("tls.http_listen: {e} (or \"off\")"))?;
        }
        match self.mode {
            TlsMode::Off => Ok(()),
            TlsMode::Files => match (&self.cert_file, &self.key_file) {
                (Some(_), Some(_)) => Ok(()),
                _ => Err("tls.mode = \"files\" needs tls.cert_file and tls.key_file".into()),
            },
            TlsMode::Acme => {
                if self.domains.is_empty() {
                    return Err("tls.mode = \"acme\" needs tls.domains".into());
                }
                for d in &self.domains {
                    if !dns_name_ok(d) {
                        return Err(format!("tls.domains: {d:?} is not a DNS name"));
                    }
                }
                if let Directory::Url(u) = self.directory()
                    && !u.starts_with("https://")
                {
                    return Err(format!(
                        "tls.directory: {u:?} must be production, staging or an https:// URL"
                    ));
                }
                if let Some(f) = &self.directory_ca_file
                    && !f.is_file()
                {
                    return Err(format!(
                        "tls.directory_ca_file: {} does not exist",
                        f.display()
                    ));
                }
                if self.challenge == Challenge::Http01 && self.http_addr().is_none() {
                    return Err("tls.challenge = \"http-01\" needs the plain-HTTP listener (tls.http_listen)".into());
                }
                Ok(())
            }
        }
    }
}

fn dns_name_ok(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `external_url` and `trusted_proxies`, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proxies {
    /// `scheme://host[:port]`, no trailing slash.
    pub external_url: Option<String>,
    trusted: Vec<(IpAddr, u8)>,
}

impl Proxies {
    pub fn parse(external_url: Option<&str>, trusted: &[String]) -> Result<Proxies, String> {
        let external_url = match external_url {
            None => None,
            Some(u) => {
                let rest = u
                    .strip_prefix("https://")
                    .or_else(|| u.strip_prefix("http://"))
                    .ok_or_else(|| {
                        format!(
                            "external_url: {:?} must start with https:// or http://",
                            super::keys::redact_url(u)
                        )
                    })?;
                let host = rest.trim_end_matches('/');
                let plain = host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
                if host.is_empty() || !plain {
                    return Err(format!(
                        "external_url: {:?} must be scheme://host[:port], without user info or a path",
                        super::keys::redact_url(u)
                    ));
                }
                Some(u.trim_end_matches('/').to_string())
            }
        };
        let mut nets = Vec::new();
        for t in trusted {
            let (ip, bits) = match t.split_once('/') {
                Some((ip, bits)) => (ip, Some(bits)),
                None => (t.as_str(), None),
            };
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| format!("trusted_proxies: {t:?} is not an address or CIDR range"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                None => max,
                Some(b) => b
                    .parse::<u8>()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(|| format!("trusted_proxies: {t:?} has a bad prefix length"))?,
            };
            nets.push((ip, bits));
        }
        Ok(Proxies {
            external_url,
            trusted: nets,
        })
    }

    /// Whether a peer's forwarded headers are believed.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.trusted
            .iter()
            .any(|(net, bits)| in_net(peer, *net, *bits))
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    let (ip, net, width) = match (ip.to_canonical(), net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    if bits == 0 {
        return true;
    }
    let shift = width - u32::from(bits);
    (ip >> shift) == (net >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_parse_and_match() {
        let p = Proxies::parse(
            Some("https://r.example.com/"),
            &["127.0.0.1".into(), "10.0.0.0/8".into(), "::1".into()],
        )
        .unwrap();
        assert_eq!(p.external_url.as_deref(), Some("https://r.example.com"));
        assert!(p.trusts("127.0.0.1".parse().unwrap()));
        assert!(p.trusts("10.9.8.7".parse().unwrap()));
        assert!(p.trusts("::ffff:10.1.1.1".parse().unwrap()));
        assert!(p.trusts("::1".parse().unwrap()));
        assert!(!p.trusts("11.0.0.1".parse().unwrap()));
        assert!(!p.trusts("127.0.0.2".parse().unwrap()));
        for bad in [
            "ftp://x",
            "https://",
            "https://a/b",
            "x",
            "https://a\tb",
            "https://é.example",
        ] {
            assert!(Proxies::parse(Some(bad), &[]).is_err(), "{bad}");
        }
        for bad in ["1.2.3", "10.0.0.0/33", "a/8"] {
            assert!(Proxies::parse(None, &[bad.to_string()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn tls_validation() {
        let mut t = Tls {
            mode: TlsMode::Acme,
            ..Tls::default()
        };
        assert!(t.validate().is_err(), "domains needed");
        t.domains = vec!["registry.example.com".into()];
        assert!(t.validate().is_ok());
        t.domains = vec!["bad_name".into()];
        assert!(t.validate().is_err());
        t.domains = vec!["r.test".into()];
        t.directory = "http://insecure/dir".into();
        assert!(t.validate().is_err());
        t.directory = "staging".into();
        assert_eq!(t.directory(), Directory::LetsEncryptStaging);
        t.challenge = Challenge::Http01;
        t.http_listen = Some("off".into());
        assert!(t.validate().is_err(), "http-01 needs the HTTP listener");
        t.http_listen = Some("127.0.0.1:8080".into());
        assert_eq!(t.http_addr(), Some("127.0.0.1:8080".parse().unwrap()));
        let f = Tls {
            mode: TlsMode::Files,
            ..Tls::default()
        };
        assert!(f.validate().is_err());
    }
}
