//! `POST /auth/login/totp`: the second step of a password login. JSON
//! `{"mfa_token", "code"}` gets the token pair; the form of the code page gets the session
//! cookies and a 303 to `next`. The code is a TOTP code or a recovery code.

use super::cookies::{self, safe_next};
use super::endpoints::{read_body, token_response, Ctx};
use super::form::is_form;
use super::login::{same_origin, see_other};
use super::pages::{self, escape};
use super::sessions::SignIn;
use super::Auth;
use crate::body::Body;
use crate::error::GatewayError;
use http::header::{ACCEPT, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

#[derive(Deserialize)]
struct CodeForm {
    mfa_token: String,
    code: String,
    #[serde(default)]
    next: Option<String>,
}

fn parse(headers: &HeaderMap, body: &[u8]) -> Result<(CodeForm, bool), GatewayError> {
    let form = is_form(headers);
    let f: CodeForm = if form {
        serde_urlencoded::from_bytes(body).ok()
    } else {
        serde_json::from_slice(body).ok()
    }
    .ok_or_else(|| {
        GatewayError::BadRequest("the body must be JSON {\"mfa_token\", \"code\"}".to_owned())
    })?;
    if f.mfa_token.is_empty() || f.code.trim().is_empty() {
        return Err(GatewayError::BadRequest(
            "mfa_token and code are required".to_owned(),
        ));
    }
    if f.code.len() > 64 || f.mfa_token.len() > 1024 {
        return Err(GatewayError::BadRequest(
            "code or mfa_token too long".to_owned(),
        ));
    }
    Ok((f, form))
}

pub async fn submit(
    auth: &Auth,
    req: Request<Incoming>,
    ctx: &Ctx<'_>,
) -> Result<Response<Body>, GatewayError> {
    let (headers, body) = read_body(req, auth.body_limits()).await?;
    let (f, form) = parse(&headers, &body)?;
    if form {
        same_origin(&headers, ctx)?;
    }
    let from = SignIn::of(ctx.client_ip, &headers);
    let result = auth
        .sessions()
        .complete_code(&f.mfa_token, &f.code, &from)
        .await;
    let ua = crate::audit::user_agent(&headers);
    match &result {
        Ok((user, pair)) => crate::audit!(
            "login_ok",
            user = %user,
            ip = %ctx.client_ip,
            sid = %pair.access.claims.sid(),
            method = "password+otp",
            user_agent = %ua
        ),
        Err(GatewayError::InvalidCode) => crate::audit!(
            "second_factor_failed",
            ip = %ctx.client_ip,
            user_agent = %ua
        ),
        Err(_) => {}
    }
    if !form {
        return result.map(|(_, pair)| token_response(&pair));
    }
    let next = f
        .next
        .as_deref()
        .and_then(safe_next)
        .unwrap_or(&auth.browser().default_next);
    let passkey = passkey_offered(auth, &f.mfa_token).await;
    let html = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"));
    match result {
        Ok((_, pair)) => {
            let mut resp = see_other(next);
            cookies::set_session(resp.headers_mut(), &pair.cookies(), ctx.secure);
            Ok(resp)
        }
        Err(GatewayError::InvalidCode) if html => Ok(code_page(
            auth,
            &f.mfa_token,
            next,
            Some((
                "That code is not right, or was used already. Codes change every 30 seconds."
                    .to_owned(),
                StatusCode::UNAUTHORIZED,
            )),
            passkey,
            ctx.secure,
        )),
        Err(GatewayError::TooManyAttempts { retry_after }) if html => {
            let mut resp = code_page(
                auth,
                &f.mfa_token,
                next,
                Some((
                    format!(
                        "Too many wrong codes. Try again in {}.",
                        pages::wait_in_words(retry_after)
                    ),
                    StatusCode::TOO_MANY_REQUESTS,
                )),
                passkey,
                ctx.secure,
            );
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
            Ok(resp)
        }
        // The sign-in took too long, or its token was used: from the start.
        Err(GatewayError::InvalidToken(_)) if html => Ok(see_other(&format!(
            "/auth/login?next={}",
            crate::path::encode_component(next)
        ))),
        Err(e) => Err(e),
    }
}

/// Whether the user `mfa_token` signs in has a passkey to use.
async fn passkey_offered(auth: &Auth, mfa_token: &str) -> bool {
    let factors = auth.sessions().factors();
    let Ok(c) = auth
        .sessions()
        .challenge(mfa_token, super::factors::challenge::Purpose::Code)
    else {
        return false;
    };
    match auth.sessions().user(&c.sub).await {
        Ok(Some(u)) => factors.methods(&u).contains(&"webauthn"),
        _ => false,
    }
}

/// The page that asks for the code (`message`: what went wrong, with its status).
pub fn code_page(
    auth: &Auth,
    mfa_token: &str,
    next: &str,
    message: Option<(String, StatusCode)>,
    passkey: bool,
    secure: bool,
) -> Response<Body> {
    let (alert, status) = match message {
        Some((m, status)) => (
            format!("<p class=\"alert\" role=\"alert\">{}</p>\n", escape(&m)),
            status,
        ),
        None => (String::new(), StatusCode::OK),
    };
    let main = format!(
        r#"<h1>{title}</h1>
<p>Enter the 6-digit code your authenticator app shows, or one of your recovery codes.</p>
{alert}<form method="post" action="/auth/login/totp">
<input type="hidden" name="mfa_token" value="{token}">
<input type="hidden" name="next" value="{next}">
<label for="code">Code</label><input id="code" name="code" autocomplete="one-time-code" autocapitalize="none" autocorrect="off" spellcheck="false" maxlength="32" required autofocus>
<button type="submit">Verify</button>
</form>
{passkey}<p><a href="/auth/login?next={next_q}">Start again</a></p>"#,
        title = escape(&auth.browser().title),
        token = escape(mfa_token),
        next = escape(next),
        next_q = escape(&crate::path::encode_component(next)),
        passkey = if passkey {
            super::passkey_pages::use_button(mfa_token, next)
        } else {
            String::new()
        },
    );
    let resp = pages::html(status, "Second step", &main, secure);
    if passkey {
        pages::with_script(resp)
    } else {
        resp
    }
}
