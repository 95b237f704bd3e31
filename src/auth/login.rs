//! `/auth/login`: the sign-in page (GET) and sign-in (POST). API clients send JSON and get
//! tokens; browsers send the form and get cookies and a 303, never a token in a body. A
//! browser whose sign-in fails gets the page again, with the message, its user name and
//! the same `next`.

use super::cookies::{self, safe_next};
use super::endpoints::{json, parse_credentials, read_body, token_response, Ctx};
use super::form::field;
use super::pages::{self, LoginPage};
use super::sessions::LoginStep;
use super::Auth;
use crate::body::{empty, Body};
use crate::error::GatewayError;
use http::header::{ACCEPT, LOCATION, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

/// The local `next` of a query string or form, if it is one.
fn next_of(text: Option<&str>) -> Option<String> {
    text.and_then(|q| field(q.as_bytes(), "next"))
        .filter(|n| safe_next(n).is_some())
}

/// A 303 to a local path.
pub(super) fn see_other(to: &str) -> Response<Body> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    resp
}

/// GET: the form, or, for a browser already signed in, straight on to `next`.
pub async fn page(
    auth: &Auth,
    headers: &HeaderMap,
    ctx: &Ctx<'_>,
) -> Result<Response<Body>, GatewayError> {
    let next = next_of(ctx.query);
    let signed_in = auth
        .authenticate(headers, ctx.secure)
        .await
        .is_ok_and(|id| id.via_cookie);
    if signed_in {
        return Ok(see_other(
            next.as_deref().unwrap_or(&auth.browser().default_next),
        ));
    }
    // Single sign-on only, through one provider: a browser sent here to sign in (with a
    // `next`) goes straight on to it. Without `next` (after a logout) the page shows its
    // button, so signing out does not sign straight back in.
    if let (false, [only], Some(next)) = (
        auth.password_login(),
        auth.oidc().providers(),
        next.as_deref(),
    ) {
        let to = format!(
            "/auth/oidc/{}/start?next={}",
            only.cfg.name,
            crate::path::encode_component(next)
        );
        let mut resp = see_other(&to);
        *resp.status_mut() = StatusCode::FOUND;
        return Ok(resp);
    }
    let buttons = auth.oidc().buttons();
    let next = next.as_deref().unwrap_or(&auth.browser().default_next);
    let extra = super::passkey_pages::login_extra(auth, next);
    let page = LoginPage {
        title: &auth.browser().title,
        next,
        username: "",
        message: None,
        providers: &buttons,
        password: auth.password_login(),
        extra: &extra,
    };
    Ok(pages::login(&page, StatusCode::OK, ctx.secure))
}

/// `GET /auth/refresh?next=`: a browser session whose access cookie expired, sent here by a
/// forward-auth check (which may not set cookies itself): refresh from the cookie, set the
/// new cookies, and go on to `next`; without a valid session, to the login page.
pub async fn refresh_and_return(
    auth: &Auth,
    headers: &HeaderMap,
    ctx: &Ctx<'_>,
) -> Result<Response<Body>, GatewayError> {
    let next = next_of(ctx.query).unwrap_or_else(|| auth.browser().default_next.clone());
    match auth.sessions().refresh_cookie(headers, ctx.secure).await {
        Ok((_, set)) => {
            let mut resp = see_other(&next);
            for v in set.get_all(http::header::SET_COOKIE) {
                resp.headers_mut()
                    .append(http::header::SET_COOKIE, v.clone());
            }
            Ok(resp)
        }
        Err(GatewayError::Unavailable(m)) => Err(GatewayError::Unavailable(m)),
        Err(_) => Err(GatewayError::LoginRedirect { next }),
    }
}

