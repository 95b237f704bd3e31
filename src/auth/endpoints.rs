//! The gateway's own endpoints: `/auth/login`, `/auth/refresh`, `/auth/logout`, `/auth/me`,
//! `/auth/register` and `/.well-known/jwks.json`.

use super::cookies::{self, clear_cookie, safe_next, set_cookie};
use super::passwords::{HashError, MAX_PASSWORD_BYTES};
use super::tokens::{now_secs, random_id, Claims, Issued, TokenType};
use super::Auth;
use crate::body::{full, Body};
use crate::error::GatewayError;
use crate::store::users::{validate_name, User};
use crate::store::{RotateRequest, Rotation};
use http::header::{CONTENT_TYPE, LOCATION, SET_COOKIE};
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
    limit: usize,
) -> Result<(HeaderMap, bytes::Bytes), GatewayError> {
    let (parts, body) = req.into_parts();
    Ok((parts.headers, crate::body::read_limited(body, limit).await?))
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        })
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

fn hash_error(e: HashError) -> GatewayError {
    match e {
        HashError::Busy => GatewayError::Unavailable("too many logins in progress; retry shortly"),
        HashError::Failed => GatewayError::Internal("password hashing failed".to_owned()),
    }
}

async fn login(
    auth: &Auth,
    req: Request<Incoming>,
    ctx: Ctx<'_>,
) -> Result<Response<Body>, GatewayError> {
    let (headers, body) = read_body(req, auth.max_body_bytes).await?;
    let (creds, form) = parse_credentials(&headers, &body)?;
    let user_key = format!("u:{}", creds.username);
    let ip_key = format!("ip:{}", ctx.client_ip);
    let (user_fails, user_ttl) = auth
        .store
        .failures(&user_key)
        .await
        .map_err(|e| auth.store_down(e))?;
    let (ip_fails, ip_ttl) = auth
        .store
        .failures(&ip_key)
        .await
        .map_err(|e| auth.store_down(e))?;
    if user_fails >= auth.max_failures_per_user || ip_fails >= auth.max_failures_per_ip {
        let retry_after = if user_fails >= auth.max_failures_per_user {
            user_ttl
        } else {
            ip_ttl
        };
        return Err(GatewayError::TooManyAttempts { retry_after });
    }
    let user = if validate_name(&creds.username).is_ok() {
        auth.users
            .get(&creds.username)
            .await
            .map_err(|e| auth.store_down(e))?
    } else {
        None
    };
    let ok = auth
        .hasher
        .verify(
            &creds.password,
            user.as_ref().map(|u| u.password_hash.as_str()),
        )
        .await
        .map_err(hash_error)?;
    let Some(user) = user.filter(|_| ok) else {
        let window = auth.failure_window;
        let (u, i) = tokio::join!(
            auth.store.add_failure(&user_key, window),
            auth.store.add_failure(&ip_key, window)
        );
        u.and(i).map_err(|e| auth.store_down(e))?;
        tracing::info!(user = %creds.username, ip = %ctx.client_ip, "login failed");
        return Err(GatewayError::InvalidCredentials);
    };
    auth.store
        .clear_failures(&user_key)
        .await
        .map_err(|e| auth.store_down(e))?;
    let pair = start_session(auth, &user).await?;
    tracing::info!(user = %user.name, "login");
    let next = creds.next.as_deref().and_then(safe_next).map(str::to_owned);
    Ok(token_response(&pair, true, form, ctx.tls, next.as_deref()))
}

/// A new login session for `user`: a fresh `sid`, an access and a refresh token.
async fn start_session(auth: &Auth, user: &User) -> Result<Pair, GatewayError> {
    let iat = issue_time(auth, &user.name).await?;
    let sid = random_id();
    let refresh_exp = iat + auth.tokens.refresh_ttl;
    let pair = issue_pair(auth, user, &sid, iat, refresh_exp)?;
    let ttl = auth.tokens.refresh_ttl + auth.tokens.leeway + 1;
    auth.store
        .start_session(&sid, &pair.refresh.jti, ttl)
        .await
        .map_err(|e| auth.store_down(e))?;
    Ok(pair)
}

/// `iat` for new tokens: now, but never at or before the user's revocation cut-off, so a login
/// in the same second as a logout-everywhere is not revoked by it.
async fn issue_time(auth: &Auth, sub: &str) -> Result<u64, GatewayError> {
    let now = now_secs();
    let cutoff = auth
        .store
        .user_cutoff(sub)
        .await
        .map_err(|e| auth.store_down(e))?;
    Ok(cutoff.map_or(now, |c| now.max(c + 1)))
}

struct Pair {
    access: Issued,
    refresh: Issued,
    session_exp: u64,
}

