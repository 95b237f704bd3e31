//! The OpenID Provider harness on its own, with no gateway: oidc-provider (tests/oidc/,
//! installed by `scripts/oidc-setup.sh`) signs a browser-like client in through its login and
//! consent pages, the code is exchanged by hand (PKCE S256, client_secret_basic), the ID token
//! carries the expected claims and `sid`, and RP-initiated logout sends a back-channel logout
//! token to a small server of the test's own. Also the harness's cookie jar and form parsing.
// A test crate: its helpers (not only #[test] fns, which clippy.toml covers) may unwrap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/oidc.rs"]
mod oidc;
mod support;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use oidc::*;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use support::procs::free_port;

/// (method, path, form fields) of one request.
type Seen = (String, String, Vec<(String, String)>);

/// A back-channel logout endpoint: records each request's (method, path, form fields) and
/// answers 200.
struct Backchannel {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Backchannel {
    async fn start() -> Backchannel {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rec = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let rec = rec.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let rec = rec.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let fields: Vec<(String, String)> =
                                serde_urlencoded::from_bytes(&body).unwrap_or_default();
                            rec.lock().unwrap().push((
                                parts.method.to_string(),
                                parts.uri.path().to_owned(),
                                fields,
                            ));
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Backchannel { addr, seen }
    }

    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn authorization_url(op: &OidcProvider, redirect_uri: &str) -> (String, String, String, String) {
    let (verifier, challenge) = pkce_pair();
    let (state, nonce) = (random_token(), random_token());
    let query = serde_urlencoded::to_string([
        ("response_type", "code"),
        ("client_id", op.client().client_id.as_str()),
        ("redirect_uri", redirect_uri),
        ("scope", "openid email profile groups"),
        ("state", &state),
        ("nonce", &nonce),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ])
    .unwrap();
    (
        format!("{}?{query}", op.authorization_endpoint()),
        verifier,
        state,
        nonce,
    )
}

/// The token endpoint's answer to an authorization code (client_secret_basic when the client
/// has a secret, else client_id in the body).
async fn exchange(
    op: &OidcProvider,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
) -> (StatusCode, Value) {
    use base64::Engine;
    let c = op.client();
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier),
    ];
    let mut req = Request::post("/token")
        .header("host", format!("127.0.0.1:{}", op.port()))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json");
    match &c.client_secret {
        Some(secret) => {
            // RFC 6749 2.3.1: each part form-urlencoded, then base64.
            let enc = |s: &str| serde_urlencoded::to_string([("", s)]).unwrap()[1..].to_owned();
            let basic = base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                enc(&c.client_id),
                enc(secret)
            ));
            req = req.header("authorization", format!("Basic {basic}"));
        }
        None => form.push(("client_id", c.client_id.as_str())),
    }
    let body = serde_urlencoded::to_string(&form).unwrap();
    let (status, _, text) =
        support::send(op.addr(), req.body(Full::new(Bytes::from(body))).unwrap()).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(json!({ "raw": text })),
    )
}

