//! Passkeys over HTTP: the script the pages load (`/auth/assets/webauthn.js`), adding and
//! removing passkeys on the account page (`/auth/account/passkeys...`), and signing in
//! with one (`/auth/login/webauthn/options`, `/auth/login/webauthn`), as the second step
//! (with the `mfa_token`) or alone (`login.passwordless`). JSON in, JSON out; a browser's
//! sign-in also gets the session cookies and where to go on to.

use super::cookies::{self, safe_next};
use super::endpoints::{json, read_body, token_json, Ctx};
use super::form::{field, is_form};
use super::login::{same_origin, see_other};
use super::pages::escape;
use super::sessions::SignIn;
use super::{Auth, Identity};
use crate::body::{full, Body};
use crate::clock::utc_text;
use crate::error::GatewayError;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};

const SCRIPT: &str = include_str!("assets/webauthn.js");

pub fn is_passkey_path(path: &str) -> bool {
    path == "/auth/assets/webauthn.js"
        || path.starts_with("/auth/account/passkeys")
        || path.starts_with("/auth/login/webauthn")
}

pub async fn handle(
    auth: &Auth,
    req: Request<Incoming>,
    path: &str,
    ctx: &Ctx<'_>,
) -> Result<Response<Body>, GatewayError> {
    if auth.sessions().factors().webauthn().is_none() {
        return Err(GatewayError::NotFound);
    }
    match (path, req.method()) {
        ("/auth/assets/webauthn.js", &Method::GET) => Ok(script()),
        ("/auth/account/passkeys/options", &Method::POST) => register_options(auth, req, ctx).await,
        ("/auth/account/passkeys", &Method::POST) => register(auth, req, ctx).await,
        ("/auth/account/passkeys/remove", &Method::POST) => remove(auth, req, ctx).await,
        ("/auth/login/webauthn/options", &Method::POST) => login_options(auth, req, ctx).await,
        ("/auth/login/webauthn", &Method::POST) => login(auth, req, ctx).await,
        (
            "/auth/assets/webauthn.js"
            | "/auth/account/passkeys/options"
            | "/auth/account/passkeys"
            | "/auth/account/passkeys/remove"
            | "/auth/login/webauthn/options"
            | "/auth/login/webauthn",
            _,
        ) => Err(GatewayError::MethodNotAllowed),
        _ => Err(GatewayError::NotFound),
    }
}

