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
    // Without `next` it goes on to `login.default_next` ("/"), with no token in the body.
    let (s, h, body) = send(addr, form).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h.get("location").unwrap(), "/");
    assert!(body.is_empty(), "{body}");
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
    // A name that differs only in case is taken; names of punctuation alone are refused.
    let (s, _, body) = send(app.public_addr, register("Dave", "other-password")).await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    for bad in [".", "..", "-", ".hidden", "x\r\ny"] {
        let (s, _, body) = send(app.public_addr, register(bad, "dave-password")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad:?}: {body}");
    }
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

fn json_login(user: &str, pw: &str) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    post("/auth/login")
        .header("content-type", "application/json")
        .body(json_body(json!({"username": user, "password": pw})))
        .unwrap()
}

/// Regression: a wrong password for a real user cost a full argon2 verification, an unknown
/// user almost nothing (`known && verify(..)` short-circuited), so timing told which names
/// exist. Compared as a ratio of medians, never against an absolute time.
#[tokio::test(flavor = "multi_thread")]
async fn unknown_users_cost_as_much_as_known_ones() {
    let gw = TestGateway::new().start().await;
    let median = |mut v: Vec<std::time::Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    // Interleaved, two failures per round: under the fixture's limit of 3 per user.
    for round in 0..7 {
        for (user, into) in [
            ("alice", &mut known),
            (&*format!("ghost{round}"), &mut unknown),
        ] {
            let t = std::time::Instant::now();
            let (s, _, body) = send(gw.addr, json_login(user, "wrong-password")).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
            into.push(t.elapsed());
        }
        if round % 2 == 1 {
            // Keep alice under the limit: a right password clears her counter.
            login(gw.addr, "alice", "alice-password").await;
        }
    }
    let (k, u) = (median(known), median(unknown));
    assert!(
        u * 2 >= k,
        "unknown user median {u:?} is under half the known user median {k:?}"
    );
}

