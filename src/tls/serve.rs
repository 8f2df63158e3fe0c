//! Serving axum over TLS: a [`TlsListener`] that accepts TCP connections,
//! runs each TLS handshake in its own task (a slow or hostile client cannot
//! hold up the others) and hands finished streams to `axum::serve`. Because
//! it is an `axum::serve::Listener`, the agent's graceful shutdown works
//! exactly as with a plain `TcpListener`; dropping the listener stops the
//! accept loop and any handshake still in flight.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A handshake that has not finished by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one warning per this interval about refused handshakes, so a
/// peer retrying with a bad certificate cannot flood the log.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// A TCP listener whose connections come out TLS-established.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Serves `config` on `listener`; `what` names the port in logs.
    pub fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        what: &'static str,
    ) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let accept_loop = tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), tx, what));
        Ok(TlsListener {
            local,
            ready,
            accept_loop,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept loop only ends when aborted: wait for shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Rate-limited warnings about refused handshakes.
struct Refusals {
    last_warned: Option<Instant>,
    suppressed: u64,
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    what: &'static str,
) {
    let refusals = Arc::new(std::sync::Mutex::new(Refusals {
        last_warned: None,
        suppressed: 0,
    }));
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(connection) => connection,
            Err(e) => {
                // Out of file descriptors and the like: back off, as
                // axum's own TcpListener does.
                tracing::debug!(error = %e, what, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        let refusals = refusals.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = ready.send((stream, remote)).await;
                }
                Ok(Err(e)) => {
                    let mut r = refusals.lock().unwrap_or_else(|e| e.into_inner());
                    if r.last_warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                        tracing::warn!(
                            %remote,
                            error = %e,
                            suppressed = r.suppressed,
                            "{what}: TLS handshake refused"
                        );
                        r.last_warned = Some(Instant::now());
                        r.suppressed = 0;
                    } else {
                        r.suppressed += 1;
                    }
                }
                Err(_) => tracing::debug!(%remote, what, "TLS handshake timed out"),
            }
        });
    }
}
