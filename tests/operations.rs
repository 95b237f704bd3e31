//! What an operator watches and does on the admin listener: certificate expiry metrics (at
//! start and after a reload), per-endpoint labels and error counters at zero, and
//! `POST /admin/unlock` on every store. (What the binary logs, audits and exports while
//! things fail: `tests/telemetry.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use rcgen::{CertificateParams, KeyPair};
use support::*;

/// A self-signed certificate for localhost valid until midnight UTC of the given day; its PEM
/// and its key's PEM, and that moment in Unix seconds.
fn cert_until(y: i32, m: u8, d: u8) -> (String, String, i64) {
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(y, m, d);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (
        cert.pem(),
        key.serialize_pem(),
        params.not_after.unix_timestamp(),
    )
}

/// The value of the expiry series whose labels contain all of `labels`.
fn expiry(metrics: &str, labels: &[&str]) -> Option<i64> {
    metrics
        .lines()
        .filter(|l| l.starts_with("authgate_certificate_expiry_timestamp_seconds{"))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| v.parse().unwrap())
}

async fn scrape(admin: std::net::SocketAddr) -> String {
    let (status, _, body) = send(admin, get("/metrics").body(empty()).unwrap()).await;
    assert_eq!(status, 200);
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn certificate_expiry_is_exported_at_start_and_follows_a_reload() {
    let fx_dir = tempfile::tempdir().unwrap();
    let w = |name: &str, text: &str| std::fs::write(fx_dir.path().join(name), text).unwrap();
    let (server_cert, server_key, server_until) = cert_until(2031, 1, 2);
    let (client_cert, client_key, client_until) = cert_until(2030, 6, 7);
    w("tls.crt", &server_cert);
    w("tls.key", &server_key);
    w("client.crt", &client_cert);
    w("client.key", &client_key);
    let p = |name: &str| fx_dir.path().join(name).display().to_string();
    let mtls = format!(
        "[[upstreams]]\nname = \"billing\"\nurl = \"https://127.0.0.1:9\"\n\
         ca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
        p("tls.crt"),
        p("client.crt"),
        p("client.key")
    );
    let gw = TestGateway::new()
        .server(&format!(
            "[server.tls]\ncert = \"{}\"\nkey = \"{}\"",
            p("tls.crt"),
            p("tls.key")
        ))
        .tables(&mtls)
        .start()
        .await;

    let metrics = scrape(gw.admin).await;
    assert!(
        metrics.contains("# TYPE authgate_certificate_expiry_timestamp_seconds gauge"),
        "{metrics}"
    );
    let server_labels = [
        "kind=\"server\"",
        "name=\"public\"",
        &format!("path=\"{}\"", p("tls.crt")),
    ];
    assert_eq!(
        expiry(&metrics, &server_labels),
        Some(server_until),
        "{metrics}"
    );
    let client_labels = [
        "kind=\"upstream_client\"",
        "name=\"billing\"",
        &format!("path=\"{}\"", p("client.crt")),
    ];
    assert_eq!(
        expiry(&metrics, &client_labels),
        Some(client_until),
        "{metrics}"
    );

    // Renewed server certificate, and the mTLS upstream removed: the reload moves one series
    // and drops the other.
    let (renewed, renewed_key, renewed_until) = cert_until(2032, 3, 4);
    w("tls.crt", &renewed);
    w("tls.key", &renewed_key);
    let text = std::fs::read_to_string(&gw.config).unwrap();
    std::fs::write(&gw.config, text.replace(&mtls, "")).unwrap();
    assert!(gw.app.reload().await, "the reload was refused");
    let metrics = scrape(gw.admin).await;
    assert_eq!(
        expiry(&metrics, &server_labels),
        Some(renewed_until),
        "{metrics}"
    );
    assert_eq!(
        expiry(&metrics, &["kind=\"upstream_client\""]),
        None,
        "{metrics}"
    );
    gw.app.begin_shutdown();
    gw.app.finished().await;
}

const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

/// A gateway on `revocation` with `admin.token_file`, 3 failures per user and 4 per address
/// allowed, and the loopback peer trusted for `X-Forwarded-For` (so a test can speak for
/// several client addresses).
async fn lockable(revocation: &str) -> (Fixture, Upstream, authgate::App) {
    let up = Upstream::start().await;
    let fx = Fixture::new();
    fx.write("admin-token", &format!("{ADMIN_TOKEN}\n"));
    let text = fx
        .config(
            up.addr,
            HS256,
            revocation,
            "",
            "trusted_proxies = [\"127.0.0.1/32\"]",
        )
        .replace(
            "[admin]\nlisten = \"127.0.0.1:0\"\n",
            "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"admin-token\"\n",
        )
        .replace("max_failures_per_ip = 100", "max_failures_per_ip = 4");
    assert!(text.contains("token_file") && text.contains("max_failures_per_ip = 4"));
    let app = start(&fx.write("authgate.toml", &text)).await;
    (fx, up, app)
}

async fn login_from(
    addr: std::net::SocketAddr,
    client: &str,
    user: &str,
    password: &str,
) -> http::StatusCode {
    let req = post("/auth/login")
        .header("content-type", "application/json")
        .header("x-forwarded-for", client)
        .body(json_body(
            serde_json::json!({"username": user, "password": password}),
        ))
        .unwrap();
    send(addr, req).await.0
}

async fn unlock(
    admin: std::net::SocketAddr,
    query: &str,
    form: &str,
    token: Option<&str>,
) -> (http::StatusCode, serde_json::Value) {
    let mut b = post(&format!("/admin/unlock{query}"))
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let (status, _, body) = send(admin, b.body(form.to_owned().into()).unwrap()).await;
    (status, json(&body))
}

/// The lockouts of one store, engaged and lifted through the admin listener.
async fn unlock_lifts_lockouts_on(revocation: &str) {
    let (_fx, _up, app) = lockable(revocation).await;
    let (addr, admin) = (app.public_addr, app.admin_addr);

    // An address locked out by failures spread over many names.
    for i in 0..4 {
        let s = login_from(addr, "203.0.113.9", &format!("nobody{i}"), "wrong").await;
        assert_eq!(s, 401, "{revocation}");
    }
    assert_eq!(
        login_from(addr, "203.0.113.9", "alice", "alice-password").await,
        429,
        "{revocation}: the address is not locked out"
    );
    // Guarded like /admin/sessions, POST only, and it must name something.
    assert_eq!(unlock(admin, "", "ip=203.0.113.9", None).await.0, 401);
    assert_eq!(
        unlock(admin, "", "ip=203.0.113.9", Some("wrong-token-0123456789"))
            .await
            .0,
        401
    );
    let (s, _, _) = send(
        admin,
        get("/admin/unlock?ip=203.0.113.9")
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, 405);
    let (s, body) = unlock(admin, "", "", Some(ADMIN_TOKEN)).await;
    assert_eq!(
        (s.as_u16(), body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let (s, body) = unlock(admin, "?ip=not-an-ip", "", Some(ADMIN_TOKEN)).await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(
        login_from(addr, "203.0.113.9", "alice", "alice-password").await,
        429,
        "{revocation}: refused calls unlocked something"
    );
    let (s, body) = unlock(admin, "", "ip=203.0.113.9", Some(ADMIN_TOKEN)).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["unlocked"]["ip"], "203.0.113.9");
    assert_eq!(
        login_from(addr, "203.0.113.9", "alice", "alice-password").await,
        200,
        "{revocation}: the address is still locked out"
    );

    // A user locked out, from another address.
    for _ in 0..3 {
        assert_eq!(
            login_from(addr, "198.51.100.1", "alice", "wrong").await,
            401
        );
    }
    assert_eq!(
        login_from(addr, "198.51.100.1", "alice", "alice-password").await,
        429,
        "{revocation}: the user is not locked out"
    );
    let (s, body) = unlock(admin, "?user=alice", "", Some(ADMIN_TOKEN)).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["unlocked"], serde_json::json!({"user": "alice"}));
    assert_eq!(
        login_from(addr, "198.51.100.1", "alice", "alice-password").await,
        200,
        "{revocation}: the user is still locked out"
    );
    app.begin_shutdown();
    app.finished().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_unlock_lifts_ip_and_user_lockouts_on_the_memory_store() {
    unlock_lifts_lockouts_on(MEMORY).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_unlock_lifts_ip_and_user_lockouts_on_the_file_store() {
    unlock_lifts_lockouts_on("backend = \"file\"\npath = \"state/revocations.redb\"").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_unlock_lifts_ip_and_user_lockouts_on_redis() {
    let redis = Redis::start();
    unlock_lifts_lockouts_on(&format!(
        "backend = \"redis\"\nredis_url = \"{}\"",
        redis.url()
    ))
    .await;
    drop(redis);
}

/// The value of the sample `name{labels}` exactly (labels in the order the gateway writes).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn own_endpoints_are_labelled_each_and_error_counters_start_at_zero() {
    let gw = TestGateway::new().start().await;
    let metrics = scrape(gw.admin).await;
    // Nothing has failed yet, and every error series an alert would watch is there.
    for series in [
        "authgate_upstream_errors_total{upstream=\"app\",kind=\"connect\"}",
        "authgate_upstream_errors_total{upstream=\"app\",kind=\"timeout\"}",
        "authgate_upstream_errors_total{upstream=\"app\",kind=\"io\"}",
        "authgate_upstream_host_ejections_total{upstream=\"app\"}",
        "authgate_logins_total{method=\"password\",outcome=\"invalid_credentials\"}",
        "authgate_logins_total{method=\"password\",outcome=\"throttled\"}",
        "authgate_logins_total{method=\"password\",outcome=\"unavailable\"}",
        "authgate_config_reloads_total{result=\"error\"}",
        "authgate_auth_decisions_total{outcome=\"invalid\"}",
        "authgate_store_errors_total",
    ] {
        assert_eq!(sample(&metrics, series), Some(0.0), "{series}:\n{metrics}");
    }
    // OIDC and Basic are not configured: none of their series.
    assert!(!metrics.contains("method=\"oidc\""), "{metrics}");

    let pair = login_pair(gw.addr, "alice", "alice-password").await;
    let (s, _, _) = send(
        gw.addr,
        post("/auth/refresh")
            .header("authorization", format!("Bearer {}", pair.refresh))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _, _) = get_with_token(gw.addr, "/auth/me", &pair.access).await;
    assert_eq!(s, 200);
    // Forward-auth from a peer that is not a trusted proxy: refused, and counted as verify.
    let (s, _, _) = send(gw.addr, get("/auth/verify").body(empty()).unwrap()).await;
    assert_eq!(s, 403);
    let (s, _, _) = send(gw.addr, get("/auth/nothing-here").body(empty()).unwrap()).await;
    assert_eq!(s, 404);

    let metrics = scrape(gw.admin).await;
    for (series, n) in [
        (
            "authgate_requests_total{route=\"authgate:login\",status=\"200\"}",
            1.0,
        ),
        (
            "authgate_requests_total{route=\"authgate:refresh\",status=\"200\"}",
            1.0,
        ),
        (
            "authgate_requests_total{route=\"authgate:me\",status=\"200\"}",
            1.0,
        ),
        (
            "authgate_requests_total{route=\"authgate:verify\",status=\"403\"}",
            1.0,
        ),
        (
            "authgate_requests_total{route=\"authgate:other\",status=\"404\"}",
            1.0,
        ),
        (
            "authgate_request_duration_seconds_count{route=\"authgate:login\"}",
            1.0,
        ),
        (
            "authgate_logins_total{method=\"password\",outcome=\"ok\"}",
            1.0,
        ),
    ] {
        assert_eq!(sample(&metrics, series), Some(n), "{series}:\n{metrics}");
    }
    assert!(!metrics.contains("route=\"authgate\""), "{metrics}");
    gw.app.begin_shutdown();
    gw.app.finished().await;
}

/// The value of a counter or gauge line `name{labels}` (or `name` alone).
fn value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(f64::NAN, |v| v.parse().unwrap())
}

/// Session events and the hashing pool are counted: present at zero, then one refresh, one
/// reuse (the session killed), one logout and one logout-everywhere; the pool's gauges are
/// back at rest after the logins.
#[tokio::test(flavor = "multi_thread")]
async fn session_events_and_the_hashing_pool_are_counted() {
    let gw = TestGateway::new().start().await;
    let before = scrape(gw.admin).await;
    for event in ["refresh", "logout", "logout_all", "refresh_reuse"] {
        let s = format!("authgate_session_events_total{{event=\"{event}\"}}");
        assert_eq!(value(&before, &s), 0.0, "{s} at zero: {before}");
    }
    let refresh = |token: String| {
        let addr = gw.addr;
        async move {
            let req = post("/auth/refresh")
                .header("content-type", "application/json")
                .body(json_body(serde_json::json!({ "refresh_token": token })))
                .unwrap();
            send(addr, req).await.0
        }
    };
    let a = login_pair(gw.addr, "alice", "alice-password").await;
    assert_eq!(refresh(a.refresh.clone()).await, 200);
    // The spent refresh token again: reuse, the session is killed.
    assert_eq!(refresh(a.refresh.clone()).await, 401);
    let b = login_pair(gw.addr, "alice", "alice-password").await;
    assert_eq!(
        post_with_token(gw.addr, "/auth/logout", &b.access).await.0,
        204
    );
    let c = login_pair(gw.addr, "alice", "alice-password").await;
    assert_eq!(
        post_with_token(gw.addr, "/auth/logout?all=true", &c.access)
            .await
            .0,
        204
    );
    let after = scrape(gw.admin).await;
    for (event, n) in [
        ("refresh", 1.0),
        ("refresh_reuse", 1.0),
        ("logout", 1.0),
        ("logout_all", 1.0),
    ] {
        let s = format!("authgate_session_events_total{{event=\"{event}\"}}");
        assert_eq!(value(&after, &s), n, "{s}: {after}");
    }
    assert_eq!(
        value(&after, "authgate_password_hash_refused_total"),
        0.0,
        "{after}"
    );
    // A hashing thread (nice 19) steps its gauges a moment after its answer went out.
    let rest = eventually(std::time::Duration::from_secs(10), || async {
        let m = scrape(gw.admin).await;
        value(&m, "authgate_password_hash_queue") == 0.0
            && value(&m, "authgate_password_hash_threads_busy") == 0.0
    })
    .await;
    assert!(rest, "{}", scrape(gw.admin).await);
}
