//! The real `authgate` binary: config errors, explain, keygen, hash-password, users, revoke,
//! and the SIGTERM drain.
// A test crate: its helpers (not only #[test] fns, which clippy.toml covers) may unwrap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use http::StatusCode;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_authgate"));
    c.env_remove("AUTHGATE_CONFIG").env("RUST_LOG", "info");
    c
}

#[test]
fn check_config_names_file_line_key_and_fix() {
    let fx = Fixture::new();
    let up: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let text = fx.config(up, HS256, MEMORY, "", "").replacen(
        "upstream = \"app\"\nauth = \"public\"",
        "upstream = \"legacy2\"\nauth = \"public\"",
        1,
    );
    let path = fx.write("bad.toml", &text);
    let out = bin()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = text.lines().position(|l| l.contains("legacy2")).unwrap() + 1;
    assert!(err.contains(&format!("bad.toml:{line}:")), "{err}");
    assert!(
        err.contains("routes[0].upstream") && err.contains("defined: app"),
        "{err}"
    );

    let typo = fx.write(
        "typo.toml",
        &fx.config(up, HS256, MEMORY, "", "")
            .replace("access_ttl", "acess_ttl"),
    );
    let out = bin()
        .args(["check-config", "--config"])
        .arg(&typo)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `access_ttl`?"));

    let shadow = fx.config(
        up,
        HS256,
        MEMORY,
        "[[routes]]\npath = \"/**\"\nupstream = \"app\"\n",
        "",
    );
    let out = bin()
        .args(["check-config", "--config"])
        .arg(fx.write("s.toml", &shadow))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("can never match"));

    let good = fx.write("good.toml", &fx.config(up, HS256, MEMORY, "", ""));
    let out = bin()
        .args(["check-config", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("routes[2]") && summary.contains("app"),
        "{summary}"
    );
}

#[test]
fn serve_refuses_an_invalid_config() {
    let fx = Fixture::new();
    let path = fx.write("x.toml", "[server]\nlisten = \"nope\"\n");
    let out = bin()
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("x.toml:2:"));
}

#[test]
fn explain_shows_the_normalized_path_and_the_rule() {
    let fx = Fixture::new();
    let up: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let path = fx.write("e.toml", &fx.config(up, HS256, MEMORY, "", ""));
    let out = bin()
        .arg("explain")
        .arg("--config")
        .arg(&path)
        .args(["GET", "/public/%2e%2e/admin/x"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("normalized path: /admin/x"), "{text}");
    assert!(
        text.contains("routes[1]") && text.contains("roles any of [admin]"),
        "{text}"
    );
    let out = bin()
        .arg("explain")
        .arg("--config")
        .arg(&path)
        .args(["GET", "/public/;/../admin/x"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "rejected with 400 invalid_request: a path parameter on an empty or dot segment"
        ),
        "{text}"
    );
}

#[test]
fn keygen_and_hash_password() {
    let fx = Fixture::new();
    for alg in ["EdDSA", "ES256", "RS256"] {
        let out = fx.path(&format!("{alg}.pem"));
        let st = bin()
            .args(["keygen", "--alg", alg, "--out"])
            .arg(&out)
            .status()
            .unwrap();
        assert!(st.success());
        let alg = authgate::config::Algorithm::parse(alg).unwrap();
        authgate::auth::keys::KeySet::from_pem(alg, &std::fs::read(&out).unwrap()).unwrap();
    }
    let out = bin().args(["keygen", "--alg", "HS256"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).trim().len() >= 43);
    let mut child = bin()
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"s3cret pass\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let phc = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(phc.starts_with("$argon2id$"), "{phc}");
    assert!(authgate::auth::passwords::verify_password(
        b"s3cret pass",
        &phc
    ));
}

#[test]
fn users_commands_edit_the_users_file() {
    let fx = Fixture::new();
    let up: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let cfg = fx.write("u.toml", &fx.config(up, HS256, MEMORY, "", ""));
    let mut c = bin()
        .arg("users")
        .arg("--config")
        .arg(&cfg)
        .args(["add", "carol", "--roles", "ops,user"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(b"carol-password\n")
        .unwrap();
    assert!(c.wait().unwrap().success());
    let list = bin()
        .arg("users")
        .arg("--config")
        .arg(&cfg)
        .arg("list")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains("carol\tops,user"));
    assert!(bin()
        .arg("users")
        .arg("--config")
        .arg(&cfg)
        .args(["set-roles", "carol", "admin"])
        .status()
        .unwrap()
        .success());
    assert!(bin()
        .arg("users")
        .arg("--config")
        .arg(&cfg)
        .args(["remove", "carol"])
        .status()
        .unwrap()
        .success());
    let list = bin()
        .arg("users")
        .arg("--config")
        .arg(&cfg)
        .arg("list")
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&list.stdout).contains("carol"));
}

