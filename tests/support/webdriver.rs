//! Headless Chromium driven over WebDriver (plain HTTP to chromedriver). chromedriver and the
//! Chromium it starts run in a process group of their own with `TMPDIR` and the profile in a
//! temp dir; dropping the `Driver` ends the session, kills what is left of the group and
//! removes the dirs, also when the test panics.

use super::procs::{new_tag, Proc};
use super::send;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

pub const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver on a port it picks itself (`--port=0`, read back from its banner) with one
/// browser session.
pub struct Driver {
    pub port: u16,
    pub session: String,
    // Dropped in this order: the processes, then their dirs.
    proc: Proc,
    _dirs: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // A graceful quit first (Chromium removes its own files), then the group.
        delete_session(self.port, &self.session);
        let left = self.proc.stop();
        assert!(
            left.is_empty() || std::thread::panicking(),
            "browser processes outlived the driver: {left:?}"
        );
    }
}

/// `DELETE /session/<id>` with a blocking socket (Drop cannot await), bounded.
fn delete_session(port: u16, session: &str) {
    use std::io::{Read, Write};
    let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(15)));
    let _ = write!(
        tcp,
        "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let _ = tcp.read_to_end(&mut Vec::new());
}

/// One WebDriver command: the status and the answer's `value`.
pub async fn call_raw(
    port: u16,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (http::StatusCode, Value) {
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
    (status, v["value"].clone())
}

/// One WebDriver command that must succeed.
pub async fn call(port: u16, method: &str, path: &str, body: Option<Value>) -> Value {
    let (status, v) = call_raw(port, method, path, body).await;
    assert!(
        status.is_success(),
        "WebDriver {method} {path}: {status}: {v}"
    );
    v
}

impl Driver {
    pub async fn start() -> Driver {
        let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("Chromium is not installed: run ./scripts/test.sh (it installs chromium and chromium-driver)");
        let dirs = tempfile::tempdir().unwrap();
        let tmp = dirs.path().join("tmp");
        let profile = dirs.path().join("profile");
        std::fs::create_dir_all(&tmp).unwrap();
        // `--port=0`: chromedriver takes a port for IPv6, then the same number for IPv4, and
        // exits when another process holds that one ("IPv4 port not available"), which a
        // busy test run makes likely enough to see. Then it is started again.
        let mut attempt = 0;
        let (proc, port) = loop {
            attempt += 1;
            let mut cmd = std::process::Command::new("chromedriver");
            cmd.arg("--port=0").env("TMPDIR", &tmp);
            let mut proc = Proc::spawn(&new_tag("chromedriver"), "chromedriver", cmd, dirs.path());
            // Its banner names the port.
            let deadline = Instant::now() + Duration::from_secs(30);
            let port = loop {
                if proc.exited() && attempt < 5 && proc.log_tail().contains("port not available") {
                    break None;
                }
                proc.assert_running();
                let log = std::fs::read_to_string(proc.log_path()).unwrap_or_default();
                if let Some(p) = log
                    .split("started successfully on port ")
                    .nth(1)
                    .and_then(|p| {
                        p.split(|c: char| !c.is_ascii_digit())
                            .next()
                            .and_then(|p| p.parse::<u16>().ok())
                    })
                {
                    break Some(p);
                }
                assert!(
                    Instant::now() < deadline,
                    "chromedriver did not say its port within 30 s: {}",
                    proc.log_tail()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            if let Some(port) = port {
                break (proc, port);
            }
        };
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         "--disable-dev-shm-usage",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let mut d = Driver {
            port,
            session: String::new(),
            proc,
            _dirs: dirs,
        };
        d.session = call(port, "POST", "/session", Some(caps)).await["sessionId"]
            .as_str()
            .unwrap()
            .to_owned();
        // Long async scripts (a Jupyter kernel starting on a busy machine).
        d.cmd("POST", "/timeouts", Some(json!({"script": 120_000})))
            .await;
        d
    }

    pub async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        call(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            body,
        )
        .await
    }

    pub async fn try_cmd(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (http::StatusCode, Value) {
        call_raw(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            body,
        )
        .await
    }

    pub async fn go(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url}))).await;
    }

    pub async fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn back(&self) {
        self.cmd("POST", "/back", Some(json!({}))).await;
    }

    pub async fn refresh(&self) {
        self.cmd("POST", "/refresh", Some(json!({}))).await;
    }

    /// The URL once `want` holds (a click's navigation may still be under way when the click
    /// returns): asked again and again (each ask is a WebDriver round trip), for up to 10 s.
    pub async fn url_when(&self, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let url = self.url().await;
            if want(&url) || Instant::now() > deadline {
                return url;
            }
            tokio::task::yield_now().await;
        }
    }

    /// The page source once it contains `needle` (or the last one seen, after 10 s).
    pub async fn source_when(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let page = self.source().await;
            if page.contains(needle) || Instant::now() > deadline {
                return page;
            }
            tokio::task::yield_now().await;
        }
    }

    pub async fn source(&self) -> String {
        self.cmd("GET", "/source", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn find(&self, css: &str) -> String {
        self.find_by("css selector", css).await
    }

    pub async fn find_by(&self, using: &str, value: &str) -> String {
        self.try_find_by(using, value)
            .await
            .unwrap_or_else(|| panic!("no element {using} {value:?} on this page"))
    }

    pub async fn try_find_by(&self, using: &str, value: &str) -> Option<String> {
        let (status, v) = self
            .try_cmd(
                "POST",
                "/element",
                Some(json!({"using": using, "value": value})),
            )
            .await;
        status
            .is_success()
            .then(|| v[ELEMENT].as_str().unwrap().to_owned())
    }

    /// The element once it exists (polled, up to `within`); panics with the page's text.
    pub async fn wait_find(&self, using: &str, value: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(e) = self.try_find_by(using, value).await {
                return e;
            }
            if Instant::now() > deadline {
                panic!(
                    "no element {using} {value:?} within {within:?} at {}; the page says:\n{}",
                    self.url().await,
                    self.text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.cmd("POST", &format!("/element/{e}/clear"), Some(json!({})))
            .await;
        self.send_keys(&e, text).await;
    }

    /// Types into an element (for a file input: the file's path).
    pub async fn send_keys(&self, element: &str, text: &str) {
        self.cmd(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    pub async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.click_element(&e).await;
    }

    pub async fn click_element(&self, element: &str) {
        self.cmd(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Runs an async script; its callback's argument comes back.
    pub async fn script(&self, body: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/async",
            Some(json!({"script": body, "args": []})),
        )
        .await
    }

    /// Runs a synchronous script; what it returns comes back.
    pub async fn js(&self, body: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": body, "args": []})),
        )
        .await
    }

    /// The page's visible text.
    pub async fn text(&self) -> String {
        let (_, v) = self
            .try_cmd(
                "POST",
                "/execute/sync",
                Some(json!({"script": "return document.body ? document.body.innerText : ''", "args": []})),
            )
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// The page's visible text once `want` holds (polled, up to `within`); panics with it.
    pub async fn text_when(
        &self,
        what: &str,
        within: Duration,
        want: impl Fn(&str) -> bool,
    ) -> String {
        match self.text_within(within, &want).await {
            Some(text) => text,
            None => panic!(
                "{what}: not seen within {within:?} at {}; the page says:\n{}",
                self.url().await,
                self.text().await
            ),
        }
    }

    /// The page's text once `want` holds of it, or None after `within`.
    pub async fn text_within(
        &self,
        within: Duration,
        want: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let text = self.text().await;
            if want(&text) {
                return Some(text);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn cookies(&self) -> Vec<String> {
        let v = self.cmd("GET", "/cookie", None).await;
        v.as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    }

    pub async fn window(&self) -> String {
        self.cmd("GET", "/window", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Opens a new tab and returns its handle (the current one stays current).
    pub async fn new_tab(&self) -> String {
        let v = self
            .cmd("POST", "/window/new", Some(json!({"type": "tab"})))
            .await;
        v["handle"].as_str().unwrap().to_owned()
    }

    pub async fn switch_to(&self, handle: &str) {
        self.cmd("POST", "/window", Some(json!({"handle": handle})))
            .await;
    }

    pub async fn screenshot(&self, width: u32, height: u32, to: &std::path::Path) {
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
