//! TLS termination: the certificate and key, loaded from PEM, served through a resolver whose
//! contents are swapped whole on reload (SIGHUP) so that live connections are never touched.

pub use crate::certs::{load_certified_key, provider, TlsError};
use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Serves whatever certificate was loaded last.
#[derive(Debug)]
pub struct ReloadableCert {
    current: ArcSwap<CertifiedKey>,
    cert_path: PathBuf,
    key_path: PathBuf,
}

impl ReloadableCert {
    /// Serves `loaded` (read from `cert` and `key` when the config was loaded) until a reload.
    pub fn new(loaded: Arc<CertifiedKey>, cert: &Path, key: &Path) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::new(loaded),
            cert_path: cert.to_path_buf(),
            key_path: key.to_path_buf(),
        })
    }

    /// The certificate file served, and when its chain expires (Unix seconds).
    pub fn expiry(&self) -> (&Path, Option<i64>) {
        (
            &self.cert_path,
            crate::certs::not_after(&self.current.load().cert),
        )
    }

    /// Re-reads the files; on any error the old certificate stays in service.
    pub fn reload(&self) -> Result<(), TlsError> {
        let ck = load_certified_key(&self.cert_path, &self.key_path)?;
        self.current.store(Arc::new(ck));
        Ok(())
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// rustls server config: TLS 1.2 and 1.3, ALPN h2 then http/1.1.
pub fn server_config(certs: Arc<ReloadableCert>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
