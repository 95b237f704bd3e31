//! The gateway core against real sockets: forwarding, header rewrite, errors, limits,
//! smuggling attempts, WebSocket, TLS with HTTP/2.
// A test crate: its helpers (not only #[test] fns, which clippy.toml covers) may unwrap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full, StreamBody};
use std::time::Duration;
use support::*;

async fn setup(extra_routes: &str, server: &str) -> (Fixture, Upstream, authgate::App) {
    let up = Upstream::start().await;
    let fx = Fixture::new();
    let path = fx.write(
        "authgate.toml",
        &fx.config(up.addr, HS256, MEMORY, extra_routes, server),
    );
    let app = start(&path).await;
    (fx, up, app)
}

#[tokio::test(flavor = "multi_thread")]
async fn public_route_forwards_normalized_path_and_rewrites_headers() {
    let (_fx, up, app) = setup("", "").await;
    let req = get("/public/a/../b//c;jsessionid=9?q=1")
        .header("x-auth-user", "mallory")
        .header("X_Auth_Roles", "admin")
        .header("connection", "x-drop-me")
        .header("x-drop-me", "1")
        .header("x-forwarded-for", "203.0.113.9")
        .header("authorization", "Bearer whatever")
        .header("cookie", "authgate_access=secret; theirs=1")
        .header("x-request-id", "req-123")
        .body(empty())
        .unwrap();
    let (status, headers, body) = send(app.public_addr, req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers.get("x-request-id").unwrap(), "req-123");
    let seen = up.last();
    assert_eq!(seen.uri, "/public/b/c;jsessionid=9?q=1");
    let h = &seen.headers;
    assert!(
        h.get("x-auth-user").is_none(),
        "spoofed identity reached the upstream"
    );
    assert!(
        h.get("x_auth_roles").is_none(),
        "underscore variant reached the upstream"
    );
    assert!(
        h.get("x-drop-me").is_none(),
        "header named in Connection reached the upstream"
    );
    assert!(h.get("authorization").is_none());
    assert_eq!(h.get("cookie").unwrap(), "theirs=1");
    assert_eq!(h.get("x-forwarded-for").unwrap(), "203.0.113.9, 127.0.0.1");
    assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
    assert_eq!(h.get("x-forwarded-host").unwrap(), "gw.test");
    assert_eq!(h.get("x-request-id").unwrap(), "req-123");
    assert_eq!(h.get("host").unwrap(), "gw.test");

    // An already-normal target is forwarded byte for byte, query included; absolute-form
    // targets reach the upstream in origin form.
    for (sent, expected) in [
        (
            "/public/plain/x.json?a=1&b=%2F",
            "/public/plain/x.json?a=1&b=%2F",
        ),
        ("/public/empty?", "/public/empty?"),
        ("http://gw.test/public/abs?z=9", "/public/abs?z=9"),
    ] {
        let raw_req = format!("GET {sent} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n");
        let answer = raw(app.public_addr, raw_req.as_bytes(), Duration::from_secs(3)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{sent}: {answer}");
        assert_eq!(up.last().uri, expected, "{sent}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn request_id_is_generated_when_absent() {
    let (_fx, up, app) = setup("", "").await;
    let (status, headers, _) = send(app.public_addr, get("/public/x").body(empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let id = headers
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(id.len() >= 16);
    assert_eq!(
        up.last()
            .headers
            .get("x-request-id")
            .unwrap()
            .to_str()
            .unwrap(),
        id
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_paths_get_400_and_never_reach_the_upstream() {
    let (_fx, up, app) = setup("", "").await;
    for path in [
        "/public/a%2Fb",
        "/public/a%5Cb",
        "/public/%00",
        "/public/%zz",
        "/public/../../etc/passwd",
        "/..;/admin",
        "/public/..;/admin/x",
        "/public/;/../admin/x",
        "/public/;x=1/../admin/x",
        "/public/a/;/../../admin/x",
    ] {
        let (status, _, body) = send(app.public_addr, get(path).body(empty()).unwrap()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(json(&body)["error"], "invalid_request", "{path}");
    }
    assert!(up.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn traversal_into_a_protected_route_is_judged_after_normalization() {
    let (_fx, up, app) = setup("", "").await;
    for path in [
        "/public/../admin/x",
        "/public/%2e%2e/admin/x",
        "/public/.%2E/admin/x",
        "/public;x=1/../admin/x",
    ] {
        let (status, _, body) = send(app.public_addr, get(path).body(empty()).unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
    }
    assert!(up.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn no_route_is_404_and_protected_without_token_is_401() {
    let (fx, up, _app) = setup("", "").await;
    // A table without a catch-all, to see the 404.
    let text = fx
        .config(up.addr, HS256, MEMORY, "", "")
        .replace("path = \"/**\"", "path = \"/api/**\"");
    let app = start(&fx.write("b.toml", &text)).await;
    let (status, _, body) = send(app.public_addr, get("/nowhere").body(empty()).unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(json(&body)["error"], "not_found");
    let (status, headers, _) = send(app.public_addr, get("/api/x").body(empty()).unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        headers.get("www-authenticate").unwrap(),
        "Bearer realm=\"authgate\""
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn methods_and_host_select_routes() {
    let extra = r#"
[[routes]]
path = "/only-post"
methods = ["POST"]
upstream = "app"
auth = "public"

[[routes]]
path = "/vhost/**"
host = "special.test"
upstream = "app"
auth = "public"
"#;
    let (_fx, _up, app) = setup(extra, "").await;
    let (s, _, _) = send(app.public_addr, post("/only-post").body(empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = send(app.public_addr, get("/only-post").body(empty()).unwrap()).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "GET falls through to the protected catch-all"
    );
    let req = http::Request::builder()
        .uri("/vhost/x")
        .header("host", "SPECIAL.test:8443")
        .body(empty())
        .unwrap();
    let (s, _, _) = send(app.public_addr, req).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_down_is_502_and_slow_is_504() {
    let (fx, up, _app) = setup("", "").await;
    let (status, _, body) = send(
        _app.public_addr,
        get("/public/slow/3000").body(empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(json(&body)["error"], "gateway_timeout");
    let (_, _, metrics) = send(_app.admin_addr, get("/metrics").body(empty()).unwrap()).await;
    assert!(
        metrics.contains("authgate_upstream_errors_total{upstream=\"app\",kind=\"timeout\"} 1"),
        "{metrics}"
    );
    let dead: std::net::SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let app = start(&fx.write("dead.toml", &fx.config(dead, HS256, MEMORY, "", ""))).await;
    let (status, _, body) = send(app.public_addr, get("/public/x").body(empty()).unwrap()).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(json(&body)["error"], "bad_gateway");
    let (_, _, metrics) = send(app.admin_addr, get("/metrics").body(empty()).unwrap()).await;
    assert!(
        metrics.contains("authgate_upstream_errors_total{upstream=\"app\",kind=\"connect\"} 1"),
        "{metrics}"
    );
    drop(up);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_headers_get_431() {
    let (_fx, up, app) = setup("", "max_header_bytes = 4096").await;
    let req = get("/public/x")
        .header("x-big", "a".repeat(6000))
        .body(empty())
        .unwrap();
    let (status, _, body) = send(app.public_addr, req).await;
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(json(&body)["error"], "too_large");
    // Far past the limit, hyper itself refuses the head before it is parsed.
    let huge = format!(
        "GET /public/x HTTP/1.1\r\nHost: gw\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let answer = raw(app.public_addr, huge.as_bytes(), Duration::from_secs(3)).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    assert!(up.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_headers_are_cut_off() {
    let (_fx, up, app) = setup("", "header_read_timeout = \"1s\"").await;
    let started = std::time::Instant::now();
    // Half a request head, then silence: the gateway must hang up on its own.
    let answer = raw(
        app.public_addr,
        b"GET /public/x HTTP/1.1\r\nHost: gw\r\n",
        Duration::from_secs(8),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(7),
        "connection was held open"
    );
    assert!(!answer.contains("200"), "{answer}");
    assert!(up.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn smuggling_attempts_never_reach_the_upstream_as_two_requests() {
    let (_fx, up, app) = setup("", "").await;
    let attempts: [&[u8]; 5] = [
        // CL.TE
        b"POST /public/a HTTP/1.1\r\nHost: gw\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /public/smuggled HTTP/1.1\r\nHost: gw\r\n\r\n",
        // duplicate Content-Length
        b"POST /public/a HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nAAAAGET /public/smuggled HTTP/1.1\r\nHost: gw\r\n\r\n",
        // unknown transfer coding
        b"POST /public/a HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\nGET /public/smuggled HTTP/1.1\r\nHost: gw\r\n\r\n",
        // obs-fold
        b"POST /public/a HTTP/1.1\r\nHost: gw\r\nX-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\nGET /public/smuggled HTTP/1.1\r\nHost: gw\r\n\r\n",
        // comma-joined Content-Length
        b"POST /public/a HTTP/1.1\r\nHost: gw\r\nContent-Length: 4, 40\r\n\r\nAAAAGET /public/smuggled HTTP/1.1\r\nHost: gw\r\n\r\n",
    ];
    for attempt in attempts {
        let before = up.requests().len();
        let answer = raw(app.public_addr, attempt, Duration::from_millis(1500)).await;
        let shown = String::from_utf8_lossy(attempt);
        let after = up.requests().len();
        // Either refused outright, or (CL+TE, which RFC 9112 resolves as chunked and then
        // closes the connection) exactly one request forwarded and nothing after it.
        assert!(after - before <= 1, "{shown}\n=> two requests forwarded");
        assert_eq!(
            answer.matches("HTTP/1.1").count(),
            1,
            "{shown}\n=> {answer}"
        );
        if after == before {
            assert!(answer.starts_with("HTTP/1.1 400"), "{shown}\n=> {answer}");
        }
    }
    let smuggled = up
        .requests()
        .iter()
        .filter(|s| s.uri.contains("smuggled"))
        .count();
    assert_eq!(
        smuggled,
        0,
        "a smuggled request reached the upstream: {:?}",
        up.requests()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn large_upload_streams_through() {
    let (_fx, up, app) = setup("", "").await;
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 64;
    let stream = futures_util::stream::iter((0..CHUNKS).map(|_| {
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(vec![7u8; CHUNK])))
    }));
    let body = StreamBody::new(stream);
    let tcp = tokio::net::TcpStream::connect(app.public_addr)
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = post("/public/upload").body(body).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        String::from_utf8_lossy(&text),
        format!("upstream ok {}", CHUNK * CHUNKS)
    );
    assert_eq!(up.last().body_len, CHUNK * CHUNKS);
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_upgrade_passes_through() {
    use futures_util::{SinkExt, StreamExt};
    let ws_addr = websocket_echo().await;
    let fx = Fixture::new();
    let cfg = fx.config(ws_addr, HS256, MEMORY, "", "");
    let app = start(&fx.write("ws.toml", &cfg)).await;
    let url = format!("ws://{}/public/ws", app.public_addr);
    let (mut ws, resp) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws.send(tokio_tungstenite::tungstenite::Message::text("hello"))
        .await
        .unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "hello");
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_is_refused_where_the_route_disallows_it() {
    let extra = "[[routes]]\npath = \"/nows/**\"\nupstream = \"app\"\nauth = \"public\"\nwebsocket = false\n";
    let (_fx, up, app) = setup(extra, "").await;
    let req = get("/nows/x")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(empty())
        .unwrap();
    let (status, _, _) = send(app.public_addr, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(up.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_endpoints_answer_on_their_own_listener() {
    let (_fx, _up, app) = setup("", "").await;
    let (s, _, _) = send(app.admin_addr, get("/healthz").body(empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = send(app.admin_addr, get("/readyz").body(empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    send(app.public_addr, get("/public/m").body(empty()).unwrap()).await;
    let (s, _, metrics) = send(app.admin_addr, get("/metrics").body(empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        metrics.contains("authgate_requests_total{route=\"/public/**\",status=\"200\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("authgate_request_duration_seconds_bucket"));
    assert!(metrics.contains("authgate_open_connections"));
    // The admin paths do not exist on the public listener.
    let (s, _, _) = send(app.public_addr, get("/metrics").body(empty()).unwrap()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn drain_lets_an_in_flight_request_finish_and_readiness_drops() {
    let (_fx, up, app) = setup("", "").await;
    let addr = app.public_addr;
    let admin = app.admin_addr;
    let slow =
        tokio::spawn(
            async move { send(addr, get("/public/slow/1000").body(empty()).unwrap()).await },
        );
    up.wait_for_requests(1).await;
    app.begin_shutdown();
    // Readiness is an explicit 503 while the public listener drains.
    let ready = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(admin).await.ok()?;
        tcp.write_all(b"GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut out = String::new();
        tcp.read_to_string(&mut out).await.ok()?;
        Some(out)
    };
    let ready = tokio::time::timeout(Duration::from_secs(2), ready)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    assert!(
        ready.starts_with("HTTP/1.1 503"),
        "readiness while draining: {ready}"
    );
    let (status, _, body) = slow.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    tokio::time::timeout(Duration::from_secs(5), app.finished())
        .await
        .expect("drain finished");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after drain"
    );
}

mod tls {
    use super::*;
    use rustls_pki_types::{CertificateDer, ServerName};
    use std::sync::Arc;

    fn write_cert(fx: &Fixture, name: &str) -> CertificateDer<'static> {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        fx.write(&format!("{name}.crt"), &ck.cert.pem());
        fx.write(&format!("{name}.key"), &ck.signing_key.serialize_pem());
        ck.cert.der().clone()
    }

    async fn connect(
        addr: std::net::SocketAddr,
        root: &CertificateDer<'static>,
        alpn: &[&[u8]],
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    }

    /// Regression: a client that completed the TLS handshake and then sent nothing held its
    /// connection (and a slot under max_connections) forever.
    #[tokio::test(flavor = "multi_thread")]
    async fn an_idle_connection_after_the_handshake_is_closed() {
        use tokio::io::AsyncReadExt;
        let up = Upstream::start().await;
        let fx = Fixture::new();
        let root = write_cert(&fx, "tls");
        let server = "idle_timeout = \"1s\"\n\n[server.tls]\ncert = \"tls.crt\"\nkey = \"tls.key\"";
        let cfg = fx
            .config(up.addr, HS256, MEMORY, "", "")
            .replace("[log]", &format!("{server}\n\n[log]"));
        let app = start(&fx.write("tls.toml", &cfg)).await;
        let mut stream = connect(app.public_addr, &root, &[b"http/1.1"]).await;
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "still open after the idle timeout: {closed:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn h2_over_tls_via_alpn_and_reload() {
        let up = Upstream::start().await;
        let fx = Fixture::new();
        let first = write_cert(&fx, "tls");
        let server = "[server.tls]\ncert = \"tls.crt\"\nkey = \"tls.key\"";
        let cfg = fx
            .config(up.addr, HS256, MEMORY, "", "")
            .replace("[log]", &format!("{server}\n\n[log]"));
        let app = start(&fx.write("tls.toml", &cfg)).await;

        let stream = connect(app.public_addr, &first, &[b"h2"]).await;
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(executor(), hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = http::Request::builder()
            .uri("https://localhost/public/h2")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let seen = up.last();
        assert_eq!(seen.headers.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(seen.headers.get("host").unwrap(), "localhost");

        // A broken new certificate is refused and the old one stays in service.
        fx.write("tls.crt", "not a certificate");
        assert!(!app.reload().await, "a broken certificate was accepted");
        let _still = connect(app.public_addr, &first, &[b"http/1.1"]).await;
        // A valid new one is served to new connections.
        let second = write_cert(&fx, "tls");
        assert!(app.reload().await);
        let _fresh = connect(app.public_addr, &second, &[b"http/1.1"]).await;
    }

    #[test]
    fn mismatched_key_is_a_config_error() {
        let fx = Fixture::new();
        let a = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        fx.write("a.crt", &a.cert.pem());
        fx.write("b.key", &b.signing_key.serialize_pem());
        let up: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
        let cfg = fx.config(up, HS256, MEMORY, "", "").replace(
            "[log]",
            "[server.tls]\ncert = \"a.crt\"\nkey = \"b.key\"\n\n[log]",
        );
        let err = authgate::Config::load(&fx.write("m.toml", &cfg))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("server.tls") && err.contains("does not belong"),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn over_the_connection_cap_clients_get_503() {
    let (_fx, _up, app) = setup("", "max_connections = 1").await;
    // One keep-alive connection takes the only slot; its answered request proves it was
    // accepted (no clock involved).
    let tcp = tokio::net::TcpStream::connect(app.public_addr)
        .await
        .unwrap();
    let (mut held, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let first = held
        .send_request(get("/public/x").body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let answer = raw(
        app.public_addr,
        b"GET /public/x HTTP/1.1\r\nHost: gw\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"error\":\"unavailable\""), "{answer}");
}
