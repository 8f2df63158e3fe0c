//! Three replicas in this process, each started with `agent::run_with`
//! on a tokio runtime of its own whose threads are named `rv-<id>` (so
//! [`super::cpu`] can tell one replica's CPU from the others'), sharing
//! one set of in-memory engines. A replica can be stopped (drained, its
//! runtime shut down) and started again from its data directory.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftvisor::agent::{Options, Running, Stopped};
use raftvisor::config::{AgentConfig, LoopbackPorts};
use raftvisor::reconcile::engines::Engines;
use raftvisor::replica::Replica;
use tokio_util::sync::CancellationToken;

/// Worker threads of each replica's runtime.
const WORKERS: usize = 2;

/// Replica `id` of `replicas` on loopback: API on `port_base + id`, peer
/// and DNS 100 and 200 above (see [`LoopbackPorts::from_api`]); DNS off,
/// limits far above the benchmark's sizes. `stall_after_ms`: the
/// supervisor watchdog's setting (`None`: the product's default).
pub fn config(
    id: u64,
    dir: &Path,
    port_base: u16,
    replicas: u64,
    stall_after_ms: Option<u64>,
) -> AgentConfig {
    let ports = |m: u64| LoopbackPorts::from_api(port_base + m as u16);
    let members: Vec<_> = (1..=replicas).map(|m| (m, ports(m))).collect();
    let mut config =
        AgentConfig::loopback(id, dir.join(format!("replica-{id}")), ports(id), &members);
    config.dns.enabled = false;
    config.auth.bootstrap_token_file = Some(dir.join("token"));
    config.limits.max_services = 1_000_000;
    config.limits.max_nodes = 1_000_000;
    config.limits.max_instances = 10_000_000;
    if let Some(ms) = stall_after_ms {
        config.supervisor.stall_after_ms = ms;
    }
    config
}

/// One in-process replica.
pub struct Member {
    pub id: u64,
    config: AgentConfig,
    engines: Engines,
    runtime: Option<tokio::runtime::Runtime>,
    running: Option<Running>,
    shutdown: CancellationToken,
    replica: Option<Arc<Replica>>,
}

impl Member {
    /// Starts replica `id` of `config` on a runtime of its own.
    pub async fn start(config: AgentConfig, engines: Engines) -> Result<Member, String> {
        let mut member = Member {
            id: config.id,
            config,
            engines,
            runtime: None,
            running: None,
            shutdown: CancellationToken::new(),
            replica: None,
        };
        member.launch().await?;
        Ok(member)
    }

    async fn launch(&mut self) -> Result<(), String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKERS)
            .thread_name(thread_prefix(self.id))
            .enable_all()
            .build()
            .map_err(|e| format!("runtime of replica {}: {e}", self.id))?;
        self.shutdown = CancellationToken::new();
        let options = Options {
            engines: self.engines.clone(),
            exit_process_if_wedged: false,
            ..Options::default()
        };
        let started = runtime
            .spawn(raftvisor::agent::run_with(
                self.config.clone(),
                options,
                self.shutdown.clone(),
            ))
            .await;
        let running = match started {
            Ok(Ok(running)) => running,
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                    Ok(Ok(_)) => unreachable!("matched above"),
                };
                // Dropping a runtime blocks: not on the driver's own threads.
                let _ = tokio::task::spawn_blocking(move || drop(runtime)).await;
                return Err(format!("replica {} did not start: {why}", self.id));
            }
        };
        self.replica = Some(running.replica.clone());
        self.running = Some(running);
        self.runtime = Some(runtime);
        Ok(())
    }

    /// The running replica (`None` while stopped).
    pub fn replica(&self) -> Option<&Arc<Replica>> {
        self.replica.as_ref()
    }

    /// Stops the replica (drain) and its runtime; answers how it stopped.
    pub async fn stop(&mut self) -> Option<Stopped> {
        self.shutdown.cancel();
        let stopped = match self.running.take() {
            Some(running) => Some(running.stopped().await),
            None => None,
        };
        self.replica = None;
        if let Some(runtime) = self.runtime.take() {
            // Dropping a runtime blocks: not on the driver's own threads.
            let _ = tokio::task::spawn_blocking(move || {
                runtime.shutdown_timeout(Duration::from_secs(5))
            })
            .await;
        }
        stopped
    }

    /// Starts the stopped replica again from its data directory.
    pub async fn restart(&mut self) -> Result<Instant, String> {
        let started = Instant::now();
        self.launch().await?;
        Ok(started)
    }

    /// Whether the replica stopped on its own (a stalled supervisor, a
    /// Raft failure) while it should run.
    pub fn stopped_itself(&self) -> bool {
        self.running.as_ref().is_some_and(Running::has_stopped)
    }
}

/// The name of replica `id`'s threads.
pub fn thread_prefix(id: u64) -> String {
    format!("rv-{id}")
}
