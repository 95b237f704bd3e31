//! Single sign-on through OpenID Connect providers (`[[login.oidc]]`, CONTRACT §11): the
//! authorization code flow with PKCE (S256), state and nonce, the state in a signed cookie
//! (`state`), the ID token validated in full (`id_token`), and then the gateway's own session,
//! exactly as after a password login. Back-channel logout ends the sessions a provider session
//! (or user) started, found through links kept in the revocation store.
//!
//! Built on `jsonwebtoken` (already the gateway's JWT library, with JWK support) and the
//! gateway's own hyper/rustls client (`http`): the protocol surface is small (discovery, one
//! token request, JWKS), and keeping it here keeps every check in view and on one TLS stack.

pub mod http;
pub mod id_token;
pub mod provider;
pub mod state;

use super::cookies::{self, safe_next};
use super::endpoints::{json, read_body, Ctx};
use super::form::field;
use super::login::see_other;
use super::pages::{self, LoginPage};
use super::sessions::{Principal, SignIn};
use super::tokens::Via;
use super::Auth;
use crate::body::{empty, Body};
use crate::clock::now_secs;
use crate::config::{OidcProviderConfig, OidcUsers};
use crate::error::GatewayError;
use crate::metrics::{LoginMethod, LoginOutcome};
use ::http::header::{CACHE_CONTROL, LOCATION, SET_COOKIE};
use ::http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use id_token::{Expect, IdTokenError};
use provider::Provider;
use serde_json::{Map, Value};
use state::{Flow, FlowKey, FLOW_TTL};
use std::sync::Arc;
use std::time::Duration;

/// The configured providers.
pub struct Oidc {
    providers: Vec<Arc<Provider>>,
    flow_key: FlowKey,
}

