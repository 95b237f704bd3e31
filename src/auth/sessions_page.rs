//! `/auth/sessions`: the caller's own sessions (HTML for a browser's cookie session, JSON for
//! a token), `POST /auth/sessions/<sid>/revoke` and `POST /auth/sessions/revoke-others`. A
//! cookie caller's POST needs the session's CSRF value or the origin rule, as a logout does;
//! a sid that is not one of the caller's own live sessions is a 404.

use super::endpoints::{json, read_body, Ctx};
use super::form::{field, is_form};
use super::login::see_other;
use super::pages::{self, escape};
use super::{Auth, Identity};
use crate::body::Body;
use crate::clock::utc_text;
use crate::error::GatewayError;
use crate::store::SessionInfo;
use http::header::ACCEPT;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

const PAGE: &str = "/auth/sessions";

/// True for the paths this module answers.
pub fn is_sessions_path(path: &str) -> bool {
    path == PAGE || path.starts_with("/auth/sessions/")
}

pub async fn handle(
    auth: &Auth,
    req: Request<Incoming>,
    path: &str,
    ctx: &Ctx<'_>,
) -> Result<Response<Body>, GatewayError> {
    let rest = path.strip_prefix(PAGE).unwrap_or_default();
    let target = match rest {
        "" => None,
        "/revoke-others" => Some(Target::Others),
        _ => match rest
            .strip_prefix('/')
            .and_then(|r| r.strip_suffix("/revoke"))
        {
            Some(sid) if is_sid(sid) => Some(Target::One(sid.to_owned())),
            _ => return Err(GatewayError::NotFound),
        },
    };
    match (target, req.method()) {
        (None, &Method::GET) => list(auth, req.headers(), ctx).await,
        (Some(t), &Method::POST) => revoke(auth, req, t, ctx).await,
        _ => Err(GatewayError::MethodNotAllowed),
    }
}

enum Target {
    One(String),
    Others,
}

/// A sid as the gateway makes them (22 base64url characters; a little slack).
fn is_sid(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"))
}

/// GET: the list. A browser without a session is sent to sign in and back here.
async fn list(
    auth: &Auth,
    headers: &HeaderMap,
    ctx: &Ctx<'_>,
) -> Result<Response<Body>, GatewayError> {
    let html = wants_html(headers);
    let id = match auth.authenticate(headers, ctx.secure).await {
        Ok(id) => id,
        Err(e @ GatewayError::Unavailable(_)) => return Err(e),
        Err(_) if html => {
            return Err(GatewayError::LoginRedirect {
                next: PAGE.to_owned(),
            })
        }
        Err(e) => return Err(e),
    };
    let sessions = auth.sessions().list(id.claims.sub()).await?;
    if html && id.via_cookie {
        let csrf = auth.sessions().csrf_for(id.claims.sid());
        let main = page_body(&auth.browser().title, &sessions, id.claims.sid(), &csrf);
        return Ok(pages::html(
            StatusCode::OK,
            "Your sessions",
            &main,
            ctx.secure,
        ));
    }
    let list: Vec<serde_json::Value> = sessions
        .iter()
        .map(|s| session_json(s, id.claims.sid()))
        .collect();
    Ok(json(
        StatusCode::OK,
        serde_json::json!({ "sessions": list }),
    ))
}

/// One session as the JSON form shows it.
pub fn session_json(s: &SessionInfo, current: &str) -> serde_json::Value {
    serde_json::json!({
        "sid": s.sid,
        "started": s.started,
        "last_refresh": s.last_refresh,
        "ip": s.ip,
        "user_agent": s.user_agent,
        "method": s.method,
        "current": s.sid == current,
    })
}

