//! The operator's session control on the admin listener (never the public one):
//! `GET /admin/sessions?user=NAME` lists a user's live sessions and
//! `POST /admin/sessions/<sid>/revoke[?user=NAME]` ends one (its user found from the store's
//! record when not given). Both show or change what belongs to users, so both need
//! `Authorization: Bearer <the content of admin.token_file>`, compared in constant time and
//! read at each request (a rotated file applies at once). Without `admin.token_file` they
//! answer 403 saying so: an admin port reached by accident must not revoke anything.

use crate::auth::csrf::constant_time_eq;
use crate::auth::form::field;
use crate::auth::Auth;
use crate::body::{full, Body};
use crate::error::GatewayError;
use http::header::{HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::path::Path;

/// True for the paths this module answers.
pub fn is_sessions_path(path: &str) -> bool {
    path == "/admin/sessions" || path.starts_with("/admin/sessions/")
}

pub async fn handle(
    auth: &Auth,
    token_file: Option<&Path>,
    req: Request<Incoming>,
) -> Response<Body> {
    if let Err(resp) = authorize(token_file, req.headers()) {
        return resp;
    }
    let query = req.uri().query().unwrap_or("");
    let user = field(query.as_bytes(), "user").filter(|u| !u.is_empty());
    let path = req.uri().path();
    let sid = path
        .strip_prefix("/admin/sessions/")
        .and_then(|r| r.strip_suffix("/revoke"))
        .filter(|s| !s.is_empty() && !s.contains('/'));
    let result = match (path, sid, req.method()) {
        ("/admin/sessions", _, &Method::GET) => list(auth, user.as_deref()).await,
        (_, Some(sid), &Method::POST) => revoke(auth, sid, user.as_deref()).await,
        ("/admin/sessions", _, _) | (_, Some(_), _) => Err(GatewayError::MethodNotAllowed),
        _ => Err(GatewayError::NotFound),
    };
    result.unwrap_or_else(|e| {
        let (status, code) = e.status_and_code();
        error(status, code, &e.to_string())
    })
}

async fn list(auth: &Auth, user: Option<&str>) -> Result<Response<Body>, GatewayError> {
    let user =
        user.ok_or_else(|| GatewayError::BadRequest("name the user: ?user=NAME".to_owned()))?;
    let sessions = auth.sessions().list(user).await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "user": user, "sessions": sessions }),
    ))
}

async fn revoke(
    auth: &Auth,
    sid: &str,
    user: Option<&str>,
) -> Result<Response<Body>, GatewayError> {
    let sessions = auth.sessions();
    let owner = sessions.store().session_owner(sid).await?;
    let user = match (owner, user) {
        (Some(owner), Some(given)) if owner != given => {
            return Err(GatewayError::Conflict(
                "that session belongs to another user",
            ))
        }
        (Some(owner), _) => owner,
        // Its record was pushed out or lost: the operator's word for whose it is.
        (None, Some(given)) => given.to_owned(),
        (None, None) => return Err(GatewayError::NotFound),
    };
    sessions.end_session(&user, sid).await?;
    crate::audit!("session_revoked", by = "operator", user = %user, sid = %sid);
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "revoked": sid, "user": user }),
    ))
}

/// The admin token check: 403 when none is configured, 401 when absent or wrong. Shared by
/// every `/admin/*` endpoint that changes or shows what belongs to users.
#[allow(clippy::result_large_err)]
pub(crate) fn authorize(
    token_file: Option<&Path>,
    headers: &http::HeaderMap,
) -> Result<(), Response<Body>> {
    let Some(file) = token_file else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the admin endpoints (/admin/*) are off: set admin.token_file to a file holding a bearer token",
        ));
    };
    let expected = match std::fs::read_to_string(file) {
        Ok(t) if t.trim().len() >= 16 => t.trim().to_owned(),
        other => {
            let why = other
                .err()
                .map_or_else(|| "it holds no token".to_owned(), |e| e.to_string());
            tracing::error!(file = %file.display(), error = %why, "admin.token_file cannot be read");
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "admin.token_file cannot be read",
            ));
        }
    };
    let given = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    if given.is_some_and(|g| constant_time_eq(g, &expected)) {
        return Ok(());
    }
    let mut resp = error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "send Authorization: Bearer <the content of admin.token_file>",
    );
    resp.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"authgate-admin\""),
    );
    Err(resp)
}

pub(crate) fn json(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(full(v.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub(crate) fn error(status: StatusCode, code: &str, description: &str) -> Response<Body> {
    json(
        status,
        &serde_json::json!({ "error": code, "error_description": description }),
    )
}
