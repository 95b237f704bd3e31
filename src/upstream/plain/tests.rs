//! The plain exchange against a real TCP upstream on 127.0.0.1:0 that answers from a script:
//! every framing, in pieces, on one kept connection; retries; connections closed, dropped or
//! left with bytes unread.

use super::*;
use crate::body::Body;
use crate::upstream::pool::Pool;
use crate::upstream::Overlay;
use http::{HeaderMap, Method, Request};
use http_body_util::BodyExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the scripted upstream does on a connection, in turn.
enum Act {
    /// Reads a request, then writes these pieces (a pause between two).
    Answer(Vec<Vec<u8>>),
    /// Reads a request and closes without a word.
    Hangup,
    /// Closes at once.
    Close,
}

fn answer(pieces: &[&str]) -> Act {
    Act::Answer(pieces.iter().map(|p| p.as_bytes().to_vec()).collect())
}

type Seen = Arc<Mutex<Vec<(usize, String)>>>;

/// Reads one request (head, and a body of its Content-Length); None at the close.
async fn read_request(tcp: &mut tokio::net::TcpStream) -> Option<String> {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        if tcp.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        got.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&got).to_lowercase();
    let len = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    tcp.read_exact(&mut body).await.ok()?;
    got.extend_from_slice(&body);
    Some(String::from_utf8_lossy(&got).into_owned())
}

/// The scripted upstream: connection k follows `script[k]`; after its script a connection
/// stays open, and any request that still comes is recorded and left unanswered. Every
/// request is recorded with its connection's number.
async fn upstream(script: Vec<Vec<Act>>) -> (Arc<Pool>, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        for (k, acts) in script.into_iter().enumerate() {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let record = record.clone();
            tokio::spawn(async move {
                for act in acts {
                    match act {
                        Act::Close => return,
                        Act::Hangup | Act::Answer(_) => {
                            let Some(req) = read_request(&mut tcp).await else {
                                return;
                            };
                            record.lock().unwrap().push((k, req));
                            let Act::Answer(pieces) = act else { return };
                            for piece in pieces {
                                tcp.write_all(&piece).await.unwrap();
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                        }
                    }
                }
                while let Some(req) = read_request(&mut tcp).await {
                    record.lock().unwrap().push((k, req));
                }
            });
        }
    });
    (Arc::new(Pool::new(addr, Duration::from_secs(2))), seen)
}

/// One request by the plain exchange, its answer's body read to the end.
async fn fetch(
    pool: &Arc<Pool>,
    method: Method,
    body: Option<&str>,
) -> Result<(u16, HeaderMap, String), String> {
    let (mut parts, ()) = Request::builder()
        .method(method)
        .uri("/p?q=1")
        .header("host", "up")
        .body(())
        .unwrap()
        .into_parts();
    let body = body.map(|b| Bytes::copy_from_slice(b.as_bytes()));
    declare_length(&mut parts, body.as_ref());
    let mut request = Vec::new();
    write_request(&parts, &Overlay::default(), body.as_ref(), &mut request);
    let (head, conn) = pool
        .exchange(&request, &parts.method)
        .await
        .map_err(|e| e.to_string())?;
    let (answer, ()) = head.response.into_parts();
    let stream = Stream::new(conn, head.framing, head.keep_alive, pool.clone());
    let read = Body::Streamed(Box::new(stream))
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let text = String::from_utf8_lossy(&read).into_owned();
    Ok((answer.status.as_u16(), answer.headers, text))
}

fn requests(seen: &Seen) -> Vec<(usize, String)> {
    seen.lock().unwrap().clone()
}

