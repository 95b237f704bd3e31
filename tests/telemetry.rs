//! What the real binary tells an operator while things fail and recover: a store or an
//! upstream outage logged once, counted, and its end (log and audit file); readiness flips;
//! request spans exported to an OTLP receiver built on the OpenTelemetry project's own
//! protobuf definitions (`tests/otlp/receiver.py`, the `opentelemetry-proto` package).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::*;

/// The real binary, killed when dropped (also when a test fails first).
struct Binary(std::process::Child);

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary's log lines (JSON, stderr), as they arrive.
struct Log {
    rx: std::sync::mpsc::Receiver<String>,
    seen: Vec<serde_json::Value>,
}

impl Log {
    /// Waits for a line whose message contains `needle` (true), or gives up after 10 s.
    fn wait_for(&mut self, needle: &str) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while let Ok(line) = self
            .rx
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
        {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let hit = message(&v).contains(needle);
            self.seen.push(v);
            if hit {
                return true;
            }
        }
        false
    }

    fn with_message(&self, text: &str) -> Vec<&serde_json::Value> {
        self.seen
            .iter()
            .filter(|v| message(v).contains(text))
            .collect()
    }
}

/// The JSON format puts the message and the fields at the top level.
fn message(v: &serde_json::Value) -> &str {
    v["message"].as_str().unwrap_or("")
}

/// `serve` on `cfg` (JSON logs), with its public address.
fn serve(cfg: &std::path::Path) -> (Binary, std::net::SocketAddr, Log) {
    serve_env(cfg, &[])
}

