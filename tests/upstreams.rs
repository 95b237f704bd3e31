//! Upstreams as legacy estates run them: HTTPS with a private CA, mutual TLS, and several
//! hosts sharing the load with a dead one ejected.
// A test crate: its helpers (not only #[test] fns, which clippy.toml covers) may unwrap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use std::net::SocketAddr;
use std::sync::Arc;
use support::*;

/// A private CA and certificates it signs, as PEM.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// (certificate PEM, key PEM) for these names.
    fn issue(&self, names: &[&str]) -> (String, String) {
        let params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// An HTTPS upstream on 127.0.0.1:0 answering "tls ok"; with `client_ca`, it demands a client
/// certificate signed by that CA.
async fn https_upstream(ca: &Ca, client_ca: Option<&Ca>) -> SocketAddr {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, key) = ca.issue(&["localhost", "127.0.0.1"]);
    let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(c) => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(c.pem.as_bytes()).unwrap())
                .unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let cfg = Arc::new(builder.with_single_cert(chain, key).unwrap());
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(
                        "tls ok",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

fn upstream_config(fx: &Fixture, upstream_table: &str) -> std::path::PathBuf {
    let unused: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let text = fx.config(unused, HS256, MEMORY, "", "").replace(
        &format!("[[upstreams]]\nname = \"app\"\nurl = \"http://{unused}\""),
        &format!("[[upstreams]]\nname = \"app\"\n{upstream_table}"),
    );
    fx.write("up.toml", &text)
}

#[tokio::test(flavor = "multi_thread")]
async fn https_upstream_with_a_private_ca() {
    let ca = Ca::new();
    let up = https_upstream(&ca, None).await;
    let fx = Fixture::new();
    fx.write("ca.pem", &ca.pem);
    let cfg = upstream_config(
        &fx,
        &format!(
            "url = \"https://localhost:{}\"\nca_file = \"ca.pem\"",
            up.port()
        ),
    );
    let app = start(&cfg).await;
    let (s, _, body) = send(app.public_addr, get("/public/x").body(empty()).unwrap()).await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "tls ok"));

    // Without the CA (system roots only) the certificate is not trusted: 502, never plain text.
    let fx2 = Fixture::new();
    let cfg = upstream_config(&fx2, &format!("url = \"https://localhost:{}\"", up.port()));
    let app = start(&cfg).await;
    let (s, _, body) = send(app.public_addr, get("/public/x").body(empty()).unwrap()).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{body}");

    // sni names the host to verify when the URL is an address.
    let fx3 = Fixture::new();
    fx3.write("ca.pem", &ca.pem);
    let cfg = upstream_config(
        &fx3,
        &format!(
            "url = \"https://127.0.0.2:{}\"\nca_file = \"ca.pem\"\nsni = \"localhost\"",
            up.port()
        ),
    );
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("127.0.0.2", "127.0.0.1");
    let app = start(&fx3.write("up.toml", &text)).await;
    let (s, _, _) = send(app.public_addr, get("/public/x").body(empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_to_the_upstream() {
    let ca = Ca::new();
    let clients = Ca::new();
    let up = https_upstream(&ca, Some(&clients)).await;
    let fx = Fixture::new();
    fx.write("ca.pem", &ca.pem);
    let (cert, key) = clients.issue(&["authgate"]);
    fx.write("client.crt", &cert);
    fx.write("client.key", &key);
    let base = format!(
        "url = \"https://localhost:{}\"\nca_file = \"ca.pem\"",
        up.port()
    );
    let with_cert = upstream_config(
        &fx,
        &format!("{base}\nclient_cert = \"client.crt\"\nclient_key = \"client.key\""),
    );
    let app = start(&with_cert).await;
    let (s, _, body) = send(app.public_addr, get("/public/x").body(empty()).unwrap()).await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "tls ok"));

    let fx2 = Fixture::new();
    fx2.write("ca.pem", &ca.pem);
    let app = start(&upstream_config(&fx2, &base)).await;
    let (s, _, _) = send(app.public_addr, get("/public/x").body(empty()).unwrap()).await;
    assert_eq!(
        s,
        StatusCode::BAD_GATEWAY,
        "the upstream demanded a client certificate"
    );

    // Half a client identity is a config error.
    let fx3 = Fixture::new();
    fx3.write("ca.pem", &ca.pem);
    fx3.write("client.crt", &cert);
    let half = upstream_config(&fx3, &format!("{base}\nclient_cert = \"client.crt\""));
    let err = authgate::Config::load(&half).unwrap_err().to_string();
    assert!(err.contains("client_key"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn several_hosts_share_the_load_and_a_dead_one_is_ejected() {
    let a = Upstream::start().await;
    let b = Upstream::start().await;
    let dead: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let fx = Fixture::new();
    let cfg = upstream_config(
        &fx,
        &format!(
            "urls = [\"http://{}\", \"http://{}\", \"http://{dead}\"]\neject_after = 2\neject_for = \"1m\"",
            a.addr, b.addr
        ),
    );
    let app = start(&cfg).await;
    for i in 0..30 {
        let (s, _, body) = send(app.public_addr, get("/public/x").body(empty()).unwrap()).await;
        assert_eq!(s, StatusCode::OK, "request {i}: {body}");
    }
    let (na, nb) = (a.requests().len(), b.requests().len());
    assert_eq!(na + nb, 30);
    assert!(na >= 10 && nb >= 10, "load not shared: {na} / {nb}");
    let (_, _, metrics) = send(app.admin_addr, get("/metrics").body(empty()).unwrap()).await;
    assert!(
        metrics.contains("authgate_upstream_host_ejections_total{upstream=\"app\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn least_requests_prefers_the_idle_host() {
    let a = Upstream::start().await;
    let b = Upstream::start().await;
    let fx = Fixture::new();
    let cfg = upstream_config(
        &fx,
        &format!(
            "urls = [\"http://{}\", \"http://{}\"]\nbalance = \"least_requests\"",
            a.addr, b.addr
        ),
    );
    let app = start(&cfg).await;
    // One slow request holds a host; the next ten go to the other one.
    let addr = app.public_addr;
    let slow =
        tokio::spawn(
            async move { send(addr, get("/public/slow/1500").body(empty()).unwrap()).await },
        );
    eventually(std::time::Duration::from_secs(5), || async {
        a.requests().len() + b.requests().len() == 1
    })
    .await;
    let busy_is_a = a.requests().len() == 1;
    for _ in 0..10 {
        let (s, _, _) = send(app.public_addr, get("/public/x").body(empty()).unwrap()).await;
        assert_eq!(s, StatusCode::OK);
    }
    let (on_busy, on_idle) = if busy_is_a {
        (a.requests().len(), b.requests().len())
    } else {
        (b.requests().len(), a.requests().len())
    };
    assert_eq!((on_busy, on_idle), (1, 10));
    assert_eq!(slow.await.unwrap().0, StatusCode::OK);
}
