//! The node controllers: liveness of every node in the inventory, on the
//! [`super::controller`] runtime, in two parts.
//!
//! - [`Prober`] (one key, the cluster) pings every engine (Docker
//!   `/_ping`, with its own short timeout) every `probe_interval`, many at
//!   once — and again the moment a silent node's grace period ends, so it
//!   is judged then and not up to an interval later — and records the
//!   answers in the [`ProbeBook`]. It writes nothing
//!   and wakes a node's key only when the node's recorded state no longer
//!   fits what its engine answers: a ready node silent for the grace
//!   period, a down or retired node that answers. A steady cluster costs
//!   one reconcile per probe interval, not one per node.
//! - [`Nodes`] (one key per node) acts on those verdicts and writes only
//!   liveness transitions through Raft. A ready node whose engine has not
//!   answered for the grace period is marked down (its instances are then
//!   placed elsewhere by the service controller); a down node that answers
//!   again is fenced — its containers whose instances moved away are
//!   removed — before it is marked ready and can receive work. A new
//!   leader gives every node a full grace period before judging it. A
//!   retired node (`node rm --force`) is fenced the same way while the
//!   service controller moves its instances; once nothing is placed on it
//!   and none of this cluster's containers are left there, it is removed
//!   from the inventory.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::StreamExt;

use super::controller::{self, Action, Limits, OnStop, Reason, Reconciler, Trigger};
use super::engines::Engines;
use super::labels;
use super::SupervisorSettings;
use crate::replica::Replica;
use crate::runtime::ContainerRuntime;
use crate::state::{Command, Instance, Node, NodeState};

/// Engines pinged at once by one probe round.
const PROBES_AT_ONCE: usize = 256;

/// What the last pings of each node's engine said, for one term.
#[derive(Debug)]
pub struct ProbeBook {
    /// When this leader started judging: a node not heard from yet has
    /// been silent since then.
    since: Instant,
    nodes: HashMap<String, Probe>,
}

#[derive(Debug, Clone, Default)]
struct Probe {
    last_ok: Option<Instant>,
    /// Why the latest ping failed; `None` when it answered.
    error: Option<String>,
}

impl ProbeBook {
    pub fn new(since: Instant) -> ProbeBook {
        ProbeBook {
            since,
            nodes: HashMap::new(),
        }
    }

    fn record(&mut self, node: &str, at: Instant, result: Result<(), String>) {
        let probe = match self.nodes.get_mut(node) {
            Some(probe) => probe,
            None => self.nodes.entry(node.to_string()).or_default(),
        };
        match result {
            Ok(()) => {
                probe.last_ok = Some(at);
                probe.error = None;
            }
            Err(e) => probe.error = Some(e),
        }
    }

    /// Whether the latest ping of `node` was answered.
    fn answers(&self, node: &str) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|p| p.last_ok.is_some() && p.error.is_none())
    }

    /// How long `node` has not answered, and why the latest ping failed
    /// (`None` while it answers).
    fn silence(&self, node: &str, now: Instant) -> Option<(Duration, String)> {
        let probe = self.nodes.get(node)?;
        let error = probe.error.clone()?;
        let since = probe.last_ok.unwrap_or(self.since).max(self.since);
        Some((now.saturating_duration_since(since), error))
    }

    /// Whether `node`, recorded as `state`, needs its key reconciled.
    fn needs_action(&self, node: &str, state: NodeState, grace: Duration, now: Instant) -> bool {
        match state {
            NodeState::Ready => self
                .silence(node, now)
                .is_some_and(|(silent, _)| silent >= grace),
            NodeState::Down | NodeState::Retired => self.answers(node),
            NodeState::Provisioning | NodeState::Draining => false,
        }
    }

    /// How long until the first of `ready` nodes that is silent now has
    /// been silent for `grace`; `None` when none is still within its
    /// grace (a node past it is woken every round anyway). The prober
    /// looks again then, so a dead node is judged when its grace ends,
    /// not up to a probe interval later.
    fn until_first_grace_ends<'a>(
        &self,
        ready: impl Iterator<Item = &'a str>,
        grace: Duration,
        now: Instant,
    ) -> Option<Duration> {
        ready
            .filter_map(|node| self.silence(node, now))
            .filter(|(silent, _)| *silent < grace)
            .map(|(silent, _)| grace - silent)
            .min()
    }

    fn forget(&mut self, node: &str) {
        self.nodes.remove(node);
    }
}

