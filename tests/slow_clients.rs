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
