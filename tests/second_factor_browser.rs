//! The second factor in a real browser (Chromium over WebDriver): a user sets up an
//! authenticator app from the account page (the code is computed from the key the page
//! shows), keeps the recovery codes it shows once, signs out, and signs in with password and
//! code; a wrong code, a replayed code and a recovery code used twice are refused on the
//! page. Every page of the flow passes axe-core with no violations, and fits a phone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use support::factors::{axe_source, base32, no_axe_violations, totp_at};
use support::webdriver::Driver;
use support::*;

/// Runs axe-core on the current page: no violations, and nothing wider than the window.
async fn accessible(b: &Driver, axe: &str, what: &str) {
    no_axe_violations(b, axe, what).await;
    let fits = b
        .js("return document.documentElement.scrollWidth <= window.innerWidth;")
        .await;
    assert_eq!(fits, json!(true), "{what} fits the window");
}

async fn sign_in(b: &Driver, base: &str, password: &str) {
    b.go(&format!("{base}/auth/login?next=/web/home")).await;
    b.type_into("#username", "alice").await;
    b.type_into("#password", password).await;
    b.click("button[type=submit]").await;
}

async fn sign_out(b: &Driver, base: &str) {
    b.go(&format!("{base}/auth/logout")).await;
    b.click("button[type=submit]").await;
    b.url_when(|u| u.contains("/auth/login")).await;
}

async fn give_code(b: &Driver, code: &str) {
    b.wait_find("css selector", "#code", std::time::Duration::from_secs(10))
        .await;
    b.type_into("#code", code).await;
    b.click("button[type=submit]").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn totp_set_up_and_sign_in_in_chromium() {
    let gw = TestGateway::new()
        .route("path = \"/web/**\"\nupstream = \"app\"\non_unauthenticated = \"redirect\"")
        .route("path = \"/vault/**\"\nupstream = \"app\"\non_unauthenticated = \"redirect\"\nsecond_factor = true")
        .start()
        .await;
    let base = format!("http://{}", gw.addr);
    let axe = axe_source();
    let b = Driver::start().await;
    b.cmd(
        "POST",
        "/window/rect",
        Some(json!({"width": 375, "height": 740})),
    )
    .await;

    // The account page needs a session: sign in first, then back to it.
    b.go(&format!("{base}/auth/account")).await;
    b.url_when(|u| u.contains("/auth/login?next=/auth/account"))
        .await;
    accessible(&b, &axe, "the login page").await;
    b.type_into("#username", "alice").await;
    b.type_into("#password", "alice-password").await;
    b.click("button[type=submit]").await;
    let page = b.source_when("totp-secret").await;
    assert!(page.contains("<svg"), "a QR code: {page}");
    assert!(page.contains("otpauth://totp/"), "{page}");
    accessible(&b, &axe, "the set-up page").await;
    // A password-only session may not open a second_factor route.
    b.go(&format!("{base}/vault/x")).await;
    b.text_when("the refusal", std::time::Duration::from_secs(10), |t| {
        t.contains("second factor")
    })
    .await;
    accessible(&b, &axe, "the refusal page").await;
    b.go(&format!("{base}/auth/account")).await;
    b.source_when("totp-secret").await;
    let key = b
        .js("return document.getElementById('totp-secret').textContent")
        .await;
    let secret = base32(key.as_str().unwrap());

    // A wrong first code: the page again, same key.
    give_code(&b, "000000").await;
    let page = b.source_when("role=\"alert\"").await;
    assert!(page.contains(key.as_str().unwrap()), "the same key again");
    let now = authgate::clock::now_secs();
    b.js("document.getElementById('code').value = ''; return true;")
        .await;
    give_code(&b, &totp_at(&secret, now)).await;
    let page = b.source_when("recovery-codes").await;
    accessible(&b, &axe, "the recovery codes page").await;
    let codes: Vec<String> = serde_json::from_value(
        b.js(
            "return [...document.querySelectorAll('#recovery-codes code')].map(c => c.textContent)",
        )
        .await,
    )
    .unwrap();
    assert_eq!(codes.len(), 10, "{page}");

    // Signed out, the password alone is no longer enough.
    sign_out(&b, &base).await;
    sign_in(&b, &base, "alice-password").await;
    let page = b.source_when("one-time-code").await;
    assert!(page.contains("autofocus"), "{page}");
    accessible(&b, &axe, "the code page").await;
    give_code(&b, "123456").await;
    b.source_when("role=\"alert\"").await;
    accessible(&b, &axe, "the code page with its alert").await;
    b.js("document.getElementById('code').value = ''; return true;")
        .await;
    // The code of the next step: the set-up's own code is not used again here.
    let code = totp_at(&secret, authgate::clock::now_secs());
    give_code(&b, &code).await;
    b.url_when(|u| u.ends_with("/web/home") && !u.contains("/auth/"))
        .await;
    assert_eq!(gw.up.last().headers.get("x-auth-user").unwrap(), "alice");
    b.go(&format!("{base}/vault/x")).await;
    b.text_when("the vault", std::time::Duration::from_secs(10), |t| {
        !t.contains("second factor")
    })
    .await;
    assert!(
        gw.up.requests().iter().any(|r| r.uri == "/vault/x"),
        "a session with a code opens second_factor routes"
    );
    b.go(&format!("{base}/auth/account")).await;
    let page = b.source_when("Recovery codes left").await;
    assert!(page.contains("with a password and a code"), "{page}");
    accessible(&b, &axe, "the account page").await;

    // The same code again: refused.
    sign_out(&b, &base).await;
    sign_in(&b, &base, "alice-password").await;
    give_code(&b, &code).await;
    let page = b.source_when("role=\"alert\"").await;
    assert!(page.contains("used already"), "{page}");

    // A recovery code: once.
    b.js("document.getElementById('code').value = ''; return true;")
        .await;
    give_code(&b, &codes[0]).await;
    b.url_when(|u| u.ends_with("/web/home") && !u.contains("/auth/"))
        .await;
    sign_out(&b, &base).await;
    sign_in(&b, &base, "alice-password").await;
    give_code(&b, &codes[0]).await;
    b.source_when("role=\"alert\"").await;
    assert!(!b.url().await.ends_with("/web/home"));
}
