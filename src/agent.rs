//! `raftvisor agent`: runs one replica — opens its stores, starts Raft,
//! serves the peer port (mutual TLS) and the client API (HTTPS) — until
//! SIGINT/SIGTERM, then stops accepting requests and shuts Raft down.
//! Plain HTTP on both ports only with `[tls] insecure = true`, and then
//! with a warning that repeats while the replica runs.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::AgentConfig;
use crate::raft::network::PeerNetwork;
use crate::replica::Replica;
use crate::tls::serve::TlsListener;
use crate::tls::AgentTls;

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
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("fail points: {0}")]
    FailPoints(String),
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

/// How often the insecure-mode warning is repeated.
const INSECURE_REMINDER: Duration = Duration::from_secs(300);

fn warn_insecure() {
    tracing::warn!("INSECURE: [tls] insecure = true — the peer port speaks Raft over plain HTTP without authentication and the API is served without TLS");
    tracing::warn!("INSECURE: anyone who can reach these ports can join Raft or read and change the cluster; use only for local development (see `raftvisor certs`)");
}

/// Loads the certificates of `[tls]`, or warns loudly that there are none.
fn load_tls(config: &AgentConfig) -> Result<Option<AgentTls>, AgentError> {
    let Some((ca, cert, key)) = config.tls.files() else {
        warn_insecure();
        return Ok(None);
    };
    let tls = AgentTls::load(ca, cert, key)?;
    for (field, addr) in [
        ("peer_addr", &config.peer_addr),
        ("api_addr", &config.api_addr),
    ] {
        if !tls.names_host_of(addr) {
            tracing::warn!(
                field,
                addr = %addr,
                names = ?tls.subject_names,
                "the certificate does not name this address: peers and clients dialling it will fail hostname verification"
            );
        }
    }
    Ok(Some(tls))
}

/// Serves `router` on `listener` (over TLS with `tls`) until `stop`.
fn serve(
    what: &'static str,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: axum::Router,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<std::io::Result<()>>, AgentError> {
    Ok(match tls {
        Some(config) => {
            let listener = TlsListener::new(listener, config, what)
                .map_err(|source| AgentError::Serve { what, source })?;
            let server = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<crate::auth::middleware::RemoteAddr>(),
            )
            .with_graceful_shutdown(stop);
            tokio::spawn(async move { server.await })
        }
        None => {
            let server = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<crate::auth::middleware::RemoteAddr>(),
            )
            .with_graceful_shutdown(stop);
            tokio::spawn(async move { server.await })
        }
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
    crate::tls::install_default_provider();
    #[cfg(feature = "failpoints")]
    crate::api::debug::configure_from_env().map_err(AgentError::FailPoints)?;
    // Certificates first: a bad file is one line, before anything listens.
    let tls = load_tls(&config)?;
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
    let peers = PeerNetwork::new(tls.as_ref().map(|t| t.peer_client.clone()));
    let replica: Arc<Replica> = Replica::start(config.clone(), peers).await?;
    tracing::info!(
        id = config.id,
        api = %config.api_addr,
        peer = %config.peer_addr,
        tls = tls.is_some(),
        data_dir = %config.data_dir.display(),
        "replica started"
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let peer_task = serve(
        "peer port",
        peer_listener,
        tls.as_ref().map(|t| t.peer_server.clone()),
        crate::raft::peer_server::router(replica.clone()),
        stopped(stop_rx.clone()),
    )?;
    let api_task = serve(
        "API",
        api_listener,
        tls.as_ref().map(|t| t.api_server.clone()),
        crate::api::router(replica.clone()),
        stopped(stop_rx),
    )?;
    let insecure_reminder = tls.is_none().then(|| {
        tokio::spawn(async {
            let mut every = tokio::time::interval(INSECURE_REMINDER);
            every.tick().await;
            loop {
                every.tick().await;
                warn_insecure();
            }
        })
    });
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
        .with_forwarder(crate::dns::forward::Forwarder::from_settings(
            &config.dns.upstreams,
            &config.dns.forward_from,
            config.dns.max_forwards,
        ));
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
            round_budget: crate::reconcile::round_budget(Duration::from_millis(
                config.supervisor.stall_after_ms,
            )),
        };
        tokio::spawn(crate::reconcile::run_while_leader(
            replica.clone(),
            crate::reconcile::engines::Engines::default(),
            settings,
            supervisor_stop.clone(),
        ))
    });
    // Gray failure: a leader whose supervision stalled gives up its
    // leadership by exiting (see crate::reconcile::watchdog).
    let watchdog = crate::reconcile::watchdog::spawn_checker(
        replica.watchdog.clone(),
        replica.raft.metrics(),
        |stall| {
            tracing::error!(
                term = stall.term,
                stalled_loop = stall.stalled.name(),
                exit_code = crate::reconcile::watchdog::EXIT_STALLED,
                "{stall}"
            );
            std::process::exit(crate::reconcile::watchdog::EXIT_STALLED);
        },
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    watchdog.stop();
    if let Some(reminder) = insecure_reminder {
        reminder.abort();
    }
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
