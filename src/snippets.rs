//! `authgate explain --forward-auth PROXY`: the configuration to paste into an nginx, Envoy,
//! Traefik or Caddy in front, for this gateway. Each closes the traps of its proxy: clients
//! never reach `/auth/verify*`, client-sent convention and identity headers are cleared,
//! `X-Forwarded-For` is set by the proxy, `Authorization` is not passed on where the proxy can
//! drop it, and (Envoy) paths are normalized before routing and underscore headers refused.

use crate::config::Config;

/// The Envoy bootstrap's listener address, to change to the port Envoy should listen on.
pub const ENVOY_LISTEN: &str = "socket_address: { address: 0.0.0.0, port_value: 8080 }";
/// The Envoy bootstrap's `app` cluster address, to change to the app's.
pub const ENVOY_APP: &str = "{ socket_address: { address: 127.0.0.1, port_value: 3000 } }";

/// The line of the nginx snippet after which its `server {}` part starts.
pub const NGINX_SERVER_PART: &str = "# ---- inside your server { } block ----";

/// The proxies there is a snippet for.
pub const PROXIES: [&str; 4] = ["nginx", "envoy", "traefik", "caddy"];

/// The snippet for `proxy` and the gateway listening on `server.listen`, or None for an
/// unknown proxy.
pub fn for_proxy(proxy: &str, config: &Config) -> Option<String> {
    for_address(proxy, config.server.listen, &config.identity)
}

/// The snippet for a gateway reachable at `listen`.
pub fn for_address(
    proxy: &str,
    listen: std::net::SocketAddr,
    identity: &crate::config::IdentityConfig,
) -> Option<String> {
    let host = if listen.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        listen.ip().to_string()
    };
    let authgate = format!("{host}:{}", listen.port());
    let user = identity.subject_header.as_str();
    let roles = identity.roles_header.as_str();
    Some(match proxy {
        "nginx" => nginx(&authgate, user, roles),
        "envoy" => envoy(&host, listen.port(), user, roles),
        "traefik" => traefik(&authgate, user, roles),
        "caddy" => caddy(&authgate, user, roles),
        _ => return None,
    })
}

fn var(header: &str) -> String {
    header.to_ascii_lowercase().replace('-', "_")
}

fn nginx(authgate: &str, user: &str, roles: &str) -> String {
    let (u, r) = (var(user), var(roles));
    format!(
        r#"# authgate forward-auth for nginx (auth_request), in two parts: the first in `http {{ }}`,
# the second inside your `server {{ }}` block. `your_app` is your app's upstream. authgate:
# server.trusted_proxies must list this nginx. nginx drops client headers with underscores
# (underscores_in_headers off): keep it so.
upstream authgate {{
    server {authgate};
    keepalive 32;   # the check runs on every request: reuse connections to it
}}
{NGINX_SERVER_PART}
location = /_authgate {{
    internal;
    proxy_pass http://authgate/auth/verify/nginx;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_pass_request_body off;
    proxy_set_header Content-Length "";
    proxy_set_header X-Original-Method $request_method;
    proxy_set_header X-Original-URI $request_uri;   # raw: authgate normalizes it itself
    proxy_set_header Host $http_host;   # with its port ($host drops it): the browser's origin
    proxy_set_header X-Forwarded-For $remote_addr;   # the client, not what it claims
    proxy_set_header X-Forwarded-Proto $scheme;
    # auth_request passes every client header on: clear the other conventions'.
    proxy_set_header X-Forwarded-Method "";
    proxy_set_header X-Forwarded-Uri "";
    proxy_set_header X-Forwarded-Host "";
}}

# Clients never reach the check itself.
location ^~ /auth/verify {{ return 404; }}

# Sign-in, refresh and sign-out pages are authgate's.
location ^~ /auth/ {{
    proxy_pass http://authgate;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $http_host;   # a form login's Origin names the port too
    proxy_set_header X-Forwarded-For $remote_addr;
    proxy_set_header X-Forwarded-Proto $scheme;
}}

location @authgate_401 {{
    absolute_redirect off;
    if ($authgate_redirect) {{ return 302 $authgate_redirect; }}
    return 401;
}}

location / {{
    auth_request /_authgate;
    auth_request_set $authgate_user $upstream_http_{u};
    auth_request_set $authgate_roles $upstream_http_{r};
    auth_request_set $authgate_redirect $upstream_http_x_auth_redirect;
    auth_request_set $authgate_key $upstream_http_x_auth_key;
    error_page 401 = @authgate_401;
    # Set from authgate's answer only: a client's own copy is overwritten (empty on public routes).
    proxy_set_header {user} $authgate_user;
    proxy_set_header {roles} $authgate_roles;
    proxy_set_header X-Auth-Key $authgate_key;   # the API key's name, on api_keys routes
    proxy_set_header Authorization "";
    proxy_set_header X-API-Key "";
    proxy_set_header X-Forwarded-For $remote_addr;
    proxy_pass http://your_app;
}}
# authgate cannot strip its cookies from what nginx forwards: the app sees authgate_* cookies.
"#
    )
}

