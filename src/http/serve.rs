//! The accept loop of every listener (plain HTTP, HTTPS, the redirect listener), with the
//! limits a server on the open internet needs:
//!
//! - the TLS handshake, then the first request, then each HTTP/1.1 request's headers must
//!   arrive within `header_timeout` (for HTTP/1.1 that also bounds how long a kept-alive
//!   connection waits for its next request);
//! - a connection on which no byte has moved either way for `idle_timeout` is closed, whatever
//!   it is doing (silent, idle, or a stalled upload or download); a transfer that keeps moving,
//!   however slowly, is never cut;
//! - at most `max_connections` at once, for the whole process: when a new client comes and
//!   the cap is reached, the connection that has been quiet the longest is closed to make room
//!   (so idle or silent connections cannot lock real clients out), and the event is logged.
//!
//! On shutdown every connection is asked to finish its request in flight and close.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use axum_server::accept::Accept;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

/// The most a connection reads ahead of what its request has taken (HTTP/1.1).
const MAX_READ_BUF: usize = 128 * 1024;

/// The limits of every listener.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Turns an accepted TCP stream into the stream HTTP is spoken on (TLS, or the TCP stream
/// itself): axum-server's acceptors (`DefaultAcceptor`, `RustlsAcceptor`) and rustls-acme's.
pub trait Handshake:
    Accept<Tracked, (), Stream = Self::Io, Future = Self::Fut> + Clone + Send + Sync + 'static
{
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    type Fut: Future<Output = io::Result<(Self::Io, Self::Service)>> + Send + 'static;
}

impl<A> Handshake for A
where
    A: Accept<Tracked, ()> + Clone + Send + Sync + 'static,
    A::Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A::Future: Send + 'static,
{
    type Io = A::Stream;
    type Fut = A::Future;
}

/// Every open connection of the process, with when each last moved a byte.
pub struct Connections {
    limits: Limits,
    epoch: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Conn>>,
    /// Wakes `drained` waiters when a connection closes.
    closed: Notify,
    log: Mutex<CapLog>,
}

struct Conn {
    activity: Arc<AtomicU64>,
    /// Requests being answered: a connection with one is closed to make room only when no
    /// connection is without.
    in_flight: Arc<AtomicU64>,
    evict: Arc<Notify>,
}

#[derive(Default)]
struct CapLog {
    last: Option<Instant>,
    evicted: u64,
    refused: u64,
}