/// Kills the gateway process if a test fails before it exits on its own.
struct Running(Option<std::process::Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts the binary and returns it with its public and admin addresses (read from its log).
/// The gateway's later log lines, as they arrive.
struct Log {
    rx: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Log {
    /// Blocks until a line containing `needle` arrives (true) or 10 s pass (false).
    fn wait_for(&mut self, needle: &str) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.seen.push(line);
                    if hit {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
    }
}

fn spawn_gateway(cfg: &std::path::Path) -> (Running, String, String) {
    let (running, public, admin, _log) = spawn_gateway_with_log(cfg);
    (running, public, admin)
}

/// Like `spawn_gateway`, also returning every later log line.
fn spawn_gateway_with_log(cfg: &std::path::Path) -> (Running, String, String, Log) {
    let mut cmd = bin();
    cmd.args(["serve", "--config"]).arg(cfg);
    spawn_command_with_log(cmd)
}

/// Starts `serve` as `cmd` says, returning it with its addresses and its later log lines.
fn spawn_command_with_log(mut cmd: Command) -> (Running, String, String, Log) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut public, mut admin) = (String::new(), String::new());
    while public.is_empty() || admin.is_empty() {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("gateway did not start");
        // `addr=...` (pretty) or `"addr":"..."` (json).
        let addr = match line.split_once("addr=") {
            Some((_, rest)) => rest.split_whitespace().next().map(str::to_owned),
            None => line
                .split_once("\"addr\":\"")
                .and_then(|(_, rest)| rest.split('"').next().map(str::to_owned)),
        };
        if line.contains("public listener ready") {
            public = addr.unwrap();
        } else if line.contains("admin listener ready") {
            admin = addr.unwrap();
        }
    }
    let log = Log {
        rx,
        seen: Vec::new(),
    };
    (Running(Some(child)), public, admin, log)
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_certificate_and_keeps_serving() {
    let up = Upstream::start().await;
    let fx = Fixture::new();
    let write_pair = || {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        fx.write("tls.crt", &ck.cert.pem());
        fx.write("tls.key", &ck.signing_key.serialize_pem());
    };
    write_pair();
    let text = fx.config(up.addr, HS256, MEMORY, "", "").replace(
        "[log]",
        "[server.tls]\ncert = \"tls.crt\"\nkey = \"tls.key\"\n\n[log]",
    );
    let cfg = fx.write("hup.toml", &text);
    let (running, _public, admin, mut log) = spawn_gateway_with_log(&cfg);
    let pid = running.0.as_ref().unwrap().id().to_string();
    // A broken file: logged, the old certificate stays.
    fx.write("tls.crt", "garbage");
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    assert!(log.wait_for("reload failed"), "{:?}", log.seen);
    write_pair();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    assert!(log.wait_for("configuration reloaded"), "{:?}", log.seen);
    // Counted by result.
    let admin: std::net::SocketAddr = admin.parse().unwrap();
    let (_, _, metrics) = send(admin, get("/metrics").body(empty()).unwrap()).await;
    // (The file watcher may have counted the same changes too.)
    for result in ["ok", "error"] {
        let prefix = format!("authgate_config_reloads_total{{result=\"{result}\"}} ");
        let n: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix}in {metrics}"))
            .trim()
            .parse()
            .unwrap();
        assert!(n >= 1, "{metrics}");
    }
    drop(running);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_an_in_flight_request_then_exits_zero() {
    let up = Upstream::start().await;
    let fx = Fixture::new();
    let cfg = fx.write("d.toml", &fx.config(up.addr, HS256, MEMORY, "", ""));
    let (mut running, public, _admin) = spawn_gateway(&cfg);
    let addr: std::net::SocketAddr = public.parse().unwrap();
    let slow =
        tokio::spawn(
            async move { send(addr, get("/public/slow/1500").body(empty()).unwrap()).await },
        );
    up.wait_for_requests(1).await;
    let pid = running.0.as_ref().unwrap().id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let (status, _, body) = slow.await.unwrap();
    assert_eq!(status, http::StatusCode::OK, "{body}");
    let mut child = running.0.take().unwrap();
    let waited = tokio::task::spawn_blocking(move || {
        let status = child.wait();
        (child, status)
    });
    let (child, status) = tokio::time::timeout(Duration::from_secs(10), waited)
        .await
        .expect("did not exit within 10 s of the drain")
        .unwrap();
    running.0 = Some(child);
    assert_eq!(
        status.ok().and_then(|e| e.code()),
        Some(0),
        "did not exit 0 after the drain"
    );
    running.0 = None;
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_command_logs_a_user_out_everywhere() {
    let redis = Redis::start();
    let up = Upstream::start().await;
    let fx = Fixture::new();
    let rev = format!("backend = \"redis\"\nredis_url = \"{}\"", redis.url());
    let cfg = fx.write("r.toml", &fx.config(up.addr, HS256, &rev, "", ""));
    let app = start(&cfg).await;
    let t = login(app.public_addr, "alice", "alice-password").await;
    let access = t["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        get_with_token(app.public_addr, "/app/x", &access).await.0,
        http::StatusCode::OK
    );
    let st = bin()
        .arg("revoke")
        .arg("--config")
        .arg(&cfg)
        .args(["--user", "alice"])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        get_with_token(app.public_addr, "/app/x", &access).await.0,
        http::StatusCode::UNAUTHORIZED
    );
}

/// Only `serve` may create a missing development key: check-config, explain and users
/// leave the directory as it was.
#[test]
fn commands_other_than_serve_create_no_key_file() {
    let fx = Fixture::new();
    let up: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let tokens =
        "algorithm = \"EdDSA\"\nsigning_key_file = \"keys/dev.pem\"\ngenerate_missing_key = true";
    let cfg = fx.write("gen.toml", &fx.config(up, tokens, MEMORY, "", ""));
    let key = fx.path("keys/dev.pem");
    let out = bin()
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("will generate"));
    let explain = bin()
        .args(["explain", "--config"])
        .arg(&cfg)
        .args(["GET", "/x"])
        .output()
        .unwrap();
    assert!(explain.status.success());
    let list = bin()
        .args(["users", "--config"])
        .arg(&cfg)
        .arg("list")
        .output()
        .unwrap();
    assert!(list.status.success());
    assert!(!key.exists(), "a command other than serve created the key");
    assert!(!fx.path("keys").exists());

    // Without generate_missing_key, a missing key is an error that says how to make one.
    let strict = fx.write(
        "strict.toml",
        &fx.config(
            up,
            &tokens.replace("generate_missing_key = true", ""),
            MEMORY,
            "",
            "",
        ),
    );
    let out = bin()
        .args(["check-config", "--config"])
        .arg(&strict)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("authgate keygen"));
}

