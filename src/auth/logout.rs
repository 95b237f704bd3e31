//! `/auth/logout`: a confirmation page (GET) and the logout itself (POST). A logout carried by
//! cookies needs the session's CSRF value like any unsafe request; a form logout ends in a
//! 303 (to `login.after_logout`), an API logout in 204.

use super::endpoints::{read_body, Ctx};
use super::form::{field, is_form};
use super::login::see_other;
use super::pages;
use super::Auth;
use crate::body::Body;
use crate::error::GatewayError;
use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;

/// The CSRF origin rule (`crate::origin`) for the gateway's own endpoints.
pub(super) fn origin_rule(
    auth: &Auth,
    headers: &HeaderMap,
    ctx: &Ctx<'_>,
) -> Result<(), GatewayError> {
    let own = ctx
        .host
        .and_then(|h| crate::origin::own_origin(ctx.secure, h));
    crate::origin::check(headers, own.as_deref(), &auth.browser().trusted_origins)
        .map_err(|_| GatewayError::Csrf)
}

/// GET: "Sign out of <app>?" with a form carrying the CSRF value.
pub async fn page(
    auth: &Auth,
    headers: &HeaderMap,
    ctx: &Ctx<'_>,
) -> Result<Response<Body>, GatewayError> {
    let csrf = match auth.authenticate(headers, ctx.secure).await {
        Ok(id) => Some(auth.sessions().csrf_for(id.claims.sid())),
        Err(_) => None,
    };
    Ok(pages::logout(
        &auth.browser().title,
        csrf.as_deref(),
        ctx.secure,
    ))
}

/// POST: this session, or (`all`) every session of the user.
pub async fn submit(
    auth: &Auth,
    req: Request<Incoming>,
    ctx: &Ctx<'_>,
) -> Result<Response<Body>, GatewayError> {
    let (headers, body) = read_body(req, auth.body_limits()).await?;
    let form = is_form(&headers);
    let identity = auth.authenticate(&headers, ctx.secure).await?;
    if identity.via_cookie {
        // The session's token, or a request the origin rule admits (§10): an app's own
        // "sign out" button carries no token of ours.
        let expected = auth.sessions().csrf_for(identity.claims.sid());
        let given = super::csrf::header_value(&headers)
            .map(str::to_owned)
            .or_else(|| form.then(|| field(&body, "csrf_token")).flatten());
        if !super::csrf::matches(given.as_deref(), &expected) {
            origin_rule(auth, &headers, ctx)?;
        }
    }
    let from_form = form.then(|| field(&body, "all")).flatten();
    let all = logout_all(
        from_form
            .as_deref()
            .or(field_of(ctx.query, "all").as_deref()),
    )?;
    auth.sessions().logout(&identity.claims, all).await?;
    if all {
        crate::audit!("logout_all", user = %identity.claims.sub(), sid = %identity.claims.sid(), ip = %ctx.client_ip);
    } else {
        crate::audit!("logout", user = %identity.claims.sub(), sid = %identity.claims.sid(), ip = %ctx.client_ip);
    }
    // A session a provider started may continue to the provider's own logout.
    let at_provider = identity
        .claims
        .idp()
        .and_then(|idp| super::oidc::end_session_url(auth, idp, ctx));
    let mut resp = if form {
        see_other(
            at_provider
                .as_deref()
                .unwrap_or(&auth.browser().after_logout),
        )
    } else {
        let mut r = Response::new(crate::body::empty());
        *r.status_mut() = StatusCode::NO_CONTENT;
        r
    };
    super::cookies::clear_session(resp.headers_mut(), ctx.secure);
    // The app's own session cookies too, where the routes say so (its session would
    // otherwise outlive ours in this browser).
    for (name, path) in &auth.browser().clear_on_logout {
        let expired =
            format!("{name}=; Path={path}; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT");
        if let Ok(v) = http::HeaderValue::try_from(expired) {
            resp.headers_mut().append(http::header::SET_COOKIE, v);
        }
    }
    Ok(resp)
}

fn field_of(query: Option<&str>, name: &str) -> Option<String> {
    query.and_then(|q| field(q.as_bytes(), name))
}

/// `all=true|1|yes` (any case) logs out every session; absent, this one; anything else is a
/// mistake the client must hear about rather than a silent single-session logout.
fn logout_all(value: Option<&str>) -> Result<bool, GatewayError> {
    match value {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn from_query(q: Option<&str>) -> Result<bool, GatewayError> {
        logout_all(field_of(q, "all").as_deref())
    }

    #[test]
    fn logout_all_values() {
        for q in ["all=true", "all=True", "all=1", "all=YES", "x=1&all=yes"] {
            assert_eq!(from_query(Some(q)).ok(), Some(true), "{q}");
        }
        for q in [None, Some(""), Some("other=1")] {
            assert_eq!(from_query(q).ok(), Some(false), "{q:?}");
        }
        for q in ["all", "all=", "all=false", "all=0", "all=no", "all=tru"] {
            assert!(from_query(Some(q)).is_err(), "{q}");
        }
    }
}
