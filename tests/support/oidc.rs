//! A real OpenID Provider for the single sign-on tests and a browser-like client to sign in
//! there: `OidcProvider` runs `tests/oidc/provider.mjs` (the npm package oidc-provider 8.x from
//! `scripts/oidc-setup.sh`, in `target/oidc-provider`) on a free loopback port with one client;
//! `WebClient` is a cookie-keeping HTTP/1.1 client that sends what a browser's navigations send;
//! `OidcProvider::{walk_to_callback, sign_in, end_session}` click through the provider's
//! development login, consent and logout pages.
//!
//! Include it from a test crate that has `mod support;` with
//! `#[path = "support/oidc.rs"] mod oidc;` (or as `pub mod oidc;` in `support/mod.rs`).
//!
//! The provider's accounts: any login name with any password; the account id (`sub`) is the
//! login name. Claims: `preferred_username` = login, `name` = "User <login>", `email` =
//! `<login>@example.com`, `email_verified` = true, except logins starting "unverified"
//! (`email_verified` false) and "other" (`<login>@other.org`); `groups` = ["ops-admins", "eng"]
//! for "boss", [] for a login starting "nogroups", else ["eng"]. Scopes `openid email profile
//! groups`; the scopes' claims and `sid` are in the ID token itself.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use crate::support::procs::{free_port, new_tag, Proc};
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The password typed on the provider's login page (it accepts any).
pub const PASSWORD: &str = "any-password";

/// How many redirects a navigation follows before giving up.
pub const MAX_HOPS: usize = 20;

// ---------------------------------------------------------------------------------------------
// The provider
// ---------------------------------------------------------------------------------------------

/// The one client registered at the provider.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    pub client_id: String,
    /// `None`: a public client (`token_endpoint_auth_method = "none"`, PKCE only).
    pub client_secret: Option<String>,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// Registered with `backchannel_logout_session_required = true`.
    pub backchannel_logout_uri: Option<String>,
    /// Any other client metadata oidc-provider knows (`token_endpoint_auth_method`,
    /// `id_token_signed_response_alg`, ...), merged over the above.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ClientSpec {
    /// A confidential client (`client_secret_basic` by default).
    pub fn confidential(client_id: &str, secret: &str, redirect_uri: &str) -> ClientSpec {
        ClientSpec {
            client_id: client_id.to_owned(),
            client_secret: Some(secret.to_owned()),
            redirect_uris: vec![redirect_uri.to_owned()],
            post_logout_redirect_uris: Vec::new(),
            backchannel_logout_uri: None,
            extra: serde_json::Map::new(),
        }
    }

    /// A public client (no secret).
    pub fn public(client_id: &str, redirect_uri: &str) -> ClientSpec {
        ClientSpec {
            client_secret: None,
            ..ClientSpec::confidential(client_id, "", redirect_uri)
        }
    }

    pub fn redirect_uri(mut self, uri: &str) -> Self {
        self.redirect_uris.push(uri.to_owned());
        self
    }

    pub fn post_logout_redirect_uri(mut self, uri: &str) -> Self {
        self.post_logout_redirect_uris.push(uri.to_owned());
        self
    }

    pub fn backchannel_logout_uri(mut self, uri: &str) -> Self {
        self.backchannel_logout_uri = Some(uri.to_owned());
        self
    }

    /// One more metadata member, e.g. `("token_endpoint_auth_method", json!("client_secret_post"))`.
    pub fn metadata(mut self, key: &str, value: serde_json::Value) -> Self {
        self.extra.insert(key.to_owned(), value);
        self
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("client_id".into(), self.client_id.clone().into());
        if let Some(s) = &self.client_secret {
            m.insert("client_secret".into(), s.clone().into());
        }
        m.insert("redirect_uris".into(), self.redirect_uris.clone().into());
        m.insert(
            "post_logout_redirect_uris".into(),
            self.post_logout_redirect_uris.clone().into(),
        );
        if let Some(u) = &self.backchannel_logout_uri {
            m.insert("backchannel_logout_uri".into(), u.clone().into());
            m.insert("backchannel_logout_session_required".into(), true.into());
        }
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        serde_json::Value::Object(m)
    }
}

/// How to run the provider beyond its client.
#[derive(Debug, Clone, Default)]
pub struct ProviderOptions {
    /// The issuer's host name: "127.0.0.1" (default) or "localhost" (it always listens on
    /// 127.0.0.1; `WebClient` connects "localhost" there). "localhost" makes the provider
    /// another *site* than a gateway on 127.0.0.1, as in production; cookies are per host.
    pub host: Option<String>,
    /// JSON merged over the provider's configuration (`OIDC_OPTIONS` of provider.mjs), e.g.
    /// `{"clientAuthMethods": ["client_secret_post"]}` or `{"ttl": {"IdToken": 5}}`.
    pub config: Option<serde_json::Value>,
    /// Extra environment for node, e.g. `NODE_EXTRA_CA_CERTS` for a TLS back-channel URI.
    pub env: Vec<(String, String)>,
}

/// oidc-provider on a free loopback port; stopped (with anything it started) when dropped.
pub struct OidcProvider {
    proc: Proc,
    issuer: String,
    port: u16,
    client: ClientSpec,
    _dir: tempfile::TempDir,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The install of `scripts/oidc-setup.sh` (or `AUTHGATE_OIDC_PROVIDER_DIR`).
pub fn install_dir() -> PathBuf {
    std::env::var_os("AUTHGATE_OIDC_PROVIDER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/oidc-provider"))
}

impl OidcProvider {
    /// Starts the provider with this one client (issuer `http://127.0.0.1:<port>`) and waits
    /// for it to listen. Panics, saying what to do, when node or the install is missing.
    pub fn start(client: ClientSpec) -> OidcProvider {
        OidcProvider::start_with(client, ProviderOptions::default())
    }

