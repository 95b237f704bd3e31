//! Single sign-on with a real OpenID Provider: oidc-provider 8.x (panva, OpenID Certified) on
//! loopback, its development login and consent pages walked by a cookie-keeping client as a
//! browser would. Sign-in lands on `next` with the identity and mapped roles; a replayed
//! callback, one finished in another browser, and a refusal at the provider are pages; the
//! provider's logout sends a back-channel logout that ends the gateway session at once; two
//! replicas on one Redis finish each other's flows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/oidc.rs"]
mod oidc;
mod support;

use http::StatusCode;
use oidc::*;
use std::net::SocketAddr;
use std::time::Duration;
use support::procs::free_port;
use support::*;

const SECRET: &str = "the-client-secret-of-the-test-0123456789";

/// A gateway on a chosen port (the provider must know its callback first), with `corp`.
async fn gateway(
    port: u16,
    op: &OidcProvider,
    revocation: &str,
    extra: &str,
) -> (Fixture, Upstream, authgate::App) {
    let up = Upstream::start().await;
    let fx = Fixture::new();
    let text = fx
        .config(
            up.addr,
            HS256,
            revocation,
            "[[routes]]\npath = \"/app/**\"\nupstream = \"app\"\non_unauthenticated = \"redirect\"\n",
            "",
        )
        .replace(
            "listen = \"127.0.0.1:0\"\nshutdown_grace",
            &format!("listen = \"127.0.0.1:{port}\"\nshutdown_grace"),
        )
        + &format!(
            "\n[[login.oidc]]\nname = \"corp\"\ndisplay_name = \"Corp SSO\"\nissuer = \"{}\"\n\
             client_id = \"authgate\"\nclient_secret = \"{SECRET}\"\n\
             scopes = [\"openid\", \"email\", \"profile\", \"groups\"]\nroles_claim = \"groups\"\n\
             role_map = {{ \"eng\" = [\"user\"], \"ops-admins\" = [\"admin\", \"user\"] }}\n{extra}",
            op.issuer()
        );
    let app = start(&fx.write("authgate.toml", &text)).await;
    (fx, up, app)
}

fn provider(gw: &str) -> OidcProvider {
    OidcProvider::start_with(
        ClientSpec::confidential("authgate", SECRET, &format!("{gw}/auth/oidc/corp/callback"))
            .post_logout_redirect_uri(&format!("{gw}/auth/login"))
            .backchannel_logout_uri(&format!("{gw}/auth/oidc/corp/backchannel-logout")),
        // Another site than the gateway's 127.0.0.1, as in production.
        ProviderOptions {
            host: Some("localhost".into()),
            ..Default::default()
        },
    )
}

async fn me(addr: SocketAddr, web: &WebClient) -> (StatusCode, String) {
    let page = web.get(&format!("http://{addr}/auth/me")).await;
    (page.status, page.body)
}

