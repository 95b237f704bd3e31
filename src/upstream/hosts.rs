//! The hosts of one upstream: which one takes the next request (round robin or least
//! requests), passive health (a host whose connects fail `eject_after` times in a row sits
//! out `eject_for`), and the order in which an unsent request tries the others.

use super::pool::Pool;
use crate::config::{Balance, UpstreamConfig};
use http::HeaderValue;
use prometheus_client::metrics::counter::Counter;
use rustls_pki_types::ServerName;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Host {
    pub pool: Arc<Pool>,
    /// `host:port` as a `Host` value (for `host_header = "upstream"`).
    pub host: HeaderValue,
    in_flight: AtomicUsize,
    fails: AtomicU32,
    /// Milliseconds since `Hosts::epoch` until which the host is out; 0 = in rotation.
    ejected_until: AtomicU64,
}

pub struct Hosts {
    hosts: Vec<Host>,
    next: AtomicUsize,
    balance: Balance,
    eject_after: u32,
    eject_for: Duration,
    epoch: Instant,
    ejections: Counter,
}

/// Marks a request in flight on a host (for least requests) until dropped.
pub struct InFlight<'h>(&'h Host);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Hosts {
    pub fn new(cfg: &UpstreamConfig, ejections: Counter) -> Hosts {
        let hosts = cfg
            .targets
            .iter()
            .map(|t| {
                let tls = t.https.then(|| cfg.tls.clone()).flatten().and_then(|c| {
                    let name = cfg
                        .sni
                        .clone()
                        .unwrap_or_else(|| t.authority.host().to_owned());
                    let name = name
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_owned();
                    ServerName::try_from(name)
                        .ok()
                        .map(|n| (tokio_rustls::TlsConnector::from(c), n))
                });
                Host {
                    pool: Arc::new(Pool::with_tls(
                        t.authority.as_str().to_owned(),
                        cfg.connect_timeout,
                        tls,
                    )),
                    host: HeaderValue::from_str(t.authority.as_str())
                        .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
                    in_flight: AtomicUsize::new(0),
                    fails: AtomicU32::new(0),
                    ejected_until: AtomicU64::new(0),
                }
            })
            .collect();
        Hosts {
            hosts,
            next: AtomicUsize::new(0),
            balance: cfg.balance,
            eject_after: cfg.eject_after,
            eject_for: cfg.eject_for,
            epoch: Instant::now(),
            ejections,
        }
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn get(&self, i: usize) -> &Host {
        &self.hosts[i % self.hosts.len()]
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn ejected(&self, h: &Host, now: u64) -> bool {
        h.ejected_until.load(Ordering::Relaxed) > now
    }

    /// The index of the host for the next request. Ejected hosts are passed over while any
    /// other is in rotation.
    pub fn pick(&self) -> usize {
        let n = self.hosts.len();
        if n == 1 {
            return 0;
        }
        let now = self.now_ms();
        match self.balance {
            Balance::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|k| (start + k) % n)
                    .find(|&i| !self.ejected(&self.hosts[i], now))
                    .unwrap_or(start % n)
            }
            Balance::LeastRequests => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|k| (start + k) % n)
                    .filter(|&i| !self.ejected(&self.hosts[i], now))
                    .min_by_key(|&i| self.hosts[i].in_flight.load(Ordering::Relaxed))
                    .unwrap_or(start % n)
            }
        }
    }

    pub fn begin<'h>(&self, h: &'h Host) -> InFlight<'h> {
        h.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(h)
    }

    /// A connection to `h` could not be made.
    pub fn connect_failed(&self, h: &Host) {
        let fails = h.fails.fetch_add(1, Ordering::Relaxed) + 1;
        if fails >= self.eject_after {
            let until = self.now_ms() + u64::try_from(self.eject_for.as_millis()).unwrap_or(0);
            h.ejected_until.store(until.max(1), Ordering::Relaxed);
            h.fails.store(0, Ordering::Relaxed);
            self.ejections.inc();
            tracing::warn!(host = ?h.host, eject_for = ?self.eject_for, "upstream host ejected after failed connects");
        }
    }

    /// A request went through on `h`.
    pub fn succeeded(&self, h: &Host) {
        if h.fails.load(Ordering::Relaxed) != 0 {
            h.fails.store(0, Ordering::Relaxed);
        }
    }
}
