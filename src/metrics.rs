//! Prometheus metrics: requests by route and status, latency by route, auth decisions and
//! logins by outcome, store round trips by operation, the verified-token cache, upstream
//! latency and errors, connections, config reloads. Every label is bounded: routes and
//! upstreams come from the config, the rest are fixed sets.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::borrow::Cow;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Borrowed for routes (their labels live as long as the process), so counting a request
    /// allocates nothing.
    pub route: Cow<'static, str>,
    pub status: u16,
}

/// How forwarding to an upstream failed: the `kind` label of `authgate_upstream_errors_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum UpstreamErrorKind {
    /// No connection could be made (refused, unreachable, connect timeout).
    connect,
    /// The upstream did not answer within `request_timeout`.
    timeout,
    /// The connection broke while the request or response was on it.
    io,
}

impl UpstreamErrorKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::connect => "connect",
            UpstreamErrorKind::timeout => "timeout",
            UpstreamErrorKind::io => "io",
        }
    }
}

/// The request-latency histogram's label: the route's label (bounded by the config), or one
/// per own endpoint (`authgate:login`, `authgate:verify`, ...: `gateway::labels`) and `none`
/// (no route).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: Cow<'static, str>,
}

/// What the judgment of a protected request came to.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum AuthOutcome {
    ok,
    missing,
    invalid,
    expired,
    revoked,
    forbidden,
    csrf,
}

impl AuthOutcome {
    pub const ALL: [AuthOutcome; 7] = [
        AuthOutcome::ok,
        AuthOutcome::missing,
        AuthOutcome::invalid,
        AuthOutcome::expired,
        AuthOutcome::revoked,
        AuthOutcome::forbidden,
        AuthOutcome::csrf,
    ];
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    pub outcome: AuthOutcome,
}

/// How a login ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum LoginOutcome {
    ok,
    invalid_credentials,
    throttled,
    unavailable,
    error,
    /// Checks of the same account were in flight: answered 429 with `Retry-After: 1`.
    busy,
    /// OIDC: the provider answered an error (`access_denied`...), or the user it named may
    /// not sign in here (domain, name, `users = "known"`).
    refused,
    /// OIDC: the state cookie was missing, expired, already used or did not match.
    invalid_state,
    /// OIDC: the code exchange or the ID token failed its checks.
    invalid_token,
    /// The password was right; a second factor must follow (or be enrolled).
    second_factor,
    /// A wrong, replayed or used-up second-factor code.
    invalid_code,
}

/// How the user signed in.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum LoginMethod {
    password,
    oidc,
    /// HTTP Basic on a `basic = true` route (a verification, not a session).
    basic,
    /// The second step: a TOTP or recovery code (`POST /auth/login/totp`).
    totp,
    /// A passkey: the second step, or alone (`login.passwordless`).
    passkey,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoginLabels {
    pub method: LoginMethod,
    pub outcome: LoginOutcome,
}

/// A store operation (`check`, `rotate`, `user_get`, ...): a fixed set named in the code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreOp {
    pub op: Cow<'static, str>,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum CacheResult {
    hit,
    miss,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub result: CacheResult,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ReloadResult {
    ok,
    error,
}

/// What happened to a session (`authgate_session_events_total{event}`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum SessionEvent {
    /// A refresh issued the next pair.
    refresh,
    /// One session ended (logout, the sessions page, the admin listener).
    logout,
    /// Every session of a user ended (`logout?all`).
    logout_all,
    /// A spent refresh token came back: the session was killed.
    refresh_reuse,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionLabels {
    pub event: SessionEvent,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: ReloadResult,
}

/// The statuses whose `authgate_requests_total` series a [`RouteSeries`] keeps at hand.
const COMMON_STATUSES: [u16; 16] = [
    200, 201, 204, 206, 301, 302, 304, 400, 401, 403, 404, 429, 500, 502, 503, 504,
];

/// One route label's request series (`authgate_requests_total` by the common statuses,
/// `authgate_request_duration_seconds`), each taken from its family once, on first use:
/// counting a request then costs no label hashing and no family lock. Series appear when
/// first counted, as with the families themselves.
pub struct RouteSeries {
    route: &'static str,
    latency: std::sync::OnceLock<Histogram>,
    by_status: [std::sync::OnceLock<Counter>; COMMON_STATUSES.len()],
}

impl RouteSeries {
    pub fn new(route: &'static str) -> RouteSeries {
        RouteSeries {
            route,
            latency: std::sync::OnceLock::new(),
            by_status: Default::default(),
        }
    }

