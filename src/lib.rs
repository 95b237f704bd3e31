//! authgate: a reverse-proxy auth gateway. Data flows one way: `server` accepts ->
//! `gateway` decides (`path`, `route`, `auth`, `store`) -> `upstream` forwards.

pub mod admin;
pub mod admin_sessions;
pub mod admin_unlock;
pub mod app;
pub mod audit;
pub mod auth;
pub mod body;
pub mod cert_expiry;
pub mod certs;
pub mod clock;
pub mod config;
pub mod error;
pub mod gateway;
pub mod ids;
pub mod limits;
pub mod memory;
pub mod metrics;
mod metrics_process;
pub mod origin;
pub mod otlp;
pub mod outage;
pub mod path;
pub mod reload;
pub mod rewrite;
pub mod route;
pub mod server;
pub mod snippets;
pub mod store;
pub mod telemetry;
pub mod upstream;
pub mod worker;

pub use app::App;
pub use config::Config;
