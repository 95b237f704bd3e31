//! Live reload without a restart: the config as Kubernetes mounts it (a symlink-swapped
//! ConfigMap volume) gains a route and a rotated signing key, `authgate users add` adds a
//! user, and a broken config changes nothing; each seen by the running gateway through its
//! file watcher (no signal).
// A test crate: its helpers (not only #[test] fns, which clippy.toml covers) may unwrap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use http::StatusCode;
use std::io::Write;
use std::path::Path;
use std::time::Duration;
use support::*;

/// What Kubernetes does to a ConfigMap volume: the new files go in a fresh directory, and
/// `..data` is re-pointed at it with one rename; `authgate.toml` is a symlink through it.
fn swap(dir: &Path, version: u32, config: &str) {
    let data = dir.join(format!("..v{version}"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("authgate.toml"), config).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..v{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    let link = dir.join("authgate.toml");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/authgate.toml", &link).unwrap();
    }
}

fn keygen(path: &Path) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["keygen", "--alg", "EdDSA", "--out"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
}

fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

async fn reloads(admin: std::net::SocketAddr, result: &str) -> u64 {
    let (_, _, text) = send(admin, get("/metrics").body(empty()).unwrap()).await;
    let prefix = format!("authgate_config_reloads_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_users_and_keys_reload_from_a_swapped_configmap_and_a_broken_config_changes_nothing()
{
    authgate::telemetry::init(authgate::config::LogFormat::Pretty);
    let up = Upstream::start().await;
    let fx = Fixture::new();
    let k1 = fx.path("k1.pem");
    let k2 = fx.path("k2.pem");
    keygen(&k1);
    keygen(&k2);
    let tokens = |current: &Path, previous: &[&Path]| {
        let prev: Vec<String> = previous
            .iter()
            .map(|p| format!("\"{}\"", p.display()))
            .collect();
        format!(
            "algorithm = \"EdDSA\"\nsigning_key_file = \"{}\"\nprevious_key_files = [{}]\naccess_ttl = \"15m\"",
            current.display(),
            prev.join(", ")
        )
    };
    let users = fx.path("users.toml");
    let config = |tokens: &str, routes: &str| {
        fx.config(up.addr, tokens, MEMORY, routes, "").replace(
            "file = \"users.toml\"",
            &format!("file = \"{}\"", users.display()),
        )
    };
    let dir = fx.path("configmap");
    std::fs::create_dir_all(&dir).unwrap();
    swap(&dir, 1, &config(&tokens(&k1, &[]), ""));
    let app = start(&dir.join("authgate.toml")).await;
    let (addr, admin) = (app.public_addr, app.admin_addr);

    let before = login_pair(addr, "alice", "alice-password").await;
    let kid1 = kid(&before.access);
    assert_eq!(
        send(addr, get("/open/x").body(empty()).unwrap()).await.0,
        StatusCode::UNAUTHORIZED
    );

    // A new user, added by the CLI to the users file (replaced by rename).
    let mut add = std::process::Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["users", "--config"])
        .arg(dir.join("authgate.toml"))
        .args(["add", "carol", "--roles", "user"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    add.stdin
        .take()
        .unwrap()
        .write_all(b"carol-password\n")
        .unwrap();
    assert!(add.wait().unwrap().success());
    let login = |user: &'static str, pw: &'static str| async move {
        let req = post("/auth/login")
            .header("content-type", "application/json")
            .body(json_body(
                serde_json::json!({"username": user, "password": pw}),
            ))
            .unwrap();
        send(addr, req).await.0
    };
    // (Waiting on the reload, not on logins: failed ones would count toward the throttle.)
    assert!(
        eventually(Duration::from_secs(20), || async {
            reloads(admin, "ok").await >= 1
        })
        .await,
        "the users file change was not noticed"
    );
    assert_eq!(login("carol", "carol-password").await, StatusCode::OK);

    // A new route and a rotated key, in one swap of the ConfigMap.
    let open = "path = \"/open/**\"\nupstream = \"app\"\nauth = \"public\"";
    let v2 = config(&tokens(&k2, &[&k1]), &format!("[[routes]]\n{open}\n"));
    swap(&dir, 2, &v2);
    assert!(
        eventually(Duration::from_secs(20), || async {
            send(addr, get("/open/x").body(empty()).unwrap()).await.0 == StatusCode::OK
        })
        .await,
        "the new route never took effect"
    );
    let after = login_pair(addr, "alice", "alice-password").await;
    assert_ne!(
        kid(&after.access),
        kid1,
        "new tokens are not signed by the new key"
    );
    // The old key still verifies (by kid), and JWKS publishes both.
    assert_eq!(
        get_with_token(addr, "/app/x", &before.access).await.0,
        StatusCode::OK
    );
    assert_eq!(
        get_with_token(addr, "/app/x", &after.access).await.0,
        StatusCode::OK
    );
    let (_, _, jwks) = send(addr, get("/.well-known/jwks.json").body(empty()).unwrap()).await;
    assert_eq!(json(&jwks)["keys"].as_array().unwrap().len(), 2);

    // A broken config: logged, counted, and the running one kept whole.
    let errors = reloads(admin, "error").await;
    swap(&dir, 3, &v2.replace("[[routes]]", "[[routes]\nbroken"));
    assert!(
        eventually(Duration::from_secs(20), || async {
            reloads(admin, "error").await > errors
        })
        .await,
        "the broken config was not noticed"
    );
    assert_eq!(
        send(addr, get("/open/x").body(empty()).unwrap()).await.0,
        StatusCode::OK
    );
    assert_eq!(login("carol", "carol-password").await, StatusCode::OK);
    assert_eq!(
        get_with_token(addr, "/app/x", &before.access).await.0,
        StatusCode::OK
    );
    assert!(reloads(admin, "ok").await >= 2);

    // Dropping the old key (after refresh_ttl, in the procedure) refuses its tokens, on a
    // connection kept busy across the reload too (it remembers the last token verified on it:
    // the new configuration must not take that from the old one).
    let mut kept = connection(addr).await;
    assert_eq!(
        get_on(&mut kept, "/app/x", &before.access).await.0,
        StatusCode::OK
    );
    swap(
        &dir,
        4,
        &config(&tokens(&k2, &[]), &format!("[[routes]]\n{open}\n")),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    // Every 50 ms: well within a tick, so the connection is never parked (which forgets).
    while get_on(&mut kept, "/app/x", &before.access).await.0 != StatusCode::UNAUTHORIZED {
        assert!(
            std::time::Instant::now() < deadline,
            "a dropped key still verifies on a kept connection"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        eventually(Duration::from_secs(20), || async {
            get_with_token(addr, "/app/x", &before.access).await.0 == StatusCode::UNAUTHORIZED
        })
        .await,
        "a dropped key still verifies"
    );
    assert_eq!(
        get_with_token(addr, "/app/x", &after.access).await.0,
        StatusCode::OK
    );
}

fn users_cli(config: &Path, args: &[&str]) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["users", "--config"])
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Regression (red team, medium): after `users remove` or a `set-roles` that dropped admin,
/// and the reload that followed, the user's token still opened admin routes until it expired.
/// The reload now ends a removed or changed user's sessions at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_removed_or_demoted_user_loses_access_at_the_reload() {
    let gw = TestGateway::new().start().await;
    let root = login_pair(gw.addr, "root", "root-password").await;
    let alice = login_pair(gw.addr, "alice", "alice-password").await;
    assert_eq!(
        get_with_token(gw.addr, "/admin/x", &root.access).await.0,
        StatusCode::OK
    );
    users_cli(&gw.config, &["set-roles", "root", "user"]);
    users_cli(&gw.config, &["remove", "alice"]);
    let refused = |t: String, path: &'static str| {
        let addr = gw.addr;
        async move { get_with_token(addr, path, &t).await.0 == StatusCode::UNAUTHORIZED }
    };
    assert!(
        eventually(Duration::from_secs(10), || refused(
            root.access.clone(),
            "/admin/x"
        ))
        .await,
        "the demoted admin kept admin access"
    );
    assert!(
        refused(alice.access.clone(), "/app/x").await,
        "a removed user kept access"
    );
    let (s, _, _) = post_with_token(gw.addr, "/auth/refresh", &root.refresh).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "the old session refreshed");
    // Signing in again gives the new roles.
    let again = login_pair(gw.addr, "root", "root-password").await;
    assert_eq!(
        get_with_token(gw.addr, "/admin/x", &again.access).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get_with_token(gw.addr, "/app/x", &again.access).await.0,
        StatusCode::OK
    );
}
