//! The idle timeout of a client connection: its socket counts bytes in and out, the service
//! counts requests in flight, and a watchdog ends the connection once nothing has moved for
//! `idle_timeout` while no request is in flight. That covers a socket that never sends a
//! byte, one idle after its TLS handshake, an idle keep-alive between requests and an idle
//! HTTP/2 connection alike.
//!
//! The same watchdog bounds a request head: once a byte has come with no request in flight, a
//! request must be under way within `header_read_timeout` (a slowloris trickle is cut). It
//! replaces hyper's own header timeout, which also ran between keep-alive requests and
//! closed idle connections after 10 s that `idle_timeout` (60 s) promised to keep.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How many reads and writes moved bytes on the connection, and how many requests are in
/// flight on it. A count, not a clock: no time is read per read or write.
#[derive(Debug, Default)]
pub struct Activity {
    moves: AtomicU64,
    in_flight: AtomicUsize,
    /// Bytes came with no request in flight: a request head has begun.
    head: AtomicBool,
}

/// The watchdog looks this many times per `idle_timeout`: a quiet connection is closed after
/// between 1 and 1 + 1/TICKS timeouts.
const TICKS: u32 = 4;

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity::default())
    }

    fn touch(&self) {
        self.moves.fetch_add(1, Ordering::Relaxed);
    }

    /// Marks a request in flight until the guard drops (its response head is ready; the
    /// body's bytes then count as activity).
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head.store(false, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Bytes were read: with no request in flight, they begin a request head.
    fn read(&self) {
        self.touch();
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            self.head.store(true, Ordering::Relaxed);
        }
    }

    /// Watches a connection served by the task `conn` and aborts that task once it has moved
    /// no byte for `limit` with no request in flight. A task of its own, waking a few times
    /// per `limit`: the connection's own task pays nothing per request for it. `done`
    /// resolves when the connection's task ends (its sender is dropped with the task), so
    /// the watchdog, and the task it holds, go at once: under connection churn, watchdogs
    /// waiting out their tick held thousands of finished connections (RSS 214 MiB at 19k
    /// connections/s).
    pub async fn watch(
        self: Arc<Self>,
        limits: Limits,
        conn: tokio::task::AbortHandle,
        done: tokio::sync::oneshot::Receiver<()>,
    ) {
        tokio::select! {
            why = self.expired(limits) => {
                conn.abort();
                tracing::debug!(why, "connection closed");
            }
            _ = done => {}
        }
    }

    /// Resolves once the connection has moved no byte for `limit` with no request in flight.
    #[cfg(test)]
    pub async fn idle(&self, limit: Duration) {
        self.expired(Limits {
            idle: limit,
            head: None,
        })
        .await;
    }

    /// Resolves (saying why) once the connection is idle past `limits.idle`, or a request
    /// head has been coming for longer than `limits.head`.
    async fn expired(&self, limits: Limits) -> &'static str {
        let shortest = limits.head.map_or(limits.idle, |h| h.min(limits.idle));
        let tick = (shortest / TICKS).max(Duration::from_millis(10));
        let ticks = |d: Duration| (d.as_nanos() / tick.as_nanos().max(1)).max(1) as u64;
        let (idle_ticks, head_ticks) = (ticks(limits.idle), limits.head.map(ticks));
        let mut seen = self.moves.load(Ordering::Relaxed);
        let (mut quiet, mut heading) = (0u64, 0u64);
        loop {
            tokio::time::sleep(tick).await;
            let busy = self.in_flight.load(Ordering::Relaxed) > 0;
            if !busy && self.head.load(Ordering::Relaxed) {
                heading += 1;
                if head_ticks.is_some_and(|n| heading >= n) {
                    return "request head timeout";
                }
            } else {
                heading = 0;
            }
            let now = self.moves.load(Ordering::Relaxed);
            if now != seen || busy {
                seen = now;
                quiet = 0;
                continue;
            }
            quiet += 1;
            if quiet >= idle_ticks {
                return "idle timeout";
            }
        }
    }
}

/// The watchdog's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// No byte moved and no request in flight this long: closed.
    pub idle: Duration,
    /// A request head begun this long ago and still not a request: closed.
    pub head: Option<Duration>,
}

pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A socket whose reads and writes are recorded in an `Activity`.
pub struct IdleIo<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I> IdleIo<I> {
    pub fn new(inner: I, activity: Arc<Activity>) -> Self {
        IdleIo { inner, activity }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for IdleIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for IdleIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_only_without_requests_in_flight() {
        let a = Activity::new();
        let limit = Duration::from_secs(5);
        let guard = a.request();
        // Busy: the watchdog keeps waiting however long the request takes.
        let waited = tokio::time::timeout(Duration::from_secs(30), a.idle(limit)).await;
        assert!(waited.is_err());
        drop(guard);
        let started = tokio::time::Instant::now();
        a.idle(limit).await;
        let took = started.elapsed();
        assert!(took >= limit && took <= limit + limit / TICKS, "{took:?}");
        // Bytes moving keep it open.
        let moving = async {
            loop {
                a.touch();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        };
        let raced = tokio::time::timeout(Duration::from_secs(30), async {
            tokio::select! {
                () = a.idle(limit) => "idle",
                () = moving => "moving",
            }
        })
        .await;
        assert!(
            raced.is_err(),
            "a connection moving bytes was declared idle"
        );
    }

    /// A head that trickles is cut at the head limit; an idle keep-alive lives to the idle
    /// limit (regression: hyper's header timeout closed it at 10 s).
    #[tokio::test(start_paused = true)]
    async fn a_head_is_bounded_and_idle_keep_alive_is_not() {
        let limits = Limits {
            idle: Duration::from_secs(60),
            head: Some(Duration::from_secs(10)),
        };
        let a = Activity::new();
        // Idle between requests: only the idle limit applies.
        let started = tokio::time::Instant::now();
        assert_eq!(a.expired(limits).await, "idle timeout");
        assert!(started.elapsed() >= Duration::from_secs(60));
        // A head begins (bytes with no request in flight) and trickles on.
        let b = Activity::new();
        b.read();
        let trickle = async {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                b.read();
            }
        };
        let started = tokio::time::Instant::now();
        let why = tokio::select! {
            why = b.expired(limits) => why,
            () = trickle => "never",
        };
        assert_eq!(why, "request head timeout");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(10) && took <= Duration::from_secs(13),
            "{took:?}"
        );
        // Once the request is under way the head clock stops.
        let c = Activity::new();
        c.read();
        let _req = c.request();
        let waited = tokio::time::timeout(Duration::from_secs(30), c.expired(limits)).await;
        assert!(waited.is_err());
    }

    /// Regression: the watchdog outlived its connection by up to a tick, holding the finished
    /// task; under connection churn that was 200 MiB. It must end with the connection, at
    /// once (no virtual time passes).
    #[tokio::test(start_paused = true)]
    async fn the_watchdog_ends_with_its_connection() {
        let a = Activity::new();
        let (done, ended) = tokio::sync::oneshot::channel::<()>();
        let conn = tokio::spawn(async move {
            let _held = done;
        });
        let limits = Limits {
            idle: Duration::from_secs(60),
            head: None,
        };
        let watchdog = tokio::spawn(a.watch(limits, conn.abort_handle(), ended));
        let started = tokio::time::Instant::now();
        watchdog.await.unwrap();
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert!(conn.is_finished());
    }
}
