//! Leader-only controllers: the supervisor that places, starts, restarts
//! and removes containers ([`services`]), judges node liveness ([`nodes`]),
//! probes health ([`health`]) and replaces dead managers ([`managers`]).
//! Each is a [`controller::Reconciler`] on one small runtime
//! ([`controller`]): a keyed queue that never runs one key twice at once,
//! backs off on a key's consecutive failures, spans every reconcile and
//! reports progress to the [`watchdog`], which makes a leader whose
//! supervision stalled give up its leadership.
//!
//! They wake by object, not on every commit: the state machine publishes
//! which objects each applied entry changed ([`crate::state::touched`]),
//! and [`triggers`] turns that into keys — a KV write wakes nothing, a
//! service change wakes that service, a node transition wakes the services
//! with instances there. Engine events wake the services whose containers
//! changed, through the observed state ([`observed`], fed by [`watcher`]:
//! each usable engine listed once, then followed by its events), so a
//! reconcile lists no engine. A slow resync over every key is the safety
//! net.
//!
//! They run only while this replica is the Raft leader and stop the moment
//! it is not (a new term or a step-down); everything they decide is
//! written through Raft first, so the next leader continues where they
//! stopped. They act on engines only while this replica holds its lease
//! (a quorum answered it within less than an election timeout): a leader
//! cut off from its quorum pauses them, and every mutating engine call is
//! gated on the lease at the moment it is made ([`engines::Gate`]), so a
//! deposed leader that does not know it yet never undoes the work of the
//! leader that replaced it. Decisions are pure ([`plan`], [`placement`],
//! [`backoff`]); the controllers only observe and act.

pub mod archive_keepers;
pub mod autoscale;
pub mod backoff;
pub mod builder;
pub mod controller;
pub mod engines;
pub mod health;
pub mod hook_run;
pub mod hooks;
pub mod housekeeping;
pub mod image_gc;
pub mod labels;
pub mod managers;
pub mod nodes;
pub mod observed;
pub mod pipelines;
pub mod placement;
pub mod plan;
pub mod pulls;
pub mod services;
pub mod session_ttl;
pub mod settling;
pub mod triggers;
pub mod volume_gc;
pub mod watchdog;
pub mod watcher;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::ServerState;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::replica::Replica;
use crate::state::touched::Touched;
use controller::{Counts, Reason, Trigger};
use engines::Engines;
use observed::{Observed, ServiceKey};
use watchdog::Loop;

/// Supervisor settings (from the agent config).
#[derive(Debug, Clone)]
pub struct SupervisorSettings {
    /// A node is down after its engine missed pings for this long.
    pub node_grace: Duration,
    pub probe_interval: Duration,
    /// The safety net: every key of the services and nodes controllers is
    /// reconciled at least this often (health probes: ten times as long),
    /// whatever the triggers said.
    pub resync: Duration,
    pub stop_grace: Duration,
    /// DNS servers of managed containers.
    pub container_dns: Vec<String>,
    /// Longest one engine call of the supervisor may take (listing a
    /// node's containers, fencing it): a slower engine counts as
    /// unreachable for that call, so one sick engine cannot stall
    /// supervision and trip the [`watchdog`]. Half of `stall_after` (see
    /// [`round_budget`]).
    pub round_budget: Duration,
    /// Images brought to nodes and unused this long are removed
    /// ([`image_gc`]); `None`: never.
    pub image_gc_after: Option<Duration>,
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
            image_gc_after: None,
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
    supervise(replica, engines, settings, Counts::default(), shutdown).await
}

/// [`run_while_leader`], counting every reconcile into `counts`.
pub async fn supervise(
    replica: Arc<Replica>,
    engines: Engines,
    settings: SupervisorSettings,
    counts: Counts,
    shutdown: CancellationToken,
) {
    let engines = engines.gated(lease_gate(replica.clone()));
    let mut terms = LeadingTerms::new(&replica);
    while let Some(term) = terms.next(&shutdown).await {
        lead(
            &replica,
            &engines,
            &settings,
            &counts,
            term,
            &mut terms.metrics,
            &shutdown,
        )
        .await;
    }
}

/// The terms this replica leads, one after another: what every leader-only
/// loop waits on between its terms.
pub(crate) struct LeadingTerms {
    /// Raft's metrics, which a term's loop watches to see its term end.
    pub(crate) metrics: tokio::sync::watch::Receiver<crate::raft::RaftMetrics>,
}