#[test]
fn explain_prints_a_forward_auth_snippet_per_proxy() {
    let fx = Fixture::new();
    let up: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let cfg = fx.write(
        "fa.toml",
        // The public listener only ([server] comes first): one port cannot be both.
        &fx.config(up, HS256, MEMORY, "", "").replacen(
            "listen = \"127.0.0.1:0\"",
            "listen = \"0.0.0.0:8443\"",
            1,
        ),
    );
    for (proxy, needles) in [
        (
            "nginx",
            &[
                "auth_request",
                "/auth/verify/nginx",
                "X-Original-URI $request_uri",
                "return 404",
            ][..],
        ),
        (
            "envoy",
            &[
                "ext_authz",
                "normalize_path: true",
                "headers_with_underscores_action: REJECT_REQUEST",
                "status_on_error",
                "/auth/verify/ext_authz",
            ][..],
        ),
        (
            "traefik",
            &["forwardAuth", "/auth/verify", "authResponseHeaders"][..],
        ),
        (
            "caddy",
            &["forward_auth", "copy_headers x-auth-user", "respond 404"][..],
        ),
    ] {
        let out = bin()
            .args(["explain", "--config"])
            .arg(&cfg)
            .args(["--forward-auth", proxy])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{proxy}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        for n in needles {
            assert!(text.contains(n), "{proxy}: {n:?} missing:\n{text}");
        }
        assert!(
            text.contains("127.0.0.1:8443"),
            "{proxy}: the gateway's address:\n{text}"
        );
    }
    let out = bin()
        .args(["explain", "--config"])
        .arg(&cfg)
        .args(["--forward-auth", "apache"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_asks_the_admin_listener() {
    let up = Upstream::start().await;
    let fx = Fixture::new();
    let cfg = fx.write("h.toml", &fx.config(up.addr, HS256, MEMORY, "", ""));
    let (running, _public, admin) = spawn_gateway(&cfg);
    // The config names port 0; point the probe at the port the gateway took.
    let probe = fx.write(
        "probe.toml",
        &std::fs::read_to_string(&cfg).unwrap().replace(
            "[admin]\nlisten = \"127.0.0.1:0\"",
            &format!("[admin]\nlisten = \"{admin}\""),
        ),
    );
    let out = bin()
        .args(["healthcheck", "--config"])
        .arg(&probe)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(running);
    let out = bin()
        .args(["healthcheck", "--config"])
        .arg(&probe)
        .output()
        .unwrap();
    assert!(!out.status.success(), "healthy with the gateway gone");
}

/// The image's way of running it: the image's default config (`deploy/image/authgate.toml`) at
/// the image's layout, its key and users file mounted, every file and directory read-only
/// (the working directory too), as uid/gid 65532 (when the suite runs as root; else as the
/// unprivileged user it is). It serves, and writes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn runs_as_the_image_does_uid_65532_read_only() {
    use std::os::unix::fs::PermissionsExt;
    let up = Upstream::start().await;
    let root = tempfile::tempdir().unwrap();
    let etc = root.path().join("etc/authgate");
    for d in ["keys", "users"] {
        std::fs::create_dir_all(etc.join(d)).unwrap();
    }
    let exe = root.path().join("authgate");
    std::fs::copy(env!("CARGO_BIN_EXE_authgate"), &exe).unwrap();
    let out = bin()
        .args(["keygen", "--alg", "EdDSA", "--out"])
        .arg(etc.join("keys/signing.pem"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let hash = authgate::auth::passwords::hash_password(b"alice-password").unwrap();
    std::fs::write(
        etc.join("users/users.toml"),
        format!("[[user]]\nname = \"alice\"\npassword_hash = \"{hash}\"\nroles = [\"user\"]\n"),
    )
    .unwrap();
    let image = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/image/authgate.toml"),
    )
    .unwrap();
    // Same layout under the temp root; loopback port 0 instead of the image's fixed ports.
    let config = image
        .replace("/etc/authgate/", &format!("{}/", etc.display()))
        .replace("0.0.0.0:8443", "127.0.0.1:0")
        .replace("0.0.0.0:9901", "127.0.0.1:0");
    std::fs::write(etc.join("authgate.toml"), config).unwrap();
    // Read-only everything: files 0444, directories 0555.
    fn lock(p: &std::path::Path) {
        for e in std::fs::read_dir(p).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                lock(&path);
            } else {
                let mode = if path.file_name().unwrap() == "authgate" {
                    0o555
                } else {
                    0o444
                };
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            }
        }
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    lock(root.path());
    let before = tree(root.path());
    let is_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    // As root: util-linux's setpriv drops to 65532 with no supplementary groups, as the
    // container runtime does for `USER 65532:65532`.
    let mut cmd = if is_root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65532", "--regid=65532", "--clear-groups", "--"])
            .arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    cmd.args(["serve", "--config"])
        .arg(etc.join("authgate.toml"))
        .current_dir(root.path())
        .env_clear()
        .env("AUTHGATE_UPSTREAM", format!("http://{}", up.addr));
    let (running, public, _admin, _log) = spawn_command_with_log(cmd);
    let addr: std::net::SocketAddr = public.parse().unwrap();
    let pair = login_pair(addr, "alice", "alice-password").await;
    let (s, _, _) = get_with_token(addr, "/app/x", &pair.access).await;
    assert_eq!(s, http::StatusCode::OK);
    assert_eq!(up.last().headers.get("x-auth-user").unwrap(), "alice");
    if is_root {
        let pid = running.0.as_ref().unwrap().id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(
            uid.split_whitespace().skip(1).all(|u| u == "65532"),
            "{uid}"
        );
    }
    drop(running);
    assert_eq!(
        tree(root.path()),
        before,
        "the gateway wrote to its directory"
    );
    // Unlock, so the temp dir can be removed.
    fn unlock(p: &std::path::Path) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        for e in std::fs::read_dir(p).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                unlock(&path);
            }
        }
    }
    unlock(root.path());
}

/// Every file under `p` with its size, sorted.
fn tree(p: &std::path::Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let path = e.path();
        if path.is_dir() {
            out.extend(tree(&path));
        } else {
            out.push((path, e.metadata().unwrap().len()));
        }
    }
    out.sort();
    out
}

