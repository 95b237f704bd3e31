//! Second factors over the wire: an administrator enrols TOTP and recovery codes with the
//! real CLI; `POST /auth/login` then answers `mfa_required` with a typed `mfa_token`, and
//! `POST /auth/login/totp` gives the pair for a right code only once (replay, a used
//! recovery code and wrong codes are 401 `invalid_code`, under the password's throttle);
//! tokens carry `amr`; `second_factor = true` routes want it; `required` sends a user
//! without a factor through enrolment first. Codes are computed here from the printed URI
//! with an independent RFC 6238 implementation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use http::StatusCode;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use support::factors::{base32, totp_at};
use support::*;

fn cli(config: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("AUTHGATE_CONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The secret of an `otpauth://totp/...?secret=...` URI.
fn secret_of(uri: &str) -> Vec<u8> {
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    let query = uri.split_once('?').unwrap().1;
    let s = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("secret="))
        .unwrap();
    for (k, v) in [("digits", "6"), ("period", "30"), ("algorithm", "SHA1")] {
        if let Some(given) = query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
        {
            assert_eq!(given, v, "{uri}");
        }
    }
    base32(s)
}

async fn stop(app: authgate::app::App) {
    app.begin_shutdown();
    app.finished().await;
}

fn now() -> u64 {
    authgate::clock::now_secs()
}

async fn post_json(addr: SocketAddr, path: &str, v: serde_json::Value) -> (StatusCode, String) {
    let req = post(path)
        .header("content-type", "application/json")
        .body(json_body(v))
        .unwrap();
    let (s, _, b) = send(addr, req).await;
    (s, b)
}

async fn password(addr: SocketAddr, user: &str, pw: &str) -> serde_json::Value {
    let (s, b) = post_json(
        addr,
        "/auth/login",
        serde_json::json!({"username": user, "password": pw}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    json(&b)
}

async fn code(addr: SocketAddr, mfa_token: &str, code: &str) -> (StatusCode, serde_json::Value) {
    let (s, b) = post_json(
        addr,
        "/auth/login/totp",
        serde_json::json!({"mfa_token": mfa_token, "code": code}),
    )
    .await;
    (s, json(&b))
}

fn payload(jwt: &str) -> serde_json::Value {
    use base64::Engine;
    let p = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p)
            .unwrap(),
    )
    .unwrap()
}

/// Waits until the next 30-second step begins (a code of a used step is a replay).
async fn next_step() {
    let wait = 30 - now() % 30;
    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
}

const ROUTES: &str = "path = \"/vault/**\"\nupstream = \"app\"\nsecond_factor = true\n\n\
[[routes]]\npath = \"/legacy/**\"\nupstream = \"app\"\nbasic = true\n";

#[tokio::test]
async fn totp_and_recovery_codes_enrolled_by_the_cli_guard_the_password() {
    let up = Upstream::start().await;
    let fx = Fixture::new();
    let config = fx.write(
        "authgate.toml",
        &fx.config(up.addr, HS256, MEMORY, &format!("[[routes]]\n{ROUTES}"), ""),
    );
    let (ok, out, err) = cli(&config, &["users", "totp", "alice"]);
    assert!(ok, "{err}");
    let uri = out.trim();
    let secret = secret_of(uri);
    assert_eq!(secret.len(), 20);
    let file = std::fs::read_to_string(fx.path("users.toml")).unwrap();
    let b32 = uri
        .split("secret=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    assert!(file.contains("totp = \"v1."), "{file}");
    assert!(!file.contains(b32), "the secret is sealed at rest");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(fx.path("factor.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the factor key made beside the users file is private"
        );
    }
    let (ok, _, err) = cli(&config, &["users", "totp", "alice"]);
    assert!(
        !ok && err.contains("--reset"),
        "a second enrolment says how: {err}"
    );
    let (ok, out, err) = cli(&config, &["users", "recovery-codes", "alice"]);
    assert!(ok, "{err}");
    let recovery: Vec<String> = out.lines().map(str::to_owned).collect();
    assert_eq!(recovery.len(), 10, "{out}");
    let app = start(&config).await;
    let addr = app.public_addr;

    // The password alone: a challenge, no tokens.
    let first = password(addr, "alice", "alice-password").await;
    assert_eq!(first["mfa_required"], true, "{first}");
    assert_eq!(first["methods"], serde_json::json!(["totp"]));
    assert!(first.get("access_token").is_none());
    let mfa = first["mfa_token"].as_str().unwrap().to_owned();
    // The mfa_token is nobody's access token.
    let (s, _, _) = get_with_token(addr, "/anything", &mfa).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // A wrong code, then the right one.
    let right = totp_at(&secret, now());
    let wrong = format!("{:06}", (right.parse::<u32>().unwrap() + 1) % 1_000_000);
    let (s, body) = code(addr, &mfa, &wrong).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_code"))
    );
    let (s, pair) = code(addr, &mfa, &right).await;
    assert_eq!(s, StatusCode::OK, "{pair}");
    let access = pair["access_token"].as_str().unwrap().to_owned();
    assert_eq!(payload(&access)["amr"], serde_json::json!(["pwd", "otp"]));
    let (s, _, me) = get_with_token(addr, "/auth/me", &access).await;
    assert_eq!(s, StatusCode::OK);
    assert!(me.contains("otp"), "/auth/me shows amr: {me}");
    let (s, _, _) = get_with_token(addr, "/vault/x", &access).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "a session with a second factor opens second_factor routes"
    );
    // The spent mfa_token does not start a second session.
    let (s, _) = code(addr, &mfa, &right).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // The same code in another sign-in: a replay.
    let again = password(addr, "alice", "alice-password").await;
    let mfa2 = again["mfa_token"].as_str().unwrap();
    let (s, body) = code(addr, mfa2, &right).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_code")),
        "{body}"
    );

    // A recovery code, once (however it is typed).
    let rc = recovery[3].to_uppercase();
    let (s, pair) = code(addr, mfa2, &rc).await;
    assert_eq!(s, StatusCode::OK, "{pair}");
    let refreshed = post_json(
        addr,
        "/auth/refresh",
        serde_json::json!({"refresh_token": pair["refresh_token"]}),
    )
    .await;
    assert_eq!(refreshed.0, StatusCode::OK);
    assert_eq!(
        payload(json(&refreshed.1)["access_token"].as_str().unwrap())["amr"],
        serde_json::json!(["pwd", "otp"]),
        "a refresh keeps how the session signed in"
    );
    let third = password(addr, "alice", "alice-password").await;
    let (s, body) = code(addr, third["mfa_token"].as_str().unwrap(), &recovery[3]).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_code"))
    );
    let file = std::fs::read_to_string(fx.path("users.toml")).unwrap();
    let hashes = file.matches("recovery_codes").count();
    assert_eq!(hashes, 1);
    assert_eq!(
        file.split("recovery_codes")
            .nth(1)
            .unwrap()
            .split(']')
            .next()
            .unwrap()
            .matches('"')
            .count(),
        18,
        "the used code left the users file (nine remain): {file}"
    );

    // A user without a factor: the password is enough, but not for second_factor routes.
    let plain = password(addr, "root", "root-password").await;
    let token = plain["access_token"].as_str().unwrap();
    assert_eq!(payload(token)["amr"], serde_json::json!(["pwd"]));
    let (s, h, body) = get_with_token(addr, "/vault/x", token).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(json(&body)["error"], "insufficient_user_authentication");
    assert!(h["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("insufficient_user_authentication"));
    let (s, _, _) = get_with_token(addr, "/plain", token).await;
    assert_eq!(s, StatusCode::OK);

    // HTTP Basic is no way around the second factor.
    use base64::Engine;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:alice-password")
    );
    let (s, _, _) = send(
        addr,
        get("/legacy/x")
            .header("authorization", basic)
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Wrong codes count against the password's throttle (3 per user here).
    let fourth = password(addr, "alice", "alice-password").await;
    let m = fourth["mfa_token"].as_str().unwrap();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(code(addr, m, "000000").await.0.as_u16());
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");

    // --reset removes the factor: the password alone signs in again.
    stop(app).await;
    let (ok, _, err) = cli(&config, &["users", "totp", "alice", "--reset"]);
    assert!(ok, "{err}");
    let app = start(&config).await;
    let (s, b) = post_json(
        app.public_addr,
        "/auth/login",
        serde_json::json!({"username": "alice", "password": "alice-password"}),
    )
    .await;
    // The throttle's memory store started afresh with the process.
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(json(&b)["access_token"].is_string(), "{b}");
    stop(app).await;
}

#[tokio::test]
async fn a_totp_code_is_accepted_once_across_replicas_sharing_redis() {
    let redis = Redis::start();
    let up = Upstream::start().await;
    let fx = Fixture::new();
    let rev = format!("backend = \"redis\"\nredis_url = \"{}\"", redis.url());
    let config = fx.write("authgate.toml", &fx.config(up.addr, HS256, &rev, "", ""));
    let (ok, out, err) = cli(&config, &["users", "totp", "alice"]);
    assert!(ok, "{err}");
    let secret = secret_of(out.trim());
    let a = start(&config).await;
    let b = start(&config).await;
    next_step().await;
    let c = totp_at(&secret, now());
    let m1 = password(a.public_addr, "alice", "alice-password").await;
    let m2 = password(b.public_addr, "alice", "alice-password").await;
    let (s1, _) = code(a.public_addr, m1["mfa_token"].as_str().unwrap(), &c).await;
    let (s2, body) = code(b.public_addr, m2["mfa_token"].as_str().unwrap(), &c).await;
    assert_eq!(s1, StatusCode::OK);
    assert_eq!(
        (s2, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_code"))
    );
    stop(a).await;
    stop(b).await;
}

#[tokio::test]
async fn required_sends_a_user_without_a_factor_through_enrolment_first() {
    let up = Upstream::start().await;
    let fx = Fixture::new();
    let text = fx
        .config(up.addr, HS256, MEMORY, "", "")
        .replace("[login]\n", "[login]\nsecond_factor = \"required\"\n");
    let config = fx.write("authgate.toml", &text);
    let app = start(&config).await;
    let addr = app.public_addr;
    // An API client cannot enrol: a clear refusal, no tokens.
    let (s, b) = post_json(
        addr,
        "/auth/login",
        serde_json::json!({"username": "alice", "password": "alice-password"}),
    )
    .await;
    assert_eq!(
        (s, json(&b)["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("mfa_enrollment_required")),
        "{b}"
    );
    // A browser gets the set-up page, and no session yet.
    let form = |body: String| {
        post("/auth/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "text/html")
            .header("origin", "http://gw.test")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap()
    };
    let (s, h, page) = send(
        addr,
        form("username=alice&password=alice-password&next=%2Fhome".into()),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert!(
        h.get("set-cookie").is_none(),
        "no session before the factor"
    );
    assert!(page.contains("autocomplete=\"one-time-code\""), "{page}");
    let field = |name: &str| {
        let at = page.find(&format!("name=\"{name}\" value=\"")).unwrap() + name.len() + 15;
        page[at..].split('"').next().unwrap().replace("&amp;", "&")
    };
    let key = page
        .split("id=\"totp-secret\">")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap();
    let secret = base32(key);
    let (pending, mfa) = (field("pending"), field("mfa_token"));
    let enc = |s: &str| {
        s.replace('+', "%2B")
            .replace('=', "%3D")
            .replace('/', "%2F")
    };
    let body = format!(
        "pending={}&mfa_token={}&next=%2Fhome&code={}",
        enc(&pending),
        enc(&mfa),
        totp_at(&secret, now())
    );
    let req = post("/auth/account/totp")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "text/html")
        .header("origin", "http://gw.test")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let (s, h, page) = send(addr, req).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert!(page.contains("id=\"recovery-codes\""), "{page}");
    assert_eq!(page.matches("<li><code>").count(), 10);
    let cookies: Vec<_> = h
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        cookies.iter().any(|c| c.starts_with("authgate_access=")),
        "{cookies:?}"
    );
    let access = cookies
        .iter()
        .find_map(|c| c.strip_prefix("authgate_access="))
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    assert_eq!(payload(access)["amr"], serde_json::json!(["pwd", "otp"]));
    // From now on the JSON login asks for the code.
    let (s, b) = post_json(
        addr,
        "/auth/login",
        serde_json::json!({"username": "alice", "password": "alice-password"}),
    )
    .await;
    assert_eq!(
        (s, json(&b)["mfa_required"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{b}"
    );
    stop(app).await;
}