impl Oidc {
    pub fn new(configs: &[OidcProviderConfig], secret: &[u8]) -> Oidc {
        let providers: Vec<Arc<Provider>> = configs
            .iter()
            .map(|c| Arc::new(Provider::new(c.clone())))
            .collect();
        // Fetched now (in the background) where a runtime runs: a provider down at start
        // does not stop the gateway.
        if tokio::runtime::Handle::try_current().is_ok() {
            for p in &providers {
                p.discover_in_background();
            }
        }
        Oidc {
            providers,
            flow_key: FlowKey::derive(secret),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Provider>> {
        self.providers.iter().find(|p| p.cfg.name == name)
    }

    pub fn providers(&self) -> &[Arc<Provider>] {
        &self.providers
    }

    /// (name, display name) of each provider, for the login page.
    pub fn buttons(&self) -> Vec<(String, String)> {
        self.providers
            .iter()
            .map(|p| (p.cfg.name.clone(), p.cfg.display_name.clone()))
            .collect()
    }
}

/// A sign-in that could not finish: what the page says, the status, the metric outcome.
struct Failure {
    status: StatusCode,
    message: String,
    outcome: LoginOutcome,
}

impl Failure {
    fn new(status: StatusCode, outcome: LoginOutcome, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
            outcome,
        }
    }
}

/// `/auth/oidc/<name>/<action>`.
pub async fn handle(
    auth: &Auth,
    req: Request<Incoming>,
    rest: &str,
    ctx: &Ctx<'_>,
) -> Result<Response<Body>, GatewayError> {
    let (name, action) = rest.split_once('/').ok_or(GatewayError::NotFound)?;
    let provider = auth.oidc().get(name).ok_or(GatewayError::NotFound)?.clone();
    match (action, req.method()) {
        ("start", &::http::Method::GET) => Ok(start(auth, &provider, ctx).await),
        ("callback", &::http::Method::GET) => {
            Ok(callback(auth, &provider, req.headers(), ctx).await)
        }
        ("backchannel-logout", &::http::Method::POST) => {
            backchannel_logout(auth, &provider, req).await
        }
        ("start" | "callback" | "backchannel-logout", _) => Err(GatewayError::MethodNotAllowed),
        _ => Err(GatewayError::NotFound),
    }
}

/// The login page with a message, for a sign-in that could not finish.
fn failure_page(auth: &Auth, f: &Failure, next: &str, secure: bool) -> Response<Body> {
    let buttons = auth.oidc().buttons();
    let extra = crate::auth::passkey_pages::login_extra(auth, next);
    let page = LoginPage {
        title: &auth.browser().title,
        next,
        username: "",
        message: Some(f.message.clone()),
        providers: &buttons,
        password: auth.password_login(),
        extra: &extra,
    };
    pages::login(&page, f.status, secure)
}

fn expire_flow_cookie(h: &mut HeaderMap, secure: bool) {
    let c = cookies::set_cookie(state::cookie_name(secure), "", 0, true, secure);
    if let Ok(v) = HeaderValue::from_str(&c) {
        h.append(SET_COOKIE, v);
    }
}

/// The callback URL the provider sends the browser back to.
fn redirect_uri(auth: &Auth, p: &Provider, ctx: &Ctx<'_>) -> Option<String> {
    if let Some(u) = &p.cfg.redirect_url {
        return Some(u.clone());
    }
    let origin = match &auth.browser().public_origin {
        Some(o) => o.clone(),
        None => crate::origin::own_origin(ctx.secure, ctx.host?)?,
    };
    Some(format!("{origin}/auth/oidc/{}/callback", p.cfg.name))
}

fn url_with(base: &str, params: &[(&str, &str)]) -> String {
    let query = serde_urlencoded::to_string(params).unwrap_or_default();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{query}")
}

/// `GET /auth/oidc/<name>/start?next=`: the flow cookie, and a 302 to the provider.
async fn start(auth: &Auth, p: &Provider, ctx: &Ctx<'_>) -> Response<Body> {
    let next = ctx
        .query
        .and_then(|q| field(q.as_bytes(), "next"))
        .filter(|n| safe_next(n).is_some())
        .unwrap_or_else(|| auth.browser().default_next.clone());
    let metrics = auth.sessions().metrics();
    let discovered = match p.discover().await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(provider = %p.cfg.name, error = %e, "sign-in: identity provider unreachable");
            metrics.login_by(LoginMethod::oidc, LoginOutcome::unavailable);
            let f = Failure::new(
                StatusCode::BAD_GATEWAY,
                LoginOutcome::unavailable,
                format!(
                    "{} cannot be reached right now. Try again in a minute.",
                    p.cfg.display_name
                ),
            );
            return failure_page(auth, &f, &next, ctx.secure);
        }
    };
    let Some(redirect_uri) = redirect_uri(auth, p, ctx) else {
        return GatewayError::BadRequest("the request names no host".to_owned()).into_response();
    };
    let ids = (
        crate::ids::random_id(),
        crate::ids::random_id(),
        state::pkce(),
    );
    let (Ok(state), Ok(nonce), Ok((verifier, challenge))) = ids else {
        return GatewayError::Internal("the random number generator failed".to_owned())
            .into_response();
    };
    let scope = p.cfg.scopes.join(" ");
    let location = url_with(
        &discovered.meta.authorization_endpoint,
        &[
            ("response_type", "code"),
            ("client_id", &p.cfg.client_id),
            ("redirect_uri", &redirect_uri),
            ("scope", &scope),
            ("state", &state),
            ("nonce", &nonce),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    );
    let flow = Flow {
        p: p.cfg.name.clone(),
        state,
        nonce,
        verifier,
        next,
        redirect_uri,
        exp: now_secs() + FLOW_TTL,
    };
    let sealed = auth.oidc().flow_key.seal(&flow);
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::FOUND;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(LOCATION, v);
    }
    let c = cookies::set_cookie(
        state::cookie_name(ctx.secure),
        &sealed,
        FLOW_TTL,
        true,
        ctx.secure,
    );
    if let Ok(v) = HeaderValue::from_str(&c) {
        h.append(SET_COOKIE, v);
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `GET /auth/oidc/<name>/callback?code&state`: checks, code exchange, ID token, session.
async fn callback(auth: &Auth, p: &Provider, headers: &HeaderMap, ctx: &Ctx<'_>) -> Response<Body> {
    let flow = cookies::get(headers, state::cookie_name(ctx.secure))
        .and_then(|c| auth.oidc().flow_key.open(c, now_secs()))
        .filter(|f| f.p == p.cfg.name);
    let next = flow
        .as_ref()
        .map_or_else(|| auth.browser().default_next.clone(), |f| f.next.clone());
    let result = match &flow {
        Some(flow) => finish(auth, p, flow, headers, ctx).await,
        None => Err(Failure::new(
            StatusCode::BAD_REQUEST,
            LoginOutcome::invalid_state,
            "This sign-in was not started in this browser, has expired or was already used. Start again.",
        )),
    };
    let metrics = auth.sessions().metrics();
    let mut resp = match result {
        Ok(pair) => {
            metrics.login_by(LoginMethod::oidc, LoginOutcome::ok);
            crate::audit!(
                "oidc_login_ok",
                user = %pair.access.claims.sub(),
                provider = %p.cfg.name,
                sid = %pair.access.claims.sid(),
                ip = %ctx.client_ip,
                user_agent = %crate::audit::user_agent(headers)
            );
            let mut resp = see_other(&next);
            cookies::set_session(resp.headers_mut(), &pair.cookies(), ctx.secure);
            resp
        }
        Err(f) => {
            metrics.login_by(LoginMethod::oidc, f.outcome);
            crate::audit!(
                "oidc_login_refused",
                provider = %p.cfg.name,
                outcome = ?f.outcome,
                ip = %ctx.client_ip,
                user_agent = %crate::audit::user_agent(headers)
            );
            failure_page(auth, &f, &next, ctx.secure)
        }
    };
    expire_flow_cookie(resp.headers_mut(), ctx.secure);
    resp
}

/// The callback's work once the flow cookie is known.
async fn finish(
    auth: &Auth,
    p: &Provider,
    flow: &Flow,
    headers: &HeaderMap,
    ctx: &Ctx<'_>,
) -> Result<super::sessions::Pair, Failure> {
    let q = ctx.query.unwrap_or("").as_bytes();
    let bad_state = || {
        Failure::new(
            StatusCode::BAD_REQUEST,
            LoginOutcome::invalid_state,
            "This sign-in does not match the one this browser started. Start again.",
        )
    };
    let given_state = field(q, "state").ok_or_else(bad_state)?;
    if !super::csrf::matches(Some(&given_state), &flow.state) {
        return Err(bad_state());
    }
    let discovered = p.discover().await.map_err(|e| {
        tracing::warn!(provider = %p.cfg.name, error = %e, "sign-in: identity provider unreachable");
        Failure::new(
            StatusCode::BAD_GATEWAY,
            LoginOutcome::unavailable,
            format!("{} cannot be reached right now. Try again in a minute.", p.cfg.display_name),
        )
    })?;
    // RFC 9207: the response names its issuer; a mix-up attack sends another's.
    match field(q, "iss") {
        Some(iss) if iss != p.cfg.issuer => {
            tracing::warn!(provider = %p.cfg.name, "sign-in: the authorization response names another issuer");
            return Err(Failure::new(
                StatusCode::BAD_REQUEST,
                LoginOutcome::invalid_state,
                "This sign-in answer came from another identity provider. Start again.",
            ));
        }
        None if discovered
            .meta
            .authorization_response_iss_parameter_supported =>
        {
            return Err(Failure::new(
                StatusCode::BAD_REQUEST,
                LoginOutcome::invalid_state,
                "This sign-in answer does not name its identity provider. Start again.",
            ));
        }
        _ => {}
    }
    if let Some(error) = field(q, "error") {
        // Logged, not shown: the description is the provider's (or an attacker's) text.
        let code: String = error
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        tracing::info!(provider = %p.cfg.name, error = %code, "sign-in refused at the identity provider");
        let sentence = if code == "access_denied" {
            format!(
                "Sign-in at {} was cancelled or refused.",
                p.cfg.display_name
            )
        } else {
            format!("{} could not sign you in. Try again.", p.cfg.display_name)
        };
        return Err(Failure::new(
            StatusCode::FORBIDDEN,
            LoginOutcome::refused,
            sentence,
        ));
    }
    let code = field(q, "code").ok_or_else(bad_state)?;
    // One use per state on every replica: a replayed callback URL is refused here, before
    // the provider is asked (which would refuse the code too).
    let sessions = auth.sessions();
    let first = sessions
        .store()
        .mark_once(
            &format!("oidc-state:{}", flow.state),
            Duration::from_secs(FLOW_TTL + 60),
        )
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "sign-in: the revocation store is unavailable");
            Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                LoginOutcome::unavailable,
                "Sign-in is unavailable right now. Try again in a minute.",
            )
        })?;
    if !first {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            LoginOutcome::invalid_state,
            "This sign-in was already used. Start again.",
        ));
    }
    let id_token = exchange(p, &discovered.meta, &code, flow).await?;
    let expect = Expect {
        issuer: &p.cfg.issuer,
        client_id: &p.cfg.client_id,
        leeway: sessions.policy().leeway.as_secs(),
    };
    let claims = id_token::verify_id_token(p, &id_token, &expect, &flow.nonce)
        .await
        .map_err(|e| {
            tracing::warn!(provider = %p.cfg.name, reason = %e, "sign-in: ID token refused");
            Failure::new(
                StatusCode::UNAUTHORIZED,
                LoginOutcome::invalid_token,
                format!(
                    "The answer of {} could not be verified. Try again.",
                    p.cfg.display_name
                ),
            )
        })?;
    let who = identify(auth, p, &claims).await?;
    let amr: Option<Vec<String>> = claims.get("amr").and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(Value::as_str)
            .filter(|s| s.len() <= 32 && s.bytes().all(|b| b.is_ascii_graphic() && b != b','))
            .take(8)
            .map(str::to_owned)
            .collect()
    });
    let principal = Principal {
        name: &who.name,
        roles: &who.roles,
        via: Via {
            idp: Some(&p.cfg.name),
            amr: amr.as_deref(),
        },
    };
    let from = SignIn::of(ctx.client_ip, headers);
    let pair = sessions.start_from(&principal, &from).await.map_err(|e| {
        tracing::warn!(error = %e, "sign-in: the session could not start");
        Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            LoginOutcome::unavailable,
            "Sign-in is unavailable right now. Try again in a minute.",
        )
    })?;
    // For back-channel logout: the provider's session and user -> this session.
    let member = format!("{}\t{}", who.name, pair.access.claims.sid());
    let ttl = sessions.policy().revocation_ttl();
    let store = sessions.store();
    let psub = claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut links = vec![link_key(&p.cfg.name, "sub", psub)];
    if let Some(psid) = claims.get("sid").and_then(Value::as_str) {
        links.push(link_key(&p.cfg.name, "sid", psid));
    }
    for key in links {
        if let Err(e) = store.link(&key, &member, ttl).await {
            tracing::warn!(error = %e, "sign-in: back-channel logout will not find this session (store unavailable)");
        }
    }
    tracing::info!(user = %who.name, provider = %p.cfg.name, ip = %ctx.client_ip, "login (oidc)");
    Ok(pair)
}

