//! Real web apps from PyPI (tests/apps/README.md: Django admin, Streamlit, JupyterLab), each
//! unchanged behind a real gateway and used in headless Chromium through authgate's login
//! page: their own forms, fetch() calls, uploads and WebSockets with their own CSRF defences
//! on; logout in a second tab (open WebSockets closed, 401 JSON for the page's background
//! calls, the login page on reload and Back); and a page on another loopback origin whose
//! form and fetch() POSTs never reach the upstream.
//!
//! Needs the venv of `scripts/webapps-setup.sh` (scripts/test.sh runs it) at
//! `target/webapps-venv`, Chromium and chromedriver. The tests take turns (one browser and one
//! app at a time on a small machine); every process they start is stopped by them, also on
//! panic (`support::procs`).
// A test crate: its helpers (not only #[test] fns, which clippy.toml covers) may unwrap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use http::StatusCode;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::procs::{free_port, new_tag, tagged, wait_ready, Proc};
use support::webdriver::Driver;
use support::*;

/// One browser and one app at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const LOAD: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn venv_python() -> PathBuf {
    let py = repo().join("target/webapps-venv/bin/python");
    assert!(
        py.exists(),
        "{} is missing: run `bash scripts/webapps-setup.sh` (scripts/test.sh does)",
        py.display()
    );
    py
}

/// The gateway in-process: the fixture's users (alice: user; root: admin, user), HS256, the
/// memory store, the given upstreams and routes.
struct Gateway {
    base: String,
    _app: authgate::App,
    _fx: Fixture,
}

async fn gateway(upstreams: &[(&str, SocketAddr)], routes: &str) -> Gateway {
    let fx = Fixture::new();
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"1s\"\n\n[log]\nformat = \"pretty\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n[tokens]\n{HS256}\n\n[revocation]\n{MEMORY}\n\n\
         [users]\nfile = \"users.toml\"\n"
    );
    for (name, addr) in upstreams {
        text.push_str(&format!(
            "\n[[upstreams]]\nname = \"{name}\"\nurl = \"http://{addr}\"\nconnect_timeout = \"2s\"\nrequest_timeout = \"60s\"\n"
        ));
    }
    text.push_str(routes);
    let app = start(&fx.write("authgate.toml", &text)).await;
    Gateway {
        base: format!("http://{}", app.public_addr),
        _app: app,
        _fx: fx,
    }
}

/// A `[[routes]]` table: signed-in users only, navigations sent to the login page.
fn route(path: &str, upstream: &str, extra: &str) -> String {
    format!(
        "\n[[routes]]\npath = \"{path}\"\nupstream = \"{upstream}\"\nauth = \"required\"\n\
         on_unauthenticated = \"redirect\"\n{extra}\n"
    )
}

/// Starts one of tests/apps' run scripts on a free port and waits for `health` to be 200.
async fn start_app(
    tag: &str,
    name: &str,
    dir: &Path,
    script: &str,
    args: &[&str],
    health: &str,
) -> (Proc, SocketAddr) {
    let port = free_port();
    let tmp = dir.join("tmp");
    let home = dir.join(format!("{name}-home"));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join(script))
        .arg(port.to_string())
        .args(args)
        .env("PYTHON", venv_python())
        .env("TMPDIR", &tmp)
        .env("STREAMLIT_HOME", &home)
        .env("JUPYTER_HOME", &home);
    let mut proc = Proc::spawn(&format!("{tag}-{name}"), name, cmd, dir);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_ready(
        &mut proc,
        addr,
        health,
        StatusCode::OK,
        Duration::from_secs(180),
    )
    .await;
    (proc, addr)
}

/// Stops the app and checks that nothing it started is left.
fn stop(mut proc: Proc) {
    let left = proc.stop();
    assert!(
        left.is_empty(),
        "{} left processes behind: {left:?}",
        proc.name
    );
    assert!(
        tagged(proc.tag()).is_empty(),
        "processes of {} still alive",
        proc.name
    );
}

