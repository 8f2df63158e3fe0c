//! The DNS server every replica runs on `dns_addr` (UDP and TCP) with one
//! [`Handler`]: hickory-server serves TCP, and [`super::udp`]'s workers
//! serve UDP with the same handler, so DNS keeps answering (possibly
//! stale) when the cluster has no quorum.

use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::Server;

pub use super::handler::Handler;

/// Why the DNS server could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot listen for DNS on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// The sockets of a DNS server, bound before anything else starts so a
/// port in use is reported at once.
pub struct DnsSockets {
    udp: tokio::net::UdpSocket,
    tcp: tokio::net::TcpListener,
}

/// Binds UDP and TCP on `addr`.
pub async fn bind(addr: &str) -> Result<DnsSockets, DnsError> {
    let bind_error = |source| DnsError::Bind {
        addr: addr.to_string(),
        source,
    };
    Ok(DnsSockets {
        udp: tokio::net::UdpSocket::bind(addr)
            .await
            .map_err(bind_error)?,
        tcp: tokio::net::TcpListener::bind(addr)
            .await
            .map_err(bind_error)?,
    })
}

/// Lets hickory-server's TCP listener share the handler with the UDP workers.
struct SharedHandler(Arc<Handler>);

#[async_trait::async_trait]
impl RequestHandler for SharedHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        self.0
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

/// A running DNS server: UDP workers of its own ([`super::udp`]) and
/// hickory-server's TCP listener.
pub struct DnsServer {
    tcp: Server<SharedHandler>,
    stop: tokio_util::sync::CancellationToken,
    udp_workers: tokio::task::JoinSet<()>,
}

impl DnsServer {
    /// Stops accepting queries and waits for the listeners to finish.
    pub async fn shutdown_gracefully(&mut self) {
        self.stop.cancel();
        if let Err(error) = self.tcp.shutdown_gracefully().await {
            tracing::debug!(%error, "DNS TCP listener stopped with an error");
        }
        while self.udp_workers.join_next().await.is_some() {}
    }
}

/// Serves DNS on every one of `sockets` until the returned server is shut down.
pub fn serve(handler: Handler, sockets: Vec<DnsSockets>) -> DnsServer {
    let handler = Arc::new(handler);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let stop = tokio_util::sync::CancellationToken::new();
    let mut udp_workers = tokio::task::JoinSet::new();
    let mut tcp = Server::new(SharedHandler(handler.clone()));
    for socket in sockets {
        super::udp::spawn_workers(
            handler.clone(),
            Arc::new(socket.udp),
            workers,
            stop.clone(),
            &mut udp_workers,
        );
        tcp.register_listener(socket.tcp, Duration::from_secs(5), 65_535);
    }
    DnsServer {
        tcp,
        stop,
        udp_workers,
    }
}
