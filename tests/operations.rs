//! What an operator watches and does on the admin listener: certificate expiry metrics (at
//! start and after a reload).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use rcgen::{CertificateParams, KeyPair};
use support::*;

/// A self-signed certificate for localhost valid until midnight UTC of the given day; its PEM
/// and its key's PEM, and that moment in Unix seconds.
fn cert_until(y: i32, m: u8, d: u8) -> (String, String, i64) {
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(y, m, d);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (
        cert.pem(),
        key.serialize_pem(),
        params.not_after.unix_timestamp(),
    )
}

/// The value of the expiry series whose labels contain all of `labels`.
fn expiry(metrics: &str, labels: &[&str]) -> Option<i64> {
    metrics
        .lines()
        .filter(|l| l.starts_with("authgate_certificate_expiry_timestamp_seconds{"))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| v.parse().unwrap())
}

async fn scrape(admin: std::net::SocketAddr) -> String {
    let (status, _, body) = send(admin, get("/metrics").body(empty()).unwrap()).await;
    assert_eq!(status, 200);
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn certificate_expiry_is_exported_at_start_and_follows_a_reload() {
    let fx_dir = tempfile::tempdir().unwrap();
    let w = |name: &str, text: &str| std::fs::write(fx_dir.path().join(name), text).unwrap();
    let (server_cert, server_key, server_until) = cert_until(2031, 1, 2);
    let (client_cert, client_key, client_until) = cert_until(2030, 6, 7);
    w("tls.crt", &server_cert);
    w("tls.key", &server_key);
    w("client.crt", &client_cert);
    w("client.key", &client_key);
    let p = |name: &str| fx_dir.path().join(name).display().to_string();
    let mtls = format!(
        "[[upstreams]]\nname = \"billing\"\nurl = \"https://127.0.0.1:9\"\n\
         ca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
        p("tls.crt"),
        p("client.crt"),
        p("client.key")
    );
    let gw = TestGateway::new()
        .server(&format!(
            "[server.tls]\ncert = \"{}\"\nkey = \"{}\"",
            p("tls.crt"),
            p("tls.key")
        ))
        .tables(&mtls)
        .start()
        .await;

    let metrics = scrape(gw.admin).await;
    assert!(
        metrics.contains("# TYPE authgate_certificate_expiry_timestamp_seconds gauge"),
        "{metrics}"
    );
    let server_labels = [
        "kind=\"server\"",
        "name=\"public\"",
        &format!("path=\"{}\"", p("tls.crt")),
    ];
    assert_eq!(
        expiry(&metrics, &server_labels),
        Some(server_until),
        "{metrics}"
    );
    let client_labels = [
        "kind=\"upstream_client\"",
        "name=\"billing\"",
        &format!("path=\"{}\"", p("client.crt")),
    ];
    assert_eq!(
        expiry(&metrics, &client_labels),
        Some(client_until),
        "{metrics}"
    );

    // Renewed server certificate, and the mTLS upstream removed: the reload moves one series
    // and drops the other.
    let (renewed, renewed_key, renewed_until) = cert_until(2032, 3, 4);
    w("tls.crt", &renewed);
    w("tls.key", &renewed_key);
    let text = std::fs::read_to_string(&gw.config).unwrap();
    std::fs::write(&gw.config, text.replace(&mtls, "")).unwrap();
    assert!(gw.app.reload().await, "the reload was refused");
    let metrics = scrape(gw.admin).await;
    assert_eq!(
        expiry(&metrics, &server_labels),
        Some(renewed_until),
        "{metrics}"
    );
    assert_eq!(
        expiry(&metrics, &["kind=\"upstream_client\""]),
        None,
        "{metrics}"
    );
    gw.app.begin_shutdown();
    gw.app.finished().await;
}
