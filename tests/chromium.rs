//! The browser flows in a real browser: Debian's Chromium, driven over WebDriver by
//! chromedriver (`scripts/test.sh` installs both). Sign-in with a wrong and a right password,
//! CSRF from the page's own script, an expired access cookie with parallel requests, logout
//! with Back, open-redirect attempts, and screenshots of the login page for the README.
// A test crate: its helpers (not only #[test] fns, which clippy.toml covers) may unwrap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use support::webdriver::Driver;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn the_browser_flows_in_chromium() {
    // A browser's parallel requests may reach the gateway a moment apart when its access
    // cookie has expired: a few seconds of reuse grace let them share one refresh.
    let gw = TestGateway::new()
        .tokens(&format!("{HS256}\nrefresh_reuse_grace = \"10s\""))
        .route("path = \"/web/**\"\nupstream = \"app\"\non_unauthenticated = \"redirect\"")
        .route("path = \"/tok/**\"\nupstream = \"app\"\ncsrf = \"token\"")
        .start()
        .await;
    let base = format!("http://{}", gw.addr);
    let b = Driver::start().await;

    // Not signed in: sent to the login page, `next` kept.
    b.go(&format!("{base}/web/page?x=1")).await;
    assert!(
        b.url().await.contains("/auth/login?next=/web/page%3Fx%3D1"),
        "{}",
        b.url().await
    );
    // Into docs/ when asked (AUTHGATE_SCREENSHOTS=1 ./scripts/test.sh), else a temp dir: a
    // test run leaves the work tree as it was.
    let shots = tempfile::tempdir().unwrap();
    let docs = match std::env::var_os("AUTHGATE_SCREENSHOTS") {
        Some(_) => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs"),
        None => shots.path().to_path_buf(),
    };
    b.screenshot(1280, 800, &docs.join("login-desktop.png"))
        .await;
    b.screenshot(375, 740, &docs.join("login-phone.png")).await;
    b.cmd(
        "POST",
        "/window/rect",
        Some(json!({"width": 1024, "height": 768})),
    )
    .await;

    // A wrong password: the form again, with the message and the user name.
    b.type_into("#username", "alice").await;
    b.type_into("#password", "wrong-password").await;
    b.click("button[type=submit]").await;
    let page = b.source_when("role=\"alert\"").await;
    assert!(page.contains("role=\"alert\""), "{page}");
    assert!(page.contains("value=\"alice\""), "{page}");

    // The right one: on to the original page, the user's identity at the upstream.
    b.type_into("#password", "alice-password").await;
    b.click("button[type=submit]").await;
    let url = b.url_when(|u| u.ends_with("/web/page?x=1")).await;
    assert!(url.ends_with("/web/page?x=1"), "{url}");
    assert_eq!(gw.up.last().headers.get("x-auth-user").unwrap(), "alice");

    // CSRF: the page's own script passes the origin rule without any token (the default);
    // on a `csrf = "token"` route it needs the value.
    let statuses = b
        .script(
            r#"const done = arguments[arguments.length - 1];
            const csrf = document.cookie.split('; ').find(c => c.startsWith('authgate_csrf=')).split('=')[1];
            Promise.all([
              fetch('/web/change', {method: 'POST'}).then(r => r.status),
              fetch('/tok/change', {method: 'POST'}).then(r => r.status),
              fetch('/tok/change', {method: 'POST', headers: {'X-CSRF-Token': csrf}}).then(r => r.status),
            ]).then(done);"#,
        )
        .await;
    assert_eq!(statuses, json!([200, 403, 200]));

    // The access cookie expires (the browser drops it): four parallel requests all succeed
    // and the session lives on.
    b.cmd("DELETE", "/cookie/authgate_access", None).await;
    let statuses = b
        .script(
            r#"const done = arguments[arguments.length - 1];
            Promise.all([1, 2, 3, 4].map(i => fetch('/web/tab' + i).then(r => r.status))).then(done);"#,
        )
        .await;
    assert_eq!(statuses, json!([200, 200, 200, 200]));
    b.go(&format!("{base}/web/after")).await;
    assert!(
        b.url().await.ends_with("/web/after"),
        "session lost: {}",
        b.url().await
    );

    // Open redirects: signed in, a foreign `next` lands on the default instead.
    for bad in [
        "//evil.example/x",
        "https://evil.example/",
        "/\\evil.example",
    ] {
        let next = authgate::path::encode_component(bad);
        b.go(&format!("{base}/auth/login?next={next}")).await;
        let url = b.url().await;
        assert!(url.starts_with(&base), "{bad} left the site: {url}");
    }

    // Logout: a confirmation, then the login page, cookies gone, and Back shows no
    // protected page (it was never stored).
    b.go(&format!("{base}/web/secret")).await;
    b.go(&format!("{base}/auth/logout")).await;
    b.click("button[type=submit]").await;
    let url = b.url_when(|u| u.contains("/auth/login")).await;
    assert!(url.contains("/auth/login"), "{url}");
    let left = b.cookies().await;
    assert!(left.iter().all(|c| !c.starts_with("authgate_")), "{left:?}");
    let seen = gw.up.requests().len();
    b.cmd("POST", "/back", Some(json!({}))).await;
    b.cmd("POST", "/back", Some(json!({}))).await;
    let url = b.url().await;
    assert!(
        url.contains("/auth/login") || !b.source().await.contains("upstream ok"),
        "Back showed a protected page: {url}"
    );
    assert_eq!(
        gw.up.requests().len(),
        seen,
        "Back reached the upstream without a session"
    );
}
