//! Logging: JSON or pretty, level from RUST_LOG (default info). The code never logs headers,
//! bodies, tokens or passwords; `Debug` of keys and claims is redacted at the type.
//!
//! The audit trail (`crate::audit`, target `audit`) goes with the other logs by default, or
//! as JSON lines to stdout or a file of its own (`log.audit`), or nowhere. Request spans go
//! to an OTLP collector when `[tracing] otlp_endpoint` names one (`otlp`).

use crate::config::{AuditSink, LogFormat, TracingConfig};
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

pub fn init(format: LogFormat) {
    init_with(format, &AuditSink::Log);
}

/// Logs, and the audit trail where `audit` says.
pub fn init_with(format: LogFormat, audit: &AuditSink) {
    drop(init_serve(format, audit, &TracingConfig::default()));
}

/// What `serve` keeps while it runs: the span exporter, flushed when dropped.
#[must_use = "dropping it stops the span export"]
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            // The batch still queued goes out (bounded by the exporter's timeout).
            if let Err(e) = p.shutdown() {
                tracing::warn!(error = %e, "span export: the last batch was not sent");
            }
        }
    }
}

/// Logs and the audit trail, and the spans of `[tracing]` when it names a collector.
pub fn init_serve(format: LogFormat, audit: &AuditSink, tracing_cfg: &TracingConfig) -> Telemetry {
    init_layers(format, audit);
    let provider = match &tracing_cfg.otlp_traces_url {
        Some(url) => match crate::otlp::start(url, &tracing_cfg.service_name) {
            Ok(provider) => {
                tracing::info!(url = %url, "request spans are exported (OTLP)");
                Some(provider)
            }
            Err(e) => {
                tracing::error!(error = %e, "span export is off: the OTLP exporter cannot be built");
                None
            }
        },
        None => None,
    };
    Telemetry { provider }
}

fn init_layers(format: LogFormat, audit: &AuditSink) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let keep_audit = *audit == AuditSink::Log;
    let not_audit = filter_fn(move |m| keep_audit || m.target() != crate::audit::TARGET);
    // The request's span (its `request_id`) on each line, not the whole span stack.
    let main = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(not_audit)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .with_filter(not_audit)
            .boxed(),
    };
    let only_audit = || filter_fn(|m| m.target() == crate::audit::TARGET);
    let audit_layer = match audit {
        AuditSink::Stdout => Some(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_writer(std::io::stdout)
                .with_filter(only_audit())
                .boxed(),
        ),
        AuditSink::File(path) => {
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                Ok(file) => Some(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .flatten_event(true)
                        .with_current_span(true)
                        .with_span_list(false)
                        .with_ansi(false)
                        .with_writer(std::sync::Mutex::new(file))
                        .with_filter(only_audit())
                        .boxed(),
                ),
                Err(e) => {
                    eprintln!(
                        "cannot open the audit file {}: {e}; audit events go to the log",
                        path.display()
                    );
                    None
                }
            }
        }
        AuditSink::Log | AuditSink::Off => None,
    };
    // A second init (tests, embedding) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(main)
        .with(audit_layer)
        .try_init();
}