/// A login burst must not grow the process past a sidecar's memory: 32 concurrent logins with
/// default settings, RSS (and its peak) under 64 MiB. Each hashing thread reuses one argon2
/// block buffer, so RSS is bounded by threads x 19 MiB plus a small constant.
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_32_concurrent_logins_stays_under_64_mib() {
    let up = Upstream::start().await;
    let fx = Fixture::new();
    // Default settings: the fixture's [login] limits removed; 32 people, one login each.
    let text = fx.config(up.addr, HS256, MEMORY, "", "");
    let start = text.find("[login]").unwrap();
    let end = start + text[start..].find("\n\n").unwrap();
    let hash = authgate::auth::passwords::hash_password(b"burst-password").unwrap();
    let users: String = (0..32)
        .map(|i| format!("[[user]]\nname = \"u{i}\"\npassword_hash = \"{hash}\"\nroles = []\n\n"))
        .collect();
    fx.write("users.toml", &users);
    let cfg = fx.write(
        "burst.toml",
        &format!(
            "{}[login]\nhash_memory_idle = \"1s\"\n{}",
            &text[..start],
            &text[end..]
        ),
    );
    let mut cmd = bin();
    cmd.args(["serve", "--config"]).arg(&cfg);
    let (running, public, _admin, _log) = spawn_command_with_log(cmd);
    let addr: std::net::SocketAddr = public.parse().unwrap();
    let pid = running.0.as_ref().unwrap().id();
    let kib = |field: &str| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let idle = kib("VmRSS:");
    for round in 0..2 {
        let logins: Vec<_> = (0..32)
            .map(|i| {
                tokio::spawn(async move { login(addr, &format!("u{i}"), "burst-password").await })
            })
            .collect();
        for l in logins {
            assert!(l.await.unwrap()["access_token"].is_string());
        }
        let (rss, peak) = (kib("VmRSS:"), kib("VmHWM:"));
        eprintln!(
            "login burst {}: RSS idle {:.1} MiB, after 32 concurrent logins {:.1} MiB, peak {:.1} MiB",
            round + 1,
            idle as f64 / 1024.0,
            rss as f64 / 1024.0,
            peak as f64 / 1024.0
        );
        assert!(peak < 64 * 1024, "peak RSS {peak} KiB after a login burst");
    }
    // Idle for login.hash_memory_idle, the hashing threads give their argon2 memory back.
    let after = kib("VmRSS:");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut now = after;
    while now > idle + 6 * 1024 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        now = kib("VmRSS:");
    }
    eprintln!(
        "login burst: RSS {:.1} MiB after it, {:.1} MiB once idle (idle before {:.1} MiB)",
        after as f64 / 1024.0,
        now as f64 / 1024.0,
        idle as f64 / 1024.0
    );
    assert!(
        now <= idle + 6 * 1024,
        "the hashing threads kept their memory: RSS {now} KiB, idle before {idle} KiB"
    );
}

/// Every line logged while serving a request carries its request id, and a 502 says why.
#[tokio::test(flavor = "multi_thread")]
async fn log_lines_carry_the_request_id_and_a_502_its_cause() {
    // An upstream that refuses connections: a port bound, then released.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let fx = Fixture::new();
    let text = fx
        .config(dead, HS256, MEMORY, "", "")
        .replace("format = \"pretty\"", "format = \"json\"");
    let cfg = fx.write("log.toml", &text);
    let (running, public, _admin, mut log) = spawn_gateway_with_log(&cfg);
    let addr: std::net::SocketAddr = public.parse().unwrap();
    let req = get("/public/x")
        .header("x-request-id", "trace-me-123")
        .header("user-agent", "probe/1.0")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(empty())
        .unwrap();
    let (s, h, _) = send(addr, req).await;
    assert_eq!(s, http::StatusCode::BAD_GATEWAY);
    assert_eq!(h.get("x-request-id").unwrap(), "trace-me-123");
    assert!(log.wait_for("upstream request failed"), "{:?}", log.seen);
    let line = log.seen.last().unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["span"]["request_id"], "trace-me-123", "{line}");
    let error = v["error"].as_str().unwrap();
    assert!(error.contains("refused"), "{line}");
    assert_eq!(v["kind"], "connect", "{line}");
    // The access line says why it was refused.
    assert!(log.wait_for("upstream_unreachable"), "{:?}", log.seen);
    let access: serde_json::Value = serde_json::from_str(log.seen.last().unwrap()).unwrap();
    assert_eq!(access["reason"], "upstream_unreachable", "{access}");
    // Who asked, for which host, with what, in which trace, and how much came back.
    assert_eq!(access["client_ip"], "127.0.0.1", "{access}");
    assert_eq!(access["host"], "gw.test", "{access}");
    assert_eq!(access["user_agent"], "probe/1.0", "{access}");
    assert_eq!(
        access["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "{access}"
    );
    assert!(
        access["bytes"].as_str().unwrap().parse::<u64>().unwrap() > 0,
        "{access}"
    );
    // A failed login, logged inside the request, carries it too.
    let req = post("/auth/login")
        .header("content-type", "application/json")
        .header("x-request-id", "login-456")
        .body(json_body(
            serde_json::json!({"username": "alice", "password": "wrong"}),
        ))
        .unwrap();
    assert_eq!(send(addr, req).await.0, http::StatusCode::UNAUTHORIZED);
    assert!(log.wait_for("login failed"), "{:?}", log.seen);
    let v: serde_json::Value = serde_json::from_str(log.seen.last().unwrap()).unwrap();
    assert_eq!(v["span"]["request_id"], "login-456");
    drop(running);
}

/// `check-config` refuses `text` (written as `name`): exit code 2, and a message that names
/// the file and says `expect`.
fn assert_refused(fx: &Fixture, name: &str, text: &str, expect: &str) {
    let path = fx.write(name, text);
    let out = bin()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{name}: {err}");
    assert!(err.contains(expect), "{name}: expected {expect:?} in {err}");
    assert!(err.contains(&format!("{name}:")), "{err}");
}