/// Pings every engine of the inventory each `probe_interval`.
pub struct Prober {
    replica: Arc<Replica>,
    engines: Engines,
    settings: SupervisorSettings,
    book: Arc<Mutex<ProbeBook>>,
    nodes: Trigger<String>,
}

impl Prober {
    pub fn new(
        replica: Arc<Replica>,
        engines: Engines,
        settings: SupervisorSettings,
        book: Arc<Mutex<ProbeBook>>,
        nodes: Trigger<String>,
    ) -> Prober {
        Prober {
            replica,
            engines,
            settings,
            book,
            nodes,
        }
    }
}

#[async_trait::async_trait]
impl Reconciler for Prober {
    type Key = ();
    type Error = Infallible;

    fn name(&self) -> &'static str {
        "probes"
    }

    fn limits(&self) -> Limits {
        Limits {
            // Every ping has its own, shorter timeout.
            timeout: self.settings.round_budget,
            concurrency: 1,
            resync: None,
            on_stop: OnStop::Abort,
        }
    }

    fn keys(&self) -> Vec<()> {
        vec![()]
    }

    async fn reconcile(&self, _: &(), _: Reason) -> Result<Action, Infallible> {
        let targets: Vec<Target> = self.replica.sm.read(|s| {
            s.nodes
                .values()
                .map(|n| {
                    let engine = self.engines.for_node(n).map_err(|e| e.to_string());
                    (n.name.clone(), n.state, engine)
                })
                .collect()
        });
        let answers: Vec<(String, NodeState, Result<(), String>)> =
            futures::stream::iter(targets.into_iter().map(probe).collect::<Vec<_>>())
                .buffer_unordered(PROBES_AT_ONCE)
                .collect()
                .await;
        let now = controller::now();
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        let known: std::collections::HashSet<&str> =
            answers.iter().map(|(name, _, _)| name.as_str()).collect();
        book.nodes.retain(|name, _| known.contains(name.as_str()));
        for (name, state, answer) in &answers {
            book.record(name, now, answer.clone());
            if book.needs_action(name, *state, self.settings.node_grace, now) {
                self.nodes.wake(name.clone(), Reason::Probe);
            }
        }
        let ready = answers
            .iter()
            .filter(|(_, state, _)| *state == NodeState::Ready)
            .map(|(name, _, _)| name.as_str());
        let next = book
            .until_first_grace_ends(ready, self.settings.node_grace, now)
            .map_or(self.settings.probe_interval, |due| {
                due.min(self.settings.probe_interval)
            });
        Ok(Action::RequeueAfter(next))
    }
}

/// The node controller of one term: one key per node, acting on what the
/// [`Prober`] recorded.
pub struct Nodes {
    replica: Arc<Replica>,
    engines: Engines,
    settings: SupervisorSettings,
    book: Arc<Mutex<ProbeBook>>,
}

impl Nodes {
    pub fn new(
        replica: Arc<Replica>,
        engines: Engines,
        settings: SupervisorSettings,
        book: Arc<Mutex<ProbeBook>>,
    ) -> Nodes {
        Nodes {
            replica,
            engines,
            settings,
            book,
        }
    }

    fn instances(&self) -> std::collections::BTreeMap<String, Instance> {
        self.replica.sm.read(|s| s.instances.clone())
    }
}

#[async_trait::async_trait]
impl Reconciler for Nodes {
    type Key = String;
    type Error = Infallible;

