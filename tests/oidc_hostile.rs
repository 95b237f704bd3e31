//! Single sign-on against a hostile identity provider written here: a real HTTP server with
//! discovery, a JWKS and a token endpoint that hands out whatever ID token the test chose.
//! Every bad ID token is refused and signs no one in; state, nonce, PKCE, `iss` (RFC 9207),
//! errors, open redirects and back-channel logout tokens are checked the same way.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use support::*;
use tokio::net::TcpListener;

/// An Ed25519 signing key: its encoding key for jsonwebtoken and its public JWK.
struct Key {
    encoding: EncodingKey,
    x: String,
    kid: String,
}

impl Key {
    fn new(kid: &str) -> Key {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        Key {
            encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
            x: URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
            kid: kid.to_owned(),
        }
    }

    fn jwk(&self) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "x": self.x, "kid": self.kid, "use": "sig", "alg": "EdDSA"})
    }

    fn sign(&self, claims: &Value) -> String {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, claims, &self.encoding).unwrap()
    }
}

/// What the hostile provider serves and saw.
#[derive(Default)]
struct Shared {
    /// The next token answer's `id_token`.
    id_token: String,
    /// Bodies and Authorization headers of token requests.
    token_requests: Vec<(String, Option<String>)>,
    jwks_fetches: usize,
}

struct Hostile {
    issuer: String,
    key: Key,
    shared: Arc<Mutex<Shared>>,
}

impl Hostile {
    async fn start() -> Hostile {
        Self::start_on(0).await
    }

