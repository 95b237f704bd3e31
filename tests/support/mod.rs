//! Test support: a real redis-server on a free port, a recording upstream on 127.0.0.1:0, the
//! gateway itself (in-process `App` or the real binary) and a small HTTP client.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use authgate::{App, Config};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

pub mod factors;
pub mod procs;
pub mod webdriver;

/// A redis-server of our own on a unix socket in a temp dir (no port to pick and lose),
/// stopped by pid when dropped. Start-up waits for its "ready" log line, not a clock.
pub struct Redis {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Redis {
    pub fn start() -> Redis {
        let mut r = Redis {
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        r.spawn();
        r
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    fn spawn(&mut self) {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(self.socket())
            .args([
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (the test command installs it)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = lines.by_ref().map_while(Result::ok).any(|l| {
            l.to_ascii_lowercase()
                .contains("ready to accept connections")
        });
        assert!(ready, "redis-server exited before it was ready");
        // Keep draining its log so that a full pipe never blocks it.
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        self.child = Some(child);
    }

    pub fn url(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body_len: usize,
}

/// An HTTP upstream that records every request. `/slow/<ms>` waits before answering;
/// everything else answers 200 "upstream ok".
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Signalled each time a request arrives (before its answer is written).
    arrived: Arc<tokio::sync::Notify>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(tokio::sync::Notify::new());
        let rec = seen.clone();
        let signal = arrived.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let rec = rec.clone();
                let signal = signal.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let rec = rec.clone();
                        let signal = signal.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let mut len = 0;
                            let mut body = body;
                            while let Some(frame) = body.frame().await {
                                if let Ok(data) = frame.map(|f| f.into_data().unwrap_or_default()) {
                                    len += data.len();
                                }
                            }
                            let path = parts.uri.path().to_owned();
                            rec.lock().unwrap().push(Seen {
                                method: parts.method.to_string(),
                                uri: parts.uri.to_string(),
                                headers: parts.headers.clone(),
                                body_len: len,
                            });
                            signal.notify_waiters();
                            // `/slow/<ms>`: an upstream that is slow (the behaviour under test).
                            if let Some(ms) = path.split("/slow/").nth(1) {
                                tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0)))
                                    .await;
                            }
                            // `/big/<n>`: an answer of n bytes.
                            let text = match path.split("/big/").nth(1) {
                                Some(n) => "x".repeat(n.parse().unwrap_or(0)),
                                None => format!("upstream ok {len}"),
                            };
                            let mut resp = Response::new(Full::new(Bytes::from(text)));
                            resp.headers_mut()
                                .insert("x-upstream", "yes".parse().unwrap());
                            // `x-answer-status: 302` asks for that status; `x-answer-<name>: v`
                            // for `<name>: v` in the answer.
                            if let Some(st) = parts
                                .headers
                                .get("x-answer-status")
                                .and_then(|v| v.to_str().ok()?.parse::<u16>().ok())
                                .and_then(|n| http::StatusCode::from_u16(n).ok())
                            {
                                *resp.status_mut() = st;
                            }
                            for (k, v) in &parts.headers {
                                if k.as_str() == "x-answer-status" {
                                    continue;
                                }
                                if let Some(name) = k.as_str().strip_prefix("x-answer-") {
                                    if let Ok(n) = http::HeaderName::from_bytes(name.as_bytes()) {
                                        resp.headers_mut().append(n, v.clone());
                                    }
                                }
                            }
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            seen,
            arrived,
        }
    }

    /// Waits (up to 10 s) until at least `n` requests have arrived.
    pub async fn wait_for_requests(&self, n: usize) {
        let wait = async {
            loop {
                let notified = self.arrived.notified();
                if self.seen.lock().unwrap().len() >= n {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| panic!("fewer than {n} requests reached the upstream"));
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.requests().pop().expect("the upstream saw no request")
    }
}

/// A WebSocket echo server (tokio-tungstenite).
pub async fn websocket_echo() -> SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        let _ = ws.send(msg).await;
                    }
                }
            });
        }
    });
    addr
}

pub const HS_SECRET: &str = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz";

