//! One client connection, on one task: HTTP/2 or HTTP/1.1 (told apart by the first bytes, as
//! hyper-util's auto server does), the connection's clock (idle and request-head timeouts,
//! see `idle`), graceful shutdown, and parking.
//!
//! **Parking.** hyper keeps an HTTP/1.1 connection's buffers (8 KiB to read, 8 KiB for
//! response heads) and dispatcher for as long as the connection is open, idle included: ~30 KiB
//! a keep-alive connection. nginx frees its buffers between keep-alive requests. So does this:
//! an HTTP/1.1 connection that has been quiet for a tick with nothing in flight is asked to
//! end its HTTP state (hyper's graceful shutdown, which closes an idle connection at once),
//! its socket's shutdown is swallowed, and the socket, with any bytes hyper had read ahead,
//! waits for the next byte on its own. That byte starts a fresh hyper connection on the same
//! socket. Under load a connection is never quiet for a tick, so nothing is torn down per
//! request. A connection that turns out not to be idle when asked (a response still
//! streaming) finishes that response and is then closed instead of parked: it is never
//! resumed in the middle of a message.

use super::idle::{Activity, Clock, IdleIo, Limits, Verdict};
use super::listener::{ConnInfo, Handler};
use bytes::BytesMut;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

/// What every connection of a listener shares.
pub(super) struct Shared<H> {
    pub handler: Arc<H>,
    pub h1: http1::Builder,
    pub h2: http2::Builder<TokioExecutor>,
    pub limits: Limits,
    /// Connections parked or closed, for the allocator's trim.
    pub released: Arc<super::trim::Released>,
}

impl<H> Shared<H> {
    pub fn new(handler: Arc<H>, opts: &super::ServeOptions) -> Shared<H> {
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            // Ours (the clock): hyper's also ran between keep-alive requests.
            .header_read_timeout(None)
            .max_headers(opts.max_headers)
            .max_buf_size(opts.max_buf_size.max(8192))
            .writev(false);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_header_list_size(opts.max_header_list_size)
            .max_concurrent_streams(256)
            .max_pending_accept_reset_streams(64)
            // No PINGs: they would count as activity and keep an idle connection open
            // forever; the idle timeout ends idle (and dead) HTTP/2 connections instead.
            .keep_alive_interval(None);
        Shared {
            handler,
            h1,
            h2,
            limits: Limits {
                idle: opts.idle_timeout,
                head: Some(opts.header_read_timeout),
            },
            released: Arc::default(),
        }
    }
}

/// The HTTP/2 connection preface a client sends first ("prior knowledge", or after ALPN h2).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A parked connection reads its next bytes into a buffer this big (the rest stays in the
/// socket for hyper).
const WAKE_READ: usize = 64;

