//! `raftvisor agent`: runs one replica — opens its stores, starts Raft,
//! serves the peer port (mutual TLS) and the client API (HTTPS) — until
//! its shutdown token is cancelled (`raftvisor agent`: SIGINT/SIGTERM) or
//! it stops itself (a failed Raft core, a stalled supervisor); then it
//! drains: stops accepting, ends every task it spawned within a deadline
//! and shuts Raft down. [`run`] answers with what it bound, so tests and
//! benchmarks run replicas in-process too. It never exits the process
//! itself, except as the last resort of a drain that cannot finish.
//! Plain HTTP on both ports only with `[tls] insecure = true`, and then
//! with a warning that repeats while the replica runs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::raft::network::PeerNetwork;
use crate::reconcile::engines::Engines;
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
    #[cfg(feature = "failpoints")]
    #[error("fail points: {0}")]
    FailPoints(#[from] crate::api::debug::FailPointsEnvError),
}

async fn bind(what: &'static str, addr: std::net::SocketAddr) -> Result<TcpListener, AgentError> {
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
        if !tls.names_host_of(&addr.to_string()) {
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

/// What a running agent listens on (the actual addresses: a configured
/// port 0 shows here as the port the kernel chose).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    pub api: SocketAddr,
    pub peer: SocketAddr,
    /// The DNS addresses served (UDP and TCP on each); empty with DNS off.
    pub dns: Vec<SocketAddr>,
}

/// How an agent runs, besides its config.
#[derive(Clone)]
pub struct Options {
    /// The engines the supervisor acts on: connected on demand by default;
    /// in-process clusters (benchmarks, tests) install in-memory ones.
    pub engines: Engines,
    /// How long the drain may take once the agent stops: tasks still
    /// running then are aborted and named in [`Stopped::abandoned`].
    pub drain_deadline: Duration,
    /// A stalled supervisor or a failed Raft core normally stops the agent
    /// with an exit code (see [`Stopped::exit_code`]); if the drain cannot
    /// finish — a runtime wedged by the stall — the process exits with that
    /// code after the drain deadline. In-process clusters turn that last
    /// resort off so one replica's stall does not end the others.
    pub exit_process_if_wedged: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            engines: Engines::default(),
            drain_deadline: DRAIN_DEADLINE,
            exit_process_if_wedged: true,
        }
    }
}

/// How long a stopping agent waits for its tasks by default.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(8);
/// How long a replica that stops itself (a stalled supervisor, a failed
/// Raft core) waits for its tasks before it exits anyway: it already gave
/// up its part in Raft, and its followers elect another leader meanwhile.
pub const SELF_STOP_DRAIN_DEADLINE: Duration = Duration::from_secs(2);

/// How the agent ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    /// `None` when asked to stop; otherwise the process exit code that
    /// tells its restart policy why: a Raft storage failure or panic
    /// (see `crate::raft::fatal`) or a stalled supervisor
    /// (`crate::reconcile::watchdog::EXIT_STALLED`).
    pub exit_code: Option<i32>,
    /// Tasks that had not ended by the drain deadline (then aborted).
    pub abandoned: Vec<&'static str>,
}

/// A running agent: what it bound and its replica. It runs until the
/// `shutdown` token given to [`run`] is cancelled, or until it stops itself
/// (a Raft failure, a stalled supervisor); [`Running::stopped`] waits for
/// the drain either way.
pub struct Running {
    pub bound: Bound,
    pub replica: Arc<Replica>,
    drained: tokio::task::JoinHandle<Stopped>,
}

impl Running {
    /// Whether the agent has stopped (and drained) already.
    pub fn has_stopped(&self) -> bool {
        self.drained.is_finished()
    }

    /// Waits until the agent has stopped and drained its tasks.
    pub async fn stopped(self) -> Stopped {
        match self.drained.await {
            Ok(stopped) => stopped,
            Err(e) => Stopped {
                exit_code: Some(1),
                abandoned: vec![if e.is_panic() {
                    "drain (panicked)"
                } else {
                    "drain (cancelled)"
                }],
            },
        }
    }
}

