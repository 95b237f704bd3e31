//! The whole request path: arbitrary bytes as an HTTP/1.1 request (head and body) to a running
//! gateway in this process, in front of an in-process upstream. Never panics (a panic in any
//! task aborts the process: libFuzzer sees it), never answers 500, and identity headers (in
//! any spelling) reach the upstream only when the gateway set them: never, since no input
//! here can hold a valid token. For the same reason the only requests the upstream may see
//! are public ones: a servlet container reading the path it receives (`;params` cut, `//`
//! merged, dots resolved) serves something under `/public`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The path a servlet container serves for `path` (Tomcat's order: cut `;params`, merge
/// empty segments, resolve dots; percent-escapes of dots decoded first), or None above root.
fn servlet_reading(path: &str) -> Option<String> {
    let mut kept: Vec<String> = Vec::new();
    for seg in path.split('/').skip(1) {
        let seg = seg.split(';').next().unwrap_or_default();
        let seg = seg.replace("%2e", ".").replace("%2E", ".");
        match seg.as_str() {
            "" | "." => {}
            ".." => {
                kept.pop()?;
            }
            _ => kept.push(seg),
        }
    }
    Some(kept.iter().map(|s| format!("/{s}")).collect())
}

struct World {
    rt: tokio::runtime::Runtime,
    gateway: SocketAddr,
    _app: authgate::App,
}

async fn upstream() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let path = req.uri().path();
                        let served = servlet_reading(path).unwrap_or_default();
                        assert!(
                            served == "/public" || served.starts_with("/public/"),
                            "{path:?} reached the upstream, served as {served:?}"
                        );
                        for (name, value) in req.headers() {
                            let n = name.as_str().replace('_', "-");
                            if n == "x-auth-user" || n == "x-auth-roles" {
                                assert!(value.is_empty(), "{name}: {value:?} reached the upstream");
                            }
                        }
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                        ))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (gateway, app) = rt.block_on(async {
            let up = upstream().await;
            let dir =
                std::env::temp_dir().join(format!("authgate-fuzz-http-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join("secret"),
                "fuzz-secret-0123456789-abcdefghijklmnop",
            )
            .unwrap();
            std::fs::write(dir.join("users.toml"), "").unwrap();
            let text = format!(
                r#"
[server]
listen = "127.0.0.1:0"
idle_timeout = "2s"
body_read_timeout = "1s"
[admin]
listen = "127.0.0.1:0"
[tokens]
algorithm = "HS256"
secret_file = "secret"
[users]
file = "users.toml"
[[upstreams]]
name = "app"
url = "http://{up}"
[[routes]]
path = "/public/**"
upstream = "app"
auth = "public"
[[routes]]
path = "/web/**"
upstream = "app"
on_unauthenticated = "redirect"
[[routes]]
path = "/**"
upstream = "app"
auth = "required"
"#
            );
            let config = authgate::Config::from_str(&dir.join("authgate.toml"), &text)
                .unwrap_or_else(|e| panic!("{e}"));
            let app = authgate::App::start(config).await.unwrap();
            (app.public_addr, app)
        });
        World {
            rt,
            gateway,
            _app: app,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let answer = w.rt.block_on(async {
        let mut s = tokio::net::TcpStream::connect(w.gateway).await.unwrap();
        let _ = s.write_all(data).await;
        let _ = s.shutdown().await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        out
    });
    assert!(
        !answer.starts_with(b"HTTP/1.1 500")
            && !answer.windows(14).any(|w| w == b"\nHTTP/1.1 500 "),
        "a 500 for {:?}",
        String::from_utf8_lossy(data)
    );
});
