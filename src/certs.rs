//! Certificates and keys from PEM files (rustls types), shared by the config loader (which
//! reads the server certificate once) and the TLS listener (which re-reads it on reload).

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate chain {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("cannot read private key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("private key {key} does not belong to certificate {cert}: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Loads a PEM chain and its key, and checks that they belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Cert {
            path: cert.to_path_buf(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Cert {
            path: cert.to_path_buf(),
            reason: "no CERTIFICATE block found".to_owned(),
        });
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_path_buf(),
        reason: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, der, &provider()).map_err(|e| TlsError::Mismatch {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Trust anchors from a PEM file of CA certificates (`ca_file`).
pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let bad = |reason: String| TlsError::Cert {
        path: path.to_path_buf(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE block found".to_owned()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in certs {
        roots.add(c).map_err(|e| bad(e.to_string()))?;
    }
    Ok(roots)
}

/// The operating system's trust anchors (unreadable ones are skipped).
pub fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "skipping a system CA certificate that cannot be read");
    }
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!("no system CA certificates found: https upstreams need ca_file");
    }
    roots
}

/// A client certificate chain and its key, for mTLS to an upstream.
pub struct ClientIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl ClientIdentity {
    /// When the chain stops being valid: see `not_after`.
    pub fn not_after(&self) -> Option<i64> {
        not_after(&self.chain)
    }
}

/// The earliest `notAfter` of a chain (Unix seconds): the moment it stops being accepted, by
/// its leaf or an intermediate that ends sooner. None when no certificate in it parses.
pub fn not_after(chain: &[CertificateDer<'_>]) -> Option<i64> {
    chain
        .iter()
        .filter_map(|c| x509_parser::parse_x509_certificate(c.as_ref()).ok())
        .map(|(_, c)| c.validity().not_after.timestamp())
        .min()
}

pub fn load_client_identity(cert: &Path, key: &Path) -> Result<ClientIdentity, TlsError> {
    // Checked to belong together the same way a server certificate is.
    load_certified_key(cert, key)?;
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Cert {
            path: cert.to_path_buf(),
            reason: e.to_string(),
        })?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(ClientIdentity {
        chain,
        key: key_der,
    })
}

/// rustls client settings for upstreams: TLS 1.2/1.3, ALPN http/1.1 (the gateway speaks
/// HTTP/1.1 to upstreams), the given roots, and a client certificate if any.
pub fn client_config(
    roots: rustls::RootCertStore,
    identity: Option<ClientIdentity>,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut cfg = match identity {
        Some(id) => builder.with_client_auth_cert(id.chain, id.key)?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn der_until(y: i32) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap_or_else(|e| panic!("{e}"));
        params.not_after = rcgen::date_time_ymd(y, 1, 1);
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        params
            .self_signed(&key)
            .unwrap_or_else(|e| panic!("{e}"))
            .der()
            .clone()
    }

    #[test]
    fn a_chain_expires_with_its_earliest_certificate() {
        let leaf = der_until(2031);
        let intermediate = der_until(2029);
        let t = |y| rcgen::date_time_ymd(y, 1, 1).unix_timestamp();
        assert_eq!(not_after(std::slice::from_ref(&leaf)), Some(t(2031)));
        assert_eq!(not_after(&[leaf, intermediate]), Some(t(2029)));
        assert_eq!(not_after(&[CertificateDer::from(vec![1, 2, 3])]), None);
        assert_eq!(not_after(&[]), None);
    }
}
