//! Slow clients (§10): request bodies are read before an upstream connection is taken, a
//! stalled body is 408 and the upstream never receives a request that looks complete, answers
//! of known length are read ahead of a slow reader, all within `server.max_buffered`.
// A test crate: its helpers (not only #[test] fns, which clippy.toml covers) may unwrap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use http::StatusCode;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `head` and `body_part` of a request, then nothing; returns what the gateway answered.
async fn stall(addr: std::net::SocketAddr, head: &str, body_part: &[u8]) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(body_part).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn gateway(upstream_extra: &str) -> TestGateway {
    TestGateway::new()
        .server("body_read_timeout = \"1s\"")
        .upstream_extra(upstream_extra)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_body_is_408_and_never_reaches_the_upstream() {
    let gw = gateway("").start().await;
    let head = "POST /public/form HTTP/1.1\r\nhost: gw.test\r\ncontent-length: 100\r\n\r\n";
    let answer = stall(gw.addr, head, b"only forty bytes of a hundred..........").await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        gw.up.requests().is_empty(),
        "the upstream saw a partial request"
    );
    // A body that arrives whole, however slowly (within the gap), goes through whole.
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(b"POST /public/form HTTP/1.1\r\nhost: gw.test\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    for piece in ["5\r\nhello\r\n", "6\r\n world\r\n", "0\r\n\r\n"] {
        tokio::time::sleep(Duration::from_millis(300)).await;
        tcp.write_all(piece.as_bytes()).await.unwrap();
    }
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await.unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
    let seen = gw.up.last();
    assert_eq!(seen.body_len, 11);
    assert_eq!(
        seen.headers["content-length"], "11",
        "a buffered body goes with its length"
    );
}