#[tokio::test]
async fn one_connection_carries_every_framing_in_turn() {
    let (pool, seen) = upstream(vec![
        vec![
            answer(&["HTTP/1.1 200 OK\r\ncon", "tent-length: 5\r\n\r\nhe", "llo"]),
            answer(&[
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n5;x=1\r\nhel",
                "lo\r\n6\r\n world\r\n0\r\nx-t: 1\r\n",
                "\r\n",
            ]),
            answer(&[
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </s.css>\r\n\r\n",
                "HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
            ]),
            answer(&["HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n"]),
            answer(&["HTTP/1.1 304 Not Modified\r\netag: \"x\"\r\n\r\n"]),
            answer(&["HTTP/1.1 200 OK\r\nconnection: x-drop\r\nx-drop: 1\r\ncontent-length: 0\r\n\r\n"]),
            answer(&["HTTP/1.0 200 OK\r\n\r\nto the ", "close"]),
            Act::Close,
        ],
        vec![answer(&["HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nnew"])],
    ])
    .await;
    let (status, _, body) = fetch(&pool, Method::GET, None).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "hello"));
    let (_, headers, body) = fetch(&pool, Method::GET, None).await.unwrap();
    assert_eq!(
        body, "hello world",
        "chunks joined, extension and trailer dropped"
    );
    assert!(!headers.contains_key("transfer-encoding") && !headers.contains_key("connection"));
    let (status, _, body) = fetch(&pool, Method::GET, None).await.unwrap();
    assert_eq!((status, body.as_str()), (201, "ok"), "1xx answers skipped");
    let (status, headers, body) = fetch(&pool, Method::HEAD, None).await.unwrap();
    assert_eq!((status, body.as_str()), (200, ""), "no body after HEAD");
    assert_eq!(headers["content-length"], "9");
    let (status, _, body) = fetch(&pool, Method::GET, None).await.unwrap();
    assert_eq!((status, body.as_str()), (304, ""));
    let (_, headers, _) = fetch(&pool, Method::POST, Some("k=v")).await.unwrap();
    assert!(
        headers.contains_key("connection"),
        "a Connection naming headers is left to the hop-by-hop strip"
    );
    let (status, _, body) = fetch(&pool, Method::GET, None).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "to the close"));
    assert_eq!(
        pool.plain_idle_len(),
        0,
        "a body read to the close ends its connection"
    );
    let (_, _, body) = fetch(&pool, Method::GET, None).await.unwrap();
    assert_eq!(body, "new");
    assert_eq!(pool.plain_idle_len(), 1);

    let seen = requests(&seen);
    let conns: Vec<usize> = seen.iter().map(|(k, _)| *k).collect();
    assert_eq!(conns, [0, 0, 0, 0, 0, 0, 0, 1], "{seen:?}");
    assert!(seen[0].1.starts_with("GET /p?q=1 HTTP/1.1\r\nhost: up\r\n"));
    assert!(seen[3].1.starts_with("HEAD /p?q=1 HTTP/1.1\r\n"));
    assert!(
        seen[5].1.ends_with("content-length: 3\r\n\r\nk=v"),
        "{:?}",
        seen[5]
    );
}

#[tokio::test]
async fn a_safe_request_is_retried_when_a_reused_connection_closes_unanswered_others_are_not() {
    let ok = |b: &str| answer(&[&format!("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n{b}")]);
    let (pool, seen) = upstream(vec![
        vec![ok("a"), Act::Hangup],
        vec![ok("b"), Act::Hangup],
        vec![ok("c")],
    ])
    .await;
    assert_eq!(fetch(&pool, Method::GET, None).await.unwrap().2, "a");
    assert_eq!(
        fetch(&pool, Method::GET, None).await.unwrap().2,
        "b",
        "retried on a new connection"
    );
    let e = fetch(&pool, Method::POST, Some("x")).await.unwrap_err();
    assert!(e.contains("closed the connection before answering"), "{e}");
    assert_eq!(fetch(&pool, Method::GET, None).await.unwrap().2, "c");
    let methods: Vec<(usize, String)> = requests(&seen)
        .into_iter()
        .map(|(k, r)| (k, r.split(' ').next().unwrap().to_owned()))
        .collect();
    let want = [(0, "GET"), (0, "GET"), (1, "GET"), (1, "POST"), (2, "GET")];
    assert_eq!(
        methods,
        want.map(|(k, m)| (k, m.to_owned())),
        "the POST went out once"
    );
}

#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_not_written_to() {
    let ok = |b: &str| answer(&[&format!("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n{b}")]);
    let (pool, seen) = upstream(vec![vec![ok("a"), Act::Close], vec![ok("b")]]).await;
    assert_eq!(fetch(&pool, Method::GET, None).await.unwrap().2, "a");
    assert_eq!(
        pool.plain_idle_len(),
        1,
        "kept: nothing said it would close"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        fetch(&pool, Method::POST, Some("once")).await.unwrap().2,
        "b"
    );
    let conns: Vec<usize> = requests(&seen).iter().map(|(k, _)| *k).collect();
    assert_eq!(conns, [0, 1]);
}