/// The exit code the agent stops itself with, first reason wins.
#[derive(Clone, Default)]
struct SelfStop {
    code: Arc<std::sync::OnceLock<i32>>,
    stop: CancellationToken,
}

impl SelfStop {
    fn stop_with(&self, code: i32) {
        let _ = self.code.set(code);
        self.stop.cancel();
    }
}

/// Stops the agent when the Raft core stops on a storage error or a
/// panic: such a replica can never write again, and a live process that
/// answers `/v1/health` would keep its restart policy from acting.
async fn stop_on_fatal(
    mut metrics: tokio::sync::watch::Receiver<crate::raft::RaftMetrics>,
    self_stop: SelfStop,
) {
    loop {
        let fatal = metrics.borrow().running_state.clone().err();
        if let Some(fatal) = fatal {
            if let Some(code) = crate::raft::fatal::exit_code_of(&fatal) {
                tracing::error!(
                    exit_code = code,
                    "raft stopped: {fatal}; stopping so the restart policy brings the replica back"
                );
                // Let /v1/health answer 503 to whoever asks meanwhile
                // and the log line reach its reader.
                tokio::time::sleep(Duration::from_millis(500)).await;
                self_stop.stop_with(code);
            }
            return;
        }
        tokio::select! {
            // Stopping for another reason: nothing left to watch.
            _ = self_stop.stop.cancelled() => return,
            changed = metrics.changed() => if changed.is_err() { return },
        }
    }
}

/// Runs the replica described by `config` (with the default [`Options`])
/// until `shutdown` is cancelled; answers once everything is bound and
/// started.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<Running, AgentError> {
    run_with(config, Options::default(), shutdown).await
}