fn issue_pair(
    auth: &Auth,
    user: &User,
    sid: &str,
    iat: u64,
    session_exp: u64,
) -> Result<Pair, GatewayError> {
    let access = issue_access(auth, user, sid, iat, session_exp)?;
    let refresh = auth
        .tokens
        .issue(TokenType::Refresh, &user.name, sid, None, iat, session_exp)
        .map_err(GatewayError::Internal)?;
    Ok(Pair {
        access,
        refresh,
        session_exp,
    })
}

fn issue_access(
    auth: &Auth,
    user: &User,
    sid: &str,
    iat: u64,
    session_exp: u64,
) -> Result<Issued, GatewayError> {
    let exp = (iat + auth.tokens.access_ttl).min(session_exp);
    auth.tokens
        .issue(
            TokenType::Access,
            &user.name,
            sid,
            Some(&user.roles),
            iat,
            exp,
        )
        .map_err(GatewayError::Internal)
}

/// The token JSON (without `refresh_token` when the client keeps its old one), plus the
/// session cookies for browser logins and refreshes.
fn token_response(
    pair: &Pair,
    with_refresh: bool,
    cookies: bool,
    secure: bool,
    next: Option<&str>,
) -> Response<Body> {
    let now = now_secs();
    let mut body = serde_json::json!({
        "access_token": pair.access.token,
        "token_type": "Bearer",
        "expires_in": pair.access.exp.saturating_sub(now),
        "refresh_expires_in": pair.session_exp.saturating_sub(now),
    });
    if with_refresh {
        body["refresh_token"] = serde_json::Value::from(pair.refresh.token.as_str());
    }
    let mut resp = json(StatusCode::OK, body);
    if cookies {
        set_session_cookies(resp.headers_mut(), pair, secure);
        if let Some(next) = next {
            *resp.status_mut() = StatusCode::SEE_OTHER;
            if let Ok(v) = HeaderValue::from_str(next) {
                resp.headers_mut().insert(LOCATION, v);
            }
        }
    }
    resp
}

fn set_session_cookies(h: &mut HeaderMap, pair: &Pair, secure: bool) {
    set_session_cookies_keeping_csrf(h, pair, secure, None);
}

fn set_session_cookies_keeping_csrf(
    h: &mut HeaderMap,
    pair: &Pair,
    secure: bool,
    csrf: Option<&str>,
) {
    let now = now_secs();
    let csrf = csrf.map_or_else(random_id, str::to_owned);
    let cookies = [
        set_cookie(
            cookies::ACCESS,
            &pair.access.token,
            pair.access.exp.saturating_sub(now),
            true,
            secure,
        ),
        set_cookie(
            cookies::REFRESH,
            &pair.refresh.token,
            pair.session_exp.saturating_sub(now),
            true,
            secure,
        ),
        set_cookie(
            cookies::CSRF,
            &csrf,
            pair.session_exp.saturating_sub(now),
            false,
            secure,
        ),
    ];
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(&c) {
            h.append(SET_COOKIE, v);
        }
    }
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
    let (headers, body) = read_body(req, auth.max_body_bytes).await?;
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
    let claims = auth.verify(&token, TokenType::Refresh).await?;
    let pair = rotate(auth, &claims, &token).await?;
    // Without rotation the client keeps its refresh token; only a new access token is sent.
    Ok(token_response(
        &pair,
        auth.rotate_refresh,
        from_cookie,
        ctx.tls,
        None,
    ))
}

/// A browser whose access cookie expired (or was dropped at its Max-Age) but whose refresh
/// cookie is valid: rotate on the fly. Returns the new access claims and the `Set-Cookie`
/// headers for the response; the CSRF cookie keeps its value so open pages keep working.
pub async fn refresh_from_cookie(
    auth: &Auth,
    headers: &HeaderMap,
    secure: bool,
) -> Result<(std::sync::Arc<Claims>, HeaderMap), GatewayError> {
    let token = cookies::get(headers, cookies::REFRESH).ok_or(GatewayError::MissingToken)?;
    let claims = auth.verify(token, TokenType::Refresh).await?;
    let pair = rotate(auth, &claims, token).await?;
    let access = auth
        .tokens
        .verify(&pair.access.token, TokenType::Access)
        .map_err(|e| GatewayError::Internal(format!("a fresh token failed verification: {e}")))?;
    let mut set = HeaderMap::new();
    set_session_cookies_keeping_csrf(
        &mut set,
        &pair,
        secure,
        cookies::get(headers, cookies::CSRF),
    );
    Ok((access, set))
}

