//! `POST /admin/unlock` on the admin listener (never the public one): lifts a lockout by
//! clearing the login-failure counter of a client address (`ip=ADDR`) and/or a user
//! (`user=NAME`), given in the query or a form body. It works on every store: the memory and
//! file stores keep their counters inside this process, so this endpoint (not the CLI) is
//! how an operator reaches them; with Redis it clears the shared counter for every replica.
//! Guarded like `/admin/sessions`: `Authorization: Bearer <admin.token_file>`.

use crate::admin_sessions::{authorize, error, json};
use crate::auth::form::field;
use crate::auth::sessions::{ip_counter, user_counter};
use crate::auth::Auth;
use crate::body::Body;
use crate::error::GatewayError;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

pub const PATH: &str = "/admin/unlock";

/// A form body holds two short fields: anything longer is not an unlock request.
const MAX_BODY: usize = 4096;
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// What to unlock.
#[derive(Debug, PartialEq, Eq)]
struct Targets {
    user: Option<String>,
    ip: Option<IpAddr>,
}

pub async fn handle(
    auth: &Auth,
    token_file: Option<&Path>,
    req: Request<Incoming>,
) -> Response<Body> {
    if let Err(resp) = authorize(token_file, req.headers()) {
        return resp;
    }
    let result = async {
        if req.method() != Method::POST {
            return Err(GatewayError::MethodNotAllowed);
        }
        let query = req.uri().query().unwrap_or("").to_owned();
        let body = read_body(req.into_body()).await?;
        let targets = targets(query.as_bytes(), &body)?;
        unlock(auth, &targets).await
    }
    .await;
    result.unwrap_or_else(|e| {
        let (status, code) = e.status_and_code();
        error(status, code, &e.to_string())
    })
}

async fn read_body(body: Incoming) -> Result<bytes::Bytes, GatewayError> {
    match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect()).await {
        Err(_) => Err(GatewayError::RequestTimeout),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(GatewayError::BodyTooLarge),
        Ok(Err(e)) => Err(GatewayError::BadRequest(format!("unreadable body: {e}"))),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// `user` and `ip` from the query, else from the form body; at least one of them.
fn targets(query: &[u8], body: &[u8]) -> Result<Targets, GatewayError> {
    let get = |name: &str| {
        field(query, name)
            .or_else(|| field(body, name))
            .filter(|v| !v.is_empty())
    };
    let ip =
        match get("ip") {
            Some(text) => Some(text.trim().parse::<IpAddr>().map_err(|_| {
                GatewayError::BadRequest(format!("ip={text:?} is not an IP address"))
            })?),
            None => None,
        };
    let user = get("user");
    if ip.is_none() && user.is_none() {
        return Err(GatewayError::BadRequest(
            "name what to unlock: ip=ADDR and/or user=NAME".to_owned(),
        ));
    }
    Ok(Targets { user, ip })
}

async fn unlock(auth: &Auth, t: &Targets) -> Result<Response<Body>, GatewayError> {
    let store = auth.sessions().store();
    let mut done = serde_json::Map::new();
    if let Some(user) = &t.user {
        store.clear_failures(&user_counter(user)).await?;
        crate::audit!("lockout_cleared", by = "operator", user = %user);
        done.insert("user".to_owned(), user.clone().into());
    }
    if let Some(ip) = t.ip {
        store.clear_failures(&ip_counter(ip)).await?;
        crate::audit!("lockout_cleared", by = "operator", ip = %ip);
        done.insert("ip".to_owned(), ip.to_string().into());
    }
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "unlocked": done }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_come_from_the_query_or_the_form_body() {
        let t = targets(b"ip=10.0.0.7", b"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.ip, "10.0.0.7".parse().ok());
        assert_eq!(t.user, None);
        let t = targets(b"", b"user=alice&ip=%3A%3A1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.user.as_deref(), Some("alice"));
        assert_eq!(t.ip, "::1".parse().ok());
        assert!(matches!(
            targets(b"", b""),
            Err(GatewayError::BadRequest(_))
        ));
        assert!(matches!(
            targets(b"ip=", b"user="),
            Err(GatewayError::BadRequest(_))
        ));
        assert!(matches!(
            targets(b"ip=10.0.0.300", b""),
            Err(GatewayError::BadRequest(_))
        ));
    }
}