    fn name(&self) -> &'static str {
        "nodes"
    }

    fn limits(&self) -> Limits {
        Limits {
            // A fence, bounded by the round budget, then a write.
            timeout: self.settings.round_budget * 2,
            concurrency: 64,
            // The prober wakes a node every round while its verdict calls
            // for action, so no resync is needed.
            resync: None,
            on_stop: OnStop::Abort,
        }
    }

    fn keys(&self) -> Vec<String> {
        self.replica.sm.read(|s| s.nodes.keys().cloned().collect())
    }

    async fn reconcile(&self, name: &String, _: Reason) -> Result<Action, Infallible> {
        let (cluster, node) = self
            .replica
            .sm
            .read(|s| (s.owner().cloned(), s.nodes.get(name).cloned()));
        let Some(node) = node else {
            self.book
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .forget(name);
            return Ok(Action::AwaitChange);
        };
        let Some(cluster) = cluster else {
            return Ok(Action::AwaitChange);
        };
        let (answers, silence) = {
            let book = self.book.lock().unwrap_or_else(|e| e.into_inner());
            (book.answers(name), book.silence(name, controller::now()))
        };
        let budget = self.settings.round_budget;
        match node.state {
            NodeState::Retired if answers => {
                let instances = self.instances();
                let fenced =
                    tokio::time::timeout(budget, fence(&self.engines, &cluster, &node, &instances))
                        .await
                        .unwrap_or(false);
                let placed = instances
                    .values()
                    .any(|i| i.node.as_deref() == Some(node.name.as_str()));
                if fenced && !placed {
                    let command = Command::RemoveNode {
                        name: node.name.clone(),
                        force: true,
                    };
                    match self.replica.write_as_leader(command).await {
                        Ok(_) => {
                            tracing::info!(node = %node.name, "retired node is clean: removed")
                        }
                        Err(e) => {
                            tracing::warn!(node = %node.name, error = %e, "cannot remove a retired node")
                        }
                    }
                }
            }
            // Bounded like every engine call of a reconcile: an unfinished
            // fence is retried when the next probe answers.
            NodeState::Down
                if answers
                    && tokio::time::timeout(
                        budget,
                        fence(&self.engines, &cluster, &node, &self.instances()),
                    )
                    .await
                    .unwrap_or(false) =>
            {
                write(
                    &self.replica,
                    &node.name,
                    NodeState::Ready,
                    "engine answers again; stale containers removed",
                )
                .await;
            }
            NodeState::Ready => {
                if let Some((silent, error)) =
                    silence.filter(|(s, _)| *s >= self.settings.node_grace)
                {
                    tracing::warn!(node = %node.name, %error, ?silent, "node is down");
                    write(
                        &self.replica,
                        &node.name,
                        NodeState::Down,
                        &format!("engine unreachable for {} ms: {error}", silent.as_millis()),
                    )
                    .await;
                }
            }
            _ => {}
        }
        Ok(Action::AwaitChange)
    }
}

/// A node to ping: its name, recorded state and engine (or why there is
/// none).
type Target = (String, NodeState, Result<Arc<dyn ContainerRuntime>, String>);

/// Pings one target (boxed: the stream of them stays `Send` for any
/// lifetime the compiler asks about).
fn probe(target: Target) -> BoxFuture<'static, (String, NodeState, Result<(), String>)> {
    Box::pin(async move {
        let (name, state, engine) = target;
        let answer = match engine {
            Ok(engine) => engine.ping().await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        (name, state, answer)
    })
}

async fn write(replica: &Replica, name: &str, state: NodeState, reason: &str) {
    let command = Command::SetNodeState {
        name: name.to_string(),
        state,
        reason: reason.to_string(),
    };
    if let Err(e) = replica.write_as_leader(command).await {
        tracing::warn!(node = name, error = %e, "cannot record node state");
    }
}

