//! Tokens end to end: the seed flow (login, protected call, refresh, logout) on both
//! backends, EdDSA and JWKS, forged or tampered tokens (all 401, never 5xx), and many users
//! at once whose EdDSA signatures are checked together.
// A test crate: its helpers (not only #[test] fns, which clippy.toml covers) may unwrap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::StatusCode;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;
use support::*;

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
    let now = authgate::clock::now_secs();
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

/// Signing-key rotation without logging anyone out: the new key signs, the old one still
/// verifies (by kid) and stays in JWKS until it is dropped.
#[tokio::test(flavor = "multi_thread")]
async fn key_rotation_keeps_sessions_and_publishes_both_keys() {
    let fx = Fixture::new();
    let up = Upstream::start().await;
    // Sessions outlive the restarts only in a shared store.
    let redis = Redis::start();
    let store = format!("backend = \"redis\"\nredis_url = \"{}\"", redis.url());
    for name in ["old.pem", "new.pem"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_authgate"))
            .args(["keygen", "--alg", "EdDSA", "--out"])
            .arg(fx.path(name))
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let before = "algorithm = \"EdDSA\"\nsigning_key_file = \"old.pem\"";
    let app = start(&fx.write("a.toml", &fx.config(up.addr, before, &store, "", ""))).await;
    let old = login_pair(app.public_addr, "alice", "alice-password").await;
    drop(app);
    // Rotate: new key current, the old one verify-only.
    let after =
        "algorithm = \"EdDSA\"\nsigning_key_file = \"new.pem\"\nprevious_key_files = [\"old.pem\"]";
    let app = start(&fx.write("b.toml", &fx.config(up.addr, after, &store, "", ""))).await;
    assert_eq!(
        get_with_token(app.public_addr, "/app/x", &old.access)
            .await
            .0,
        StatusCode::OK
    );
    let new = login_pair(app.public_addr, "alice", "alice-password").await;
    let kid = |t: &str| jsonwebtoken::decode_header(t).unwrap().kid.unwrap();
    assert_ne!(kid(&old.access), kid(&new.access));
    let (_, _, jwks) = send(
        app.public_addr,
        get("/.well-known/jwks.json").body(empty()).unwrap(),
    )
    .await;
    assert!(
        jwks.contains(&kid(&old.access)) && jwks.contains(&kid(&new.access)),
        "{jwks}"
    );
    // The old refresh token still refreshes (onto the new key).
    assert_eq!(
        post_with_token(app.public_addr, "/auth/refresh", &old.refresh)
            .await
            .0,
        StatusCode::OK
    );
    drop(app);
    // Dropped: its tokens are refused and it leaves JWKS.
    let done = "algorithm = \"EdDSA\"\nsigning_key_file = \"new.pem\"";
    let app = start(&fx.write("c.toml", &fx.config(up.addr, done, &store, "", ""))).await;
    assert_eq!(
        get_with_token(app.public_addr, "/app/x", &old.access)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get_with_token(app.public_addr, "/app/x", &new.access)
            .await
            .0,
        StatusCode::OK
    );
    let (_, _, jwks) = send(
        app.public_addr,
        get("/.well-known/jwks.json").body(empty()).unwrap(),
    )
    .await;
    assert!(!jwks.contains(&kid(&old.access)), "{jwks}");
}

/// The gateway remembers the last access token verified on a connection (to skip its digest
/// and the cache on the next request): everything else is still checked on every request of
/// that connection. Another user's token is judged as itself, a token that differs in one
/// byte is refused, and a logout (elsewhere) refuses the remembered token at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_remembered_on_a_connection_is_still_checked_every_time() {
    let (_fx, up, app) = gateway(MEMORY, HS256).await;
    let addr = app.public_addr;
    let alice = login_pair(addr, "alice", "alice-password").await;
    let root = login_pair(addr, "root", "root-password").await;
    let mut conn = connection(addr).await;
    let user_on = |seen: Seen| {
        seen.headers
            .get("x-auth-user")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    for (token, user) in [
        (&alice.access, "alice"),
        (&alice.access, "alice"),
        (&root.access, "root"),
        (&alice.access, "alice"),
    ] {
        let (s, body) = get_on(&mut conn, "/app/x", token).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        assert_eq!(user_on(up.last()).as_deref(), Some(user));
    }
    // Roles come with the token remembered: alice's are not root's.
    assert_eq!(
        get_on(&mut conn, "/admin/x", &alice.access).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get_on(&mut conn, "/admin/x", &root.access).await.0,
        StatusCode::OK
    );
    // One byte changed, same length: not the remembered token.
    let remembered = root.access.clone();
    assert_eq!(
        get_on(&mut conn, "/app/x", &remembered).await.0,
        StatusCode::OK
    );
    let mut forged = remembered.into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let (s, body) = get_on(&mut conn, "/app/x", &forged).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    // A refresh token is never taken for the access token remembered.
    assert_eq!(
        get_on(&mut conn, "/app/x", &alice.access).await.0,
        StatusCode::OK
    );
    assert_eq!(
        get_on(&mut conn, "/app/x", &alice.refresh).await.0,
        StatusCode::UNAUTHORIZED
    );
    // Logout on another connection; the remembered token is refused on this one at once.
    assert_eq!(
        get_on(&mut conn, "/app/x", &alice.access).await.0,
        StatusCode::OK
    );
    let req = post("/auth/logout")
        .header("authorization", format!("Bearer {}", alice.access))
        .body(empty())
        .unwrap();
    assert_eq!(send(addr, req).await.0, StatusCode::NO_CONTENT);
    let (s, body) = get_on(&mut conn, "/app/x", &alice.access).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(json(&body)["error"], "invalid_token");
    assert_eq!(
        get_on(&mut conn, "/app/x", &root.access).await.0,
        StatusCode::OK
    );
}

/// Regression: a correctly signed token whose header carries `crit` was accepted; RFC 7515
/// section 4.1.11 says a receiver that does not understand the listed extensions must reject it.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_with_crit_is_refused() {
    let gw = TestGateway::new().start().await;
    let mut h = Header::new(jsonwebtoken::Algorithm::HS256);
    h.crit = Some(vec!["exp".into()]);
    let with_crit = encode(
        &h,
        &claims("access"),
        &EncodingKey::from_secret(HS_SECRET.as_bytes()),
    )
    .unwrap();
    let (s, h2, body) = get_with_token(gw.addr, "/app/x", &with_crit).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    assert!(h2
        .get("www-authenticate")
        .unwrap()
        .to_str()
        .unwrap()
        .contains("invalid_token"));
    // The same token without it passes: it is the `crit` that is refused.
    assert_eq!(
        get_with_token(gw.addr, "/app/x", &sign(&claims("access")))
            .await
            .0,
        StatusCode::OK
    );
}

