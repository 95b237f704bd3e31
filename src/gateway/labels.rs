//! The `route` label of the gateway's own endpoints in `authgate_requests_total` and
//! `authgate_request_duration_seconds`: one value per endpoint (`authgate:login`,
//! `authgate:refresh`, ...), so a login storm and a refresh storm are told apart. The
//! `authgate:` prefix keeps them apart from route labels, which are route names or patterns.
//! A fixed set: an unknown `/auth/*` path is `authgate:other`, never the path itself.

/// Forward-auth (`/auth/verify*`).
pub const VERIFY: &str = "authgate:verify";

/// The label of a request the gateway answers itself, by its judged path.
pub fn own_endpoint(path: &str) -> &'static str {
    let path = path.trim_end_matches('/');
    let under = |prefix: &str| {
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    if under("/auth/login") {
        "authgate:login"
    } else if under("/auth/refresh") {
        "authgate:refresh"
    } else if under("/auth/logout") {
        "authgate:logout"
    } else if under("/auth/me") {
        "authgate:me"
    } else if under("/auth/register") {
        "authgate:register"
    } else if under("/auth/oidc") {
        "authgate:oidc"
    } else if under("/auth/sessions") {
        "authgate:sessions"
    } else if under("/auth/account") {
        "authgate:account"
    } else if under("/auth/verify") {
        VERIFY
    } else if path == "/.well-known/jwks.json" {
        "authgate:jwks"
    } else {
        "authgate:other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_endpoint_has_its_label_and_the_rest_one_fixed_label() {
        for (path, label) in [
            ("/auth/login", "authgate:login"),
            ("/auth/login/", "authgate:login"),
            ("/auth/login/totp", "authgate:login"),
            ("/auth/refresh", "authgate:refresh"),
            ("/auth/logout", "authgate:logout"),
            ("/auth/me", "authgate:me"),
            ("/auth/register", "authgate:register"),
            ("/auth/oidc/corp/callback", "authgate:oidc"),
            ("/auth/sessions/abc/revoke", "authgate:sessions"),
            ("/auth/account", "authgate:account"),
            ("/auth/verify/nginx", "authgate:verify"),
            ("/.well-known/jwks.json", "authgate:jwks"),
            ("/auth/meow", "authgate:other"),
            ("/auth", "authgate:other"),
            ("/auth/x/../../etc", "authgate:other"),
        ] {
            assert_eq!(own_endpoint(path), label, "{path}");
        }
    }
}
