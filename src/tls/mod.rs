//! TLS inside the binary: certificates from an ACME CA (Let's Encrypt by default) or from PEM
//! files, served by rustls with HTTP/2 and HTTP/1.1 offered by ALPN, TLS 1.2 and 1.3 only.
//!
//! One crypto provider for the whole binary: ring. It builds with nothing but a C compiler
//! (aws-lc-rs wants more of the toolchain for some targets), it adds less to the binary, and
//! it covers everything berth needs (ECDSA and RSA certificates, the TLS 1.2/1.3 suites that
//! browsers and container clients use). Every rustls config here is built with this provider
//! explicitly, and it is also installed as the process default at start-up, so no code path
//! can panic on an ambiguous provider choice.
//!
//! Layering: used by `server` (listeners) and `cli` (`berth tls status`); uses `config`.

pub mod acme;
mod files;
pub mod status;

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::ResolvesServerCert;

pub use files::{FileCertificate, watch as watch_files};

/// The provider every TLS config of berth uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Make ring the process-wide default too (a second call is a no-op).
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A server config around a certificate resolver: TLS 1.3 and 1.2, ALPN h2 and http/1.1.
pub fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> Result<ServerConfig, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