#[tokio::test]
async fn sign_in_at_a_real_provider_then_its_logout_ends_the_session() {
    let port = free_port();
    let gw = format!("http://127.0.0.1:{port}");
    let op = provider(&gw);
    let (_fx, up, app) = gateway(port, &op, MEMORY, "logout_at_provider = true\n").await;
    let addr = app.public_addr;

    // A protected page sends the browser to sign in; the login page offers the provider.
    let web = WebClient::new();
    let page = web.get(&format!("{gw}/auth/login?next=/app/page")).await;
    assert!(page.body.contains("Sign in with Corp SSO"), "{}", page.body);
    let hops = op
        .sign_in(
            &web,
            &format!("{gw}/auth/oidc/corp/start?next=/app/page%3Fx%3D1"),
            "boss",
        )
        .await;
    let landed = hops.landed();
    assert_eq!(
        landed.status,
        StatusCode::OK,
        "{:?}\n{}",
        hops.urls(),
        op.log_tail()
    );
    assert_eq!(landed.url, format!("{gw}/app/page?x=1"));
    let seen = up.last();
    assert_eq!(seen.headers["x-auth-user"], "boss");
    assert_eq!(seen.headers["x-auth-roles"], "admin,user");
    assert!(seen
        .headers
        .get("cookie")
        .is_none_or(|c| !c.to_str().unwrap().contains("authgate_")));
    let (status, body) = me(addr, &web).await;
    assert_eq!(status, StatusCode::OK);
    let who = json(&body);
    assert_eq!(who["idp"], "corp");
    assert_eq!(who["sub"], "boss");
    // The sessions page says how this session signed in.
    let page = web.get(&format!("http://{addr}/auth/sessions")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("oidc:corp"), "{}", page.body);

    // A second browser signs the same user in; the provider's logout (its end-session page,
    // confirmed) sends back-channel logout tokens that end this browser's gateway session.
    let other = WebClient::new();
    let hops = op
        .sign_in(
            &other,
            &format!("{gw}/auth/oidc/corp/start?next=/app/two"),
            "boss",
        )
        .await;
    assert_eq!(hops.landed().status, StatusCode::OK);
    assert_eq!(me(addr, &other).await.0, StatusCode::OK);
    op.end_session(&other, "").await;
    let ended = eventually(Duration::from_secs(1), || async {
        me(addr, &other).await.0 == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(
        ended,
        "still signed in after the provider's logout\n{}",
        op.log_tail()
    );
    assert!(
        op.backchannel_outcomes().iter().any(|o| o.contains(" ok ")),
        "{:?}",
        op.backchannel_outcomes()
    );
    // The first browser's provider session is another: it is still signed in.
    assert_eq!(me(addr, &web).await.0, StatusCode::OK);

    // Logging out of the gateway continues to the provider (logout_at_provider).
    let csrf = web.cookie(&gw, "authgate_csrf").expect("a CSRF cookie");
    let out = web
        .post_form(&format!("{gw}/auth/logout"), &[("csrf_token", &csrf)])
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    let to = out.location().unwrap();
    assert!(to.starts_with(&op.end_session_endpoint()), "{to}");
    assert!(to.contains("client_id=authgate"), "{to}");
    assert_eq!(me(addr, &web).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn replays_other_browsers_and_refusals_are_pages() {
    let port = free_port();
    let gw = format!("http://127.0.0.1:{port}");
    let op = provider(&gw);
    let (_fx, _up, app) = gateway(port, &op, MEMORY, "").await;
    let addr = app.public_addr;
    let start = format!("{gw}/auth/oidc/corp/start?next=/app/x");

    // Finished in another browser (login CSRF: an attacker's callback URL in a victim's
    // browser): no flow cookie there, refused.
    let attacker = WebClient::new();
    let (_, callback) = op.walk_to_callback(&attacker, &start, "mallory").await;
    let victim = WebClient::new();
    let page = victim.get(&callback).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(me(addr, &victim).await.0, StatusCode::UNAUTHORIZED);

    // The callback once, then replayed: the second is refused.
    let web = WebClient::new();
    let (_, callback) = op.walk_to_callback(&web, &start, "alice2").await;
    let first = web.get(&callback).await;
    assert_eq!(
        first.status,
        StatusCode::SEE_OTHER,
        "{}\n{}",
        first.body,
        op.log_tail()
    );
    let replay = web.get(&callback).await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST);
    assert!(replay.body.contains("Start again"), "{}", replay.body);

    // The user cancels at the provider: a page saying so, nothing from the provider echoed.
    let web = WebClient::new();
    let (_, callback) = op.abort_to_callback(&web, &start).await;
    let page = web.get(&callback).await;
    assert_eq!(
        page.status,
        StatusCode::FORBIDDEN,
        "{callback}: {}",
        page.body
    );
    assert!(page.body.contains("cancelled or refused"), "{}", page.body);
    assert_eq!(me(addr, &web).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_flow_started_on_one_replica_finishes_on_the_other() {
    let redis = Redis::start();
    let rev = format!("backend = \"redis\"\nredis_url = \"{}\"\n", redis.url());
    let (p1, p2) = (free_port(), free_port());
    let gw1 = format!("http://127.0.0.1:{p1}");
    let op = provider(&gw1);
    let (_f1, _u1, a1) = gateway(p1, &op, &rev, "").await;
    let (_f2, _u2, a2) = gateway(p2, &op, &rev, "").await;
    let web = WebClient::new();
    let (_, callback) = op
        .walk_to_callback(
            &web,
            &format!("{gw1}/auth/oidc/corp/start?next=/app/y"),
            "dana",
        )
        .await;
    // The provider sent the browser to replica 1's callback; replica 2 answers it instead
    // (a load balancer's choice). Cookies are per host, so the flow cookie goes along.
    let moved = callback.replacen(&format!(":{p1}/"), &format!(":{p2}/"), 1);
    let page = web.get(&moved).await;
    assert_eq!(
        page.status,
        StatusCode::SEE_OTHER,
        "{}\n{}",
        page.body,
        op.log_tail()
    );
    assert_eq!(
        page.location().unwrap(),
        format!("http://127.0.0.1:{p2}/app/y")
    );
    assert_eq!(me(a1.public_addr, &web).await.0, StatusCode::OK);
    assert_eq!(me(a2.public_addr, &web).await.0, StatusCode::OK);
    // Replayed on replica 1: the state was spent on replica 2 (one Redis).
    let page = web.get(&callback).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
}

/// Once in a real browser: Chromium goes to a protected page, is sent to the login page,
/// follows the provider's button, signs in on the provider's pages, and lands on the page.
#[tokio::test]
async fn sign_in_with_the_provider_in_chromium() {
    use support::webdriver::Driver;
    let port = free_port();
    let gw = format!("http://127.0.0.1:{port}");
    let op = provider(&gw);
    let (_fx, up, _app) = gateway(port, &op, MEMORY, "").await;
    let b = Driver::start().await;
    let load = Duration::from_secs(15);
    b.go(&format!("{gw}/app/chromium?q=1")).await;
    let url = b.url().await;
    assert!(url.starts_with(&format!("{gw}/auth/login?next=")), "{url}");
    let button = b
        .wait_find("xpath", "//a[contains(., 'Sign in with Corp SSO')]", load)
        .await;
    b.click_element(&button).await;
    b.wait_find("css selector", "input[name=login]", load).await;
    b.type_into("input[name=login]", "boss").await;
    b.type_into("input[name=password]", "any-password").await;
    b.click("button[type=submit]").await;
    // The consent page (first sign-in of this browser at the provider).
    let consent = b
        .wait_find("xpath", "//button[contains(., 'Continue')]", load)
        .await;
    b.click_element(&consent).await;
    let want = format!("{gw}/app/chromium?q=1");
    let url = b.url_when(|u| u == want).await;
    assert_eq!(url, want, "{}\n{}", b.text().await, op.log_tail());
    assert!(b.text().await.contains("upstream ok"));
    assert_eq!(up.last().headers["x-auth-user"], "boss");
    let me = b.js("return fetch('/auth/me').then(r => r.json())").await;
    assert_eq!(me["idp"], "corp", "{me}");
}
