//! The connection's clock: its socket counts bytes in and out, the service counts requests in
//! flight, and the connection's task looks a few times per timeout (a tick) to decide whether
//! it is busy, quiet, or past a limit:
//!
//! - **Idle:** nothing moved for `idle_timeout` while no request was in flight: closed. That
//!   covers a socket that never sends a byte, one idle after its TLS handshake, an idle
//!   keep-alive between requests and an idle HTTP/2 connection alike.
//! - **Request head:** once a byte has come with no request in flight, a request must be under
//!   way within `header_read_timeout` (a slowloris trickle is cut). This replaces hyper's own
//!   header timeout, which also ran between keep-alive requests and closed idle connections
//!   after 10 s that `idle_timeout` (60 s) promised to keep.
//! - **Quiet:** nothing moved for a whole tick and nothing in flight: an HTTP/1.1 connection
//!   may be parked (see `conn`).

use bytes::{Buf, Bytes, BytesMut};
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
    /// The connection is being parked: a shutdown of the socket is not to be passed on (the
    /// socket outlives the HTTP/1 state that asked for it).
    parking: AtomicBool,
}

/// The clock looks at least this often while a connection is served: a quiet keep-alive
/// connection is parked between one and two ticks after its last byte.
pub const PARK_TICK: Duration = Duration::from_millis(500);

/// And this many times per timeout: a quiet connection is closed after between 1 and
/// 1 + 1/TICKS timeouts.
const TICKS: u32 = 4;

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity::default())
    }

    fn touch(&self) {
        self.moves.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads and writes so far (a count that changes when anything moves).
    pub fn moves(&self) -> u64 {
        self.moves.load(Ordering::Relaxed)
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

    /// While set, a shutdown of the socket is swallowed (see `IdleIo::poll_shutdown`).
    pub fn set_parking(&self, on: bool) {
        self.parking.store(on, Ordering::Relaxed);
    }
}

/// The limits the clock enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// No byte moved and no request in flight this long: closed.
    pub idle: Duration,
    /// A request head begun this long ago and still not a request: closed.
    pub head: Option<Duration>,
}

impl Limits {
    /// How often the clock looks.
    pub fn tick(&self) -> Duration {
        let shortest = self.head.map_or(self.idle, |h| h.min(self.idle));
        (shortest / TICKS).clamp(Duration::from_millis(10), PARK_TICK)
    }
}

/// What the clock saw at a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Something moved, or a request is in flight.
    Busy,
    /// Nothing moved for a whole tick and nothing is in flight (a partial request head
    /// excluded): the connection may be parked.
    Quiet,
    /// Nothing moved, but a request head is under way.
    Heading,
    /// Past a limit: close the connection (the reason, for the log).
    Expired(&'static str),
}

/// A connection's tick counters: how many ticks it has been quiet, and how many a request
/// head has been coming.
#[derive(Debug)]
pub struct Clock {
    pub tick: Duration,
    idle_ticks: u64,
    head_ticks: Option<u64>,
    seen: u64,
    quiet: u64,
    heading: u64,
}

impl Clock {
    pub fn new(limits: Limits) -> Clock {
        let tick = limits.tick();
        let ticks = |d: Duration| (d.as_nanos() / tick.as_nanos().max(1)).max(1) as u64;
        Clock {
            tick,
            idle_ticks: ticks(limits.idle),
            head_ticks: limits.head.map(ticks),
            seen: 0,
            quiet: 0,
            heading: 0,
        }
    }

    /// One tick: what the connection has been doing since the last.
    pub fn tick(&mut self, activity: &Activity) -> Verdict {
        let busy = activity.in_flight.load(Ordering::Relaxed) > 0;
        let heading = !busy && activity.head.load(Ordering::Relaxed);
        if heading {
            self.heading += 1;
            if self.head_ticks.is_some_and(|n| self.heading >= n) {
                return Verdict::Expired("request head timeout");
            }
        } else {
            self.heading = 0;
        }
        let now = activity.moves();
        if now != self.seen || busy {
            self.seen = now;
            self.quiet = 0;
            return Verdict::Busy;
        }
        self.quiet += 1;
        if self.quiet >= self.idle_ticks {
            return Verdict::Expired("idle timeout");
        }
        if heading {
            Verdict::Heading
        } else {
            Verdict::Quiet
        }
    }

    /// How long the connection may still wait for a byte before it is idle past its limit.
    pub fn idle_left(&self) -> Duration {
        self.tick
            .saturating_mul(self.idle_ticks.saturating_sub(self.quiet) as u32)
    }

    /// A parked connection got bytes: its quiet count starts again.
    pub fn woke(&mut self, activity: &Activity) {
        self.seen = activity.moves();
        self.quiet = 0;
        self.heading = 0;
    }
}

pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A socket whose reads and writes are recorded in an `Activity`, with bytes already read
/// (`unread`) served first.
pub struct IdleIo<I> {
    inner: I,
    activity: Arc<Activity>,
    unread: Bytes,
}

impl<I> IdleIo<I> {
    pub fn new(inner: I, activity: Arc<Activity>) -> Self {
        IdleIo {
            inner,
            activity,
            unread: Bytes::new(),
        }
    }

    /// Puts bytes back in front of what is still to be read.
    pub fn unread(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        if self.unread.is_empty() {
            self.unread = bytes;
        } else {
            let mut joined = BytesMut::with_capacity(bytes.len() + self.unread.len());
            joined.extend_from_slice(&bytes);
            joined.extend_from_slice(&self.unread);
            self.unread = joined.freeze();
        }
    }