/// Opens `path`, is sent to authgate's login page, signs in and lands back on `path`.
async fn sign_in(b: &Driver, base: &str, path: &str, user: &str, password: &str) {
    b.go(&format!("{base}{path}")).await;
    let url = b.url().await;
    assert!(
        url.starts_with(&format!("{base}/auth/login?next=")),
        "not sent to the login page: {url}"
    );
    b.type_into("#username", user).await;
    b.type_into("#password", password).await;
    b.click("button[type=submit]").await;
    let want = format!("{base}{path}");
    let url = b.url_when(|u| u.starts_with(&want)).await;
    assert!(url.starts_with(&want), "sign-in ended at {url}");
}

/// Signs out through authgate's logout page in a second tab, then comes back to this one.
async fn logout_in_other_tab(b: &Driver, base: &str) {
    let first = b.window().await;
    let tab = b.new_tab().await;
    b.switch_to(&tab).await;
    b.go(&format!("{base}/auth/logout")).await;
    b.click("button[type=submit]").await;
    let url = b.url_when(|u| u.contains("/auth/login")).await;
    assert!(url.contains("/auth/login"), "logout ended at {url}");
    b.cmd("DELETE", "/window", None).await;
    b.switch_to(&first).await;
}

/// The page's own background call after logout: 401 with a JSON body, not the login page.
async fn assert_fetch_gets_401(b: &Driver, path: &str) {
    let got = b
        .script(&format!(
            r#"const done = arguments[arguments.length - 1];
            fetch('{path}').then(async r => done({{status: r.status, redirected: r.redirected,
                type: r.headers.get('content-type'), body: await r.text()}}),
              e => done({{error: String(e)}}));"#
        ))
        .await;
    assert_eq!(got["status"], 401, "fetch {path} after logout: {got}");
    assert_eq!(got["redirected"], false, "{got}");
    assert!(got["type"].as_str().unwrap_or("").contains("json"), "{got}");
    json(got["body"].as_str().unwrap());
}