/// POST: JSON (tokens) or a form (cookies and a 303).
pub async fn submit(
    auth: &Auth,
    req: Request<Incoming>,
    ctx: &Ctx<'_>,
) -> Result<Response<Body>, GatewayError> {
    if !auth.password_login() {
        return Err(GatewayError::NotFound);
    }
    let (headers, body) = read_body(req, auth.body_limits()).await?;
    let (creds, form) = parse_credentials(&headers, &body)?;
    if form {
        same_origin(&headers, ctx)?;
    }
    let result = auth
        .sessions()
        .login_from(
            &creds.username,
            &creds.password,
            ctx.client_ip,
            headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok()),
        )
        .await;
    let ua = crate::audit::user_agent(&headers);
    match &result {
        Ok(LoginStep::Code(_) | LoginStep::Enrol(_)) => crate::audit!(
            "password_ok_second_factor_next",
            user = %creds.username,
            ip = %ctx.client_ip,
            user_agent = %ua
        ),
        Ok(LoginStep::Done(pair)) => crate::audit!(
            "login_ok",
            user = %creds.username,
            ip = %ctx.client_ip,
            sid = %pair.access.claims.sid(),
            method = "password",
            user_agent = %ua
        ),
        Err(GatewayError::InvalidCredentials) => crate::audit!(
            "login_failed",
            user = %creds.username,
            ip = %ctx.client_ip,
            user_agent = %ua
        ),
        Err(GatewayError::TooManyAttempts { retry_after }) => {
            let key = format!("{}\n{}", creds.username, ctx.client_ip);
            match auth.lockouts().occurred(&key) {
                crate::audit::Say::First => crate::audit!(
                    "lockout",
                    user = %creds.username,
                    ip = %ctx.client_ip,
                    retry_after,
                    user_agent = %ua
                ),
                crate::audit::Say::Count(refused) => crate::audit!(
                    "lockout_repeated",
                    user = %creds.username,
                    ip = %ctx.client_ip,
                    refused,
                    retry_after
                ),
                crate::audit::Say::Quiet => {}
            }
        }
        Err(_) => {}
    }
    if !form {
        return match result? {
            LoginStep::Done(pair) => Ok(token_response(&pair)),
            LoginStep::Code(c) => Ok(json(
                StatusCode::OK,
                serde_json::json!({
                    "mfa_required": true,
                    "mfa_token": c.mfa_token,
                    "methods": c.methods,
                }),
            )),
            LoginStep::Enrol(_) => Err(GatewayError::EnrolmentRequired),
        };
    }
    let next = creds
        .next
        .as_deref()
        .and_then(safe_next)
        .unwrap_or(&auth.browser().default_next);
    match result {
        Ok(LoginStep::Done(pair)) => {
            let mut resp = see_other(next);
            cookies::set_session(resp.headers_mut(), &pair.cookies(), ctx.secure);
            Ok(resp)
        }
        Ok(LoginStep::Code(c)) => Ok(super::second_step::code_page(
            auth,
            &c.mfa_token,
            next,
            None,
            c.methods.contains(&"webauthn"),
            ctx.secure,
        )),
        Ok(LoginStep::Enrol(c)) => {
            super::account::enrol_first(auth, &c.user, &c.mfa_token, next, ctx.secure)
        }
        Err(
            e @ (GatewayError::InvalidCredentials
            | GatewayError::TooManyAttempts { .. }
            | GatewayError::Busy(_)),
        ) if wants_html(&headers) => Ok(failed_page(auth, &creds.username, next, e, ctx.secure)),
        Err(e) => Err(e),
    }
}

/// The login page again, saying what went wrong.
fn failed_page(
    auth: &Auth,
    username: &str,
    next: &str,
    e: GatewayError,
    secure: bool,
) -> Response<Body> {
    let (status, message, retry) = match e {
        GatewayError::TooManyAttempts { retry_after } => (
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Too many failed sign-ins. Try again in {}.",
                pages::wait_in_words(retry_after)
            ),
            Some(retry_after.max(1)),
        ),
        GatewayError::Busy(_) => (
            StatusCode::TOO_MANY_REQUESTS,
            "Signing in is busy for this account. Try again in a second.".to_owned(),
            Some(1),
        ),
        _ => (
            StatusCode::UNAUTHORIZED,
            "Wrong user name or password.".to_owned(),
            None,
        ),
    };
    let buttons = auth.oidc().buttons();
    let extra = super::passkey_pages::login_extra(auth, next);
    let page = LoginPage {
        title: &auth.browser().title,
        next,
        username,
        message: Some(message),
        providers: &buttons,
        password: auth.password_login(),
        extra: &extra,
    };
    let mut resp = pages::login(&page, status, secure);
    if let Some(secs) = retry {
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"))
}

/// Login CSRF: a form posted from another site would sign the victim's browser in as the
/// attacker. Browsers say where a form came from; header-less clients are not browsers.
pub(super) fn same_origin(headers: &HeaderMap, ctx: &Ctx<'_>) -> Result<(), GatewayError> {
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if site.is_some_and(|s| s.eq_ignore_ascii_case("cross-site")) {
        return Err(GatewayError::Csrf);
    }
    let Some(origin) = headers.get(http::header::ORIGIN) else {
        return Ok(());
    };
    // Our own pages send `Referrer-Policy: no-referrer`, under which a browser posts their
    // forms with `Origin: null`; it then says `Sec-Fetch-Site: same-origin` too.
    if origin.as_bytes() == b"null" {
        return match site {
            Some(s) if s.eq_ignore_ascii_case("same-origin") => Ok(()),
            _ => Err(GatewayError::Csrf),
        };
    }
    let ours = ctx.host.map(|host| {
        let scheme = if ctx.secure { "https" } else { "http" };
        format!("{scheme}://{host}")
    });
    let same = ours.is_some_and(|o| origin.as_bytes().eq_ignore_ascii_case(o.as_bytes()));
    if same {
        Ok(())
    } else {
        Err(GatewayError::Csrf)
    }
}
