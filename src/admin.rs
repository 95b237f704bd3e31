//! The admin listener: `/healthz` (the process runs), `/readyz` (config loaded, store answers,
//! not shutting down) and `/metrics` (Prometheus text), and the operator's session control
//! (`admin_sessions`) and lockouts (`admin_unlock`). Never on the public listener.

use crate::auth::Auth;
use crate::body::{full, Body};
use crate::metrics::Metrics;
use crate::server::{ConnInfo, Handler};
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub struct Admin {
    pub auth: Arc<Auth>,
    pub metrics: Arc<Metrics>,
    pub shutting_down: Arc<AtomicBool>,
    /// `admin.ready_requires_store`.
    pub ready_requires_store: bool,
    /// `admin.token_file`: what `/admin/sessions*` and `/admin/unlock` need (see
    /// `admin_sessions`).
    pub token_file: Option<std::path::PathBuf>,
    /// What the last `/readyz` answered, to log its flips (see `Readiness`).
    pub readiness: Readiness,
}

/// The answers of `/readyz` as they change: each flip (ready to not ready and back) is an
/// INFO line and an audit event (`readiness_changed`, with `ready` and the reason), so an
/// outage's effect on the Service is in the log, not only in the kubelet's events.
#[derive(Debug, Default)]
pub struct Readiness {
    /// 0: not asked yet; 1: ready; 2: not ready.
    last: std::sync::atomic::AtomicU8,
}

impl Readiness {
    fn answered(&self, ready: bool, reason: &str) {
        let now = if ready { 1 } else { 2 };
        let before = self.last.swap(now, Ordering::AcqRel);
        if before != 0 && before != now {
            tracing::info!(ready, reason, "readiness changed");
            crate::audit!("readiness_changed", ready, reason);
        }
    }
}

fn text(
    status: StatusCode,
    body: impl Into<bytes::Bytes>,
    content_type: &'static str,
) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

impl Admin {
    async fn readyz(&self) -> Response<Body> {
        if self.shutting_down.load(Ordering::Acquire) {
            self.readiness.answered(false, "shutting down");
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting down\n",
                "text/plain",
            );
        }
        match self.auth.sessions().store_ready().await {
            Ok(()) => {
                self.readiness.answered(true, "ready");
                text(StatusCode::OK, "ready\n", "text/plain")
            }
            // A shared-store blip must not take every replica out of its Service:
            // public routes still work, protected ones fail closed on their own.
            Err(e) if !self.ready_requires_store => {
                self.readiness
                    .answered(true, "ready; revocation store down");
                text(
                    StatusCode::OK,
                    format!("ready (revocation store down: {e})\n"),
                    "text/plain",
                )
            }
            Err(e) => {
                self.readiness.answered(false, "revocation store down");
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {e}\n"),
                    "text/plain",
                )
            }
        }
    }
}

impl Handler for Admin {
    async fn handle(self: Arc<Self>, req: Request<Incoming>, _conn: ConnInfo) -> Response<Body> {
        if crate::admin_sessions::is_sessions_path(req.uri().path()) {
            return crate::admin_sessions::handle(&self.auth, self.token_file.as_deref(), req)
                .await;
        }
        if req.uri().path() == crate::admin_unlock::PATH {
            return crate::admin_unlock::handle(&self.auth, self.token_file.as_deref(), req).await;
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed\n",
                "text/plain",
            );
        }
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n", "text/plain"),
            "/readyz" => self.readyz().await,
            "/metrics" => {
                let openmetrics = req
                    .headers()
                    .get_all(http::header::ACCEPT)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .any(|v| v.contains("application/openmetrics-text"));
                if openmetrics {
                    text(
                        StatusCode::OK,
                        self.metrics.render(),
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )
                } else {
                    text(
                        StatusCode::OK,
                        self.metrics.render_text(),
                        "text/plain; version=0.0.4; charset=utf-8",
                    )
                }
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n", "text/plain"),
        }
    }
}
