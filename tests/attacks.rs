//! The attacks tried from outside (jwt_tool's all-tests mode, smuggler's framings, h2csmuggler,
//! path tricks), kept as tables with the answer each must get. Related cases elsewhere:
//! `tokens.rs` (alg none spellings, foreign key and kid, tampered payload, every claim),
//! `proxy.rs` (CL.TE, duplicate and comma-joined Content-Length, obs-fold), `legacy.rs` (h2c
//! upgrade with a smuggled request, 2,000 idle sockets, trickled bodies).
// A test crate: its helpers (not only #[test] fns, which clippy.toml covers) may unwrap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::StatusCode;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;
use std::time::Duration;
use support::*;

const EDDSA: &str =
    "algorithm = \"EdDSA\"\nsigning_key_file = \"k/ed.pem\"\ngenerate_missing_key = true\naccess_ttl = \"15m\"";

fn b64(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

fn hs256(header: Header, claims: &serde_json::Value, secret: &[u8]) -> String {
    encode(&header, claims, &EncodingKey::from_secret(secret)).unwrap()
}

/// jwt_tool `-M at` (all tests) against an EdDSA gateway, whose public key is in its JWKS:
/// every forgery is 401 `invalid_token`, nothing reaches the app, the token is not echoed.
#[tokio::test(flavor = "multi_thread")]
async fn jwt_tool_all_tests_mode_is_401_for_every_forgery() {
    let gw = TestGateway::new().tokens(EDDSA).start().await;
    let genuine = login_pair(gw.addr, "root", "root-password").await.access;
    let (s, _, jwks) = send(
        gw.addr,
        get("/.well-known/jwks.json").body(empty()).unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let jwks = json(&jwks);
    let key = &jwks["keys"][0];
    let x = key["x"].as_str().unwrap().to_owned();
    let kid = key["kid"].as_str().unwrap().to_owned();
    let raw_x = URL_SAFE_NO_PAD.decode(&x).unwrap();
    let parts: Vec<&str> = genuine.split('.').collect();
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims.clone();
        f(&mut c);
        c
    };
    let hs_header = |kid: Option<&str>| {
        let mut h = Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = kid.map(str::to_owned);
        h
    };
    let attacker = b"attacker-secret-attacker-secret-attacker";
    let unsigned = |h: serde_json::Value, c: &serde_json::Value, sig: &str| {
        format!("{}.{}.{sig}", b64(&h), b64(c))
    };
    let cases: Vec<(&str, String)> = vec![
        // alg none (jwt_tool -X a), with the genuine claims and without a signature.
        (
            "alg none",
            unsigned(json!({"alg": "none", "typ": "JWT"}), &claims, ""),
        ),
        (
            "alg none, kid kept",
            unsigned(json!({"alg": "none", "kid": kid}), &claims, ""),
        ),
        // Null signature (-X n): the genuine header and claims, the signature dropped.
        ("null signature", format!("{}.{}.", parts[0], parts[1])),
        // Psychic signature (CVE-2022-21449, -X p): ES256 with r = s = 0.
        (
            "psychic signature",
            unsigned(
                json!({"alg": "ES256", "kid": kid}),
                &claims,
                &URL_SAFE_NO_PAD.encode([0u8; 64]),
            ),
        ),
        (
            "psychic signature, DER",
            unsigned(
                json!({"alg": "ES256"}),
                &claims,
                &URL_SAFE_NO_PAD.encode([0x30, 6, 2, 1, 0, 2, 1, 0]),
            ),
        ),
        // Key confusion (-X k): HS256 keyed with the published public key, as text and raw.
        (
            "key confusion, JWK x as secret",
            hs256(hs_header(Some(&kid)), &claims, x.as_bytes()),
        ),
        (
            "key confusion, raw public key as secret",
            hs256(hs_header(Some(&kid)), &claims, &raw_x),
        ),
        (
            "key confusion, JWKS document as secret",
            hs256(hs_header(None), &claims, jwks.to_string().as_bytes()),
        ),
        // jku / x5u injection (-X s, -X u): the attacker's key set, signed with its key.
        ("jku injection", {
            let mut h = hs_header(None);
            h.jku = Some("http://127.0.0.1:9/jwks.json".into());
            hs256(h, &claims, attacker)
        }),
        ("x5u injection", {
            let mut h = hs_header(None);
            h.x5u = Some("http://127.0.0.1:9/cert.pem".into());
            hs256(h, &claims, attacker)
        }),
        // Embedded JWK (-X i, CVE-2018-0114): the attacker's key in the header.
        (
            "embedded jwk",
            unsigned(
                json!({"alg": "HS256", "jwk": {"kty": "oct", "k": URL_SAFE_NO_PAD.encode(attacker)}}),
                &claims,
                &URL_SAFE_NO_PAD.encode([1u8; 32]),
            ),
        ),
        // kid injection (-I -hc kid): path traversal to an empty or known file, SQL, command.
        (
            "kid path traversal, empty key",
            hs256(hs_header(Some("../../../../../../dev/null")), &claims, b""),
        ),
        (
            "kid path traversal, known file",
            hs256(
                hs_header(Some("/proc/sys/kernel/randomize_va_space")),
                &claims,
                b"2\n",
            ),
        ),
        (
            "kid sql injection",
            hs256(hs_header(Some("x' UNION SELECT 'a")), &claims, b"a"),
        ),
        (
            "kid command injection",
            hs256(hs_header(Some("x|sleep 5")), &claims, b""),
        ),
        // Claim tampering (-T): the genuine signature over changed claims.
        (
            "tampered sub",
            format!(
                "{}.{}.{}",
                parts[0],
                b64(&with(&|c| c["sub"] = json!("alice"))),
                parts[2]
            ),
        ),
        (
            "tampered exp",
            format!(
                "{}.{}.{}",
                parts[0],
                b64(&with(&|c| c["exp"] = json!(4_102_444_800u64))),
                parts[2]
            ),
        ),
        ("tampered header alg", {
            let mut h = header.clone();
            h["alg"] = json!("HS256");
            format!("{}.{}.{}", b64(&h), parts[1], parts[2])
        }),
        // Blank password / common secret (-C with a wordlist): HS256 with guesses.
        ("blank secret", hs256(hs_header(None), &claims, b"")),
        (
            "secret 'secret'",
            hs256(hs_header(None), &claims, b"secret"),
        ),
    ];
    // The genuine token passes (the table is about forgeries, not a broken gateway).
    assert_eq!(
        get_with_token(gw.addr, "/admin/x", &genuine).await.0,
        StatusCode::OK
    );
    let before = gw.up.requests().len();
    for (name, token) in &cases {
        let (s, h, body) = get_with_token(gw.addr, "/admin/x", token).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{name}: {body}");
        assert_eq!(json(&body)["error"], "invalid_token", "{name}");
        assert!(h.get("www-authenticate").is_some(), "{name}");
        assert!(!body.contains(token.as_str()), "{name}: token echoed");
    }
    assert_eq!(gw.up.requests().len(), before, "a forgery reached the app");
}

/// smuggler.py's framings (CL.TE, TE.CL, TE.TE obfuscations), each with the status it gets and
/// how many requests reach the app, NEXT (a second request written right after the body)
/// included. A framing two servers could read differently is refused (400) and nothing is
/// forwarded. CL with TE is read as chunked (RFC 9112 6.3), forwarded as one request with
/// one framing, and the connection closed after the answer: NEXT is never read. A framing
/// that is valid (bare LF ends a line, RFC 9112 2.2) leaves NEXT a request of its own.
#[tokio::test(flavor = "multi_thread")]
async fn smuggler_framings_get_their_status_and_nothing_is_smuggled() {
    let gw = TestGateway::new().start().await;
    const NEXT: &str = "GET /public/smuggled HTTP/1.1\r\nHost: gw\r\n\r\n";
    let cases: &[(&str, &str, &str, u16, usize)] = &[
        // (name, headers, body, status, requests reaching the app)
        (
            "CL.TE",
            "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
            "0\r\n\r\n",
            200,
            1,
        ),
        (
            "TE.CL",
            "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
            "8\r\nSMUGGLED\r\n0\r\n\r\n",
            200,
            1,
        ),
        (
            "TE.TE xchunked",
            "Transfer-Encoding: xchunked\r\n",
            "0\r\n\r\n",
            400,
            0,
        ),
        (
            "TE.TE chunked, identity",
            "Transfer-Encoding: chunked, identity\r\n",
            "0\r\n\r\n",
            400,
            0,
        ),
        (
            "TE.TE two headers",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n",
            "0\r\n\r\n",
            400,
            0,
        ),
        (
            "TE.TE space before colon",
            "Transfer-Encoding : chunked\r\n",
            "0\r\n\r\n",
            400,
            0,
        ),
        (
            "TE.TE vertical tab",
            "Transfer-Encoding:\x0bchunked\r\n",
            "0\r\n\r\n",
            400,
            0,
        ),
        (
            "TE.TE leading space line",
            " Transfer-Encoding: chunked\r\n",
            "0\r\n\r\n",
            400,
            0,
        ),
        ("CL comma list", "Content-Length: 5, 5\r\n", "hello", 400, 0),
        ("CL plus sign", "Content-Length: +5\r\n", "hello", 400, 0),
        ("CL negative", "Content-Length: -1\r\n", "", 400, 0),
        (
            "chunk size overflow",
            "Transfer-Encoding: chunked\r\n",
            "ffffffffffffffffff\r\nx\r\n0\r\n\r\n",
            400,
            0,
        ),
        (
            "chunk extension with bare LF",
            "Transfer-Encoding: chunked\r\n",
            "5;\nx\r\nhello\r\n0\r\n\r\n",
            400,
            0,
        ),
        (
            "bare LF between headers",
            "X: y\nTransfer-Encoding: chunked\r\n",
            "0\r\n\r\n",
            200,
            2,
        ),
        (
            "TE tab (valid OWS)",
            "Transfer-Encoding:\tchunked\r\n",
            "0\r\n\r\n",
            200,
            2,
        ),
        (
            "TE upper case (valid)",
            "Transfer-Encoding: CHUNKED\r\n",
            "0\r\n\r\n",
            200,
            2,
        ),
        (
            "plain chunked (valid)",
            "Transfer-Encoding: chunked\r\n",
            "5\r\nhello\r\n0\r\n\r\n",
            200,
            2,
        ),
    ];
    for (name, headers, body, status, reaching) in cases {
        let before = gw.up.requests().len();
        let req = format!("POST /public/a HTTP/1.1\r\nHost: gw\r\n{headers}\r\n{body}{NEXT}");
        let answer = raw(gw.addr, req.as_bytes(), Duration::from_millis(1500)).await;
        let first = answer.lines().next().unwrap_or("");
        assert!(
            first.starts_with(&format!("HTTP/1.1 {status} ")),
            "{name}: {first}"
        );
        let seen = &gw.up.requests()[before..];
        assert_eq!(seen.len(), *reaching, "{name}: {seen:?}");
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            *reaching.max(&1),
            "{name}: {answer}"
        );
        for r in seen {
            // One framing at the app, whatever the client sent.
            assert!(
                !(r.headers.contains_key("content-length")
                    && r.headers.contains_key("transfer-encoding")),
                "{name}: {r:?}"
            );
        }
    }
}

