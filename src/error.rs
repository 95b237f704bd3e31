//! `GatewayError` and the ONE function that turns any of them into the contract's response:
//! status, `{"error","error_description"}` JSON and, for token problems, `WWW-Authenticate`.

use crate::body::{full, Body};
use http::header::{HeaderValue, CONTENT_TYPE, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Response, StatusCode};

/// Everything that can stop a request before (or instead of) the upstream answering.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no token on a protected route")]
    MissingToken,
    /// Browser route without a session: send to the login page.
    #[error("login required")]
    LoginRedirect { next: String },
    #[error("{0}")]
    InvalidToken(crate::auth::tokens::TokenError),
    #[error("invalid username or password")]
    InvalidCredentials,
    /// A second-factor code that is wrong, replayed, or a recovery code already used.
    #[error("the code is wrong or was already used")]
    InvalidCode,
    /// A passkey assertion or registration that did not verify.
    #[error("the passkey was not accepted")]
    InvalidPasskey,
    /// A `second_factor = true` route, and the session did not pass one.
    #[error("this route needs a session signed in with a second factor")]
    SecondFactorRequired,
    /// `login.second_factor = "required"` and the user has none: enrol in the browser.
    #[error(
        "a second factor must be enrolled first: sign in at /auth/login in a browser to set one up"
    )]
    EnrolmentRequired,
    #[error("a required role is missing")]
    InsufficientRole,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("missing or wrong CSRF token")]
    Csrf,
    #[error("no route matches")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(&'static str),
    #[error("request body too large")]
    BodyTooLarge,
    #[error("request headers too large")]
    HeadersTooLarge,
    #[error("the request body stalled")]
    RequestTimeout,
    #[error("too many failed attempts")]
    TooManyAttempts { retry_after: u64 },
    #[error("upstream unreachable: {0}")]
    BadGateway(String),
    #[error("upstream too slow")]
    GatewayTimeout,
    #[error("{0}")]
    Unavailable(&'static str),
    /// Checks of the same account are in flight: retry in a second (429, `Retry-After: 1`).
    #[error("{0}")]
    Busy(&'static str),
    #[error("internal error: {0}")]
    Internal(String),
    /// A 401 on a `basic = true` route: the inner error, with a Basic challenge.
    #[error("{0}")]
    BasicChallenge(Box<GatewayError>),
}

impl GatewayError {
    /// Status and contract error code; `None` code means no JSON `error` member is required
    /// but one is still sent for uniformity.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use GatewayError::*;
        match self {
            BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            MissingToken => (StatusCode::UNAUTHORIZED, "unauthorized"),
            LoginRedirect { .. } => (StatusCode::FOUND, "login_required"),
            InvalidToken(_) => (StatusCode::UNAUTHORIZED, "invalid_token"),
            InvalidCredentials => (StatusCode::UNAUTHORIZED, "invalid_credentials"),
            InvalidCode => (StatusCode::UNAUTHORIZED, "invalid_code"),
            InvalidPasskey => (StatusCode::UNAUTHORIZED, "invalid_passkey"),
            SecondFactorRequired => (StatusCode::UNAUTHORIZED, "insufficient_user_authentication"),
            EnrolmentRequired => (StatusCode::FORBIDDEN, "mfa_enrollment_required"),
            InsufficientRole => (StatusCode::FORBIDDEN, "insufficient_role"),
            Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Csrf => (StatusCode::FORBIDDEN, "csrf"),
            NotFound => (StatusCode::NOT_FOUND, "not_found"),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "invalid_request"),
            Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            HeadersTooLarge => (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "too_large"),
            RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            TooManyAttempts { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts"),
            BadGateway(_) => (StatusCode::BAD_GATEWAY, "bad_gateway"),
            GatewayTimeout => (StatusCode::GATEWAY_TIMEOUT, "gateway_timeout"),
            Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Busy(_) => (StatusCode::TOO_MANY_REQUESTS, "busy"),
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
            BasicChallenge(inner) => inner.status_and_code(),
        }
    }

    /// Text for the client. Never echoes a token or password: every variant's text is ours.
    fn description(&self) -> String {
        match self {
            GatewayError::BadGateway(_) => "the upstream could not be reached".to_owned(),
            GatewayError::Internal(_) => "internal error".to_owned(),
            GatewayError::BasicChallenge(inner) => inner.description(),
            other => other.to_string(),
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let (status, code) = self.status_and_code();
        let body = serde_json::json!({ "error": code, "error_description": self.description() });
        let mut resp = Response::new(full(body.to_string()));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
        match &self {
            GatewayError::BasicChallenge(_) => {
                h.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"authgate\", charset=\"UTF-8\""),
                );
            }
            GatewayError::MissingToken => {
                h.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"authgate\""),
                );
            }
            GatewayError::InvalidToken(_) => {
                h.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"authgate\", error=\"invalid_token\""),
                );
            }
            GatewayError::SecondFactorRequired => {
                h.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        "Bearer realm=\"authgate\", error=\"insufficient_user_authentication\"",
                    ),
                );
            }
            GatewayError::TooManyAttempts { retry_after } => {
                h.insert(
                    RETRY_AFTER,
                    HeaderValue::from(retry_after.max(&1).to_owned()),
                );
            }
            GatewayError::Unavailable(_) | GatewayError::Busy(_) => {
                h.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            GatewayError::LoginRedirect { next } => {
                let target = format!("/auth/login?next={}", crate::path::encode_component(next));
                if let Ok(v) = HeaderValue::from_str(&target) {
                    h.insert(LOCATION, v);
                }
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_token_has_bearer_challenge() {
        let resp =
            GatewayError::InvalidToken(crate::auth::tokens::TokenError::Expired).into_response();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let challenge = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok());
        assert_eq!(
            challenge,
            Some("Bearer realm=\"authgate\", error=\"invalid_token\"")
        );
    }

    #[test]
    fn retry_after_is_at_least_one() {
        let resp = GatewayError::TooManyAttempts { retry_after: 0 }.into_response();
        assert_eq!(
            resp.headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
            Some("1")
        );
    }
}
