//! The one HTTP server loop of a replica, for the API and the peer port:
//! accepts TCP connections (at most [`Limits::max_connections`] at once),
//! runs each TLS handshake in the connection's own task under a deadline,
//! and serves HTTP/1.1 with hyper. Every request carries the remote address
//! (`axum::extract::ConnectInfo<SocketAddr>`) and the client's certificate
//! chain ([`PeerCertificates`], empty without client authentication or
//! TLS) as request extensions, so middlewares can screen on them.
//!
//! Slow and idle clients cannot hold a connection for ever:
//! * a connection must deliver its first request header within
//!   [`Limits::header_timeout`] of being accepted (the TLS handshake
//!   included), and later request headers within that time of their first
//!   byte; otherwise it is closed at once;
//! * a keep-alive connection with no request in flight and no traffic for
//!   [`Limits::idle_timeout`] is closed (gracefully: hyper closes it
//!   between requests). The header timer does not run while a connection
//!   idles between requests, so pooled peer connections live out the idle
//!   timeout (hyper's own `header_read_timeout` would also close idle
//!   keep-alive connections, so it is off and this loop keeps the times).
//!
//! Over the connection cap a new connection is accepted and closed at once
//! (a client sees the connection reset or closed before the TLS handshake
//! answers) rather than left waiting in the kernel's backlog: callers learn
//! immediately and retry elsewhere, and connections already open keep
//! working. Shutdown stops accepting, asks every connection to close after
//! its request in flight, and waits until they have.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// At most one warning per this interval about refused connections and
/// handshakes, so a client retrying cannot flood the log.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// Time limits and the connection cap of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// TLS handshake plus first request header; later request headers from
    /// their first byte.
    pub header_timeout: Duration,
    /// A connection with no request in flight and no traffic this long is
    /// closed.
    pub idle_timeout: Duration,
    /// Connections served at once; more are closed on accept.
    pub max_connections: usize,
}

/// The certificate chain the client presented during the TLS handshake
/// (leaf first); empty when it presented none or the port is plain HTTP.
#[derive(Debug, Clone, Default)]
pub struct PeerCertificates(pub Arc<Vec<CertificateDer<'static>>>);

impl PeerCertificates {
    /// The client's own certificate.
    pub fn leaf(&self) -> Option<&CertificateDer<'static>> {
        self.0.first()
    }
}

/// Serves `router` on `listener` (over TLS with `tls`) until `stop` is
/// cancelled; the task ends once every connection has closed. Each time
/// `renew` changes (this replica's certificate was swapped), the
/// connections open before are closed gracefully — the request in flight
/// is answered — so their clients connect again and see the new
/// certificate.
pub fn spawn(
    what: &'static str,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: axum::Router,
    limits: Limits,
    stop: CancellationToken,
    renew: Option<tokio::sync::watch::Receiver<u64>>,
) -> tokio::task::JoinHandle<()> {
    let server = Arc::new(Server {
        what,
        tls: tls.map(TlsAcceptor::from),
        router,
        limits,
        warnings: Mutex::new(Warnings::default()),
        renew,
    });
    tokio::spawn(server.run(listener, stop))
}

struct Server {
    what: &'static str,
    tls: Option<TlsAcceptor>,
    router: axum::Router,
    limits: Limits,
    warnings: Mutex<Warnings>,
    renew: Option<tokio::sync::watch::Receiver<u64>>,
}

/// Rate-limited warnings, one counter per kind.
#[derive(Default)]
struct Warnings {
    last_warned: Option<Instant>,
    suppressed: u64,
}

impl Server {
    async fn run(self: Arc<Self>, listener: TcpListener, stop: CancellationToken) {
        let max = self.limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
        let slots = Arc::new(Semaphore::new(max));
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (tcp, remote) = match accepted {
                Ok(connection) => connection,
                Err(e) => {
                    // Out of file descriptors and the like: back off, as
                    // axum's own listener does.
                    tracing::debug!(error = %e, what = self.what, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                self.warn(|suppressed| {
                    tracing::warn!(
                        %remote,
                        max_connections = max,
                        suppressed,
                        "{}: connection refused: too many open connections",
                        self.what
                    )
                });
                drop(tcp);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let server = self.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                server.connection(tcp, remote, stop).await;
                drop(slot);
            });
        }
        drop(listener);
        // Every slot back means every connection has ended.
        let _ = slots.acquire_many(max as u32).await;
    }

