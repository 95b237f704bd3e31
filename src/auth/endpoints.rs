//! The gateway's own endpoints: `/auth/login`, `/auth/refresh`, `/auth/logout`, `/auth/me`,
//! `/auth/register`, `/auth/sessions` (its own module) and `/.well-known/jwks.json`. HTTP parsing and responses only: every
//! decision about sessions is `Sessions`'.

use super::cookies;
use super::form::{is_form, read_limited, BodyLimits};
use super::passwords::MAX_PASSWORD_BYTES;
use super::sessions::Pair;
use super::Auth;
use super::{login, logout};
use crate::body::{full, Body};
use crate::clock::now_secs;
use crate::error::GatewayError;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use std::net::IpAddr;

/// Facts about the request the endpoints need besides the request itself.
pub struct Ctx<'a> {
    pub client_ip: IpAddr,
    /// Over TLS, directly or as a trusted proxy says (`X-Forwarded-Proto: https`).
    pub secure: bool,
    pub query: Option<&'a str>,
    /// The checked host the request is for (for same-origin checks).
    pub host: Option<&'a str>,
}

/// True for paths the gateway answers itself.
pub fn is_own(path: &str) -> bool {
    path == "/auth" || path.starts_with("/auth/") || path == "/.well-known/jwks.json"
}

pub async fn handle(
    auth: &Auth,
    req: Request<Incoming>,
    path: &str,
    ctx: Ctx<'_>,
) -> Result<Response<Body>, GatewayError> {
    let method = req.method().clone();
    let path = path.trim_end_matches('/');
    if let Some(rest) = path.strip_prefix("/auth/oidc/") {
        return super::oidc::handle(auth, req, rest, &ctx).await;
    }
    if super::sessions_page::is_sessions_path(path) {
        return super::sessions_page::handle(auth, req, path, &ctx).await;
    }
    if super::passkey_pages::is_passkey_path(path) {
        return super::passkey_pages::handle(auth, req, path, &ctx).await;
    }
    if super::account::is_account_path(path) {
        return super::account::handle(auth, req, path, &ctx).await;
    }
    match (path, &method) {
        ("/auth/login", &Method::GET) => login::page(auth, req.headers(), &ctx).await,
        ("/auth/login", &Method::POST) => login::submit(auth, req, &ctx).await,
        ("/auth/login/totp", &Method::POST) => super::second_step::submit(auth, req, &ctx).await,
        ("/auth/refresh", &Method::POST) => refresh(auth, req, ctx).await,
        ("/auth/refresh", &Method::GET) => {
            login::refresh_and_return(auth, req.headers(), &ctx).await
        }
        ("/auth/logout", &Method::GET) => logout::page(auth, req.headers(), &ctx).await,
        ("/auth/logout", &Method::POST) => logout::submit(auth, req, &ctx).await,
        ("/auth/me", &Method::GET) => me(auth, req.headers(), ctx.secure).await,
        ("/auth/register", &Method::POST) => register(auth, req).await,
        ("/.well-known/jwks.json", &Method::GET) => jwks(auth),
        (
            "/auth/login"
            | "/auth/login/totp"
            | "/auth/refresh"
            | "/auth/logout"
            | "/auth/me"
            | "/auth/register"
            | "/.well-known/jwks.json",
            _,
        ) => Err(GatewayError::MethodNotAllowed),
        _ => Err(GatewayError::NotFound),
    }
}

pub(super) fn json(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    resp
}

/// Reads a body within the gateway's limits.
pub(super) async fn read_body(
    req: Request<Incoming>,
    limits: BodyLimits,
) -> Result<(HeaderMap, bytes::Bytes), GatewayError> {
    let (parts, body) = req.into_parts();
    Ok((parts.headers, read_limited(body, limits).await?))
}

#[derive(Deserialize)]
pub(super) struct Credentials {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub next: Option<String>,
}

pub(super) fn parse_credentials(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Credentials, bool), GatewayError> {
    let form = is_form(headers);
    let creds: Credentials = if form {
        serde_urlencoded::from_bytes(body).map_err(|_| {
            GatewayError::BadRequest("the form needs username and password".to_owned())
        })?
    } else {
        serde_json::from_slice(body).map_err(|_| {
            GatewayError::BadRequest(
                "the body must be JSON {\"username\", \"password\"}".to_owned(),
            )
        })?
    };
    if creds.username.is_empty() || creds.password.is_empty() {
        return Err(GatewayError::BadRequest(
            "username and password are required".to_owned(),
        ));
    }
    if creds.password.len() > MAX_PASSWORD_BYTES || creds.username.len() > 256 {
        return Err(GatewayError::BadRequest(
            "username or password too long".to_owned(),
        ));
    }
    Ok((creds, form))
}

