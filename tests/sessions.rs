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