fn script() -> Response<Body> {
    let mut resp = Response::new(full(SCRIPT));
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, GatewayError> {
    if body.is_empty() {
        return serde_json::from_slice(b"{}")
            .map_err(|_| GatewayError::BadRequest(format!("the body must be JSON {what}")));
    }
    serde_json::from_slice(body)
        .map_err(|_| GatewayError::BadRequest(format!("the body must be JSON {what}")))
}

/// The signed-in password user (cookie callers CSRF-checked) and their record; adding a
/// passkey to an account that has a factor needs a session that gave one.
async fn account_user(
    auth: &Auth,
    headers: &HeaderMap,
    body: &[u8],
    ctx: &Ctx<'_>,
) -> Result<(Identity, crate::store::users::User), GatewayError> {
    let id = auth.authenticate(headers, ctx.secure).await?;
    if id.via_cookie {
        let form = is_form(headers).then_some(body);
        super::sessions_page::csrf_or_origin(auth, &id, headers, form, ctx)?;
    }
    if id.claims.idp().is_some() {
        return Err(GatewayError::Forbidden(
            "second factors of identity-provider users are the provider's",
        ));
    }
    let user = auth
        .sessions()
        .user(id.claims.sub())
        .await?
        .ok_or(GatewayError::InvalidToken(
            crate::auth::tokens::TokenError::UserGone,
        ))?;
    Ok((id, user))
}

async fn register_options(
    auth: &Auth,
    req: Request<Incoming>,
    ctx: &Ctx<'_>,
) -> Result<Response<Body>, GatewayError> {
    let (headers, body) = read_body(req, auth.body_limits()).await?;
    let (id, user) = account_user(auth, &headers, &body, ctx).await?;
    if user.has_factor() && !id.passed_second_factor() {
        return Err(GatewayError::SecondFactorRequired);
    }
    let (options, state) = auth.sessions().passkey_register_options(&user).await?;
    Ok(json(
        StatusCode::OK,
        serde_json::json!({ "options": options, "state": state }),
    ))
}

#[derive(Deserialize)]
struct RegisterBody {
    state: String,
    credential: RegisterPublicKeyCredential,
    #[serde(default)]
    name: String,
}

async fn register(
    auth: &Auth,
    req: Request<Incoming>,
    ctx: &Ctx<'_>,
) -> Result<Response<Body>, GatewayError> {
    let (headers, body) = read_body(req, auth.body_limits()).await?;
    let (id, user) = account_user(auth, &headers, &body, ctx).await?;
    if user.has_factor() && !id.passed_second_factor() {
        return Err(GatewayError::SecondFactorRequired);
    }
    let b: RegisterBody = parse(&body, "{\"state\", \"credential\", \"name\"}")?;
    auth.sessions()
        .passkey_register(&user.name, &b.state, &b.credential, &b.name)
        .await?;
    Ok(json(StatusCode::OK, serde_json::json!({ "passkey": true })))
}

async fn remove(
    auth: &Auth,
    req: Request<Incoming>,
    ctx: &Ctx<'_>,
) -> Result<Response<Body>, GatewayError> {
    let (headers, body) = read_body(req, auth.body_limits()).await?;
    let (id, user) = account_user(auth, &headers, &body, ctx).await?;
    if !id.passed_second_factor() {
        return Err(GatewayError::SecondFactorRequired);
    }
    let form = is_form(&headers);
    let which = if form {
        field(&body, "id")
    } else {
        serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("id")?.as_str().map(str::to_owned))
    }
    .ok_or_else(|| GatewayError::BadRequest("id is required".to_owned()))?;
    if !auth.sessions().remove_passkey(&user.name, &which).await? {
        return Err(GatewayError::NotFound);
    }
    if form {
        return Ok(see_other("/auth/account"));
    }
    Ok(json(
        StatusCode::OK,
        serde_json::json!({ "removed": which }),
    ))
}

#[derive(Deserialize)]
struct OptionsBody {
    #[serde(default)]
    mfa_token: Option<String>,
}

async fn login_options(
    auth: &Auth,
    req: Request<Incoming>,
    ctx: &Ctx<'_>,
) -> Result<Response<Body>, GatewayError> {
    let (headers, body) = read_body(req, auth.body_limits()).await?;
    same_origin(&headers, ctx)?;
    let b: OptionsBody = parse(&body, "{\"mfa_token\"} (or {} for a passwordless sign-in)")?;
    let (options, state) = auth
        .sessions()
        .passkey_login_options(b.mfa_token.as_deref())
        .await?;
    Ok(json(
        StatusCode::OK,
        serde_json::json!({ "options": options, "state": state }),
    ))
}

#[derive(Deserialize)]
struct LoginBody {
    state: String,
    credential: PublicKeyCredential,
    /// Set the session cookies and answer where to go on to (the gateway's own page).
    #[serde(default)]
    browser: bool,
    #[serde(default)]
    next: Option<String>,
}

