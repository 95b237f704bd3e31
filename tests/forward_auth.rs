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
        .start()
        .await
}

fn nginx(uri: &str) -> http::request::Builder {
    get("/auth/verify/nginx")
        .header("x-original-method", "GET")
        .header("x-original-uri", uri)
}

fn traefik(method: &str, uri: &str) -> http::request::Builder {
    get("/auth/verify")
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
        "x-auth-user,x-auth-roles"
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
    // Traefik and Envoy get the plain 302.
    let (s, h, _) = send(gw.addr, traefik("GET", "/web/page").body(empty()).unwrap()).await;
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
    // CSRF: the header only.
    let req = traefik("POST", "/web/form")
        .header("cookie", &cookie)
        .body(empty())
        .unwrap();
    assert_eq!(send(gw.addr, req).await.0, StatusCode::FORBIDDEN);
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
    let to = h.get("location").unwrap().to_str().unwrap().to_owned();
    assert_eq!(to, "/auth/refresh?next=/web/page");
    assert!(h.get("set-cookie").is_none());
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

/// A real nginx in front, configured with the snippet `authgate explain --forward-auth nginx`
/// prints, listening on a unix socket in a temp dir (no port to race for).
struct Nginx {
    child: std::process::Child,
    socket: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // TERM, not KILL: the master then stops its workers (a killed master orphans them).
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Nginx {
    fn start(snippet: &str, app: std::net::SocketAddr) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("nginx.sock");
        std::fs::write(dir.path().join("authgate.conf"), snippet).unwrap();
        let conf = format!(
            "worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log; daemon off;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d};\n\
               upstream your_app {{ server {app}; }}\n\
               server {{ listen unix:{s}; include {d}/authgate.conf; }}\n\
             }}\n",
            d = dir.path().display(),
            s = socket.display(),
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("nginx is not installed: run ./scripts/test.sh (it installs nginx-light)");
        let child = std::process::Command::new(nginx)
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // nginx says nothing when it is ready: the socket file appearing is the event.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !socket.exists() {
            assert!(std::time::Instant::now() < deadline, "nginx did not start");
            std::thread::yield_now();
        }
        Nginx {
            child,
            socket,
            _dir: dir,
        }
    }

    async fn send(
        &self,
        req: http::Request<http_body_util::Full<bytes::Bytes>>,
    ) -> (StatusCode, http::HeaderMap, String) {
        use http_body_util::BodyExt;
        let io = tokio::net::UnixStream::connect(&self.socket).await.unwrap();
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

#[tokio::test(flavor = "multi_thread")]
async fn through_a_real_nginx_with_the_printed_snippet() {
    let gw = judge_only().await;
    let config = authgate::Config::load(&gw.config).unwrap();
    let snippet = authgate::snippets::for_address("nginx", gw.addr, &config.identity).unwrap();
    let nginx = Nginx::start(&snippet, gw.up.addr);
    let user = login_pair(gw.addr, "alice", "alice-password").await;
    // No token: 401, and the app sees nothing.
    let (s, _, _) = nginx.send(get("/app/x").body(empty()).unwrap()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(gw.up.requests().is_empty());
    // A valid token: the app sees the identity from authgate's answer, never a client's.
    let req = get("/app/x")
        .header("authorization", format!("Bearer {}", user.access))
        .header("x-auth-user", "root")
        .header("x-auth-roles", "admin")
        .body(empty())
        .unwrap();
    let (s, _, body) = nginx.send(req).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let seen = gw.up.last();
    assert_eq!(seen.headers.get("x-auth-user").unwrap(), "alice");
    assert_eq!(seen.headers.get("x-auth-roles").unwrap(), "user");
    assert!(seen.headers.get("authorization").is_none());
    // On a public route, a client-sent identity is emptied.
    let req = get("/public/x")
        .header("x-auth-user", "root")
        .body(empty())
        .unwrap();
    assert_eq!(nginx.send(req).await.0, StatusCode::OK);
    assert!(gw
        .up
        .last()
        .headers
        .get("x-auth-user")
        .is_none_or(|v| v.is_empty()));
    // A missing role: 403; a browser route: to the login page.
    let req = get("/admin/x")
        .header("authorization", format!("Bearer {}", user.access))
        .body(empty())
        .unwrap();
    assert_eq!(nginx.send(req).await.0, StatusCode::FORBIDDEN);
    let (s, h, _) = nginx.send(get("/web/page").body(empty()).unwrap()).await;
    assert_eq!(s, StatusCode::FOUND);
    assert_eq!(h.get("location").unwrap(), "/auth/login?next=/web/page");
    // The header-convention attack, and clients calling the check directly, go nowhere.
    let req = get("/admin/x")
        .header("x-forwarded-uri", "/public/x")
        .header("x-original-uri", "/public/x")
        .body(empty())
        .unwrap();
    assert_eq!(nginx.send(req).await.0, StatusCode::UNAUTHORIZED);
    for direct in ["/auth/verify/nginx", "/auth/%76erify/nginx", "/auth/verify"] {
        let (s, _, _) = nginx.send(get(direct).body(empty()).unwrap()).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{direct}");
    }
    // `..` tricks are judged as nginx routes them.
    let req = get("/public/../admin/x")
        .header("authorization", format!("Bearer {}", user.access))
        .body(empty())
        .unwrap();
    assert_eq!(nginx.send(req).await.0, StatusCode::FORBIDDEN);
    // A revoked token: 401.
    post_with_token(gw.addr, "/auth/logout", &user.access).await;
    let req = get("/app/x")
        .header("authorization", format!("Bearer {}", user.access))
        .body(empty())
        .unwrap();
    assert_eq!(nginx.send(req).await.0, StatusCode::UNAUTHORIZED);
    // Sign-in through nginx: a form login comes back with a cookie session.
    let body = "username=alice&password=alice-password&next=%2Fweb%2Fpage";
    let req = post("/auth/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let (s, h, _) = nginx.send(req).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let cookie = set_cookies(&h)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    let (s, _, _) = nginx.send(with_cookie(get("/web/page"), &cookie)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(gw.up.last().headers.get("x-auth-user").unwrap(), "alice");
}