/// Every other spelling of `header` with `-` and `_` between its words (`X-Auth_User`,
/// `X_Auth-User`, `X_Auth_User` for `X-Auth-User`): apps that fold header names CGI-style
/// (`HTTP_X_AUTH_USER`: WSGI, PHP, CGI) read each of them as `header`. Case needs no
/// variants where the proxy compares names case-insensitively (Traefik, in Go, does).
fn other_spellings(header: &str) -> Vec<String> {
    let mut words = header.split(['-', '_']);
    let mut joined = vec![words.next().unwrap_or_default().to_owned()];
    for word in words {
        joined = joined
            .iter()
            .flat_map(|j| ["-", "_"].map(|sep| format!("{j}{sep}{word}")))
            .collect();
    }
    joined.retain(|j| !j.eq_ignore_ascii_case(header));
    joined
}

fn traefik(authgate: &str, user: &str, roles: &str) -> String {
    let mut clean = String::new();
    for spelling in other_spellings(user).iter().chain(&other_spellings(roles)) {
        clean.push_str(&format!("          \"{spelling}\": \"\"\n"));
    }
    format!(
        r#"# authgate forward-auth for Traefik (dynamic configuration). `your-app` is your
# service. authgate: server.trusted_proxies must list Traefik.
http:
  middlewares:
    authgate:
      forwardAuth:
        address: "http://{authgate}/auth/verify"
        trustForwardHeader: false        # Traefik sets X-Forwarded-* itself, from the client
        authResponseHeaders:             # replaced on the request (removed when absent)
          - "{user}"
          - "{roles}"
          - "X-Auth-Key"
    authgate-nobody:
      ipAllowList:
        sourceRange: ["255.255.255.255/32"]
    authgate-clean:
      headers:
        customRequestHeaders:            # "" removes the header
          Authorization: ""              # the app gets the identity, not the token
          X-API-Key: ""
          # Traefik passes `_` spellings, which apps that fold header names (CGI, PHP,
          # WSGI) read as the identity: every mix of `-` and `_` (any case: Go folds it).
{clean}  routers:
    authgate-check:                      # clients never reach the check itself (403)
      rule: "PathPrefix(`/auth/verify`)"
      priority: 300
      middlewares: ["authgate-nobody"]
      service: authgate
    authgate-pages:
      rule: "PathPrefix(`/auth/`) || Path(`/.well-known/jwks.json`)"
      priority: 200
      service: authgate
    app:
      rule: "PathPrefix(`/`)"
      priority: 1
      middlewares: ["authgate", "authgate-clean"]
      service: your-app
  services:
    authgate:
      loadBalancer:
        servers: [{{ url: "http://{authgate}" }}]
# authgate cannot strip its cookies from what Traefik forwards: the app sees authgate_* cookies.
"#
    )
}

