//! `acme` mode: rustls-acme orders, caches and renews the certificate while berth serves.
//!
//! The account key and certificates live in `<data-dir>/acme/`, a folder only the owner may
//! enter. A cached valid certificate is served at once after a restart, with no new order;
//! renewal starts at two thirds of the lifetime. While no certificate exists, every failure is
//! logged with its reason and written to `<data-dir>/acme/last-error` (which `berth tls
//! status` shows), and rustls-acme retries with a growing backoff.

use std::path::PathBuf;
use std::sync::Arc;

use futures_util::StreamExt;
use rustls::RootCertStore;
use rustls_acme::caches::DirCache;
use rustls_acme::tower::TowerHttp01ChallengeService;
use rustls_acme::{AcmeConfig, EventOk, UseChallenge};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::sync::watch;

use super::{provider, server_config};
use crate::clock::rfc3339;
use crate::config::{Challenge, Directory, Tls};
use crate::storage::DataDir;

/// Let's Encrypt's directories.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

pub fn directory_url(tls: &Tls) -> String {
    match tls.directory() {
        Directory::LetsEncrypt => LETS_ENCRYPT.into(),
        Directory::LetsEncryptStaging => LETS_ENCRYPT_STAGING.into(),
        Directory::Url(u) => u,
    }
}

/// What the HTTPS listener and the plain-HTTP listener need from ACME.
pub struct Acme {
    pub acceptor: rustls_acme::axum::AxumAcceptor,
    /// The HTTP-01 responder, when that challenge is used.
    pub http01: Option<TowerHttp01ChallengeService>,
}

/// Set up ACME and start the task that orders and renews (it ends when `stop` turns true).
pub fn start(tls: &Tls, data: &DataDir, stop: watch::Receiver<bool>) -> Result<Acme, String> {
    let dir = data.acme();
    // Owner-only like the rest of the data directory (start-up repairs an existing one).
    crate::storage::secure::create_dir(&dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let config = match &tls.directory_ca_file {
        // A private CA (or a test CA): trust exactly it for the directory.
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)
                .map_err(|e| format!("cannot read {}: {e}", ca.display()))?
            {
                let cert = cert.map_err(|e| format!("cannot parse {}: {e}", ca.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("unusable CA in {}: {e}", ca.display()))?;
            }
            let client = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            AcmeConfig::new_with_client_config(&tls.domains, Arc::new(client))
        }
        None => AcmeConfig::new_with_provider(&tls.domains, provider()),
    };
    let mut config = config
        .directory(directory_url(tls))
        .challenge_type(match tls.challenge {
            Challenge::TlsAlpn01 => UseChallenge::TlsAlpn01,
            Challenge::Http01 => UseChallenge::Http01,
        });
    if let Some(email) = &tls.email {
        config = config.contact_push(format!("mailto:{email}"));
    }
    let state = config.cache(DirCache::new(dir.clone())).state();
    let server = server_config(state.resolver()).map_err(|e| e.to_string())?;
    let acceptor = state.axum_acceptor(Arc::new(server));
    let http01 =
        (tls.challenge == Challenge::Http01).then(|| state.http01_challenge_tower_service());
    tracing::info!(domains = ?tls.domains, directory = %directory_url(tls), "obtaining a certificate over ACME (cached ones are served at once)");
    tokio::spawn(drive(state, dir, stop));
    Ok(Acme { acceptor, http01 })
}

type State = rustls_acme::AcmeState<std::io::Error, std::io::Error>;

/// Poll the ACME state: ordering and renewal happen only while this runs.
async fn drive(mut state: State, dir: PathBuf, mut stop: watch::Receiver<bool>) {
    let error_file = dir.join("last-error");
    loop {
        let event = tokio::select! {
            e = state.next() => e,
            _ = stop.wait_for(|s| *s) => return,
        };
        match event {
            None => return,
            Some(Ok(ok)) => {
                tracing::info!(event = ?ok, "acme");
                if matches!(ok, EventOk::DeployedNewCert | EventOk::DeployedCachedCert) {
                    let _ = tokio::fs::remove_file(&error_file).await;
                }
            }
            Some(Err(e)) => {
                tracing::error!(error = %e, "ACME: no new certificate yet; retrying with backoff (plain-HTTP challenges are still answered)");
                let now = crate::clock::Clock::now(&crate::clock::SystemClock);
                let line = format!("{} {e}\n", rfc3339(now));
                if let Err(w) = tokio::fs::write(&error_file, line).await {
                    tracing::warn!(error = %w, "cannot record the ACME error");
                }
            }
        }
    }
}