impl LeadingTerms {
    pub(crate) fn new(replica: &Replica) -> LeadingTerms {
        LeadingTerms {
            metrics: replica.raft.metrics(),
        }
    }

    /// The term this replica leads now, or the next one it comes to lead;
    /// `None` once `shutdown` is cancelled or Raft has stopped.
    pub(crate) async fn next(&mut self, shutdown: &CancellationToken) -> Option<u64> {
        loop {
            // A closed channel still shows its last value: never lead on it.
            if shutdown.is_cancelled() || self.metrics.has_changed().is_err() {
                return None;
            }
            {
                let m = self.metrics.borrow_and_update();
                if m.state == ServerState::Leader {
                    return Some(m.current_term);
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                changed = self.metrics.changed() => if changed.is_err() { return None },
            }
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

/// The triggers of every controller of one term.
struct Wake {
    services: Trigger<ServiceKey>,
    nodes: Trigger<String>,
    managers: Trigger<()>,
    health: Trigger<String>,
    pulls: pulls::Pulls,
    archives: Trigger<()>,
    volumes: Trigger<String>,
    hooks: Trigger<hooks::HookKey>,
    pipelines: Trigger<String>,
}

impl Wake {
    fn all(&self, reason: Reason) {
        self.services.wake_all(reason);
        self.nodes.wake_all(reason);
        self.managers.wake_all(reason);
        self.health.wake_all(reason);
        self.archives.wake_all(reason);
        self.volumes.wake_all(reason);
        self.hooks.wake_all(reason);
        self.pipelines.wake_all(reason);
    }

    fn keys(&self, wakes: triggers::Wakes) {
        if wakes.everything {
            self.all(Reason::Commit);
            return;
        }
        for (namespace, name) in &wakes.services {
            // A new version, or an instance of it running, may be tested,
            // and a new container may have a start hook to run.
            self.hooks.wake(
                hooks::HookKey::Service(namespace.clone(), name.clone()),
                Reason::Commit,
            );
        }
        for id in wakes.hook_jobs {
            self.hooks.wake(hooks::HookKey::Job(id), Reason::Commit);
        }
        for name in wakes.pipelines {
            self.pipelines.wake(name, Reason::Commit);
        }
        for key in wakes.services {
            self.services.wake(key, Reason::Commit);
        }
        for key in wakes.nodes {
            self.nodes.wake(key, Reason::Commit);
        }
        for key in wakes.instances {
            self.health.wake(key, Reason::Commit);
        }
        if wakes.managers {
            self.managers.wake((), Reason::Commit);
            self.archives.wake((), Reason::Commit);
        }
        if wakes.images {
            self.pulls.retry_failures();
            self.archives.wake((), Reason::Commit);
        }
        if wakes.volumes {
            self.volumes.wake_all(Reason::Commit);
        }
    }
}

impl Controllers {
    fn start(
        replica: &Arc<Replica>,
        engines: &Engines,
        settings: &SupervisorSettings,
        counts: &Counts,
        term: u64,
        active: &tokio::sync::watch::Receiver<bool>,
        shutdown: &CancellationToken,
    ) -> Controllers {
        let token = shutdown.child_token();
        // Subscribed before any controller reads the state: no change
        // between the two is missed.
        let changes = replica.sm.subscribe_changes();
        let observed = Arc::new(Mutex::new(Observed::default()));
        let book = Arc::new(Mutex::new(health::HealthBook::default()));
        let (services_trigger, services_rx) = controller::channel();
        let (nodes_trigger, nodes_rx) = controller::channel();
        let (managers_trigger, managers_rx) = controller::channel();
        let (health_trigger, health_rx) = controller::channel();
        let (pulls_trigger, pulls_rx) = controller::channel();
        let pulls = pulls::Pulls::new(pulls_trigger);
        let (archives_trigger, archives_rx) = controller::channel();
        let (volumes_trigger, volumes_rx) = controller::channel();
        let (hooks_trigger, hooks_rx) = controller::channel();
        let (pipelines_trigger, pipelines_rx) = controller::channel();
        let wake = Wake {
            services: services_trigger.clone(),
            nodes: nodes_trigger,
            managers: managers_trigger,
            health: health_trigger,
            pulls: pulls.clone(),
            archives: archives_trigger,
            volumes: volumes_trigger,
            hooks: hooks_trigger,
            pipelines: pipelines_trigger,
        };
        let (synced_tx, synced) = tokio::sync::mpsc::unbounded_channel();
        let watchers = watcher::Watchers::new(
            observed.clone(),
            engines.clone(),
            services_trigger.clone(),
            synced_tx,
            settings.round_budget,
            token.clone(),
        );
        let (autoscale_trigger, autoscale_rx) = controller::channel();
        let capacity = autoscale::CapacityWanted::new(autoscale_trigger);
        let autoscaler = autoscale::Autoscaler::new(replica.clone(), capacity.clone());
        let puller = pulls::Puller::new(
            replica.clone(),
            engines.clone(),
            pulls.clone(),
            services_trigger.clone(),
        );
        let services = services::Services::new(
            replica.clone(),
            engines.clone(),
            settings.clone(),
            observed,
            book.clone(),
            capacity,
            pulls,
        );
        let probes = Arc::new(Mutex::new(nodes::ProbeBook::new(controller::now())));
        let prober = nodes::Prober::new(
            replica.clone(),
            engines.clone(),
            settings.clone(),
            probes.clone(),
            wake.nodes.clone(),
        );
        let nodes = nodes::Nodes::new(replica.clone(), engines.clone(), settings.clone(), probes);
        let (prober_trigger, prober_rx) = controller::channel();
        // The prober has one key and wakes itself; nothing else names it.
        drop(prober_trigger);
        let managers = managers::Managers::new(replica.clone());
        let health = health::Health::new(
            replica.clone(),
            book,
            services_trigger,
            settings.resync * 10,
        );
        let spawn = |l| Spawn {
            active: active.clone(),
            reporter: replica.watchdog.reporter(l, term),
            counts: counts.clone(),
            token: token.clone(),
        };
        let mut tasks = vec![
            spawn(Loop::Services).run(services, services_rx),
            spawn(Loop::Nodes).run(nodes, nodes_rx),
            spawn(Loop::Managers).run(managers, managers_rx),
            spawn(Loop::Health).run(health, health_rx),
            spawn(Loop::Probes).run(prober, prober_rx),
            spawn(Loop::Autoscale).run(autoscaler, autoscale_rx),
            spawn(Loop::Pulls).run(puller, pulls_rx),
            tokio::spawn(builder::run(
                replica.clone(),
                engines.clone(),
                token.clone(),
            )),
            tokio::spawn(route_changes(
                replica.clone(),
                changes,
                synced,
                wake,
                watchers,
                settings.resync,
                token.clone(),
            )),
        ];
        // Always run, as every loop the watchdog judges; it does nothing
        // when clean-up is off.
        let (_, gc_rx) = controller::channel();
        tasks.push(spawn(Loop::ImageGc).run(
            image_gc::ImageGc::new(replica.clone(), engines.clone(), settings.image_gc_after),
            gc_rx,
        ));
        tasks.push(spawn(Loop::ArchiveKeepers).run(
            archive_keepers::ArchiveKeepers::new(replica.clone()),
            archives_rx,
        ));
        let (_, sessions_rx) = controller::channel();
        tasks.push(
            spawn(Loop::SessionTtl).run(session_ttl::SessionTtl::new(replica.clone()), sessions_rx),
        );
        tasks.push(spawn(Loop::VolumeGc).run(
            volume_gc::VolumeGc::new(replica.clone(), engines.clone()),
            volumes_rx,
        ));
        tasks.push(spawn(Loop::Hooks).run(
            hooks::Hooks::new(replica.clone(), engines.clone()),
            hooks_rx,
        ));
        tasks.push(spawn(Loop::Pipelines).run(
            pipelines::Pipelines::new(replica.clone(), engines.clone()),
            pipelines_rx,
        ));
        Controllers { token, tasks }
    }

    async fn stop(self) {
        self.token.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// What every controller of one term is started with.
struct Spawn {
    active: tokio::sync::watch::Receiver<bool>,
    reporter: watchdog::ProgressReporter,
    counts: Counts,
    token: CancellationToken,
}

impl Spawn {
    fn run<R: controller::Reconciler>(
        self,
        reconciler: R,
        triggers: controller::Triggers<R::Key>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(controller::run(
            Arc::new(reconciler),
            triggers,
            self.active,
            self.reporter,
            self.counts,
            self.token,
        ))
    }
}

/// Wakes the keys each applied change touches, and keeps the engine
/// watches on the usable nodes (checked on node changes and every
/// `resync`). A lagging subscription wakes everything. A node whose
/// containers became known (`synced`) wakes the services placed there:
/// they may have containers to create.
async fn route_changes(
    replica: Arc<Replica>,
    mut changes: broadcast::Receiver<Arc<Vec<Touched>>>,
    mut synced: tokio::sync::mpsc::UnboundedReceiver<String>,
    wake: Wake,
    watchers: watcher::Watchers,
    resync: Duration,
    token: CancellationToken,
) {
    let sync_watches = || {
        replica.sm.read(|s| {
            if let Some(cluster) = s.owner() {
                watchers.sync(cluster, &s.nodes);
            }
        })
    };
    sync_watches();
    let mut tick = tokio::time::interval(resync);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => sync_watches(),
            Some(node) = synced.recv() => {
                // Engines listed together are looked up together: one
                // pass over the instances, not one per engine.
                let mut nodes = BTreeSet::from([node]);
                while let Ok(node) = synced.try_recv() {
                    nodes.insert(node);
                }
                let wakes = replica.sm.read(|s| triggers::placed_on(&nodes, s));
                wake.keys(wakes);
            }
            change = changes.recv() => match change {
                Ok(touched) => {
                    // Commits that queued up meanwhile are routed at once.
                    // (A lone commit, the common case, is not copied.)
                    let mut batch = std::borrow::Cow::Borrowed(touched.as_slice());
                    loop {
                        match changes.try_recv() {
                            Ok(more) => batch.to_mut().extend(more.iter().cloned()),
                            Err(broadcast::error::TryRecvError::Lagged(_)) => {
                                batch.to_mut().push(Touched::Everything)
                            }
                            Err(_) => break,
                        }
                    }
                    let wakes = replica.sm.read(|s| triggers::wakes(&batch, s));
                    let nodes_changed = wakes.everything || !wakes.nodes.is_empty();
                    wake.keys(wakes);
                    if nodes_changed {
                        sync_watches();
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "fell behind the applied changes: waking every key");
                    wake.all(Reason::Commit);
                    sync_watches();
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

/// Leads `term`: starts the controllers of the term (paused until a
/// quorum answers), runs them while a quorum keeps answering, and pauses
/// them — aborting the reconciles in flight that may be aborted — once
/// quorum contact is older than the lease, which is shorter than one
/// election timeout. A leader cut off from its quorum may already have
/// been replaced; it resumes only when a quorum answers it again in this
/// term, which proves it was not. A pause keeps what the term learnt (the
/// observed containers, the queues): resuming runs what the pause cut off
/// and what was woken meanwhile, not every key nor a relisting of every
/// engine.
async fn lead(
    replica: &Arc<Replica>,
    engines: &Engines,
    settings: &SupervisorSettings,
    counts: &Counts,
    term: u64,
    metrics: &mut tokio::sync::watch::Receiver<crate::raft::RaftMetrics>,
    shutdown: &CancellationToken,
) {
    tracing::info!(term, "leading: starting the supervisor");
    let mut check = tokio::time::interval(Duration::from_millis(
        replica.config.raft.heartbeat_ms.max(1),
    ));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (active, active_rx) = tokio::sync::watch::channel(false);
    let controllers = Controllers::start(
        replica, engines, settings, counts, term, &active_rx, shutdown,
    );
    let mut paused = false;
    loop {
        let holds = replica.holds_lease();
        let running = *active.borrow();
        if holds && !running {
            if paused {
                tracing::info!(term, "a quorum answers again: resuming the supervisor");
                paused = false;
            }
            replica.watchdog.leading(term, Instant::now());
            active.send_replace(true);
        } else if !holds && running {
            let age = replica.quorum_contact().flatten();
            tracing::warn!(
                term,
                quorum_contact_ms = age.map(|a| a.as_millis() as u64),
                "lost contact with a quorum: pausing the supervisor"
            );
            active.send_replace(false);
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
    controllers.stop().await;
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
