//! `/auth/account`: a password user's second factor. `GET` shows it (HTML for a browser's
//! session, JSON for a token, with what a set-up needs); `POST /auth/account/totp` turns an
//! authenticator app on (the first code proves the app has the secret) and shows ten
//! recovery codes once; `POST /auth/account/recovery-codes` makes new ones and
//! `POST /auth/account/totp/remove` turns the app off, both only from a session that gave a
//! code. With `second_factor = "required"` the set-up also comes right after the password,
//! before any session (`enrol_first`).

use super::cookies::{self, safe_next};
use super::endpoints::{json, read_body, Ctx};
use super::factors::{qr, totp};
use super::form::{field, is_form};
use super::pages::{self, escape};
use super::sessions::SignIn;
use super::{Auth, Identity};
use crate::body::Body;
use crate::clock::now_secs;
use crate::config::SecondFactor;
use crate::error::GatewayError;
use http::header::ACCEPT;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

const PAGE: &str = "/auth/account";
/// How long a set-up page stays good.
const SETUP_SECS: u64 = 600;

pub fn is_account_path(path: &str) -> bool {
    path == PAGE || path.starts_with("/auth/account/")
}

pub async fn handle(
    auth: &Auth,
    req: Request<Incoming>,
    path: &str,
    ctx: &Ctx<'_>,
) -> Result<Response<Body>, GatewayError> {
    match (path, req.method()) {
        (PAGE, &Method::GET) => show(auth, req.headers(), ctx).await,
        ("/auth/account/totp", &Method::POST) => enrol(auth, req, ctx).await,
        ("/auth/account/recovery-codes", &Method::POST) => {
            change(auth, req, ctx, Change::NewCodes).await
        }
        ("/auth/account/totp/remove", &Method::POST) => {
            change(auth, req, ctx, Change::Remove).await
        }
        (
            PAGE
            | "/auth/account/totp"
            | "/auth/account/recovery-codes"
            | "/auth/account/totp/remove",
            _,
        ) => Err(GatewayError::MethodNotAllowed),
        _ => Err(GatewayError::NotFound),
    }
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"))
}

/// What a set-up shows: the secret three ways, and the sealed form of it the form returns.
struct Setup {
    pending: String,
    secret_text: String,
    uri: String,
    svg: String,
}

fn setup(auth: &Auth, user: &str, secret: Option<Vec<u8>>) -> Result<Setup, GatewayError> {
    let secret = match secret {
        Some(s) => s,
        None => totp::new_secret()
            .map_err(|e| GatewayError::Internal(e.to_string()))?
            .to_vec(),
    };
    let factors = auth.sessions().factors();
    let pending = factors
        .seal_pending(user, &secret, now_secs() + SETUP_SECS)
        .map_err(|e| {
            tracing::error!(error = %e, "second factors cannot be set up");
            GatewayError::Unavailable("second factors cannot be set up right now")
        })?;
    let uri = totp::uri(&secret, factors.issuer(), user)
        .ok_or_else(|| GatewayError::Internal("cannot make an otpauth URI".to_owned()))?;
    let svg = qr::svg(&uri, "QR code of the authenticator app's key").unwrap_or_default();
    Ok(Setup {
        pending,
        secret_text: totp::secret_text(&secret),
        uri,
        svg,
    })
}

/// The set-up form. `proof`: the hidden field that says who may post it (`csrf_token` of a
/// session, or the `mfa_token` of a right password).
fn setup_page(
    auth: &Auth,
    s: &Setup,
    proof: (&str, &str),
    next: &str,
    message: Option<&str>,
    secure: bool,
) -> Response<Body> {
    let main = setup_html(auth, s, proof, next, message, "h1");
    let status = if message.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    pages::html(status, "Set up an authenticator app", &main, secure)
}