#[tokio::test]
async fn connections_with_bytes_left_or_a_body_dropped_half_read_are_not_reused() {
    let (pool, seen) = upstream(vec![
        vec![answer(&[
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\naEXTRA",
        ])],
        vec![answer(&[
            "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n12345",
        ])],
        vec![answer(&["HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nc"])],
    ])
    .await;
    let e = fetch(&pool, Method::GET, None).await;
    assert_eq!(e.unwrap().2, "a");
    assert_eq!(pool.plain_idle_len(), 0, "bytes after the body: not reused");

    let (mut parts, ()) = Request::get("/").body(()).unwrap().into_parts();
    declare_length(&mut parts, None);
    let mut request = Vec::new();
    write_request(&parts, &Overlay::default(), None, &mut request);
    let (head, conn) = pool.exchange(&request, &Method::GET).await.unwrap();
    let mut body = Body::Streamed(Box::new(Stream::new(
        conn,
        head.framing,
        head.keep_alive,
        pool.clone(),
    )));
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"12345");
    drop(body);
    assert_eq!(pool.plain_idle_len(), 0, "half read: dropped");
    assert_eq!(fetch(&pool, Method::GET, None).await.unwrap().2, "c");
    assert_eq!(requests(&seen).len(), 3);
}

#[tokio::test]
async fn malformed_or_cut_answers_are_errors() {
    let (pool, _) = upstream(vec![
        vec![answer(&[
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        ])],
        vec![
            answer(&["HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"]),
            Act::Close,
        ],
        vec![answer(&[
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
        ])],
        vec![answer(&["HTTP/1.1 101 Switching Protocols\r\n\r\n"])],
        vec![answer(&["HTTP/1.1 200 OK\r\nx: y"]), Act::Close],
        vec![answer(&["HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"])],
    ])
    .await;
    let wants = [
        "chunk size expected",
        "closed before the body's end",
        "Content-Length values differ",
        "switched protocols unasked",
        "within the answer's head",
    ];
    for want in wants {
        let e = fetch(&pool, Method::GET, None).await.unwrap_err();
        assert!(e.contains(want), "{e} (wanted {want})");
        assert_eq!(pool.plain_idle_len(), 0);
    }
    assert_eq!(fetch(&pool, Method::GET, None).await.unwrap().2, "ok");
}

#[tokio::test]
async fn a_short_body_in_pieces_is_read_whole() {
    let body = "x".repeat(20_000);
    let (pool, _) = upstream(vec![vec![answer(&[
        "HTTP/1.1 200 OK\r\ncontent-length: 20000\r\n\r\nxx",
        &body[..9_000],
        &body[9_002..],
    ])]])
    .await;
    let (mut parts, ()) = Request::get("/").body(()).unwrap().into_parts();
    declare_length(&mut parts, None);
    let mut request = Vec::new();
    write_request(&parts, &Overlay::default(), None, &mut request);
    let (head, mut conn) = pool.exchange(&request, &Method::GET).await.unwrap();
    assert_eq!(head.framing, Framing::Length(20_000));
    let read = read_whole(&mut conn, 20_000).await.unwrap();
    assert_eq!(read.len(), 20_000);
    assert!(conn.idle(), "nothing left over");
}

/// A connection goes back to the pool with its read buffer (the next answer needs no new
/// one), unless the buffer grew past its usual size for a large answer.
#[tokio::test]
async fn an_idle_connection_keeps_a_usual_read_buffer_and_gives_back_a_grown_one() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, _server) = tokio::join!(tokio::net::TcpStream::connect(addr), async {
        listener.accept().await.unwrap()
    });
    let mut conn = Conn::new(client.unwrap());
    conn.buf.reserve(READ_AHEAD);
    let at = conn.buf.as_ptr();
    assert!(conn.idle());
    assert_eq!(conn.buf.as_ptr(), at, "kept");
    assert!(conn.buf.capacity() >= READ_AHEAD);

    conn.buf.reserve(4 * READ_AHEAD);
    assert!(conn.idle());
    assert_eq!(conn.buf.capacity(), 0, "given back");

    conn.buf.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    assert!(!conn.idle(), "bytes left unread: not reusable");
}