/// Serves HTTP on `io` until the client closes, a limit is reached, or `stop` turns true
/// (then in-flight requests are finished first).
pub(super) async fn serve<I, H>(
    io: I,
    info: ConnInfo,
    shared: &Shared<H>,
    activity: Arc<Activity>,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let peer = info.peer;
    let memo = info.memo.clone();
    let mut io = IdleIo::new(io, activity.clone());
    let mut clock = Clock::new(shared.limits);
    let svc = {
        let handler = shared.handler.clone();
        let activity = activity.clone();
        service_fn(move |req: hyper::Request<Incoming>| {
            let handler = handler.clone();
            let info = info.clone();
            let in_flight = activity.request();
            // Boxed: the connection holds a pointer, not the whole request state machine.
            Box::pin(async move {
                let resp = handler.handle(req, info).await;
                drop(in_flight);
                Ok::<_, Infallible>(resp)
            })
        })
    };
    match sniff(&mut io, &mut clock, &activity, &mut stop).await {
        Some(true) => {
            // Boxed: an HTTP/2 connection is large, and most connections are not.
            let conn = Box::pin(shared.h2.serve_connection(TokioIo::new(io), svc));
            drive_h2(conn, &mut clock, &activity, &stop, |c| {
                c.get_mut().as_mut().graceful_shutdown()
            })
            .await;
        }
        Some(false) => loop {
            let conn = shared
                .h1
                .serve_connection(TokioIo::new(io), svc.clone())
                .with_upgrades();
            // Boxed: a parked connection holds none of hyper's state.
            let mut conn = Box::new(conn);
            let graceful = |c: Pin<&mut _>| http1::UpgradeableConnection::graceful_shutdown(c);
            match drive_h1(&mut *conn, &mut clock, &activity, &stop, graceful).await {
                H1::Ended => return,
                H1::Closing => {
                    // Not idle when asked to park: its response went out, then it closes.
                    if let Some(parts) = (*conn).into_parts() {
                        let mut io = parts.io.into_inner();
                        let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
                    }
                    return;
                }
                H1::Parked => {
                    let Some(parts) = (*conn).into_parts() else {
                        return;
                    };
                    io = parts.io.into_inner();
                    io.unread(parts.read_buf);
                    tracing::trace!(%peer, "connection parked");
                    shared.released.one();
                    memo.clear();
                    if !io.has_unread() {
                        let _parked = Parked::new(&*shared.handler);
                        if !wake(&mut io, &clock, &mut stop).await {
                            return;
                        }
                    }
                    clock.woke(&activity);
                }
            }
        },
        None => {}
    }
}

/// Reads the first bytes: `Some(true)` for HTTP/2's preface, `Some(false)` for anything else
/// (HTTP/1.1; hyper answers what is not HTTP), `None` when the client went away or a limit
/// passed first. What was read is put back for hyper.
async fn sniff<I: AsyncRead + Unpin>(
    io: &mut IdleIo<I>,
    clock: &mut Clock,
    activity: &Activity,
    stop: &mut watch::Receiver<bool>,
) -> Option<bool> {
    let mut seen = BytesMut::with_capacity(H2_PREFACE.len());
    loop {
        let read = async {
            loop {
                let ticked = tokio::time::timeout(clock.tick, io.read_buf(&mut seen)).await;
                match ticked {
                    Ok(Ok(0)) | Ok(Err(_)) => return false,
                    Ok(Ok(_)) => return true,
                    Err(_) => {
                        if let Verdict::Expired(why) = clock.tick(activity) {
                            tracing::debug!(why, "connection closed");
                            return false;
                        }
                    }
                }
            }
        };
        let got = tokio::select! {
            got = read => got,
            _ = stop.wait_for(|s| *s) => false,
        };
        if !got {
            return None;
        }
        let n = seen.len().min(H2_PREFACE.len());
        if seen[..n] != H2_PREFACE[..n] {
            break;
        }
        if n == H2_PREFACE.len() {
            io.unread(seen.freeze());
            return Some(true);
        }
    }
    io.unread(seen.freeze());
    Some(false)
}

/// A parked connection waits for its next byte, the rest of its idle time, or shutdown.
/// True when bytes came (they are put back for hyper).
async fn wake<I: AsyncRead + Unpin>(
    io: &mut IdleIo<I>,
    clock: &Clock,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let mut buf = BytesMut::with_capacity(WAKE_READ);
    let got = tokio::select! {
        read = tokio::time::timeout(clock.idle_left(), io.read_buf(&mut buf)) => match read {
            Ok(Ok(n)) => n > 0,
            Ok(Err(_)) => false,
            Err(_) => {
                tracing::debug!(why = "idle timeout", "connection closed");
                false
            }
        },
        _ = stop.wait_for(|s| *s) => false,
    };
    if got {
        io.unread(buf.freeze());
    }
    got
}

/// Counts a parked connection until dropped.
struct Parked<'a, H: Handler>(&'a H);

impl<'a, H: Handler> Parked<'a, H> {
    fn new(handler: &'a H) -> Self {
        handler.connections_parked(1);
        Parked(handler)
    }
}

impl<H: Handler> Drop for Parked<'_, H> {
    fn drop(&mut self) {
        self.0.connections_parked(-1);
    }
}

