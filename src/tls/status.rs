//! `berth tls status`: the certificate in use (names, issuer, expiry, serial) and the last
//! ACME error, read from the data directory, so it works whether or not the server runs.

use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::extensions::GeneralName;

use crate::clock::rfc3339;
use crate::config::{Config, TlsMode};

/// What a certificate says about itself.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub names: Vec<String>,
    pub issuer: String,
    pub not_after: i64,
    pub serial: String,
}

/// Read the first certificate of a PEM file (a cached ACME file starts with the key; it is
/// skipped).
pub fn read_cert(path: &Path) -> Result<CertInfo, String> {
    let der: CertificateDer<'static> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .next()
        .ok_or_else(|| format!("no certificate in {}", path.display()))?
        .map_err(|e| format!("cannot parse {}: {e}", path.display()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| format!("cannot parse the certificate in {}: {e}", path.display()))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push(d.to_string()),
                GeneralName::IPAddress(ip) => names.push(format!("{ip:?}")),
                _ => {}
            }
        }
    }
    Ok(CertInfo {
        names,
        issuer: cert.issuer().to_string(),
        not_after: cert.validity().not_after.timestamp(),
        serial: cert.raw_serial_as_string(),
    })
}

/// The newest cached ACME certificate file, if any.
pub fn newest_acme_cert(dir: &Path) -> Option<PathBuf> {
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with("cached_cert_") {
            continue;
        }
        let modified = e.metadata().and_then(|m| m.modified()).ok()?;
        if best.as_ref().is_none_or(|(t, _)| modified > *t) {
            best = Some((modified, e.path()));
        }
    }
    best.map(|(_, p)| p)
}

/// The certificate in use: `None` without TLS, `Some(Err)` when there is none yet (or it
/// cannot be read). Blocking (reads a small file).
pub fn current(config: &Config) -> Option<Result<CertInfo, String>> {
    let path = match config.tls.mode {
        TlsMode::Off => return None,
        TlsMode::Files => config.tls.cert_file.clone(),
        TlsMode::Acme => newest_acme_cert(&config.data().acme()),
    };
    Some(match path {
        None => Err("no certificate yet".into()),
        Some(p) => read_cert(&p),
    })
}

/// The last ACME error recorded, while no certificate has replaced it. Blocking.
pub fn last_acme_error(config: &Config) -> Option<String> {
    if config.tls.mode != TlsMode::Acme {
        return None;
    }
    std::fs::read_to_string(config.data().acme().join("last-error"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// The report `berth tls status` prints; `Err` when TLS is on but no certificate is usable.
pub fn report(config: &Config, now: i64) -> Result<String, String> {
    let tls = &config.tls;
    let mut out = String::new();
    let cert_path = match tls.mode {
        TlsMode::Off => {
            return Ok(format!(
                "mode: off (plain HTTP on {}; terminate TLS in front of berth)\n",
                config.listen_addr()
            ));
        }
        TlsMode::Files => {
            out.push_str("mode: files\n");
            tls.cert_file.clone()
        }
        TlsMode::Acme => {
            out.push_str(&format!(
                "mode: acme ({}, {})\ndomains: {}\n",
                super::acme::directory_url(tls),
                match tls.challenge {
                    crate::config::Challenge::TlsAlpn01 => "tls-alpn-01",
                    crate::config::Challenge::Http01 => "http-01",
                },
                tls.domains.join(", ")
            ));
            let dir = config.data().acme();
            if let Ok(e) = std::fs::read_to_string(dir.join("last-error")) {
                out.push_str(&format!("last ACME error: {}\n", e.trim()));
            }
            newest_acme_cert(&dir)
        }
    };
    let Some(path) = cert_path else {
        out.push_str("certificate: none yet\n");
        return Err(out);
    };
    match read_cert(&path) {
        Ok(c) => {
            let left = (c.not_after - now) / 86_400;
            out.push_str(&format!(
                "certificate: {}\nnames: {}\nissuer: {}\nexpires: {} ({})\nserial: {}\n",
                path.display(),
                c.names.join(", "),
                c.issuer,
                rfc3339(c.not_after),
                if c.not_after <= now {
                    "EXPIRED".to_string()
                } else {
                    format!("in {left} days")
                },
                c.serial
            ));
            if c.not_after <= now {
                Err(out)
            } else {
                Ok(out)
            }
        }
        Err(e) => {
            out.push_str(&format!("certificate: {e}\n"));
            Err(out)
        }
    }
}