/// `serve` with extra environment variables.
fn serve_env(cfg: &std::path::Path, env: &[(&str, &str)]) -> (Binary, std::net::SocketAddr, Log) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_authgate"))
        .env_remove("AUTHGATE_CONFIG")
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .args(["serve", "--config"])
        .arg(cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let binary = Binary(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut log = Log {
        rx,
        seen: Vec::new(),
    };
    assert!(log.wait_for("public listener ready"), "{:#?}", log.seen);
    let ready = log.with_message("public listener ready")[0];
    let addr = ready["addr"].as_str().unwrap().parse().unwrap();
    (binary, addr, log)
}

/// A config whose logs are JSON, with the audit trail in `audit.log` and repeated warnings
/// at most once an hour (so a test sees only first lines and ends).
fn outage_config(
    fx: &Fixture,
    upstream: std::net::SocketAddr,
    revocation: &str,
) -> std::path::PathBuf {
    let text = fx
        .config(upstream, HS256, revocation, "", "")
        .replace(
            "[log]\nformat = \"pretty\"",
            "[log]\nformat = \"json\"\naudit = \"audit.log\"\nrepeat_every = \"1h\"",
        )
        // One host: never ejected for these few failures.
        .replace(
            "request_timeout = \"2s\"",
            "request_timeout = \"2s\"\neject_after = 1000",
        );
    assert!(text.contains("repeat_every") && text.contains("eject_after"));
    fx.write("authgate.toml", &text)
}

fn audit_events(fx: &Fixture, event: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(fx.path("audit.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == event)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_outage_is_logged_once_counted_and_its_end_audited() {
    let mut redis = Redis::start();
    let up = Upstream::start().await;
    let fx = Fixture::new();
    let rev = format!("backend = \"redis\"\nredis_url = \"{}\"", redis.url());
    let (_gw, addr, mut log) = serve(&outage_config(&fx, up.addr, &rev));
    let pair = login_pair(addr, "alice", "alice-password").await;
    let status = |token: String| async move { get_with_token(addr, "/x", &token).await.0 };
    assert_eq!(status(pair.access.clone()).await, 200);

    redis.stop();
    for _ in 0..5 {
        assert_eq!(status(pair.access.clone()).await, 503);
    }
    redis.restart();
    // Until the connection comes back, more 503s (more failures); then the store answers
    // (the token predates the new, empty Redis's epoch: 401, but answered).
    assert!(
        eventually(std::time::Duration::from_secs(10), || async {
            status(pair.access.clone()).await != 503
        })
        .await
    );
    assert!(
        log.wait_for("revocation store answers again"),
        "{:#?}",
        log.seen
    );

    let first = log.with_message("revocation store unavailable");
    assert_eq!(first.len(), 1, "{:#?}", log.seen);
    assert_eq!(first[0]["level"], "WARN");
    assert!(
        log.with_message("still unavailable").is_empty(),
        "{:#?}",
        log.seen
    );
    let back = log.with_message("revocation store answers again")[0];
    assert!(back["failed"].as_u64().unwrap() >= 5, "{back}");

    let found = eventually(std::time::Duration::from_secs(5), || async {
        !audit_events(&fx, "store_back").is_empty()
    })
    .await;
    assert!(found);
    assert_eq!(audit_events(&fx, "store_down").len(), 1);
    let back = audit_events(&fx, "store_back");
    assert_eq!(back.len(), 1);
    assert!(back[0]["failed"].as_u64().unwrap() >= 5, "{:?}", back[0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_flips_with_the_store_are_audited() {
    let mut redis = Redis::start();
    let up = Upstream::start().await;
    let fx = Fixture::new();
    let rev = format!("backend = \"redis\"\nredis_url = \"{}\"", redis.url());
    let cfg = outage_config(&fx, up.addr, &rev);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
        "[admin]\nlisten = \"127.0.0.1:0\"\nready_requires_store = true\n",
    );
    assert!(text.contains("ready_requires_store = true"));
    std::fs::write(&cfg, text).unwrap();
    let (_gw, _addr, mut log) = serve(&cfg);
    assert!(log.wait_for("admin listener ready"));
    let admin: std::net::SocketAddr = log.with_message("admin listener ready")[0]["addr"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let readyz = || async move { send(admin, get("/readyz").body(empty()).unwrap()).await.0 };
    assert_eq!(readyz().await, 200);
    redis.stop();
    assert!(
        eventually(std::time::Duration::from_secs(10), || async {
            readyz().await == 503
        })
        .await
    );
    redis.restart();
    assert!(
        eventually(std::time::Duration::from_secs(10), || async {
            readyz().await == 200
        })
        .await
    );
    assert!(log.wait_for("readiness changed"));
    assert!(log.wait_for("readiness changed"), "{:#?}", log.seen);
    let flips: Vec<(bool, String)> = log
        .with_message("readiness changed")
        .iter()
        .map(|v| {
            (
                v["ready"].as_bool().unwrap(),
                v["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        flips,
        [
            (false, "revocation store down".to_owned()),
            (true, "ready".to_owned())
        ]
    );
    assert!(
        eventually(std::time::Duration::from_secs(5), || async {
            audit_events(&fx, "readiness_changed").len() == 2
        })
        .await
    );
    let audited = audit_events(&fx, "readiness_changed");
    assert_eq!(
        (audited[0]["ready"].as_bool(), audited[1]["ready"].as_bool()),
        (Some(false), Some(true))
    );
}

/// A minimal upstream on `listener`: 200 "ok" to every request, one per connection.
async fn answer_ok(listener: tokio::net::TcpListener) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await;
        });
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_outage_is_logged_once_and_its_end_too() {
    // An address with nothing listening (yet).
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let fx = Fixture::new();
    let (_gw, addr, mut log) = serve(&outage_config(&fx, dead, MEMORY));
    for _ in 0..5 {
        let (s, _, _) = send(addr, get("/public/x").body(empty()).unwrap()).await;
        assert_eq!(s, 502);
    }
    let listener = tokio::net::TcpListener::bind(dead).await.unwrap();
    let server = tokio::spawn(answer_ok(listener));
    let (s, _, body) = send(addr, get("/public/x").body(empty()).unwrap()).await;
    assert_eq!((s.as_u16(), body.as_str()), (200, "ok"));
    assert!(log.wait_for("upstream answers again"), "{:#?}", log.seen);

    let failed = log.with_message("upstream request failed");
    assert_eq!(failed.len(), 1, "{:#?}", log.seen);
    assert_eq!(failed[0]["upstream"], "app");
    assert!(
        log.with_message("still failing").is_empty(),
        "{:#?}",
        log.seen
    );
    let back = log.with_message("upstream answers again")[0];
    assert_eq!(back["failed"], 5, "{back}");
    server.abort();
}

/// The OTLP receiver of `tests/otlp/receiver.py` (the opentelemetry-proto package's
/// definitions): its port, and each span it decoded as a JSON line.
struct Receiver {
    _process: Binary,
    port: u16,
    spans: std::sync::mpsc::Receiver<serde_json::Value>,
}

fn receiver() -> Receiver {
    use std::io::BufRead;
    let mut child = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/otlp/receiver.py"
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with opentelemetry-proto (scripts/test.sh installs it)");
    let stdout = child.stdout.take().unwrap();
    let process = Binary(child);
    let mut lines = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok);
    let first: serde_json::Value =
        serde_json::from_str(&lines.next().expect("the receiver did not start")).unwrap();
    let port = u16::try_from(first["listening"].as_u64().unwrap()).unwrap();
    let (tx, spans) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines {
            let _ = tx.send(serde_json::from_str(&line).unwrap());
        }
    });
    Receiver {
        _process: process,
        port,
        spans,
    }
}

impl Receiver {
    /// Spans as they arrive until `done` says enough (or 20 s pass).
    fn collect(&self, done: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut got = Vec::new();
        while !done(&got) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.spans.recv_timeout(left) {
                Ok(span) => got.push(span),
                Err(_) => break,
            }
        }
        got
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn request_spans_reach_an_otlp_receiver_with_their_parents() {
    let recv = receiver();
    let up = Upstream::start().await;
    let fx = Fixture::new();
    let text = fx
        .config(up.addr, HS256, MEMORY, "", "")
        .replace("format = \"pretty\"", "format = \"json\"")
        + &format!(
            "\n[tracing]\notlp_endpoint = \"http://127.0.0.1:{}\"\nservice_name = \"gw-under-test\"\n",
            recv.port
        );
    let cfg = fx.write("authgate.toml", &text);
    // Batches every 100 ms instead of 5 s: the test waits on the spans, not on a clock.
    let (_gw, addr, _log) = serve_env(&cfg, &[("OTEL_BSP_SCHEDULE_DELAY", "100")]);
    let up = &up;
    let forwarded = |traceparent: Option<&'static str>| async move {
        let mut b = get("/public/x");
        if let Some(t) = traceparent {
            b = b.header("traceparent", t);
        }
        assert_eq!(send(addr, b.body(empty()).unwrap()).await.0, 200);
        up.last()
            .headers
            .get("traceparent")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };
    let caller_trace = "0af7651916cd43dd8448eb211c80319c";
    let sampled = forwarded(Some(
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    ))
    .await;
    // The caller decided not to sample: its trace goes on, nothing is exported.
    let unsampled_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let unsampled = forwarded(Some(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
    ))
    .await;
    assert!(
        unsampled.starts_with(&format!("00-{unsampled_trace}-")),
        "{unsampled}"
    );
    assert!(unsampled.ends_with("-00"), "{unsampled}");
    assert!(
        !unsampled.contains("00f067aa0ba902b7"),
        "the gateway's own span is the parent: {unsampled}"
    );
    // No caller context: a new trace, sampled.
    let fresh = forwarded(None).await;

    let spans = recv.collect(|got| got.len() >= 4);
    assert_eq!(spans.len(), 4, "{spans:#?}");
    assert!(
        spans
            .iter()
            .all(|s| s["service"] == "gw-under-test" && s["scope"] == "authgate"),
        "{spans:#?}"
    );
    assert!(
        !spans.iter().any(|s| s["trace_id"] == unsampled_trace),
        "{spans:#?}"
    );
    let of_trace = |trace: &str| -> (serde_json::Value, serde_json::Value) {
        let server = spans
            .iter()
            .find(|s| s["trace_id"] == trace && s["kind"] == 2)
            .unwrap_or_else(|| panic!("no server span in {trace}: {spans:#?}"))
            .clone();
        let client = spans
            .iter()
            .find(|s| s["trace_id"] == trace && s["kind"] == 3)
            .unwrap_or_else(|| panic!("no client span in {trace}: {spans:#?}"))
            .clone();
        (server, client)
    };

    // The caller's trace: its span is the server span's parent; the upstream's parent is the
    // client span, under the server span.
    let (server, client) = of_trace(caller_trace);
    assert_eq!(server["name"], "GET /public/**");
    assert_eq!(server["parent_span_id"], "b7ad6b7169203331");
    let attrs = &server["attributes"];
    assert_eq!(attrs["http.request.method"], "GET");
    assert_eq!(attrs["http.route"], "/public/**");
    assert_eq!(attrs["http.response.status_code"], 200);
    assert_eq!(attrs["client.address"], "127.0.0.1");
    assert_eq!(client["name"], "GET app");
    assert_eq!(client["attributes"]["upstream"], "app");
    assert_eq!(client["parent_span_id"], server["span_id"]);
    assert_eq!(
        sampled,
        format!(
            "00-{caller_trace}-{}-01",
            client["span_id"].as_str().unwrap()
        )
    );

    // A new trace: the server span is its root.
    let fresh_trace = fresh.get(3..35).unwrap();
    assert_ne!(fresh_trace, caller_trace);
    let (server, client) = of_trace(fresh_trace);
    assert_eq!(server["parent_span_id"], "");
    assert_eq!(client["parent_span_id"], server["span_id"]);
    assert_eq!(
        fresh,
        format!(
            "00-{fresh_trace}-{}-01",
            client["span_id"].as_str().unwrap()
        )
    );
}