    /// Counts one answered request of this route.
    pub fn count(&self, metrics: &Metrics, status: u16, seconds: f64) {
        self.latency
            .get_or_init(|| {
                metrics
                    .latency
                    .get_or_create(&RouteLabel {
                        route: Cow::Borrowed(self.route),
                    })
                    .clone()
            })
            .observe(seconds);
        let labels = || RequestLabels {
            route: Cow::Borrowed(self.route),
            status,
        };
        match COMMON_STATUSES
            .iter()
            .position(|s| *s == status)
            .and_then(|i| self.by_status.get(i))
        {
            Some(slot) => slot
                .get_or_init(|| metrics.requests.get_or_create(&labels()).clone())
                .inc(),
            None => metrics.requests.get_or_create(&labels()).inc(),
        };
    }
}

/// A latency histogram family (100 us to 13 s, doubling).
pub type Latencies<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamName {
    pub upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: String,
    pub kind: UpstreamErrorKind,
}

/// `authgate_build_info` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
    pub commit: &'static str,
}

pub struct Metrics {
    registry: Registry,
    /// `authgate_config_last_reload_success_timestamp_seconds`.
    last_reload: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub requests: Family<RequestLabels, Counter>,
    /// By route.
    pub latency: Latencies<RouteLabel>,
    /// Auth decisions on protected routes and forward-auth checks, by outcome.
    pub auth_decisions: Family<AuthLabels, Counter>,
    /// One counter per `AuthOutcome::ALL`, fetched once (no lookup per request).
    auth_counters: [Counter; 7],
    pub logins: Family<LoginLabels, Counter>,
    /// Round trips to the shared store (Redis), by operation.
    pub store_latency: Latencies<StoreOp>,
    /// Verified-token cache lookups: [hit, miss].
    pub token_cache: [Counter; 2],
    /// Time from forwarding a request to the upstream's response head, by upstream.
    pub upstream_latency: Latencies<UpstreamName>,
    pub config_reloads: Family<ReloadLabels, Counter>,
    pub upstream_errors: Family<UpstreamLabels, Counter>,
    /// Hosts taken out of rotation after failed connects, by upstream.
    pub upstream_ejections: Family<UpstreamName, Counter>,
    pub open_connections: Gauge,
    pub idle_connections: Gauge,
    pub store_errors: Counter,
    /// Messages on the revocation channel that the mirror could not decode.
    pub mirror_undecodable: Counter,
    /// `authgate_buffer_overflows_total`: bodies streamed because `server.max_buffered` was
    /// spent.
    pub buffer_overflows: Counter,
    /// `authgate_certificate_expiry_timestamp_seconds` (see `cert_expiry`).
    pub certificate_expiry: Family<crate::cert_expiry::CertLabels, Gauge>,
    /// Store and upstream outages, logged without flooding (see `outage`); here because,
    /// like the counters, they belong to the process and outlive reloads.
    pub outages: crate::outage::Outages,
    /// `authgate_session_events_total{event}`.
    pub sessions: Family<SessionLabels, Counter>,
    /// The password-hashing pool: jobs waiting, threads busy, jobs refused (queue full).
    pub hash_pool: HashPool,
}