/// Issues the next pair of a session, enforcing one-time use of refresh tokens.
async fn rotate(auth: &Auth, claims: &Claims, presented: &str) -> Result<Pair, GatewayError> {
    let user = auth
        .users
        .get(&claims.sub)
        .await
        .map_err(|e| auth.store_down(e))?
        .ok_or(GatewayError::InvalidToken("the user no longer exists"))?;
    let iat = issue_time(auth, &user.name).await?;
    // Absolute session lifetime: the new refresh token ends when the first one did.
    let session_exp = claims.exp;
    let mut pair = issue_pair(auth, &user, &claims.sid, iat, session_exp)?;
    if !auth.rotate_refresh {
        pair.refresh = Issued {
            token: presented.to_owned(),
            jti: claims.jti.clone(),
            exp: session_exp,
        };
        return Ok(pair);
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let request = RotateRequest {
        sid: &claims.sid,
        presented_jti: &claims.jti,
        new_jti: &pair.refresh.jti,
        new_token: &pair.refresh.token,
        now_ms: u64::try_from(now_ms).unwrap_or(u64::MAX),
        grace_ms: auth.reuse_grace_ms,
        ttl: session_exp.saturating_sub(now_secs()) + auth.tokens.leeway + 1,
    };
    match auth
        .store
        .rotate(request)
        .await
        .map_err(|e| auth.store_down(e))?
    {
        Rotation::Rotated => Ok(pair),
        Rotation::Replay(current) => {
            pair.refresh = Issued {
                token: current,
                jti: String::new(),
                exp: session_exp,
            };
            Ok(pair)
        }
        Rotation::Reused => {
            tracing::warn!(user = %claims.sub, "refresh token reuse: session revoked");
            Err(GatewayError::InvalidToken(
                "the refresh token was already used; the session is revoked",
            ))
        }
        Rotation::Unknown => Err(GatewayError::InvalidToken("the session is no longer valid")),
    }
}

async fn logout(
    auth: &Auth,
    headers: &HeaderMap,
    ctx: Ctx<'_>,
) -> Result<Response<Body>, GatewayError> {
    let identity = auth.authenticate(headers).await?;
    let all = ctx
        .query
        .map(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).unwrap_or_default())
        .is_some_and(|pairs| {
            pairs
                .iter()
                .any(|(k, v)| k == "all" && (v == "true" || v == "1"))
        });
    let ttl = auth.revocation_ttl();
    if all {
        auth.store
            .revoke_user(&identity.claims.sub, now_secs(), ttl)
            .await
            .map_err(|e| auth.store_down(e))?;
    } else {
        auth.store
            .revoke_session(&identity.claims.sid, ttl)
            .await
            .map_err(|e| auth.store_down(e))?;
    }
    tracing::info!(user = %identity.claims.sub, all, "logout");
    let mut resp = Response::new(crate::body::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    for name in [cookies::ACCESS, cookies::REFRESH, cookies::CSRF] {
        if let Ok(v) = HeaderValue::from_str(&clear_cookie(name, ctx.tls)) {
            resp.headers_mut().append(SET_COOKIE, v);
        }
    }
    Ok(resp)
}

async fn me(auth: &Auth, headers: &HeaderMap) -> Result<Response<Body>, GatewayError> {
    let id = auth.authenticate(headers).await?;
    Ok(json(
        StatusCode::OK,
        serde_json::json!({ "sub": id.claims.sub, "roles": id.roles(), "exp": id.claims.exp, "sid": id.claims.sid }),
    ))
}

async fn register(auth: &Auth, req: Request<Incoming>) -> Result<Response<Body>, GatewayError> {
    if !auth.registration {
        return Err(GatewayError::NotFound);
    }
    let (headers, body) = read_body(req, auth.max_body_bytes).await?;
    let (creds, _) = parse_credentials(&headers, &body)?;
    validate_name(&creds.username).map_err(GatewayError::BadRequest)?;
    if creds.password.chars().count() < 8 {
        return Err(GatewayError::BadRequest(
            "the password needs at least 8 characters".to_owned(),
        ));
    }
    let hash = auth
        .hasher
        .hash(&creds.password)
        .await
        .map_err(hash_error)?;
    let user = User {
        name: creds.username,
        password_hash: hash,
        roles: Vec::new(),
    };
    let created = auth.users.create(&user).await.map_err(|e| {
        tracing::warn!(error = %e, "registration failed");
        GatewayError::Unavailable("the user store is unavailable")
    })?;
    if !created {
        return Err(GatewayError::Conflict("that user name is taken"));
    }
    tracing::info!(user = %user.name, "registered");
    Ok(json(
        StatusCode::CREATED,
        serde_json::json!({ "sub": user.name, "roles": user.roles }),
    ))
}

fn jwks(auth: &Auth) -> Result<Response<Body>, GatewayError> {
    let doc = auth.jwks.as_ref().ok_or(GatewayError::NotFound)?;
    let mut resp = Response::new(full(doc.clone()));
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
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == "next").map(|(_, v)| v))
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