/// [`run`] with explicit [`Options`].
pub async fn run_with(
    config: AgentConfig,
    options: Options,
    shutdown: CancellationToken,
) -> Result<Running, AgentError> {
    crate::api::metrics::install_recorder();
    // A bootstrap token file that exists but holds no token is a mistake
    // better reported now than when the cluster is first initialised.
    if let Some(path) = &config.auth.bootstrap_token_file {
        crate::auth::first_token::read_file(path)?;
    }
    crate::tls::install_default_provider();
    #[cfg(feature = "failpoints")]
    crate::api::debug::configure_from_env()?;
    // Certificates first: a bad file is one line, before anything listens.
    let tls = load_tls(&config)?;
    raise_open_files_limit();
    // Bind first: a port in use is reported before any state is touched.
    let peer_listener = bind("peer_addr", config.peer_addr).await?;
    let api_listener = bind("api_addr", config.api_addr).await?;
    let mut dns_sockets = Vec::new();
    if config.dns.enabled {
        dns_sockets.push(crate::dns::server::bind(&config.dns_addr.to_string()).await?);
        // Extra listeners (e.g. the Docker bridge gateway) are a convenience
        // for containers: without them the replica still serves its own.
        for addr in &config.dns.extra_addrs {
            match crate::dns::server::bind(&addr.to_string()).await {
                Ok(sockets) => dns_sockets.push(sockets),
                Err(e) => {
                    tracing::warn!(error = %e, "extra DNS address not served; containers using it cannot resolve cluster names")
                }
            }
        }
    }
    let local = |what: &'static str, addr: std::io::Result<SocketAddr>| {
        addr.map_err(|source| AgentError::Bind {
            what,
            addr: "(bound)".into(),
            source,
        })
    };
    let bound = Bound {
        api: local("api_addr", api_listener.local_addr())?,
        peer: local("peer_addr", peer_listener.local_addr())?,
        dns: dns_sockets
            .iter()
            .map(|s| local("dns_addr", s.local_addr()))
            .collect::<Result<_, _>>()?,
    };
    // Only this replica's user may read its log, snapshots and keys.
    if let Err(e) = crate::file_modes::secure_dir(&config.data_dir) {
        tracing::warn!(data_dir = %config.data_dir.display(), error = %e, "cannot make the data directory private (mode 0700)");
    }
    let peers =
        PeerNetwork::new(tls.as_ref().map(|t| t.peer_client.clone())).with_sender(config.id);
    if let Some(tls) = &tls {
        peers.cert_expiries.record(config.id, &tls.certificate());
    }
    let replica: Arc<Replica> = Replica::start(config.clone(), peers).await?;
    tracing::info!(
        id = config.id,
        api = %bound.api,
        peer = %bound.peer,
        tls = tls.is_some(),
        data_dir = %config.data_dir.display(),
        "replica started"
    );
    let self_stop = SelfStop {
        code: Default::default(),
        stop: shutdown.child_token(),
    };
    // Every task of the agent, named for the drain report.
    let mut tasks = Tasks::default();
    tasks.spawn(
        "fatal watch",
        stop_on_fatal(replica.raft.metrics(), self_stop.clone()),
    );
    let stop_serving = CancellationToken::new();
    // With or without the supervisor: a leader records the cluster's id,
    // first token and managers.
    tasks.spawn(
        "housekeeping",
        crate::reconcile::housekeeping::run(replica.clone(), stop_serving.clone()),
    );
    // A rotated certificate is picked up from the files: new connections
    // use it at once, and the peer links are made again so that every
    // peer sees it (this replica's client pool; the peers' connections to
    // its peer port, closed gracefully).
    let (renew_peer_links, peer_links_renewed) = tokio::sync::watch::channel(0u64);
    if let (Some(tls), Some((_, cert, key))) = (&tls, config.tls.files()) {
        let peers = replica.peers.clone();
        let id = config.id;
        let watch = crate::tls::reload::watch(
            tls.current.clone(),
            tls.reload_source(cert, key, id),
            move |der| {
                peers.cert_expiries.record(id, der);
                peers.renew_connections();
                renew_peer_links.send_modify(|generation| *generation += 1);
            },
        );
        let stop = stop_serving.clone();
        tasks.spawn("certificate reload", async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = watch => {}
            }
        });
    }
    tasks.add(
        "peer port",
        crate::tls::serve::spawn(
            "peer port",
            peer_listener,
            tls.as_ref().map(|t| t.peer_server.clone()),
            crate::replica::peer_server::router(replica.clone()),
            peer_limits(),
            stop_serving.clone(),
            Some(peer_links_renewed),
        ),
    );
    tasks.add(
        "API",
        crate::tls::serve::spawn(
            "API",
            api_listener,
            tls.as_ref().map(|t| t.api_server.clone()),
            crate::api::router(replica.clone()),
            api_limits(&config),
            stop_serving.clone(),
            None,
        ),
    );
    if tls.is_none() {
        let stop = stop_serving.clone();
        tasks.spawn("insecure reminder", async move {
            let mut every = tokio::time::interval(INSECURE_REMINDER);
            every.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = every.tick() => warn_insecure(),
                }
            }
        });
    }
    let dns_server = (!dns_sockets.is_empty()).then(|| {
        let handler = crate::dns::server::Handler::new(
            replica.clone(),
            &config.dns.domain,
            config.dns.ttl_secs,
            config.dns_addr.ip(),
        )
        .with_forwarder(crate::dns::forward::Forwarder::from_settings(
            &config.dns.upstreams,
            &config.dns.forward_from,
            config.dns.max_forwards,
        ));
        crate::dns::server::serve(handler, dns_sockets)
    });
    if let Some(mut server) = dns_server {
        let stop = stop_serving.clone();
        tasks.spawn("DNS", async move {
            stop.cancelled().await;
            server.shutdown_gracefully().await;
        });
    }
    if config.supervisor.enabled {
        let settings = crate::reconcile::SupervisorSettings {
            node_grace: Duration::from_millis(config.supervisor.node_grace_ms),
            probe_interval: Duration::from_millis(config.supervisor.probe_interval_ms),
            resync: Duration::from_millis(config.supervisor.resync_ms),
            stop_grace: Duration::from_millis(config.supervisor.stop_grace_ms),
            image_gc_after: (config.supervisor.image_gc_after_ms > 0)
                .then(|| Duration::from_millis(config.supervisor.image_gc_after_ms)),
            container_dns: config
                .dns
                .container_resolvers
                .iter()
                .map(ToString::to_string)
                .collect(),
            round_budget: crate::reconcile::round_budget(Duration::from_millis(
                config.supervisor.stall_after_ms,
            )),
        };
        tasks.spawn(
            "supervisor",
            crate::reconcile::run_while_leader(
                replica.clone(),
                options.engines.clone(),
                settings,
                stop_serving.clone(),
            ),
        );
    }
    // Gray failure: a leader whose supervision stalled gives up its
    // leadership by stopping (see crate::reconcile::watchdog).
    let on_stall = self_stop.clone();
    let watchdog = crate::reconcile::watchdog::spawn_checker(
        replica.watchdog.clone(),
        replica.raft.metrics(),
        move |stall| {
            tracing::error!(
                term = stall.term,
                stalled_loop = stall.stalled.name(),
                exit_code = crate::reconcile::watchdog::EXIT_STALLED,
                "{stall}"
            );
            on_stall.stop_with(crate::reconcile::watchdog::EXIT_STALLED);
        },
    );
    let drain = Drain {
        replica: replica.clone(),
        tasks,
        stop_serving,
        watchdog,
        self_stop,
        options,
    };
    Ok(Running {
        bound,
        replica,
        drained: tokio::spawn(drain.run()),
    })
}

