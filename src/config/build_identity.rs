//! `[identity]`: how the upstream learns who the caller is (the subject and roles headers,
//! HTTP Basic for apps that read only that, the token itself).

use super::build::{resolve, span, trim_ascii_end};
use super::error::Reporter;
use super::raw::{self, Text};
use super::IdentityConfig;
use http::header::HeaderName;
use std::path::Path;
use toml::Spanned;

fn header_name(
    rep: &mut Reporter,
    v: &Option<Spanned<Text>>,
    key: &str,
    default: &str,
) -> HeaderName {
    let text = v.as_ref().map_or(default, |s| s.get_ref().0.as_str());
    HeaderName::from_bytes(text.as_bytes()).unwrap_or_else(|_| {
        rep.error(
            v.as_ref().and_then(span),
            key,
            format!("{text:?} is not a valid header name"),
            None,
        );
        HeaderName::from_static("x-invalid")
    })
}

pub(super) fn build_identity(
    rep: &mut Reporter,
    base: &Path,
    raw: &raw::RawIdentity,
) -> IdentityConfig {
    let password = match &raw.basic_auth_password_file {
        None => Some(String::new()),
        Some(f) => match std::fs::read(resolve(base, &f.get_ref().0)) {
            Ok(bytes) => match String::from_utf8(trim_ascii_end(bytes)) {
                Ok(p) if !p.contains(':') => Some(p),
                _ => {
                    rep.error(
                        span(f),
                        "identity.basic_auth_password_file",
                        "the password must be UTF-8 text without ':'",
                        None,
                    );
                    None
                }
            },
            Err(e) => {
                rep.error(
                    span(f),
                    "identity.basic_auth_password_file",
                    format!("cannot read {}: {e}", f.get_ref().0),
                    Some("create the file, or remove the key (an empty password)".to_owned()),
                );
                None
            }
        },
    };
    if raw.basic_auth_password_file.is_some() && raw.pass_basic_auth != Some(true) {
        rep.error(
            raw.basic_auth_password_file.as_ref().and_then(span),
            "identity.basic_auth_password_file",
            "only pass_basic_auth = true uses it",
            Some("set pass_basic_auth = true or remove it".to_owned()),
        );
    }
    let subject_header = identity_header(
        rep,
        &raw.subject_header,
        "identity.subject_header",
        "X-Auth-User",
    );
    let roles_header = identity_header(
        rep,
        &raw.roles_header,
        "identity.roles_header",
        "X-Auth-Roles",
    );
    if same_header(subject_header.as_str(), roles_header.as_str()) {
        rep.error(
            raw.roles_header.as_ref().and_then(span),
            "identity.roles_header",
            format!("{roles_header:?} is also identity.subject_header"),
            Some("give the subject and the roles headers different names".to_owned()),
        );
    }
    IdentityConfig {
        pass_basic_auth: if raw.pass_basic_auth == Some(true) {
            password
        } else {
            None
        },
        subject_header,
        roles_header,
        forward_token: raw.forward_token.unwrap_or(false),
    }
}

/// Headers an identity header may not be named like: the gateway sets them itself, strips
/// them, or they carry the request's framing or credentials.
const NOT_IDENTITY_HEADERS: [&str; 21] = [
    "host",
    "authorization",
    "cookie",
    "connection",
    "upgrade",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "content-length",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-prefix",
    "x-real-ip",
    "x-request-id",
    "x-auth-key",
    "x-api-key",
    "traceparent",
    "tracestate",
];

/// The same header for an upstream stack that folds case and reads `_` as `-` (CGI, WSGI and
/// PHP name both `HTTP_X_AUTH_USER`). The request path's identity strip uses it too.
pub fn same_header(a: &str, b: &str) -> bool {
    let fold = |c: u8| {
        if c == b'_' {
            b'-'
        } else {
            c.to_ascii_lowercase()
        }
    };
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| fold(x) == fold(y))
}

/// An identity header's name: valid, and none of [`NOT_IDENTITY_HEADERS`].
fn identity_header(
    rep: &mut Reporter,
    v: &Option<Spanned<Text>>,
    key: &str,
    default: &str,
) -> HeaderName {
    let name = header_name(rep, v, key, default);
    if NOT_IDENTITY_HEADERS
        .iter()
        .any(|n| same_header(n, name.as_str()))
    {
        rep.error(
            v.as_ref().and_then(span),
            key,
            format!(
                "{:?} is a header the gateway sets, strips or needs for itself",
                name.as_str()
            ),
            Some(format!("name it like the default, {default}")),
        );
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookalikes_of_the_gateways_headers_are_caught() {
        assert!(same_header("X_Forwarded_For", "x-forwarded-for"));
        assert!(same_header("HOST", "host"));
        assert!(!same_header("x-auth-user", "x-auth-users"));
        for name in NOT_IDENTITY_HEADERS {
            assert!(HeaderName::from_static(name).as_str() == name, "{name}");
        }
    }
}