/// Beyond `buffer_request_body` a body streams; a stall then cuts the upstream's request short
/// (it never looks complete) and the client gets 408.
#[tokio::test(flavor = "multi_thread")]
async fn a_stall_past_the_buffer_leaves_the_upstream_an_incomplete_request() {
    let gw = gateway("buffer_request_body = \"1KiB\"").start().await;
    let head = "POST /public/upload HTTP/1.1\r\nhost: gw.test\r\ncontent-length: 10000\r\n\r\n";
    let answer = stall(gw.addr, head, &[b'a'; 3000]).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    for seen in gw.up.requests() {
        assert!(
            seen.body_len < 10_000,
            "the upstream got a whole-looking body"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_are_read_ahead_within_the_budget_and_stream_beyond_it() {
    let gw = TestGateway::new()
        .server("max_buffered = \"64KiB\"")
        .start()
        .await;
    // 40 kB fits the 64 KiB budget (read ahead); 200 and 500 kB do not (streamed, counted).
    for size in [40_000usize, 200_000, 500_000] {
        let (s, _, body) = send(
            gw.addr,
            get(&format!("/public/big/{size}")).body(empty()).unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(body.len(), size, "an answer of {size} bytes came back cut");
    }
    let (_, _, metrics) = send(gw.admin, get("/metrics").body(empty()).unwrap()).await;
    let overflows: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("authgate_buffer_overflows_total "))
        .map_or(0, |n| n.trim().parse().unwrap());
    assert_eq!(overflows, 2, "bodies over the budget were not counted");
}

/// Regression (operations): hyper's header timeout (10 s) also ran between keep-alive
/// requests, so a connection idle for 12 s was closed without a word while `idle_timeout`
/// (60 s) promised to keep it. Between requests only `idle_timeout` applies;
/// `header_read_timeout` counts from a request's first byte.
#[tokio::test(flavor = "multi_thread")]
async fn keep_alive_lives_to_idle_timeout_and_a_slow_head_is_cut() {
    let gw = TestGateway::new()
        .server("header_read_timeout = \"1s\"\nidle_timeout = \"5s\"")
        .start()
        .await;
    let req = b"GET /public/a HTTP/1.1\r\nhost: gw.test\r\n\r\n";
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    tcp.write_all(req).await.unwrap();
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // Idle for longer than header_read_timeout, shorter than idle_timeout: still open.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    tcp.write_all(req).await.unwrap();
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "an idle keep-alive connection was closed before idle_timeout"
    );
    // A head begun and not finished within header_read_timeout: closed.
    let mut slow = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    slow.write_all(b"GET /public/a HTTP/1.1\r\nho")
        .await
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(4), slow.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a trickling head was not cut: {closed:?}"
    );
}

/// Reads from `tcp` until `want` has appeared `times` times (or 10 s pass); returns it all.
async fn read_until(tcp: &mut tokio::net::TcpStream, want: &str, times: usize) -> String {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 8192];
    let read = async {
        while String::from_utf8_lossy(&got).matches(want).count() < times {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("no complete answer within 10 s");
    String::from_utf8_lossy(&got).into_owned()
}

async fn idle_connections(admin: std::net::SocketAddr) -> u64 {
    let (_, _, metrics) = send(admin, get("/metrics").body(empty()).unwrap()).await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("authgate_idle_connections "))
        .map_or(u64::MAX, |n| n.trim().parse().unwrap())
}

/// Memory per idle connection (issue 24): a keep-alive connection quiet for a tick is parked
/// (hyper's buffers freed, counted in `authgate_idle_connections`), and whatever comes next
/// is served on the same socket with no byte lost: a head longer than the wake-up read and
/// split in two writes, then a request with a body pipelined with another.
#[tokio::test(flavor = "multi_thread")]
async fn idle_keep_alive_connections_are_parked_and_resume_intact() {
    let gw = TestGateway::new().start().await;
    let parked = |n: u64| {
        let admin = gw.admin;
        async move {
            eventually(Duration::from_secs(5), || async {
                idle_connections(admin).await == n
            })
            .await
        }
    };
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(b"GET /public/a HTTP/1.1\r\nhost: gw.test\r\n\r\n")
        .await
        .unwrap();
    assert!(read_until(&mut tcp, "upstream ok 0", 1)
        .await
        .starts_with("HTTP/1.1 200"));
    assert!(
        parked(1).await,
        "a quiet keep-alive connection was not parked"
    );

    let head = format!(
        "GET /public/b HTTP/1.1\r\nhost: gw.test\r\nx-filler: {}\r\n\r\n",
        "f".repeat(300)
    );
    tcp.write_all(&head.as_bytes()[..100]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    tcp.write_all(&head.as_bytes()[100..]).await.unwrap();
    assert!(read_until(&mut tcp, "upstream ok 0", 1)
        .await
        .starts_with("HTTP/1.1 200"));
    assert!(parked(1).await, "a resumed connection was not parked again");

    tcp.write_all(
        b"POST /public/c HTTP/1.1\r\nhost: gw.test\r\ncontent-length: 5\r\n\r\nhello\
          GET /public/d HTTP/1.1\r\nhost: gw.test\r\n\r\n",
    )
    .await
    .unwrap();
    let both = read_until(&mut tcp, "HTTP/1.1 200", 2).await;
    let both = if both.contains("upstream ok 0") {
        both
    } else {
        both + &read_until(&mut tcp, "upstream ok 0", 1).await
    };
    assert!(both.contains("upstream ok 5"), "{both}");
    let seen: Vec<_> = gw
        .up
        .requests()
        .into_iter()
        .map(|s| (s.uri, s.body_len))
        .collect();
    let paths: Vec<_> = seen
        .iter()
        .map(|(u, n)| (u.rsplit('/').next().unwrap_or(""), *n))
        .collect();
    assert_eq!(paths, [("a", 0), ("b", 0), ("c", 5), ("d", 0)]);
    drop(tcp);
    assert!(parked(0).await, "a closed connection still counted as idle");
}
