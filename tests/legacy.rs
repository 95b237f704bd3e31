//! In front of legacy apps and hostile clients: idle sockets, trickled bodies, HTTP/1.0
//! upstreams, strict Host, upgrades other than WebSocket, client-sent forwarding headers,
//! malformed bodies and header floods, on the wire.
// A test crate: its helpers (not only #[test] fns, which clippy.toml covers) may unwrap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use http::StatusCode;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Reads until the peer closes (true) or `within` passes (false).
async fn closed_within(tcp: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read).await.is_ok()
}

/// Regression: 10,000 sockets that never sent a byte filled `max_connections` and every new
/// client got 503 for as long as they stayed.
#[tokio::test(flavor = "multi_thread")]
async fn idle_sockets_cannot_hold_the_gateway() {
    let gw = TestGateway::new()
        .server("max_connections = 1000\nidle_timeout = \"1s\"")
        .start()
        .await;
    let mut idle = Vec::new();
    let opening = Instant::now();
    for _ in 0..2000 {
        if let Ok(tcp) = tokio::net::TcpStream::connect(gw.addr).await {
            idle.push(tcp);
        }
    }
    let flooded = Instant::now();
    let probe = || async {
        raw(
            gw.addr,
            b"GET /public/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
            Duration::from_secs(1),
        )
        .await
    };
    // Right now the cap is full: a new client is turned away (unless opening them took longer
    // than idle_timeout on a busy machine: then the first ones are being closed already)...
    let first = probe().await;
    assert!(
        first.starts_with("HTTP/1.1 503")
            || (opening.elapsed() >= Duration::from_secs(1) && first.starts_with("HTTP/1.1 200")),
        "{first}"
    );
    // ...but only until the idle sockets are closed: within idle_timeout + 1 s.
    let served = eventually(Duration::from_secs(2), || async {
        probe().await.starts_with("HTTP/1.1 200")
    })
    .await;
    assert!(
        served,
        "no new client served {:?} after the flood",
        flooded.elapsed()
    );
    // And the idle sockets were closed by the gateway.
    assert!(closed_within(&mut idle[0], Duration::from_secs(1)).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_keep_alive_connections_are_closed_busy_ones_are_not() {
    let gw = TestGateway::new()
        .server("idle_timeout = \"1s\"")
        .start()
        .await;
    // A request slower than the idle timeout is in flight: not idle.
    let (s, _, _) = send(gw.addr, get("/public/slow/1500").body(empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    // After an answered request, a silent keep-alive connection is closed.
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(b"GET /public/x HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(closed_within(&mut tcp, Duration::from_secs(3)).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_http2_connection_is_closed() {
    let gw = TestGateway::new()
        .server("idle_timeout = \"1s\"")
        .start()
        .await;
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(executor(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let ended = tokio::spawn(conn);
    let req = http::Request::builder()
        .uri("http://gw.test/public/h2")
        .body(empty())
        .unwrap();
    assert_eq!(
        sender.send_request(req).await.unwrap().status(),
        StatusCode::OK
    );
    let done = tokio::time::timeout(Duration::from_secs(3), ended).await;
    assert!(done.is_ok(), "the idle HTTP/2 connection stayed open");
}

/// Regression: a body trickled to /auth/login kept its connection with no limit.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_body_is_408() {
    let gw = TestGateway::new()
        .server("body_read_timeout = \"500ms\"")
        .start()
        .await;
    let answer = raw(
        gw.addr,
        b"POST /auth/login HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user",
        Duration::from_secs(3),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\":\"request_timeout\""), "{answer}");
}

/// An app that speaks HTTP/1.0 and ends its body by closing (like `python3 -m http.server`).
async fn http10_upstream() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                let _ = tcp
                    .write_all(b"HTTP/1.0 404 File not found\r\nContent-Type: text/html\r\n\r\nold app body")
                    .await;
            });
        }
    });
    addr
}

