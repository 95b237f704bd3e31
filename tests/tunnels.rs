//! Upgraded tunnels end with their session (§10): a WebSocket opened with a cookie session or
//! a token is closed at once when this gateway logs the session out, and at the next
//! `server.tunnel_recheck` when the revocation came from elsewhere (the CLI, another replica).
// A test crate: its helpers (not only #[test] fns, which clippy.toml covers) may unwrap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use support::*;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(addr: std::net::SocketAddr, auth: (&'static str, &str)) -> Ws {
    let mut req = format!("ws://{addr}/app/ws").into_client_request().unwrap();
    req.headers_mut().insert(auth.0, auth.1.parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.status(), http::StatusCode::SWITCHING_PROTOCOLS);
    ws
}

/// True when the tunnel still echoes.
async fn echoes(ws: &mut Ws) -> bool {
    if ws.send(Message::text("ping")).await.is_err() {
        return false;
    }
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => t.as_str() == "ping",
        _ => false,
    }
}

/// Closed within `within`: the stream ends (or errors) without another message.
async fn closes_within(ws: &mut Ws, within: Duration) -> bool {
    let ended = async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    };
    tokio::time::timeout(within, ended).await.is_ok()
}

async fn gateway(recheck: &str) -> (Fixture, authgate::App) {
    let ws_addr = websocket_echo().await;
    let fx = Fixture::new();
    let cfg = fx.config(
        ws_addr,
        HS256,
        MEMORY,
        "",
        &format!("tunnel_recheck = \"{recheck}\""),
    );
    let app = start(&fx.write("ws.toml", &cfg)).await;
    (fx, app)
}

/// Regression (real apps): after logout in another tab, an open Jupyter kernel socket still
/// ran code. A logout through this gateway closes the session's tunnels at once; the user's
/// other sessions keep theirs.
#[tokio::test(flavor = "multi_thread")]
async fn logout_closes_the_sessions_open_websockets_at_once() {
    let (_fx, app) = gateway("1h").await; // no re-check could explain a close
    let (cookie, csrf) = browser_login(app.public_addr, "alice", "alice-password").await;
    let other = login_pair(app.public_addr, "alice", "alice-password").await;
    let mut by_cookie = open(app.public_addr, ("cookie", &cookie)).await;
    let bearer = format!("Bearer {}", other.access);
    let mut by_token = open(app.public_addr, ("authorization", &bearer)).await;
    assert!(echoes(&mut by_cookie).await && echoes(&mut by_token).await);
    let logout = post("/auth/logout")
        .header("cookie", &cookie)
        .header("x-csrf-token", csrf)
        .body(empty())
        .unwrap();
    assert_eq!(
        send(app.public_addr, logout).await.0,
        http::StatusCode::NO_CONTENT
    );
    assert!(
        closes_within(&mut by_cookie, Duration::from_secs(5)).await,
        "the logged-out session's socket stayed open"
    );
    assert!(
        echoes(&mut by_token).await,
        "another session's socket was closed"
    );
    // Logout everywhere ends that one too.
    let (s, _, _) = post_with_token(app.public_addr, "/auth/logout?all=true", &other.access).await;
    assert_eq!(s, http::StatusCode::NO_CONTENT);
    assert!(closes_within(&mut by_token, Duration::from_secs(5)).await);
}

/// A revocation this process did not write (here: one written straight into the store, as
/// another replica or the CLI would) is found at the next re-check.
#[tokio::test(flavor = "multi_thread")]
async fn a_revocation_from_elsewhere_closes_the_tunnel_at_the_next_recheck() {
    let redis = Redis::start();
    let ws_addr = websocket_echo().await;
    let fx = Fixture::new();
    let rev = format!("backend = \"redis\"\nredis_url = \"{}\"", redis.url());
    let cfg = fx.config(ws_addr, HS256, &rev, "", "tunnel_recheck = \"1s\"");
    let app = start(&fx.write("ws.toml", &cfg)).await;
    let t = login_pair(app.public_addr, "alice", "alice-password").await;
    let bearer = format!("Bearer {}", t.access);
    let mut ws = open(app.public_addr, ("authorization", &bearer)).await;
    assert!(echoes(&mut ws).await);
    // `authgate revoke --user alice`, from another process.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["revoke", "--user", "alice", "--config"])
        .arg(fx.path("ws.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        closes_within(&mut ws, Duration::from_secs(5)).await,
        "the revoked user's socket stayed open past the re-check"
    );
}
