//! Prometheus metrics: requests by route and status, latency, upstream errors, connections.

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamName {
    pub upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: String,
    pub kind: UpstreamErrorKind,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Histogram,
    pub upstream_errors: Family<UpstreamLabels, Counter>,
    /// Hosts taken out of rotation after failed connects, by upstream.
    pub upstream_ejections: Family<UpstreamName, Counter>,
    pub open_connections: Gauge,
    pub store_errors: Counter,
    /// Messages on the revocation channel that the mirror could not decode.
    pub mirror_undecodable: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("authgate");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        let upstream_errors = Family::<UpstreamLabels, Counter>::default();
        let upstream_ejections = Family::<UpstreamName, Counter>::default();
        let open_connections = Gauge::default();
        let store_errors = Counter::default();
        let mirror_undecodable = Counter::default();
        registry.register(
            "requests",
            "Requests answered, by route and status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request head to response head",
            latency.clone(),
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
            "store_errors",
            "Revocation store calls that failed or timed out",
            store_errors.clone(),
        );
        registry.register(
            "mirror_undecodable_events",
            "Messages on the revocation channel the mirror could not decode (and ignored)",
            mirror_undecodable.clone(),
        );
        Metrics {
            registry,
            mirror_undecodable,
            requests,
            latency,
            upstream_errors,
            upstream_ejections,
            open_connections,
            store_errors,
        }
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