/// What `script` returns once `want` holds (polled, up to `LOAD`).
async fn js_when(b: &Driver, what: &str, script: &str, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + LOAD;
    loop {
        let v = b.js(script).await;
        if want(&v) {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: still {v} after {LOAD:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The current URL and page are authgate's login page.
async fn assert_login_page(b: &Driver, what: &str) {
    let url = b.url_when(|u| u.contains("/auth/login")).await;
    assert!(url.contains("/auth/login"), "{what}: at {url}");
    assert!(
        b.try_find_by("css selector", "#password").await.is_some(),
        "{what}: no login form at {url}: {}",
        b.text().await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn django_admin_in_chromium() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let tag = new_tag("django");
    let data = dir.path().join("django");
    let (django, addr) = start_app(
        &tag,
        "django",
        dir.path(),
        "tests/apps/django_site/run.sh",
        &[data.to_str().unwrap()],
        "/notes/whoami/",
    )
    .await;
    let gw = gateway(&[("django", addr)], &route("/**", "django", "")).await;
    let base = gw.base.clone();
    let b = Driver::start().await;

    // root (role admin): Django makes it a superuser; the admin's index.
    sign_in(&b, &base, "/admin/", "root", "root-password").await;
    b.text_when("admin index", LOAD, |t| {
        t.contains("Notes") && t.to_lowercase().contains("welcome, root")
    })
    .await;

    // Add, with a file upload: the admin's own multipart form and CSRF token.
    let upload = dir.path().join("attachment.txt");
    std::fs::write(&upload, "uploaded through authgate\n").unwrap();
    b.go(&format!("{base}/admin/notes/note/add/")).await;
    b.wait_find("css selector", "#id_title", LOAD).await;
    b.type_into("#id_title", "Note from Chromium").await;
    let file = b.find("#id_attachment").await;
    b.send_keys(&file, upload.to_str().unwrap()).await;
    b.click("input[name=_save]").await;
    let text = b
        .text_when("added", LOAD, |t| t.contains("was added successfully"))
        .await;
    assert!(text.contains("Note from Chromium"), "{text}");
    assert!(text.contains("attachments/attachment.txt"), "{text}");
    // The uploaded bytes, as Django serves them back.
    let got = b
        .script(
            r#"const done = arguments[arguments.length - 1];
            fetch('/media/attachments/attachment.txt').then(r => r.text()).then(done, e => done(String(e)));"#,
        )
        .await;
    assert_eq!(got, "uploaded through authgate\n");

    // Change it.
    let link = b
        .find_by(
            "xpath",
            "//table[@id='result_list']//a[normalize-space()='Note from Chromium']",
        )
        .await;
    b.click_element(&link).await;
    b.wait_find("css selector", "#id_title", LOAD).await;
    b.type_into("#id_title", "Changed title").await;
    b.click("input[name=_save]").await;
    let text = b
        .text_when("changed", LOAD, |t| t.contains("was changed successfully"))
        .await;
    let list = b
        .js("return document.querySelector('#result_list').innerText")
        .await;
    let list = list.as_str().unwrap();
    assert!(list.contains("Changed title"), "{text}");
    assert!(!list.contains("Note from Chromium"), "{text}");

    // Delete it, through the confirmation page.
    let link = b
        .find_by(
            "xpath",
            "//table[@id='result_list']//a[normalize-space()='Changed title']",
        )
        .await;
    b.click_element(&link).await;
    b.wait_find("css selector", "a.deletelink", LOAD).await;
    b.click("a.deletelink").await;
    b.text_when("delete confirmation", LOAD, |t| t.contains("Are you sure"))
        .await;
    b.click("form input[type=submit]").await;
    b.text_when("deleted", LOAD, |t| t.contains("was deleted successfully"))
        .await;
    b.go(&format!("{base}/admin/notes/note/")).await;
    let text = b
        .text_when("change list", LOAD, |t| t.contains("0 notes"))
        .await;
    assert!(!text.contains("Changed title"), "{text}");

    // The app's own fetch() POST with X-CSRFToken.
    b.go(&format!("{base}/notes/fetch-demo/")).await;
    b.click("#create").await;
    let result = js_when(
        &b,
        "fetch-demo's #result",
        "return document.querySelector('#result').textContent",
        |v| !matches!(v.as_str(), Some("" | "pending")),
    )
    .await;
    let result = result.as_str().unwrap();
    assert!(result.starts_with("200 "), "fetch-demo: {result}");
    let created: Value = json(&result[4..]);
    assert_eq!(created["title"], "from fetch");
    assert_eq!(created["created_by"], "root");
    b.go(&format!("{base}/admin/notes/note/")).await;
    b.text_when("the fetch's note", LOAD, |t| {
        t.contains("from fetch") && t.contains("1 note")
    })
    .await;

    // Django's own log out: a POST form in the admin's header.
    b.click("#logout-form button[type=submit]").await;
    b.text_when("Django's logged-out page", LOAD, |t| {
        t.contains("Thanks for spending some quality time")
    })
    .await;

    drop(b);
    drop(gw);
    stop(django);
}

#[tokio::test(flavor = "multi_thread")]
async fn streamlit_in_chromium() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let tag = new_tag("streamlit");
    let (streamlit, addr) = start_app(
        &tag,
        "streamlit",
        dir.path(),
        "tests/apps/streamlit.sh",
        &[],
        "/_stcore/health",
    )
    .await;
    let gw = gateway(&[("streamlit", addr)], &route("/**", "streamlit", "")).await;
    let base = gw.base.clone();
    let b = Driver::start().await;

    // A first page (for Back later), then the one used.
    sign_in(&b, &base, "/?page=first", "alice", "alice-password").await;
    b.text_when("the app", LOAD, |t| t.contains("count=0"))
        .await;
    b.go(&format!("{base}/")).await;
    // The user the gateway signed in, as Streamlit saw it on its WebSocket handshake.
    let text = b
        .text_when("the app", LOAD, |t| {
            t.contains("count=0") && t.contains("User: alice")
        })
        .await;
    assert!(text.contains("Roles: user"), "{text}");

    // The button: a message over the WebSocket, a rerun, the count.
    let button = b
        .wait_find("xpath", "//button[contains(., 'Increment')]", LOAD)
        .await;
    b.click_element(&button).await;
    b.text_when("count after a click", LOAD, |t| t.contains("count=1"))
        .await;

    // A file upload: PUT /_stcore/upload_file/... with Streamlit's XSRF header, then a rerun.
    let upload = dir.path().join("upload.bin");
    std::fs::write(&upload, vec![b'x'; 1234]).unwrap();
    let input = b.wait_find("css selector", "input[type=file]", LOAD).await;
    b.send_keys(&input, upload.to_str().unwrap()).await;
    let text = b
        .text_when("the upload's size", LOAD, |t| {
            t.contains("uploaded upload.bin: 1234 bytes")
        })
        .await;
    assert!(text.contains("count=1"), "{text}");

    // Logout in another tab: the gateway closes the page's WebSocket (Streamlit shows its
    // connection status, absent while connected), the page's background calls get 401 JSON,
    // reload and Back show the login page (Streamlit's page says `no-cache`; the gateway made
    // it `no-store`).
    let status = "return !!document.querySelector('[data-testid=stConnectionStatus]')";
    assert_eq!(b.js(status).await, false, "not connected before logout");
    logout_in_other_tab(&b, &base).await;
    js_when(&b, "Streamlit's disconnected status", status, |v| v == true).await;
    assert_fetch_gets_401(&b, "/_stcore/health").await;
    b.refresh().await;
    assert_login_page(&b, "reload after logout").await;
    b.back().await;
    assert_login_page(&b, "Back after logout").await;
    assert!(
        !b.text().await.contains("count="),
        "Back showed the app's page after logout"
    );

    drop(b);
    drop(gw);
    stop(streamlit);
}

/// Starts a kernel, runs `print(6*7)` over the kernel's WebSocket and saves a notebook, the
/// way JupyterLab's page does: same-origin fetch() with the `_xsrf` cookie as `X-XSRFToken`,
/// the socket opened by the page. Leaves `window.authgateRun(code)` for later cells.
const JUPYTER_WORK: &str = r#"const done = arguments[arguments.length - 1];
(async () => {
  const xsrf = document.cookie.split('; ').find(c => c.startsWith('_xsrf='));
  if (!xsrf) return done({error: 'no _xsrf cookie: ' + document.cookie});
  const h = {'Content-Type': 'application/json', 'X-XSRFToken': xsrf.slice(6)};
  const started = await fetch('/api/kernels', {method: 'POST', headers: h, body: JSON.stringify({name: 'python3'})});
  if (started.status !== 201) return done({error: 'start kernel: ' + started.status + ' ' + await started.text()});
  const kernel = (await started.json()).id;
  const ws = new WebSocket(`ws://${location.host}/api/kernels/${kernel}/channels?session_id=authgate-test`);
  await new Promise((ok, fail) => {
    ws.onopen = ok;
    ws.onclose = e => fail(new Error('kernel socket closed before it opened: ' + e.code));
  });
  window.authgateRun = (code, ms) => new Promise(ok => {
    if (ws.readyState !== WebSocket.OPEN) return ok({closed: ws.readyState});
    const id = 'authgate-' + Math.random().toString(16).slice(2);
    const timer = setTimeout(() => ok({timeout: ms}), ms);
    ws.addEventListener('close', e => { clearTimeout(timer); ok({closed: e.code}); });
    ws.addEventListener('message', ev => {
      const m = JSON.parse(ev.data);
      if (m.parent_header && m.parent_header.msg_id === id && m.msg_type === 'stream') {
        clearTimeout(timer);
        ok({text: m.content.text});
      }
    });
    ws.send(JSON.stringify({
      header: {msg_id: id, username: '', session: 'authgate-test', msg_type: 'execute_request',
               version: '5.3', date: new Date().toISOString()},
      parent_header: {}, metadata: {}, channel: 'shell', buffers: [],
      content: {code, silent: false, store_history: true, user_expressions: {},
                allow_stdin: false, stop_on_error: true}}));
  });
  const out = await window.authgateRun('print(6*7)', 60000);
  const nb = {cells: [{cell_type: 'code', id: 'c1', source: 'print(6*7)', metadata: {}, execution_count: 1,
                       outputs: [{output_type: 'stream', name: 'stdout', text: out.text || ''}]}],
              metadata: {}, nbformat: 4, nbformat_minor: 5};
  const saved = await fetch('/api/contents/authgate-test.ipynb',
                            {method: 'PUT', headers: h, body: JSON.stringify({type: 'notebook', content: nb})});
  done({kernel, out, save: saved.status});
})().catch(e => done({error: String(e)}));"#;

/// After logout: a new kernel socket from the page (refused or not), and a cell on the old one.
const JUPYTER_AFTER_LOGOUT: &str = r#"const done = arguments[arguments.length - 1];
const kernel = arguments[0];
(async () => {
  const fresh = await new Promise(ok => {
    const ws = new WebSocket(`ws://${location.host}/api/kernels/${kernel}/channels?session_id=after`);
    ws.onopen = () => { ws.close(); ok('opened'); };
    ws.onclose = e => ok('closed ' + e.code);
  });
  const old = await window.authgateRun('print("still running", 6*7)', 5000);
  done({fresh, old});
})().catch(e => done({error: String(e)}));"#;

#[tokio::test(flavor = "multi_thread")]
async fn jupyterlab_in_chromium() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let tag = new_tag("jupyter");
    let notebooks = dir.path().join("notebooks");
    let (jupyter, addr) = start_app(
        &tag,
        "jupyter",
        dir.path(),
        "tests/apps/jupyter.sh",
        &[notebooks.to_str().unwrap()],
        "/api/status",
    )
    .await;
    let gw = gateway(&[("jupyter", addr)], &route("/**", "jupyter", "")).await;
    let base = gw.base.clone();
    let b = Driver::start().await;

    // JupyterLab's whole page (its bundles, settings and API calls) through the gateway.
    sign_in(&b, &base, "/lab", "alice", "alice-password").await;
    b.wait_find(
        "css selector",
        "#jp-main-dock-panel",
        Duration::from_secs(120),
    )
    .await;

    let got = b.script(JUPYTER_WORK).await;
    assert!(got["error"].is_null(), "{got}");
    assert_eq!(got["out"]["text"], "42\n", "{got}");
    assert_eq!(got["save"], 201, "{got}");
    let saved = std::fs::read_to_string(notebooks.join("authgate-test.ipynb"))
        .expect("the notebook is not on disk");
    assert!(
        saved.contains("print(6*7)") && saved.contains("42"),
        "{saved}"
    );

    // Logout in another tab: the open kernel socket is closed; background calls get 401 JSON;
    // a new kernel socket is refused; reload shows the login page.
    logout_in_other_tab(&b, &base).await;
    assert_fetch_gets_401(&b, "/api/status").await;
    let kernel = got["kernel"].clone();
    let after = b
        .cmd(
            "POST",
            "/execute/async",
            Some(serde_json::json!({"script": JUPYTER_AFTER_LOGOUT, "args": [kernel]})),
        )
        .await;
    assert!(after["error"].is_null(), "{after}");
    assert!(
        after["fresh"].as_str().unwrap().starts_with("closed"),
        "a kernel socket opened after logout: {after}"
    );
    // The socket opened before logout was closed by the gateway: the cell does not run.
    assert!(
        after["old"]["text"].is_null() && !after["old"]["closed"].is_null(),
        "the kernel socket opened before logout still works: {after}"
    );
    b.refresh().await;
    assert_login_page(&b, "reload after logout").await;

    drop(b);
    drop(gw);
    stop(jupyter);
}

/// A tiny site on another loopback port: `pages` by path, as HTML.
async fn serve_pages(pages: Vec<(&'static str, String)>) -> SocketAddr {
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let pages = std::sync::Arc::new(pages);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let pages = pages.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let page = pages
                        .iter()
                        .find(|(p, _)| *p == req.uri().path())
                        .map(|(_, html)| html.clone());
                    async move {
                        let (status, body) = match page {
                            Some(html) => (StatusCode::OK, html),
                            None => (StatusCode::NOT_FOUND, "not here".to_owned()),
                        };
                        http::Response::builder()
                            .status(status)
                            .header("content-type", "text/html; charset=utf-8")
                            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn csrf_from_another_origin_in_chromium() {
    let _serial = SERIAL.lock().await;
    // A recording upstream; `/open/**` has CSRF off: the control that shows the other
    // origin's requests do arrive, with the session's cookie, when nothing refuses them.
    let up = Upstream::start().await;
    let routes = route("/open/**", "app", "csrf = \"off\"") + &route("/**", "app", "");
    let gw = gateway(&[("app", up.addr)], &routes).await;
    let base = gw.base.clone();
    // Same host, another port: same-site, so the browser sends the SameSite=Lax cookies with
    // these POSTs (Sec-Fetch-Site: same-site), and only the origin rule stands in the way.
    let form = format!(
        r#"<!doctype html><title>other origin</title>
        <form id="f" method="post" action="{base}/protected/form"><input name="title" value="forged"></form>
        <script>document.getElementById('f').submit()</script>"#
    );
    let fetches = format!(
        r#"<!doctype html><title>other origin</title><p id="done"></p>
        <script>
        const post = path => fetch('{base}' + path, {{method: 'POST', credentials: 'include',
            mode: 'no-cors', headers: {{'Content-Type': 'application/x-www-form-urlencoded'}},
            body: 'title=forged'}}).then(() => 'sent', e => 'error ' + e);
        (async () => {{
          const protectedOne = await post('/protected/fetch');
          const control = await post('/open/control');
          document.getElementById('done').textContent = 'done ' + protectedOne + ' ' + control;
        }})();
        </script>"#
    );
    let other = serve_pages(vec![("/form", form), ("/fetch", fetches)]).await;
    let b = Driver::start().await;

    sign_in(&b, &base, "/home", "alice", "alice-password").await;
    // The gateway's own page posts without any token of authgate's: accepted (same-origin).
    let status = b
        .script(
            r#"const done = arguments[arguments.length - 1];
            fetch('/same-origin', {method: 'POST', body: 'x=1'}).then(r => done(r.status), e => done(String(e)));"#,
        )
        .await;
    assert_eq!(status, 200);
    let posts = |up: &Upstream| -> Vec<String> {
        up.requests()
            .into_iter()
            .filter(|r| r.method == "POST")
            .map(|r| r.uri)
            .collect()
    };
    assert_eq!(posts(&up), ["/same-origin"]);

    // A form on the other origin that submits itself: the gateway's 403 page, nothing upstream.
    b.go(&format!("http://{other}/form")).await;
    let url = b.url_when(|u| u.starts_with(&base)).await;
    assert_eq!(url, format!("{base}/protected/form"));
    let text = b
        .text_when("the refusal", LOAD, |t| t.contains("403"))
        .await;
    assert!(!text.contains("upstream ok"), "{text}");

    // fetch() with credentials from the other origin: refused; the control arrives signed in.
    b.go(&format!("http://{other}/fetch")).await;
    let text = b
        .text_when("the other origin's fetches", LOAD, |t| t.contains("done"))
        .await;
    assert!(text.contains("done sent sent"), "{text}");
    let seen = up.requests();
    let control = seen
        .iter()
        .find(|r| r.uri == "/open/control")
        .expect("the control POST never reached the upstream");
    assert_eq!(control.headers.get("x-auth-user").unwrap(), "alice");
    assert_eq!(
        posts(&up),
        ["/same-origin", "/open/control"],
        "a cross-origin POST reached the upstream"
    );

    drop(b);
}

/// The cookies the current page sees, as (name, path).
async fn cookie_paths(b: &Driver) -> Vec<(String, String)> {
    let v = b.cmd("GET", "/cookie", None).await;
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["path"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// The Streamlit test app at `url` used whole: the user, the button (WebSocket), an upload
/// (Streamlit's XSRF cookie and header), and that its XSRF cookie lives at `mount`.
async fn use_streamlit(b: &Driver, url: &str, mount: &str, upload: &Path) {
    b.go(url).await;
    b.text_when(url, LOAD, |t| {
        t.contains("count=0") && t.contains("User: root")
    })
    .await;
    let button = b
        .wait_find("xpath", "//button[contains(., 'Increment')]", LOAD)
        .await;
    b.click_element(&button).await;
    b.text_when("count after a click", LOAD, |t| t.contains("count=1"))
        .await;
    let input = b.wait_find("css selector", "input[type=file]", LOAD).await;
    b.send_keys(&input, upload.to_str().unwrap()).await;
    b.text_when("the upload's size", LOAD, |t| {
        t.contains("uploaded upload.bin: 321 bytes")
    })
    .await;
    let cookies = cookie_paths(b).await;
    assert!(
        cookies.contains(&("_streamlit_xsrf".to_owned(), mount.to_owned())),
        "Streamlit's cookie at {url} is not on its mount {mount}: {cookies:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn apps_under_a_prefix_in_chromium() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let tag = new_tag("prefixed");
    // Django at /django (`strip_prefix`), told its mount by the gateway's X-Forwarded-Prefix
    // (so it writes its own links, redirects included, with the prefix: the gateway must
    // not add it again, `redirect_rewrite = false`); Streamlit at its root, mounted at /st
    // and not told; a second Streamlit serving under /internal (`--server.baseUrlPath`),
    // mapped from the public /mapped (`strip_prefix` + `upstream_prefix`).
    let data = dir.path().join("django");
    let (django, django_addr) = start_app(
        &tag,
        "django",
        dir.path(),
        "tests/apps/django_site/run.sh",
        &[data.to_str().unwrap()],
        "/notes/whoami/",
    )
    .await;
    let (plain, plain_addr) = start_app(
        &tag,
        "streamlit-plain",
        dir.path(),
        "tests/apps/streamlit.sh",
        &[],
        "/_stcore/health",
    )
    .await;
    let (mapped, mapped_addr) = start_app(
        &tag,
        "streamlit-mapped",
        dir.path(),
        "tests/apps/streamlit.sh",
        &["/internal"],
        "/internal/_stcore/health",
    )
    .await;
    let routes = route(
        "/django/**",
        "django",
        "strip_prefix = \"/django\"\nredirect_rewrite = false",
    ) + &route("/st/**", "plain", "strip_prefix = \"/st\"")
        + &route(
            "/mapped/**",
            "mapped",
            "strip_prefix = \"/mapped\"\nupstream_prefix = \"/internal\"",
        );
    let gw = gateway(
        &[
            ("django", django_addr),
            ("plain", plain_addr),
            ("mapped", mapped_addr),
        ],
        &routes,
    )
    .await;
    let base = gw.base.clone();
    let upload = dir.path().join("upload.bin");
    std::fs::write(&upload, vec![b'y'; 321]).unwrap();
    let b = Driver::start().await;

    // Django: its redirect, its stylesheets, a link, a form and its cookie, all under /django.
    sign_in(&b, &base, "/django/", "root", "root-password").await;
    let url = b.url_when(|u| u.ends_with("/django/admin/")).await;
    assert_eq!(url, format!("{base}/django/admin/"), "Django's redirect");
    let css = js_when(
        &b,
        "the admin's stylesheets",
        "return [...document.styleSheets].filter(s => s.href).map(s => [s.href, s.cssRules.length])",
        |v| !v.as_array().unwrap().is_empty(),
    )
    .await;
    for sheet in css.as_array().unwrap() {
        assert!(
            sheet[0]
                .as_str()
                .unwrap()
                .starts_with(&format!("{base}/django/static/"))
                && sheet[1].as_u64().unwrap() > 0,
            "a stylesheet off the mount or empty: {css}"
        );
    }
    b.click("a[href='/django/admin/notes/note/']").await;
    let url = b.url_when(|u| u.ends_with("/notes/note/")).await;
    assert_eq!(url, format!("{base}/django/admin/notes/note/"), "a link");
    b.click("a[href='/django/admin/notes/note/add/']").await;
    let url = b.url_when(|u| u.ends_with("/notes/note/add/")).await;
    assert_eq!(
        url,
        format!("{base}/django/admin/notes/note/add/"),
        "a link"
    );
    b.wait_find("css selector", "#id_title", LOAD).await;
    b.type_into("#id_title", "Under a prefix").await;
    b.click("input[name=_save]").await;
    b.text_when("added under /django", LOAD, |t| {
        t.contains("was added successfully") && t.contains("Under a prefix")
    })
    .await;
    assert_eq!(b.url().await, format!("{base}/django/admin/notes/note/"));
    let cookies = cookie_paths(&b).await;
    assert!(
        cookies.contains(&("csrftoken".to_owned(), "/django".to_owned())),
        "Django's cookie is not on its mount: {cookies:?}"
    );

    // Streamlit, not told, and mapped.
    use_streamlit(&b, &format!("{base}/st/"), "/st", &upload).await;
    use_streamlit(&b, &format!("{base}/mapped/"), "/mapped", &upload).await;
    // Each mount kept its own cookie (both apps set theirs at Path=/).
    b.go(&format!("{base}/st/")).await;
    let cookies = cookie_paths(&b).await;
    let xsrf: Vec<_> = cookies
        .iter()
        .filter(|(n, _)| n == "_streamlit_xsrf")
        .collect();
    assert_eq!(xsrf.len(), 1, "{cookies:?}");

    drop(b);
    drop(gw);
    stop(mapped);
    stop(plain);
    stop(django);
}
