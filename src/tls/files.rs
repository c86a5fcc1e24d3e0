//! `files` mode: a certificate chain and key from PEM files, checked for changes every second
//! and swapped in without a restart (a renewed certificate from certbot, cert-manager or a
//! corporate CA just needs to be written over the old one).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum_server::tls_rustls::RustlsConfig;
use rustls::server::ResolvesServerCert;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;

use super::{provider, server_config};

const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The loaded certificate, served whatever the SNI.
#[derive(Debug)]
pub struct FileCertificate(Arc<CertifiedKey>);

impl ResolvesServerCert for FileCertificate {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl FileCertificate {
    /// Load and check a chain and key; the error says which file is wrong and how.
    pub fn load(cert: &Path, key: &Path) -> Result<FileCertificate, String> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| format!("cannot read certificate {}: {e}", cert.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("cannot parse certificate {}: {e}", cert.display()))?;
        if chain.is_empty() {
            return Err(format!("no certificate in {}", cert.display()));
        }
        let key_der = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| format!("cannot read private key {}: {e}", key.display()))?;
        let signing = provider()
            .key_provider
            .load_private_key(key_der)
            .map_err(|e| format!("unusable private key {}: {e}", key.display()))?;
        let certified = CertifiedKey::new(chain, signing);
        certified.keys_match().map_err(|e| {
            format!(
                "{} does not belong to {}: {e}",
                key.display(),
                cert.display()
            )
        })?;
        Ok(FileCertificate(Arc::new(certified)))
    }

    pub fn rustls_config(self) -> Result<Arc<rustls::ServerConfig>, String> {
        server_config(Arc::new(self))
            .map(Arc::new)
            .map_err(|e| e.to_string())
    }
}

fn stamp(p: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Reload `config` whenever either file changes, until `stop` turns true. A pair that does
/// not load (say, the key was written and the certificate not yet) keeps the old one served
/// and is tried again on the next change.
pub async fn watch(
    config: RustlsConfig,
    cert: PathBuf,
    key: PathBuf,
    mut stop: watch::Receiver<bool>,
) {
    let mut seen = (stamp(&cert), stamp(&key));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = (stamp(&cert), stamp(&key));
        if now == seen {
            continue;
        }
        seen = now;
        let (c, k) = (cert.clone(), key.clone());
        let loaded =
            tokio::task::spawn_blocking(move || FileCertificate::load(&c, &k)?.rustls_config())
                .await;
        match loaded {
            Ok(Ok(new)) => {
                config.reload_from_config(new);
                tracing::info!(cert = %cert.display(), "reloaded the TLS certificate");
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "certificate files changed but do not load; still serving the previous one")
            }
            Err(e) => tracing::warn!(error = %e, "certificate reload task failed"),
        }
    }
}