    fn warn(&self, log: impl FnOnce(u64)) {
        let mut w = self.warnings.lock().unwrap_or_else(|e| e.into_inner());
        if w.last_warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            log(w.suppressed);
            w.last_warned = Some(Instant::now());
            w.suppressed = 0;
        } else {
            w.suppressed += 1;
        }
    }

    async fn connection(
        &self,
        tcp: tokio::net::TcpStream,
        remote: SocketAddr,
        stop: CancellationToken,
    ) {
        // Marked before the handshake picks a certificate: a swap during
        // the handshake then still closes this connection, which may have
        // been made with the old one.
        let mut renew = self.renew.clone();
        if let Some(renew) = renew.as_mut() {
            renew.borrow_and_update();
        }
        let Some(acceptor) = &self.tls else {
            return self
                .serve_http(tcp, remote, PeerCertificates::default(), stop, renew)
                .await;
        };
        let stream =
            match tokio::time::timeout(self.limits.header_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    return self.warn(|suppressed| {
                        tracing::warn!(
                            %remote,
                            error = %e,
                            suppressed,
                            "{}: TLS handshake refused",
                            self.what
                        )
                    })
                }
                Err(_) => {
                    tracing::debug!(%remote, what = self.what, "TLS handshake timed out");
                    return;
                }
            };
        let certs = stream
            .get_ref()
            .1
            .peer_certificates()
            .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default();
        self.serve_http(
            stream,
            remote,
            PeerCertificates(Arc::new(certs)),
            stop,
            renew,
        )
        .await
    }

    async fn serve_http<S>(
        &self,
        io: S,
        remote: SocketAddr,
        certs: PeerCertificates,
        stop: CancellationToken,
        mut renew: Option<tokio::sync::watch::Receiver<u64>>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(Activity::new());
        let service = ConnectionService {
            router: self.router.clone(),
            remote,
            certs,
            activity: activity.clone(),
        };
        let io = TokioIo::new(Tracked {
            inner: io,
            activity: activity.clone(),
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        // This loop keeps the header and idle times (see the module text).
        builder.keep_alive(true).header_read_timeout(None);
        let connection = builder.serve_connection(io, service);
        tokio::pin!(connection);
        let mut check = tokio::time::interval(check_every(&self.limits));
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut closing = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%remote, what = self.what, error = %e, "connection ended");
                    }
                    return;
                }
                _ = check.tick() => match activity.verdict(&self.limits) {
                    Verdict::HeaderTimeout => {
                        tracing::debug!(%remote, what = self.what, "request header not received in time: closing");
                        return;
                    }
                    Verdict::Idle if !closing => {
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                    _ => {}
                },
                _ = stop.cancelled(), if !closing => {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                _ = renewed(&mut renew), if !closing => {
                    tracing::debug!(%remote, what = self.what, "certificate renewed: closing the connection made with the old one");
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Resolves when `renew` changes; never without one (or once its sender
/// is gone).
async fn renewed(renew: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    let changed = match renew {
        Some(renew) => renew.changed().await.is_ok(),
        None => false,
    };
    if !changed {
        std::future::pending::<()>().await;
    }
}

/// How often a connection's timers are checked.
fn check_every(limits: &Limits) -> Duration {
    (limits.header_timeout.min(limits.idle_timeout) / 4)
        .clamp(Duration::from_millis(20), Duration::from_secs(1))
}

/// What a connection is doing, in milliseconds since it started. Only the
/// connection's own task touches it; atomics make it `Sync`.
struct Activity {
    start: Instant,
    /// Requests whose response has not been sent completely.
    in_flight: AtomicUsize,
    /// 1 + when the current request header started arriving; 0 when no
    /// header is due (a request is in flight, or the connection idles
    /// between requests).
    header_since: AtomicU64,
    /// Last byte read or written, or request finished.
    last_activity: AtomicU64,
}

enum Verdict {
    Fine,
    HeaderTimeout,
    Idle,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            // The first request is due from the start.
            header_since: AtomicU64::new(1),
            last_activity: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn read(&self, bytes: usize) {
        self.read_at(self.now(), bytes)
    }

    fn read_at(&self, now: u64, bytes: usize) {
        self.last_activity.store(now, Ordering::Relaxed);
        if bytes > 0
            && self.in_flight.load(Ordering::Relaxed) == 0
            && self.header_since.load(Ordering::Relaxed) == 0
        {
            self.header_since.store(now + 1, Ordering::Relaxed);
        }
    }

    fn wrote(&self) {
        self.last_activity.store(self.now(), Ordering::Relaxed);
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.header_since.store(0, Ordering::Relaxed);
    }

    fn request_finished(&self) {
        self.request_finished_at(self.now())
    }

    fn request_finished_at(&self, now: u64) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.last_activity.store(now, Ordering::Relaxed);
    }

    fn verdict(&self, limits: &Limits) -> Verdict {
        self.verdict_at(self.now(), limits)
    }

    fn verdict_at(&self, now: u64, limits: &Limits) -> Verdict {
        let header_since = self.header_since.load(Ordering::Relaxed);
        if header_since != 0
            && now.saturating_sub(header_since - 1) >= limits.header_timeout.as_millis() as u64
        {
            return Verdict::HeaderTimeout;
        }
        if self.in_flight.load(Ordering::Relaxed) == 0
            && header_since == 0
            && now.saturating_sub(self.last_activity.load(Ordering::Relaxed))
                >= limits.idle_timeout.as_millis() as u64
        {
            return Verdict::Idle;
        }
        Verdict::Fine
    }
}

/// A connection's byte stream, reporting traffic to its [`Activity`].
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.activity.read(buf.filled().len() - before);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(_)) = polled {
            self.activity.wrote();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(_)) = polled {
            self.activity.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Hands each request of one connection to the router, with the
/// connection's address and certificates attached.
#[derive(Clone)]
struct ConnectionService {
    router: axum::Router,
    remote: SocketAddr,
    certs: PeerCertificates,
    activity: Arc<Activity>,
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<TrackedBody>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, mut request: Request<Incoming>) -> ResponseFuture {
        self.activity.request_started();
        let in_flight = InFlight(self.activity.clone());
        request.extensions_mut().insert(ConnectInfo(self.remote));
        request.extensions_mut().insert(self.certs.clone());
        let mut router = self.router.clone();
        let response = tower_service::Service::call(&mut router, request.map(Body::new));
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| TrackedBody {
                inner: body,
                _in_flight: in_flight,
            }))
        })
    }
}