fn caddy(authgate: &str, user: &str, roles: &str) -> String {
    format!(
        r#"# authgate forward-auth for Caddy (Caddyfile). `your-app:8080` is your app.
# authgate: server.trusted_proxies must list Caddy.
example.com {{
	# Clients never reach the check itself.
	handle /auth/verify* {{
		respond 404
	}}
	# Sign-in, refresh and sign-out pages are authgate's.
	handle /auth/* {{
		reverse_proxy {authgate}
	}}
	handle {{
		# `route` keeps this order (Caddy otherwise sorts directives, running
		# request_header after forward_auth).
		route {{
			# Caddy passes a client's own headers to the check and keeps a client's copy of
			# a header the answer lacks: clear the other conventions' and any identity a
			# client made up, before asking.
			request_header -X-Original-URI
			request_header -X-Original-Method
			request_header -{user}
			request_header -{roles}
			request_header -X-Auth-Key
			forward_auth {authgate} {{
				uri /auth/verify
				copy_headers {user} {roles} X-Auth-Key
			}}
			request_header -Authorization
			request_header -X-API-Key
			reverse_proxy your-app:8080
		}}
	}}
}}
# authgate cannot strip its cookies from what Caddy forwards: the app sees authgate_* cookies.
"#
    )
}

fn envoy(host: &str, port: u16, user: &str, roles: &str) -> String {
    let (u, r) = (user.to_ascii_lowercase(), roles.to_ascii_lowercase());
    format!(
        r#"# authgate forward-auth for Envoy (ext_authz, HTTP service): a whole bootstrap,
# `envoy -c envoy.yaml`. Change the listener (port 8080) and the `app` cluster
# (127.0.0.1:3000) to yours. authgate: server.trusted_proxies must list this Envoy.
static_resources:
  listeners:
  - name: ingress
    address:
      {ENVOY_LISTEN}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          # Route on the normalized path (else /auth/%76erify slips past the block below) and
          # refuse header names with underscores (x_auth_user would reach the app).
          normalize_path: true
          merge_slashes: true
          path_with_escaped_slashes_action: REJECT_REQUEST
          common_http_protocol_options:
            headers_with_underscores_action: REJECT_REQUEST
          use_remote_address: true          # X-Forwarded-For from the connection
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/auth/verify" }}      # clients never reach the check
                direct_response: {{ status: 404 }}
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    disabled: true
              - match: {{ prefix: "/auth/" }}            # sign-in pages are authgate's
                route: {{ cluster: authgate }}
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    disabled: true
              - match: {{ prefix: "/" }}
                route: {{ cluster: app }}
                request_headers_to_remove: ["authorization", "x-api-key"]
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              failure_mode_allow: false
              status_on_error: {{ code: ServiceUnavailable }}   # else a 5xx from authgate is a 403
              http_service:
                server_uri: {{ uri: "http://{host}:{port}", cluster: authgate, timeout: 2s }}
                path_prefix: /auth/verify/ext_authz
                authorization_request:
                  allowed_headers:
                    patterns:
                    - {{ exact: authorization }}
                    - {{ exact: x-api-key }}         # API keys (api_keys routes)
                    - {{ exact: cookie }}
                    - {{ exact: x-csrf-token }}
                    - {{ exact: origin }}            # the CSRF origin rule (§10)
                    - {{ exact: sec-fetch-site }}
                    - {{ exact: sec-fetch-mode }}    # navigations vs fetches
                    - {{ exact: accept }}
                    - {{ exact: upgrade }}           # a WebSocket handshake is judged too
                    - {{ exact: x-forwarded-for }}
                    - {{ exact: x-forwarded-proto }}
                authorization_response:
                  allowed_upstream_headers:        # copied onto the request (over a client's)
                    patterns: [{{ exact: {u} }}, {{ exact: {r} }}, {{ exact: x-auth-key }}]
                  allowed_client_headers:          # to the client on refusals
                    patterns:
                    - {{ exact: location }}
                    - {{ exact: www-authenticate }}
                    - {{ exact: content-type }}
                    - {{ exact: x-auth-error }}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: authgate
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: authgate
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: {host}, port_value: {port} }} }} }}
  - name: app
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: app
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {ENVOY_APP} }}
# authgate answers every 200 with x-envoy-auth-headers-to-remove for identity headers it did
# not set (all of them on public routes). authgate cannot strip its cookies from what Envoy
# forwards: the app sees authgate_* cookies.
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_other_spelling_of_an_identity_header() {
        let mut got = other_spellings("X-Auth-User");
        got.sort();
        assert_eq!(got, ["X-Auth_User", "X_Auth-User", "X_Auth_User"]);
        assert_eq!(other_spellings("X-User"), ["X_User"]);
        assert!(other_spellings("Remote").is_empty());
        let mut got = other_spellings("x_auth_roles");
        got.sort();
        assert_eq!(got, ["x-auth-roles", "x-auth_roles", "x_auth-roles"]);
    }
}
