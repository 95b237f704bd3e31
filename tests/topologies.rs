//! Redis as operators run it, each started by the test on loopback: TLS with a client
//! certificate and a password file, a Sentinel group whose primary is killed mid-test, and a
//! three-primary Cluster with users spread over its slots.
// A test crate: its helpers (not only #[test] fns, which clippy.toml covers) may unwrap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use http::StatusCode;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::*;

/// A redis-server or redis-sentinel of the test's own, killed when dropped.
struct Node {
    child: Option<Child>,
    port: u16,
}

impl Node {
    /// Starts `program args` and waits for a log line containing `ready`.
    fn start(program: &str, args: &[String], port: u16, ready: &str) -> Node {
        let mut child = Command::new(program)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e} (scripts/test.sh installs it)"));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let seen = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.contains(ready));
        assert!(seen, "{program} on {port} exited before {ready:?}");
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        Node {
            child: Some(child),
            port,
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port nothing listens on (and, for Cluster, nor on port + 10000).
fn free_port() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < 55000 && std::net::TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
            return p;
        }
    }
}

fn server_args(port: u16, dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(dir.display().to_string());
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli (redis-tools) is needed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `probe` (each try is a real command or request) until true, for up to `within`.
fn wait_until(within: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + within;
    while std::time::Instant::now() < end {
        if probe() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made now.
fn pki(dir: &Path) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct names: OpenSSL (Redis) takes a leaf whose subject is its issuer's for
    // self-signed.
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "authgate test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0].as_str());
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (sc, sk) = leaf(vec!["127.0.0.1".into(), "localhost".into()]);
    let (cc, ck) = leaf(vec!["authgate-client".into()]);
    let w = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    Pki {
        ca: w("ca.pem", &ca_cert.pem()),
        server_cert: w("server.pem", &sc),
        server_key: w("server.key", &sk),
        client_cert: w("client.pem", &cc),
        client_key: w("client.key", &ck),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_over_tls_with_a_client_certificate_and_a_password_file() {
    authgate::telemetry::init(authgate::config::LogFormat::Pretty);
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let port = free_port();
    let p = |x: &PathBuf| x.display().to_string();
    let _redis = Node::start(
        "redis-server",
        &server_args(
            0,
            dir.path(),
            &[
                "--tls-port",
                &port.to_string(),
                "--tls-cert-file",
                &p(&pki.server_cert),
                "--tls-key-file",
                &p(&pki.server_key),
                "--tls-ca-cert-file",
                &p(&pki.ca),
                "--tls-auth-clients",
                "yes",
                "--requirepass",
                "s3cret-pass",
            ],
        ),
        port,
        "Ready to accept connections",
    );
    std::fs::write(dir.path().join("redis-password"), "s3cret-pass\n").unwrap();
    let rev = format!(
        "backend = \"redis\"\nredis_url = \"rediss://127.0.0.1:{port}/0\"\n\
         tls_ca_file = \"{}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n\
         redis_password_file = \"{}\"",
        p(&pki.ca),
        p(&pki.client_cert),
        p(&pki.client_key),
        dir.path().join("redis-password").display()
    );
    let gw = TestGateway::new().revocation(&rev).start().await;
    let user = login_pair(gw.addr, "alice", "alice-password").await;
    assert_eq!(
        get_with_token(gw.addr, "/app/x", &user.access).await.0,
        StatusCode::OK
    );
    post_with_token(gw.addr, "/auth/logout", &user.access).await;
    assert_eq!(
        get_with_token(gw.addr, "/app/x", &user.access).await.0,
        StatusCode::UNAUTHORIZED
    );
    // The revocation is in that Redis, over TLS.
    let keys = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "--tls"])
        .args(["--cacert", &p(&pki.ca), "--cert", &p(&pki.client_cert)])
        .args([
            "--key",
            &p(&pki.client_key),
            "-a",
            "s3cret-pass",
            "--no-auth-warning",
        ])
        .args(["--scan", "--pattern", "authgate:*sid:*"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&keys.stdout).trim().is_empty());

    // A wrong password (or no client certificate): the store is down, so fail closed (503).
    std::fs::write(dir.path().join("wrong"), "nope\n").unwrap();
    let wrong = rev.replace(
        &dir.path().join("redis-password").display().to_string(),
        &dir.path().join("wrong").display().to_string(),
    );
    let bad = TestGateway::new().revocation(&wrong).start().await;
    let req = post("/auth/login")
        .header("content-type", "application/json")
        .body(json_body(
            serde_json::json!({"username": "alice", "password": "alice-password"}),
        ))
        .unwrap();
    assert_eq!(send(bad.addr, req).await.0, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(flavor = "multi_thread")]
async fn sentinel_failover_keeps_every_revocation() {
    sentinel_failover(false).await;
}

/// The same with `mirror = true`: the mirror resubscribes to the primary the sentinels name
/// after the failover (and fails closed until it has resynced).
#[tokio::test(flavor = "multi_thread")]
async fn sentinel_failover_with_the_mirror() {
    sentinel_failover(true).await;
}

async fn sentinel_failover(mirror: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (free_port(), free_port());
    let mut primary = Node::start(
        "redis-server",
        &server_args(a, dir.path(), &[]),
        a,
        "Ready to accept connections",
    );
    let rdir = dir.path().join("replica");
    std::fs::create_dir_all(&rdir).unwrap();
    let _replica = Node::start(
        "redis-server",
        &server_args(b, &rdir, &["--replicaof", "127.0.0.1", &a.to_string()]),
        b,
        "MASTER <-> REPLICA sync: Finished with success",
    );
    let mut sentinels = Vec::new();
    for i in 0..3 {
        let port = free_port();
        let sdir = dir.path().join(format!("s{i}"));
        std::fs::create_dir_all(&sdir).unwrap();
        let conf = sdir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor mymaster 127.0.0.1 {a} 2\n\
                 sentinel down-after-milliseconds mymaster 1000\n\
                 sentinel failover-timeout mymaster 5000\n",
                sdir.display()
            ),
        )
        .unwrap();
        sentinels.push(Node::start(
            "redis-sentinel",
            &[conf.display().to_string()],
            port,
            "+monitor master mymaster",
        ));
    }
    let nodes: Vec<String> = sentinels
        .iter()
        .map(|s| format!("\"redis://127.0.0.1:{}\"", s.port))
        .collect();
    let rev = format!(
        "backend = \"redis\"\ntimeout = \"300ms\"\nmirror = {mirror}\nsentinel = {{ master_name = \"mymaster\", nodes = [{}] }}",
        nodes.join(", ")
    );
    let gw = TestGateway::new().revocation(&rev).start().await;
    // Two sessions revoked before the failover (one by logout, one user cut off), one kept.
    let revoked = login_pair(gw.addr, "alice", "alice-password").await;
    let kept = login_pair(gw.addr, "alice", "alice-password").await;
    let root = login_pair(gw.addr, "root", "root-password").await;
    post_with_token(gw.addr, "/auth/logout", &revoked.access).await;
    let all = post("/auth/logout?all=true")
        .header("authorization", format!("Bearer {}", root.access))
        .body(empty())
        .unwrap();
    assert_eq!(send(gw.addr, all).await.0, StatusCode::NO_CONTENT);
    // Replication is asynchronous: the replica has caught up before the primary dies.
    assert!(wait_until(Duration::from_secs(5), || {
        let keys = cli(b, &["--scan", "--pattern", "authgate:*"]);
        keys.contains("sid:") && keys.contains("cut:")
    }));
    primary.kill();
    // The sentinels promote the replica...
    assert!(
        wait_until(Duration::from_secs(30), || cli(
            sentinels[0].port,
            &["sentinel", "get-master-addr-by-name", "mymaster"]
        )
        .contains(&b.to_string())),
        "no failover"
    );
    // ...and the gateway follows: the kept session works again; the revoked ones never do.
    let mut recovered = false;
    for _ in 0..100 {
        for t in [&revoked.access, &root.access] {
            let s = get_with_token(gw.addr, "/app/x", t).await.0;
            assert_ne!(
                s,
                StatusCode::OK,
                "a revoked token was admitted after the failover"
            );
        }
        if get_with_token(gw.addr, "/app/x", &kept.access).await.0 == StatusCode::OK {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the gateway did not follow the failover");
    for t in [&revoked.access, &root.access] {
        assert_eq!(
            get_with_token(gw.addr, "/app/x", t).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    // Writes go to the new primary: a new login and its logout.
    let again = login_pair(gw.addr, "alice", "alice-password").await;
    post_with_token(gw.addr, "/auth/logout", &again.access).await;
    assert_eq!(
        get_with_token(gw.addr, "/app/x", &again.access).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_three_primary_cluster_with_users_over_its_slots() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let port = free_port();
        let ndir = dir.path().join(format!("n{i}"));
        std::fs::create_dir_all(&ndir).unwrap();
        nodes.push(Node::start(
            "redis-server",
            &server_args(
                port,
                &ndir,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ],
            ),
            port,
            "Ready to accept connections",
        ));
    }
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let out = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for n in &nodes {
        assert!(wait_until(Duration::from_secs(20), || cli(
            n.port,
            &["cluster", "info"]
        )
        .contains("cluster_state:ok")));
    }
    // Users whose names hash to different slots (and so, here, different primaries).
    let hash = authgate::auth::passwords::hash_password(b"pw-cluster").unwrap();
    let names: Vec<String> = (0..6).map(|i| format!("user{i}")).collect();
    let urls: Vec<String> = addrs.iter().map(|a| format!("\"redis://{a}\"")).collect();
    let rev = format!("backend = \"redis\"\ncluster_nodes = [{}]", urls.join(", "));
    let gw = TestGateway::new().revocation(&rev).start().await;
    let users: String = names
        .iter()
        .map(|n| {
            format!("[[user]]\nname = \"{n}\"\npassword_hash = \"{hash}\"\nroles = [\"user\"]\n\n")
        })
        .collect();
    let base = std::fs::read_to_string(gw.fx.path("users.toml")).unwrap();
    std::fs::write(gw.fx.path("users.toml"), format!("{base}\n{users}")).unwrap();
    // Restart on the extended users file (the fixture wrote it before).
    let gw = {
        let config = gw.config.clone();
        let app = start(&config).await;
        (gw, app)
    };
    let (gw, app) = gw;
    let addr = app.public_addr;
    let mut slots = std::collections::HashSet::new();
    for name in &names {
        let slot = cli(
            nodes[0].port,
            &["cluster", "keyslot", &format!("{{{name}}}")],
        );
        slots.insert(slot.trim().to_owned());
        // Logout: one session revoked, the next login unaffected.
        let a = login_pair(addr, name, "pw-cluster").await;
        assert_eq!(
            get_with_token(addr, "/app/x", &a.access).await.0,
            StatusCode::OK
        );
        post_with_token(addr, "/auth/logout", &a.access).await;
        assert_eq!(
            get_with_token(addr, "/app/x", &a.access).await.0,
            StatusCode::UNAUTHORIZED,
            "{name}"
        );
        // Rotation, then reuse of the spent refresh token kills the session.
        let b = login_pair(addr, name, "pw-cluster").await;
        let refresh = |t: String| {
            post("/auth/refresh")
                .header("content-type", "application/json")
                .body(json_body(serde_json::json!({"refresh_token": t})))
                .unwrap()
        };
        let (s, _, body) = send(addr, refresh(b.refresh.clone())).await;
        assert_eq!(s, StatusCode::OK, "{name}: {body}");
        let next = TokenPair::from_json(json(&body));
        assert_eq!(
            send(addr, refresh(b.refresh.clone())).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            get_with_token(addr, "/app/x", &next.access).await.0,
            StatusCode::UNAUTHORIZED,
            "{name}: reuse did not revoke the session"
        );
        // Logout everywhere.
        let c = login_pair(addr, name, "pw-cluster").await;
        let d = login_pair(addr, name, "pw-cluster").await;
        let all = post("/auth/logout?all=true")
            .header("authorization", format!("Bearer {}", c.access))
            .body(empty())
            .unwrap();
        assert_eq!(send(addr, all).await.0, StatusCode::NO_CONTENT);
        assert_eq!(
            get_with_token(addr, "/app/x", &d.access).await.0,
            StatusCode::UNAUTHORIZED,
            "{name}"
        );
    }
    assert!(slots.len() >= 3, "users in {} slots only", slots.len());
    // Throttling: the fixture allows 3 failures per user, then 429, per user.
    let wrong = |name: &str| {
        post("/auth/login")
            .header("content-type", "application/json")
            .body(json_body(
                serde_json::json!({"username": name, "password": "bad"}),
            ))
            .unwrap()
    };
    for _ in 0..3 {
        assert_eq!(send(addr, wrong("user0")).await.0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        send(addr, wrong("user0")).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(send(addr, wrong("user1")).await.0, StatusCode::UNAUTHORIZED);
    drop(gw);
}
