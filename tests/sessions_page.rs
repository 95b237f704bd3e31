//! The sessions page (`/auth/sessions`), per-session revocation by its user, and the
//! operator's session control (admin listener and `authgate sessions`).
// A test crate: its helpers (not only #[test] fns, which clippy.toml covers) may unwrap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use authgate::App;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use std::net::SocketAddr;
use support::*;

const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

/// A gateway on `revocation`, with `admin.token_file` when `token` (the fixture keeps the files).
async fn gateway_with(revocation: &str, token: bool) -> (Fixture, Upstream, App) {
    let up = Upstream::start().await;
    let fx = Fixture::new();
    let mut text = fx.config(up.addr, HS256, revocation, "", "");
    if token {
        fx.write("admin-token", &format!("{ADMIN_TOKEN}\n"));
        let admin = "[admin]\nlisten = \"127.0.0.1:0\"\n";
        assert!(text.contains(admin));
        text = text.replace(admin, &format!("{admin}token_file = \"admin-token\"\n"));
    }
    let config = fx.write("authgate.toml", &text);
    let app = start(&config).await;
    (fx, up, app)
}

fn redis_rev(r: &Redis) -> String {
    format!("backend = \"redis\"\nredis_url = \"{}\"", r.url())
}

/// `GET /auth/sessions` as JSON with a browser's cookies or a bearer token.
async fn sessions_json(
    addr: SocketAddr,
    cookie: Option<&str>,
    token: Option<&str>,
) -> serde_json::Value {
    let mut b = get("/auth/sessions");
    if let Some(c) = cookie {
        b = b.header("cookie", c);
    }
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let (status, _, body) = send(addr, b.body(empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    json(&body)
}

fn sids(v: &serde_json::Value) -> Vec<String> {
    v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sid"].as_str().unwrap().to_owned())
        .collect()
}

fn current(v: &serde_json::Value) -> String {
    let cur: Vec<&serde_json::Value> = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["current"] == true)
        .collect();
    assert_eq!(cur.len(), 1, "exactly one current session: {v}");
    cur[0]["sid"].as_str().unwrap().to_owned()
}

async fn me_with_cookie(addr: SocketAddr, cookie: &str) -> StatusCode {
    send(addr, with_cookie(get("/auth/me"), cookie)).await.0
}

/// A browser's form POST with its cookies and CSRF field.
fn form_post(path: &str, cookie: &str, csrf: &str) -> http::Request<Full<Bytes>> {
    post(path)
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(format!("csrf_token={csrf}"))))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_lists_two_browser_sessions_and_revoking_one_ends_only_it() {
    let (_fx, _up, app) = gateway_with(MEMORY, false).await;
    let addr = app.public_addr;
    let (c1, csrf1) = browser_login(addr, "alice", "alice-password").await;
    let (c2, _) = browser_login(addr, "alice", "alice-password").await;

    let (status, headers, html) = send(
        addr,
        get("/auth/sessions")
            .header("cookie", &c1)
            .header("accept", "text/html")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(html.matches("<section").count(), 2, "{html}");
    assert_eq!(html.matches("(this browser)").count(), 1, "{html}");
    assert!(html.contains("Sign out all other sessions"));
    assert!(html.contains(&format!("value=\"{csrf1}\"")));

    let list = sessions_json(addr, Some(&c1), None).await;
    let mine = current(&list);
    let other = sids(&list).into_iter().find(|s| *s != mine).unwrap();
    assert_eq!(sids(&list).len(), 2);
    assert_eq!(list["sessions"][0]["method"], "password");
    assert_eq!(list["sessions"][0]["ip"], "127.0.0.1");

    let (status, headers, _) = send(
        addr,
        form_post(&format!("/auth/sessions/{other}/revoke"), &c1, &csrf1),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/auth/sessions");
    assert_eq!(me_with_cookie(addr, &c2).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me_with_cookie(addr, &c1).await, StatusCode::OK);
    assert_eq!(sids(&sessions_json(addr, Some(&c1), None).await), [mine]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_browser_without_a_session_is_sent_to_sign_in_and_a_cross_site_post_is_refused() {
    let (_fx, _up, app) = gateway_with(MEMORY, false).await;
    let addr = app.public_addr;
    let (status, headers, _) = send(
        addr,
        get("/auth/sessions")
            .header("accept", "text/html")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(headers["location"], "/auth/login?next=/auth/sessions");
    let (c1, _) = browser_login(addr, "alice", "alice-password").await;
    let (c2, _) = browser_login(addr, "alice", "alice-password").await;
    let other = current(&sessions_json(addr, Some(&c2), None).await);
    let (status, _, _) = send(
        addr,
        post(&format!("/auth/sessions/{other}/revoke"))
            .header("cookie", &c1)
            .header("origin", "https://evil.example")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from("csrf_token=wrong")))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(me_with_cookie(addr, &c2).await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_others_keeps_only_the_current_session() {
    let (_fx, _up, app) = gateway_with(MEMORY, false).await;
    let addr = app.public_addr;
    let (c1, _) = browser_login(addr, "alice", "alice-password").await;
    let (c2, _) = browser_login(addr, "alice", "alice-password").await;
    let t = login_pair(addr, "alice", "alice-password").await;
    let (status, _, body) = post_with_token(addr, "/auth/sessions/revoke-others", &t.access).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(json(&body)["revoked"], 2);
    assert_eq!(me_with_cookie(addr, &c1).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me_with_cookie(addr, &c2).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        get_with_token(addr, "/auth/me", &t.access).await.0,
        StatusCode::OK
    );
    assert_eq!(
        sids(&sessions_json(addr, None, Some(&t.access)).await).len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_cannot_revoke_another_users_session() {
    let (_fx, _up, app) = gateway_with(MEMORY, false).await;
    let addr = app.public_addr;
    let alice = login_pair(addr, "alice", "alice-password").await;
    let root = login_pair(addr, "root", "root-password").await;
    let root_sid = current(&sessions_json(addr, None, Some(&root.access)).await);
    let (status, _, _) = post_with_token(
        addr,
        &format!("/auth/sessions/{root_sid}/revoke"),
        &alice.access,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        get_with_token(addr, "/auth/me", &root.access).await.0,
        StatusCode::OK
    );
    // Nor is another user's session in one's list.
    assert!(!sids(&sessions_json(addr, None, Some(&alice.access)).await).contains(&root_sid));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bearer_token_gets_json_with_where_and_how_it_signed_in() {
    let (_fx, _up, app) = gateway_with(MEMORY, false).await;
    let addr = app.public_addr;
    let req = post("/auth/login")
        .header("content-type", "application/json")
        .header("user-agent", "sessions-test/1.0\t(x)")
        .body(json_body(
            serde_json::json!({"username": "alice", "password": "alice-password"}),
        ))
        .unwrap();
    let (status, _, body) = send(addr, req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let t = TokenPair::from_json(json(&body));
    // Even asking for HTML, a token gets JSON (the page's buttons need a cookie session).
    let (status, headers, body) = send(
        addr,
        get("/auth/sessions")
            .header("authorization", format!("Bearer {}", t.access))
            .header("accept", "text/html")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    let v = json(&body);
    let s = &v["sessions"][0];
    assert_eq!(v["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(s["current"], true);
    assert_eq!(s["method"], "password");
    assert_eq!(s["ip"], "127.0.0.1");
    assert_eq!(s["user_agent"], "sessions-test/1.0?(x)");
    assert!(s["started"].as_u64().unwrap() > 1_700_000_000);
    assert!(s["last_refresh"].is_null());
    let (status, _, body) = send(
        addr,
        post("/auth/refresh")
            .header("authorization", format!("Bearer {}", t.refresh))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let t2 = TokenPair::from_json(json(&body));
    let v = sessions_json(addr, None, Some(&t2.access)).await;
    assert!(v["sessions"][0]["last_refresh"].as_u64().is_some(), "{v}");
    // A bearer client revokes its own current session: 204, and it is over.
    let sid = current(&v);
    let (status, _, _) =
        post_with_token(addr, &format!("/auth/sessions/{sid}/revoke"), &t2.access).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        get_with_token(addr, "/auth/me", &t2.access).await.0,
        StatusCode::UNAUTHORIZED
    );
}

async fn admin_send(
    admin: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, String) {
    let mut b = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "admin.test");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let (status, _, body) = send(admin, b.body(empty()).unwrap()).await;
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_session_control_needs_a_configured_token() {
    let (_fx, _up, app) = gateway_with(MEMORY, false).await;
    let t = login_pair(app.public_addr, "alice", "alice-password").await;
    let (status, body) = admin_send(
        app.admin_addr,
        "GET",
        "/admin/sessions?user=alice",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("admin.token_file"), "{body}");
    let sid = current(&sessions_json(app.public_addr, None, Some(&t.access)).await);
    let (status, _) = admin_send(
        app.admin_addr,
        "POST",
        &format!("/admin/sessions/{sid}/revoke"),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        get_with_token(app.public_addr, "/auth/me", &t.access)
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_lists_and_revokes_with_the_token_memory() {
    let (_fx, up, app) = gateway_with(MEMORY, true).await;
    let addr = app.public_addr;
    let t = login_pair(addr, "alice", "alice-password").await;
    let (c, _) = browser_login(addr, "alice", "alice-password").await;
    for token in [None, Some("wrong-token-0123456789abcdef")] {
        let (status, _) =
            admin_send(app.admin_addr, "GET", "/admin/sessions?user=alice", token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) =
            admin_send(app.admin_addr, "POST", "/admin/sessions/x/revoke", token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, body) = admin_send(
        app.admin_addr,
        "GET",
        "/admin/sessions?user=alice",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed = json(&body);
    assert_eq!(sids(&listed).len(), 2);
    let token_sid = current(&sessions_json(addr, None, Some(&t.access)).await);
    let (status, body) = admin_send(
        app.admin_addr,
        "POST",
        &format!("/admin/sessions/{token_sid}/revoke"),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(json(&body)["user"], "alice");
    assert_eq!(
        get_with_token(addr, "/auth/me", &t.access).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(me_with_cookie(addr, &c).await, StatusCode::OK);
    let (status, _) = admin_send(
        app.admin_addr,
        "POST",
        "/admin/sessions/unknown-sid/revoke",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The public listener never answers /admin/* itself: there it is an app's path like any
    // other (this fixture routes /admin/** to the upstream for role admin).
    let root = login_pair(addr, "root", "root-password").await;
    let (status, _, body) = get_with_token(addr, "/admin/sessions?user=alice", &root.access).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("upstream ok"), "{body}");
    assert_eq!(up.last().uri, "/admin/sessions?user=alice");
    let (status, _, _) = get_with_token(addr, "/admin/sessions?user=alice", ADMIN_TOKEN).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_on_one_redis_see_and_revoke_the_same_sessions() {
    let redis = Redis::start();
    let (_fa, _ua, a) = gateway_with(&redis_rev(&redis), true).await;
    let (_fb, _ub, b) = gateway_with(&redis_rev(&redis), true).await;
    let (ca, csrf_a) = browser_login(a.public_addr, "alice", "alice-password").await;
    let (cb, _) = browser_login(b.public_addr, "alice", "alice-password").await;
    let tb = login_pair(b.public_addr, "alice", "alice-password").await;
    let on_a = sessions_json(a.public_addr, Some(&ca), None).await;
    let (status, body) = admin_send(
        b.admin_addr,
        "GET",
        "/admin/sessions?user=alice",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut x = sids(&on_a);
    let mut y = sids(&json(&body));
    x.sort();
    y.sort();
    assert_eq!(x.len(), 3);
    assert_eq!(x, y, "both replicas list the same sessions");

    // Revoked on A (the page), over on B.
    let sid_b = current(&sessions_json(b.public_addr, Some(&cb), None).await);
    let (status, _, _) = send(
        a.public_addr,
        form_post(&format!("/auth/sessions/{sid_b}/revoke"), &ca, &csrf_a),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        me_with_cookie(b.public_addr, &cb).await,
        StatusCode::UNAUTHORIZED
    );
    // Revoked by an operator on A (sid only: the owner is looked up), over on B.
    let token_sid = current(&sessions_json(b.public_addr, None, Some(&tb.access)).await);
    let (status, body) = admin_send(
        a.admin_addr,
        "POST",
        &format!("/admin/sessions/{token_sid}/revoke"),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        get_with_token(b.public_addr, "/auth/me", &tb.access)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(me_with_cookie(a.public_addr, &ca).await, StatusCode::OK);
    assert_eq!(
        sids(&sessions_json(b.public_addr, Some(&ca), None).await).len(),
        1
    );
}

fn bin() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_authgate"));
    c.env_remove("AUTHGATE_CONFIG").env("RUST_LOG", "info");
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_lists_and_revokes_sessions_in_redis() {
    let redis = Redis::start();
    let (fx, _up, app) = gateway_with(&redis_rev(&redis), false).await;
    let addr = app.public_addr;
    let config = fx.path("authgate.toml");
    let t1 = login_pair(addr, "alice", "alice-password").await;
    let t2 = login_pair(addr, "alice", "alice-password").await;
    let run = |args: &[&str]| {
        let out = bin()
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = tokio::task::block_in_place(|| run(&["sessions", "list", "alice"]));
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].contains("\t127.0.0.1\tpassword\t"), "{out}");
    assert!(lines[0].contains(" UTC\t"), "{out}");
    let sid1 = current(&sessions_json(addr, None, Some(&t1.access)).await);
    assert!(out.contains(&sid1));

    let (code, out, err) = tokio::task::block_in_place(|| run(&["sessions", "revoke", &sid1]));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("revoked session"), "{out}");
    assert_eq!(
        get_with_token(addr, "/auth/me", &t1.access).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get_with_token(addr, "/auth/me", &t2.access).await.0,
        StatusCode::OK
    );

    let (code, _, err) =
        tokio::task::block_in_place(|| run(&["sessions", "revoke", "no-such-sid"]));
    assert_eq!(code, Some(1));
    assert!(err.contains("no live session"), "{err}");
    // A sid is base64url: one in 64 begins with `-`, and must be read as a sid, not a flag.
    let (code, _, err) =
        tokio::task::block_in_place(|| run(&["sessions", "revoke", "-Dno-such-sid"]));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no live session"), "{err}");

    let (code, _, err) =
        tokio::task::block_in_place(|| run(&["sessions", "revoke", "--user", "alice"]));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        get_with_token(addr, "/auth/me", &t2.access).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (code, out, _) = tokio::task::block_in_place(|| run(&["sessions", "list", "alice"]));
    assert_eq!(code, Some(0));
    assert!(out.is_empty(), "{out}");
}

#[test]
fn a_missing_admin_token_file_is_a_config_error_naming_the_key() {
    let fx = Fixture::new();
    let up: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let text = fx.config(up, HS256, MEMORY, "", "").replace(
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"nope/admin-token\"\n",
    );
    let path = fx.write("authgate.toml", &text);
    let out = bin()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = text.lines().position(|l| l.contains("token_file")).unwrap() + 1;
    assert!(err.contains(&format!("authgate.toml:{line}:")), "{err}");
    assert!(
        err.contains("admin.token_file") && err.contains("nope/admin-token"),
        "{err}"
    );
    assert!(err.contains("openssl rand"), "{err}");
}