/// A directory with a users file and keys, for building configs.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), HS_SECRET).unwrap();
        let users = format!(
            "[[user]]\nname = \"alice\"\npassword_hash = \"{}\"\nroles = [\"user\"]\n\n\
             [[user]]\nname = \"root\"\npassword_hash = \"{}\"\nroles = [\"admin\", \"user\"]\n\n\
             [[user]]\nname = \"cffi\"\npassword_hash = \"{}\"\nroles = [\"user\"]\n",
            authgate::auth::passwords::hash_password(b"alice-password").unwrap(),
            authgate::auth::passwords::hash_password(b"root-password").unwrap(),
            // Made by Python's argon2-cffi (PasswordHasher(time_cost=3, memory_cost=65536,
            // parallelism=4).hash("cffi-password")): another implementation's PHC string.
            "$argon2id$v=19$m=65536,t=3,p=4$jHG1ebVWfgrPbovC4chwNA$TJcWkFzShX2cuWtVbPbPBmmkzgv7CzH4z5Kp0XckqS4",
        );
        std::fs::write(dir.path().join("users.toml"), users).unwrap();
        Fixture { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A config for one upstream with the usual three routes; `extra` is appended at the end
    /// of the top-level tables (so it may add [[routes]] before the catch-all is matched:
    /// it is inserted BEFORE the standard routes).
    pub fn config(
        &self,
        upstream: SocketAddr,
        tokens: &str,
        revocation: &str,
        extra_routes: &str,
        server: &str,
    ) -> String {
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "5s"
{server}

[log]
format = "pretty"

[admin]
listen = "127.0.0.1:0"

[tokens]
{tokens}

[revocation]
{revocation}

[users]
file = "users.toml"

[login]
max_failures_per_user = 3
max_failures_per_ip = 100
failure_window = "1m"

[[upstreams]]
name = "app"
url = "http://{upstream}"
connect_timeout = "1s"
request_timeout = "2s"

{extra_routes}

[[routes]]
path = "/public/**"
upstream = "app"
auth = "public"

[[routes]]
path = "/admin/**"
upstream = "app"
auth = "required"
roles = ["admin"]

[[routes]]
path = "/**"
upstream = "app"
auth = "required"
"#
        )
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

pub const HS256: &str = "algorithm = \"HS256\"\nsecret_file = \"secret\"\naccess_ttl = \"15m\"\nrefresh_ttl = \"1h\"\nleeway = \"5s\"";
pub const MEMORY: &str = "backend = \"memory\"";

pub async fn start(path: &Path) -> App {
    let config = Config::load(path).unwrap_or_else(|e| panic!("{e}"));
    App::start(config).await.unwrap()
}

/// One HTTP/1.1 request on a fresh connection.
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// One HTTP/1.1 keep-alive connection: every request sent on it goes over the same socket.
pub async fn connection(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// A GET with a bearer token on `conn`; the status and the body.
pub async fn get_on(
    conn: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    path: &str,
    token: &str,
) -> (StatusCode, String) {
    conn.ready().await.unwrap();
    let req = get(path)
        .header("authorization", format!("Bearer {token}"))
        .body(empty())
        .unwrap();
    let resp = conn.send_request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

pub fn get(path: &str) -> http::request::Builder {
    Request::builder()
        .method("GET")
        .uri(path)
        .header("host", "gw.test")
}

pub fn post(path: &str) -> http::request::Builder {
    Request::builder()
        .method("POST")
        .uri(path)
        .header("host", "gw.test")
}

pub fn empty() -> Full<Bytes> {
    Full::new(Bytes::new())
}

pub fn json_body(v: serde_json::Value) -> Full<Bytes> {
    Full::new(Bytes::from(v.to_string()))
}

pub async fn login(addr: SocketAddr, user: &str, password: &str) -> serde_json::Value {
    let req = post("/auth/login")
        .header("content-type", "application/json")
        .body(json_body(
            serde_json::json!({"username": user, "password": password}),
        ))
        .unwrap();
    let (status, _, body) = send(addr, req).await;
    assert_eq!(status, StatusCode::OK, "login failed: {body}");
    serde_json::from_str(&body).unwrap()
}

pub async fn get_with_token(
    addr: SocketAddr,
    path: &str,
    token: &str,
) -> (StatusCode, HeaderMap, String) {
    send(
        addr,
        get(path)
            .header("authorization", format!("Bearer {token}"))
            .body(empty())
            .unwrap(),
    )
    .await
}

/// Writes raw bytes, reads until the peer closes or `wait` passes.
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

pub fn unused<T>(_: T) {}

pub fn executor() -> TokioExecutor {
    TokioExecutor::new()
}

/// The gateway under test, built up from the usual fixture: HS256 tokens, the memory store,
/// one recording upstream and the three standard routes (`/public/**`, `/admin/**`, `/**`).
///
/// ```ignore
/// let gw = TestGateway::new().redis(&redis).route(r#"path = "/x" ..."#).start().await;
/// ```
pub struct TestGateway {
    upstream_extra: String,
    tokens: String,
    revocation: String,
    routes: String,
    server: String,
    tables: String,
}

impl Default for TestGateway {
    fn default() -> Self {
        Self::new()
    }
}

impl TestGateway {
    pub fn new() -> TestGateway {
        TestGateway {
            upstream_extra: String::new(),
            tokens: HS256.to_owned(),
            revocation: MEMORY.to_owned(),
            routes: String::new(),
            server: String::new(),
            tables: String::new(),
        }
    }

    /// The `[tokens]` table's body.
    pub fn tokens(mut self, toml: &str) -> Self {
        self.tokens = toml.to_owned();
        self
    }

    /// The `[revocation]` table's body.
    pub fn revocation(mut self, toml: &str) -> Self {
        self.revocation = toml.to_owned();
        self
    }

    /// The shared store: this redis-server, with optional extra `[revocation]` keys.
    pub fn redis(self, r: &Redis, extra: &str) -> Self {
        let rev = format!("backend = \"redis\"\nredis_url = \"{}\"\n{extra}", r.url());
        self.revocation(&rev)
    }

    /// One `[[routes]]` body, matched before the standard routes.
    pub fn route(mut self, toml: &str) -> Self {
        self.routes.push_str(&format!("[[routes]]\n{toml}\n\n"));
        self
    }

    /// Whole tables (`[forward_auth]\n...`), appended after the routes.
    pub fn tables(mut self, toml: &str) -> Self {
        self.tables.push_str(&format!("\n{toml}\n"));
        self
    }

    /// Extra keys of the `[[upstreams]]` table.
    pub fn upstream_extra(mut self, toml: &str) -> Self {
        self.upstream_extra.push_str(toml);
        self.upstream_extra.push('\n');
        self
    }

    /// Extra `[server]` keys.
    pub fn server(mut self, toml: &str) -> Self {
        self.server.push_str(toml);
        self.server.push('\n');
        self
    }

    pub async fn start(self) -> Running {
        let up = Upstream::start().await;
        let fx = Fixture::new();
        let text = fx.config(
            up.addr,
            &self.tokens,
            &self.revocation,
            &self.routes,
            &self.server,
        ) + &self.tables;
        let config = fx.write("authgate.toml", &text);
        let app = start(&config).await;
        Running {
            addr: app.public_addr,
            admin: app.admin_addr,
            fx,
            up,
            app,
            config,
        }
    }
}

/// A started `TestGateway`.
pub struct Running {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub fx: Fixture,
    pub up: Upstream,
    pub app: App,
    pub config: PathBuf,
}

/// A login's token pair, typed.
#[derive(Debug, Clone)]
pub struct TokenPair {
    pub access: String,
    pub refresh: String,
    /// The whole answer, for the other members.
    pub json: serde_json::Value,
}

impl TokenPair {
    pub fn from_json(json: serde_json::Value) -> TokenPair {
        TokenPair {
            access: json["access_token"].as_str().unwrap_or("").to_owned(),
            refresh: json["refresh_token"].as_str().unwrap_or("").to_owned(),
            json,
        }
    }
}

/// Logs in and returns the pair (the login must succeed).
pub async fn login_pair(addr: SocketAddr, user: &str, password: &str) -> TokenPair {
    TokenPair::from_json(login(addr, user, password).await)
}

/// A body-less request carrying a browser's cookies.
pub fn with_cookie(b: http::request::Builder, cookie: &str) -> Request<Full<Bytes>> {
    b.header("cookie", cookie).body(empty()).unwrap()
}

/// `POST path` with `Authorization: Bearer token`.
pub async fn post_with_token(
    addr: SocketAddr,
    path: &str,
    token: &str,
) -> (StatusCode, HeaderMap, String) {
    let req = post(path)
        .header("authorization", format!("Bearer {token}"))
        .body(empty())
        .unwrap();
    send(addr, req).await
}

/// Claims as the gateway would issue them (HS256 fixture), for forging variants.
pub fn claims(typ: &str) -> serde_json::Value {
    let now = authgate::clock::now_secs();
    serde_json::json!({"iss": "authgate", "aud": "authgate", "sub": "alice", "iat": now, "nbf": now,
        "exp": now + 600, "jti": "j-123456789", "sid": "s-123456789", "type": typ, "roles": ["user"]})
}

/// Signs `claims` with the fixture's HS256 secret.
pub fn sign(claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(HS_SECRET.as_bytes()),
    )
    .unwrap()
}

/// Retries `probe` back to back (each try is a real request, which paces it) until it is
/// true or `within` has passed. For conditions with no event to wait on, such as a store
/// reconnecting after a restart.
pub async fn eventually<F, Fut>(within: Duration, mut probe: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let tries = async {
        loop {
            if probe().await {
                return;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(within, tries).await.is_ok()
}

/// A gateway with the given `[revocation]` and `[tokens]` bodies (the common case).
pub async fn gateway(revocation: &str, tokens: &str) -> (Fixture, Upstream, App) {
    let gw = TestGateway::new()
        .revocation(revocation)
        .tokens(tokens)
        .start()
        .await;
    (gw.fx, gw.up, gw.app)
}

/// A browser's form login: the `Cookie` header its session sends from now on, and the
/// session's CSRF value (from the readable CSRF cookie).
pub async fn browser_login(addr: SocketAddr, user: &str, password: &str) -> (String, String) {
    let req = post("/auth/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "text/html")
        .body(Full::new(Bytes::from(format!(
            "username={user}&password={password}"
        ))))
        .unwrap();
    let (status, headers, body) = send(addr, req).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "form login failed: {body}");
    let cookies = set_cookies(&headers);
    let csrf = cookies
        .iter()
        .find_map(|(k, v)| (k == "authgate_csrf").then(|| v.clone()))
        .expect("no CSRF cookie");
    let header = cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    (header, csrf)
}

/// The (name, value) pairs a response sets.
pub fn set_cookies(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|c| c.split(';').next())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}