    pub fn start_with(client: ClientSpec, opts: ProviderOptions) -> OidcProvider {
        let dir = install_dir();
        assert!(
            dir.join("node_modules/oidc-provider/package.json").exists(),
            "oidc-provider is not installed in {}: run `bash scripts/oidc-setup.sh` (scripts/test.sh does)",
            dir.display()
        );
        let node_ok = Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            node_ok,
            "`node` (Node.js >= 18) is not on PATH: the OIDC tests run oidc-provider on it \
             (install Node.js, then run `bash scripts/oidc-setup.sh`)"
        );
        let script = repo().join("tests/oidc/provider.mjs");
        let host = opts.host.clone().unwrap_or_else(|| "127.0.0.1".to_owned());
        let tmp = tempfile::tempdir().unwrap();
        let mut last_log = String::new();
        // A port picked free can be taken before node binds it: then try another.
        for attempt in 0..3 {
            let port = free_port();
            let issuer = format!("http://{host}:{port}");
            let mut cmd = Command::new("node");
            cmd.arg(&script)
                .arg(&issuer)
                .arg(port.to_string())
                .env("OIDC_CLIENT", client.to_json().to_string())
                .env("OIDC_PROVIDER_DIR", &dir);
            if let Some(c) = &opts.config {
                cmd.env("OIDC_OPTIONS", c.to_string());
            }
            for (k, v) in &opts.env {
                cmd.env(k, v);
            }
            let name = format!("oidc-provider-{attempt}");
            let mut proc = Proc::spawn(&new_tag("oidc"), &name, cmd, tmp.path());
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let log = proc.log_tail();
                if log.lines().any(|l| l.starts_with("READY ")) {
                    return OidcProvider {
                        proc,
                        issuer,
                        port,
                        client,
                        _dir: tmp,
                    };
                }
                // Exited? (A zombie until reaped: read its state without reaping.)
                let exited = std::fs::read_to_string(format!("/proc/{}/stat", proc.pid())).map_or(
                    true,
                    |st| {
                        st.rsplit(')')
                            .next()
                            .unwrap_or("")
                            .trim_start()
                            .starts_with('Z')
                    },
                );
                if exited {
                    let log = proc.log_tail();
                    if log.contains("cannot listen") {
                        last_log = log;
                        break;
                    }
                    proc.assert_running();
                    panic!("oidc-provider exited; its log:\n{log}");
                }
                assert!(
                    Instant::now() < deadline,
                    "oidc-provider did not print READY within 30 s; its log:\n{log}"
                );
                std::thread::sleep(Duration::from_millis(30));
            }
        }
        panic!("oidc-provider could not listen on a free port; its log:\n{last_log}")
    }

    /// `http://127.0.0.1:<port>` (or `http://localhost:<port>`), no trailing slash.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn client(&self) -> &ClientSpec {
        &self.client
    }

    /// `scheme://host:port` of the issuer (the origin of every provider page).
    pub fn origin(&self) -> String {
        origin_of(&self.issuer).unwrap()
    }

    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }

    /// The routes are oidc-provider's defaults (also in the discovery document).
    pub fn authorization_endpoint(&self) -> String {
        format!("{}/auth", self.issuer)
    }

    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer)
    }

    pub fn userinfo_endpoint(&self) -> String {
        format!("{}/me", self.issuer)
    }

    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.issuer)
    }

    pub fn end_session_endpoint(&self) -> String {
        format!("{}/session/end", self.issuer)
    }

    /// Its output so far (the last 6000 bytes), for failure messages.
    pub fn log_tail(&self) -> String {
        self.proc.log_tail()
    }

    /// Its whole log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.proc.log_path()).unwrap_or_default()
    }

    /// One line per back-channel logout it attempted, in order:
    /// `BACKCHANNEL ok client=.. sub=.. sid=..` or `BACKCHANNEL error client=.. sub=.. sid=.. <why>`.
    pub fn backchannel_outcomes(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.starts_with("BACKCHANNEL "))
            .map(str::to_owned)
            .collect()
    }

    /// Panics (with its log) when it has exited.
    pub fn assert_running(&mut self) {
        self.proc.assert_running();
    }

    /// Stops node now (also done on drop).
    pub fn stop(&mut self) {
        self.proc.stop();
    }

    fn is_mine(&self, url: &str) -> bool {
        origin_of(url).is_some_and(|o| same_origin(&o, &self.origin()))
    }

    /// From `start_url` (a URL that redirects to the authorization endpoint, e.g. the
    /// gateway's `/auth/oidc/<name>/start?next=...`, or the authorization URL itself) through
    /// the provider's login page (as `login`, any password) and consent page (when it asks),
    /// following redirects, until the provider redirects off its own origin. Returns every
    /// response and that last Location (the RP's callback URL with `code`, `state` and `iss`,
    /// or `error`), NOT requested.
    pub async fn walk_to_callback(
        &self,
        web: &WebClient,
        start_url: &str,
        login: &str,
    ) -> (Hops, String) {
        self.walk(web, start_url, Some(login)).await
    }

    /// As `walk_to_callback`, but cancels at the login page (its "[ Cancel ]" link): the
    /// callback URL then carries `error=access_denied`.
    pub async fn abort_to_callback(&self, web: &WebClient, start_url: &str) -> (Hops, String) {
        self.walk(web, start_url, None).await
    }

    async fn walk(&self, web: &WebClient, start_url: &str, login: Option<&str>) -> (Hops, String) {
        let mut hops = Hops(Vec::new());
        let mut page = web.get(start_url).await;
        let mut seen_provider = false;
        loop {
            assert!(
                hops.len() < 3 * MAX_HOPS,
                "no way back from the provider after {} responses: {hops:?}\nprovider log:\n{}",
                hops.len(),
                self.log_tail()
            );
            seen_provider |= self.is_mine(&page.url);
            hops.0.push(page.clone());
            if let Some(next) = page.location() {
                if seen_provider && !self.is_mine(&next) {
                    return (hops, next);
                }
                page = web.next_hop(&page).await.unwrap();
                continue;
            }
            assert!(
                self.is_mine(&page.url),
                "{} answered {} (no redirect) before the provider was reached: {}",
                page.url,
                page.status,
                page.body
            );
            assert_eq!(
                page.status,
                StatusCode::OK,
                "the provider answered {} at {}: {}\nits log:\n{}",
                page.status,
                page.url,
                page.body,
                self.log_tail()
            );
            let forms = page.forms();
            if let Some(f) = forms.iter().find(|f| f.has("login")) {
                match login {
                    Some(login) => {
                        let mut f = f.clone();
                        f.set("login", login);
                        f.set("password", PASSWORD);
                        page = web.submit(&page, &f, None).await;
                    }
                    None => {
                        let abort = page
                            .links()
                            .into_iter()
                            .find(|l| l.contains("/abort"))
                            .unwrap_or_else(|| panic!("no cancel link on {}", page.body));
                        page = web.click(&page, &abort).await;
                    }
                }
            } else if let Some(f) = forms.iter().find(|f| f.get("prompt") == Some("consent")) {
                page = web.submit(&page, f, None).await;
            } else {
                panic!(
                    "a provider page with neither the login nor the consent form at {}: {}",
                    page.url, page.body
                );
            }
        }
    }

    /// `walk_to_callback`, then the callback itself on the RP and the redirects after it (on
    /// any host, up to `MAX_HOPS`). Returns every response; the last one is where the browser
    /// lands (the gateway's `next`, or its error page).
    pub async fn sign_in(&self, web: &WebClient, start_url: &str, login: &str) -> Hops {
        let (mut hops, _callback) = self.walk_to_callback(web, start_url, login).await;
        let last = hops.last().unwrap().clone();
        hops.0
            .extend(web.follow_from(&last, MAX_HOPS, |_| false).await.0);
        hops
    }

    /// RP-initiated logout: visits `url_or_params` (a full URL: the end_session endpoint with
    /// its parameters, or an RP URL that redirects there; otherwise a query string such as
    /// `id_token_hint=..&post_logout_redirect_uri=..&state=..` for the end_session endpoint)
    /// and confirms the provider's logout page ("Yes, sign me out": its form with the hidden
    /// `xsrf` field, plus `logout=yes`). The provider has sent its back-channel logout tokens
    /// (and awaited the answers, 2.5 s at most each) before it answers that POST. Follows
    /// redirects while they stay on the provider; returns every response. The last one is the
    /// provider's "signed out" page, or a redirect to the `post_logout_redirect_uri` (not
    /// requested: `hops.exit_url()`).
    pub async fn end_session(&self, web: &WebClient, url_or_params: &str) -> Hops {
        let url = if url_or_params.starts_with("http://") || url_or_params.starts_with("https://") {
            url_or_params.to_owned()
        } else if url_or_params.is_empty() {
            self.end_session_endpoint()
        } else {
            format!(
                "{}?{}",
                self.end_session_endpoint(),
                url_or_params.trim_start_matches('?')
            )
        };
        let mut hops = Hops(Vec::new());
        let mut page = web.get(&url).await;
        let mut seen_provider = false;
        let mut confirmed = false;
        loop {
            assert!(hops.len() < 3 * MAX_HOPS, "too many hops: {hops:?}");
            seen_provider |= self.is_mine(&page.url);
            hops.0.push(page.clone());
            if let Some(next) = page.location() {
                if seen_provider && !self.is_mine(&next) {
                    return hops;
                }
                page = web.next_hop(&page).await.unwrap();
                continue;
            }
            if !self.is_mine(&page.url) || confirmed {
                return hops;
            }
            assert_eq!(
                page.status,
                StatusCode::OK,
                "the provider answered {} at {}: {}\nits log:\n{}",
                page.status,
                page.url,
                page.body,
                self.log_tail()
            );
            let forms = page.forms();
            let Some(form) = forms.iter().find(|f| f.has("xsrf")) else {
                return hops;
            };
            // The confirmation page's form (id "op.logoutForm") holds only `xsrf`: its "Yes"
            // button adds logout=yes. With no signed-in session the provider answers an
            // auto-submitting form that already carries logout=yes.
            let submitter = (!form.has("logout")).then_some(("logout", "yes"));
            page = web.submit(&page, form, submitter).await;
            confirmed = true;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A browser-like client
// ---------------------------------------------------------------------------------------------

/// Chromium 131 on Linux.
pub const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

const ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8";

/// One response, with the URL it answered.
#[derive(Debug, Clone)]
pub struct Page {
    pub method: Method,
    pub url: String,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
    nav: Nav,
}

impl Page {
    /// The Location of a 30x, made absolute against this page's URL.
    pub fn location(&self) -> Option<String> {
        if !self.status.is_redirection() {
            return None;
        }
        let loc = self.headers.get("location")?.to_str().ok()?;
        Some(resolve(&self.url, loc))
    }

    pub fn is_redirect(&self) -> bool {
        self.location().is_some()
    }

    /// `scheme://host:port` of the page.
    pub fn origin(&self) -> String {
        origin_of(&self.url).unwrap()
    }

    /// `host:port` of the page.
    pub fn authority(&self) -> String {
        split_url(&self.url).unwrap().1
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }

    /// The (name, value) of each Set-Cookie.
    pub fn set_cookies(&self) -> Vec<(String, String)> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok()?.split(';').next()?.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect()
    }

    /// The page's forms, actions made absolute.
    pub fn forms(&self) -> Vec<Form> {
        parse_forms(&self.body, &self.url)
    }

    /// Every `<a href>`, made absolute.
    pub fn links(&self) -> Vec<String> {
        tags(&self.body)
            .into_iter()
            .filter(|t| t.name == "a")
            .filter_map(|t| t.attr("href").map(|h| resolve(&self.url, h)))
            .collect()
    }

    fn nav_body(&self) -> Option<String> {
        self.nav.body.clone()
    }

    /// The query parameters of this page's URL.
    pub fn query(&self) -> HashMap<String, String> {
        query_params(&self.url)
    }
}

/// The responses of one walk, in order.
#[derive(Debug, Clone, Default)]
pub struct Hops(pub Vec<Page>);

impl std::ops::Deref for Hops {
    type Target = Vec<Page>;
    fn deref(&self) -> &Vec<Page> {
        &self.0
    }
}

impl Hops {
    /// The last response (where the browser is).
    pub fn landed(&self) -> &Page {
        self.0.last().expect("no responses")
    }

    /// Where the last response redirects to, when it does (not requested).
    pub fn exit_url(&self) -> Option<String> {
        self.0.last()?.location()
    }

    /// The responses from `host:port`.
    pub fn on(&self, authority: &str) -> Vec<&Page> {
        self.0
            .iter()
            .filter(|p| p.authority() == authority)
            .collect()
    }

    /// The URLs requested, in order.
    pub fn urls(&self) -> Vec<&str> {
        self.0.iter().map(|p| p.url.as_str()).collect()
    }
}

/// A parsed HTML form.
#[derive(Debug, Clone)]
pub struct Form {
    pub id: Option<String>,
    /// Absolute (the page's URL when the form has no action).
    pub action: String,
    /// Lower case; "get" by default.
    pub method: String,
    /// Its successful controls: inputs (not submit buttons; checkboxes and radios when
    /// checked), textareas, selects (the selected or first option).
    pub fields: Vec<(String, String)>,
    /// Named submit buttons: (name, value).
    pub submitters: Vec<(String, String)>,
}

impl Form {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Sets (or adds) a field.
    pub fn set(&mut self, name: &str, value: &str) {
        match self.fields.iter_mut().find(|(k, _)| k == name) {
            Some(f) => f.1 = value.to_owned(),
            None => self.fields.push((name.to_owned(), value.to_owned())),
        }
    }
}

/// `Sec-Fetch-Site`, from the closest to the farthest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Site {
    Origin,
    Same,
    Cross,
}