/// The Redis topologies' config errors name the key and say what to do.
#[test]
fn redis_topology_config_errors() {
    let fx = Fixture::new();
    let up: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let cases = [
        (
            "backend = \"redis\"\nredis_url = \"redis://h:1\"\ncluster_nodes = [\"redis://h:2\"]",
            "mutually exclusive",
        ),
        (
            "backend = \"redis\"\ncluster_nodes = [\"redis://h:2\"]\nmirror = true",
            "revocation.mirror",
        ),
        (
            "backend = \"redis\"\nsentinel = { master_name = \"m\", nodes = [\"http://h:1\"] }",
            "revocation.sentinel.nodes",
        ),
        (
            "backend = \"redis\"\nredis_password_file = \"no-such-file\"",
            "revocation.redis_password_file",
        ),
        (
            "backend = \"memory\"\ncluster_nodes = [\"redis://h:2\"]",
            "only the redis backend",
        ),
        (
            "backend = \"redis\"\nredis_url = \"rediss://h:1\"\ntls_cert_file = \"c.pem\"",
            "both tls_cert_file and tls_key_file",
        ),
    ];
    for (i, (rev, expect)) in cases.iter().enumerate() {
        let text = fx.config(up, HS256, rev, "", "");
        assert_refused(&fx, &format!("r{i}.toml"), &text, expect);
    }
    // The password file's newline is not part of the password; a valid cluster config loads.
    std::fs::write(fx.path("pw"), "secret\n").unwrap();
    let ok = fx.config(
        up,
        HS256,
        "backend = \"redis\"\ncluster_nodes = [\"redis://h:7000\", \"redis://h:7001\"]\nredis_password_file = \"pw\"",
        "",
        "",
    );
    let config = authgate::Config::from_str(&fx.path("ok.toml"), &ok).unwrap();
    match &config.revocation.backend {
        authgate::config::RevocationBackend::Redis(r) => {
            assert_eq!(r.password.as_deref(), Some("secret"));
            assert!(!format!("{r:?}").contains("secret"), "password in Debug");
        }
        other => panic!("{other:?}"),
    }
}

/// An identity header may not take the name of one the gateway sets or strips (the upstream
/// would see two values, or none), nor the other identity header's name.
#[test]
fn identity_headers_may_not_take_the_gateways_names() {
    let fx = Fixture::new();
    let up: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let cases = [
        (
            "subject_header = \"X_Forwarded_For\"",
            "identity.subject_header",
        ),
        ("roles_header = \"x-request-id\"", "identity.roles_header"),
        ("subject_header = \"Host\"", "identity.subject_header"),
        (
            "subject_header = \"X-User\"\nroles_header = \"x_user\"",
            "also identity.subject_header",
        ),
    ];
    for (i, (identity, expect)) in cases.iter().enumerate() {
        let text = format!(
            "{}\n[identity]\n{identity}\n",
            fx.config(up, HS256, MEMORY, "", "")
        );
        assert_refused(&fx, &format!("id{i}.toml"), &text, expect);
    }
    let ok = format!(
        "{}\n[identity]\nsubject_header = \"X-Remote-User\"\n",
        fx.config(up, HS256, MEMORY, "", "")
    );
    authgate::Config::from_str(&fx.path("ok.toml"), &ok).unwrap();
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Regression (red team, high): 3,000 requests with distinct 60 KB junk refresh cookies to a
/// protected route took RSS from 8 to 181 MiB (each cookie was kept 30 s before it was
/// verified). Nothing is kept for a token that does not verify: RSS stays near idle.
#[tokio::test(flavor = "multi_thread")]
async fn junk_refresh_cookies_do_not_grow_memory() {
    let up = Upstream::start().await;
    let fx = Fixture::new();
    let cfg = fx.write("junk.toml", &fx.config(up.addr, HS256, MEMORY, "", ""));
    let (running, public, _admin) = spawn_gateway(&cfg);
    let addr: std::net::SocketAddr = public.parse().unwrap();
    let pid = running.0.as_ref().unwrap().id();
    let rss = || rss_kib(pid);
    // Warm up (connections, buffers), then measure.
    let junk = "j".repeat(60 * 1024);
    let one = |i: usize| {
        let cookie = format!("authgate_refresh={i:08}{junk}");
        async move { send(addr, with_cookie(get("/app/x"), &cookie)).await.0 }
    };
    for i in 0..50 {
        assert_eq!(one(i).await, StatusCode::UNAUTHORIZED);
    }
    let idle = rss();
    for batch in 0..60 {
        let tasks: Vec<_> = (0..50)
            .map(|i| tokio::spawn(one(1000 + batch * 50 + i)))
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), StatusCode::UNAUTHORIZED);
        }
    }
    let after = rss();
    eprintln!(
        "3,000 junk refresh cookies of 60 KB: RSS {:.1} -> {:.1} MiB",
        idle as f64 / 1024.0,
        after as f64 / 1024.0
    );
    assert!(
        after < idle + 16 * 1024,
        "RSS grew from {idle} to {after} KiB on junk cookies"
    );
}