/// How an HTTP/1.1 connection's hyper state ended.
enum H1 {
    /// The connection is over (closed by either side, upgraded, or past a limit).
    Ended,
    /// Parked: hyper closed an idle connection without touching the socket.
    Parked,
    /// Asked to park while not idle: finished its exchange, the socket is still to be shut.
    Closing,
}

/// Drives `conn` until it ends (true; an error is logged) or `ticker` fires (false; it is
/// set again `tick` from now).
async fn until_done_or_tick<C>(
    conn: &mut C,
    ticker: &mut Pin<Box<tokio::time::Sleep>>,
    tick: Duration,
) -> bool
where
    C: Future<Output = hyper::Result<()>> + Unpin,
{
    let polled = poll_fn(|cx| {
        if let Poll::Ready(done) = Pin::new(&mut *conn).poll(cx) {
            return Poll::Ready(Some(done));
        }
        ticker.as_mut().poll(cx).map(|()| None)
    })
    .await;
    match polled {
        Some(done) => {
            if let Err(e) = done {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            true
        }
        None => {
            ticker.as_mut().reset(tokio::time::Instant::now() + tick);
            false
        }
    }
}

/// Drives an HTTP/1.1 connection, looking at its clock every tick.
async fn drive_h1<C>(
    conn: &mut C,
    clock: &mut Clock,
    activity: &Activity,
    stop: &watch::Receiver<bool>,
    graceful: impl Fn(Pin<&mut C>),
) -> H1
where
    C: Future<Output = hyper::Result<()>> + Unpin,
{
    let mut ticker = Box::pin(tokio::time::sleep(clock.tick));
    let mut stopping = false;
    let mut closing = false;
    loop {
        if until_done_or_tick(&mut *conn, &mut ticker, clock.tick).await {
            return if closing { H1::Closing } else { H1::Ended };
        }
        if !stopping && *stop.borrow() {
            stopping = true;
            graceful(Pin::new(&mut *conn));
            continue;
        }
        match clock.tick(activity) {
            Verdict::Expired(why) => {
                tracing::debug!(why, "connection closed");
                return H1::Ended;
            }
            Verdict::Quiet if !stopping && !closing => {
                // hyper closes an idle connection at once on a graceful shutdown; one that is
                // still exchanging (bytes move in this very poll) finishes first and is then
                // closed, never resumed.
                let before = activity.moves();
                activity.set_parking(true);
                graceful(Pin::new(&mut *conn));
                let once = poll_fn(|cx| Poll::Ready(Pin::new(&mut *conn).poll(cx))).await;
                activity.set_parking(false);
                match once {
                    Poll::Ready(Ok(())) if activity.moves() == before => return H1::Parked,
                    Poll::Ready(Ok(())) => return H1::Closing,
                    Poll::Ready(Err(e)) => {
                        tracing::debug!(error = %e, "connection ended with an error");
                        return H1::Ended;
                    }
                    Poll::Pending => closing = true,
                }
            }
            Verdict::Quiet | Verdict::Heading | Verdict::Busy => {}
        }
    }
}

/// Drives an HTTP/2 connection: the same clock, no parking (its streams share it).
async fn drive_h2<C>(
    conn: C,
    clock: &mut Clock,
    activity: &Activity,
    stop: &watch::Receiver<bool>,
    graceful: impl Fn(Pin<&mut C>),
) where
    C: Future<Output = hyper::Result<()>> + Unpin,
{
    let mut conn = conn;
    let mut ticker = Box::pin(tokio::time::sleep(clock.tick));
    let mut stopping = false;
    loop {
        if until_done_or_tick(&mut conn, &mut ticker, clock.tick).await {
            return;
        }
        if !stopping && *stop.borrow() {
            stopping = true;
            graceful(Pin::new(&mut conn));
            continue;
        }
        if let Verdict::Expired(why) = clock.tick(activity) {
            tracing::debug!(why, "connection closed");
            return;
        }
    }
}