/// POST: authenticated, CSRF-checked for cookies, then one session or all the others.
async fn revoke(
    auth: &Auth,
    req: Request<Incoming>,
    target: Target,
    ctx: &Ctx<'_>,
) -> Result<Response<Body>, GatewayError> {
    let (headers, body) = read_body(req, auth.body_limits()).await?;
    let form = is_form(&headers);
    let id = auth.authenticate(&headers, ctx.secure).await?;
    if id.via_cookie {
        csrf_or_origin(auth, &id, &headers, form.then_some(&body[..]), ctx)?;
    }
    let (sub, current) = (id.claims.sub(), id.claims.sid());
    let (ended_current, answer) = match target {
        Target::One(sid) => {
            if !auth.sessions().end_own(sub, &sid).await? {
                return Err(GatewayError::NotFound);
            }
            crate::audit!("session_revoked", by = "user", user = %sub, sid = %sid, ip = %ctx.client_ip);
            (sid == *current, None)
        }
        Target::Others => {
            let n = auth.sessions().end_others(sub, current).await?;
            crate::audit!("other_sessions_revoked", user = %sub, sid = %current, count = n, ip = %ctx.client_ip);
            (false, Some(serde_json::json!({ "revoked": n })))
        }
    };
    let mut resp = match (form, answer) {
        (true, _) if ended_current => see_other(&auth.browser().after_logout),
        (true, _) => see_other(PAGE),
        (false, Some(body)) => json(StatusCode::OK, body),
        (false, None) => {
            let mut r = Response::new(crate::body::empty());
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
    };
    if ended_current && id.via_cookie {
        super::cookies::clear_session(resp.headers_mut(), ctx.secure);
    }
    Ok(resp)
}

/// The session's CSRF value (header or form field), else the origin rule (as a logout).
pub(super) fn csrf_or_origin(
    auth: &Auth,
    id: &Identity,
    headers: &HeaderMap,
    form_body: Option<&[u8]>,
    ctx: &Ctx<'_>,
) -> Result<(), GatewayError> {
    let expected = auth.sessions().csrf_for(id.claims.sid());
    let given = super::csrf::header_value(headers)
        .map(str::to_owned)
        .or_else(|| form_body.and_then(|b| field(b, "csrf_token")));
    if super::csrf::matches(given.as_deref(), &expected) {
        return Ok(());
    }
    super::logout::origin_rule(auth, headers, ctx)
}

/// The page: one card per session, each with its own sign-out button, and one for all others.
fn page_body(title: &str, sessions: &[SessionInfo], current: &str, csrf: &str) -> String {
    let csrf = escape(csrf);
    let mut out = format!(
        "<h1>Your sessions</h1>\n<p>Where you are signed in to {}.</p>\n",
        escape(title)
    );
    for s in sessions {
        let this = s.sid == current;
        let device = if s.user_agent.is_empty() {
            "Unknown device"
        } else {
            &s.user_agent
        };
        let last = s
            .last_refresh
            .map_or_else(|| "not yet".to_owned(), utc_text);
        let ip = if s.ip.is_empty() { "unknown" } else { &s.ip };
        out.push_str(&format!(
            "<section class=\"s\"><h2>{device}{mark}</h2>\n<p>Signed in {started} with {method} from {ip}<br>Last refreshed {last}</p>\n\
             <form method=\"post\" action=\"/auth/sessions/{sid}/revoke\"><input type=\"hidden\" name=\"csrf_token\" value=\"{csrf}\"><button type=\"submit\">{label}</button></form></section>\n",
            device = escape(device),
            mark = if this { " <strong>(this browser)</strong>" } else { "" },
            started = escape(&utc_text(s.started)),
            method = escape(&s.method),
            ip = escape(ip),
            last = escape(&last),
            sid = escape(&s.sid),
            label = if this { "Sign out here" } else { "Sign out this session" },
        ));
    }
    if sessions.iter().any(|s| s.sid != current) {
        out.push_str(&format!(
            "<form method=\"post\" action=\"/auth/sessions/revoke-others\"><input type=\"hidden\" name=\"csrf_token\" value=\"{csrf}\"><button type=\"submit\">Sign out all other sessions</button></form>\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_escapes_what_clients_sent_and_marks_the_current_session() {
        let s = |sid: &str, ua: &str| SessionInfo {
            sid: sid.to_owned(),
            started: 0,
            last_refresh: None,
            ip: "192.0.2.7".to_owned(),
            user_agent: ua.to_owned(),
            method: "password".to_owned(),
            expires: 1,
        };
        let html = page_body(
            "App <1>",
            &[s("aaa", "<script>x</script>"), s("bbb", "")],
            "bbb",
            "tok\"",
        );
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("App &lt;1&gt;"));
        assert!(html.contains("Unknown device <strong>(this browser)</strong>"));
        assert!(html.contains("value=\"tok&quot;\""));
        assert!(html.contains("/auth/sessions/aaa/revoke"));
        assert!(html.contains("/auth/sessions/revoke-others"));
        assert!(html.contains("1970-01-01 00:00 UTC"));
    }

    #[test]
    fn only_sid_shaped_paths_are_sessions() {
        assert!(is_sid("AbC-_09"));
        assert!(!is_sid(""));
        assert!(!is_sid("a/b"));
        assert!(!is_sid("a.b"));
        assert!(!is_sid(&"a".repeat(65)));
    }
}
