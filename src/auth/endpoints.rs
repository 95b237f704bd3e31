//! The gateway's own endpoints: `/auth/login`, `/auth/refresh`, `/auth/logout`, `/auth/me`,
//! `/auth/register` and `/.well-known/jwks.json`. HTTP parsing and responses only: every
//! decision about sessions is `Sessions`'.

use super::cookies::{self, safe_next};
use super::form::{field, is_form, read_limited, BodyLimits};
use super::passwords::MAX_PASSWORD_BYTES;
use super::sessions::Pair;
use super::Auth;
use crate::body::{full, Body};
use crate::clock::now_secs;
use crate::error::GatewayError;
use http::header::{CONTENT_TYPE, LOCATION};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use std::net::IpAddr;

/// Facts about the request the endpoints need besides the request itself.
pub struct Ctx<'a> {
    pub client_ip: IpAddr,
    pub tls: bool,
    pub query: Option<&'a str>,
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
    match (path, &method) {
        ("/auth/login", &Method::GET) => Ok(login_page(ctx.query)),
        ("/auth/login", &Method::POST) => login(auth, req, ctx).await,
        ("/auth/refresh", &Method::POST) => refresh(auth, req, ctx).await,
        ("/auth/logout", &Method::POST) => logout(auth, req.headers(), ctx).await,
        ("/auth/me", &Method::GET) => me(auth, req.headers()).await,
        ("/auth/register", &Method::POST) => register(auth, req).await,
        ("/.well-known/jwks.json", &Method::GET) => jwks(auth),
        (
            "/auth/login"
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

fn json(status: StatusCode, value: serde_json::Value) -> Response<Body> {
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

/// Reads a body of at most `limit` bytes.
async fn read_body(
    req: Request<Incoming>,
    limits: BodyLimits,
) -> Result<(HeaderMap, bytes::Bytes), GatewayError> {
    let (parts, body) = req.into_parts();
    Ok((parts.headers, read_limited(body, limits).await?))
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
    #[serde(default)]
    next: Option<String>,
}

fn parse_credentials(
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

async fn login(
    auth: &Auth,
    req: Request<Incoming>,
    ctx: Ctx<'_>,
) -> Result<Response<Body>, GatewayError> {
    let (headers, body) = read_body(req, auth.body_limits()).await?;
    let (creds, form) = parse_credentials(&headers, &body)?;
    let pair = auth
        .sessions()
        .login(&creds.username, &creds.password, ctx.client_ip)
        .await?;
    let next = creds.next.as_deref().and_then(safe_next).map(str::to_owned);
    token_response(&pair, form, ctx.tls, next.as_deref())
}

/// The token JSON (without `refresh_token` when the client keeps its old one), plus the
/// session cookies for browser logins and refreshes.
fn token_response(
    pair: &Pair,
    cookies: bool,
    secure: bool,
    next: Option<&str>,
) -> Result<Response<Body>, GatewayError> {
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
    let mut resp = json(StatusCode::OK, body);
    if cookies {
        cookies::set_session(resp.headers_mut(), &pair.cookies(), secure, None)
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        if let Some(next) = next {
            *resp.status_mut() = StatusCode::SEE_OTHER;
            if let Ok(v) = HeaderValue::from_str(next) {
                resp.headers_mut().insert(LOCATION, v);
            }
        }
    }
    Ok(resp)
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
    let (token, from_cookie) = match super::request_token(&headers) {
        Some((t, false)) => (t.to_owned(), false),
        _ if !body.is_empty() => {
            let b: RefreshBody = serde_json::from_slice(&body).map_err(|_| {
                GatewayError::BadRequest("the body must be JSON {\"refresh_token\"}".to_owned())
            })?;
            (b.refresh_token, false)
        }
        _ => match cookies::get(&headers, cookies::REFRESH) {
            Some(t) => (t.to_owned(), true),
            None => return Err(GatewayError::MissingToken),
        },
    };
    let pair = auth.sessions().refresh(&token).await?;
    token_response(&pair, from_cookie, ctx.tls, None)
}

async fn logout(
    auth: &Auth,
    headers: &HeaderMap,
    ctx: Ctx<'_>,
) -> Result<Response<Body>, GatewayError> {
    let all = logout_all(ctx.query)?;
    let identity = auth.authenticate(headers).await?;
    auth.sessions().logout(&identity.claims, all).await?;
    let mut resp = Response::new(crate::body::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    cookies::clear_session(resp.headers_mut(), ctx.tls);
    Ok(resp)
}

/// `?all=true|1|yes` (any case) logs out every session; absent, this one; anything else is a
/// mistake the client must hear about rather than a silent single-session logout.
fn logout_all(query: Option<&str>) -> Result<bool, GatewayError> {
    match query.and_then(|q| field(q.as_bytes(), "all")) {
        None => Ok(false),
        Some(v)
            if ["true", "1", "yes"]
                .iter()
                .any(|t| v.eq_ignore_ascii_case(t)) =>
        {
            Ok(true)
        }
        Some(_) => Err(GatewayError::BadRequest(
            "all must be true, 1 or yes".to_owned(),
        )),
    }
}

async fn me(auth: &Auth, headers: &HeaderMap) -> Result<Response<Body>, GatewayError> {
    let id = auth.authenticate(headers).await?;
    Ok(json(
        StatusCode::OK,
        serde_json::json!({ "sub": id.claims.sub, "roles": id.roles(), "exp": id.claims.exp, "sid": id.claims.sid }),
    ))
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

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn login_page(query: Option<&str>) -> Response<Body> {
    let next = query
        .and_then(|q| field(q.as_bytes(), "next"))
        .filter(|n| safe_next(n).is_some())
        .unwrap_or_else(|| "/".to_owned());
    let page = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in</title>
<style>body{{font-family:system-ui,sans-serif;max-width:22rem;margin:4rem auto;padding:0 1rem}}label{{display:block;margin-top:1rem}}input{{width:100%;padding:.5rem;font-size:1rem}}button{{margin-top:1.5rem;padding:.6rem 1.2rem;font-size:1rem}}</style>
</head><body><main>
<h1>Sign in</h1>
<form method="post" action="/auth/login">
<input type="hidden" name="next" value="{next}">
<label for="username">User name</label><input id="username" name="username" autocomplete="username" required>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button>
</form></main></body></html>
"#,
        next = html_escape(&next)
    );
    let mut resp = Response::new(full(page));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logout_all_values() {
        for q in ["all=true", "all=True", "all=1", "all=YES", "x=1&all=yes"] {
            assert_eq!(logout_all(Some(q)).ok(), Some(true), "{q}");
        }
        for q in [None, Some(""), Some("other=1")] {
            assert_eq!(logout_all(q).ok(), Some(false), "{q:?}");
        }
        for q in ["all", "all=", "all=false", "all=0", "all=no", "all=tru"] {
            assert!(logout_all(Some(q)).is_err(), "{q}");
        }
    }
}