/// Ends a request's time in flight when its response is done (or dropped).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// A response body that keeps its request in flight until it is sent.
struct TrackedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_timeout: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(300),
            max_connections: 4,
        }
    }

    fn verdict(a: &Activity, at: u64) -> &'static str {
        match a.verdict_at(at, &limits()) {
            Verdict::Fine => "fine",
            Verdict::HeaderTimeout => "header timeout",
            Verdict::Idle => "idle",
        }
    }

    #[test]
    fn header_timer_runs_until_a_request_starts_and_idle_after_it() {
        let a = Activity::new();
        assert_eq!(verdict(&a, 50), "fine");
        // Connected, nothing sent: the first header is overdue.
        assert_eq!(verdict(&a, 150), "header timeout");

        let a = Activity::new();
        a.read_at(10, 20);
        a.request_started();
        // A request in flight is neither late nor idle, however long.
        assert_eq!(verdict(&a, 10_000), "fine");
        a.request_finished_at(10_000);
        assert_eq!(verdict(&a, 10_200), "fine");
        assert_eq!(verdict(&a, 10_300), "idle");
        // The first byte of the next header starts the header timer.
        a.read_at(10_400, 5);
        assert_eq!(verdict(&a, 10_450), "fine");
        assert_eq!(verdict(&a, 10_500), "header timeout");
        // Bytes read while a request is in flight (its body) start nothing.
        a.request_started();
        a.read_at(10_600, 100);
        assert_eq!(verdict(&a, 20_000), "fine");
    }

    /// A connection whose handshake was answered with the certificate a
    /// swap then replaced is closed like the older ones, so its client
    /// connects again and sees the new certificate.
    #[tokio::test]
    async fn a_swap_during_the_handshake_closes_that_connection_too() {
        use crate::tls::certs::{self, Role};
        use rustls::pki_types::pem::PemObject;
        use std::io::{Read, Write};

        crate::tls::install_default_provider();
        let dir = tempfile::tempdir().unwrap();
        certs::init_ca(dir.path()).unwrap();
        let issued = certs::issue_with_id(
            dir.path(),
            Role::Manager,
            "replica-1",
            &["127.0.0.1".to_string()],
            Some(1),
        )
        .unwrap();
        let ca = dir.path().join(certs::CA_CERT);
        let tls = crate::tls::AgentTls::load(&ca, &issued.cert, &issued.key).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (swapped, renew) = tokio::sync::watch::channel(0u64);
        let stop = CancellationToken::new();
        let router = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let limits = Limits {
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4,
        };
        let server = spawn(
            "test",
            listener,
            Some(tls.api_server.clone()),
            router,
            limits,
            stop.clone(),
            Some(renew),
        );
        let ended = tokio::task::spawn_blocking(move || {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(&ca).unwrap() {
                roots.add(cert.unwrap()).unwrap();
            }
            let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = "127.0.0.1".try_into().unwrap();
            let mut tls = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
            let mut tcp = std::net::TcpStream::connect(addr).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            // The server answers the hello once it has chosen its
            // certificate; the swap comes before the handshake ends.
            tls.write_tls(&mut tcp).unwrap();
            tls.read_tls(&mut tcp).unwrap();
            tls.process_new_packets().unwrap();
            swapped.send_replace(1);
            while tls.is_handshaking() {
                tls.complete_io(&mut tcp).unwrap();
            }
            let mut stream = rustls::Stream::new(&mut tls, &mut tcp);
            // The write may already meet a closed connection.
            let _ = stream.write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n");
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).map_err(|e| e.kind())
        })
        .await
        .unwrap();
        assert!(
            !matches!(
                ended,
                Err(std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
            ),
            "the connection made with the replaced certificate stays open: {ended:?}"
        );
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap();
    }
}