/// The set-up form under a heading of level `h`.
fn setup_html(
    auth: &Auth,
    s: &Setup,
    proof: (&str, &str),
    next: &str,
    message: Option<&str>,
    h: &str,
) -> String {
    let alert = message.map_or(String::new(), |m| {
        format!("<p class=\"alert\" role=\"alert\">{}</p>\n", escape(m))
    });
    let intro = if proof.0 == "mfa_token" {
        "This account needs a second factor before it can sign in. "
    } else {
        ""
    };
    format!(
        r#"<{h}>Set up an authenticator app</{h}>
<p>{intro}Scan the code with an authenticator app (or type the key into it), then enter the 6-digit code it shows.</p>
{alert}<figure>{svg}<figcaption>QR code for {title}</figcaption></figure>
<p>Key: <code id="totp-secret">{secret}</code></p>
<p class="uri"><a id="totp-uri" href="{uri}">{uri}</a></p>
<form method="post" action="/auth/account/totp">
<input type="hidden" name="pending" value="{pending}">
<input type="hidden" name="{pn}" value="{pv}">
<input type="hidden" name="next" value="{next}">
<label for="code">Code from the app</label><input id="code" name="code" inputmode="numeric" autocomplete="one-time-code" autocapitalize="none" spellcheck="false" maxlength="16" required autofocus>
<button type="submit">Turn on</button>
</form>"#,
        svg = s.svg,
        title = escape(auth.sessions().factors().issuer()),
        secret = escape(&s.secret_text),
        uri = escape(&s.uri),
        pending = escape(&s.pending),
        pn = escape(proof.0),
        pv = escape(proof.1),
        next = escape(next),
    )
}

/// Right after the password, for a user who must enrol first (`required`).
pub fn enrol_first(
    auth: &Auth,
    user: &str,
    mfa_token: &str,
    next: &str,
    secure: bool,
) -> Result<Response<Body>, GatewayError> {
    let s = setup(auth, user, None)?;
    Ok(setup_page(
        auth,
        &s,
        ("mfa_token", mfa_token),
        next,
        None,
        secure,
    ))
}

fn codes_page(codes: &[String], next: &str, secure: bool) -> Response<Body> {
    let items: String = codes
        .iter()
        .map(|c| format!("<li><code>{}</code></li>", escape(c)))
        .collect();
    let main = format!(
        r#"<h1>Your recovery codes</h1>
<p>Each code signs you in once in place of an authenticator code, if you lose your phone. Keep them somewhere safe: they are shown only now.</p>
<ol id="recovery-codes">{items}</ol>
<p><a href="{next}">Continue</a></p>"#,
        next = escape(next)
    );
    pages::html(StatusCode::OK, "Your recovery codes", &main, secure)
}

/// Who is signed in; a browser without a session is sent to sign in and back here.
async fn signed_in(
    auth: &Auth,
    headers: &HeaderMap,
    ctx: &Ctx<'_>,
) -> Result<Identity, GatewayError> {
    match auth.authenticate(headers, ctx.secure).await {
        Ok(id) => Ok(id),
        Err(e @ GatewayError::Unavailable(_)) => Err(e),
        Err(_) if wants_html(headers) => Err(GatewayError::LoginRedirect {
            next: PAGE.to_owned(),
        }),
        Err(e) => Err(e),
    }
}

