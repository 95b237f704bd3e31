//! Logins: wrong passwords, throttling (memory and Redis counters), hashes made by another
//! argon2 implementation, and self-registration with the Redis user store.
// A test crate: its helpers (not only #[test] fns, which clippy.toml covers) may unwrap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use http::StatusCode;
use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn login_errors_and_throttling() {
    let (_fx, _up, app) = gateway(MEMORY, HS256).await;
    login_errors_and_throttling_against(app.public_addr).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn login_throttling_with_redis_counters() {
    let redis = Redis::start();
    let (_fx, _up, app) = gateway(
        &format!("backend = \"redis\"\nredis_url = \"{}\"", redis.url()),
        HS256,
    )
    .await;
    login_errors_and_throttling_against(app.public_addr).await;
}

async fn login_errors_and_throttling_against(addr: std::net::SocketAddr) {
    let attempt = |user: &str, pw: &str| {
        post("/auth/login")
            .header("content-type", "application/json")
            .body(json_body(json!({"username": user, "password": pw})))
            .unwrap()
    };
    let (s, _, unknown) = send(addr, attempt("nobody", "x")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (_, _, wrong) = send(addr, attempt("root", "wrong")).await;
    assert_eq!(
        json(&unknown),
        json(&wrong),
        "unknown user and wrong password must look the same"
    );
    assert_eq!(json(&wrong)["error"], "invalid_credentials");
    let (s, _, _) = send(
        addr,
        post("/auth/login")
            .header("content-type", "application/json")
            .body(json_body(json!({"username": "x"})))
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _, _) = send(
        addr,
        post("/auth/login").body(json_body(json!("{{{"))).unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let big = "a".repeat(100_000);
    let (s, _, body) = send(
        addr,
        post("/auth/login")
            .header("content-type", "application/json")
            .body(json_body(json!({"username": "root", "password": big})))
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    // Form login works too and sets the browser cookies.
    let form = post("/auth/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            "username=root&password=root-password",
        )))
        .unwrap();
    let (s, h, _) = send(addr, form).await;
    assert_eq!(s, StatusCode::OK);
    let cookies: Vec<_> = h
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        cookies.iter().any(|c| c.starts_with("authgate_access=")
            && c.contains("HttpOnly")
            && c.contains("SameSite=Lax")),
        "{cookies:?}"
    );
    assert!(cookies
        .iter()
        .any(|c| c.starts_with("authgate_csrf=") && !c.contains("HttpOnly")));
    // The successful login cleared root's failures; three more lock the account (max 3),
    // even for the right password.
    for _ in 0..3 {
        assert_eq!(
            send(addr, attempt("root", "wrong")).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let (s, h, body) = send(addr, attempt("root", "root-password")).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(json(&body)["error"], "too_many_attempts");
    let retry: u64 = h
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    // Another user is not affected.
    assert_eq!(
        send(addr, attempt("alice", "alice-password")).await.0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hash_from_another_argon2_implementation_logs_in() {
    let (_fx, _up, app) = gateway(MEMORY, HS256).await;
    let t = login(app.public_addr, "cffi", "cffi-password").await;
    assert!(t["access_token"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn registration_with_the_redis_user_store() {
    let redis = Redis::start();
    let up = Upstream::start().await;
    let fx = Fixture::new();
    let rev = format!("backend = \"redis\"\nredis_url = \"{}\"", redis.url());
    let text = fx.config(up.addr, HS256, &rev, "", "").replace(
        "[users]\nfile = \"users.toml\"",
        "[users]\nbackend = \"redis\"\nregistration = true",
    );
    let app = start(&fx.write("reg.toml", &text)).await;
    let register = |user: &str, pw: &str| {
        post("/auth/register")
            .header("content-type", "application/json")
            .body(json_body(json!({"username": user, "password": pw})))
            .unwrap()
    };
    let (s, _, body) = send(app.public_addr, register("dave", "dave-password")).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let (s, _, body) = send(app.public_addr, register("dave", "other-password")).await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert_eq!(
        send(app.public_addr, register("bad name!", "dave-password"))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    let t = login(app.public_addr, "dave", "dave-password").await;
    assert_eq!(
        get_with_token(
            app.public_addr,
            "/app/x",
            t["access_token"].as_str().unwrap()
        )
        .await
        .0,
        StatusCode::OK
    );

    // The CLI manages the same store: roles set there are in the next login's token.
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["users", "--config"])
        .arg(fx.path("reg.toml"))
        .args(["set-roles", "dave", "admin"])
        .status()
        .unwrap();
    assert!(st.success());
    let t = login(app.public_addr, "dave", "dave-password").await;
    assert_eq!(
        get_with_token(
            app.public_addr,
            "/admin/x",
            t["access_token"].as_str().unwrap()
        )
        .await
        .0,
        StatusCode::OK
    );

    // With registration off the endpoint does not exist.
    let (_fx2, _up2, off) = gateway(MEMORY, HS256).await;
    assert_eq!(
        send(off.public_addr, register("erin", "erin-password"))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}