impl Connections {
    pub fn new(limits: Limits) -> Arc<Connections> {
        Arc::new(Connections {
            limits,
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            open: Mutex::default(),
            closed: Notify::new(),
            log: Mutex::default(),
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn count(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Admit a new connection, making room by closing the quietest one when the cap is
    /// reached. `None`: no room could be made (the cap is 0).
    fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mut evicted = false;
        if open.len() >= self.limits.max_connections {
            let quietest = open
                .iter()
                .min_by_key(|(_, c)| {
                    let busy = c.in_flight.load(Ordering::Relaxed) > 0;
                    (busy, c.activity.load(Ordering::Relaxed))
                })
                .map(|(id, _)| *id);
            match quietest.and_then(|id| open.remove(&id)) {
                Some(c) => {
                    c.evict.notify_one();
                    evicted = true;
                }
                None => {
                    drop(open);
                    self.note_cap(false);
                    return None;
                }
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(AtomicU64::new(self.now_ms()));
        let in_flight = Arc::new(AtomicU64::new(0));
        let evict = Arc::new(Notify::new());
        open.insert(
            id,
            Conn {
                activity: activity.clone(),
                in_flight: in_flight.clone(),
                evict: evict.clone(),
            },
        );
        drop(open);
        if evicted {
            self.note_cap(true);
        }
        Some(Admitted {
            conns: self.clone(),
            id,
            activity,
            in_flight,
            evict,
        })
    }

    /// Log that the cap was reached, at most every ten seconds, with counts since.
    fn note_cap(&self, evicted: bool) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if evicted {
            log.evicted += 1;
        } else {
            log.refused += 1;
        }
        if log
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            tracing::warn!(
                max_connections = self.limits.max_connections,
                closed_quietest = log.evicted,
                refused = log.refused,
                "connection cap reached: closing the connections that have been quiet longest to make room"
            );
            *log = CapLog {
                last: Some(Instant::now()),
                ..CapLog::default()
            };
        }
    }

    /// Completes when no connection is open any more.
    pub async fn drained(&self) {
        loop {
            let notified = self.closed.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// A connection's place in `Connections`, given back when dropped.
struct Admitted {
    conns: Arc<Connections>,
    id: u64,
    activity: Arc<AtomicU64>,
    in_flight: Arc<AtomicU64>,
    evict: Arc<Notify>,
}

/// One request being answered on a connection, until its response is ready (or the request
/// is cancelled).
struct InFlight(Arc<AtomicU64>);

impl InFlight {
    fn new(count: &Arc<AtomicU64>) -> InFlight {
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.conns
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        self.conns.closed.notify_waiters();
    }
}

/// A TCP stream that records when a byte last moved.
pub struct Tracked {
    inner: TcpStream,
    activity: Arc<AtomicU64>,
    conns: Arc<Connections>,
}

impl Tracked {
    fn moved(&self) {
        self.activity.store(self.conns.now_ms(), Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.moved();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        r
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

/// Accept connections on `listener` until `stop` turns true; each is served by `app` after
/// `handshake`, HTTP/2 offered only when `h2` (TLS listeners, by ALPN or preface).
pub async fn serve<H: Handshake>(
    listener: TcpListener,
    handshake: H,
    app: Router,
    conns: Arc<Connections>,
    h2: bool,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors or a connection reset before accept: keep going.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => return Ok(()),
        };
        let Some(admitted) = conns.admit() else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let io = Tracked {
            inner: tcp,
            activity: admitted.activity.clone(),
            conns: conns.clone(),
        };
        tokio::spawn(connection(
            io,
            peer,
            handshake.clone(),
            app.clone(),
            admitted,
            h2,
            stop.clone(),
        ));
    }
}

async fn connection<H: Handshake>(
    io: Tracked,
    peer: SocketAddr,
    handshake: H,
    app: Router,
    admitted: Admitted,
    h2: bool,
    mut stop: watch::Receiver<bool>,
) {
    let limits = admitted.conns.limits;
    let stream = tokio::select! {
        r = tokio::time::timeout(limits.header_timeout, handshake.accept(io, ())) => match r {
            Ok(Ok((s, _))) => s,
            // Failed or too slow: nothing was asked, nothing to answer.
            _ => return,
        },
        _ = admitted.evict.notified() => return,
        _ = stopped(&mut stop) => return,
    };
    // Whether a first request arrived: until one does, the connection has `header_timeout`
    // from the end of the handshake (this also bounds the first bytes of a TLS connection,
    // which are read before HTTP/1 or HTTP/2 is chosen).
    let asked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let first_by = tokio::time::Instant::now() + limits.header_timeout;
    let flag = asked.clone();
    let in_flight = admitted.in_flight.clone();
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            flag.store(true, Ordering::Relaxed);
            let busy = InFlight::new(&in_flight);
            req.extensions_mut().insert(ConnectInfo(peer));
            let mut app = app.clone();
            async move {
                use tower::Service as _;
                let resp = app.call(req.map(axum::body::Body::new)).await;
                drop(busy);
                resp
            }
        });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // The read buffer of a connection: hyper grows it to 400 KiB for a fast upload by
        // default, and an upload's pieces hold on to it until written; 128 KiB reads keep
        // pushes as fast and many concurrent uploads smaller.
        .max_buf_size(MAX_READ_BUF);
    if !h2 {
        builder = builder.http1_only();
    }
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        let last = Duration::from_millis(admitted.activity.load(Ordering::Relaxed));
        let quiet_until =
            tokio::time::Instant::from_std(admitted.conns.epoch + last + limits.idle_timeout);
        tokio::select! {
            _ = conn.as_mut() => return,
            // Closed to make room: the quietest connection, dropped at once.
            _ = admitted.evict.notified() => return,
            _ = tokio::time::sleep_until(first_by), if !asked.load(Ordering::Relaxed) => {
                if !asked.load(Ordering::Relaxed) {
                    return;
                }
            }
            _ = tokio::time::sleep_until(quiet_until) => {
                let now = admitted.conns.now_ms();
                let last = admitted.activity.load(Ordering::Relaxed);
                if now.saturating_sub(last) >= limits.idle_timeout.as_millis() as u64 {
                    return;
                }
            }
            _ = stopped(&mut stop), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Completes when `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Raise the soft limit on open files to the hard limit (systemd starts services with 1024)
/// and return the limit in force.
pub fn raise_file_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if let (Some(cur), Some(max)) = (lim.current, lim.maximum) {
        if cur < max {
            lim.current = Some(max);
            if setrlimit(Resource::Nofile, lim).is_err() {
                lim.current = Some(cur);
            }
        }
    } else if lim.maximum.is_none() && lim.current.is_some() {
        // Unlimited hard limit: take a generous, finite soft one.
        let want = 1 << 20;
        let mut l = lim;
        l.current = Some(want);
        if setrlimit(Resource::Nofile, l).is_ok() {
            lim.current = Some(want);
        }
    }
    lim.current.unwrap_or(1 << 20)
}

/// The connection cap that fits in `file_limit` descriptors: each connection holds one (two
/// while it serves a blob file), and the database, blob and upload files need their share.
pub fn fitting_cap(configured: usize, file_limit: u64) -> usize {
    let room = file_limit.saturating_sub(256) / 2;
    configured.min(room as usize).max(1)
}