/// The navigation a request belongs to: who started it (`None`: typed by the user, so
/// `Sec-Fetch-Site: none` throughout) and the farthest relation over its redirect chain.
#[derive(Debug, Clone)]
struct Nav {
    initiator: Option<String>,
    worst: Site,
    /// The body this request sent (a 307/308 sends it again).
    body: Option<String>,
    /// The URL requested last in this navigation.
    last_url: Option<String>,
    /// Fetch's "redirect-tainted origin": a POST then sends `Origin: null`.
    tainted: bool,
}

impl Nav {
    fn typed() -> Nav {
        Nav {
            initiator: None,
            worst: Site::Origin,
            body: None,
            last_url: None,
            tainted: false,
        }
    }

    fn from(origin: &str) -> Nav {
        Nav {
            initiator: Some(origin.to_owned()),
            worst: Site::Origin,
            body: None,
            last_url: None,
            tainted: false,
        }
    }

    /// The header for a request to `url` in this navigation (and the navigation after it).
    fn to(&self, url: &str) -> (Nav, &'static str) {
        let target = origin_of(url).unwrap_or_default();
        let mut next = Nav {
            initiator: self.initiator.clone(),
            worst: self.worst,
            body: None,
            last_url: Some(url.to_owned()),
            tainted: self.tainted,
        };
        let Some(init) = &self.initiator else {
            return (next, "none");
        };
        if let Some(last) = &self.last_url {
            if !same_origin(last, &target) && !same_origin(init, last) {
                next.tainted = true;
            }
        }
        let rel = if same_origin(init, &target) {
            Site::Origin
        } else if site_of(init) == site_of(&target) {
            Site::Same
        } else {
            Site::Cross
        };
        next.worst = self.worst.max(rel);
        let header = match next.worst {
            Site::Origin => "same-origin",
            Site::Same => "same-site",
            Site::Cross => "cross-site",
        };
        (next, header)
    }
}

