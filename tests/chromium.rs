//! The browser flows in a real browser: Debian's Chromium, driven over WebDriver by
//! chromedriver (`scripts/test.sh` installs both). Sign-in with a wrong and a right password,
//! CSRF from the page's own script, an expired access cookie with parallel requests, logout
//! with Back, open-redirect attempts, and screenshots of the login page for the README.
// A test crate: its helpers (not only #[test] fns, which clippy.toml covers) may unwrap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use support::*;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver on a port it picks itself (`--port=0`, read back from its banner), stopped
/// when dropped.
struct Driver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
    session: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn call(port: u16, method: &str, path: &str, body: Option<Value>) -> Value {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("127.0.0.1:{port}"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .unwrap();
    let (status, _, text) = send(([127, 0, 0, 1], port).into(), req).await;
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: {text}"));
    assert!(
        status.is_success(),
        "WebDriver {method} {path}: {status}: {text}"
    );
    v["value"].clone()
}

impl Driver {
    async fn start() -> Driver {
        let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("Chromium is not installed: run ./scripts/test.sh (it installs chromium and chromium-driver)");
        let mut child = Command::new("chromedriver")
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is not installed: run ./scripts/test.sh");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| {
                l.split("started successfully on port ")
                    .nth(1)
                    .and_then(|p| p.trim_end_matches('.').trim().parse().ok())
            })
            .expect("chromedriver did not say its port");
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         format!("--user-data-dir={}", profile.path().display())]
            }
        }}});
        let session = call(port, "POST", "/session", Some(caps)).await["sessionId"]
            .as_str()
            .unwrap()
            .to_owned();
        Driver {
            child,
            port,
            _profile: profile,
            session,
        }
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        call(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            body,
        )
        .await
    }

    async fn go(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url}))).await;
    }

    async fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The URL once `want` holds (a click's navigation may still be under way when the click
    /// returns): asked again and again (each ask is a WebDriver round trip), for up to 10 s.
    async fn url_when(&self, want: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let url = self.url().await;
            if want(&url) || std::time::Instant::now() > deadline {
                return url;
            }
            tokio::task::yield_now().await;
        }
    }

    /// The page source once it contains `needle` (or the last one seen, after 10 s).
    async fn source_when(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let page = self.source().await;
            if page.contains(needle) || std::time::Instant::now() > deadline {
                return page;
            }
            tokio::task::yield_now().await;
        }
    }

    async fn source(&self) -> String {
        self.cmd("GET", "/source", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT].as_str().unwrap().to_owned()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.cmd("POST", &format!("/element/{e}/clear"), Some(json!({})))
            .await;
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.cmd("POST", &format!("/element/{e}/click"), Some(json!({})))
            .await;
    }

    /// Runs an async script; its callback's argument comes back.
    async fn script(&self, body: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/async",
            Some(json!({"script": body, "args": []})),
        )
        .await
    }

    async fn cookies(&self) -> Vec<String> {
        let v = self.cmd("GET", "/cookie", None).await;
        v.as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn screenshot(&self, width: u32, height: u32, to: &std::path::Path) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
        let png = self.cmd("GET", "/screenshot", None).await;
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        assert!(bytes.starts_with(b"\x89PNG"));
        std::fs::write(to, bytes).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_browser_flows_in_chromium() {
    // A browser's parallel requests may reach the gateway a moment apart when its access
    // cookie has expired: a few seconds of reuse grace let them share one refresh.
    let gw = TestGateway::new()
        .tokens(&format!("{HS256}\nrefresh_reuse_grace = \"10s\""))
        .route("path = \"/web/**\"\nupstream = \"app\"\non_unauthenticated = \"redirect\"")
        .route("path = \"/tok/**\"\nupstream = \"app\"\ncsrf = \"token\"")
        .start()
        .await;
    let base = format!("http://{}", gw.addr);
    let b = Driver::start().await;

    // Not signed in: sent to the login page, `next` kept.
    b.go(&format!("{base}/web/page?x=1")).await;
    assert!(
        b.url().await.contains("/auth/login?next=/web/page%3Fx%3D1"),
        "{}",
        b.url().await
    );
    // Into docs/ when asked (AUTHGATE_SCREENSHOTS=1 ./scripts/test.sh), else a temp dir: a
    // test run leaves the work tree as it was.
    let shots = tempfile::tempdir().unwrap();
    let docs = match std::env::var_os("AUTHGATE_SCREENSHOTS") {
        Some(_) => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs"),
        None => shots.path().to_path_buf(),
    };
    b.screenshot(1280, 800, &docs.join("login-desktop.png"))
        .await;
    b.screenshot(375, 740, &docs.join("login-phone.png")).await;
    b.cmd(
        "POST",
        "/window/rect",
        Some(json!({"width": 1024, "height": 768})),
    )
    .await;

    // A wrong password: the form again, with the message and the user name.
    b.type_into("#username", "alice").await;
    b.type_into("#password", "wrong-password").await;
    b.click("button[type=submit]").await;
    let page = b.source_when("role=\"alert\"").await;
    assert!(page.contains("role=\"alert\""), "{page}");
    assert!(page.contains("value=\"alice\""), "{page}");

    // The right one: on to the original page, the user's identity at the upstream.
    b.type_into("#password", "alice-password").await;
    b.click("button[type=submit]").await;
    let url = b.url_when(|u| u.ends_with("/web/page?x=1")).await;
    assert!(url.ends_with("/web/page?x=1"), "{url}");
    assert_eq!(gw.up.last().headers.get("x-auth-user").unwrap(), "alice");

    // CSRF: the page's own script passes the origin rule without any token (the default);
    // on a `csrf = "token"` route it needs the value.
    let statuses = b
        .script(
            r#"const done = arguments[arguments.length - 1];
            const csrf = document.cookie.split('; ').find(c => c.startsWith('authgate_csrf=')).split('=')[1];
            Promise.all([
              fetch('/web/change', {method: 'POST'}).then(r => r.status),
              fetch('/tok/change', {method: 'POST'}).then(r => r.status),
              fetch('/tok/change', {method: 'POST', headers: {'X-CSRF-Token': csrf}}).then(r => r.status),
            ]).then(done);"#,
        )
        .await;
    assert_eq!(statuses, json!([200, 403, 200]));

    // The access cookie expires (the browser drops it): four parallel requests all succeed
    // and the session lives on.
    b.cmd("DELETE", "/cookie/authgate_access", None).await;
    let statuses = b
        .script(
            r#"const done = arguments[arguments.length - 1];
            Promise.all([1, 2, 3, 4].map(i => fetch('/web/tab' + i).then(r => r.status))).then(done);"#,
        )
        .await;
    assert_eq!(statuses, json!([200, 200, 200, 200]));
    b.go(&format!("{base}/web/after")).await;
    assert!(
        b.url().await.ends_with("/web/after"),
        "session lost: {}",
        b.url().await
    );

    // Open redirects: signed in, a foreign `next` lands on the default instead.
    for bad in [
        "//evil.example/x",
        "https://evil.example/",
        "/\\evil.example",
    ] {
        let next = authgate::path::encode_component(bad);
        b.go(&format!("{base}/auth/login?next={next}")).await;
        let url = b.url().await;
        assert!(url.starts_with(&base), "{bad} left the site: {url}");
    }

    // Logout: a confirmation, then the login page, cookies gone, and Back shows no
    // protected page (it was never stored).
    b.go(&format!("{base}/web/secret")).await;
    b.go(&format!("{base}/auth/logout")).await;
    b.click("button[type=submit]").await;
    let url = b.url_when(|u| u.contains("/auth/login")).await;
    assert!(url.contains("/auth/login"), "{url}");
    let left = b.cookies().await;
    assert!(left.iter().all(|c| !c.starts_with("authgate_")), "{left:?}");
    let seen = gw.up.requests().len();
    b.cmd("POST", "/back", Some(json!({}))).await;
    b.cmd("POST", "/back", Some(json!({}))).await;
    let url = b.url().await;
    assert!(
        url.contains("/auth/login") || !b.source().await.contains("upstream ok"),
        "Back showed a protected page: {url}"
    );
    assert_eq!(
        gw.up.requests().len(),
        seen,
        "Back reached the upstream without a session"
    );
}
