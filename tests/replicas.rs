//! Several gateways and one Redis: shared revocation, Redis down (fail closed, recover
//! without restart), and the opt-in local mirror.
// A test crate: its helpers (not only #[test] fns, which clippy.toml covers) may unwrap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use http::StatusCode;
use serde_json::json;
use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_share_one_redis() {
    let redis = Redis::start();
    let rev = format!("backend = \"redis\"\nredis_url = \"{}\"", redis.url());
    let (_fx1, _up1, a) = gateway(&rev, HS256).await;
    let (_fx2, _up2, b) = gateway(&rev, HS256).await;
    let t = login(a.public_addr, "alice", "alice-password").await;
    let access = t["access_token"].as_str().unwrap();
    assert_eq!(
        get_with_token(b.public_addr, "/app/x", access).await.0,
        StatusCode::OK
    );
    let req = post("/auth/logout")
        .header("authorization", format!("Bearer {access}"))
        .body(empty())
        .unwrap();
    assert_eq!(send(a.public_addr, req).await.0, StatusCode::NO_CONTENT);
    assert_eq!(
        get_with_token(b.public_addr, "/app/x", access).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_down_fails_closed_then_recovers_without_restart() {
    let mut redis = Redis::start();
    let (_fx, _up, app) = gateway(
        &format!(
            "backend = \"redis\"\nredis_url = \"{}\"\ntimeout = \"300ms\"",
            redis.url()
        ),
        HS256,
    )
    .await;
    let addr = app.public_addr;
    let t = login(addr, "alice", "alice-password").await;
    let access = t["access_token"].as_str().unwrap().to_owned();
    redis.stop();
    let (s, _, body) = get_with_token(addr, "/app/x", &access).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(json(&body)["error"], "unavailable");
    let req = post("/auth/login")
        .header("content-type", "application/json")
        .body(json_body(
            json!({"username": "alice", "password": "alice-password"}),
        ))
        .unwrap();
    assert_eq!(send(addr, req).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        send(addr, get("/public/x").body(empty()).unwrap()).await.0,
        StatusCode::OK,
        "public routes must keep working"
    );
    // The protected request and the login each counted one failed store call (before any
    // readiness probe ran).
    let (_, _, metrics) = send(app.admin_addr, get("/metrics").body(empty()).unwrap()).await;
    let failed: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("authgate_store_errors_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no store error counter in:\n{metrics}"));
    assert!(failed >= 2, "store errors counted: {failed}");
    assert_eq!(
        send(app.admin_addr, get("/readyz").body(empty()).unwrap())
            .await
            .0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // Past the token's second: the restarted Redis (no persistence) starts a new epoch.
    let later = authgate::clock::now_secs() + 1;
    while authgate::clock::now_secs() < later {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    redis.restart();
    // The store reconnects in the background: probe readiness until it answers 200.
    let admin = app.admin_addr;
    let recovered = eventually(Duration::from_secs(5), || async move {
        send(admin, get("/readyz").body(empty()).unwrap()).await.0 == StatusCode::OK
    })
    .await;
    assert!(recovered, "readiness did not come back");
    // It came back empty: a token from before can no longer be told from a revoked one.
    let (s, _, body) = get_with_token(addr, "/app/x", &access).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("epoch"), "{body}");
    let fresh = login(addr, "alice", "alice-password").await;
    assert_eq!(
        get_with_token(addr, "/app/x", fresh["access_token"].as_str().unwrap())
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mirror_mode_keeps_cross_replica_revocation_and_fails_closed_when_stale() {
    let mut redis = Redis::start();
    let plain = format!(
        "backend = \"redis\"\nredis_url = \"{}\"\ntimeout = \"300ms\"",
        redis.url()
    );
    let mirrored = format!("{plain}\nmirror = true\nmirror_staleness = \"500ms\"");
    // A revokes alice everywhere before B exists: B must learn it from its first full copy.
    let (_fx1, _up1, a) = gateway(&plain, HS256).await;
    let old = login(a.public_addr, "alice", "alice-password").await;
    let old_access = old["access_token"].as_str().unwrap().to_owned();
    let req = post("/auth/logout?all=true")
        .header("authorization", format!("Bearer {old_access}"))
        .body(empty())
        .unwrap();
    assert_eq!(send(a.public_addr, req).await.0, StatusCode::NO_CONTENT);
    let (_fx2, _up2, b) = gateway(&mirrored, HS256).await;
    // The mirror syncs in the background: no event reaches the test, so probe until it shows.
    let wait_for = |addr, token: String, want: StatusCode| async move {
        eventually(Duration::from_secs(5), || {
            let token = token.clone();
            async move { get_with_token(addr, "/app/x", &token).await.0 == want }
        })
        .await
    };
    let fresh = login(a.public_addr, "alice", "alice-password").await;
    let access = fresh["access_token"].as_str().unwrap().to_owned();
    assert!(
        wait_for(b.public_addr, access.clone(), StatusCode::OK).await,
        "mirror never came in sync"
    );
    assert_eq!(
        get_with_token(b.public_addr, "/app/x", &old_access).await.0,
        StatusCode::UNAUTHORIZED,
        "snapshot missed a cut-off"
    );
    // A logout on A reaches B by pub/sub.
    let req = post("/auth/logout")
        .header("authorization", format!("Bearer {access}"))
        .body(empty())
        .unwrap();
    assert_eq!(send(a.public_addr, req).await.0, StatusCode::NO_CONTENT);
    assert!(
        wait_for(b.public_addr, access.clone(), StatusCode::UNAUTHORIZED).await,
        "logout on A never reached B"
    );
    // Redis gone: B cannot know about new revocations, so it fails closed; then it recovers.
    let third = login(a.public_addr, "alice", "alice-password").await;
    let third_access = third["access_token"].as_str().unwrap().to_owned();
    assert!(wait_for(b.public_addr, third_access.clone(), StatusCode::OK).await);
    redis.stop();
    assert!(
        wait_for(
            b.public_addr,
            third_access.clone(),
            StatusCode::SERVICE_UNAVAILABLE
        )
        .await,
        "stale mirror kept answering"
    );
    // Past the token's `iat` (which a cut-off earlier in this test put one second ahead).
    let later = authgate::clock::now_secs() + 2;
    while authgate::clock::now_secs() < later {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    redis.restart();
    // The restarted Redis lost everything, its epoch key included: the resynced mirror
    // refuses every token from before (no revoked one can work again); new ones work.
    assert!(
        wait_for(b.public_addr, third_access, StatusCode::UNAUTHORIZED).await,
        "mirror did not resync after the restart"
    );
    // A reconnects on its own: until then its logins are 503.
    let addr = a.public_addr;
    let fourth_login = || async move {
        let req = post("/auth/login")
            .header("content-type", "application/json")
            .body(json_body(
                json!({"username": "alice", "password": "alice-password"}),
            ))
            .unwrap();
        send(addr, req).await
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            fourth_login().await.0 == StatusCode::OK
        })
        .await
    );
    let fourth = json(&fourth_login().await.2);
    assert!(
        wait_for(
            b.public_addr,
            fourth["access_token"].as_str().unwrap().to_owned(),
            StatusCode::OK
        )
        .await,
        "a new session did not work after the resync"
    );
}

/// Every message the writer and the Lua scripts publish decodes as the event it describes.
#[tokio::test(flavor = "multi_thread")]
async fn published_revocations_decode_as_events() {
    use authgate::store::schema::RevocationEvent;
    use authgate::store::{RedisStore, RotateRequest, Rotation};
    use futures_util::StreamExt;
    let redis = Redis::start();
    let store = RedisStore::new(
        &authgate::config::RedisSettings::single(&redis.url()),
        "t:",
        Duration::from_secs(2),
        None,
    )
    .unwrap();
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(store.keys().channel()).await.unwrap();
    let minute = Duration::from_secs(60);
    // CUTOFF script (it publishes the maximum it stored).
    store.revoke_user("bob", 100, minute).await.unwrap();
    store.revoke_user("bob", 50, minute).await.unwrap();
    // The writer's pipeline.
    store.revoke_session("bob", "s1", minute).await.unwrap();
    // ROTATE script: a reused refresh token revokes its session.
    store
        .start_session("bob", "s2", "j1", minute)
        .await
        .unwrap();
    let rotate = |presented: &'static str, new: &'static str| RotateRequest {
        sub: "bob",
        sid: "s2",
        presented_jti: presented,
        new_jti: new,
        new_token: new,
        grace: Duration::ZERO,
        ttl: minute,
    };
    assert_eq!(
        store.rotate(&rotate("j1", "j2")).await.unwrap(),
        Rotation::Rotated
    );
    assert_eq!(
        store.rotate(&rotate("j1", "j3")).await.unwrap(),
        Rotation::Reused
    );
    let mut messages = pubsub.on_message();
    let mut events = Vec::new();
    for _ in 0..4 {
        let msg = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .unwrap()
            .unwrap();
        let text: String = msg.get_payload().unwrap();
        events.push(RevocationEvent::decode(&text).unwrap_or_else(|e| panic!("{e}")));
    }
    let cut = |cutoff| RevocationEvent::Cutoff {
        user: "bob".into(),
        cutoff,
        ttl: 60,
    };
    let sid = |sid: &str| RevocationEvent::Session {
        sid: sid.into(),
        ttl: 60,
    };
    assert_eq!(events, vec![cut(100), cut(101), sid("s1"), sid("s2")]);
}

/// A shared-store blip must not take every replica out of its Service at once.
#[tokio::test(flavor = "multi_thread")]
async fn readiness_can_ignore_the_store() {
    let mut redis = Redis::start();
    let fx = Fixture::new();
    let up = Upstream::start().await;
    let rev = format!(
        "backend = \"redis\"\nredis_url = \"{}\"\ntimeout = \"300ms\"",
        redis.url()
    );
    let text = fx
        .config(up.addr, HS256, &rev, "", "")
        .replace("[admin]\n", "[admin]\nready_requires_store = false\n");
    let app = start(&fx.write("r.toml", &text)).await;
    redis.stop();
    let (s, _, body) = send(app.admin_addr, get("/readyz").body(empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(body.contains("store down"), "{body}");
    // Public routes keep working; protected ones fail closed on their own.
    assert_eq!(
        send(app.public_addr, get("/public/x").body(empty()).unwrap())
            .await
            .0,
        StatusCode::OK
    );
}

/// `/metrics` is Prometheus text 0.0.4 unless OpenMetrics is asked for.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_speak_prometheus_text_unless_asked_for_openmetrics() {
    let gw = TestGateway::new().start().await;
    send(gw.addr, get("/public/x").body(empty()).unwrap()).await;
    let (_, h, text) = send(gw.admin, get("/metrics").body(empty()).unwrap()).await;
    assert!(h
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    assert!(!text.contains("# EOF"));
    // Every sample belongs to a family declared by its own name (promtool's rule).
    let typed: std::collections::HashMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name = line.split(['{', ' ']).next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| typed.get(f) == Some(&"histogram"))
            })
            .unwrap_or(name);
        assert!(
            typed.contains_key(family),
            "{name} has no # TYPE of its own:\n{text}"
        );
    }
    assert_eq!(typed.get("authgate_requests_total"), Some(&"counter"));
    // The standard process metrics, the build, and when the configuration was loaded.
    assert_eq!(typed.get("process_cpu_seconds_total"), Some(&"counter"));
    for g in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "authgate_build_info",
        "authgate_config_last_reload_success_timestamp_seconds",
    ] {
        assert_eq!(typed.get(g), Some(&"gauge"), "{g}:\n{text}");
    }
    let rss: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(rss > 1e6, "{rss}");
    assert!(text.contains(&format!(
        "authgate_build_info{{version=\"{}\"",
        env!("CARGO_PKG_VERSION")
    )));
    let req = get("/metrics")
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .body(empty())
        .unwrap();
    let (_, h, text) = send(gw.admin, req).await;
    assert!(h
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(text.trim_end().ends_with("# EOF"));
}

/// The families an operator expects, each moved by real traffic (Redis as the store), and the
/// whole text accepted by the Prometheus project's own parser (`prometheus-client` for Python,
/// which `scripts/test.sh` installs).
#[tokio::test(flavor = "multi_thread")]
async fn metric_families_by_outcome_route_operation_and_upstream() {
    let redis = Redis::start();
    let gw = TestGateway::new()
        .redis(&redis, "")
        .route("path = \"/web/**\"\nupstream = \"app\"\non_unauthenticated = \"redirect\"")
        .start()
        .await;
    let user = login_pair(gw.addr, "alice", "alice-password").await;
    let bad = post("/auth/login")
        .header("content-type", "application/json")
        .body(json_body(json!({"username": "alice", "password": "wrong"})))
        .unwrap();
    assert_eq!(send(gw.addr, bad).await.0, StatusCode::UNAUTHORIZED);
    // ok twice (the second a cache hit), missing, invalid, forbidden, expired, csrf, revoked.
    for _ in 0..2 {
        assert_eq!(
            get_with_token(gw.addr, "/app/x", &user.access).await.0,
            StatusCode::OK
        );
    }
    assert_eq!(
        send(gw.addr, get("/app/x").body(empty()).unwrap()).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get_with_token(gw.addr, "/app/x", "not.a.token").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get_with_token(gw.addr, "/admin/x", &user.access).await.0,
        StatusCode::FORBIDDEN
    );
    let mut old = claims("access");
    old["exp"] = json!(authgate::clock::now_secs() - 3600);
    assert_eq!(
        get_with_token(gw.addr, "/app/x", &sign(&old)).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (cookie, _csrf) = browser_login(gw.addr, "alice", "alice-password").await;
    let cross_site = post("/web/form")
        .header("cookie", &cookie)
        .header("sec-fetch-site", "cross-site")
        .body(empty())
        .unwrap();
    assert_eq!(send(gw.addr, cross_site).await.0, StatusCode::FORBIDDEN);
    post_with_token(gw.addr, "/auth/logout", &user.access).await;
    assert_eq!(
        get_with_token(gw.addr, "/app/x", &user.access).await.0,
        StatusCode::UNAUTHORIZED
    );

    let (_, _, text) = send(gw.admin, get("/metrics").body(empty()).unwrap()).await;
    let sample = |name: &str, labels: &str| -> f64 {
        let prefix = format!("{name}{{{labels}}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix}in\n{text}"))
            .trim()
            .parse()
            .unwrap()
    };
    for (outcome, at_least) in [
        ("ok", 2.0),
        ("missing", 1.0),
        ("invalid", 1.0),
        ("expired", 1.0),
        ("revoked", 1.0),
        ("forbidden", 1.0),
        ("csrf", 1.0),
    ] {
        let n = sample(
            "authgate_auth_decisions_total",
            &format!("outcome=\"{outcome}\""),
        );
        assert!(n >= at_least, "{outcome}: {n}");
    }
    assert!(
        sample(
            "authgate_logins_total",
            "method=\"password\",outcome=\"ok\""
        ) >= 2.0
    );
    assert_eq!(
        sample(
            "authgate_logins_total",
            "method=\"password\",outcome=\"invalid_credentials\""
        ),
        1.0
    );
    assert!(sample("authgate_token_cache_lookups_total", "result=\"hit\"") >= 1.0);
    assert!(sample("authgate_token_cache_lookups_total", "result=\"miss\"") >= 1.0);
    assert!(sample("authgate_store_duration_seconds_count", "op=\"check\"") >= 1.0);
    assert!(
        sample(
            "authgate_store_duration_seconds_count",
            "op=\"start_session\""
        ) >= 1.0
    );
    assert!(
        sample(
            "authgate_upstream_duration_seconds_count",
            "upstream=\"app\""
        ) >= 2.0
    );
    assert!(sample("authgate_request_duration_seconds_count", "route=\"/**\"") >= 6.0);
    assert!(
        sample(
            "authgate_request_duration_seconds_count",
            "route=\"/admin/**\""
        ) >= 1.0
    );
    // The Prometheus project's parser takes the whole text.
    let mut py = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys\nfrom prometheus_client.parser import text_string_to_metric_families as p\n\
             fams = list(p(sys.stdin.read()))\nprint(len(fams))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is needed");
    use std::io::Write;
    py.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client rejected /metrics (pip install prometheus-client): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let families: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(families >= 10, "{families} families");
}