#[derive(Debug, Clone)]
struct Cookie {
    name: String,
    value: String,
    /// Lower case; with `host_only` the exact host, else the Domain attribute.
    domain: String,
    host_only: bool,
    path: String,
    expires: Option<SystemTime>,
    http_only: bool,
    secure: bool,
    same_site: SameSite,
}

/// A cookie's SameSite; no attribute counts as Lax (Chromium).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SameSite {
    Strict,
    Lax,
    None,
}

/// A browser's cookie jar and navigations over plain HTTP/1.1: cookies per host (not port),
/// Path, Domain, Max-Age and Expires honoured; Secure cookies are kept on loopback hosts (as
/// Chromium treats http://localhost and 127.0.0.1 as secure contexts); SameSite as Chromium for
/// top-level navigations (no attribute = Lax; None without Secure refused; Strict ones not sent
/// in a cross-site navigation, Lax ones only on its GETs). Sites are scheme + host: every port
/// of 127.0.0.1 is one site, "localhost" another.
/// Requests send a Chromium User-Agent, `Accept: text/html,...`, `Sec-Fetch-Site`/`-Mode:
/// navigate`/`-Dest: document`/`-User`, and POSTs an `Origin` (the page the form is on).
/// Clones share the jar (another tab of the same browser).
#[derive(Clone, Default)]
pub struct WebClient {
    jar: Arc<Mutex<Vec<Cookie>>>,
    /// The page shown last (a non-redirect response): the origin its form POSTs send.
    current: Arc<Mutex<Option<String>>>,
}

impl WebClient {
    pub fn new() -> WebClient {
        WebClient::default()
    }

    /// A navigation typed in the address bar (no redirect followed).
    pub async fn get(&self, url: &str) -> Page {
        self.send(Method::GET, url, None, Nav::typed()).await
    }

    /// A link clicked on `from`.
    pub async fn click(&self, from: &Page, url: &str) -> Page {
        self.send(Method::GET, url, None, Nav::from(&from.origin()))
            .await
    }

    /// A form POST (urlencoded) from the page shown last (its origin in `Origin`; the target's
    /// own origin when no page was shown yet). No redirect followed.
    pub async fn post_form(&self, url: &str, fields: &[(&str, &str)]) -> Page {
        let from = self
            .current
            .lock()
            .unwrap()
            .clone()
            .and_then(|u| origin_of(&u))
            .or_else(|| origin_of(url))
            .unwrap();
        self.post_form_from(Some(&from), url, fields).await
    }

    /// A form POST from a page of `origin` (`None`: no Origin header, as some older clients).
    pub async fn post_form_from(
        &self,
        origin: Option<&str>,
        url: &str,
        fields: &[(&str, &str)],
    ) -> Page {
        let body = serde_urlencoded::to_string(fields).unwrap();
        let nav = match origin {
            Some(o) => Nav::from(o),
            None => Nav::typed(),
        };
        self.send(Method::POST, url, Some(body), nav).await
    }