    async fn start_on(port: u16) -> Hostile {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let issuer = format!("http://{addr}");
        let key = Key::new("k1");
        let jwks = json!({"keys": [key.jwk()]});
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (iss, sh) = (issuer.clone(), shared.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (iss, sh, jwks) = (iss.clone(), sh.clone(), jwks.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (iss, sh, jwks) = (iss.clone(), sh.clone(), jwks.clone());
                        async move {
                            let path = req.uri().path().to_owned();
                            let auth = req
                                .headers()
                                .get("authorization")
                                .map(|v| v.to_str().unwrap().to_owned());
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let answer = match path.as_str() {
                                "/.well-known/openid-configuration" => json!({
                                    "issuer": iss,
                                    "authorization_endpoint": format!("{iss}/authorize"),
                                    "token_endpoint": format!("{iss}/token"),
                                    "jwks_uri": format!("{iss}/jwks"),
                                    "end_session_endpoint": format!("{iss}/logout"),
                                    "id_token_signing_alg_values_supported": ["EdDSA", "HS256", "none"],
                                    "token_endpoint_auth_methods_supported": ["client_secret_basic"],
                                }),
                                "/jwks" => {
                                    sh.lock().unwrap().jwks_fetches += 1;
                                    jwks
                                }
                                "/token" => {
                                    let mut s = sh.lock().unwrap();
                                    s.token_requests
                                        .push((String::from_utf8_lossy(&body).into_owned(), auth));
                                    json!({"access_token": "at", "token_type": "Bearer", "id_token": s.id_token})
                                }
                                _ => json!({}),
                            };
                            let mut resp =
                                Response::new(Full::new(Bytes::from(answer.to_string())));
                            resp.headers_mut()
                                .insert("content-type", "application/json".parse().unwrap());
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Hostile {
            issuer,
            key,
            shared,
        }
    }

    fn will_answer(&self, id_token: &str) {
        self.shared.lock().unwrap().id_token = id_token.to_owned();
    }

    fn good_claims(&self, nonce: &str) -> Value {
        let now = authgate::clock::now_secs();
        json!({
            "iss": self.issuer, "aud": "authgate", "sub": "u-1", "iat": now, "exp": now + 300,
            "nonce": nonce, "preferred_username": "carol", "groups": ["eng", "unmapped"],
            "email": "carol@example.com", "email_verified": true, "sid": "provider-session-1",
        })
    }
}

async fn gateway(h: &Hostile, extra: &str) -> Running {
    TestGateway::new()
        .tables(&format!(
            "[[login.oidc]]\nname = \"h\"\ndisplay_name = \"Hostile <SSO>\"\nissuer = \"{}\"\n\
             client_id = \"authgate\"\nclient_secret = \"s3cret\"\nroles_claim = \"groups\"\n\
             role_map = {{ \"eng\" = [\"user\", \"eng\"] }}\n{extra}",
            h.issuer
        ))
        .start()
        .await
}

/// A sign-in started: the flow cookie and the parameters of the authorization request.
struct Started {
    cookie: String,
    state: String,
    nonce: String,
    challenge: String,
}

async fn start_flow(addr: SocketAddr, next: &str) -> Started {
    let (status, headers, _) = send(
        addr,
        get(&format!("/auth/oidc/h/start?next={next}"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::FOUND);
    let location = headers["location"].to_str().unwrap().to_owned();
    let query = location.split_once('?').unwrap().1;
    let params: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap();
    let p = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{k} missing from {location}"))
    };
    assert_eq!(p("response_type"), "code");
    assert_eq!(p("code_challenge_method"), "S256");
    assert_eq!(p("client_id"), "authgate");
    assert!(p("scope").split(' ').any(|s| s == "openid"));
    let cookies = set_cookies(&headers);
    let (name, value) = cookies
        .iter()
        .find(|(k, _)| k == "authgate_oidc")
        .expect("no flow cookie");
    Started {
        cookie: format!("{name}={value}"),
        state: p("state"),
        nonce: p("nonce"),
        challenge: p("code_challenge"),
    }
}

async fn callback(
    addr: SocketAddr,
    cookie: Option<&str>,
    query: &str,
) -> (StatusCode, http::HeaderMap, String) {
    let mut b = get(&format!("/auth/oidc/h/callback?{query}")).header("accept", "text/html");
    if let Some(c) = cookie {
        b = b.header("cookie", c);
    }
    send(addr, b.body(empty()).unwrap()).await
}

fn session_cookie(headers: &http::HeaderMap) -> Option<String> {
    let c: Vec<String> = set_cookies(headers)
        .into_iter()
        .filter(|(k, v)| k.starts_with("authgate_") && k != "authgate_oidc" && !v.is_empty())
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    (!c.is_empty()).then(|| c.join("; "))
}

#[tokio::test]
async fn a_good_id_token_signs_in_and_the_upstream_sees_the_mapped_identity() {
    let h = Hostile::start().await;
    let gw = gateway(&h, "").await;
    let s = start_flow(gw.addr, "/app/page").await;
    h.will_answer(&h.key.sign(&h.good_claims(&s.nonce)));
    let (status, headers, body) = callback(
        gw.addr,
        Some(&s.cookie),
        &format!("code=c1&state={}", s.state),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(headers["location"], "/app/page");
    let cookie = session_cookie(&headers).expect("no session cookies");
    // The flow cookie is spent.
    assert!(set_cookies(&headers)
        .iter()
        .any(|(k, v)| k == "authgate_oidc" && v.is_empty()));
    // The token request carried the PKCE verifier and the client's Basic credentials.
    let (form, auth) = h.shared.lock().unwrap().token_requests[0].clone();
    let fields: Vec<(String, String)> = serde_urlencoded::from_str(&form).unwrap();
    let verifier = &fields.iter().find(|(k, _)| k == "code_verifier").unwrap().1;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    assert_eq!(URL_SAFE_NO_PAD.encode(digest), s.challenge);
    assert!(fields.iter().any(|(k, v)| k == "code" && v == "c1"));
    assert_eq!(auth.as_deref(), Some("Basic YXV0aGdhdGU6czNjcmV0"));
    // The session works like a password one: the upstream gets the identity, mapped roles.
    let (status, _, _) = send(gw.addr, with_cookie(get("/app/page"), &cookie)).await;
    assert_eq!(status, StatusCode::OK);
    let seen = gw.up.last();
    assert_eq!(seen.headers["x-auth-user"], "carol");
    assert_eq!(seen.headers["x-auth-roles"], "user,eng");
    let (status, _, me) = send(gw.addr, with_cookie(get("/auth/me"), &cookie)).await;
    assert_eq!(status, StatusCode::OK);
    let me = json(&me);
    assert_eq!(me["idp"], "h");
    assert_eq!(me["sub"], "carol");
    // And it refreshes without a user record (users = "any").
    let refresh = cookie
        .split("; ")
        .filter(|c| c.starts_with("authgate_refresh=") || c.starts_with("authgate_csrf="))
        .collect::<Vec<_>>()
        .join("; ");
    let csrf = cookie
        .split("; ")
        .find_map(|c| c.strip_prefix("authgate_csrf="))
        .unwrap()
        .to_owned();
    let (status, headers, body) = send(
        gw.addr,
        with_cookie(post("/auth/refresh").header("x-csrf-token", csrf), &refresh),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let renewed = session_cookie(&headers).unwrap();
    let (status, _, me) = send(gw.addr, with_cookie(get("/auth/me"), &renewed)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&me)["idp"], "h");
}

#[tokio::test]
async fn every_bad_id_token_is_refused() {
    let h = Hostile::start().await;
    let gw = gateway(&h, "").await;
    let other = Key::new("k1"); // same kid, another key
    type Case = (&'static str, Box<dyn Fn(&Hostile, &str) -> String>);
    let with = |f: fn(&mut Value)| {
        move |h: &Hostile, nonce: &str| {
            let mut c = h.good_claims(nonce);
            f(&mut c);
            h.key.sign(&c)
        }
    };
    let cases: Vec<Case> = vec![
        (
            "wrong aud",
            Box::new(with(|c| c["aud"] = json!("someone-else"))),
        ),
        (
            "wrong iss",
            Box::new(with(|c| c["iss"] = json!("http://evil.example"))),
        ),
        (
            "expired",
            Box::new(with(|c| {
                c["exp"] = json!(authgate::clock::now_secs() - 600)
            })),
        ),
        (
            "iat in the future",
            Box::new(with(|c| {
                c["iat"] = json!(authgate::clock::now_secs() + 600)
            })),
        ),
        (
            "wrong nonce",
            Box::new(with(|c| c["nonce"] = json!("not-it"))),
        ),
        (
            "missing nonce",
            Box::new(with(|c| {
                c.as_object_mut().unwrap().remove("nonce");
            })),
        ),
        (
            "several audiences, no azp",
            Box::new(with(|c| c["aud"] = json!(["authgate", "other"]))),
        ),
        (
            "azp of another client",
            Box::new(with(|c| c["azp"] = json!("other"))),
        ),
        ("string exp", Box::new(with(|c| c["exp"] = json!("never")))),
        (
            "another key",
            Box::new(move |h: &Hostile, n: &str| other.sign(&h.good_claims(n))),
        ),
        (
            "alg none",
            Box::new(|h: &Hostile, n: &str| {
                let head = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
                let body = URL_SAFE_NO_PAD.encode(h.good_claims(n).to_string());
                format!("{head}.{body}.")
            }),
        ),
        (
            "HS256 with the public key",
            Box::new(|h: &Hostile, n: &str| {
                let mut head = Header::new(Algorithm::HS256);
                head.kid = Some("k1".into());
                jsonwebtoken::encode(
                    &head,
                    &h.good_claims(n),
                    &EncodingKey::from_secret(h.key.x.as_bytes()),
                )
                .unwrap()
            }),
        ),
        (
            "HS256 with the raw public key",
            Box::new(|h: &Hostile, n: &str| {
                let mut head = Header::new(Algorithm::HS256);
                head.kid = Some("k1".into());
                let public = URL_SAFE_NO_PAD.decode(&h.key.x).unwrap();
                jsonwebtoken::encode(&head, &h.good_claims(n), &EncodingKey::from_secret(&public))
                    .unwrap()
            }),
        ),
        (
            "garbage",
            Box::new(|_: &Hostile, _: &str| "not.a.jwt".to_owned()),
        ),
    ];
    for (what, make) in &cases {
        let s = start_flow(gw.addr, "/app").await;
        h.will_answer(&make(&h, &s.nonce));
        let (status, headers, body) = callback(
            gw.addr,
            Some(&s.cookie),
            &format!("code=c&state={}", s.state),
        )
        .await;
        assert!(
            status.is_client_error() || status.is_server_error(),
            "{what}: {status}"
        );
        assert!(
            session_cookie(&headers).is_none(),
            "{what}: a session started"
        );
        assert!(body.contains("could not be verified"), "{what}: {body}");
        assert!(!body.contains(&s.nonce), "{what}: the page echoes the flow");
    }
    // The control: the same flow with a good token signs in.
    let s = start_flow(gw.addr, "/app").await;
    h.will_answer(&h.key.sign(&h.good_claims(&s.nonce)));
    let (status, _, body) = callback(
        gw.addr,
        Some(&s.cookie),
        &format!("code=c&state={}", s.state),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    // An unknown kid refetched the keys once; a flood of them does not refetch again.
    let fetches = h.shared.lock().unwrap().jwks_fetches;
    for i in 0..5 {
        let s = start_flow(gw.addr, "/app").await;
        let k = Key::new(&format!("rotated-{i}"));
        h.will_answer(&k.sign(&h.good_claims(&s.nonce)));
        let (status, ..) = callback(
            gw.addr,
            Some(&s.cookie),
            &format!("code=c&state={}", s.state),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let after = h.shared.lock().unwrap().jwks_fetches;
    assert!(
        after - fetches <= 1,
        "unknown kids fetched the JWKS {} times",
        after - fetches
    );
}

#[tokio::test]
async fn state_replay_login_csrf_errors_and_open_redirects_are_refused() {
    let h = Hostile::start().await;
    let gw = gateway(&h, "").await;
    // No flow cookie (a callback finished in another browser: login CSRF).
    let s = start_flow(gw.addr, "/app").await;
    h.will_answer(&h.key.sign(&h.good_claims(&s.nonce)));
    let (status, headers, body) =
        callback(gw.addr, None, &format!("code=c&state={}", s.state)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(session_cookie(&headers).is_none());
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"),
        "{body}"
    );
    // Another browser's flow cookie with this state.
    let other = start_flow(gw.addr, "/app").await;
    let (status, headers, _) = callback(
        gw.addr,
        Some(&other.cookie),
        &format!("code=c&state={}", s.state),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(session_cookie(&headers).is_none());
    // A tampered cookie.
    let tampered = s.cookie.replace('.', "x.");
    let (status, ..) = callback(
        gw.addr,
        Some(&tampered),
        &format!("code=c&state={}", s.state),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // The right one works once; replayed (same cookie and URL), refused.
    let (status, ..) = callback(
        gw.addr,
        Some(&s.cookie),
        &format!("code=c&state={}", s.state),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, headers, body) = callback(
        gw.addr,
        Some(&s.cookie),
        &format!("code=c&state={}", s.state),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(session_cookie(&headers).is_none());
    assert!(body.contains("already used"));
    // The provider's error, with HTML in the description: a page, nothing echoed.
    let s = start_flow(gw.addr, "/app").await;
    let (status, headers, body) = callback(
        gw.addr,
        Some(&s.cookie),
        &format!(
            "error=access_denied&error_description=%3Cscript%3Ealert(1)%3C%2Fscript%3E&state={}",
            s.state
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(session_cookie(&headers).is_none());
    assert!(!body.contains("<script>alert"), "{body}");
    assert!(body.contains("cancelled or refused"));
    assert!(
        body.contains("Hostile &lt;SSO&gt;"),
        "display name escaped: {body}"
    );
    // RFC 9207: an `iss` naming another provider.
    let s = start_flow(gw.addr, "/app").await;
    h.will_answer(&h.key.sign(&h.good_claims(&s.nonce)));
    let (status, headers, _) = callback(
        gw.addr,
        Some(&s.cookie),
        &format!("code=c&state={}&iss=http%3A%2F%2Fevil.example", s.state),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(session_cookie(&headers).is_none());
    // An open-redirect `next` is dropped at the start: the sign-in lands on default_next.
    for evil in [
        "//evil.example/x",
        "https://evil.example/",
        "/\\evil.example",
    ] {
        let s = start_flow(gw.addr, &authgate::path::encode_component(evil)).await;
        h.will_answer(&h.key.sign(&h.good_claims(&s.nonce)));
        let (status, headers, _) = callback(
            gw.addr,
            Some(&s.cookie),
            &format!("code=c&state={}", s.state),
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers["location"], "/", "{evil}");
    }
}

#[tokio::test]
async fn domains_known_users_and_sso_only() {
    let h = Hostile::start().await;
    let gw = gateway(
        &h,
        "allowed_email_domains = [\"example.com\"]\nusers = \"known\"\nusername_claim = \"email\"\n",
    )
    .await;
    // An unverified email is refused, as is another domain.
    for (email, verified) in [("alice@example.com", false), ("alice@other.org", true)] {
        let s = start_flow(gw.addr, "/app").await;
        let mut c = h.good_claims(&s.nonce);
        c["email"] = json!(email);
        c["email_verified"] = json!(verified);
        h.will_answer(&h.key.sign(&c));
        let (status, headers, _) = callback(
            gw.addr,
            Some(&s.cookie),
            &format!("code=c&state={}", s.state),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{email}");
        assert!(session_cookie(&headers).is_none());
    }
    // users = "known": carol@example.com is in no user store.
    let s = start_flow(gw.addr, "/app").await;
    h.will_answer(&h.key.sign(&h.good_claims(&s.nonce)));
    let (status, _, body) = callback(
        gw.addr,
        Some(&s.cookie),
        &format!("code=c&state={}", s.state),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    drop(gw);

    // A known user signs in with the store's roles plus the mapped ones.
    let gw = gateway(&h, "users = \"known\"\nusername_claim = \"nickname\"\n").await;
    let s = start_flow(gw.addr, "/app").await;
    let mut c = h.good_claims(&s.nonce);
    c["nickname"] = json!("root");
    h.will_answer(&h.key.sign(&c));
    let (status, headers, _) = callback(
        gw.addr,
        Some(&s.cookie),
        &format!("code=c&state={}", s.state),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cookie = session_cookie(&headers).unwrap();
    let (_, _, me) = send(gw.addr, with_cookie(get("/auth/me"), &cookie)).await;
    let roles: Vec<String> = serde_json::from_value(json(&me)["roles"].clone()).unwrap();
    for r in ["admin", "user", "eng"] {
        assert!(roles.iter().any(|x| x == r), "{r} in {roles:?}");
    }
    drop(gw);

    // SSO only: no password form, POST /auth/login is 404, a browser sent to sign in goes
    // straight to the one provider.
    let up = Upstream::start().await;
    let fx = Fixture::new();
    let text = fx
        .config(
            up.addr,
            HS256,
            MEMORY,
            "[[routes]]\npath = \"/app/**\"\nupstream = \"app\"\non_unauthenticated = \"redirect\"\n",
            "",
        )
        .replace("[login]\n", "[login]\npassword = false\n")
        + &format!(
            "\n[[login.oidc]]\nname = \"h\"\ndisplay_name = \"Corp\"\nissuer = \"{}\"\nclient_id = \"authgate\"\n",
            h.issuer
        );
    let app = start(&fx.write("authgate.toml", &text)).await;
    let addr = app.public_addr;
    let (status, _, page) = send(
        addr,
        get("/auth/login")
            .header("accept", "text/html")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!page.contains("type=\"password\""), "{page}");
    assert!(page.contains("/auth/oidc/h/start?next=/\""), "{page}");
    assert!(page.contains("Sign in with Corp"));
    let (status, ..) = send(
        addr,
        post("/auth/login")
            .header("content-type", "application/json")
            .body(json_body(
                json!({"username": "alice", "password": "alice-password"}),
            ))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A protected page sends a browser to sign in, and that goes straight to the provider.
    let (status, headers, _) = send(
        addr,
        get("/app/x")
            .header("accept", "text/html")
            .header("sec-fetch-mode", "navigate")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::FOUND);
    let to = headers["location"].to_str().unwrap().to_owned();
    let (status, headers, _) = send(addr, get(&to).body(empty()).unwrap()).await;
    assert_eq!(status, StatusCode::FOUND, "{to}");
    assert_eq!(headers["location"], "/auth/oidc/h/start?next=/app/x");
    // A public client: the code exchange sends client_id and no Basic credentials.
    let s = start_flow(addr, "/app").await;
    h.will_answer(&h.key.sign(&h.good_claims(&s.nonce)));
    let (status, ..) = callback(addr, Some(&s.cookie), &format!("code=c&state={}", s.state)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (form, auth) = h
        .shared
        .lock()
        .unwrap()
        .token_requests
        .last()
        .unwrap()
        .clone();
    assert!(auth.is_none());
    assert!(form.contains("client_id=authgate"), "{form}");
}

#[tokio::test]
async fn back_channel_logout_ends_the_provider_sessions() {
    let h = Hostile::start().await;
    let gw = gateway(&h, "").await;
    let mut cookies = Vec::new();
    for _ in 0..2 {
        let s = start_flow(gw.addr, "/app").await;
        h.will_answer(&h.key.sign(&h.good_claims(&s.nonce)));
        let (status, headers, _) = callback(
            gw.addr,
            Some(&s.cookie),
            &format!("code=c&state={}", s.state),
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        cookies.push(session_cookie(&headers).unwrap());
    }
    let now = authgate::clock::now_secs();
    let base = json!({
        "iss": h.issuer, "aud": "authgate", "iat": now, "jti": "j-1",
        "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
        "sid": "provider-session-1",
    });
    let post_token = |token: String| {
        post("/auth/oidc/h/backchannel-logout")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(format!("logout_token={token}"))))
            .unwrap()
    };
    // Bad logout tokens: 400 and nothing ends.
    let mut with_nonce = base.clone();
    with_nonce["nonce"] = json!("n");
    let mut no_event = base.clone();
    no_event.as_object_mut().unwrap().remove("events");
    let mut old = base.clone();
    old["iat"] = json!(now - 3600);
    let mut no_jti = base.clone();
    no_jti.as_object_mut().unwrap().remove("jti");
    for bad in [with_nonce, no_event, old, no_jti] {
        let (status, _, body) = send(gw.addr, post_token(h.key.sign(&bad))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let (status, ..) = send(gw.addr, post_token(Key::new("k1").sign(&base))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "signed by another key");
    for c in &cookies {
        let (status, ..) = send(gw.addr, with_cookie(get("/auth/me"), c)).await;
        assert_eq!(status, StatusCode::OK);
    }
    // The real one ends both sessions of the provider session, at once.
    let (status, _, body) = send(gw.addr, post_token(h.key.sign(&base))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for c in &cookies {
        let (status, ..) = send(gw.addr, with_cookie(get("/auth/me"), c)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // Its jti is accepted once.
    let (status, ..) = send(gw.addr, post_token(h.key.sign(&base))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // By `sub` only: every session that provider user started.
    let s = start_flow(gw.addr, "/app").await;
    h.will_answer(&h.key.sign(&h.good_claims(&s.nonce)));
    let (_, headers, _) = callback(
        gw.addr,
        Some(&s.cookie),
        &format!("code=c&state={}", s.state),
    )
    .await;
    let c = session_cookie(&headers).unwrap();
    let mut by_sub = base.clone();
    by_sub.as_object_mut().unwrap().remove("sid");
    by_sub["sub"] = json!("u-1");
    by_sub["jti"] = json!("j-2");
    let (status, ..) = send(gw.addr, post_token(h.key.sign(&by_sub))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, ..) = send(gw.addr, with_cookie(get("/auth/me"), &c)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_provider_down_at_start_does_not_stop_the_gateway() {
    let port = support::procs::free_port();
    let gw = TestGateway::new()
        .tables(&format!(
            "[[login.oidc]]\nname = \"h\"\nissuer = \"http://127.0.0.1:{port}\"\nclient_id = \"authgate\"\n"
        ))
        .start()
        .await;
    // Ready, password logins work, the button answers a 502 page.
    let (status, ..) = send(gw.admin, get("/readyz").body(empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    login(gw.addr, "alice", "alice-password").await;
    let (status, headers, body) = send(
        gw.addr,
        get("/auth/oidc/h/start?next=/x")
            .header("accept", "text/html")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(body.contains("cannot be reached"), "{body}");
    // Once it is up, the next click works.
    let _h = Hostile::start_on(port).await;
    let (status, headers, _) = send(
        gw.addr,
        get("/auth/oidc/h/start?next=/x").body(empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::FOUND);
    assert!(headers["location"]
        .to_str()
        .unwrap()
        .starts_with(&format!("http://127.0.0.1:{port}/authorize?")));
}

/// The provider client follows no redirect (a discovery document that points elsewhere could
/// send the gateway anywhere: SSRF).
#[tokio::test]
async fn a_provider_that_redirects_is_not_followed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = hits.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    seen.lock().unwrap().push(req.uri().path().to_owned());
                    async move {
                        let mut resp = Response::new(Full::new(Bytes::new()));
                        *resp.status_mut() = StatusCode::FOUND;
                        resp.headers_mut().insert(
                            "location",
                            "http://169.254.169.254/latest/meta-data/".parse().unwrap(),
                        );
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    let gw = TestGateway::new()
        .tables(&format!(
            "[[login.oidc]]\nname = \"h\"\nissuer = \"http://{addr}\"\nclient_id = \"authgate\"\n"
        ))
        .start()
        .await;
    let (status, _, body) = send(gw.addr, get("/auth/oidc/h/start").body(empty()).unwrap()).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(hits
        .lock()
        .unwrap()
        .iter()
        .all(|p| p == "/.well-known/openid-configuration"));
}