/// The token JSON (without `refresh_token` when the client keeps its old one), plus the
/// session cookies for browser logins and refreshes.
pub(super) fn token_response(pair: &Pair) -> Response<Body> {
    json(StatusCode::OK, token_json(pair))
}

/// The token JSON of `pair`.
pub(super) fn token_json(pair: &Pair) -> serde_json::Value {
    let now = now_secs();
    let mut body = serde_json::json!({
        "access_token": pair.access.token,
        "token_type": "Bearer",
        "expires_in": pair.access.claims.exp.saturating_sub(now),
        "refresh_expires_in": pair.session_exp.saturating_sub(now),
    });
    if pair.refresh_is_new {
        body["refresh_token"] = serde_json::Value::from(pair.refresh.as_str());
    }
    body
}

#[derive(Deserialize)]
struct RefreshBody {
    refresh_token: String,
}

async fn refresh(
    auth: &Auth,
    req: Request<Incoming>,
    ctx: Ctx<'_>,
) -> Result<Response<Body>, GatewayError> {
    let (headers, body) = read_body(req, auth.body_limits()).await?;
    let (token, from_cookie) = match super::request_token(&headers, ctx.secure) {
        Some((t, false)) => (t.to_owned(), false),
        _ if !body.is_empty() => {
            let b: RefreshBody = serde_json::from_slice(&body).map_err(|_| {
                GatewayError::BadRequest("the body must be JSON {\"refresh_token\"}".to_owned())
            })?;
            (b.refresh_token, false)
        }
        _ => match cookies::get(&headers, cookies::names(ctx.secure).refresh) {
            Some(t) => (t.to_owned(), true),
            None => return Err(GatewayError::MissingToken),
        },
    };
    if from_cookie && super::logout::origin_rule(auth, &headers, &ctx).is_err() {
        // Cross-site by the origin rule: only the session's CSRF token lets it through.
        let refresh = auth
            .sessions()
            .tokens()
            .verify(&token, super::tokens::TokenType::Refresh)
            .map_err(GatewayError::InvalidToken)?;
        let expected = auth.sessions().csrf_for(refresh.sid());
        if !super::csrf::matches(super::csrf::header_value(&headers), &expected) {
            return Err(GatewayError::Csrf);
        }
    }
    let pair = auth.sessions().refresh(&token).await?;
    if !from_cookie {
        return Ok(token_response(&pair));
    }
    // A browser's session: new cookies, and no token in the body.
    let mut resp = Response::new(crate::body::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    cookies::set_session(resp.headers_mut(), &pair.cookies(), ctx.secure);
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    Ok(resp)
}

async fn me(
    auth: &Auth,
    headers: &HeaderMap,
    secure: bool,
) -> Result<Response<Body>, GatewayError> {
    let id = auth.authenticate(headers, secure).await?;
    let mut body = serde_json::json!({ "sub": id.claims.sub(), "roles": id.roles(), "exp": id.claims.exp, "sid": id.claims.sid() });
    if let Some(idp) = id.claims.idp() {
        body["idp"] = serde_json::Value::from(idp);
    }
    if let Some(amr) = id.claims.amr() {
        body["amr"] = serde_json::Value::from(amr.to_vec());
    }
    Ok(json(StatusCode::OK, body))
}

async fn register(auth: &Auth, req: Request<Incoming>) -> Result<Response<Body>, GatewayError> {
    if !auth.registration() {
        return Err(GatewayError::NotFound);
    }
    let (headers, body) = read_body(req, auth.body_limits()).await?;
    let (creds, _) = parse_credentials(&headers, &body)?;
    let user = auth
        .sessions()
        .register(&creds.username, &creds.password)
        .await?
        .ok_or(GatewayError::Conflict("that user name is taken"))?;
    Ok(json(
        StatusCode::CREATED,
        serde_json::json!({ "sub": user.name, "roles": user.roles }),
    ))
}

fn jwks(auth: &Auth) -> Result<Response<Body>, GatewayError> {
    let doc = auth
        .sessions()
        .tokens()
        .jwks()
        .ok_or(GatewayError::NotFound)?;
    let mut resp = Response::new(full(doc.to_owned()));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    Ok(resp)
}