/// The password-hashing pool's gauges (shared with the pool itself).
#[derive(Clone, Debug, Default)]
pub struct HashPool {
    pub queued: Gauge,
    pub busy: Gauge,
    pub refused: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        // The root: `process_*` (unprefixed, as every Prometheus client names them); the
        // gateway's own metrics under `authgate_`.
        let mut root = Registry::default();
        root.register_collector(Box::new(crate::metrics_process::ProcessCollector));
        let registry = root.sub_registry_with_prefix("authgate");
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                commit: option_env!("AUTHGATE_COMMIT").unwrap_or("unknown"),
            })
            .set(1);
        registry.register(
            "build_info",
            "The running build: always 1, its version and commit as labels",
            build_info,
        );
        let last_reload = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        last_reload.set(crate::clock::now_secs() as f64);
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "When the running configuration was loaded (start, or the last successful reload)",
            last_reload.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: Latencies<RouteLabel> = Family::new_with_constructor(latency_buckets);
        let auth_decisions = Family::<AuthLabels, Counter>::default();
        let auth_counters = AuthOutcome::ALL.map(|outcome| {
            auth_decisions
                .get_or_create(&AuthLabels { outcome })
                .clone()
        });
        let logins = Family::<LoginLabels, Counter>::default();
        let store_latency: Latencies<StoreOp> = Family::new_with_constructor(latency_buckets);
        let cache = Family::<CacheLabels, Counter>::default();
        let token_cache = [CacheResult::hit, CacheResult::miss]
            .map(|result| cache.get_or_create(&CacheLabels { result }).clone());
        let upstream_latency: Latencies<UpstreamName> =
            Family::new_with_constructor(latency_buckets);
        let config_reloads = Family::<ReloadLabels, Counter>::default();
        for result in [ReloadResult::ok, ReloadResult::error] {
            let _ = config_reloads.get_or_create(&ReloadLabels { result });
        }
        let upstream_errors = Family::<UpstreamLabels, Counter>::default();
        let upstream_ejections = Family::<UpstreamName, Counter>::default();
        let open_connections = Gauge::default();
        let idle_connections = Gauge::default();
        let store_errors = Counter::default();
        let mirror_undecodable = Counter::default();
        let buffer_overflows = Counter::default();
        registry.register(
            "requests",
            "Requests answered, by route and status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request head to response head, by route",
            latency.clone(),
        );
        registry.register(
            "auth_decisions",
            "Judgments of protected requests and forward-auth checks, by outcome",
            auth_decisions.clone(),
        );
        registry.register(
            "logins",
            "Logins by method (password, oidc) and outcome",
            logins.clone(),
        );
        registry.register(
            "store_duration_seconds",
            "Round trips to the shared store (Redis), by operation",
            store_latency.clone(),
        );
        registry.register(
            "token_cache_lookups",
            "Verified-token cache lookups, by result (hit: no signature check)",
            cache,
        );
        registry.register(
            "upstream_duration_seconds",
            "Time from forwarding to the upstream's response head, by upstream",
            upstream_latency.clone(),
        );
        registry.register(
            "config_reloads",
            "Config reloads (SIGHUP or a changed file) by result; a failed one keeps the running config",
            config_reloads.clone(),
        );
        registry.register(
            "upstream_errors",
            "Upstream failures by kind (connect, timeout, io)",
            upstream_errors.clone(),
        );
        registry.register(
            "upstream_host_ejections",
            "Upstream hosts taken out of rotation after failed connects (passive health)",
            upstream_ejections.clone(),
        );
        registry.register(
            "open_connections",
            "Open client connections on the public listener",
            open_connections.clone(),
        );
        registry.register(
            "idle_connections",
            "Of the open client connections, those idle between keep-alive requests (parked: their HTTP buffers freed)",
            idle_connections.clone(),
        );
        registry.register(
            "store_errors",
            "Revocation store calls that failed or timed out",
            store_errors.clone(),
        );
        registry.register(
            "mirror_undecodable_events",
            "Messages on the revocation channel the mirror could not decode (and ignored)",
            mirror_undecodable.clone(),
        );
        let certificate_expiry = Family::<crate::cert_expiry::CertLabels, Gauge>::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When each certificate in use stops being valid: the earliest notAfter of its chain, Unix seconds",
            certificate_expiry.clone(),
        );
        let sessions = Family::<SessionLabels, Counter>::default();
        registry.register(
            "session_events",
            "Session events: refresh, logout, logout_all, refresh_reuse (a spent refresh token came back; the session was killed)",
            sessions.clone(),
        );
        for event in [
            SessionEvent::refresh,
            SessionEvent::logout,
            SessionEvent::logout_all,
            SessionEvent::refresh_reuse,
        ] {
            let _ = sessions.get_or_create(&SessionLabels { event });
        }
        let hash_pool = HashPool::default();
        registry.register(
            "password_hash_queue",
            "Password checks waiting for a hashing thread",
            hash_pool.queued.clone(),
        );
        registry.register(
            "password_hash_threads_busy",
            "Hashing threads computing argon2 now (saturated when it equals their number)",
            hash_pool.busy.clone(),
        );
        registry.register(
            "password_hash_refused",
            "Password checks refused because the hashing queue was full (answered 503)",
            hash_pool.refused.clone(),
        );
        registry.register(
            "buffer_overflows",
            "Bodies streamed instead of buffered because server.max_buffered was spent",
            buffer_overflows.clone(),
        );
        Metrics {
            registry: root,
            last_reload,
            mirror_undecodable,
            buffer_overflows,
            certificate_expiry,
            outages: crate::outage::Outages::default(),
            sessions,
            hash_pool,
            requests,
            latency,
            auth_decisions,
            auth_counters,
            logins,
            store_latency,
            token_cache,
            upstream_latency,
            config_reloads,
            upstream_errors,
            upstream_ejections,
            open_connections,
            idle_connections,
            store_errors,
        }
    }

    /// Counts one session event.
    pub fn session(&self, event: SessionEvent) {
        self.sessions.get_or_create(&SessionLabels { event }).inc();
    }

    /// Counts one auth decision.
    pub fn auth(&self, outcome: AuthOutcome) {
        if let Some(c) = self.auth_counters.get(outcome as usize) {
            c.inc();
        }
    }

    /// Creates the error and outcome series a configuration can produce, at zero, so that
    /// `rate()` and `increase()` see the first one (a series born at 1 hides it) and an alert
    /// on a missing series is not needed. Runs at start and at each reload.
    pub fn present_at_zero<'a>(
        &self,
        upstreams: impl Iterator<Item = &'a str>,
        oidc: bool,
        basic: bool,
    ) {
        use LoginOutcome::*;
        for upstream in upstreams {
            for kind in [
                UpstreamErrorKind::connect,
                UpstreamErrorKind::timeout,
                UpstreamErrorKind::io,
            ] {
                let _ = self.upstream_errors.get_or_create(&UpstreamLabels {
                    upstream: upstream.to_owned(),
                    kind,
                });
            }
        }
        let mut logins = vec![(
            LoginMethod::password,
            &[ok, invalid_credentials, throttled, busy, unavailable, error][..],
        )];
        if oidc {
            let outcomes = &[ok, refused, invalid_state, invalid_token, unavailable][..];
            logins.push((LoginMethod::oidc, outcomes));
        }
        if basic {
            let outcomes = &[ok, invalid_credentials, throttled, unavailable, error][..];
            logins.push((LoginMethod::basic, outcomes));
        }
        for (method, outcomes) in logins {
            for &outcome in outcomes {
                let _ = self.logins.get_or_create(&LoginLabels { method, outcome });
            }
        }
    }

    pub fn login(&self, outcome: LoginOutcome) {
        self.login_by(LoginMethod::password, outcome);
    }

    pub fn login_by(&self, method: LoginMethod, outcome: LoginOutcome) {
        self.logins
            .get_or_create(&LoginLabels { method, outcome })
            .inc();
    }

    pub fn reload(&self, result: ReloadResult) {
        if result == ReloadResult::ok {
            self.last_reload.set(crate::clock::now_secs() as f64);
        }
        self.config_reloads
            .get_or_create(&ReloadLabels { result })
            .inc();
    }

    /// Prometheus text format 0.0.4 (what `promtool check metrics` and every Prometheus
    /// scrape without content negotiation read): OpenMetrics without `# EOF` and `# UNIT`,
    /// and counters named by their samples (`_total`) in `# HELP` and `# TYPE`.
    pub fn render_text(&self) -> String {
        let open = self.render();
        let counters: std::collections::HashSet<&str> = open
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.strip_suffix(" counter"))
            .collect();
        let mut out = String::with_capacity(open.len());
        for line in open.lines() {
            if line == "# EOF" || line.starts_with("# UNIT ") {
                continue;
            }
            let meta = ["# HELP ", "# TYPE "]
                .iter()
                .find_map(|p| line.strip_prefix(p).map(|rest| (*p, rest)));
            match meta {
                Some((prefix, rest)) => {
                    let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                    if counters.contains(name) && !name.ends_with("_total") {
                        out.push_str(&format!("{prefix}{name}_total {tail}"));
                    } else {
                        out.push_str(line);
                    }
                }
                None => out.push_str(line),
            }
            out.push('\n');
        }
        out
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A route's series are the families' own: counted through `RouteSeries` (a common status
    /// and a rare one) or through the family, they add up in one series, and none appears
    /// before it is counted.
    #[test]
    fn route_series_count_into_the_families() {
        let m = Metrics::new();
        let s = RouteSeries::new("/api/**");
        assert!(!m.render_text().contains("route=\"/api/**\""));
        s.count(&m, 200, 0.001);
        s.count(&m, 200, 0.002);
        s.count(&m, 418, 0.001);
        m.requests
            .get_or_create(&RequestLabels {
                route: Cow::Borrowed("/api/**"),
                status: 200,
            })
            .inc();
        let text = m.render_text();
        let value = |metric: &str, labels: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with(metric) && l.contains("route=\"/api/**\"") && l.contains(labels)
                })
                .and_then(|l| l.rsplit(' ').next())
                .unwrap_or_else(|| panic!("no {metric} {labels} in {text}"))
                .to_owned()
        };
        assert_eq!(value("authgate_requests_total", "status=\"200\""), "3");
        assert_eq!(value("authgate_requests_total", "status=\"418\""), "1");
        assert_eq!(value("authgate_request_duration_seconds_count", ""), "3");
    }
}