    /// Submits `form` of `page` (with a named submit button's name and value, if any).
    pub async fn submit(&self, page: &Page, form: &Form, submitter: Option<(&str, &str)>) -> Page {
        let mut fields: Vec<(&str, &str)> = form
            .fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        fields.extend(submitter);
        let nav = Nav::from(&page.origin());
        if form.method == "post" {
            let body = serde_urlencoded::to_string(&fields).unwrap();
            self.send(Method::POST, &form.action, Some(body), nav).await
        } else {
            let q = serde_urlencoded::to_string(&fields).unwrap();
            let base = form.action.split('?').next().unwrap_or_default();
            self.send(Method::GET, &format!("{base}?{q}"), None, nav)
                .await
        }
    }

    /// Requests where `page` redirects to, in the same navigation (303, and 301/302 after a
    /// POST, become GET; 307/308 repeat the method and body). `None` when it does not redirect.
    pub async fn next_hop(&self, page: &Page) -> Option<Page> {
        let next = page.location()?;
        let keep = matches!(page.status.as_u16(), 307 | 308) && page.method == Method::POST;
        let (method, body) = if keep {
            (Method::POST, page.nav_body())
        } else {
            (Method::GET, None)
        };
        Some(self.send(method, &next, body, page.nav.clone()).await)
    }

    /// A typed navigation to `url` and its redirects (up to `max_hops`): every response.
    pub async fn follow(&self, url: &str, max_hops: usize) -> Hops {
        self.follow_until(url, max_hops, |_| false).await
    }

    /// As `follow`, but stops before requesting a URL for which `stop` is true (the last
    /// response's `location()` is then that URL).
    pub async fn follow_until(
        &self,
        url: &str,
        max_hops: usize,
        stop: impl Fn(&str) -> bool,
    ) -> Hops {
        let first = self.get(url).await;
        let mut hops = Hops(vec![first.clone()]);
        hops.0
            .extend(self.follow_from(&first, max_hops, stop).await.0);
        hops
    }

    /// The redirects after `page` (not included), up to `max_hops`, stopping before a URL for
    /// which `stop` is true.
    pub async fn follow_from(
        &self,
        page: &Page,
        max_hops: usize,
        stop: impl Fn(&str) -> bool,
    ) -> Hops {
        let mut hops = Hops(Vec::new());
        let mut page = page.clone();
        for _ in 0..max_hops {
            match page.location() {
                Some(next) if !stop(&next) => {
                    page = self.next_hop(&page).await.unwrap();
                    hops.0.push(page.clone());
                }
                _ => return hops,
            }
        }
        assert!(
            page.location().is_none(),
            "more than {max_hops} redirects: {:?}",
            hops.urls()
        );
        hops
    }

    /// The `Cookie` header value this browser sends to `url`.
    pub fn cookie_header(&self, url: &str) -> String {
        let (_, authority, path) = split_url(url).unwrap();
        let host = host_of(&authority);
        self.matching(&host, &path, None)
            .into_iter()
            .map(|c| format!("{}={}", c.name, c.value))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The value of cookie `name` this browser would send to `url`.
    pub fn cookie(&self, url: &str, name: &str) -> Option<String> {
        let (_, authority, path) = split_url(url)?;
        self.matching(&host_of(&authority), &path, None)
            .into_iter()
            .find(|c| c.name == name)
            .map(|c| c.value)
    }

    /// The names of every cookie kept for `host` (any path).
    pub fn cookie_names(&self, host: &str) -> Vec<String> {
        self.purge();
        let host = host.to_ascii_lowercase();
        self.jar
            .lock()
            .unwrap()
            .iter()
            .filter(|c| domain_match(c, &host))
            .map(|c| c.name.clone())
            .collect()
    }

    /// Forgets every cookie (a browser restarted, nothing persistent kept).
    pub fn clear_cookies(&self) {
        self.jar.lock().unwrap().clear();
    }

    fn purge(&self) {
        let now = SystemTime::now();
        self.jar
            .lock()
            .unwrap()
            .retain(|c| c.expires.is_none_or(|e| e > now));
    }

    /// The cookies for `host` and `path`; with `request` (Sec-Fetch-Site, method) SameSite is
    /// applied as for a top-level navigation: Strict ones only same-site, Lax ones also on a
    /// cross-site GET, None ones always.
    fn matching(&self, host: &str, path: &str, request: Option<(&str, &Method)>) -> Vec<Cookie> {
        self.purge();
        let host = host.to_ascii_lowercase();
        let mut out: Vec<Cookie> = self
            .jar
            .lock()
            .unwrap()
            .iter()
            .filter(|c| domain_match(c, &host) && path_match(path, &c.path))
            .filter(|c| !c.secure || is_loopback(&host))
            .filter(|c| match request {
                Some(("cross-site", method)) => match c.same_site {
                    SameSite::Strict => false,
                    SameSite::Lax => *method == Method::GET,
                    SameSite::None => true,
                },
                _ => true,
            })
            .cloned()
            .collect();
        // Longer paths first (RFC 6265 5.4).
        out.sort_by_key(|c| std::cmp::Reverse(c.path.len()));
        out
    }

    fn store(&self, url: &str, headers: &HeaderMap) {
        let (_, authority, path) = split_url(url).unwrap();
        let host = host_of(&authority).to_ascii_lowercase();
        for v in headers.get_all("set-cookie") {
            let Ok(v) = v.to_str() else { continue };
            if let Some(c) = parse_set_cookie(v, &host, &path) {
                let mut jar = self.jar.lock().unwrap();
                jar.retain(|o| {
                    !(o.name == c.name
                        && o.domain == c.domain
                        && o.host_only == c.host_only
                        && o.path == c.path)
                });
                jar.push(c);
            }
        }
        self.purge();
    }

    async fn send(&self, method: Method, url: &str, body: Option<String>, nav: Nav) -> Page {
        let (scheme, authority, path) =
            split_url(url).unwrap_or_else(|| panic!("not an absolute URL: {url}"));
        assert_eq!(scheme, "http", "WebClient speaks plain HTTP only: {url}");
        let (nav, fetch_site) = nav.to(url);
        let mut b = http::Request::builder()
            .method(method.clone())
            .uri(path.clone())
            .header("host", authority.clone())
            .header("user-agent", USER_AGENT)
            .header("accept", ACCEPT)
            .header("accept-language", "en-US,en;q=0.9")
            .header("upgrade-insecure-requests", "1")
            .header("sec-fetch-site", fetch_site)
            .header("sec-fetch-mode", "navigate")
            .header("sec-fetch-dest", "document")
            .header("sec-fetch-user", "?1");
        let cookies = self
            .matching(&host_of(&authority), &path, Some((fetch_site, &method)))
            .into_iter()
            .map(|c| format!("{}={}", c.name, c.value))
            .collect::<Vec<_>>()
            .join("; ");
        if !cookies.is_empty() {
            b = b.header("cookie", cookies);
        }
        if method == Method::POST {
            b = b.header("content-type", "application/x-www-form-urlencoded");
            if let Some(o) = &nav.initiator {
                // A form sends its page's origin; after a cross-origin redirect (307/308), "null".
                let o = if nav.tainted { "null" } else { o.as_str() };
                b = b.header("origin", o);
            }
        }
        let req = b
            .body(Full::new(Bytes::from(body.clone().unwrap_or_default())))
            .unwrap();
        let host = host_of(&authority);
        let port = port_of(&authority);
        let connect_host = if host.eq_ignore_ascii_case("localhost") {
            "127.0.0.1".to_owned()
        } else {
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned()
        };
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect((connect_host.as_str(), port))
                .await
                .unwrap_or_else(|e| panic!("cannot connect to {authority} for {url}: {e}"));
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .unwrap();
            tokio::spawn(conn);
            let resp = sender
                .send_request(req)
                .await
                .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            (status, headers, String::from_utf8_lossy(&body).into_owned())
        };
        let (status, headers, text) = tokio::time::timeout(Duration::from_secs(15), exchange)
            .await
            .unwrap_or_else(|_| panic!("{method} {url}: no answer within 15 s"));
        self.store(url, &headers);
        let mut nav = nav;
        nav.body = body;
        let page = Page {
            method,
            url: url.to_owned(),
            status,
            headers,
            body: text,
            nav,
        };
        if !page.status.is_redirection() {
            *self.current.lock().unwrap() = Some(page.url.clone());
        }
        page
    }
}