/// Many users at once with tokens the cache has not seen. With EdDSA, the signatures of
/// requests that miss together are checked in one equation: each request must still be
/// judged on its own token. Forged ones among them (another token's signature, another key's)
/// are refused alone, the others reach the upstream as their own user.
#[tokio::test(flavor = "multi_thread")]
async fn eddsa_tokens_missing_the_cache_together_are_each_judged() {
    let tokens =
        "algorithm = \"EdDSA\"\nsigning_key_file = \"k/ed.pem\"\ngenerate_missing_key = true";
    let (fx, up, app) = gateway(MEMORY, tokens).await;
    let addr = app.public_addr;
    // The gateway's own key (generated at start) and the kid its tokens carry.
    let issued = login(addr, "root", "root-password").await;
    let kid = jsonwebtoken::decode_header(issued["access_token"].as_str().unwrap())
        .unwrap()
        .kid;
    let ours = EncodingKey::from_ed_pem(&std::fs::read(fx.path("k/ed.pem")).unwrap()).unwrap();
    let other_pem = authgate::auth::keys::generate(authgate::config::Algorithm::EdDSA).unwrap();
    let other = EncodingKey::from_ed_pem(other_pem.as_bytes()).unwrap();
    let mut header = Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = kid;
    let token = |i: usize, key: &EncodingKey| {
        let mut c = claims("access");
        c["sub"] = json!(format!("user{i}"));
        c["jti"] = json!(format!("jti-{i:08}"));
        c["sid"] = json!(format!("sid-{i:08}"));
        encode(&header, &c, key).unwrap()
    };
    let mut all: Vec<(String, bool)> = (0..48).map(|i| (token(i, &ours), true)).collect();
    for i in [5, 17, 40] {
        // Another token's signature under this one's header and claims.
        let (signed, _) = all[i].0.rsplit_once('.').unwrap();
        let (_, stolen) = all[i - 1].0.rsplit_once('.').unwrap();
        all[i] = (format!("{signed}.{stolen}"), false);
    }
    for i in [11, 30] {
        all[i] = (token(i, &other), false);
    }
    let seen_before = up.requests().len();
    let answers = futures_util::future::join_all(
        all.iter()
            .map(|(token, _)| get_with_token(addr, "/app/x", token)),
    )
    .await;
    for (i, ((status, _, body), (_, good))) in answers.iter().zip(&all).enumerate() {
        let want = if *good {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_eq!(*status, want, "token {i}: {body}");
    }
    let mut users: Vec<String> = up.requests()[seen_before..]
        .iter()
        .map(|r| r.headers["x-auth-user"].to_str().unwrap().to_owned())
        .collect();
    users.sort();
    let mut want: Vec<String> = (0..48)
        .filter(|i| all[*i].1)
        .map(|i| format!("user{i}"))
        .collect();
    want.sort();
    assert_eq!(
        users, want,
        "each request reached the upstream as its own user"
    );
}