/// Waits until the clock's second changes (tokens carry whole seconds; a store's epoch too).
async fn next_second() {
    let now = authgate::clock::now_secs();
    while authgate::clock::now_secs() == now {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn status_with(addr: &str, token: &str) -> (StatusCode, String) {
    let (s, _, body) = get_with_token(addr.parse().unwrap(), "/app/x", token).await;
    (s, body)
}

/// Regression (red team, medium): with the memory store, a token refused after logout was
/// accepted again after a restart. A restarted memory store refuses every token issued before
/// it began (everyone signs in again), and says why.
#[tokio::test(flavor = "multi_thread")]
async fn a_memory_store_restart_refuses_tokens_from_before_it() {
    let up = Upstream::start().await;
    let fx = Fixture::new();
    let cfg = fx.write("mem.toml", &fx.config(up.addr, HS256, MEMORY, "", ""));
    let (first, public, _) = spawn_gateway(&cfg);
    let addr = public.parse().unwrap();
    let gone = login_pair(addr, "alice", "alice-password").await;
    let kept = login_pair(addr, "alice", "alice-password").await;
    assert_eq!(
        post_with_token(addr, "/auth/logout", &gone.access).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        status_with(&public, &gone.access).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status_with(&public, &kept.access).await.0, StatusCode::OK);
    drop(first);
    next_second().await;
    let (_second, public, _) = spawn_gateway(&cfg);
    for t in [&gone.access, &kept.access] {
        let (s, body) = status_with(&public, t).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
        assert!(body.contains("epoch"), "{body}");
    }
    let fresh = login_pair(public.parse().unwrap(), "alice", "alice-password").await;
    assert_eq!(status_with(&public, &fresh.access).await.0, StatusCode::OK);
}

/// The durable file store: a restart keeps revocations (the logged-out token stays refused)
/// and sessions (the live token, and its refresh token, keep working).
#[tokio::test(flavor = "multi_thread")]
async fn a_file_store_restart_logs_no_one_out_and_forgets_no_revocation() {
    let up = Upstream::start().await;
    let fx = Fixture::new();
    let rev = "backend = \"file\"\npath = \"state/revocations.redb\"";
    let cfg = fx.write("file.toml", &fx.config(up.addr, HS256, rev, "", ""));
    let (first, public, _) = spawn_gateway(&cfg);
    let addr: std::net::SocketAddr = public.parse().unwrap();
    let gone = login_pair(addr, "alice", "alice-password").await;
    let kept = login_pair(addr, "alice", "alice-password").await;
    let rotated = login_pair(addr, "root", "root-password").await;
    assert_eq!(
        post_with_token(addr, "/auth/logout", &gone.access).await.0,
        StatusCode::NO_CONTENT
    );
    // A refresh before the restart: the rotation must survive it too.
    let (s, _, body) = post_with_token(addr, "/auth/refresh", &rotated.refresh).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let rotated = TokenPair::from_json(json(&body));
    assert!(fx.path("state/revocations.redb").exists());
    drop(first);
    next_second().await;
    let (_second, public, _) = spawn_gateway(&cfg);
    let addr: std::net::SocketAddr = public.parse().unwrap();
    assert_eq!(
        status_with(&public, &gone.access).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (s, body) = status_with(&public, &kept.access).await;
    assert_eq!(s, StatusCode::OK, "a restart logged a session out: {body}");
    let (s, _, body) = post_with_token(addr, "/auth/refresh", &rotated.refresh).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "the rotated refresh token was forgotten: {body}"
    );
    let (s, _, _) = post_with_token(addr, "/auth/refresh", &gone.refresh).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "a logged-out session refreshed"
    );
}

/// Operations (issue: nothing wrong passes silently): `check-config` loads what `serve` loads,
/// and says OK only when `serve` would start.
#[test]
fn check_config_loads_the_users_file_serve_would_need() {
    let fx = Fixture::new();
    let up: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let path = fx.write("c.toml", &fx.config(up, HS256, MEMORY, "", ""));
    let check = || {
        bin()
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap()
    };
    let out = check();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("users: 3 in the file"));
    // A Secret mounted under the wrong key: no users file.
    std::fs::remove_file(fx.path("users.toml")).unwrap();
    let out = check();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("OK"),
        "OK for a config serve refuses"
    );
    fx.write("users.toml", "[[user]]\nname = \"x\"\n");
    let out = check();
    assert_eq!(out.status.code(), Some(2), "a malformed users file passed");
    // serve refuses it too, naming the file.
    let out = bin()
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("users.toml"));
}