async fn show(
    auth: &Auth,
    headers: &HeaderMap,
    ctx: &Ctx<'_>,
) -> Result<Response<Body>, GatewayError> {
    let id = signed_in(auth, headers, ctx).await?;
    let sub = id.claims.sub();
    let policy = auth.sessions().factors().policy();
    let user = match id.claims.idp() {
        None => auth.sessions().user(sub).await?,
        Some(_) => None,
    };
    let amr: Vec<String> = id.claims.amr().map(<[String]>::to_vec).unwrap_or_default();
    let enrolled = user.as_ref().is_some_and(|u| u.totp.is_some());
    let can_set_up = user.is_some() && !enrolled && policy != SecondFactor::Off;
    let setup = if can_set_up {
        Some(setup(auth, sub, None)?)
    } else {
        None
    };
    if !(wants_html(headers) && id.via_cookie) {
        let mut body = serde_json::json!({
            "user": sub,
            "amr": amr,
            "idp": id.claims.idp(),
            "second_factor": match policy {
                SecondFactor::Off => "off",
                SecondFactor::Optional => "optional",
                SecondFactor::Required => "required",
            },
            "totp": enrolled,
            "recovery_codes_left": user.as_ref().map_or(0, |u| u.recovery_codes.len()),
        });
        if let Some(s) = &setup {
            body["totp_setup"] = serde_json::json!({
                "pending": s.pending,
                "secret": s.secret_text,
                "otpauth_uri": s.uri,
            });
        }
        return Ok(json(StatusCode::OK, body));
    }
    let csrf = auth.sessions().csrf_for(id.claims.sid());
    let has = |m: &str| amr.iter().any(|a| a == m);
    let how = if id.claims.idp().is_none() && has("hwk") && has("pwd") {
        "with a password and a passkey"
    } else if id.claims.idp().is_none() && has("hwk") {
        "with a passkey"
    } else if id.passed_second_factor() && id.claims.idp().is_none() {
        "with a password and a code"
    } else if id.claims.idp().is_some() {
        "through your identity provider"
    } else {
        "with a password"
    };
    let factor = match (&user, policy) {
        (None, _) => "<p>Your second factor is managed by your identity provider.</p>".to_owned(),
        (Some(_), SecondFactor::Off) => "<p>Second factors are off on this gateway.</p>".to_owned(),
        (Some(u), _) if u.totp.is_none() && u.has_factor() && !id.passed_second_factor() => {
            "<h2>Authenticator app</h2>\n<p>To set one up, sign out and sign in again with your passkey.</p>".to_owned()
        }
        (Some(_), _) if setup.is_some() => setup.as_ref().map_or_else(String::new, |s| {
            setup_html(auth, s, ("csrf_token", &csrf), PAGE, None, "h2")
        }),
        (Some(u), _) if id.passed_second_factor() => format!(
            r#"<h2>Authenticator app</h2>
<p>An authenticator app is set up. Recovery codes left: {left}.</p>
<form method="post" action="/auth/account/recovery-codes"><input type="hidden" name="csrf_token" value="{csrf}"><button type="submit">Make new recovery codes</button></form>
<form method="post" action="/auth/account/totp/remove"><input type="hidden" name="csrf_token" value="{csrf}"><button type="submit">Turn the authenticator app off</button></form>"#,
            left = u.recovery_codes.len(),
            csrf = escape(&csrf)
        ),
        (Some(u), _) => format!(
            "<h2>Authenticator app</h2>\n<p>An authenticator app is set up. Recovery codes left: {}. To change it, sign out and sign in again with a code.</p>",
            u.recovery_codes.len()
        ),
    };
    let passkeys = match (&user, auth.sessions().factors().webauthn()) {
        (Some(u), Some(_)) => {
            let have = auth.sessions().factors().passkeys_of(u).map_err(|e| {
                tracing::error!(error = %e, "passkeys could not be read");
                GatewayError::Unavailable("passkeys cannot be read right now")
            })?;
            let can_change = id.passed_second_factor() || !u.has_factor();
            super::passkey_pages::account_section(&have, &csrf, can_change)
        }
        _ => String::new(),
    };
    let main = format!(
        "<h1>Your account</h1>\n<p>Signed in as <strong>{user}</strong>, {how}.</p>\n{factor}\n{passkeys}<p><a href=\"/auth/sessions\">Your sessions</a> · <a href=\"/auth/logout\">Sign out</a></p>",
        user = escape(sub),
    );
    let resp = pages::html(StatusCode::OK, "Your account", &main, ctx.secure);
    if passkeys.contains("<script") {
        return Ok(pages::with_script(resp));
    }
    Ok(resp)
}

/// A field of a form or JSON body.
fn value(body: &[u8], form: bool, name: &str) -> Option<String> {
    if form {
        field(body, name)
    } else {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()?
            .get(name)?
            .as_str()
            .map(str::to_owned)
    }
}

