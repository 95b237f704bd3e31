//! Browser sessions: cookies, CSRF for unsafe methods, the redirect to the login page, and
//! the on-the-fly refresh of an expired access cookie.
// A test crate: its helpers (not only #[test] fns, which clippy.toml covers) may unwrap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use http::StatusCode;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn cookie_session_needs_csrf_for_unsafe_methods() {
    let (_fx, up, app) = gateway(MEMORY, HS256).await;
    let t = login(app.public_addr, "alice", "alice-password").await;
    let cookie = format!(
        "authgate_access={}; authgate_csrf=c5rf; theirs=1",
        t["access_token"].as_str().unwrap()
    );
    let (s, _, _) = send(app.public_addr, with_cookie(get("/app/x"), &cookie)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        up.last().headers.get("cookie").unwrap(),
        "theirs=1",
        "gateway cookies leaked upstream"
    );
    let (s, _, body) = send(app.public_addr, with_cookie(post("/app/x"), &cookie)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(json(&body)["error"], "csrf");
    let ok = post("/app/x")
        .header("cookie", &cookie)
        .header("x-csrf-token", "c5rf")
        .body(empty())
        .unwrap();
    assert_eq!(send(app.public_addr, ok).await.0, StatusCode::OK);
    let wrong = post("/app/x")
        .header("cookie", &cookie)
        .header("x-csrf-token", "nope")
        .body(empty())
        .unwrap();
    assert_eq!(send(app.public_addr, wrong).await.0, StatusCode::FORBIDDEN);
    // A plain HTML form may carry the value as a field instead; the body reaches the upstream whole.
    let form = |body: &'static str| {
        post("/app/form")
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap()
    };
    let (s, _, _) = send(app.public_addr, form("a=1&csrf_token=c5rf&b=2")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(up.last().body_len, "a=1&csrf_token=c5rf&b=2".len());
    assert_eq!(
        send(app.public_addr, form("a=1&csrf_token=bad")).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(app.public_addr, form("a=1")).await.0,
        StatusCode::FORBIDDEN
    );
    // Bearer-authenticated requests need no CSRF token.
    let bearer = post("/app/x")
        .header(
            "authorization",
            format!("Bearer {}", t["access_token"].as_str().unwrap()),
        )
        .body(empty())
        .unwrap();
    assert_eq!(send(app.public_addr, bearer).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn redirect_route_sends_browsers_to_the_login_page() {
    let extra =
        "[[routes]]\npath = \"/web/**\"\nupstream = \"app\"\non_unauthenticated = \"redirect\"\n";
    let up = Upstream::start().await;
    let fx = Fixture::new();
    let app = start(&fx.write("r.toml", &fx.config(up.addr, HS256, MEMORY, extra, ""))).await;
    let (s, h, _) = send(app.public_addr, get("/web/page?x=1").body(empty()).unwrap()).await;
    assert_eq!(s, StatusCode::FOUND);
    assert_eq!(
        h.get("location").unwrap(),
        "/auth/login?next=/web/page%3Fx%3D1"
    );
    let (s, h, page) = send(
        app.public_addr,
        get("/auth/login?next=//evil.com").body(empty()).unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(h
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.contains("<form") && !page.contains("evil.com"));
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_access_cookie_is_refreshed_on_the_fly() {
    let (_fx, up, app) = gateway(MEMORY, HS256).await;
    let t = login(app.public_addr, "alice", "alice-password").await;
    let refresh = t["refresh_token"].as_str().unwrap();
    // The browser dropped the access cookie at its Max-Age; the refresh cookie is still there.
    let cookie = format!("authgate_refresh={refresh}; authgate_csrf=keep-me");
    let (s, h, body) = send(app.public_addr, with_cookie(get("/app/x"), &cookie)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(up.last().headers.get("x-auth-user").unwrap(), "alice");
    assert!(
        up.last().headers.get("cookie").is_none(),
        "gateway cookies leaked upstream"
    );
    let set: Vec<String> = h
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        set.iter().any(|c| c.starts_with("authgate_access=ey")),
        "{set:?}"
    );
    assert!(
        set.iter()
            .any(|c| c.starts_with("authgate_refresh=ey") && !c.contains(refresh)),
        "{set:?}"
    );
    assert!(
        set.iter().any(|c| c.starts_with("authgate_csrf=keep-me;")),
        "{set:?}"
    );
    // The refresh cookie was rotated: presenting the old one again is reuse.
    let (s, _, _) = send(app.public_addr, with_cookie(get("/app/x"), &cookie)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}