    /// Bytes read from the socket but not yet by HTTP.
    pub fn has_unread(&self) -> bool {
        !self.unread.is_empty()
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for IdleIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.unread.is_empty() {
            let n = self.unread.len().min(buf.remaining());
            buf.put_slice(&self.unread[..n]);
            self.unread.advance(n);
            return Poll::Ready(Ok(()));
        }
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

    /// Swallowed while the connection is parked: hyper's HTTP/1 state ends, the socket (and
    /// a TLS session on it) stays open for the next request.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.activity.parking.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits(idle: u64, head: Option<u64>) -> Limits {
        Limits {
            idle: Duration::from_secs(idle),
            head: head.map(Duration::from_secs),
        }
    }

    /// Ticks until the clock says something other than `Quiet`/`Heading`/`Busy` (or `max`).
    fn ticks_until_expired(clock: &mut Clock, a: &Activity, max: u64) -> (u64, Verdict) {
        for n in 1..=max {
            match clock.tick(a) {
                Verdict::Expired(why) => return (n, Verdict::Expired(why)),
                _ => continue,
            }
        }
        (max, Verdict::Busy)
    }

    #[test]
    fn the_tick_is_a_quarter_of_the_shortest_limit_and_at_most_the_park_tick() {
        assert_eq!(limits(60, Some(10)).tick(), PARK_TICK);
        assert_eq!(limits(1, None).tick(), Duration::from_millis(250));
        assert_eq!(
            Limits {
                idle: Duration::from_millis(1),
                head: None
            }
            .tick(),
            Duration::from_millis(10)
        );
    }

    #[test]
    fn idle_only_without_requests_in_flight() {
        let a = Activity::new();
        let mut clock = Clock::new(limits(5, None));
        // 5 s at 500 ms a tick: ten quiet ticks.
        let guard = a.request();
        // Busy: however long the request takes, never idle.
        for _ in 0..100 {
            assert_eq!(clock.tick(&a), Verdict::Busy);
        }
        drop(guard);
        // The guard's drop moved: one busy tick, then quiet ones until the limit.
        assert_eq!(clock.tick(&a), Verdict::Busy);
        assert_eq!(clock.tick(&a), Verdict::Quiet);
        assert_eq!(clock.idle_left(), Duration::from_millis(4500));
        let (n, v) = ticks_until_expired(&mut clock, &a, 100);
        assert_eq!((n, v), (9, Verdict::Expired("idle timeout")));
        // Bytes moving keep it open.
        let mut clock = Clock::new(limits(5, None));
        for _ in 0..100 {
            a.touch();
            assert_eq!(clock.tick(&a), Verdict::Busy);
        }
    }

    /// A head that trickles is cut at the head limit; an idle keep-alive lives to the idle
    /// limit (regression: hyper's header timeout closed it at 10 s).
    #[test]
    fn a_head_is_bounded_and_idle_keep_alive_is_not() {
        let l = limits(60, Some(10));
        // Idle between requests: only the idle limit (120 ticks of 500 ms) applies.
        let a = Activity::new();
        let mut clock = Clock::new(l);
        assert_eq!(
            ticks_until_expired(&mut clock, &a, 1000),
            (120, Verdict::Expired("idle timeout"))
        );
        // A head begins (bytes with no request in flight) and trickles on: cut after 20.
        let b = Activity::new();
        let mut clock = Clock::new(l);
        let mut verdicts = vec![];
        for _ in 0..40 {
            b.read();
            let v = clock.tick(&b);
            verdicts.push(v);
            if matches!(v, Verdict::Expired(_)) {
                break;
            }
        }
        assert_eq!(verdicts.len(), 20);
        assert_eq!(
            verdicts.last(),
            Some(&Verdict::Expired("request head timeout"))
        );
        // A stalled partial head is not quiet: it is never parked.
        let c = Activity::new();
        c.read();
        let mut clock = Clock::new(l);
        assert_eq!(clock.tick(&c), Verdict::Busy);
        assert_eq!(clock.tick(&c), Verdict::Heading);
        // Once the request is under way the head clock stops.
        let _req = c.request();
        for _ in 0..100 {
            assert_eq!(clock.tick(&c), Verdict::Busy);
        }
    }

    #[tokio::test]
    async fn unread_bytes_come_first_and_a_parked_shutdown_is_swallowed() {
        let (client, server) = tokio::io::duplex(64);
        let a = Activity::new();
        let mut io = IdleIo::new(server, a.clone());
        let mut client = client;
        client.write_all(b"llo").await.unwrap();
        io.unread(Bytes::from_static(b"e"));
        io.unread(Bytes::from_static(b"h"));
        assert!(io.has_unread());
        let mut got = [0u8; 5];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        // Unread bytes were read before: only the socket's read counts as a move.
        assert_eq!(a.moves(), 1);
        a.set_parking(true);
        io.shutdown().await.unwrap();
        io.write_all(b"still open").await.unwrap();
        let mut buf = [0u8; 10];
        client.read_exact(&mut buf).await.unwrap();
        a.set_parking(false);
        io.shutdown().await.unwrap();
        assert_eq!(
            client.read(&mut buf).await.unwrap(),
            0,
            "a real shutdown ends it"
        );
    }
}