async fn enrol(
    auth: &Auth,
    req: Request<Incoming>,
    ctx: &Ctx<'_>,
) -> Result<Response<Body>, GatewayError> {
    let (headers, body) = read_body(req, auth.body_limits()).await?;
    let form = is_form(&headers);
    let get = |name| value(&body, form, name);
    let (Some(pending), Some(code)) = (get("pending"), get("code")) else {
        return Err(GatewayError::BadRequest(
            "pending and code are required".to_owned(),
        ));
    };
    if auth.sessions().factors().policy() == SecondFactor::Off {
        return Err(GatewayError::NotFound);
    }
    let next = get("next")
        .filter(|n| safe_next(n).is_some())
        .unwrap_or_else(|| PAGE.to_owned());
    let html = form && wants_html(&headers);
    // Right after the password (`required`): the mfa_token proves it; no session yet.
    if let Some(mfa_token) = get("mfa_token") {
        if form {
            super::login::same_origin(&headers, ctx)?;
        }
        let from = SignIn::of(ctx.client_ip, &headers);
        let started = auth
            .sessions()
            .enrol_and_start(&mfa_token, &pending, &code, &from)
            .await;
        let (user, pair) = match started {
            Ok(x) => x,
            Err(GatewayError::InvalidCode) if html => {
                let user = auth
                    .sessions()
                    .challenge(&mfa_token, super::factors::challenge::Purpose::Enrol)?
                    .sub;
                return retry_setup(
                    auth,
                    &user,
                    &pending,
                    ("mfa_token", &mfa_token),
                    &next,
                    ctx.secure,
                );
            }
            Err(e) => return Err(e),
        };
        crate::audit!("login_ok", user = %user, ip = %ctx.client_ip, sid = %pair.access.claims.sid(), method = "password+otp (enrolled)");
        let codes = auth.sessions().new_recovery_codes(&user).await?;
        let mut resp = if html {
            codes_page(&codes, &next, ctx.secure)
        } else {
            let mut body = super::endpoints::token_json(&pair);
            body["recovery_codes"] = serde_json::json!(codes);
            return Ok(json(StatusCode::OK, body));
        };
        cookies::set_session(resp.headers_mut(), &pair.cookies(), ctx.secure);
        return Ok(resp);
    }
    let id = auth.authenticate(&headers, ctx.secure).await?;
    if id.via_cookie {
        super::sessions_page::csrf_or_origin(auth, &id, &headers, form.then_some(&body[..]), ctx)?;
    }
    let sub = id.claims.sub().to_owned();
    let Some(user) = (match id.claims.idp() {
        None => auth.sessions().user(&sub).await?,
        Some(_) => None,
    }) else {
        return Err(GatewayError::Forbidden(
            "second factors of identity-provider users are the provider's",
        ));
    };
    if user.totp.is_some() {
        return Err(GatewayError::Conflict(
            "an authenticator app is set up already: turn it off first",
        ));
    }
    if user.has_factor() && !id.passed_second_factor() {
        return Err(GatewayError::SecondFactorRequired);
    }
    match auth.sessions().enrol_totp(&sub, &pending, &code).await {
        Ok(()) => {}
        Err(GatewayError::InvalidCode) if html => {
            let csrf = auth.sessions().csrf_for(id.claims.sid());
            return retry_setup(
                auth,
                &sub,
                &pending,
                ("csrf_token", &csrf),
                &next,
                ctx.secure,
            );
        }
        Err(e) => return Err(e),
    }
    let codes = auth.sessions().new_recovery_codes(&sub).await?;
    if html {
        Ok(codes_page(&codes, PAGE, ctx.secure))
    } else {
        Ok(json(
            StatusCode::OK,
            serde_json::json!({ "totp": true, "recovery_codes": codes }),
        ))
    }
}

/// The set-up page again with the same secret, after a wrong first code.
fn retry_setup(
    auth: &Auth,
    user: &str,
    pending: &str,
    proof: (&str, &str),
    next: &str,
    secure: bool,
) -> Result<Response<Body>, GatewayError> {
    let secret = auth
        .sessions()
        .factors()
        .open_pending(user, pending, now_secs());
    let again = secret.is_some();
    let s = setup(auth, user, secret)?;
    let message = if again {
        "That code is not right. Codes change every 30 seconds: enter the one the app shows now."
    } else {
        "The set-up expired: scan this new code."
    };
    Ok(setup_page(auth, &s, proof, next, Some(message), secure))
}

enum Change {
    NewCodes,
    Remove,
}

async fn change(
    auth: &Auth,
    req: Request<Incoming>,
    ctx: &Ctx<'_>,
    what: Change,
) -> Result<Response<Body>, GatewayError> {
    let (headers, body) = read_body(req, auth.body_limits()).await?;
    let form = is_form(&headers);
    let id = auth.authenticate(&headers, ctx.secure).await?;
    if id.via_cookie {
        super::sessions_page::csrf_or_origin(auth, &id, &headers, form.then_some(&body[..]), ctx)?;
    }
    if !id.passed_second_factor() || id.claims.idp().is_some() {
        return Err(GatewayError::SecondFactorRequired);
    }
    let sub = id.claims.sub();
    let html = form && wants_html(&headers);
    match what {
        Change::NewCodes => {
            let codes = auth.sessions().new_recovery_codes(sub).await?;
            if html {
                return Ok(codes_page(&codes, PAGE, ctx.secure));
            }
            Ok(json(
                StatusCode::OK,
                serde_json::json!({ "recovery_codes": codes }),
            ))
        }
        Change::Remove => {
            auth.sessions().remove_factors(sub).await?;
            if html {
                return Ok(super::login::see_other(PAGE));
            }
            Ok(json(StatusCode::OK, serde_json::json!({ "totp": false })))
        }
    }
}