/// h2csmuggler: an `Upgrade: h2c` (with and without the settings header, on public and
/// protected routes) and a prior-knowledge HTTP/2 preface over cleartext.
#[tokio::test(flavor = "multi_thread")]
async fn h2c_smuggling_gets_400_and_no_tunnel() {
    let gw = TestGateway::new().start().await;
    let cases: &[(&str, &[u8], &str)] = &[
        (
            "upgrade on a public route",
            b"GET /public/x HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
            "HTTP/1.1 400",
        ),
        (
            "upgrade without HTTP2-Settings",
            b"GET /public/x HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
            "HTTP/1.1 400",
        ),
        (
            "upgrade on a protected route",
            b"GET /admin/x HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
            "HTTP/1.1 400",
        ),
        (
            "upgrade to something else",
            b"GET /public/x HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: tls/1.3\r\n\r\n",
            "HTTP/1.1 400",
        ),
    ];
    for (name, req, status) in cases {
        let mut bytes = req.to_vec();
        bytes.extend_from_slice(b"GET /admin/secret HTTP/1.1\r\nHost: gw\r\n\r\n");
        let answer = raw(gw.addr, &bytes, Duration::from_secs(2)).await;
        assert!(answer.starts_with(status), "{name}: {answer}");
        assert!(!answer.contains("101 Switching"), "{name}: {answer}");
    }
    assert!(
        gw.up.requests().iter().all(|r| !r.uri.contains("admin")),
        "a smuggled request reached the app: {:?}",
        gw.up.requests()
    );
}

