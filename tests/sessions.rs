//! Refresh rotation: parallel refreshes, the reuse grace, and the absolute session lifetime.
// A test crate: its helpers (not only #[test] fns, which clippy.toml covers) may unwrap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use http::StatusCode;
use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn ten_parallel_refreshes_at_most_one_wins() {
    let redis = Redis::start();
    let (_fx, _up, app) = gateway(
        &format!("backend = \"redis\"\nredis_url = \"{}\"", redis.url()),
        HS256,
    )
    .await;
    let t = login(app.public_addr, "alice", "alice-password").await;
    let refresh = t["refresh_token"].as_str().unwrap().to_owned();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let addr = app.public_addr;
        let r = refresh.clone();
        tasks.push(tokio::spawn(async move {
            send(
                addr,
                post("/auth/refresh")
                    .header("authorization", format!("Bearer {r}"))
                    .body(empty())
                    .unwrap(),
            )
            .await
            .0
        }));
    }
    let mut wins = 0;
    for t in tasks {
        if t.await.unwrap() == StatusCode::OK {
            wins += 1;
        }
    }
    assert!(wins <= 1, "{wins} parallel refreshes won");
}

#[tokio::test(flavor = "multi_thread")]
async fn reuse_grace_returns_the_current_pair() {
    let tokens = format!("{HS256}\nrefresh_reuse_grace = \"30s\"");
    let (_fx, _up, app) = gateway(MEMORY, &tokens).await;
    let t = login(app.public_addr, "alice", "alice-password").await;
    let r1 = t["refresh_token"].as_str().unwrap();
    let refresh = |r: &str| {
        post("/auth/refresh")
            .header("authorization", format!("Bearer {r}"))
            .body(empty())
            .unwrap()
    };
    let (_, _, a) = send(app.public_addr, refresh(r1)).await;
    let (s, _, b) = send(app.public_addr, refresh(r1)).await;
    assert_eq!(s, StatusCode::OK, "replay within grace: {b}");
    assert_eq!(json(&a)["refresh_token"], json(&b)["refresh_token"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_never_extends_the_session() {
    let tokens = "algorithm = \"HS256\"\nsecret_file = \"secret\"\naccess_ttl = \"15m\"\nrefresh_ttl = \"1h\"\nleeway = \"0s\"";
    let (_fx, _up, app) = gateway(MEMORY, tokens).await;
    let t = login(app.public_addr, "alice", "alice-password").await;
    let first_exp = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(
        t["refresh_token"].as_str().unwrap(),
    )
    .unwrap()
    .claims["exp"]
        .clone();
    // Not a synchronization: a second must pass so the rotated token's `iat` differs (the
    // behaviour under test is that `exp` still does not move).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let req = post("/auth/refresh")
        .header(
            "authorization",
            format!("Bearer {}", t["refresh_token"].as_str().unwrap()),
        )
        .body(empty())
        .unwrap();
    let (s, _, body) = send(app.public_addr, req).await;
    assert_eq!(s, StatusCode::OK);
    let next = json(&body);
    let next_exp = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(
        next["refresh_token"].as_str().unwrap(),
    )
    .unwrap()
    .claims["exp"]
        .clone();
    assert_eq!(first_exp, next_exp, "rotation extended the session");
}

/// The cookies of a form login with only the refresh cookie kept (the browser dropped the
/// expired access cookie).
async fn refresh_cookie_only(addr: std::net::SocketAddr) -> String {
    let (cookie, _) = browser_login(addr, "alice", "alice-password").await;
    cookie
        .split("; ")
        .filter(|c| c.starts_with("authgate_refresh="))
        .collect::<Vec<_>>()
        .join("; ")
}

fn cookie_value(headers: &http::HeaderMap, name: &str) -> String {
    set_cookies(headers)
        .into_iter()
        .find_map(|(k, v)| (k == name).then_some(v))
        .unwrap_or_default()
}

/// Regression (red team, medium): the shared result of a cookie refresh answered the old
/// refresh cookie for 30 s without a revocation check, so `logout?all` did not end it, and a
/// replay got the new pair even with `refresh_reuse_grace = "0s"`.
#[tokio::test(flavor = "multi_thread")]
async fn logout_ends_a_refreshed_cookie_session_at_once() {
    let gw = TestGateway::new()
        .tokens(&format!("{HS256}\nrefresh_reuse_grace = \"30s\""))
        .start()
        .await;
    let old = refresh_cookie_only(gw.addr).await;
    let (s, h, body) = send(gw.addr, with_cookie(get("/web/a"), &old)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let access = cookie_value(&h, "authgate_access");
    assert!(!access.is_empty());
    let (s, _, _) = post_with_token(gw.addr, "/auth/logout?all=true", &access).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let before = gw.up.requests().len();
    let (s, _, body) = send(gw.addr, with_cookie(get("/web/b"), &old)).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "the logged-out session answered: {body}"
    );
    assert_eq!(
        gw.up.requests().len(),
        before,
        "the upstream saw a logged-out session"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_reuse_grace_a_replayed_refresh_cookie_ends_the_session() {
    let gw = TestGateway::new().start().await; // refresh_reuse_grace: default 0s
    let old = refresh_cookie_only(gw.addr).await;
    let (s, h, body) = send(gw.addr, with_cookie(get("/web/a"), &old)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let access = cookie_value(&h, "authgate_access");
    // A second client replaying the spent cookie: reuse, the session is revoked.
    let (s, h2, _) = send(gw.addr, with_cookie(get("/web/b"), &old)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(
        cookie_value(&h2, "authgate_access").is_empty(),
        "a new pair was handed out"
    );
    let (s, _, _) = get_with_token(gw.addr, "/web/c", &access).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "the session survived a reuse");
}

/// Regression (red team, high): every presented refresh cookie was kept for 30 s before it
/// was verified. Junk cookies now cost nothing: the shared map holds verified sessions only.
#[tokio::test(flavor = "multi_thread")]
async fn junk_refresh_cookies_are_refused_before_anything_is_kept() {
    let gw = TestGateway::new().start().await;
    let junk = "x".repeat(4096);
    for i in 0..50 {
        let cookie = format!("authgate_refresh={junk}{i}");
        let (s, _, _) = send(gw.addr, with_cookie(get("/web/a"), &cookie)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    // A forged refresh token of the right shape (good claims, bad signature) is junk too.
    let mut forged = sign(&claims("refresh"));
    forged.push('x');
    let (s, _, _) = send(
        gw.addr,
        with_cookie(get("/web/a"), &format!("authgate_refresh={forged}")),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

/// Regression (red team, medium): a Redis that restarted without persistence forgot every
/// revocation, and a logged-out token worked again. The store's epoch key went with its data:
/// the next check writes a new one, and every token issued before it is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_redis_that_lost_its_data_refuses_tokens_from_before() {
    let mut redis = Redis::start();
    let gw = TestGateway::new().redis(&redis, "").start().await;
    let gone = login_pair(gw.addr, "alice", "alice-password").await;
    let kept = login_pair(gw.addr, "alice", "alice-password").await;
    assert_eq!(
        post_with_token(gw.addr, "/auth/logout", &gone.access)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        get_with_token(gw.addr, "/app/x", &kept.access).await.0,
        StatusCode::OK
    );
    let now = authgate::clock::now_secs();
    while authgate::clock::now_secs() == now {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    redis.restart(); // no persistence: everything is gone
    let refused = |t: String| {
        let addr = gw.addr;
        async move {
            let (s, _, body) = get_with_token(addr, "/app/x", &t).await;
            s == StatusCode::UNAUTHORIZED && body.contains("epoch")
        }
    };
    // The connection comes back on its own; until it does the store is down (503).
    assert!(eventually(Duration::from_secs(10), || refused(gone.access.clone())).await);
    assert!(
        refused(kept.access.clone()).await,
        "a token from before the loss passed"
    );
    let fresh = login_pair(gw.addr, "alice", "alice-password").await;
    assert_eq!(
        get_with_token(gw.addr, "/app/x", &fresh.access).await.0,
        StatusCode::OK
    );
}
