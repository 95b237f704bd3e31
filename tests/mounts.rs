//! Apps under a path, and apps that think they live elsewhere (§10): `strip_prefix`,
//! `upstream_prefix` and `X-Forwarded-Prefix`; `Location`, `Refresh` and `Set-Cookie` answers
//! rewritten to the public origin and mount; app cookies expired at logout; HTTP Basic for
//! apps that only know HTTP authentication.
// A test crate: its helpers (not only #[test] fns, which clippy.toml covers) may unwrap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use http::StatusCode;
use support::*;

fn set_cookie_lines(h: &http::HeaderMap) -> Vec<String> {
    h.get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// Regression (real apps): Trac's absolute redirect to its own internal port sent the browser
/// around the gateway; an app under `strip_prefix` lost its redirects and cookies.
#[tokio::test(flavor = "multi_thread")]
async fn a_prefixed_app_keeps_its_redirects_cookies_and_prefix() {
    let gw = TestGateway::new()
        .route("path = \"/wiki/**\"\nupstream = \"app\"\nauth = \"public\"\nstrip_prefix = \"/wiki\"\nupstream_prefix = \"/trac\"")
        .route("path = \"/plain/**\"\nupstream = \"app\"\nauth = \"public\"\nstrip_prefix = \"/plain\"")
        .start()
        .await;
    let up = format!("http://{}", gw.up.addr);
    let req = get("/wiki/ticket/1?x=2")
        .header("x-forwarded-prefix", "/evil")
        .header("x-answer-status", "302")
        .header("x-answer-location", format!("{up}/trac/ticket/2"))
        .header(
            "x-answer-set-cookie",
            "trac_session=abc; Path=/trac; HttpOnly",
        )
        .body(empty())
        .unwrap();
    let (s, h, _) = send(gw.addr, req).await;
    assert_eq!(s, StatusCode::FOUND);
    let seen = gw.up.last();
    assert_eq!(
        seen.uri, "/trac/ticket/1?x=2",
        "the app's own prefix in front"
    );
    assert_eq!(
        seen.headers["x-forwarded-prefix"], "/wiki",
        "the public mount, not the client's"
    );
    assert_eq!(h["location"], "http://gw.test/wiki/ticket/2");
    assert_eq!(
        set_cookie_lines(&h),
        ["trac_session=abc; Path=/wiki; HttpOnly"]
    );

    // Only strip_prefix: any local path the app names is under the mount.
    let req = get("/plain/a")
        .header("x-answer-status", "302")
        .header("x-answer-location", "/login?next=/a")
        .header("x-answer-refresh", "0; url=/start")
        .header("x-answer-set-cookie", "sessionid=1; Path=/")
        .body(empty())
        .unwrap();
    let (_, h, _) = send(gw.addr, req).await;
    assert_eq!(gw.up.last().uri, "/a");
    assert_eq!(h["location"], "/plain/login?next=/a");
    assert_eq!(h["refresh"], "0; url=/plain/start");
    assert_eq!(set_cookie_lines(&h), ["sessionid=1; Path=/plain"]);

    // At the root, the app's absolute self-URL still becomes the gateway's; others stay.
    for (location, want) in [
        (format!("{up}/x"), "http://gw.test/x".to_owned()),
        (
            "https://idp.example/login".to_owned(),
            "https://idp.example/login".to_owned(),
        ),
    ] {
        let req = get("/public/r")
            .header("x-answer-status", "302")
            .header("x-answer-location", location)
            .body(empty())
            .unwrap();
        let (_, h, _) = send(gw.addr, req).await;
        assert_eq!(h["location"], want.as_str());
        assert!(!gw.up.last().headers.contains_key("x-forwarded-prefix"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rewriting_can_be_turned_off_per_route() {
    let gw = TestGateway::new()
        .route("path = \"/raw/**\"\nupstream = \"app\"\nauth = \"public\"\nstrip_prefix = \"/raw\"\nredirect_rewrite = false\ncookie_rewrite = false")
        .start()
        .await;
    let req = get("/raw/a")
        .header("x-answer-status", "302")
        .header("x-answer-location", "/login")
        .header("x-answer-set-cookie", "s=1; Path=/")
        .body(empty())
        .unwrap();
    let (_, h, _) = send(gw.addr, req).await;
    assert_eq!(h["location"], "/login");
    assert_eq!(set_cookie_lines(&h), ["s=1; Path=/"]);
}

/// Regression (real apps): after logout the app's own session cookie lived on.
#[tokio::test(flavor = "multi_thread")]
async fn logout_expires_the_apps_cookies_where_the_route_says() {
    let gw = TestGateway::new()
        .route("path = \"/django/**\"\nupstream = \"app\"\nstrip_prefix = \"/django\"\nlogout_clear_cookies = [\"sessionid\", \"csrftoken\"]")
        .start()
        .await;
    let (cookie, csrf) = browser_login(gw.addr, "alice", "alice-password").await;
    let req = post("/auth/logout")
        .header("cookie", &cookie)
        .header("x-csrf-token", csrf)
        .body(empty())
        .unwrap();
    let (s, h, _) = send(gw.addr, req).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let lines = set_cookie_lines(&h);
    for name in ["sessionid", "csrftoken"] {
        for path in ["/django", "/"] {
            assert!(
                lines.iter().any(|l| l.starts_with(&format!("{name}=;"))
                    && l.contains(&format!("Path={path};"))
                    && l.contains("Max-Age=0")),
                "{name} at {path} not expired: {lines:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn apps_that_only_know_http_auth_get_the_user_as_basic() {
    let up = Upstream::start().await;
    let fx = Fixture::new();
    let text = fx
        .config(up.addr, HS256, MEMORY, "", "")
        .replace("[login]", "[identity]\npass_basic_auth = true\n\n[login]");
    let app = start(&fx.write("basic.toml", &text)).await;
    let t = login_pair(app.public_addr, "alice", "alice-password").await;
    let (s, _, _) = get_with_token(app.public_addr, "/app/x", &t.access).await;
    assert_eq!(s, StatusCode::OK);
    // base64("alice:")
    assert_eq!(up.last().headers["authorization"], "Basic YWxpY2U6");
    // A public request carries no identity, and no client-made Basic either.
    let req = get("/public/x")
        .header("authorization", "Basic cm9vdDo=")
        .body(empty())
        .unwrap();
    send(app.public_addr, req).await;
    assert!(!up.last().headers.contains_key("authorization"));
}
