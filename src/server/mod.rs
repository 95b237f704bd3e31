//! Accepting connections: TCP, optional TLS, HTTP/1.1 and HTTP/2, limits, graceful drain.

mod conn;
pub mod cores;
mod idle;
pub mod listener;
pub mod tls;
mod trim;

pub use listener::{serve, ConnInfo, ConnMemo, Handler, ServeOptions};