/// Regression: 120 parallel wrong passwords for one user got 34 password checks instead of
/// the limit. Each 401 is a check that ran; the rest must be 429 before any check.
async fn parallel_wrong_passwords_stop_at_the_limit(gw: &Running) {
    let attempts = (0..100).map(|_| {
        let addr = gw.addr;
        tokio::spawn(async move { send(addr, json_login("alice", "wrong")).await.0 })
    });
    let mut checked = 0;
    let mut refused = 0;
    for a in attempts {
        match a.await.unwrap() {
            StatusCode::UNAUTHORIZED => checked += 1,
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            other => panic!("unexpected {other}"),
        }
    }
    // The fixture allows 3 failures per user.
    assert!(checked <= 3, "{checked} password checks ran");
    assert_eq!(checked + refused, 100);
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_wrong_passwords_are_checked_at_most_the_limit_memory() {
    let gw = TestGateway::new().start().await;
    parallel_wrong_passwords_stop_at_the_limit(&gw).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_wrong_passwords_are_checked_at_most_the_limit_redis() {
    let redis = Redis::start();
    let gw = TestGateway::new().redis(&redis, "").start().await;
    parallel_wrong_passwords_stop_at_the_limit(&gw).await;
    // An operator lifts the lockout with the CLI.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["users", "--config"])
        .arg(&gw.config)
        .args(["unlock", "alice"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    login(gw.addr, "alice", "alice-password").await;
}

/// Regression: login A, logout-all, login B, logout-all with B's token, all in one second,
/// left B's tokens working (the second cut-off equalled the first while B was issued one
/// second past it).
async fn cut_off_race(gw: &Running) {
    for trial in 0..50 {
        let a = login_pair(gw.addr, "alice", "alice-password").await;
        assert_eq!(
            post_with_token(gw.addr, "/auth/logout?all=true", &a.access)
                .await
                .0,
            StatusCode::NO_CONTENT
        );
        let b = login_pair(gw.addr, "alice", "alice-password").await;
        assert_eq!(
            get_with_token(gw.addr, "/app/x", &b.access).await.0,
            StatusCode::OK
        );
        assert_eq!(
            post_with_token(gw.addr, "/auth/logout?all=true", &b.access)
                .await
                .0,
            StatusCode::NO_CONTENT
        );
        let (s, _, body) = get_with_token(gw.addr, "/app/x", &b.access).await;
        assert_eq!(
            s,
            StatusCode::UNAUTHORIZED,
            "trial {trial}: B's token survived: {body}"
        );
        assert_eq!(
            post_with_token(gw.addr, "/auth/refresh", &b.refresh)
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cut_off_covers_everything_issued_before_it_memory() {
    cut_off_race(&TestGateway::new().start().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cut_off_covers_everything_issued_before_it_redis() {
    let redis = Redis::start();
    cut_off_race(&TestGateway::new().redis(&redis, "").start().await).await;
}

/// Regression: `?all=True`, `?all=yes` and a bare `?all` logged out one session, silently.
#[tokio::test(flavor = "multi_thread")]
async fn logout_all_accepts_true_1_yes_in_any_case_and_refuses_the_rest() {
    let gw = TestGateway::new().start().await;
    for bad in ["all", "all=", "all=no", "all=2"] {
        let t = login_pair(gw.addr, "alice", "alice-password").await;
        let (s, _, body) =
            post_with_token(gw.addr, &format!("/auth/logout?{bad}"), &t.access).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(json(&body)["error"], "invalid_request");
        assert_eq!(
            get_with_token(gw.addr, "/app/x", &t.access).await.0,
            StatusCode::OK,
            "{bad} logged out"
        );
    }
    for good in ["all=True", "all=YES", "all=1"] {
        let other = login_pair(gw.addr, "alice", "alice-password").await;
        let t = login_pair(gw.addr, "alice", "alice-password").await;
        assert_eq!(
            post_with_token(gw.addr, &format!("/auth/logout?{good}"), &t.access)
                .await
                .0,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            get_with_token(gw.addr, "/app/x", &other.access).await.0,
            StatusCode::UNAUTHORIZED,
            "{good}"
        );
    }
}

/// Regression (red team, low): users hashed elsewhere with 64 MiB (argon2-cffi's defaults)
/// made every wrong password cost 64 MiB, and four at once took the process to 341 MiB. A
/// hash over `login.max_hash_memory` is refused when the gateway starts, naming the user.
#[tokio::test(flavor = "multi_thread")]
async fn a_hash_over_the_memory_cap_is_refused_at_start_naming_the_user() {
    let up = Upstream::start().await;
    let fx = Fixture::new(); // its user "cffi" is hashed with m=64 MiB
    let text = fx
        .config(up.addr, HS256, MEMORY, "", "")
        .replace("[login]\n", "[login]\nmax_hash_memory = \"32MiB\"\n");
    let cfg = fx.write("capped.toml", &text);
    let config = authgate::Config::load(&cfg).unwrap();
    let err = authgate::App::start(config)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("\"cffi\"") && err.contains("max_hash_memory"),
        "{err}"
    );
    // At the default cap (64 MiB) the same user signs in.
    let ok = fx.write("default.toml", &fx.config(up.addr, HS256, MEMORY, "", ""));
    let app = start(&ok).await;
    let t = login(app.public_addr, "cffi", "cffi-password").await;
    assert!(t["access_token"].is_string(), "{t}");
}

/// Parallel correct logins of one account are never "too many failed attempts": checks in
/// flight are not failures. Some may hear "busy, retry in a second" (429, Retry-After: 1).
#[tokio::test(flavor = "multi_thread")]
async fn parallel_correct_logins_are_never_locked_out() {
    let (_fx, _up, app) = gateway(MEMORY, HS256).await;
    let addr = app.public_addr;
    let tries = (0..12).map(|_| async move {
        let req = post("/auth/login")
            .header("content-type", "application/json")
            .body(json_body(
                serde_json::json!({"username": "alice", "password": "alice-password"}),
            ))
            .unwrap();
        send(addr, req).await
    });
    let answers = futures_util::future::join_all(tries).await;
    let mut ok = 0;
    for (status, headers, body) in &answers {
        match *status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(body.contains("\"busy\""), "{body}");
                assert_eq!(headers["retry-after"], "1");
            }
            StatusCode::SERVICE_UNAVAILABLE => {}
            other => panic!("{other}: {body}"),
        }
    }
    assert!(ok >= 1, "{answers:?}");
    // And the account is not locked afterwards.
    login(addr, "alice", "alice-password").await;
}
