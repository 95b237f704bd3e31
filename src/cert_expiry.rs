//! `authgate_certificate_expiry_timestamp_seconds`: when each certificate the gateway presents
//! stops being valid (the earliest `notAfter` of its chain), the public listener's and each
//! upstream's client certificate, so an alert fires weeks before a renewal that did not
//! happen. Set at start and after every reload; a certificate no longer configured leaves.

use crate::config::UpstreamConfig;
use crate::metrics::Metrics;
use crate::server::tls::ReloadableCert;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};

/// Which side of a connection presents the certificate.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum CertKind {
    /// The public listener's (`server.tls.cert`); `name` is `public`.
    server,
    /// An upstream's mTLS client certificate (`client_cert`); `name` is the upstream's.
    upstream_client,
}

/// Bounded by the config: one series per certificate file it names.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertLabels {
    pub kind: CertKind,
    pub name: String,
    pub path: String,
}

/// Replaces every series with the certificates in use now.
pub fn record(metrics: &Metrics, server: Option<&ReloadableCert>, upstreams: &[UpstreamConfig]) {
    let mut found: Vec<(CertLabels, Option<i64>)> = Vec::new();
    if let Some(certs) = server {
        let (path, not_after) = certs.expiry();
        found.push((labels(CertKind::server, "public", path), not_after));
    }
    for up in upstreams {
        if let Some(c) = &up.client_cert {
            found.push((
                labels(CertKind::upstream_client, &up.name, &c.cert),
                c.not_after,
            ));
        }
    }
    let family = &metrics.certificate_expiry;
    family.clear();
    for (l, not_after) in found {
        match not_after {
            Some(t) => {
                family.get_or_create(&l).set(t);
            }
            None => tracing::warn!(
                kind = ?l.kind,
                name = %l.name,
                path = %l.path,
                "cannot read the certificate's expiry date (no metric for it)"
            ),
        }
    }
}

fn labels(kind: CertKind, name: &str, path: &std::path::Path) -> CertLabels {
    CertLabels {
        kind,
        name: name.to_owned(),
        path: path.display().to_string(),
    }
}