#[test]
fn version_config_anywhere_and_a_closed_pipe() {
    let out = bin().arg("--version").output().unwrap();
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(
        v.starts_with("authgate ") && v.contains("commit ") && v.contains("built "),
        "{v}"
    );
    // `--config` after the subcommand's arguments, as deploy/image/authgate.toml says.
    let fx = Fixture::new();
    let up: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let path = fx.write("c.toml", &fx.config(up, HS256, MEMORY, "", ""));
    let out = bin()
        .args(["users", "list", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("alice"));
    // `check-config | head -1`: the reader goes away; no panic.
    let mut child = bin()
        .args(["check-config", "--config"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.status.code().is_some(), "killed by a signal");
}

/// `healthcheck` never needs more than the admin address: `--url`, or `admin.listen` read
/// from a config the gateway would refuse (an unset variable elsewhere in it).
#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_takes_a_url_or_reads_admin_listen_leniently() {
    let up = Upstream::start().await;
    let fx = Fixture::new();
    let cfg = fx.write("h.toml", &fx.config(up.addr, HS256, MEMORY, "", ""));
    let (_running, _public, admin) = spawn_gateway(&cfg);
    let out = bin()
        .args(["healthcheck", "--url", &format!("http://{admin}")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let broken = fx.write(
        "broken.toml",
        &std::fs::read_to_string(&cfg)
            .unwrap()
            .replace(
                "[admin]\nlisten = \"127.0.0.1:0\"",
                &format!("[admin]\nlisten = \"{admin}\""),
            )
            .replace(
                "[users]",
                "[users]\nbackend = \"${AUTHGATE_UNSET_VARIABLE}\"",
            ),
    );
    let out = bin()
        .args(["healthcheck", "--config"])
        .arg(&broken)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `authgate unlock --ip`: an address locked out by failed logins signs in again.
#[tokio::test(flavor = "multi_thread")]
async fn unlock_ip_lifts_an_address_lockout() {
    let redis = Redis::start();
    let gw = TestGateway::new().redis(&redis, "").start().await;
    let text = std::fs::read_to_string(&gw.config)
        .unwrap()
        .replace("max_failures_per_ip = 100", "max_failures_per_ip = 2");
    std::fs::write(&gw.config, &text).unwrap();
    let gw2 = start(&gw.config).await;
    let attempt = |user: &'static str, pw: &'static str| {
        let addr = gw2.public_addr;
        async move {
            let req = post("/auth/login")
                .header("content-type", "application/json")
                .body(json_body(
                    serde_json::json!({"username": user, "password": pw}),
                ))
                .unwrap();
            send(addr, req).await.0
        }
    };
    assert_eq!(attempt("nobody1", "x").await, StatusCode::UNAUTHORIZED);
    assert_eq!(attempt("nobody2", "x").await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        attempt("alice", "alice-password").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    let out = bin()
        .args(["unlock", "--ip", "127.0.0.1", "--config"])
        .arg(&gw.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(attempt("alice", "alice-password").await, StatusCode::OK);
}

/// Operations: `serve` says at start what it runs with, and a store that does not answer is
/// an ERROR at once (it was silence until the first login); one port cannot be both
/// listeners.
#[tokio::test(flavor = "multi_thread")]
async fn serve_reports_what_it_runs_and_a_store_that_refuses_it() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let up = Upstream::start().await;
    let fx = Fixture::new();
    let rev = format!("backend = \"redis\"\nredis_url = \"redis://{dead}/0\"\ntimeout = \"300ms\"");
    let cfg = fx.write("s.toml", &fx.config(up.addr, HS256, &rev, "", ""));
    let (_running, _public, _admin, mut log) = spawn_gateway_with_log(&cfg);
    assert!(log.wait_for("authgate started"), "{:?}", log.seen);
    let line = log.seen.last().unwrap().clone();
    assert!(line.contains("users=3") && line.contains("redis"), "{line}");
    assert!(
        log.wait_for("the revocation store does not answer"),
        "{:?}",
        log.seen
    );
    assert!(log.seen.last().unwrap().contains("ERROR"));
    // admin.listen == server.listen is a config error.
    let same = fx.write(
        "same.toml",
        &fx.config(up.addr, HS256, MEMORY, "", "")
            .replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:18443\""),
    );
    let out = bin()
        .args(["check-config", "--config"])
        .arg(&same)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin.listen"));
}

/// `[[login.oidc]]` mistakes name the key and the fix; a good section is summarized, and
/// `--connect` reports a provider it cannot reach.
#[test]
fn check_config_validates_identity_providers() {
    let fx = Fixture::new();
    let up: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let base = fx.config(up, HS256, MEMORY, "", "");
    let provider = |body: &str| format!("{base}\n[[login.oidc]]\n{body}\n");
    let cases = [
        (
            provider("name = \"Corp\"\nissuer = \"https://sso.example.com\"\nclient_id = \"x\""),
            "login.oidc[0].name",
        ),
        (
            provider("name = \"corp\"\nissuer = \"http://sso.example.com\"\nclient_id = \"x\""),
            "plain http",
        ),
        (
            provider(
                "name = \"corp\"\nissuer = \"https://sso.example.com\"\nclient_id = \"x\"\n\
                 client_secret = \"a\"\nclient_secret_file = \"nope\"",
            ),
            "both set",
        ),
        (
            provider(
                "name = \"corp\"\nissuer = \"https://sso.example.com\"\nclient_id = \"x\"\n\
                 client_secret_file = \"missing-secret\"",
            ),
            "login.oidc[0].client_secret_file",
        ),
        (
            provider(
                "name = \"corp\"\nissuer = \"https://sso.example.com\"\nclient_id = \"x\"\n\
                 role_map = { \"eng\" = [\"a b\"] }",
            ),
            "roles travel in a header",
        ),
        (
            provider(
                "name = \"corp\"\nissuer = \"https://sso.example.com\"\nclient_id = \"x\"\n\
                 users = \"some\"",
            ),
            "login.oidc[0].users",
        ),
        (
            format!(
                "{}\n[[login.oidc]]\nname = \"a\"\nissuer = \"https://x.example\"\nclient_id = \"x\"\n",
                provider("name = \"a\"\nissuer = \"https://x.example\"\nclient_id = \"x\"")
            ),
            "defined twice",
        ),
        (
            base.replace("[login]\n", "[login]\npassword = false\n"),
            "no one can sign in",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let out = bin()
            .args(["check-config", "--config"])
            .arg(fx.write(&format!("oidc{i}.toml"), text))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{want}: {err}");
        assert!(err.contains(want), "wanted {want:?} in: {err}");
    }
    // A good one: summarized; --connect cannot reach it (nothing listens): exit 2, named.
    let good = provider(
        "name = \"corp\"\nissuer = \"http://127.0.0.1:9\"\nclient_id = \"authgate\"\n\
         role_map = { \"eng\" = [\"user\"] }",
    );
    let path = fx.write("good.toml", &good);
    let out = bin()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("corp") && text.contains("public, PKCE only"),
        "{text}"
    );
    let out = bin()
        .args(["check-config", "--connect", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("oidc corp"));
}

/// `check-config --connect` reaches the span collector too: reachable is said, unreachable is
/// a warning (the gateway starts without it), not a failure.
#[test]
fn check_config_connect_reaches_the_otlp_collector() {
    let fx = Fixture::new();
    let up: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let collector = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for (port, reachable) in [
        (collector.local_addr().unwrap().port(), true),
        (dead.port(), false),
    ] {
        let text = fx.config(up, HS256, MEMORY, "", "")
            + &format!("\n[tracing]\notlp_endpoint = \"http://127.0.0.1:{port}\"\n");
        let path = fx.write("otlp.toml", &text);
        let out = bin()
            .args(["check-config", "--connect", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
        if reachable {
            assert!(stdout.contains("otlp: reachable"), "{stdout}");
        } else {
            assert!(
                stderr.contains("warning") && stderr.contains("otlp"),
                "{stderr}"
            );
        }
    }
}

/// The audit trail: one JSON line per security event, in its own file with `log.audit`,
/// with the client and the session and never a password or token.
#[tokio::test(flavor = "multi_thread")]
async fn the_audit_trail_records_logins_lockouts_and_logouts() {
    let up = Upstream::start().await;
    let fx = Fixture::new();
    let text = fx.config(up.addr, HS256, MEMORY, "", "").replace(
        "[log]\nformat = \"pretty\"",
        "[log]\nformat = \"pretty\"\naudit = \"audit.log\"",
    );
    let cfg = fx.write("authgate.toml", &text);
    let (_running, public, _admin) = spawn_gateway(&cfg);
    let addr: std::net::SocketAddr = public.parse().unwrap();
    let pair = login_pair(addr, "alice", "alice-password").await;
    // Three wrong passwords, then eleven attempts refused by the lockout (a spray's shape).
    for _ in 0..14 {
        let req = post("/auth/login")
            .header("content-type", "application/json")
            .header("user-agent", "audit-test/1.0")
            .body(json_body(
                serde_json::json!({"username": "root", "password": "wrong-password"}),
            ))
            .unwrap();
        send(addr, req).await;
    }
    let (status, ..) = post_with_token(addr, "/auth/logout?all=true", &pair.access).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let events = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(fx.path("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let want = ["login_ok", "login_failed", "lockout", "logout_all"];
    let found = eventually(Duration::from_secs(5), || async {
        let ev = events();
        want.iter().all(|w| ev.iter().any(|e| e["event"] == *w))
    })
    .await;
    let ev = events();
    assert!(found, "{ev:#?}");
    let ok = ev.iter().find(|e| e["event"] == "login_ok").unwrap();
    assert_eq!(ok["user"], "alice");
    assert_eq!(ok["ip"], "127.0.0.1");
    assert!(ok["sid"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(ok["target"], "audit");
    let lockouts = ev.iter().filter(|e| e["event"] == "lockout").count();
    assert_eq!(lockouts, 1, "one lockout line, the rest counted: {ev:#?}");
    let failed = ev.iter().find(|e| e["event"] == "login_failed").unwrap();
    assert_eq!(failed["user"], "root");
    assert_eq!(failed["user_agent"], "audit-test/1.0");
    let all = std::fs::read_to_string(fx.path("audit.log")).unwrap();
    assert!(!all.contains("wrong-password") && !all.contains(&pair.access));
}

/// Memory per idle connection (issue 24): 8,000 keep-alive clients, one request each then
/// idle, took RSS from 72 to 262 MiB (~24 KiB each, near hyper's buffers): a 128 Mi sidecar
/// was full at ~4,000. An idle connection is parked (its buffers freed) and the freed memory
/// goes back to the system: 2,000 of them now cost ~7 KiB each. Bounded at 12 KiB.
#[tokio::test(flavor = "multi_thread")]
async fn idle_keep_alive_connections_hold_little_memory() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::start().await;
    let fx = Fixture::new();
    let cfg = fx.write("idle.toml", &fx.config(up.addr, HS256, MEMORY, "", ""));
    let (running, public, _admin) = spawn_gateway(&cfg);
    let addr: std::net::SocketAddr = public.parse().unwrap();
    let pid = running.0.as_ref().unwrap().id();
    let rss = || rss_kib(pid);
    const N: u64 = 2000;
    let idle = rss();
    let mut conns = Vec::new();
    let mut buf = vec![0u8; 4096];
    for _ in 0..N {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /public/x HTTP/1.1\r\nhost: gw.test\r\n\r\n")
            .await
            .unwrap();
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        conns.push(tcp);
    }
    // Parked after a quiet tick (500 ms), trimmed within 5 s.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let after = rss();
    let each = after.saturating_sub(idle) as f64 / N as f64;
    eprintln!(
        "{N} idle keep-alive connections: RSS {:.1} -> {:.1} MiB, {each:.1} KiB each",
        idle as f64 / 1024.0,
        after as f64 / 1024.0
    );
    assert!(each <= 12.0, "{each:.1} KiB per idle connection");
    // Parked, they still serve.
    for tcp in conns.iter_mut().take(20) {
        tcp.write_all(b"GET /public/x HTTP/1.1\r\nhost: gw.test\r\n\r\n")
            .await
            .unwrap();
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    }
}

/// Sum of the run time (ns, from `schedstat`) of each of the process's threads whose name
/// starts with `prefix`, by thread name.
fn thread_run_ns(pid: u32, prefix: &str) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let name = name.trim().to_owned();
        if !name.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("schedstat")).unwrap_or_default();
        let ns: u64 = stat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        *out.entry(name).or_default() += ns;
    }
    out
}

/// `workers = 3`: two more threads, each a runtime of its own accepting on the same port
/// (`SO_REUSEPORT`); the kernel spreads new connections over the three, so each core thread
/// does a share of the work. `max_connections` stays one limit for the process.
#[tokio::test]
async fn workers_each_serve_a_share_of_the_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::start().await;
    let fx = Fixture::new();
    let cfg = fx.write(
        "workers.toml",
        &fx.config(up.addr, HS256, MEMORY, "", "workers = 3"),
    );
    let (running, public, _admin) = spawn_gateway(&cfg);
    let addr: std::net::SocketAddr = public.parse().unwrap();
    let pid = running.0.as_ref().unwrap().id();
    // A thread names itself as it starts: give the core threads a moment to.
    let mut before = thread_run_ns(pid, "authgate-core-");
    for _ in 0..100 {
        if before.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        before = thread_run_ns(pid, "authgate-core-");
    }
    assert_eq!(
        before.keys().cloned().collect::<Vec<_>>(),
        ["authgate-core-1", "authgate-core-2"]
    );
    let mut buf = vec![0u8; 4096];
    let mut conns = Vec::new();
    for _ in 0..60 {
        conns.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    for _ in 0..20 {
        for tcp in &mut conns {
            tcp.write_all(b"GET /public/x HTTP/1.1\r\nhost: gw.test\r\n\r\n")
                .await
                .unwrap();
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
        }
    }
    let after = thread_run_ns(pid, "authgate-core-");
    let all = thread_run_ns(pid, "authgate");
    let worked: Vec<u64> = after
        .iter()
        .map(|(name, ns)| ns - before.get(name).copied().unwrap_or(0))
        .collect();
    let total: u64 = worked.iter().sum();
    eprintln!("run time of the core threads while serving: {worked:?} ns; all threads: {all:?}");
    assert!(
        total > 0,
        "no run time read from /proc/{pid}/task/*/schedstat"
    );
    // 60 connections hashed over three listeners: each gets about 20 (fewer than 6 on one
    // has a probability under 1e-5).
    for ns in &worked {
        assert!(*ns * 10 >= total / 2, "a core thread idle: {worked:?}");
    }
}