/// Regression: an HTTP/1.0 upstream made the gateway answer an HTTP/1.1 client in HTTP/1.0
/// and close the connection.
#[tokio::test(flavor = "multi_thread")]
async fn an_http10_upstream_is_answered_as_http11_keep_alive() {
    let up = http10_upstream().await;
    let fx = Fixture::new();
    let app = start(&fx.write("old.toml", &fx.config(up, HS256, MEMORY, "", ""))).await;
    let tcp = tokio::net::TcpStream::connect(app.public_addr)
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    for i in 0..3 {
        sender
            .ready()
            .await
            .unwrap_or_else(|e| panic!("connection closed before request {i}: {e}"));
        let resp = sender
            .send_request(get("/public/page").body(empty()).unwrap())
            .await
            .unwrap_or_else(|e| panic!("request {i} on the same connection: {e}"));
        assert_eq!(resp.version(), http::Version::HTTP_11);
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert!(resp
            .headers()
            .get("connection")
            .is_none_or(|v| v != "close"));
        use http_body_util::BodyExt;
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"old app body");
    }
}

fn raw_request(host_lines: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\n{host_lines}Connection: close\r\n\r\n").into_bytes()
}

/// Regression: two Host headers (first judged, both forwarded), a trailing dot, userinfo,
/// two ports and a missing Host all got through a host-restricted route.
#[tokio::test(flavor = "multi_thread")]
async fn host_headers_are_checked_as_rfc_9112_says() {
    let gw = TestGateway::new()
        .route("path = \"/secure/**\"\nhost = \"secure.example.com\"\nupstream = \"app\"\nauth = \"required\"\nroles = [\"admin\"]")
        .route("path = \"/secure/**\"\nupstream = \"app\"\nauth = \"public\"")
        .start()
        .await;
    let wait = Duration::from_secs(3);
    for bad in [
        "Host: public.example.com\r\nHost: secure.example.com\r\n",
        "Host: user@secure.example.com\r\n",
        "Host: secure.example.com:80:80\r\n",
        "",
    ] {
        let answer = raw(gw.addr, &raw_request(bad, "/secure/x"), wait).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{bad:?}: {answer}");
        assert!(answer.contains("invalid_request"), "{bad:?}: {answer}");
    }
    // The trailing dot is the same host: the restricted route judges it, and without a
    // token that is 401, not the public fallback.
    let answer = raw(
        gw.addr,
        &raw_request("Host: secure.example.com.\r\n", "/secure/x"),
        wait,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // The upstream sees the host without its dot.
    let answer = raw(
        gw.addr,
        &raw_request("Host: other.example.com.:8080\r\n", "/secure/x"),
        wait,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(
        gw.up.last().headers.get("host").unwrap(),
        "other.example.com:8080"
    );
    // HTTP/1.0 may omit Host.
    let answer = raw(gw.addr, b"GET /public/x HTTP/1.0\r\n\r\n", wait).await;
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
        "{answer}"
    );
}

/// Regression: `Upgrade: h2c` on a public route opened a tunnel through which a smuggled
/// request reached `/admin/secret`.
#[tokio::test(flavor = "multi_thread")]
async fn only_websocket_upgrades_are_forwarded() {
    let gw = TestGateway::new().start().await;
    let answer = raw(
        gw.addr,
        b"GET /public/x HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\nGET /admin/secret HTTP/1.1\r\nHost: gw\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        gw.up.requests().iter().all(|r| !r.uri.contains("admin")),
        "a smuggled request reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn client_forwarding_headers_are_replaced() {
    let gw = TestGateway::new().start().await;
    let req = get("/public/x")
        .header("forwarded", "for=6.6.6.6;proto=https")
        .header("x-real-ip", "6.6.6.6")
        .body(empty())
        .unwrap();
    assert_eq!(send(gw.addr, req).await.0, StatusCode::OK);
    let seen = gw.up.last();
    assert!(seen.headers.get("forwarded").is_none());
    assert_eq!(seen.headers.get("x-real-ip").unwrap(), "127.0.0.1");
}

/// Regression: a malformed chunked body was answered 502 and counted as an upstream error.
#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_chunked_body_is_400() {
    let gw = TestGateway::new().start().await;
    let answer = raw(
        gw.addr,
        b"POST /public/x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("invalid_request"), "{answer}");
    let (_, _, metrics) = send(gw.admin, get("/metrics").body(empty()).unwrap()).await;
    // Present at zero, and still zero: the client's fault is no upstream error.
    let errors: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("authgate_upstream_errors_total{"))
        .collect();
    assert_eq!(errors.len(), 3, "{metrics}");
    assert!(errors.iter().all(|l| l.ends_with(" 0")), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_headers_are_431_as_json() {
    let gw = TestGateway::new().server("max_headers = 20").start().await;
    let mut head = String::from("GET /public/x HTTP/1.1\r\nHost: gw\r\n");
    for i in 0..25 {
        head.push_str(&format!("X-H{i}: v\r\n"));
    }
    head.push_str("\r\n");
    let answer = raw(gw.addr, head.as_bytes(), Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(answer.contains("\"error\":\"too_large\""), "{answer}");
}

/// Apps mounted under a prefix, apps that insist on their own host name, IIS-style paths.
#[tokio::test(flavor = "multi_thread")]
async fn strip_prefix_host_header_and_case_insensitive_routes() {
    let gw = TestGateway::new()
        .route("path = \"/legacy/**\"\nupstream = \"app\"\nauth = \"public\"\nstrip_prefix = \"/legacy\"\nhost_header = \"upstream\"")
        .route("path = \"/intranet/**\"\nupstream = \"app\"\nauth = \"public\"\nhost_header = \"intranet.local:8080\"")
        .route("path = \"/iis/admin/**\"\nupstream = \"app\"\nauth = \"required\"\nroles = [\"admin\"]\ncase_insensitive = true")
        .route("path = \"/iis/**\"\nupstream = \"app\"\nauth = \"public\"\ncase_insensitive = true")
        .start()
        .await;
    for (path, want) in [
        ("/legacy/page?x=1", "/page?x=1"),
        ("/legacy", "/"),
        ("/legacy/", "/"),
        // Issue 18: `;params` on the prefix's segment used to leave `/` upstream.
        ("/legacy;v=1/page?x=1", "/page?x=1"),
    ] {
        let (s, _, body) = send(gw.addr, get(path).body(empty()).unwrap()).await;
        assert_eq!(s, StatusCode::OK, "{path}: {body}");
        let seen = gw.up.last();
        assert_eq!(seen.uri, want, "{path}");
        assert_eq!(
            seen.headers.get("host").unwrap(),
            gw.up.addr.to_string().as_str()
        );
        assert_eq!(seen.headers.get("x-forwarded-host").unwrap(), "gw.test");
    }
    let (s, _, _) = send(gw.addr, get("/intranet/x").body(empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        gw.up.last().headers.get("host").unwrap(),
        "intranet.local:8080"
    );
    let user = login_pair(gw.addr, "alice", "alice-password").await;
    for path in [
        "/iis/admin/x",
        "/IIS/ADMIN/x",
        "/iis/admin./x",
        "/iis/Admin%20/x",
    ] {
        let (s, _, body) = get_with_token(gw.addr, path, &user.access).await;
        assert_eq!(
            s,
            StatusCode::FORBIDDEN,
            "{path} slipped past the admin rule: {body}"
        );
    }
    let (s, _, _) = send(gw.addr, get("/IIS/public").body(empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
}

/// Regression: `/admin/**` limited to GET and POST with role admin let DELETE, PUT, PATCH
/// fall through to `/**` and a plain user reached the admin app. Such a table does not load.
#[tokio::test(flavor = "multi_thread")]
async fn a_route_table_that_leaks_methods_does_not_load() {
    let fx = Fixture::new();
    let up: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let leaky = "[[routes]]\npath = \"/ops/**\"\nmethods = [\"GET\", \"POST\"]\nupstream = \"app\"\nauth = \"required\"\nroles = [\"admin\"]\n";
    let path = fx.write("leaky.toml", &fx.config(up, HS256, MEMORY, leaky, ""));
    let err = authgate::Config::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("routes[0]") && err.contains("routes[3]") && err.contains("allow_fallthrough"),
        "{err}"
    );
    // Saying so on the later route is allowed (and then HEAD still follows GET).
    let text = fx.config(up, HS256, MEMORY, leaky, "").replace(
        "path = \"/**\"\nupstream = \"app\"\nauth = \"required\"",
        "path = \"/**\"\nupstream = \"app\"\nauth = \"required\"\nallow_fallthrough = true",
    );
    let ok = fx.write("ok.toml", &text);
    let config = authgate::Config::load(&ok).unwrap_or_else(|e| panic!("{e}"));
    let head = config
        .routes
        .lookup(&http::Method::HEAD, None, "/ops/x")
        .unwrap();
    assert_eq!(head.index, 0);
}

/// W3C trace context: a client's valid `traceparent` (and `tracestate`) reaches the upstream
/// as it is; with an invalid one the upstream gets a new trace and no `tracestate`; without
/// one (no spans exported here) it gets no trace context at all; a higher version goes on as
/// 00 with the caller's ids and sampled bit.
#[tokio::test(flavor = "multi_thread")]
async fn traceparent_is_propagated_or_started() {
    let gw = TestGateway::new().start().await;
    let mine = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let req = get("/public/x")
        .header("traceparent", mine)
        .header("tracestate", "vendor=abc")
        .body(empty())
        .unwrap();
    assert_eq!(send(gw.addr, req).await.0, StatusCode::OK);
    assert_eq!(gw.up.last().headers.get("traceparent").unwrap(), mine);
    assert_eq!(
        gw.up.last().headers.get("tracestate").unwrap(),
        "vendor=abc"
    );
    // None sent, and no spans exported: nobody would read a trace the gateway started, so it
    // starts none; a lone tracestate describes nothing and goes too.
    let b = get("/public/x").header("tracestate", "vendor=abc");
    assert_eq!(
        send(gw.addr, b.body(empty()).unwrap()).await.0,
        StatusCode::OK
    );
    assert!(gw.up.last().headers.get("traceparent").is_none());
    assert!(gw.up.last().headers.get("tracestate").is_none());
    let mut seen = Vec::new();
    for bad in ["00-zz-yy-01", "garbage"] {
        let b = get("/public/x")
            .header("tracestate", "vendor=abc")
            .header("traceparent", bad);
        assert_eq!(
            send(gw.addr, b.body(empty()).unwrap()).await.0,
            StatusCode::OK
        );
        let t = gw.up.last().headers.get("traceparent").unwrap().clone();
        let parts: Vec<&str> = t.to_str().unwrap().split('-').collect();
        assert_eq!(parts.len(), 4, "{t:?}");
        assert_eq!(
            (parts[0], parts[1].len(), parts[2].len(), parts[3]),
            ("00", 32, 16, "01")
        );
        // A new trace: the client's tracestate described another one (or none).
        assert!(gw.up.last().headers.get("tracestate").is_none(), "{t:?}");
        seen.push(t);
    }
    assert_ne!(seen[0], seen[1]);
    // A newer version: the caller's trace and its decision not to sample go on, as 00.
    let req = get("/public/x")
        .header(
            "traceparent",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-future",
        )
        .header("tracestate", "vendor=abc")
        .body(empty())
        .unwrap();
    assert_eq!(send(gw.addr, req).await.0, StatusCode::OK);
    let up = gw.up.last();
    assert_eq!(
        up.headers.get("traceparent").unwrap(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
    );
    assert_eq!(up.headers.get("tracestate").unwrap(), "vendor=abc");
}
