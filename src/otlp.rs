//! `[tracing] otlp_endpoint`: each request is a server span (`GET /route`, with the method,
//! route, status and client address) and its forwarding a client span under it, exported
//! over OTLP HTTP/protobuf in batches from a thread of their own. The caller's `traceparent`
//! is the server span's parent and its sampled flag decides (parent-based sampling; a trace
//! that starts here is sampled); the upstream gets the client span as its parent, so the
//! upstream's own spans join the same trace. Spans are made with the OpenTelemetry API
//! directly, on the request path, not from log spans: what is exported does not depend on
//! `RUST_LOG`. Without an endpoint nothing here runs (one check of a `OnceLock`).

use crate::gateway::request_id::Traceparent;
use http::{HeaderMap, HeaderValue, Method};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;

/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Whether spans are exported.
pub fn exporting() -> bool {
    TRACER.get().is_some()
}

/// Starts the export to `traces_url` (the process's one; a second call keeps the first).
/// The provider is returned to be shut down (flushed) at exit.
pub fn start(
    traces_url: &str,
    service_name: &str,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(traces_url)
        .with_timeout(EXPORT_TIMEOUT)
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service_name.to_owned())
                .build(),
        )
        .build();
    let _ = TRACER.set(provider.tracer("authgate"));
    Ok(provider)
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        // Two traceparents are no trace context at all (W3C: invalid).
        let mut all = self.0.get_all(key).iter();
        match (all.next(), all.next()) {
            (Some(v), None) => v.to_str().ok(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// A request's server span (ended by `end`, or when dropped).
pub struct ServerSpan {
    cx: Context,
}

impl ServerSpan {
    /// None when spans are not exported.
    pub fn start(method: &Method, headers: &HeaderMap, client: IpAddr) -> Option<ServerSpan> {
        let tracer = TRACER.get()?;
        let parent = TraceContextPropagator::new().extract(&Headers(headers));
        let span = tracer
            .span_builder(method.as_str().to_owned())
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", method.as_str().to_owned()),
                KeyValue::new("client.address", client.to_string()),
            ])
            .start_with_context(tracer, &parent);
        Some(ServerSpan {
            cx: parent.with_span(span),
        })
    }

    /// What the request came to: the span's name (`METHOD route`), route and status.
    pub fn end(self, method: &Method, route: &str, status: u16) {
        let span = self.cx.span();
        span.update_name(format!("{method} {route}"));
        span.set_attribute(KeyValue::new("http.route", route.to_owned()));
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if status >= 500 {
            span.set_status(Status::error(""));
        }
        span.end();
    }
}

/// The forwarding of a request to an upstream: a client span under the server span.
pub struct ClientSpan {
    cx: Context,
}

impl ClientSpan {
    /// None when there is no server span (spans are not exported).
    pub fn start(
        server: Option<&ServerSpan>,
        method: &Method,
        upstream: &str,
    ) -> Option<ClientSpan> {
        let tracer = TRACER.get()?;
        let parent = &server?.cx;
        let span = tracer
            .span_builder(format!("{method} {upstream}"))
            .with_kind(SpanKind::Client)
            .with_attributes([KeyValue::new("upstream", upstream.to_owned())])
            .start_with_context(tracer, parent);
        Some(ClientSpan {
            cx: parent.with_span(span),
        })
    }

    /// The `traceparent` the upstream gets: this span as its parent, the trace's sampled
    /// flag. `client` is the request's own headers (is this the caller's trace?).
    pub fn traceparent(&self, client: &HeaderMap) -> Option<Traceparent> {
        let sc = self.cx.span().span_context().clone();
        if !sc.is_valid() {
            return None;
        }
        let trace = sc.trace_id().to_string();
        let value = format!(
            "00-{trace}-{}-{:02x}",
            sc.span_id(),
            sc.trace_flags().to_u8() & 1
        );
        // The caller's trace goes on (its tracestate with it) when its trace id is this one.
        let continued = client
            .get("traceparent")
            .and_then(|v| v.as_bytes().get(3..35))
            .is_some_and(|t| t == trace.as_bytes());
        HeaderValue::try_from(value).ok().map(|value| Traceparent {
            value,
            new_trace: !continued,
        })
    }

    /// The upstream answered (its status), or did not (an error kind).
    pub fn end(self, outcome: Result<u16, &str>) {
        let span = self.cx.span();
        match outcome {
            Ok(status) => span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            )),
            Err(kind) => {
                span.set_attribute(KeyValue::new("error.type", kind.to_owned()));
                span.set_status(Status::error(kind.to_owned()));
            }
        }
        span.end();
    }
}

#[cfg(test)]
mod tests {
    fn tracing_of(table: &str) -> Result<crate::config::TracingConfig, String> {
        let text = format!(
            "[tokens]\nalgorithm = \"EdDSA\"\nsigning_key_file = \"k.pem\"\n\
             [[routes]]\npath = \"/**\"\n[forward_auth]\nonly = true\n{table}"
        );
        crate::Config::from_str(std::path::Path::new("/nonexistent/a.toml"), &text)
            .map(|c| c.tracing)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_endpoint_is_a_collector_and_spans_go_to_its_v1_traces() {
        let off = tracing_of("").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (off.otlp_traces_url, off.service_name.as_str()),
            (None, "authgate")
        );
        for (given, url) in [
            ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
            ("http://collector:4318/", "http://collector:4318/v1/traces"),
            (
                "https://otel.example/v1/traces",
                "https://otel.example/v1/traces",
            ),
        ] {
            let t = tracing_of(&format!(
                "[tracing]\notlp_endpoint = \"{given}\"\nservice_name = \"gw\""
            ))
            .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(t.otlp_traces_url.as_deref(), Some(url));
            assert_eq!(t.service_name, "gw");
        }
        for bad in ["collector:4318", "ftp://x", "http://x/?a=b"] {
            let e = tracing_of(&format!("[tracing]\notlp_endpoint = \"{bad}\""))
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(e.contains("tracing.otlp_endpoint"), "{e}");
        }
    }
}