#[tokio::test]
async fn sign_in_code_exchange_and_backchannel_logout_with_a_real_provider() {
    let bc = Backchannel::start().await;
    let rp = format!("http://127.0.0.1:{}", free_port());
    let redirect_uri = format!("{rp}/cb");
    let op = OidcProvider::start(
        ClientSpec::confidential("authgate", "a-secret-of-the-test-0123456789", &redirect_uri)
            .post_logout_redirect_uri(&format!("{rp}/signed-out"))
            .backchannel_logout_uri(&format!("http://{}/bc-logout", bc.addr)),
    );

    // The discovery document says what the gateway will rely on.
    let web = WebClient::new();
    let disc: Value = serde_json::from_str(&web.get(&op.discovery_url()).await.body).unwrap();
    assert_eq!(disc["issuer"], op.issuer());
    assert_eq!(disc["backchannel_logout_session_supported"], true);
    assert_eq!(disc["authorization_response_iss_parameter_supported"], true);
    assert_eq!(disc["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(disc["end_session_endpoint"], op.end_session_endpoint());

    // Login page, consent page, back to the callback (not requested: nothing listens there).
    let (auth_url, verifier, state, nonce) = authorization_url(&op, &redirect_uri);
    let (hops, callback) = op.walk_to_callback(&web, &auth_url, "boss").await;
    let posts: Vec<_> = hops
        .iter()
        .filter(|p| p.method == http::Method::POST)
        .collect();
    assert_eq!(posts.len(), 2, "login and consent: {:?}", hops.urls());
    assert!(
        callback.starts_with(&format!("{redirect_uri}?")),
        "{callback}"
    );
    let params = query_params(&callback);
    assert_eq!(params["state"], state);
    assert_eq!(params["iss"], op.issuer(), "RFC 9207 iss");
    let code = params.get("code").expect("a code").clone();
    // Its session cookie: `_session` is SameSite=None without Secure, refused over http as by
    // Chromium; the `_session.legacy` copy (no SameSite: Lax) is the one kept.
    assert!(web.cookie(op.issuer(), "_session").is_none());
    assert!(
        web.cookie(op.issuer(), "_session.legacy").is_some(),
        "{:?}",
        web.cookie_names("127.0.0.1")
    );

    // Without the verifier the code is refused; with it, an ID token with the claims in it.
    let (status, body) = exchange(
        &op,
        &code,
        &redirect_uri,
        "wrong-verifier-wrong-verifier-wrong-verifier",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // (oidc-provider checks PKCE before it marks the code used: it still works below.)
    let (status, body) = exchange(&op, &code, &redirect_uri, &verifier).await;
    assert_eq!(status, StatusCode::OK, "{body}\n{}", op.log_tail());
    let id = jwt_payload(body["id_token"].as_str().expect("an id_token"));
    assert_eq!(id["iss"], op.issuer());
    assert_eq!(id["aud"], "authgate");
    assert_eq!(id["nonce"], nonce.as_str());
    assert_eq!(id["sub"], "boss");
    assert_eq!(id["preferred_username"], "boss");
    assert_eq!(id["name"], "User boss");
    assert_eq!(id["email"], "boss@example.com");
    assert_eq!(id["email_verified"], true);
    assert_eq!(id["groups"], json!(["ops-admins", "eng"]));
    let sid = id["sid"].as_str().expect("sid in the ID token").to_owned();
    let id_token = body["id_token"].as_str().unwrap().to_owned();

    // Signed in at the provider: a second authorization needs neither login nor consent.
    let (auth_url, _, _, _) = authorization_url(&op, &redirect_uri);
    let (hops, callback) = op.walk_to_callback(&web, &auth_url, "ignored").await;
    assert!(
        hops.iter().all(|p| p.method == http::Method::GET),
        "no form this time: {:?}",
        hops.urls()
    );
    assert!(query_params(&callback).contains_key("code"), "{callback}");

    // RP-initiated logout: confirmed, the back-channel logout token sent before the redirect.
    let hops = op
        .end_session(
            &web,
            &format!("id_token_hint={id_token}&post_logout_redirect_uri={rp}/signed-out&state=bye"),
        )
        .await;
    let exit = hops.exit_url().expect("a redirect to the post-logout URI");
    assert_eq!(exit, format!("{rp}/signed-out?state=bye"));
    let seen = bc.requests();
    assert_eq!(
        seen.len(),
        1,
        "one back-channel logout: {seen:?}\n{}",
        op.log_tail()
    );
    let (method, path, fields) = &seen[0];
    assert_eq!((method.as_str(), path.as_str()), ("POST", "/bc-logout"));
    let token = fields
        .iter()
        .find(|(k, _)| k == "logout_token")
        .map(|(_, v)| v.clone())
        .expect("a logout_token field");
    let lt = jwt_payload(&token);
    assert_eq!(lt["iss"], op.issuer());
    assert_eq!(lt["aud"], "authgate");
    assert_eq!(lt["sub"], "boss");
    assert_eq!(lt["sid"], sid.as_str());
    assert!(lt["events"]["http://schemas.openid.net/event/backchannel-logout"].is_object());
    assert!(lt.get("nonce").is_none() && lt["jti"].is_string());
    let outcomes = op.backchannel_outcomes();
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert!(
        outcomes[0].starts_with("BACKCHANNEL ok client=authgate sub=boss"),
        "{outcomes:?}"
    );
    assert!(
        web.cookie(op.issuer(), "_session.legacy").is_none(),
        "the provider's session cookie is gone"
    );

    // Signed out there: the next authorization shows the login page again.
    let (auth_url, _, _, _) = authorization_url(&op, &redirect_uri);
    let (hops, _) = op.walk_to_callback(&web, &auth_url, "boss").await;
    assert!(hops.iter().any(|p| p.method == http::Method::POST));
}

/// A stand-in for the gateway: `/start` 302s to `auth_url`; the callback records its query and
/// request headers, sets a cookie and 303s to `/landed`, which echoes the Cookie header.
async fn mini_rp(
    listener: tokio::net::TcpListener,
    auth_url: Arc<Mutex<String>>,
) -> Arc<Mutex<Vec<http::HeaderMap>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rec = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (auth_url, rec) = (auth_url.clone(), rec.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (auth_url, rec) = (auth_url.clone(), rec.clone());
                    async move {
                        let mut resp = Response::new(Full::new(Bytes::new()));
                        match req.uri().path() {
                            "/start" => {
                                *resp.status_mut() = StatusCode::FOUND;
                                let to = auth_url.lock().unwrap().clone();
                                resp.headers_mut().insert("location", to.parse().unwrap());
                            }
                            "/auth/oidc/corp/callback" => {
                                rec.lock().unwrap().push(req.headers().clone());
                                *resp.status_mut() = StatusCode::SEE_OTHER;
                                resp.headers_mut()
                                    .insert("location", "/landed".parse().unwrap());
                                resp.headers_mut().insert(
                                    "set-cookie",
                                    "rp_session=yes; Path=/; HttpOnly; SameSite=Lax"
                                        .parse()
                                        .unwrap(),
                                );
                            }
                            _ => {
                                let c = req.headers().get("cookie").cloned();
                                let text = c
                                    .map(|c| c.to_str().unwrap().to_owned())
                                    .unwrap_or_default();
                                *resp.body_mut() = Full::new(Bytes::from(text));
                            }
                        }
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    seen
}

#[tokio::test]
async fn public_client_other_accounts_and_an_aborted_login() {
    // The RP on 127.0.0.1, the provider on "localhost": two sites, as in production.
    let rp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rp = format!(
        "http://127.0.0.1:{}",
        rp_listener.local_addr().unwrap().port()
    );
    let redirect_uri = format!("{rp}/auth/oidc/corp/callback");
    let op = OidcProvider::start_with(
        ClientSpec::public("spa", &redirect_uri),
        ProviderOptions {
            host: Some("localhost".into()),
            ..ProviderOptions::default()
        },
    );
    assert!(op.issuer().starts_with("http://localhost:"));

    // sign_in: from the RP's start URL through the provider and back, the callback requested
    // and the RP's redirect followed.
    let (auth_url, _, state, _) = authorization_url(&op, &redirect_uri);
    let rp_seen = mini_rp(rp_listener, Arc::new(Mutex::new(auth_url))).await;
    let web = WebClient::new();
    let hops = op.sign_in(&web, &format!("{rp}/start"), "ann").await;
    let landed = hops.landed();
    assert_eq!(landed.url, format!("{rp}/landed"), "{:?}", hops.urls());
    assert_eq!(
        (landed.status, landed.body.as_str()),
        (StatusCode::OK, "rp_session=yes")
    );
    let cb = hops
        .iter()
        .find(|p| p.url.starts_with(&redirect_uri))
        .unwrap();
    assert_eq!(cb.query()["state"], state);
    assert_eq!(cb.query()["iss"], op.issuer());
    // The callback came from the provider's consent POST: a cross-site navigation.
    let headers = rp_seen.lock().unwrap()[0].clone();
    assert_eq!(headers["sec-fetch-site"], "cross-site");
    assert_eq!(headers["sec-fetch-mode"], "navigate");
    assert!(headers["user-agent"].to_str().unwrap().contains("Chrome/"));
    assert_eq!(
        hops.on(&format!("localhost:{}", op.port())).len() + 3,
        hops.len()
    );
    for (login, email, verified, groups) in [
        (
            "unverified-ann",
            "unverified-ann@example.com",
            false,
            json!(["eng"]),
        ),
        ("other-bob", "other-bob@other.org", true, json!(["eng"])),
        ("nogroups-cy", "nogroups-cy@example.com", true, json!([])),
    ] {
        let web = WebClient::new();
        let (auth_url, verifier, _, _) = authorization_url(&op, &redirect_uri);
        let (_, callback) = op.walk_to_callback(&web, &auth_url, login).await;
        let code = query_params(&callback)["code"].clone();
        let (status, body) = exchange(&op, &code, &redirect_uri, &verifier).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let id = jwt_payload(body["id_token"].as_str().unwrap());
        assert_eq!(
            (
                &id["sub"],
                &id["email"],
                &id["email_verified"],
                &id["groups"]
            ),
            (&json!(login), &json!(email), &json!(verified), &groups)
        );
    }

    // A public client without PKCE is refused at the provider (the error comes back).
    let web = WebClient::new();
    let url = format!(
        "{}?response_type=code&client_id=spa&scope=openid&state=s1&redirect_uri={}",
        op.authorization_endpoint(),
        serde_urlencoded::to_string([("", redirect_uri.as_str())]).unwrap()[1..].to_owned()
    );
    let page = web.get(&url).await;
    let back = page.location().expect("an error redirect");
    assert_eq!(query_params(&back)["error"], "invalid_request", "{back}");

    // Cancel on the login page: access_denied to the callback.
    let (auth_url, _, state, _) = authorization_url(&op, &redirect_uri);
    let (_, callback) = op.abort_to_callback(&web, &auth_url).await;
    let q = query_params(&callback);
    assert_eq!(
        (q["error"].as_str(), q["state"].as_str()),
        ("access_denied", state.as_str())
    );
}

/// The jar and the form parser without any server.
#[tokio::test]
async fn web_client_cookies_and_forms() {
    // A tiny server answering Set-Cookie headers asked for in the query, echoing the Cookie
    // header and the request's browser headers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let mut resp = Response::new(Full::new(Bytes::from(
                        json!({
                            "cookie": req.headers().get("cookie").map(|v| v.to_str().unwrap().to_owned()),
                            "origin": req.headers().get("origin").map(|v| v.to_str().unwrap().to_owned()),
                            "site": req.headers().get("sec-fetch-site").map(|v| v.to_str().unwrap().to_owned()),
                            "mode": req.headers().get("sec-fetch-mode").map(|v| v.to_str().unwrap().to_owned()),
                            "accept": req.headers().get("accept").map(|v| v.to_str().unwrap().to_owned()),
                        })
                        .to_string(),
                    )));
                    let q = req.uri().query().unwrap_or("").to_owned();
                    for (k, v) in serde_urlencoded::from_str::<Vec<(String, String)>>(&q).unwrap() {
                        match k.as_str() {
                            "set" => {
                                resp.headers_mut().append("set-cookie", v.parse().unwrap());
                            }
                            "go" => {
                                *resp.status_mut() = StatusCode::FOUND;
                                resp.headers_mut().insert("location", v.parse().unwrap());
                            }
                            _ => {}
                        }
                    }
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    let base = format!("http://127.0.0.1:{}", addr.port());
    let other_port = format!("http://127.0.0.1:{}", free_port());
    let web = WebClient::new();
    let set = |c: &str| {
        format!(
            "{base}/a/b?{}",
            serde_urlencoded::to_string([("set", c)]).unwrap()
        )
    };
    web.get(&set("root=1; Path=/; HttpOnly")).await;
    web.get(&set("deflt=2")).await; // default path: /a
    web.get(&set("deep=3; Path=/a/b/c")).await;
    web.get(&set("gone=4; Max-Age=0")).await;
    web.get(&set("old=5; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT"))
        .await;
    web.get(&set(
        "later=6; Path=/; Expires=Fri, 31 Dec 9999 23:59:59 GMT",
    ))
    .await;
    web.get(&set("elsewhere=7; Domain=example.com")).await; // not for this host: ignored
    assert_eq!(
        web.cookie_header(&format!("{base}/a/b/c/d")),
        "deep=3; deflt=2; root=1; later=6"
    );
    assert_eq!(
        web.cookie_header(&format!("{base}/a")),
        "deflt=2; root=1; later=6"
    );
    assert_eq!(web.cookie_header(&format!("{base}/ab")), "root=1; later=6");
    // Per host, not per port (as browsers); deleted by Max-Age=0 on the same name and path.
    assert_eq!(web.cookie(&other_port, "root").as_deref(), Some("1"));
    web.get(&set("root=x; Path=/; Max-Age=0")).await;
    assert_eq!(web.cookie_header(&format!("{base}/")), "later=6");
    // Not for another host.
    assert_eq!(
        web.cookie_header(&format!("http://localhost:{}/", addr.port())),
        ""
    );

    // A typed navigation and its redirect: Sec-Fetch-Site none, text/html first.
    let hops = web.follow(&format!("{base}/x?go=/y"), 5).await;
    assert_eq!(hops.len(), 2);
    let echo: Value = serde_json::from_str(&hops.landed().body).unwrap();
    assert_eq!(echo["site"], "none");
    assert_eq!(echo["mode"], "navigate");
    assert!(echo["accept"].as_str().unwrap().starts_with("text/html"));
    assert_eq!(echo["cookie"], "later=6");
    // A form POST from that page: Origin of the page, same-origin.
    let page = web.post_form(&format!("{base}/form"), &[("a", "1")]).await;
    let echo: Value = serde_json::from_str(&page.body).unwrap();
    assert_eq!(echo["origin"], base);
    assert_eq!(echo["site"], "same-origin");
    // From another port of the same host: same-site; from localhost: cross-site.
    let page = web
        .post_form_from(Some(&other_port), &format!("{base}/form"), &[])
        .await;
    let echo: Value = serde_json::from_str(&page.body).unwrap();
    assert_eq!(
        (echo["origin"].as_str(), echo["site"].as_str()),
        (Some(other_port.as_str()), Some("same-site"))
    );
    let page = web
        .post_form_from(Some("http://localhost:1"), &format!("{base}/form"), &[])
        .await;
    let echo: Value = serde_json::from_str(&page.body).unwrap();
    assert_eq!(echo["site"], "cross-site");

    // Forms: action resolved, hidden fields and values unescaped, controls joined by form=id.
    let html = r#"<html><script>var s = "<form action='/nope'>";</script>
      <form id="f1" method="POST" action="submit?x=1&amp;y=2">
        <input type="hidden" name="xsrf" value="a&quot;b"/>
        <input type=text name=login>
        <input type="checkbox" name="remember" checked>
        <input type="checkbox" name="spam">
        <button type="submit">Go</button>
      </form>
      <button type="submit" form="f1" name="logout" value="yes">Yes</button>
      <form><select name="s"><option value="a">A</option><option selected value="b">B</option></select>
      <textarea name="t">hello &amp; bye</textarea></form>"#;
    let forms = parse_forms(html, "http://h:1/dir/page?q");
    assert_eq!(forms.len(), 2);
    assert_eq!(forms[0].action, "http://h:1/dir/submit?x=1&y=2");
    assert_eq!(forms[0].method, "post");
    assert_eq!(
        forms[0].fields,
        [("xsrf", "a\"b"), ("login", ""), ("remember", "on")]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    assert_eq!(
        forms[0].submitters,
        [("logout".to_owned(), "yes".to_owned())]
    );
    assert_eq!(forms[1].action, "http://h:1/dir/page?q");
    assert_eq!(forms[1].get("s"), Some("b"));
    assert_eq!(forms[1].get("t"), Some("hello & bye"));
    assert_eq!(resolve("http://h:1/a/b/c?d", "../x"), "http://h:1/a/x");
    assert_eq!(resolve("http://h:1/a/b", "./y/./z"), "http://h:1/a/y/z");
    assert_eq!(resolve("http://h:1/a/b?c", "?d"), "http://h:1/a/b?d");
    assert_eq!(resolve("http://h:1/a/b", "//k:2/z"), "http://k:2/z");

    // SameSite in navigations from another site: Strict never, Lax on GET only; None
    // without Secure is refused when set.
    let web = WebClient::new();
    let set = |c: &str| {
        format!(
            "{base}/?{}",
            serde_urlencoded::to_string([("set", c)]).unwrap()
        )
    };
    web.get(&set("strict=1; Path=/; SameSite=Strict")).await;
    web.get(&set("lax=2; Path=/; SameSite=Lax")).await;
    web.get(&set("dflt=3; Path=/")).await;
    web.get(&set("none=4; Path=/; SameSite=None")).await;
    web.get(&set("nonesec=5; Path=/; SameSite=None; Secure"))
        .await;
    let echo = |p: Page| serde_json::from_str::<Value>(&p.body).unwrap()["cookie"].clone();
    assert_eq!(
        echo(web.get(&format!("{base}/")).await),
        "strict=1; lax=2; dflt=3; nonesec=5"
    );
    let other = web.get(&format!("http://localhost:{}/", addr.port())).await;
    assert_eq!(
        echo(web.click(&other, &format!("{base}/")).await),
        "lax=2; dflt=3; nonesec=5"
    );
    let page = web
        .post_form_from(Some("http://localhost:1"), &format!("{base}/"), &[])
        .await;
    assert_eq!(echo(page), "nonesec=5");
}