/// The path tricks, with a user token (no admin role): each judged as normalized (403 for
/// `/admin`), or refused (400) where two servers could read it differently.
#[tokio::test(flavor = "multi_thread")]
async fn path_tricks_get_their_status() {
    let gw = TestGateway::new().start().await;
    let user = login_pair(gw.addr, "alice", "alice-password").await;
    let cases: &[(&str, u16)] = &[
        ("/admin/x", 403),
        ("/public/../admin/x", 403),
        ("/public/%2e%2e/admin/x", 403),
        ("/public/%2E%2E/admin/x", 403),
        ("/public/.%2e/admin/x", 403),
        ("/public;x=y/../admin/x", 403),
        ("/public/./../admin/x", 403),
        ("//admin/x", 403),
        ("/%61dmin/x", 403),
        ("/admin;jsessionid=1/x", 403),
        ("/./admin/x", 403),
        ("/public/../../admin/x", 400),
        // Issue 18: `;params` on an empty or dot segment (a servlet container reads these
        // as /admin/x, a reader that keeps `;x` as a segment as /public/admin/x).
        ("/public/..;/admin/x", 400),
        ("/public/;/../admin/x", 400),
        ("/public/;x=1/../admin/x", 400),
        ("/public/a/;/../../admin/x", 400),
        ("/public/;jsessionid=A/../admin/x", 400),
        ("/admin%2Fx", 400),
        ("/public/..%2Fadmin/x", 400),
        ("/public/%2e%2e%2fadmin/x", 400),
        ("/public/..%5Cadmin/x", 400),
        ("/public/..\\admin/x", 400),
        ("/public/%00/../admin/x", 400),
        ("/public/%zz", 400),
        ("/public/x", 200),
    ];
    for (path, status) in cases {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            user.access
        );
        let answer = raw(gw.addr, req.as_bytes(), Duration::from_secs(2)).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{path}: {}",
            answer.lines().next().unwrap_or("")
        );
    }
    assert!(
        gw.up.requests().iter().all(|r| !r.uri.contains("admin")),
        "{:?}",
        gw.up.requests()
    );
}
