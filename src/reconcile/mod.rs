//! Leader-only controllers: the supervisor that places, starts, restarts
//! and removes containers ([`services`]) and judges node liveness
//! ([`nodes`]). They run only while this replica is the Raft leader and stop
//! the moment it is not (a new term or a step-down); everything they decide
//! is written through Raft first, so the next leader continues where they
//! stopped. They act on engines only while this replica holds its lease
//! (a quorum answered it within less than an election timeout): a leader
//! cut off from its quorum pauses them, and every mutating engine call is
//! gated on the lease at the moment it is made ([`engines::Gate`]), so a
//! deposed leader that does not know it yet never undoes the work of the
//! leader that replaced it. Decisions are pure ([`plan`], [`placement`], [`backoff`]); the
//! controllers only observe and act. Their completed rounds feed the
//! [`watchdog`], which makes a leader whose supervision stalled give up
//! its leadership.

pub mod autoscale;
pub mod backoff;
pub mod engines;
pub mod health;
pub mod labels;
pub mod managers;
pub mod nodes;
pub mod placement;
pub mod plan;
pub mod services;
pub mod watchdog;

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;
use tokio_util::sync::CancellationToken;

use crate::replica::Replica;
use engines::Engines;
use watchdog::Loop;

/// Supervisor settings (from the agent config).
#[derive(Debug, Clone)]
pub struct SupervisorSettings {
    /// A node is down after its engine missed pings for this long.
    pub node_grace: Duration,
    pub probe_interval: Duration,
    /// Level-triggered safety net: reconcile at least this often.
    pub resync: Duration,
    pub stop_grace: Duration,
    /// DNS servers of managed containers.
    pub container_dns: Vec<String>,
    /// Longest one engine may hold up a round (listing its containers,
    /// fencing it): a slower engine counts as unreachable for that round,
    /// so one sick engine cannot stall supervision and trip the
    /// [`watchdog`]. Half of `stall_after` (see [`round_budget`]).
    pub round_budget: Duration,
}

/// The [`SupervisorSettings::round_budget`] for a watchdog judging after
/// `stall_after` (zero: off): half of it, between 500 ms and 10 s.
pub fn round_budget(stall_after: Duration) -> Duration {
    if stall_after.is_zero() {
        return Duration::from_secs(10);
    }
    (stall_after / 2).clamp(Duration::from_millis(500), Duration::from_secs(10))
}

impl Default for SupervisorSettings {
    fn default() -> Self {
        SupervisorSettings {
            node_grace: Duration::from_secs(2),
            probe_interval: Duration::from_millis(250),
            resync: Duration::from_secs(1),
            stop_grace: Duration::from_secs(10),
            container_dns: Vec::new(),
            round_budget: round_budget(Duration::from_secs(10)),
        }
    }
}

/// Runs the controllers whenever this replica leads, until `shutdown`.
pub async fn run_while_leader(
    replica: Arc<Replica>,
    engines: Engines,
    settings: SupervisorSettings,
    shutdown: CancellationToken,
) {
    let engines = engines.gated(lease_gate(replica.clone()));
    let mut metrics = replica.raft.metrics();
    loop {
        let leading_term = {
            let m = metrics.borrow();
            (m.state == ServerState::Leader).then_some(m.current_term)
        };
        if let Some(term) = leading_term {
            lead(&replica, &engines, &settings, term, &mut metrics, &shutdown).await;
        }
        if shutdown.is_cancelled() {
            return;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = metrics.changed() => if changed.is_err() { return },
        }
    }
}

/// The engine gate of a leader: refuses while this replica does not hold
/// its lease (see [`Replica::holds_lease`]).
fn lease_gate(replica: Arc<Replica>) -> engines::Gate {
    Arc::new(move || {
        if replica.holds_lease() {
            Ok(())
        } else {
            Err(match replica.quorum_contact() {
                None => "this replica does not lead".to_string(),
                Some(None) => "no quorum has answered this leader yet".to_string(),
                Some(Some(age)) => format!(
                    "this leader last heard from a quorum {} ms ago",
                    age.as_millis()
                ),
            })
        }
    })
}

/// The controllers of one term, running.
struct Controllers {
    token: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Controllers {
    fn start(
        replica: &Arc<Replica>,
        engines: &Engines,
        settings: &SupervisorSettings,
        term: u64,
        shutdown: &CancellationToken,
    ) -> Controllers {
        let token = shutdown.child_token();
        replica.watchdog.leading(term, Instant::now());
        let tasks = vec![
            tokio::spawn(services::run(
                replica.clone(),
                engines.clone(),
                settings.clone(),
                replica.watchdog.reporter(Loop::Services, term),
                token.clone(),
            )),
            tokio::spawn(nodes::run(
                replica.clone(),
                engines.clone(),
                settings.clone(),
                replica.watchdog.reporter(Loop::Nodes, term),
                token.clone(),
            )),
            tokio::spawn(managers::run(replica.clone(), token.clone())),
        ];
        Controllers { token, tasks }
    }

    async fn stop(self) {
        self.token.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Leads `term`: runs the controllers while a quorum keeps answering, and
/// pauses them — cancelling whatever engine calls are in flight — once
/// quorum contact is older than the lease, which is shorter than one
/// election timeout. A leader cut off from its quorum may already have
/// been replaced; it resumes when a quorum answers it again.
async fn lead(
    replica: &Arc<Replica>,
    engines: &Engines,
    settings: &SupervisorSettings,
    term: u64,
    metrics: &mut tokio::sync::watch::Receiver<crate::raft::RaftMetrics>,
    shutdown: &CancellationToken,
) {
    tracing::info!(term, "leading: starting the supervisor");
    let mut check = tokio::time::interval(Duration::from_millis(
        replica.config.raft.heartbeat_ms.max(1),
    ));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut running: Option<Controllers> = None;
    let mut paused = false;
    loop {
        let holds = replica.holds_lease();
        if holds && running.is_none() {
            if paused {
                tracing::info!(term, "a quorum answers again: resuming the supervisor");
                paused = false;
            }
            running = Some(Controllers::start(
                replica, engines, settings, term, shutdown,
            ));
        } else if !holds && running.is_some() {
            let age = replica.quorum_contact().flatten();
            tracing::warn!(
                term,
                quorum_contact_ms = age.map(|a| a.as_millis() as u64),
                "lost contact with a quorum: pausing the supervisor"
            );
            if let Some(controllers) = running.take() {
                controllers.stop().await;
            }
            // A paused leader makes no progress by design: not a stall.
            replica.watchdog.following();
            paused = true;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = check.tick() => {}
            changed = metrics.changed() => {
                if changed.is_err() {
                    break;
                }
                let m = metrics.borrow();
                if m.state != ServerState::Leader || m.current_term != term {
                    break;
                }
            }
        }
    }
    if let Some(controllers) = running.take() {
        controllers.stop().await;
    }
    tracing::info!(term, "no longer leading: supervisor stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_budget_leaves_room_under_stall_after() {
        let ms = Duration::from_millis;
        assert_eq!(round_budget(ms(10_000)), ms(5_000));
        assert_eq!(round_budget(ms(2_000)), ms(1_000));
        assert_eq!(round_budget(ms(600)), ms(500));
        assert_eq!(round_budget(ms(120_000)), ms(10_000));
        assert_eq!(round_budget(Duration::ZERO), ms(10_000));
    }
}