fn link_key(provider: &str, kind: &str, value: &str) -> String {
    format!("oidc:{provider}:{kind}:{value}")
}

/// The code for tokens at the token endpoint; the ID token.
async fn exchange(
    p: &Provider,
    meta: &provider::Metadata,
    code: &str,
    flow: &Flow,
) -> Result<String, Failure> {
    let mut form: Vec<(&str, &str)> = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", &flow.redirect_uri),
        ("code_verifier", &flow.verifier),
    ];
    let secret = p.cfg.client_secret.as_deref();
    // client_secret_basic unless the provider lists only client_secret_post.
    let post_only = meta
        .token_endpoint_auth_methods_supported
        .as_ref()
        .is_some_and(|m| {
            m.iter().any(|x| x == "client_secret_post")
                && !m.iter().any(|x| x == "client_secret_basic")
        });
    let basic = match secret {
        Some(s) if !post_only => Some((p.cfg.client_id.as_str(), s)),
        Some(s) => {
            form.push(("client_id", &p.cfg.client_id));
            form.push(("client_secret", s));
            None
        }
        None => {
            form.push(("client_id", &p.cfg.client_id));
            None
        }
    };
    let answer = p
        .client()
        .post_form(&meta.token_endpoint, &form, basic)
        .await
        .map_err(|e| {
            tracing::warn!(provider = %p.cfg.name, error = %e, "sign-in: token endpoint unreachable");
            Failure::new(
                StatusCode::BAD_GATEWAY,
                LoginOutcome::unavailable,
                format!("{} cannot be reached right now. Try again in a minute.", p.cfg.display_name),
            )
        })?;
    let body: Map<String, Value> = serde_json::from_slice(&answer.body).unwrap_or_default();
    if !answer.status.is_success() {
        let error = body.get("error").and_then(Value::as_str).unwrap_or("?");
        let error: String = error
            .chars()
            .filter(char::is_ascii_graphic)
            .take(64)
            .collect();
        tracing::warn!(provider = %p.cfg.name, status = answer.status.as_u16(), error = %error, "sign-in: the code was refused at the token endpoint");
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            LoginOutcome::invalid_token,
            format!(
                "{} refused to complete this sign-in (it may have been used already). Start again.",
                p.cfg.display_name
            ),
        ));
    }
    match body.get("id_token").and_then(Value::as_str) {
        Some(t) => Ok(t.to_owned()),
        None => {
            tracing::warn!(provider = %p.cfg.name, "sign-in: the token answer holds no id_token (is \"openid\" among the client's scopes?)");
            Err(Failure::new(
                StatusCode::BAD_GATEWAY,
                LoginOutcome::invalid_token,
                format!(
                    "The answer of {} could not be verified. Try again.",
                    p.cfg.display_name
                ),
            ))
        }
    }
}

