//! `raftvisor agent`: runs one replica — opens its stores, starts Raft,
//! serves the peer port and the client API — until SIGINT/SIGTERM, then
//! stops accepting requests and shuts Raft down.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::AgentConfig;
use crate::replica::Replica;

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Start(#[from] crate::replica::StartError),
    #[error("cannot listen on {what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Dns(#[from] crate::dns::server::DnsError),
    #[error(transparent)]
    Auth(#[from] crate::auth::bootstrap::BootstrapError),
    #[error("{what} server failed: {source}")]
    Serve {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

async fn bind(what: &'static str, addr: &str) -> Result<TcpListener, AgentError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AgentError::Bind {
            what,
            addr: addr.to_string(),
            source,
        })
}

/// Runs the replica described by `config` until a shutdown signal.
pub async fn run(config: AgentConfig) -> Result<(), AgentError> {
    crate::api::install_metrics_recorder();
    // A bootstrap token file that exists but holds no token is a mistake
    // better reported now than when the cluster is first initialised.
    if let Some(path) = &config.auth.bootstrap_token_file {
        crate::auth::bootstrap::read_file(path)?;
    }
    // Bind first: a port in use is reported before any state is touched.
    let peer_listener = bind("peer_addr", &config.peer_addr).await?;
    let api_listener = bind("api_addr", &config.api_addr).await?;
    let mut dns_sockets = Vec::new();
    if config.dns.enabled {
        dns_sockets.push(crate::dns::server::bind(&config.dns_addr).await?);
        // Extra listeners (e.g. the Docker bridge gateway) are a convenience
        // for containers: without them the replica still serves its own.
        for addr in &config.dns.extra_addrs {
            match crate::dns::server::bind(addr).await {
                Ok(sockets) => dns_sockets.push(sockets),
                Err(e) => {
                    tracing::warn!(error = %e, "extra DNS address not served; containers using it cannot resolve cluster names")
                }
            }
        }
    }
    let replica: Arc<Replica> = Replica::start(config.clone()).await?;
    tracing::info!(
        id = config.id,
        api = %config.api_addr,
        peer = %config.peer_addr,
        data_dir = %config.data_dir.display(),
        "replica started"
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let peer_server = axum::serve(
        peer_listener,
        crate::raft::peer_server::router(replica.clone()),
    )
    .with_graceful_shutdown(stopped(stop_rx.clone()));
    // With the peer's address, so refused requests are logged with it.
    let api_server = axum::serve(
        api_listener,
        crate::api::router(replica.clone())
            .into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(stopped(stop_rx));
    let mut dns_server = (!dns_sockets.is_empty()).then(|| {
        let this_server = config
            .dns_addr
            .parse::<std::net::SocketAddr>()
            .map_or(std::net::Ipv4Addr::LOCALHOST.into(), |a| a.ip());
        let handler = crate::dns::server::Handler::new(
            replica.clone(),
            &config.dns.domain,
            config.dns.ttl_secs,
            this_server,
        )
        .with_upstreams(
            config
                .dns
                .upstreams
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect(),
        );
        crate::dns::server::serve(handler, dns_sockets)
    });
    let supervisor_stop = tokio_util::sync::CancellationToken::new();
    let supervisor = config.supervisor.enabled.then(|| {
        let settings = crate::reconcile::SupervisorSettings {
            node_grace: Duration::from_millis(config.supervisor.node_grace_ms),
            probe_interval: Duration::from_millis(config.supervisor.probe_interval_ms),
            resync: Duration::from_millis(config.supervisor.resync_ms),
            stop_grace: Duration::from_millis(config.supervisor.stop_grace_ms),
            container_dns: config.dns.container_resolvers.clone(),
        };
        tokio::spawn(crate::reconcile::run_while_leader(
            replica.clone(),
            crate::reconcile::engines::Engines::default(),
            settings,
            supervisor_stop.clone(),
        ))
    });
    let peer_task = tokio::spawn(async move { peer_server.await });
    let api_task = tokio::spawn(async move { api_server.await });
    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    supervisor_stop.cancel();
    if let Some(server) = dns_server.as_mut() {
        let _ = tokio::time::timeout(Duration::from_secs(2), server.shutdown_gracefully()).await;
    }
    if let Some(supervisor) = supervisor {
        let _ = supervisor.await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = api_task.await;
        let _ = peer_task.await;
    })
    .await;
    let _ = replica.raft.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