async fn login(
    auth: &Auth,
    req: Request<Incoming>,
    ctx: &Ctx<'_>,
) -> Result<Response<Body>, GatewayError> {
    let (headers, body) = read_body(req, auth.body_limits()).await?;
    same_origin(&headers, ctx)?;
    let b: LoginBody = parse(&body, "{\"state\", \"credential\"}")?;
    let from = SignIn::of(ctx.client_ip, &headers);
    let result = auth
        .sessions()
        .passkey_login(&b.state, &b.credential, &from)
        .await;
    let ua = crate::audit::user_agent(&headers);
    match &result {
        Ok((user, pair)) => crate::audit!(
            "login_ok",
            user = %user,
            ip = %ctx.client_ip,
            sid = %pair.access.claims.sid(),
            method = "passkey",
            user_agent = %ua
        ),
        Err(GatewayError::InvalidPasskey) => crate::audit!(
            "second_factor_failed",
            ip = %ctx.client_ip,
            method = "passkey",
            user_agent = %ua
        ),
        Err(_) => {}
    }
    let (_, pair) = result?;
    if !b.browser {
        return Ok(json(StatusCode::OK, token_json(&pair)));
    }
    let next = b
        .next
        .as_deref()
        .and_then(safe_next)
        .unwrap_or(&auth.browser().default_next)
        .to_owned();
    let mut resp = json(StatusCode::OK, serde_json::json!({ "next": next }));
    cookies::set_session(resp.headers_mut(), &pair.cookies(), ctx.secure);
    Ok(resp)
}

/// The account page's passkey section: the passkeys, a remove button each (for a session
/// that gave a factor), and the "Add a passkey" button.
pub fn account_section(
    passkeys: &[crate::auth::factors::passkeys::StoredPasskey],
    csrf: &str,
    can_change: bool,
) -> String {
    let csrf = escape(csrf);
    let mut out = String::from("<h2>Passkeys</h2>\n");
    if passkeys.is_empty() {
        out.push_str("<p>No passkeys yet.</p>\n");
    } else {
        out.push_str("<ul id=\"passkeys\">\n");
        for p in passkeys {
            let remove = if can_change {
                format!(
                    "<form method=\"post\" action=\"/auth/account/passkeys/remove\"><input type=\"hidden\" name=\"csrf_token\" value=\"{csrf}\"><input type=\"hidden\" name=\"id\" value=\"{id}\"><button type=\"submit\">Remove {name}</button></form>",
                    id = escape(&p.id),
                    name = escape(&p.name)
                )
            } else {
                String::new()
            };
            out.push_str(&format!(
                "<li><strong>{name}</strong>, added {when}{remove}</li>\n",
                name = escape(&p.name),
                when = escape(&utc_text(p.created)),
            ));
        }
        out.push_str("</ul>\n");
    }
    if can_change || passkeys.is_empty() {
        out.push_str(&format!(
            "<label for=\"passkey-name\">Name for a new passkey</label><input id=\"passkey-name\" maxlength=\"64\" autocomplete=\"off\">\n\
             <button type=\"button\" id=\"add-passkey\" data-csrf=\"{csrf}\">Add a passkey</button>\n\
             <p id=\"passkey-status\" role=\"status\"></p>\n<script src=\"/auth/assets/webauthn.js\"></script>\n"
        ));
    }
    out
}

/// The second-step page's passkey button.
pub fn use_button(mfa_token: &str, next: &str) -> String {
    format!(
        "<button type=\"button\" id=\"use-passkey\" data-mfa-token=\"{t}\" data-next=\"{n}\">Use a passkey</button>\n<p id=\"passkey-status\" role=\"status\"></p>\n<script src=\"/auth/assets/webauthn.js\"></script>\n",
        t = escape(mfa_token),
        n = escape(next)
    )
}

/// What the login page shows besides its form: the passwordless button, when it is on.
pub fn login_extra(auth: &Auth, next: &str) -> String {
    if auth.sessions().factors().passwordless() {
        sign_in_button(next)
    } else {
        String::new()
    }
}

/// The login page's passwordless button.
pub fn sign_in_button(next: &str) -> String {
    format!(
        "<button type=\"button\" id=\"passkey-sign-in\" data-next=\"{n}\">Sign in with a passkey</button>\n<p id=\"passkey-status\" role=\"status\"></p>\n<script src=\"/auth/assets/webauthn.js\"></script>\n",
        n = escape(next)
    )
}