// ---------------------------------------------------------------------------------------------
// URLs
// ---------------------------------------------------------------------------------------------

/// (scheme, authority, path-and-query) of an absolute http(s) URL (fragment dropped).
pub fn split_url(url: &str) -> Option<(String, String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let rest = rest.split('#').next().unwrap_or_default();
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_owned()
    };
    if authority.is_empty() {
        return None;
    }
    Some((scheme.to_ascii_lowercase(), authority.to_owned(), path))
}

fn host_of(authority: &str) -> String {
    let a = authority.rsplit('@').next().unwrap_or(authority);
    if a.starts_with('[') {
        return a
            .split(']')
            .next()
            .map(|h| format!("{h}]"))
            .unwrap_or_default();
    }
    a.split(':').next().unwrap_or_default().to_owned()
}

fn port_of(authority: &str) -> u16 {
    let a = authority.rsplit('@').next().unwrap_or(authority);
    let after_host = a.rsplit(']').next().unwrap_or(a);
    after_host
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(80)
}

/// `scheme://host:port` with the port always written.
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, authority, _) = split_url(url)?;
    let default = if scheme == "https" { 443 } else { 80 };
    let port = match authority
        .rsplit(']')
        .next()
        .unwrap_or(&authority)
        .rsplit_once(':')
    {
        Some((_, p)) => p.parse().ok()?,
        None => default,
    };
    Some(format!(
        "{scheme}://{}:{port}",
        host_of(&authority).to_ascii_lowercase()
    ))
}

fn same_origin(a: &str, b: &str) -> bool {
    let norm = |o: &str| origin_of(o).unwrap_or_else(|| o.to_owned());
    norm(a) == norm(b)
}

/// Scheme and host (no registrable-domain logic: IPs and loopback names are their own site).
fn site_of(origin: &str) -> String {
    let (scheme, authority, _) = split_url(origin).unwrap_or_default();
    format!("{scheme}://{}", host_of(&authority).to_ascii_lowercase())
}

fn is_loopback(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "[::1]") || host.ends_with(".localhost")
}

/// `reference` made absolute against `base` (absolute, scheme-relative, absolute-path,
/// query-only and relative-path references; no dot-segment removal beyond "./").
pub fn resolve(base: &str, reference: &str) -> String {
    let r = reference.trim();
    if r.contains("://")
        && r.split("://")
            .next()
            .is_some_and(|s| !s.contains(['/', '?']))
    {
        return r.to_owned();
    }
    let (scheme, authority, path) = split_url(base).expect("the base URL is absolute");
    if let Some(rest) = r.strip_prefix("//") {
        return format!("{scheme}://{rest}");
    }
    if r.starts_with('/') {
        return format!("{scheme}://{authority}{r}");
    }
    let path_only = path.split('?').next().unwrap_or("/");
    if r.is_empty() {
        return format!("{scheme}://{authority}{path}");
    }
    if r.starts_with('?') {
        return format!("{scheme}://{authority}{path_only}{r}");
    }
    let dir = &path_only[..path_only.rfind('/').map_or(0, |i| i + 1)];
    let (rpath, rquery) = match r.find('?') {
        Some(i) => (&r[..i], &r[i..]),
        None => (r, ""),
    };
    format!(
        "{scheme}://{authority}{}{rquery}",
        remove_dot_segments(&format!("{dir}{rpath}"))
    )
}

/// RFC 3986 5.2.4, for absolute paths.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        match *seg {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