/// The agent's tasks, each with a name for the drain report.
#[derive(Default)]
struct Tasks(Vec<(&'static str, tokio::task::JoinHandle<()>)>);

impl Tasks {
    fn spawn(
        &mut self,
        name: &'static str,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        self.0.push((name, tokio::spawn(task)));
    }

    fn add(&mut self, name: &'static str, handle: tokio::task::JoinHandle<()>) {
        self.0.push((name, handle));
    }
}

/// Everything a stopping agent ends, in one place.
struct Drain {
    replica: Arc<Replica>,
    tasks: Tasks,
    stop_serving: CancellationToken,
    watchdog: crate::reconcile::watchdog::CheckerGuard,
    self_stop: SelfStop,
    options: Options,
}

impl Drain {
    async fn run(self) -> Stopped {
        self.self_stop.stop.cancelled().await;
        let exit_code = self.self_stop.code.get().copied();
        tracing::info!(?exit_code, "shutting down");
        self.watchdog.stop();
        // A replica that stops itself has given up: its work is someone
        // else's now, so it waits less for its tasks than an operator's stop.
        let drain_for = match exit_code {
            Some(_) => self.options.drain_deadline.min(SELF_STOP_DRAIN_DEADLINE),
            None => self.options.drain_deadline,
        };
        let wedged_guard = match exit_code {
            Some(code) if self.options.exit_process_if_wedged => {
                Some(exit_if_not_drained(code, drain_for))
            }
            _ => None,
        };
        // A replica stopping itself gives up its part in Raft first: a
        // stalled leader's followers elect another at once, whatever else
        // is stuck.
        if exit_code.is_some() {
            self.replica.shutdown().await;
        }
        // Stop accepting, stop the supervisor (it cancels engine calls in
        // flight), let the servers finish the requests they have.
        self.stop_serving.cancel();
        let deadline = tokio::time::Instant::now() + drain_for;
        let mut abandoned = Vec::new();
        for (name, mut task) in self.tasks.0 {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                tracing::warn!(task = name, "still running at the drain deadline: aborted");
                task.abort();
                abandoned.push(name);
            }
        }
        // Raft last: the servers and the supervisor may write until then.
        self.replica.shutdown().await;
        if let Some(guard) = wedged_guard {
            guard.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        Stopped {
            exit_code,
            abandoned,
        }
    }
}

/// The last resort of an agent stopping itself: a thread (the runtime may
/// be what is stuck) that exits the process with `code` unless the drain
/// sets the returned flag within `deadline` (plus Raft's own shutdown).
fn exit_if_not_drained(code: i32, deadline: Duration) -> Arc<std::sync::atomic::AtomicBool> {
    let drained = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = drained.clone();
    let spawned = std::thread::Builder::new()
        .name("raftvisor-drain".into())
        .spawn(move || {
            std::thread::sleep(deadline + Duration::from_secs(2));
            if !flag.load(std::sync::atomic::Ordering::SeqCst) {
                eprintln!("raftvisor: the drain did not finish; exiting with {code}");
                std::process::exit(code);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the drain's last-resort thread");
    }
    drained
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
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
