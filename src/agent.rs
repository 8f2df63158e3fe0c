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
use crate::tls::serve::Limits;
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
    Auth(#[from] crate::auth::first_token::FirstTokenError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("fail points: {0}")]
    FailPoints(String),
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
    tls.check_raft_id(config.id, cert)?;
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

/// Time limits of the peer port. Raft connections are pooled by every
/// replica's peer client, so an idle peer connection must outlive the
/// client's pool idle time (else a replica would pick a pooled connection
/// the server is closing at that moment).
pub const PEER_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
const _: () = assert!(
    PEER_IDLE_TIMEOUT.as_secs() > crate::raft::network::POOL_IDLE_TIMEOUT.as_secs(),
    "the peer server must keep idle connections longer than the peer client's pool"
);
/// Request headers on the peer port are due within this time.
pub const PEER_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once on the peer port.
pub const PEER_MAX_CONNECTIONS: usize = 1024;

/// The limits of the API port, from `[api]`.
pub fn api_limits(config: &AgentConfig) -> Limits {
    Limits {
        header_timeout: Duration::from_millis(config.api.header_timeout_ms),
        idle_timeout: Duration::from_millis(config.api.idle_timeout_ms),
        max_connections: config.api.max_connections,
    }
}

/// The limits of the peer port.
pub fn peer_limits() -> Limits {
    Limits {
        header_timeout: PEER_HEADER_TIMEOUT,
        idle_timeout: PEER_IDLE_TIMEOUT,
        max_connections: PEER_MAX_CONNECTIONS,
    }
}

/// Raises the soft limit of open files to the hard limit: every
/// connection, log segment and snapshot takes a descriptor, and the usual
/// soft limit of 1024 is easily reached by a busy replica.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if got != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read the open files limit");
        return;
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            tracing::warn!(
                soft = before,
                hard = limit.rlim_max,
                error = %std::io::Error::last_os_error(),
                "cannot raise the open files limit"
            );
            return;
        }
    }
    tracing::info!(
        soft = limit.rlim_cur,
        was = before,
        hard = limit.rlim_max,
        "open files limit"
    );
}

/// Ends the process when the Raft core stops on a storage error or a
/// panic: such a replica can never write again, and a live process that
/// answers `/v1/health` would keep its restart policy from acting.
fn exit_on_fatal(replica: &Replica) -> tokio::task::JoinHandle<()> {
    let mut metrics = replica.raft.metrics();
    tokio::spawn(async move {
        loop {
            let fatal = metrics.borrow().running_state.clone().err();
            if let Some(fatal) = fatal {
                if let Some(code) = crate::raft::fatal::exit_code_of(&fatal) {
                    tracing::error!(
                        exit_code = code,
                        "raft stopped: {fatal}; exiting so the restart policy brings the replica back"
                    );
                    // Let /v1/health answer 503 to whoever asks meanwhile
                    // and the log line reach its reader.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    std::process::exit(code);
                }
                return;
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    })
}

/// Runs the replica described by `config` until a shutdown signal.
pub async fn run(config: AgentConfig) -> Result<(), AgentError> {
    crate::api::install_metrics_recorder();
    // A bootstrap token file that exists but holds no token is a mistake
    // better reported now than when the cluster is first initialised.
    if let Some(path) = &config.auth.bootstrap_token_file {
        crate::auth::first_token::read_file(path)?;
    }
    crate::tls::install_default_provider();
    #[cfg(feature = "failpoints")]
    crate::api::debug::configure_from_env().map_err(AgentError::FailPoints)?;
    // Certificates first: a bad file is one line, before anything listens.
    let tls = load_tls(&config)?;
    raise_open_files_limit();
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
    // Only this replica's user may read its log, snapshots and keys.
    if let Err(e) = crate::file_modes::secure_dir(&config.data_dir) {
        tracing::warn!(data_dir = %config.data_dir.display(), error = %e, "cannot make the data directory private (mode 0700)");
    }
    let peers =
        PeerNetwork::new(tls.as_ref().map(|t| t.peer_client.clone())).with_sender(config.id);
    if let Some(tls) = &tls {
        peers.cert_expiries.record(config.id, &tls.certificate);
    }
    let replica: Arc<Replica> = Replica::start(config.clone(), peers).await?;
    tracing::info!(
        id = config.id,
        api = %config.api_addr,
        peer = %config.peer_addr,
        tls = tls.is_some(),
        data_dir = %config.data_dir.display(),
        "replica started"
    );
    let fatal_watch = exit_on_fatal(&replica);
    let stop_serving = tokio_util::sync::CancellationToken::new();
    let peer_task = crate::tls::serve::spawn(
        "peer port",
        peer_listener,
        tls.as_ref().map(|t| t.peer_server.clone()),
        crate::replica::peer_server::router(replica.clone()),
        peer_limits(),
        stop_serving.clone(),
    );
    let api_task = crate::tls::serve::spawn(
        "API",
        api_listener,
        tls.as_ref().map(|t| t.api_server.clone()),
        crate::api::router(replica.clone()),
        api_limits(&config),
        stop_serving.clone(),
    );
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
    fatal_watch.abort();
    stop_serving.cancel();
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
