//! Browser sessions: cookies, CSRF for unsafe methods, the redirect to the login page, and
//! the on-the-fly refresh of an expired access cookie.
// A test crate: its helpers (not only #[test] fns, which clippy.toml covers) may unwrap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use http::StatusCode;
use support::*;

/// `csrf = "token"`: the session's token on every unsafe cookie request (header or form field).
#[tokio::test(flavor = "multi_thread")]
async fn token_mode_needs_the_csrf_token_for_unsafe_methods() {
    let gw = TestGateway::new()
        .route("path = \"/app/**\"\nupstream = \"app\"\nauth = \"required\"\ncsrf = \"token\"")
        .start()
        .await;
    let (up, app) = (&gw.up, &gw.app);
    let t = login(app.public_addr, "alice", "alice-password").await;
    // The CSRF value is bound to the session: the one this session's form login handed out.
    let (session, c5rf) = browser_login(app.public_addr, "alice", "alice-password").await;
    let cookie = format!("{session}; theirs=1");
    let c5rf = c5rf.as_str();
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
        .header("x-csrf-token", c5rf)
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
    let form = |body: String| {
        post("/app/form")
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap()
    };
    let good = format!("a=1&csrf_token={c5rf}&b=2");
    let (s, _, _) = send(app.public_addr, form(good.clone())).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(up.last().body_len, good.len());
    // A value the cookie and the form agree on is not enough: it must be this session's.
    let planted = cookie.replace(c5rf, "planted");
    let req = post("/app/x")
        .header("cookie", &planted)
        .header("x-csrf-token", "planted")
        .body(empty())
        .unwrap();
    assert_eq!(send(app.public_addr, req).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        send(app.public_addr, form("a=1&csrf_token=bad".to_owned()))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(app.public_addr, form("a=1".to_owned())).await.0,
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
    let page_load = get("/web/page?x=1")
        .header("accept", "text/html,application/xhtml+xml")
        .body(empty())
        .unwrap();
    let (s, h, _) = send(app.public_addr, page_load).await;
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
    // A reuse grace: a request that left before the new cookies arrived shares the result.
    let tokens = format!("{HS256}\nrefresh_reuse_grace = \"30s\"");
    let (_fx, up, app) = gateway(MEMORY, &tokens).await;
    let t = login(app.public_addr, "alice", "alice-password").await;
    let refresh = t["refresh_token"].as_str().unwrap();
    // The browser dropped the access cookie at its Max-Age; the refresh cookie is still there.
    let cookie = format!("authgate_refresh={refresh}; authgate_csrf=whatever");
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
    // The CSRF value is the session's (it survives rotation: same session).
    let csrf = set
        .iter()
        .find_map(|c| c.strip_prefix("authgate_csrf="))
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_owned();
    assert_ne!(csrf, "whatever");
    // The old refresh cookie was spent; a request that left before the new cookies arrived
    // (another tab) gets the same new session, not a second rotation and not a revocation.
    let (s, h2, _) = send(app.public_addr, with_cookie(get("/app/x"), &cookie)).await;
    assert_eq!(s, StatusCode::OK);
    let again: Vec<String> = h2
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(again, set, "the second request got a different rotation");
}

fn form_login(body: &str) -> http::request::Builder {
    let _ = body;
    post("/auth/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "text/html,application/xhtml+xml")
}

fn form(
    b: http::request::Builder,
    body: &str,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    b.body(http_body_util::Full::new(bytes::Bytes::from(
        body.to_owned(),
    )))
    .unwrap()
}

/// Regression: a wrong password replaced the form with a raw JSON page and lost the user
/// name and `next`; a lockout did the same.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_form_login_shows_the_form_again_with_the_message() {
    let gw = TestGateway::new().start().await;
    let body = "username=alice&password=wrong&next=%2Fapp%2Fpage%3Fx%3D1";
    let (s, h, page) = send(gw.addr, form(form_login(body), body)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(h
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.contains("role=\"alert\""), "{page}");
    assert!(
        page.contains("value=\"alice\""),
        "the user name was lost: {page}"
    );
    assert!(
        page.contains("value=\"/app/page?x=1\""),
        "next was lost: {page}"
    );
    // The fixture locks after 3 failures: the page says how long to wait.
    for _ in 0..2 {
        send(gw.addr, form(form_login(body), body)).await;
    }
    let (s, h, page) = send(gw.addr, form(form_login(body), body)).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert!(h.get("retry-after").is_some());
    assert!(
        page.contains("Try again in") && (page.contains("minute") || page.contains("seconds")),
        "{page}"
    );
    // An API client still gets the contract's JSON.
    let (s, _, body) = send(
        gw.addr,
        post("/auth/login")
            .header("content-type", "application/json")
            .body(json_body(
                serde_json::json!({"username": "root", "password": "x"}),
            ))
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(json(&body)["error"], "invalid_credentials");
}

/// Regression: a hidden form on another site signed the victim's browser in as the attacker.
#[tokio::test(flavor = "multi_thread")]
async fn login_csrf_from_another_site_is_refused() {
    let gw = TestGateway::new().start().await;
    let body = "username=alice&password=alice-password";
    for (name, value) in [
        ("origin", "https://evil.example"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let (s, h, body) = send(gw.addr, form(form_login(body).header(name, value), body)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{name}: {value}: {body}");
        assert!(set_cookies(&h).is_empty());
    }
    for (name, value) in [
        ("origin", "http://gw.test"),
        ("sec-fetch-site", "same-origin"),
    ] {
        let (s, _, body) = send(gw.addr, form(form_login(body).header(name, value), body)).await;
        assert_eq!(s, StatusCode::SEE_OTHER, "{name}: {value}: {body}");
    }
    // Our pages send Referrer-Policy: no-referrer, so a browser posts their form with
    // `Origin: null` and `Sec-Fetch-Site: same-origin` (found in Chromium).
    let req = form_login(body)
        .header("origin", "null")
        .header("sec-fetch-site", "same-origin");
    assert_eq!(
        send(gw.addr, form(req, body)).await.0,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn form_login_goes_to_next_and_a_signed_in_visit_skips_the_form() {
    let gw = TestGateway::new().start().await;
    let body = "username=alice&password=alice-password&next=%2Fapp%2Fhome";
    let (s, h, page) = send(gw.addr, form(form_login(body), body)).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h.get("location").unwrap(), "/app/home");
    assert!(
        page.is_empty() && !page.contains("ey"),
        "tokens in the body: {page}"
    );
    let (cookie, _) = browser_login(gw.addr, "alice", "alice-password").await;
    let (s, h, _) = send(
        gw.addr,
        with_cookie(get("/auth/login?next=/app/there"), &cookie),
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h.get("location").unwrap(), "/app/there");
    // Open-redirect attempts go to the default instead.
    for bad in ["//evil.com", "https://evil.com", "/\\evil.com"] {
        let path = format!("/auth/login?next={}", authgate::path::encode_component(bad));
        let (s, h, _) = send(gw.addr, with_cookie(get(&path), &cookie)).await;
        assert_eq!(s, StatusCode::SEE_OTHER);
        assert_eq!(h.get("location").unwrap(), "/", "{bad}");
    }
}

/// Regression: `//app/page` produced `next=//app/page`, which was then refused as non-local.
#[tokio::test(flavor = "multi_thread")]
async fn the_redirect_to_login_carries_the_normalized_path() {
    let gw = TestGateway::new()
        .route("path = \"/web/**\"\nupstream = \"app\"\non_unauthenticated = \"redirect\"")
        .start()
        .await;
    let page_load = get("//web//./page?q=1")
        .header("sec-fetch-mode", "navigate")
        .body(empty())
        .unwrap();
    let (s, h, _) = send(gw.addr, page_load).await;
    assert_eq!(s, StatusCode::FOUND);
    assert_eq!(
        h.get("location").unwrap(),
        "/auth/login?next=/web/page%3Fq%3D1"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_pages_cannot_be_framed_and_fit_a_phone() {
    let gw = TestGateway::new().start().await;
    let (s, h, page) = send(gw.addr, get("/auth/login").body(empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h.get("x-frame-options").unwrap(), "DENY");
    let csp = h.get("content-security-policy").unwrap().to_str().unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert_eq!(h.get("x-content-type-options").unwrap(), "nosniff");
    assert_eq!(h.get("referrer-policy").unwrap(), "no-referrer");
    assert!(
        h.get("strict-transport-security").is_none(),
        "HSTS over plain HTTP"
    );
    for needle in [
        "autofocus",
        "autocapitalize=\"none\"",
        "name=\"viewport\"",
        "box-sizing:border-box",
        "<title>Sign in</title>",
    ] {
        assert!(page.contains(needle), "{needle}: {page}");
    }
}

/// Regression: four tabs loading when the access cookie expired: one got the page, three were
/// sent to login and the session was revoked as refresh-token reuse.
#[tokio::test(flavor = "multi_thread")]
async fn parallel_tabs_with_an_expired_access_cookie_all_succeed() {
    // Tabs a browser sends together may reach the gateway a moment apart: the grace covers
    // the ones that arrive after the first refresh finished.
    let gw = TestGateway::new()
        .tokens(&format!("{HS256}\nrefresh_reuse_grace = \"10s\""))
        .start()
        .await;
    let (cookie, _) = browser_login(gw.addr, "alice", "alice-password").await;
    // The browser dropped the expired access cookie; the refresh cookie remains.
    let expired: String = cookie
        .split("; ")
        .filter(|c| !c.starts_with("authgate_access="))
        .collect::<Vec<_>>()
        .join("; ");
    let tabs: Vec<_> = (0..4)
        .map(|i| {
            let (addr, c) = (gw.addr, expired.clone());
            tokio::spawn(
                async move { send(addr, with_cookie(get(&format!("/app/tab{i}")), &c)).await },
            )
        })
        .collect();
    let mut new_cookies = Vec::new();
    for t in tabs {
        let (s, h, body) = t.await.unwrap();
        assert_eq!(s, StatusCode::OK, "{body}");
        new_cookies.push(set_cookies(&h));
    }
    assert!(
        new_cookies.windows(2).all(|w| w[0] == w[1]),
        "the tabs got different sessions"
    );
    // The session lives on with the new cookies.
    let fresh = new_cookies[0]
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    assert_eq!(
        send(gw.addr, with_cookie(get("/app/after"), &fresh))
            .await
            .0,
        StatusCode::OK
    );
}

/// Regression: after logout, Back showed protected pages from the browser's cache.
#[tokio::test(flavor = "multi_thread")]
async fn cookie_authenticated_answers_are_not_stored() {
    let gw = TestGateway::new()
        .route("path = \"/upstream-decides/**\"\nupstream = \"app\"\ncache_control = \"upstream\"")
        .start()
        .await;
    let (cookie, _) = browser_login(gw.addr, "alice", "alice-password").await;
    let (_, h, _) = send(gw.addr, with_cookie(get("/app/x"), &cookie)).await;
    assert_eq!(h.get("cache-control").unwrap(), "no-store");
    let (_, h, _) = send(gw.addr, with_cookie(get("/upstream-decides/x"), &cookie)).await;
    assert!(h.get("cache-control").is_none());
    // A bearer client's answers are left as the upstream sent them.
    let t = login_pair(gw.addr, "alice", "alice-password").await;
    let (_, h, _) = get_with_token(gw.addr, "/app/x", &t.access).await;
    assert!(h.get("cache-control").is_none());
}

/// Regression: GET /auth/logout was 405 and a form POST answered 204 (a button that seemed to
/// do nothing); a cookie-only POST without the CSRF value was accepted.
#[tokio::test(flavor = "multi_thread")]
async fn browser_logout_confirms_needs_csrf_and_lands_on_the_login_page() {
    let gw = TestGateway::new().start().await;
    let (cookie, csrf) = browser_login(gw.addr, "alice", "alice-password").await;
    let (s, _, page) = send(gw.addr, with_cookie(get("/auth/logout"), &cookie)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        page.contains("method=\"post\"") && page.contains(&csrf),
        "{page}"
    );
    // From another site without the CSRF value: refused, still signed in.
    let no_csrf = form(
        post("/auth/logout")
            .header("cookie", &cookie)
            .header("sec-fetch-site", "cross-site")
            .header("content-type", "application/x-www-form-urlencoded"),
        "",
    );
    assert_eq!(send(gw.addr, no_csrf).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        send(gw.addr, with_cookie(get("/app/x"), &cookie)).await.0,
        StatusCode::OK
    );
    let body = format!("csrf_token={csrf}");
    let ok = form(
        post("/auth/logout")
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded"),
        &body,
    );
    let (s, h, _) = send(gw.addr, ok).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h.get("location").unwrap(), "/auth/login");
    let cleared = set_cookies(&h);
    assert!(
        cleared
            .iter()
            .any(|(k, v)| k == "authgate_access" && v.is_empty()),
        "{cleared:?}"
    );
    let (s, _, _) = send(gw.addr, with_cookie(get("/app/x"), &cookie)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "the old cookies still work");
}

/// Behind a TLS-terminating proxy listed in trusted_proxies, cookies are `__Host-` and Secure,
/// and the upstream hears https.
#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_proxys_https_counts_as_tls() {
    let gw = TestGateway::new()
        .server("trusted_proxies = [\"127.0.0.1/32\"]")
        .start()
        .await;
    let body = "username=alice&password=alice-password";
    let req = form(form_login(body).header("x-forwarded-proto", "https"), body);
    let (s, h, _) = send(gw.addr, req).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let raw: Vec<String> = h
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        raw.iter().all(|c| c.starts_with("__Host-authgate_")
            && c.contains("Secure")
            && c.contains("Path=/")),
        "{raw:?}"
    );
    assert!(h.get("strict-transport-security").is_none() || s == StatusCode::SEE_OTHER);
    let cookie = set_cookies(&h)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    let req = get("/app/x")
        .header("cookie", &cookie)
        .header("x-forwarded-proto", "https")
        .body(empty())
        .unwrap();
    assert_eq!(send(gw.addr, req).await.0, StatusCode::OK);
    assert_eq!(
        gw.up.last().headers.get("x-forwarded-proto").unwrap(),
        "https"
    );
    assert!(
        gw.up.last().headers.get("cookie").is_none(),
        "__Host- cookies leaked upstream"
    );
    // Over plain HTTP, a __Host- cookie means nothing.
    assert_eq!(
        send(gw.addr, with_cookie(get("/app/x"), &cookie)).await.0,
        StatusCode::UNAUTHORIZED
    );
}

/// A cookie POST to the default (`csrf = "origin"`) route with these Fetch Metadata / Origin
/// headers: its status.
async fn origin_post(gw: &Running, cookie: &str, headers: &[(&str, &str)]) -> StatusCode {
    let mut b = post("/app/save").header("cookie", cookie);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(gw.addr, b.body(empty()).unwrap()).await.0
}

/// Regression (real apps): every POST an unmodified app made got 403 `csrf`, because a token
/// only authgate knows was demanded. By default the origin rule decides: same-origin requests
/// pass without a token; cross-site, same-site siblings and `Origin: null` are refused.
#[tokio::test(flavor = "multi_thread")]
async fn the_origin_rule_admits_an_apps_own_requests_and_refuses_other_sites() {
    let gw = TestGateway::new()
        .server("trusted_origins = [\"https://partner.example\"]")
        .start()
        .await;
    let (cookie, _) = browser_login(gw.addr, "alice", "alice-password").await;
    let own = "http://gw.test".to_owned(); // the Host the test client sends
    let cases: &[(&[(&str, &str)], StatusCode)] = &[
        (
            &[("sec-fetch-site", "same-origin"), ("origin", &own)],
            StatusCode::OK,
        ),
        (&[("sec-fetch-site", "same-origin")], StatusCode::OK),
        (&[("origin", &own)], StatusCode::OK),
        (&[], StatusCode::OK), // not a browser
        (&[("origin", "https://partner.example")], StatusCode::OK),
        (
            &[
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://evil.example"),
            ],
            StatusCode::FORBIDDEN,
        ),
        (
            &[
                ("sec-fetch-site", "same-site"),
                ("origin", "http://sibling.localhost"),
            ],
            StatusCode::FORBIDDEN,
        ),
        (&[("origin", "null")], StatusCode::FORBIDDEN),
        (&[("origin", "https://evil.example")], StatusCode::FORBIDDEN),
    ];
    for (headers, want) in cases {
        assert_eq!(
            origin_post(&gw, &cookie, headers).await,
            *want,
            "{headers:?}"
        );
    }
    // A bearer token is never CSRF-checked.
    let t = login_pair(gw.addr, "alice", "alice-password").await;
    let req = post("/app/save")
        .header("authorization", format!("Bearer {}", t.access))
        .header("sec-fetch-site", "cross-site")
        .body(empty())
        .unwrap();
    assert_eq!(send(gw.addr, req).await.0, StatusCode::OK);
    // A cross-site form that navigates gets a page a person can read, not raw JSON.
    let form = post("/app/save")
        .header("cookie", &cookie)
        .header("sec-fetch-site", "cross-site")
        .header("sec-fetch-mode", "navigate")
        .header("origin", "https://evil.example")
        .body(empty())
        .unwrap();
    let (s, h, page) = send(gw.addr, form).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    assert_eq!(h["x-frame-options"], "DENY");
    assert!(page.contains("another site"), "{page}");
    // `csrf = "off"` leaves it to the app.
    let off = TestGateway::new()
        .route("path = \"/app/**\"\nupstream = \"app\"\nauth = \"required\"\ncsrf = \"off\"")
        .start()
        .await;
    let (cookie, _) = browser_login(off.addr, "alice", "alice-password").await;
    assert_eq!(
        origin_post(&off, &cookie, &[("sec-fetch-site", "cross-site")]).await,
        StatusCode::OK
    );
}

/// Cross-site WebSocket hijacking: a cookie handshake from another origin is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_cross_site_websocket_handshake_with_a_cookie_is_refused() {
    let gw = TestGateway::new().start().await;
    let (cookie, _) = browser_login(gw.addr, "alice", "alice-password").await;
    let handshake = |origin: &str| {
        get("/app/ws")
            .header("cookie", &cookie)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("origin", origin)
            .body(empty())
            .unwrap()
    };
    let (s, _, body) = send(gw.addr, handshake("http://sibling.localhost")).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(json(&body)["error"], "csrf");
}

/// Regression (real apps): fetch calls and WebSocket handshakes on a redirect route got the
/// login page's 302 (apps received login HTML as 200; a redirected PUT became 405). Only page
/// loads are sent to the login page; the rest get 401 JSON.
#[tokio::test(flavor = "multi_thread")]
async fn only_navigations_are_redirected_to_the_login_page() {
    let gw = TestGateway::new()
        .route("path = \"/web/**\"\nupstream = \"app\"\non_unauthenticated = \"redirect\"")
        .start()
        .await;
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], StatusCode);
    let cases: &[Case] = &[
        ("GET", &[("sec-fetch-mode", "navigate")], StatusCode::FOUND),
        ("GET", &[("accept", "text/html")], StatusCode::FOUND),
        (
            "GET",
            &[("sec-fetch-mode", "cors"), ("accept", "*/*")],
            StatusCode::UNAUTHORIZED,
        ),
        (
            "GET",
            &[("sec-fetch-mode", "websocket")],
            StatusCode::UNAUTHORIZED,
        ),
        ("PUT", &[("accept", "text/html")], StatusCode::UNAUTHORIZED),
        (
            "GET",
            &[("accept", "application/json")],
            StatusCode::UNAUTHORIZED,
        ),
    ];
    for (method, headers, want) in cases {
        let mut b = get("/web/x").method(*method);
        for (k, v) in *headers {
            b = b.header(*k, *v);
        }
        let (s, h, _) = send(gw.addr, b.body(empty()).unwrap()).await;
        assert_eq!(s, *want, "{method} {headers:?}");
        if s == StatusCode::UNAUTHORIZED {
            assert!(h.contains_key("www-authenticate"));
        }
    }
}

/// Regression (real apps): Back after logout showed a page the app marked `no-cache`.
#[tokio::test(flavor = "multi_thread")]
async fn no_store_replaces_an_apps_no_cache_on_cookie_html() {
    let gw = TestGateway::new().start().await;
    let (cookie, _) = browser_login(gw.addr, "alice", "alice-password").await;
    // The recording upstream echoes `x-answer-*` request headers as response headers.
    let req = get("/app/page")
        .header("cookie", &cookie)
        .header("x-answer-content-type", "text/html; charset=utf-8")
        .header("x-answer-cache-control", "no-cache")
        .body(empty())
        .unwrap();
    let (s, h, _) = send(gw.addr, req).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["cache-control"], "no-store");
}

/// The gateway's own logout: an app's sign-out button carries no token of ours; the origin
/// rule admits it from the app's own pages and refuses it from another site.
#[tokio::test(flavor = "multi_thread")]
async fn cookie_logout_takes_a_token_or_a_passing_origin() {
    let gw = TestGateway::new().start().await;
    let (cookie, _) = browser_login(gw.addr, "alice", "alice-password").await;
    let logout = |site: &str| {
        post("/auth/logout")
            .header("cookie", &cookie)
            .header("sec-fetch-site", site)
            .body(empty())
            .unwrap()
    };
    assert_eq!(
        send(gw.addr, logout("cross-site")).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(gw.addr, logout("same-origin")).await.0,
        StatusCode::NO_CONTENT
    );
    let (s, _, _) = send(gw.addr, with_cookie(get("/app/x"), &cookie)).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "the session survived its logout"
    );
}
