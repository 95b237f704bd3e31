//! Machine clients: API keys made with the real CLI (`authgate keys create|list|revoke`) open
//! only `api_keys = true` routes, never the gateway's own endpoints; a revoked key is refused
//! at once on a second replica (Redis) or at the next reload (users file); HTTP Basic on
//! `basic = true` routes is throttled like a login, cached without the password, and stops
//! working when the password changes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use base64::Engine;
use http::StatusCode;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use support::*;

const ROUTES: &str = "path = \"/api/**\"\nupstream = \"app\"\napi_keys = true\n\n\
[[routes]]\npath = \"/legacy/**\"\nupstream = \"app\"\nbasic = true\n\n\
[[routes]]\npath = \"/both/**\"\nupstream = \"app\"\nbasic = true\napi_keys = true\nroles = [\"deploy\"]\n";

fn cli(config: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("AUTHGATE_CONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn create_key(config: &Path, args: &[&str]) -> String {
    let mut all = vec!["keys", "create"];
    all.extend_from_slice(args);
    let (ok, out, err) = cli(config, &all);
    assert!(ok, "{err}");
    let key = out.trim().to_owned();
    assert!(key.starts_with("agk_") && key.len() == 47, "{key}");
    key
}

async fn get_with(
    addr: SocketAddr,
    path: &str,
    header: (&str, &str),
) -> (StatusCode, http::HeaderMap, String) {
    send(
        addr,
        get(path).header(header.0, header.1).body(empty()).unwrap(),
    )
    .await
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test]
async fn a_key_opens_only_routes_that_take_keys() {
    let gw = TestGateway::new().route(ROUTES).start().await;
    let key = create_key(
        &gw.config,
        &[
            "--name",
            "ci-deploy",
            "--roles",
            "deploy",
            "--user",
            "svc-ci",
        ],
    );
    let limited = create_key(
        &gw.config,
        &[
            "--name",
            "narrow",
            "--roles",
            "deploy",
            "--routes",
            "/api/a/**",
        ],
    );
    assert!(gw.app.reload().await);
    // Bearer and X-API-Key both open an api_keys route; the upstream sees the identity and
    // the key's name, never the key.
    for (h, v) in [
        ("authorization", format!("Bearer {key}")),
        ("x-api-key", key.clone()),
    ] {
        let (status, _, body) = get_with(gw.addr, "/api/x", (h, &v)).await;
        assert_eq!(status, StatusCode::OK, "{h}: {body}");
        let seen = gw.up.last();
        assert_eq!(seen.headers["x-auth-user"], "svc-ci");
        assert_eq!(seen.headers["x-auth-roles"], "deploy");
        assert_eq!(seen.headers["x-auth-key"], "ci-deploy");
        assert!(seen.headers.get("authorization").is_none());
        assert!(seen.headers.get("x-api-key").is_none());
    }
    // A client cannot claim a key's name.
    let (status, ..) = send(
        gw.addr,
        get("/api/x")
            .header("authorization", format!("Bearer {key}"))
            .header("x-auth-key", "admin-key")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(gw.up.last().headers["x-auth-key"], "ci-deploy");
    // Not on a route without api_keys, and never at the gateway's own endpoints.
    for path in ["/other/x", "/auth/me", "/legacy/x"] {
        let (status, ..) =
            get_with(gw.addr, path, ("authorization", &format!("Bearer {key}"))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let (status, ..) = send(
        gw.addr,
        post("/auth/refresh")
            .header("authorization", format!("Bearer {key}"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert!(status.is_client_error(), "{status}");
    // A wrong key, a mangled one.
    let mut wrong = key.clone();
    wrong.pop();
    wrong.push(if key.ends_with('A') { 'B' } else { 'A' });
    for bad in [wrong.as_str(), "agk_short"] {
        let (status, ..) = get_with(gw.addr, "/api/x", ("x-api-key", bad)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}");
    }
    // `--routes` narrows it.
    let (status, ..) = get_with(gw.addr, "/api/a/1", ("x-api-key", &limited)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, ..) = get_with(gw.addr, "/api/b/1", ("x-api-key", &limited)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Roles still apply: /both needs deploy, which the key has; a key without it is 403.
    let plain = create_key(&gw.config, &["--name", "plain", "--roles", "read"]);
    assert!(gw.app.reload().await);
    let (status, ..) = get_with(gw.addr, "/both/x", ("x-api-key", &key)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, ..) = get_with(gw.addr, "/both/x", ("x-api-key", &plain)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The users file keeps only the SHA-256; list shows the keys; revoke + reload ends it.
    let users = std::fs::read_to_string(gw.fx.path("users.toml")).unwrap();
    assert!(!users.contains(&key[4..]), "the key itself was stored");
    assert!(users.contains("[[key]]") && users.contains("[[user]]"));
    let (ok, list, _) = cli(&gw.config, &["keys", "list"]);
    assert!(
        ok && list.contains("ci-deploy\tdeploy\tsvc-ci\t") && list.contains("narrow"),
        "{list}"
    );
    let (ok, _, err) = cli(&gw.config, &["keys", "revoke", "ci-deploy"]);
    assert!(ok, "{err}");
    assert!(gw.app.reload().await);
    let (status, ..) = get_with(gw.addr, "/api/x", ("x-api-key", &key)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The others still work, and password users are untouched.
    let (status, ..) = get_with(gw.addr, "/api/a/1", ("x-api-key", &limited)).await;
    assert_eq!(status, StatusCode::OK);
    login(gw.addr, "alice", "alice-password").await;
}

/// A replica whose users (and keys) and revocations live in `redis`.
struct Replica {
    addr: SocketAddr,
    config: std::path::PathBuf,
    _fx: Fixture,
    _up: Upstream,
    _app: authgate::App,
}

async fn redis_replica(redis: &Redis) -> Replica {
    let up = Upstream::start().await;
    let fx = Fixture::new();
    let rev = format!("backend = \"redis\"\nredis_url = \"{}\"\n", redis.url());
    let text = fx
        .config(up.addr, HS256, &rev, &format!("[[routes]]\n{ROUTES}"), "")
        .replace(
            "[users]\nfile = \"users.toml\"",
            "[users]\nbackend = \"redis\"",
        );
    let config = fx.write("authgate.toml", &text);
    let app = start(&config).await;
    Replica {
        addr: app.public_addr,
        config,
        _fx: fx,
        _up: up,
        _app: app,
    }
}

#[tokio::test]
async fn a_revoked_key_is_refused_at_once_on_another_replica() {
    let redis = Redis::start();
    let a = redis_replica(&redis).await;
    let b = redis_replica(&redis).await;
    let key = create_key(&a.config, &["--name", "shared", "--roles", "deploy"]);
    let (ok, list, err) = cli(&b.config, &["keys", "list"]);
    assert!(ok && list.contains("shared"), "{list}{err}");
    for gw in [&a, &b] {
        let (status, _, body) = get_with(gw.addr, "/api/x", ("x-api-key", &key)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // Last use is recorded (at most once a minute).
    let (_, list, _) = cli(&b.config, &["keys", "list"]);
    let line = list.lines().find(|l| l.starts_with("shared\t")).unwrap();
    assert!(!line.split('\t').nth(5).unwrap().starts_with('-'), "{line}");
    let (ok, out, err) = cli(&a.config, &["keys", "revoke", "shared"]);
    assert!(ok && out.contains("every replica"), "{out}{err}");
    // No waiting: replica b cached the key, but the revocation is checked on every request.
    let (status, ..) = get_with(b.addr, "/api/x", ("x-api-key", &key)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, ..) = get_with(a.addr, "/api/x", ("x-api-key", &key)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn basic_is_a_login_with_its_throttle_a_cache_and_a_challenge() {
    let gw = TestGateway::new().route(ROUTES).start().await;
    let addr = gw.addr;
    let ok = basic("alice", "alice-password");
    for _ in 0..5 {
        let (status, _, body) = get_with(addr, "/legacy/x", ("authorization", &ok)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let seen = gw.up.last();
    assert_eq!(seen.headers["x-auth-user"], "alice");
    assert!(
        seen.headers.get("authorization").is_none(),
        "the password went upstream"
    );
    // One argon2 verification for five requests (the cache), as the metric counts.
    let (_, _, metrics) = send(gw.admin, get("/metrics").body(empty()).unwrap()).await;
    let basic_ok = metrics
        .lines()
        .find(|l| {
            l.starts_with("authgate_logins_total")
                && l.contains("method=\"basic\"")
                && l.contains("outcome=\"ok\"")
        })
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(basic_ok.ends_with(" 1"), "{basic_ok}");
    // No credentials, or wrong ones: 401 with a Basic challenge.
    let (status, headers, _) = send(addr, get("/legacy/x").body(empty()).unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic realm="));
    let (status, headers, _) = get_with(
        addr,
        "/legacy/x",
        ("authorization", &basic("alice", "nope")),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic"));
    // Not on a route without basic.
    let (status, ..) = get_with(addr, "/other/x", ("authorization", &ok)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Unknown users fail the same way; the throttle (3 per user here) engages like a login's.
    let (status, ..) = get_with(addr, "/legacy/x", ("authorization", &basic("nobody", "x"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let mut last = StatusCode::OK;
    for _ in 0..4 {
        last = get_with(
            addr,
            "/legacy/x",
            ("authorization", &basic("root", "wrong")),
        )
        .await
        .0;
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
    // A changed password: after the reload the cached pair no longer works.
    let users = std::fs::read_to_string(gw.fx.path("users.toml")).unwrap();
    let old_line = users
        .lines()
        .skip_while(|l| !l.contains("\"alice\""))
        .find(|l| l.starts_with("password_hash"))
        .unwrap()
        .to_owned();
    let new_hash = authgate::auth::passwords::hash_password(b"new-password").unwrap();
    std::fs::write(
        gw.fx.path("users.toml"),
        users.replace(&old_line, &format!("password_hash = \"{new_hash}\"")),
    )
    .unwrap();
    assert!(gw.app.reload().await);
    let (status, ..) = get_with(addr, "/legacy/x", ("authorization", &ok)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, ..) = get_with(
        addr,
        "/legacy/x",
        ("authorization", &basic("alice", "new-password")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // A key through Basic (user:agk_...) on a route that takes both.
    let key = create_key(&gw.config, &["--name", "ci", "--roles", "deploy"]);
    assert!(gw.app.reload().await);
    let (status, ..) = get_with(addr, "/both/x", ("authorization", &basic("ci", &key))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(gw.up.last().headers["x-auth-key"], "ci");
    let (status, ..) = get_with(
        addr,
        "/both/x",
        ("authorization", &basic("someone-else", &key)),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// A client that sends many requests at once with the same Basic pair costs one argon2 run:
/// the others wait for it (without that they filled the hashing pool and heard 503).
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_one_basic_pair_is_verified_once() {
    let gw = TestGateway::new().route(ROUTES).start().await;
    let addr = gw.addr;
    let pair = basic("alice", "alice-password");
    let burst = (0..24).map(|_| {
        let pair = pair.clone();
        async move {
            get_with(addr, "/legacy/x", ("authorization", &pair))
                .await
                .0
        }
    });
    let answers = futures_util::future::join_all(burst).await;
    assert!(answers.iter().all(|s| *s == StatusCode::OK), "{answers:?}");
    let (_, _, metrics) = send(gw.admin, get("/metrics").body(empty()).unwrap()).await;
    let verified = metrics
        .lines()
        .find(|l| {
            l.starts_with("authgate_logins_total")
                && l.contains("method=\"basic\"")
                && l.contains("outcome=\"ok\"")
        })
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(verified.ends_with(" 1"), "{verified}");
}
