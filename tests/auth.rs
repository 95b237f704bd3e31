//! Login, refresh, logout, revocation and token attacks against the real gateway, with the
//! memory backend (no Redis anywhere) and with a real redis-server started here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::StatusCode;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;
use std::time::Duration;
use support::*;

/// A body-less request carrying a browser's cookies.
fn with_cookie(
    b: http::request::Builder,
    cookie: &str,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    b.header("cookie", cookie).body(empty()).unwrap()
}

async fn gateway(revocation: &str, tokens: &str) -> (Fixture, Upstream, authgate::App) {
    let up = Upstream::start().await;
    let fx = Fixture::new();
    let app = start(&fx.write("a.toml", &fx.config(up.addr, tokens, revocation, "", ""))).await;
    (fx, up, app)
}

fn claims(typ: &str) -> serde_json::Value {
    let now = authgate::auth::tokens::now_secs();
    json!({"iss": "authgate", "aud": "authgate", "sub": "alice", "iat": now, "nbf": now, "exp": now + 600,
           "jti": "j-123456789", "sid": "s-123456789", "type": typ, "roles": ["user"]})
}

fn sign(claims: &serde_json::Value) -> String {
    encode(
        &Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(HS_SECRET.as_bytes()),
    )
    .unwrap()
}

async fn seed_flow(app: &authgate::App, up: &Upstream) {
    let addr = app.public_addr;
    let t = login(addr, "alice", "alice-password").await;
    assert_eq!(t["token_type"], "Bearer");
    assert!(t["expires_in"].as_u64().unwrap() > 800);
    assert!(t["refresh_expires_in"].as_u64().unwrap() > 3000);
    let access = t["access_token"].as_str().unwrap();
    let refresh = t["refresh_token"].as_str().unwrap();

    // A protected call carries the identity to the upstream, never the token.
    let (s, _, _) = get_with_token(addr, "/app/x", access).await;
    assert_eq!(s, StatusCode::OK);
    let seen = up.last();
    assert_eq!(seen.headers.get("x-auth-user").unwrap(), "alice");
    assert_eq!(seen.headers.get("x-auth-roles").unwrap(), "user");
    assert!(seen.headers.get("authorization").is_none());

    // Roles.
    let (s, _, body) = get_with_token(addr, "/admin/x", access).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(json(&body)["error"], "insufficient_role");

    // /auth/me
    let (s, _, body) = get_with_token(addr, "/auth/me", access).await;
    assert_eq!(s, StatusCode::OK);
    let me = json(&body);
    assert_eq!(me["sub"], "alice");
    assert_eq!(me["roles"], json!(["user"]));

    // Wrong types both ways.
    let (s, h, _) = get_with_token(addr, "/app/x", refresh).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(h
        .get("www-authenticate")
        .unwrap()
        .to_str()
        .unwrap()
        .contains("invalid_token"));
    let req = post("/auth/refresh")
        .header("authorization", format!("Bearer {access}"))
        .body(empty())
        .unwrap();
    assert_eq!(send(addr, req).await.0, StatusCode::UNAUTHORIZED);

    // Refresh rotates; the old refresh token is then dead, and its reuse kills the session.
    let req = post("/auth/refresh")
        .header("authorization", format!("Bearer {refresh}"))
        .body(empty())
        .unwrap();
    let (s, _, body) = send(addr, req).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let next = json(&body);
    let access2 = next["access_token"].as_str().unwrap().to_owned();
    let refresh2 = next["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(refresh2, refresh);
    assert_eq!(
        get_with_token(addr, "/app/x", &access2).await.0,
        StatusCode::OK
    );
    let req = post("/auth/refresh")
        .header("content-type", "application/json")
        .body(json_body(json!({"refresh_token": refresh})))
        .unwrap();
    assert_eq!(
        send(addr, req).await.0,
        StatusCode::UNAUTHORIZED,
        "reused refresh token accepted"
    );
    assert_eq!(
        get_with_token(addr, "/app/x", &access2).await.0,
        StatusCode::UNAUTHORIZED,
        "session survived reuse"
    );
    let req = post("/auth/refresh")
        .header("authorization", format!("Bearer {refresh2}"))
        .body(empty())
        .unwrap();
    assert_eq!(send(addr, req).await.0, StatusCode::UNAUTHORIZED);

    // Logout of one session leaves another alive.
    let a = login(addr, "alice", "alice-password").await;
    let b = login(addr, "alice", "alice-password").await;
    let (a_tok, b_tok) = (
        a["access_token"].as_str().unwrap(),
        b["access_token"].as_str().unwrap(),
    );
    let req = post("/auth/logout")
        .header("authorization", format!("Bearer {a_tok}"))
        .body(empty())
        .unwrap();
    assert_eq!(send(addr, req).await.0, StatusCode::NO_CONTENT);
    assert_eq!(
        get_with_token(addr, "/app/x", a_tok).await.0,
        StatusCode::UNAUTHORIZED
    );
    let req = post("/auth/refresh")
        .header(
            "authorization",
            format!("Bearer {}", a["refresh_token"].as_str().unwrap()),
        )
        .body(empty())
        .unwrap();
    assert_eq!(
        send(addr, req).await.0,
        StatusCode::UNAUTHORIZED,
        "logged-out session refreshed"
    );
    assert_eq!(
        get_with_token(addr, "/app/x", b_tok).await.0,
        StatusCode::OK
    );

    // logout?all ends every session; a login right after works.
    let req = post("/auth/logout?all=true")
        .header("authorization", format!("Bearer {b_tok}"))
        .body(empty())
        .unwrap();
    assert_eq!(send(addr, req).await.0, StatusCode::NO_CONTENT);
    assert_eq!(
        get_with_token(addr, "/app/x", b_tok).await.0,
        StatusCode::UNAUTHORIZED
    );
    let c = login(addr, "alice", "alice-password").await;
    assert_eq!(
        get_with_token(addr, "/app/x", c["access_token"].as_str().unwrap())
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_flow_with_memory_backend() {
    let (_fx, up, app) = gateway(MEMORY, HS256).await;
    seed_flow(&app, &up).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_flow_with_redis_backend() {
    let redis = Redis::start();
    let (_fx, up, app) = gateway(
        &format!("backend = \"redis\"\nredis_url = \"{}\"", redis.url()),
        HS256,
    )
    .await;
    seed_flow(&app, &up).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn eddsa_tokens_and_jwks() {
    let tokens =
        "algorithm = \"EdDSA\"\nsigning_key_file = \"k/ed.pem\"\ngenerate_missing_key = true";
    let (_fx, _up, app) = gateway(MEMORY, tokens).await;
    let t = login(app.public_addr, "root", "root-password").await;
    let access = t["access_token"].as_str().unwrap();
    assert_eq!(
        get_with_token(app.public_addr, "/admin/x", access).await.0,
        StatusCode::OK
    );
    let (s, _, body) = send(
        app.public_addr,
        get("/.well-known/jwks.json").body(empty()).unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let jwks = json(&body);
    let header = jsonwebtoken::decode_header(access).unwrap();
    assert_eq!(jwks["keys"][0]["kid"].as_str(), header.kid.as_deref());
    assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
    // Verify the token with the published key, the way another client would.
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwks["keys"][0].clone()).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.set_audience(&["authgate"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(
        access,
        &jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap(),
        &v,
    )
    .unwrap();
    for claim in [
        "iss", "aud", "sub", "iat", "nbf", "exp", "jti", "sid", "type", "roles",
    ] {
        assert!(data.claims.get(claim).is_some(), "missing claim {claim}");
    }
    assert_eq!(data.claims["type"], "access");
    assert!(
        URL_SAFE_NO_PAD
            .decode(data.claims["jti"].as_str().unwrap())
            .unwrap()
            .len()
            >= 16
    );
    // HS256 publishes nothing.
    let (_fx2, _up2, hs) = gateway(MEMORY, HS256).await;
    assert_eq!(
        send(
            hs.public_addr,
            get("/.well-known/jwks.json").body(empty()).unwrap()
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn token_attacks_are_all_401_never_5xx() {
    let (_fx, up, app) = gateway(MEMORY, HS256).await;
    let addr = app.public_addr;
    let good = sign(&claims("access"));
    assert_eq!(
        get_with_token(addr, "/app/x", &good).await.0,
        StatusCode::OK,
        "a well-formed foreign-signed token must pass"
    );
    let b64 = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let payload = b64(&claims("access"));
    let mut attacks: Vec<(String, String)> = Vec::new();
    for alg in ["none", "None", "NONE", "nOnE"] {
        attacks.push((
            format!("alg {alg}"),
            format!("{}.{payload}.", b64(&json!({"alg": alg, "typ": "JWT"}))),
        ));
    }
    let other_key = encode(
        &Header::new(jsonwebtoken::Algorithm::HS256),
        &claims("access"),
        &EncodingKey::from_secret(b"another-secret-another-secret-another"),
    )
    .unwrap();
    attacks.push(("another key".into(), other_key));
    let mut h = Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some("not-our-kid".into());
    attacks.push((
        "foreign kid".into(),
        encode(
            &h,
            &claims("access"),
            &EncodingKey::from_secret(HS_SECRET.as_bytes()),
        )
        .unwrap(),
    ));
    let parts: Vec<&str> = good.split('.').collect();
    let mut admin = claims("access");
    admin["roles"] = json!(["admin"]);
    attacks.push((
        "tampered payload".into(),
        format!("{}.{}.{}", parts[0], b64(&admin), parts[2]),
    ));
    let mutate = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims("access");
        f(&mut c);
        sign(&c)
    };
    let now = authgate::auth::tokens::now_secs();
    attacks.push(("expired".into(), mutate(&|c| c["exp"] = json!(now - 3600))));
    attacks.push((
        "future nbf".into(),
        mutate(&|c| c["nbf"] = json!(now + 3600)),
    ));
    attacks.push(("wrong iss".into(), mutate(&|c| c["iss"] = json!("evil"))));
    attacks.push(("wrong aud".into(), mutate(&|c| c["aud"] = json!("evil"))));
    for claim in [
        "exp", "nbf", "iss", "aud", "sub", "jti", "sid", "type", "iat", "roles",
    ] {
        attacks.push((
            format!("missing {claim}"),
            mutate(&|c| {
                c.as_object_mut().unwrap().remove(claim);
            }),
        ));
    }
    attacks.push(("refresh type".into(), sign(&claims("refresh"))));
    attacks.push(("unknown type".into(), mutate(&|c| c["type"] = json!("id"))));
    attacks.push((
        "roles as string".into(),
        mutate(&|c| c["roles"] = json!("admin")),
    ));
    attacks.push((
        "exp as string".into(),
        mutate(&|c| c["exp"] = json!("never")),
    ));
    attacks.push(("sub as number".into(), mutate(&|c| c["sub"] = json!(7))));
    attacks.push(("garbage".into(), "not.a.token".into()));
    attacks.push(("ten kilobytes".into(), "a".repeat(10_240)));
    attacks.push(("two parts".into(), format!("{}.{}", parts[0], parts[1])));
    let seen_before = up.requests().len();
    for (name, token) in &attacks {
        let (s, headers, body) = get_with_token(addr, "/app/x", token).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{name}: {body}");
        assert_eq!(json(&body)["error"], "invalid_token", "{name}");
        assert!(!body.contains(token.as_str()), "{name}: token echoed");
        assert!(headers.get("www-authenticate").is_some(), "{name}");
    }
    assert_eq!(
        up.requests().len(),
        seen_before,
        "an attack reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn login_errors_and_throttling() {
    let (_fx, _up, app) = gateway(MEMORY, HS256).await;
    login_errors_and_throttling_against(app.public_addr).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn login_throttling_with_redis_counters() {
    let redis = Redis::start();
    let (_fx, _up, app) = gateway(
        &format!("backend = \"redis\"\nredis_url = \"{}\"", redis.url()),
        HS256,
    )
    .await;
    login_errors_and_throttling_against(app.public_addr).await;
}

async fn login_errors_and_throttling_against(addr: std::net::SocketAddr) {
    let attempt = |user: &str, pw: &str| {
        post("/auth/login")
            .header("content-type", "application/json")
            .body(json_body(json!({"username": user, "password": pw})))
            .unwrap()
    };
    let (s, _, unknown) = send(addr, attempt("nobody", "x")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (_, _, wrong) = send(addr, attempt("root", "wrong")).await;
    assert_eq!(
        json(&unknown),
        json(&wrong),
        "unknown user and wrong password must look the same"
    );
    assert_eq!(json(&wrong)["error"], "invalid_credentials");
    let (s, _, _) = send(
        addr,
        post("/auth/login")
            .header("content-type", "application/json")
            .body(json_body(json!({"username": "x"})))
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _, _) = send(
        addr,
        post("/auth/login").body(json_body(json!("{{{"))).unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let big = "a".repeat(100_000);
    let (s, _, body) = send(
        addr,
        post("/auth/login")
            .header("content-type", "application/json")
            .body(json_body(json!({"username": "root", "password": big})))
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    // Form login works too and sets the browser cookies.
    let form = post("/auth/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            "username=root&password=root-password",
        )))
        .unwrap();
    let (s, h, _) = send(addr, form).await;
    assert_eq!(s, StatusCode::OK);
    let cookies: Vec<_> = h
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        cookies.iter().any(|c| c.starts_with("authgate_access=")
            && c.contains("HttpOnly")
            && c.contains("SameSite=Lax")),
        "{cookies:?}"
    );
    assert!(cookies
        .iter()
        .any(|c| c.starts_with("authgate_csrf=") && !c.contains("HttpOnly")));
    // The successful login cleared root's failures; three more lock the account (max 3),
    // even for the right password.
    for _ in 0..3 {
        assert_eq!(
            send(addr, attempt("root", "wrong")).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let (s, h, body) = send(addr, attempt("root", "root-password")).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(json(&body)["error"], "too_many_attempts");
    let retry: u64 = h
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    // Another user is not affected.
    assert_eq!(
        send(addr, attempt("alice", "alice-password")).await.0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hash_from_another_argon2_implementation_logs_in() {
    let (_fx, _up, app) = gateway(MEMORY, HS256).await;
    let t = login(app.public_addr, "cffi", "cffi-password").await;
    assert!(t["access_token"].is_string());
}

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
async fn ten_parallel_refreshes_at_most_one_wins() {
    let redis = Redis::start();
    let (_fx, _up, app) = gateway(
        &format!("backend = \"redis\"\nredis_url = \"{}\"", redis.url()),
        HS256,
    )
    .await;
    let t = login(app.public_addr, "alice", "alice-password").await;
    let refresh = t["refresh_token"].as_str().unwrap().to_owned();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let addr = app.public_addr;
        let r = refresh.clone();
        tasks.push(tokio::spawn(async move {
            send(
                addr,
                post("/auth/refresh")
                    .header("authorization", format!("Bearer {r}"))
                    .body(empty())
                    .unwrap(),
            )
            .await
            .0
        }));
    }
    let mut wins = 0;
    for t in tasks {
        if t.await.unwrap() == StatusCode::OK {
            wins += 1;
        }
    }
    assert!(wins <= 1, "{wins} parallel refreshes won");
}

#[tokio::test(flavor = "multi_thread")]
async fn reuse_grace_returns_the_current_pair() {
    let tokens = format!("{HS256}\nrefresh_reuse_grace = \"30s\"");
    let (_fx, _up, app) = gateway(MEMORY, &tokens).await;
    let t = login(app.public_addr, "alice", "alice-password").await;
    let r1 = t["refresh_token"].as_str().unwrap();
    let refresh = |r: &str| {
        post("/auth/refresh")
            .header("authorization", format!("Bearer {r}"))
            .body(empty())
            .unwrap()
    };
    let (_, _, a) = send(app.public_addr, refresh(r1)).await;
    let (s, _, b) = send(app.public_addr, refresh(r1)).await;
    assert_eq!(s, StatusCode::OK, "replay within grace: {b}");
    assert_eq!(json(&a)["refresh_token"], json(&b)["refresh_token"]);
}

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
    redis.restart();
    let mut recovered = false;
    for _ in 0..50 {
        if send(app.admin_addr, get("/readyz").body(empty()).unwrap())
            .await
            .0
            == StatusCode::OK
        {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "readiness did not come back");
    assert_eq!(
        get_with_token(addr, "/app/x", &access).await.0,
        StatusCode::OK
    );
    login(addr, "alice", "alice-password").await;
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

#[tokio::test(flavor = "multi_thread")]
async fn registration_with_the_redis_user_store() {
    let redis = Redis::start();
    let up = Upstream::start().await;
    let fx = Fixture::new();
    let rev = format!("backend = \"redis\"\nredis_url = \"{}\"", redis.url());
    let text = fx.config(up.addr, HS256, &rev, "", "").replace(
        "[users]\nfile = \"users.toml\"",
        "[users]\nbackend = \"redis\"\nregistration = true",
    );
    let app = start(&fx.write("reg.toml", &text)).await;
    let register = |user: &str, pw: &str| {
        post("/auth/register")
            .header("content-type", "application/json")
            .body(json_body(json!({"username": user, "password": pw})))
            .unwrap()
    };
    let (s, _, body) = send(app.public_addr, register("dave", "dave-password")).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let (s, _, body) = send(app.public_addr, register("dave", "other-password")).await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert_eq!(
        send(app.public_addr, register("bad name!", "dave-password"))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    let t = login(app.public_addr, "dave", "dave-password").await;
    assert_eq!(
        get_with_token(
            app.public_addr,
            "/app/x",
            t["access_token"].as_str().unwrap()
        )
        .await
        .0,
        StatusCode::OK
    );

    // The CLI manages the same store: roles set there are in the next login's token.
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["users", "--config"])
        .arg(fx.path("reg.toml"))
        .args(["set-roles", "dave", "admin"])
        .status()
        .unwrap();
    assert!(st.success());
    let t = login(app.public_addr, "dave", "dave-password").await;
    assert_eq!(
        get_with_token(
            app.public_addr,
            "/admin/x",
            t["access_token"].as_str().unwrap()
        )
        .await
        .0,
        StatusCode::OK
    );

    // With registration off the endpoint does not exist.
    let (_fx2, _up2, off) = gateway(MEMORY, HS256).await;
    assert_eq!(
        send(off.public_addr, register("erin", "erin-password"))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_never_extends_the_session() {
    let tokens = "algorithm = \"HS256\"\nsecret_file = \"secret\"\naccess_ttl = \"15m\"\nrefresh_ttl = \"1h\"\nleeway = \"0s\"";
    let (_fx, _up, app) = gateway(MEMORY, tokens).await;
    let t = login(app.public_addr, "alice", "alice-password").await;
    let first_exp = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(
        t["refresh_token"].as_str().unwrap(),
    )
    .unwrap()
    .claims["exp"]
        .clone();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let req = post("/auth/refresh")
        .header(
            "authorization",
            format!("Bearer {}", t["refresh_token"].as_str().unwrap()),
        )
        .body(empty())
        .unwrap();
    let (s, _, body) = send(app.public_addr, req).await;
    assert_eq!(s, StatusCode::OK);
    let next = json(&body);
    let next_exp = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(
        next["refresh_token"].as_str().unwrap(),
    )
    .unwrap()
    .claims["exp"]
        .clone();
    assert_eq!(first_exp, next_exp, "rotation extended the session");
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
    let wait_for = |addr, token: String, want: StatusCode| async move {
        for _ in 0..100 {
            if get_with_token(addr, "/app/x", &token).await.0 == want {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
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
    redis.restart();
    assert!(
        wait_for(b.public_addr, third_access, StatusCode::OK).await,
        "mirror did not resync after the restart"
    );
}