/// The query parameters of a URL (percent-decoded; the last value of a repeated name).
pub fn query_params(url: &str) -> HashMap<String, String> {
    let q = url
        .split('#')
        .next()
        .unwrap_or_default()
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or_default();
    serde_urlencoded::from_str::<Vec<(String, String)>>(q)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Cookies (RFC 6265, the parts a test meets)
// ---------------------------------------------------------------------------------------------

fn domain_match(c: &Cookie, host: &str) -> bool {
    if c.host_only {
        return c.domain == host;
    }
    host == c.domain
        || (host.ends_with(&format!(".{}", c.domain)) && host.parse::<std::net::IpAddr>().is_err())
}

fn path_match(request_path: &str, cookie_path: &str) -> bool {
    let p = request_path.split('?').next().unwrap_or("/");
    p == cookie_path
        || (p.starts_with(cookie_path)
            && (cookie_path.ends_with('/') || p[cookie_path.len()..].starts_with('/')))
}

fn default_path(request_path: &str) -> String {
    let p = request_path.split('?').next().unwrap_or("/");
    match p.rfind('/') {
        Some(0) | None => "/".to_owned(),
        Some(i) => p[..i].to_owned(),
    }
}

fn parse_set_cookie(header: &str, host: &str, request_path: &str) -> Option<Cookie> {
    let mut parts = header.split(';');
    let (name, value) = parts.next()?.split_once('=')?;
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    let mut c = Cookie {
        name: name.to_owned(),
        value: value.trim().to_owned(),
        domain: host.to_owned(),
        host_only: true,
        path: default_path(request_path),
        expires: None,
        http_only: false,
        secure: false,
        same_site: SameSite::Lax,
    };
    let mut max_age: Option<i64> = None;
    let mut expires: Option<SystemTime> = None;
    for attr in parts {
        let (k, v) = attr.split_once('=').unwrap_or((attr, ""));
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        match k.as_str() {
            "max-age" => max_age = v.parse().ok().or(max_age),
            "expires" => expires = parse_cookie_date(v).or(expires),
            "domain" if !v.is_empty() => {
                let d = v.trim_start_matches('.').to_ascii_lowercase();
                if d != host && !host.ends_with(&format!(".{d}")) {
                    return None; // not for this host: a browser ignores it
                }
                c.domain = d;
                c.host_only = false;
            }
            "path" if v.starts_with('/') => c.path = v.to_owned(),
            "secure" => c.secure = true,
            "httponly" => c.http_only = true,
            "samesite" => {
                c.same_site = match v.to_ascii_lowercase().as_str() {
                    "strict" => SameSite::Strict,
                    "none" => SameSite::None,
                    _ => SameSite::Lax,
                }
            }
            _ => {}
        }
    }
    if c.secure && !is_loopback(host) {
        return None; // set over plain HTTP
    }
    if c.same_site == SameSite::None && !c.secure {
        return None; // Chromium refuses SameSite=None without Secure
    }
    c.expires = match max_age {
        Some(s) if s <= 0 => Some(UNIX_EPOCH),
        Some(s) => Some(SystemTime::now() + Duration::from_secs(s as u64)),
        None => expires,
    };
    Some(c)
}

/// An `Expires` date the lenient way of RFC 6265 5.1.1 (IMF-fixdate, RFC 850, asctime).
fn parse_cookie_date(s: &str) -> Option<SystemTime> {
    let (mut time, mut day, mut month, mut year) = (None, None, None, None);
    for tok in s
        .split(|c: char| !c.is_ascii_alphanumeric() && c != ':')
        .filter(|t| !t.is_empty())
    {
        if time.is_none() && tok.contains(':') {
            let hms: Vec<u64> = tok.split(':').filter_map(|x| x.parse().ok()).collect();
            if hms.len() == 3 {
                time = Some(hms[0] * 3600 + hms[1] * 60 + hms[2]);
                continue;
            }
        }
        if day.is_none() && tok.len() <= 2 && tok.chars().all(|c| c.is_ascii_digit()) {
            day = tok.parse::<i64>().ok();
            continue;
        }
        if month.is_none() && tok.len() >= 3 {
            let m = [
                "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
            ]
            .iter()
            .position(|m| tok[..3].eq_ignore_ascii_case(m));
            if let Some(m) = m {
                month = Some(m as i64 + 1);
                continue;
            }
        }
        if year.is_none() && (2..=4).contains(&tok.len()) && tok.chars().all(|c| c.is_ascii_digit())
        {
            let y: i64 = tok.parse().ok()?;
            year = Some(match y {
                0..=69 => y + 2000,
                70..=99 => y + 1900,
                _ => y,
            });
        }
    }
    let (t, d, m, y) = (time?, day?, month?, year?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y2, m2) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + t as i64;
    Some(if secs <= 0 {
        UNIX_EPOCH
    } else {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    })
}

// ---------------------------------------------------------------------------------------------
// HTML (enough for the provider's pages and the gateway's)
// ---------------------------------------------------------------------------------------------

/// One start or end tag.
#[derive(Debug, Clone)]
struct Tag {
    /// Lower case; "/form" for an end tag.
    name: String,
    attrs: Vec<(String, String)>,
}

impl Tag {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Every tag, in order, skipping comments and the insides of `<script>` and `<style>`; text
/// between tags is kept as a pseudo tag "#text" (attribute "text") for textareas and options.
fn tags(html: &str) -> Vec<Tag> {
    let b = html.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut text_from = 0;
    while i < b.len() {
        if b[i] != b'<' {
            i += 1;
            continue;
        }
        if i > text_from {
            out.push(Tag {
                name: "#text".into(),
                attrs: vec![("text".into(), html_unescape(&html[text_from..i]))],
            });
        }
        if html[i..].starts_with("<!--") {
            i = html[i..].find("-->").map_or(b.len(), |j| i + j + 3);
            text_from = i;
            continue;
        }
        // The tag's name.
        let mut j = i + 1;
        while j < b.len() && !b[j].is_ascii_whitespace() && b[j] != b'>' {
            if b[j] == b'/' && j > i + 1 {
                break;
            }
            j += 1;
        }
        let name = html[i + 1..j].to_ascii_lowercase();
        // Attributes until the closing '>' (quotes respected).
        let mut attrs = Vec::new();
        let mut k = j;
        loop {
            while k < b.len() && (b[k].is_ascii_whitespace() || b[k] == b'/') {
                k += 1;
            }
            if k >= b.len() || b[k] == b'>' {
                break;
            }
            let s = k;
            while k < b.len() && !b[k].is_ascii_whitespace() && !matches!(b[k], b'=' | b'>') {
                k += 1;
            }
            let key = html[s..k].to_ascii_lowercase();
            let mut value = String::new();
            if k < b.len() && b[k] == b'=' {
                k += 1;
                if k < b.len() && (b[k] == b'"' || b[k] == b'\'') {
                    let q = b[k];
                    let s = k + 1;
                    k = s;
                    while k < b.len() && b[k] != q {
                        k += 1;
                    }
                    value = html_unescape(&html[s..k.min(b.len())]);
                    k += 1;
                } else {
                    let s = k;
                    while k < b.len() && !b[k].is_ascii_whitespace() && b[k] != b'>' {
                        k += 1;
                    }
                    value = html_unescape(&html[s..k]);
                }
            }
            attrs.push((key, value));
        }
        i = (k + 1).min(b.len());
        if name == "script" || name == "style" {
            let end = format!("</{name}");
            i = html[i..]
                .to_ascii_lowercase()
                .find(&end)
                .map_or(b.len(), |j| i + j);
        }
        text_from = i;
        out.push(Tag { name, attrs });
    }
    out
}

/// `&amp;` `&lt;` `&gt;` `&quot;` `&#39;` and numeric references.
pub fn html_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest[..rest.len().min(12)].find(';') else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let ent = &rest[1..end];
        let ch = match ent {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some('\u{a0}'),
            _ => ent
                .strip_prefix("#x")
                .or_else(|| ent.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| ent.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The forms of a page; controls outside a form with `form="<id>"` join that form.
pub fn parse_forms(html: &str, page_url: &str) -> Vec<Form> {
    let mut forms: Vec<Form> = Vec::new();
    let mut open: Option<usize> = None;
    let mut select: Option<(usize, String, Option<String>)> = None;
    let all = tags(html);
    // Controls owned by id (form="x") are placed after every form is known.
    let mut by_id: Vec<(String, Tag)> = Vec::new();
    for (n, t) in all.iter().enumerate() {
        match t.name.as_str() {
            "form" => {
                let action = t
                    .attr("action")
                    .filter(|a| !a.is_empty())
                    .map_or_else(|| page_url.to_owned(), |a| resolve(page_url, a));
                forms.push(Form {
                    id: t.attr("id").map(str::to_owned),
                    action,
                    method: t.attr("method").unwrap_or("get").to_ascii_lowercase(),
                    fields: Vec::new(),
                    submitters: Vec::new(),
                });
                open = Some(forms.len() - 1);
            }
            "/form" => open = None,
            "input" | "button" => {
                if let Some(id) = t.attr("form") {
                    by_id.push((id.to_owned(), t.clone()));
                } else if let Some(f) = open {
                    add_control(&mut forms[f], t);
                }
            }
            "textarea" => {
                if let (Some(f), Some(name)) = (open, t.attr("name")) {
                    let text = match all.get(n + 1) {
                        Some(x) if x.name == "#text" => x.attr("text").unwrap_or("").to_owned(),
                        _ => String::new(),
                    };
                    forms[f].fields.push((name.to_owned(), text));
                }
            }
            "select" => {
                if let (Some(f), Some(name)) = (open, t.attr("name")) {
                    select = Some((f, name.to_owned(), None));
                }
            }
            "option" => {
                if let Some((_, _, chosen)) = &mut select {
                    let value = t.attr("value").map(str::to_owned).unwrap_or_else(|| {
                        match all.get(n + 1) {
                            Some(x) if x.name == "#text" => {
                                x.attr("text").unwrap_or("").trim().to_owned()
                            }
                            _ => String::new(),
                        }
                    });
                    if chosen.is_none() || t.attr("selected").is_some() {
                        *chosen = Some(value);
                    }
                }
            }
            "/select" => {
                if let Some((f, name, Some(v))) = select.take() {
                    forms[f].fields.push((name, v));
                }
            }
            _ => {}
        }
    }
    for (id, t) in by_id {
        if let Some(f) = forms.iter_mut().find(|f| f.id.as_deref() == Some(&id)) {
            add_control(f, &t);
        }
    }
    forms
}

fn add_control(form: &mut Form, t: &Tag) {
    let Some(name) = t.attr("name") else { return };
    let kind = t
        .attr("type")
        .unwrap_or(if t.name == "button" { "submit" } else { "text" })
        .to_ascii_lowercase();
    let value = t.attr("value").unwrap_or("").to_owned();
    match kind.as_str() {
        "submit" | "image" => form.submitters.push((name.to_owned(), value)),
        "button" | "reset" | "file" => {}
        "checkbox" | "radio" => {
            if t.attr("checked").is_some() {
                let v = if t.attr("value").is_some() {
                    value
                } else {
                    "on".into()
                };
                form.fields.push((name.to_owned(), v));
            }
        }
        _ => form.fields.push((name.to_owned(), value)),
    }
}

// ---------------------------------------------------------------------------------------------
// OAuth bits a test needs
// ---------------------------------------------------------------------------------------------

/// A PKCE pair: (code_verifier, S256 code_challenge).
pub fn pkce_pair() -> (String, String) {
    use base64::Engine;
    let mut raw = [0u8; 32];
    aws_lc_rs::rand::fill(&mut raw).unwrap();
    let verifier = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    (verifier.clone(), pkce_challenge(&verifier))
}

/// BASE64URL(SHA-256(verifier)).
pub fn pkce_challenge(verifier: &str) -> String {
    use base64::Engine;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// A JWT's payload, decoded (NOT verified).
pub fn jwt_payload(jwt: &str) -> serde_json::Value {
    use base64::Engine;
    let part = jwt.split('.').nth(1).expect("a JWT has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .expect("the payload is base64url");
    serde_json::from_slice(&bytes).expect("the payload is JSON")
}

/// A random URL-safe string (state, nonce).
pub fn random_token() -> String {
    use base64::Engine;
    let mut raw = [0u8; 18];
    aws_lc_rs::rand::fill(&mut raw).unwrap();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}