/// The user a provider's claims name, and their roles.
struct Who {
    name: String,
    roles: Vec<String>,
}

/// What may travel in an identity header: visible ASCII, no comma.
fn header_safe(s: &str) -> bool {
    s.len() <= 256 && super::tokens::header_safe(s)
}

async fn identify(auth: &Auth, p: &Provider, claims: &Map<String, Value>) -> Result<Who, Failure> {
    let cfg = &p.cfg;
    let refuse =
        |message: String| Failure::new(StatusCode::FORBIDDEN, LoginOutcome::refused, message);
    let name = match claims.get(&cfg.username_claim) {
        Some(Value::String(s)) if header_safe(s) => s.clone(),
        Some(_) => {
            tracing::warn!(provider = %cfg.name, claim = %cfg.username_claim, "sign-in: the user name claim is not header-safe text");
            return Err(refuse(format!(
                "Your account name at {} cannot be used here. Ask an administrator.",
                cfg.display_name
            )));
        }
        None => {
            tracing::warn!(provider = %cfg.name, claim = %cfg.username_claim, "sign-in: the ID token has no user name claim (username_claim)");
            return Err(refuse(format!(
                "{} did not say who you are. Ask an administrator.",
                cfg.display_name
            )));
        }
    };
    if !cfg.allowed_email_domains.is_empty() {
        let email = claims.get("email").and_then(Value::as_str).unwrap_or("");
        let verified = matches!(claims.get("email_verified"), Some(Value::Bool(true)))
            || matches!(claims.get("email_verified"), Some(Value::String(s)) if s == "true");
        let domain = email
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase())
            .unwrap_or_default();
        if !verified || !cfg.allowed_email_domains.contains(&domain) {
            tracing::info!(provider = %cfg.name, user = %name, verified, "sign-in refused: email domain not allowed or not verified");
            return Err(refuse(
                "Your account's email address is not verified or not in an allowed domain."
                    .to_owned(),
            ));
        }
    }
    let mut roles: Vec<String> = cfg.default_roles.clone();
    if let Some(claim) = &cfg.roles_claim {
        let values: Vec<&str> = match claims.get(claim) {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        for v in values {
            for r in cfg.role_map.get(v).into_iter().flatten() {
                if !roles.contains(r) {
                    roles.push(r.clone());
                }
            }
        }
    }
    if cfg.users == OidcUsers::Known {
        let user = auth.sessions().users().get(&name).await.map_err(|_| {
            Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                LoginOutcome::unavailable,
                "Sign-in is unavailable right now. Try again in a minute.",
            )
        })?;
        let Some(user) = user else {
            tracing::info!(provider = %cfg.name, user = %name, "sign-in refused: not a known user (users = \"known\")");
            return Err(refuse(format!(
                "{name} has no account here. Ask an administrator."
            )));
        };
        for r in user.roles {
            if !roles.contains(&r) {
                roles.push(r);
            }
        }
    }
    Ok(Who { name, roles })
}