/// Removes every container of this cluster on `node` that no current
/// instance placed on `node` owns. True when the node is clean.
async fn fence(
    engines: &Engines,
    cluster: &str,
    node: &Node,
    instances: &std::collections::BTreeMap<String, Instance>,
) -> bool {
    let Ok(engine) = engines.for_node(node) else {
        return false;
    };
    let Ok(containers) = engine
        .list(&labels::node_selector(cluster, &node.name))
        .await
    else {
        return false;
    };
    let mut clean = true;
    for container in containers {
        let owned = labels::owner(&container.labels).is_some_and(|(id, generation)| {
            instances.get(&id).is_some_and(|i| {
                i.generation == generation && i.node.as_deref() == Some(node.name.as_str())
            })
        });
        if !owned {
            tracing::info!(node = %node.name, container = %container.name, "fencing: removing a container whose instance moved away");
            if let Err(e) = engine.remove(&container.id).await {
                tracing::warn!(error = %e, "fencing failed");
                clean = false;
            }
        }
    }
    clean
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_woken_only_when_its_state_no_longer_fits_its_answers() {
        let start = Instant::now();
        let grace = Duration::from_secs(2);
        let at = |ms| start + Duration::from_millis(ms);
        let mut book = ProbeBook::new(start);
        // Never heard of: nothing to do yet.
        assert!(!book.needs_action("a", NodeState::Ready, grace, at(0)));
        book.record("a", at(100), Ok(()));
        assert!(!book.needs_action("a", NodeState::Ready, grace, at(100)));
        assert!(book.needs_action("a", NodeState::Down, grace, at(100)));
        assert!(book.needs_action("a", NodeState::Retired, grace, at(100)));
        assert!(!book.needs_action("a", NodeState::Draining, grace, at(100)));

        // Silent: judged from its last answer, after the grace period.
        book.record("a", at(1_000), Err("refused".into()));
        assert!(!book.needs_action("a", NodeState::Ready, grace, at(2_000)));
        assert!(book.needs_action("a", NodeState::Ready, grace, at(2_100)));
        assert!(!book.needs_action("a", NodeState::Down, grace, at(2_100)));
        let (silent, why) = book.silence("a", at(2_100)).unwrap();
        assert_eq!((silent, why.as_str()), (Duration::from_secs(2), "refused"));

        // Never answered this term: silent since the term began.
        book.record("b", at(500), Err("timed out".into()));
        assert!(!book.needs_action("b", NodeState::Ready, grace, at(1_900)));
        assert!(book.needs_action("b", NodeState::Ready, grace, at(2_000)));

        book.forget("a");
        assert!(book.silence("a", at(3_000)).is_none());
    }

    #[test]
    fn the_prober_looks_again_when_a_silent_nodes_grace_ends() {
        let start = Instant::now();
        let grace = Duration::from_secs(2);
        let at = |ms| start + Duration::from_millis(ms);
        let mut book = ProbeBook::new(start);
        book.record("a", at(100), Ok(()));
        book.record("b", at(100), Ok(()));
        // All answer: nothing is due before the next round.
        assert_eq!(
            book.until_first_grace_ends(["a", "b"].into_iter(), grace, at(100)),
            None
        );
        // "a" last answered at 100 ms: its grace ends at 2,100 ms.
        book.record("a", at(350), Err("refused".into()));
        assert_eq!(
            book.until_first_grace_ends(["a", "b"].into_iter(), grace, at(350)),
            Some(Duration::from_millis(1_750))
        );
        // "b" went silent later (last answer at 1,000 ms): "a" comes first.
        book.record("b", at(1_000), Ok(()));
        book.record("b", at(1_250), Err("refused".into()));
        assert_eq!(
            book.until_first_grace_ends(["a", "b"].into_iter(), grace, at(1_900)),
            Some(Duration::from_millis(200))
        );
        // Past its grace, "a" is woken every round: it does not hold "b"'s
        // end back. Only the nodes asked about count.
        assert_eq!(
            book.until_first_grace_ends(["a"].into_iter(), grace, at(2_500)),
            None
        );
        assert_eq!(
            book.until_first_grace_ends(["a", "b"].into_iter(), grace, at(2_500)),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            book.until_first_grace_ends(["b"].into_iter(), grace, at(2_500)),
            Some(Duration::from_millis(500))
        );
    }
}