/// `POST /auth/oidc/<name>/backchannel-logout` with `logout_token`: ends the sessions the
/// provider's session (`sid`) or user (`sub`) started here.
async fn backchannel_logout(
    auth: &Auth,
    p: &Provider,
    req: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    let (_, body) = read_body(req, auth.body_limits()).await?;
    let bad = |description: &str| {
        json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": "invalid_request", "error_description": description}),
        )
    };
    let Some(token) = field(&body, "logout_token") else {
        return Ok(bad("logout_token is required"));
    };
    if p.discover().await.is_err() {
        return Err(GatewayError::Unavailable(
            "the identity provider is unreachable",
        ));
    }
    let sessions = auth.sessions();
    let expect = Expect {
        issuer: &p.cfg.issuer,
        client_id: &p.cfg.client_id,
        leeway: sessions.policy().leeway.as_secs(),
    };
    let target = match id_token::verify_logout_token(p, &token, &expect).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(provider = %p.cfg.name, reason = %e, "back-channel logout token refused");
            return Ok(bad(match e {
                IdTokenError::NotLogout => "not a logout token",
                _ => "the logout token is not valid",
            }));
        }
    };
    let window = Duration::from_secs(id_token::LOGOUT_TOKEN_MAX_AGE + expect.leeway + 60);
    let first = sessions
        .store()
        .mark_once(&format!("oidc-bcl:{}:{}", p.cfg.name, target.jti), window)
        .await?;
    if !first {
        return Ok(bad("this logout token was already used"));
    }
    let key = match (&target.sid, &target.sub) {
        (Some(sid), _) => link_key(&p.cfg.name, "sid", sid),
        (None, Some(sub)) => link_key(&p.cfg.name, "sub", sub),
        (None, None) => return Ok(bad("the logout token names no session or user")),
    };
    let members = sessions.store().linked(&key).await?;
    let mut ended = 0;
    for m in &members {
        if let Some((user, sid)) = m.split_once('\t') {
            sessions.end_session(user, sid).await?;
            ended += 1;
        }
    }
    tracing::info!(provider = %p.cfg.name, sessions = ended, by_sid = target.sid.is_some(), "back-channel logout");
    crate::audit!("backchannel_logout", provider = %p.cfg.name, sessions = ended);
    let mut resp = Response::new(empty());
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// Where a logout continues when the session's provider asks for it (`logout_at_provider`):
/// its end-session endpoint, coming back to `after_logout`.
pub fn end_session_url(auth: &Auth, idp: &str, ctx: &Ctx<'_>) -> Option<String> {
    let p = auth.oidc().get(idp)?;
    if !p.cfg.logout_at_provider {
        return None;
    }
    let d = p.discovered()?;
    let endpoint = d.meta.end_session_endpoint.as_deref()?;
    let origin = match &auth.browser().public_origin {
        Some(o) => Some(o.clone()),
        None => ctx
            .host
            .and_then(|h| crate::origin::own_origin(ctx.secure, h)),
    };
    let mut params = vec![("client_id", p.cfg.client_id.clone())];
    if let Some(o) = origin {
        params.push((
            "post_logout_redirect_uri",
            format!("{o}{}", auth.browser().after_logout),
        ));
    }
    let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Some(url_with(endpoint, &params))
}
