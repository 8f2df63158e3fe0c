//! Feeds [`Observed`] from the engines: one task per usable node (ready or
//! draining) subscribes to the engine's container events of this cluster,
//! lists the node's containers once, then applies each event (inspecting
//! the container it names), and wakes the services whose containers
//! changed. A node that became synced is announced (`synced`), so the
//! services placed there but with no container yet look again too. A broken stream (engine gone, lag, reconnect) unsyncs the node
//! and is retried with backoff: subscribe again, list again. Engine reads
//! only; it never changes a container and never writes through Raft.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::backoff;
use super::controller::{Reason, Trigger};
use super::engines::Engines;
use super::labels;
use super::observed::{Observed, ServiceKey};
use crate::runtime::{ContainerRuntime, RuntimeEvent};
use crate::state::{Node, NodeState};

/// Engine actions after which a container's state is read again.
const CHANGES: [&str; 11] = [
    "create", "start", "restart", "die", "kill", "oom", "stop", "pause", "unpause", "update",
    "rename",
];

/// The watch tasks of one term's supervisor.
pub struct Watchers {
    observed: Arc<Mutex<Observed>>,
    engines: Engines,
    services: Trigger<ServiceKey>,
    synced: mpsc::UnboundedSender<String>,
    /// Longest one list or inspect may take.
    budget: Duration,
    /// Per watched node: what it was started for, and its stop.
    running: Mutex<HashMap<String, (String, CancellationToken)>>,
    token: CancellationToken,
}

impl Watchers {
    pub fn new(
        observed: Arc<Mutex<Observed>>,
        engines: Engines,
        services: Trigger<ServiceKey>,
        synced: mpsc::UnboundedSender<String>,
        budget: Duration,
        token: CancellationToken,
    ) -> Watchers {
        Watchers {
            observed,
            engines,
            services,
            synced,
            budget,
            running: Mutex::new(HashMap::new()),
            token,
        }
    }

    /// Watches exactly the usable nodes of `nodes` (a changed endpoint
    /// restarts the watch); stops watching the others.
    pub fn sync(&self, cluster: &str, nodes: &BTreeMap<String, Node>) {
        let wanted: BTreeMap<&String, String> = nodes
            .iter()
            .filter(|(_, n)| matches!(n.state, NodeState::Ready | NodeState::Draining))
            .map(|(name, n)| (name, watch_identity(cluster, n)))
            .collect();
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let stale: Vec<String> = running
            .iter()
            .filter(|(name, (identity, _))| wanted.get(name) != Some(identity))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some((_, stop)) = running.remove(&name) {
                stop.cancel();
            }
            let touched = self
                .observed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .forget(&name);
            wake(&self.services, touched);
        }
        for (name, identity) in wanted {
            if running.contains_key(name) {
                continue;
            }
            let stop = self.token.child_token();
            running.insert(name.clone(), (identity, stop.clone()));
            let watch = Watch {
                node: nodes[name].clone(),
                cluster: cluster.to_string(),
                engines: self.engines.clone(),
                observed: self.observed.clone(),
                services: self.services.clone(),
                synced: self.synced.clone(),
                budget: self.budget,
            };
            tokio::spawn(watch.run(stop));
        }
    }
}

/// What a watch depends on: a node whose endpoint or TLS files changed
/// is watched anew.
fn watch_identity(cluster: &str, node: &Node) -> String {
    let tls = node
        .spec
        .docker_tls
        .as_ref()
        .map(|t| format!("{}#{}#{}", t.ca_cert, t.cert, t.key))
        .unwrap_or_default();
    format!("{cluster}#{}#{tls}", node.spec.docker_endpoint)
}

fn wake(services: &Trigger<ServiceKey>, touched: BTreeSet<ServiceKey>) {
    for key in touched {
        services.wake(key, Reason::Engine);
    }
}

struct Watch {
    node: Node,
    cluster: String,
    engines: Engines,
    observed: Arc<Mutex<Observed>>,
    services: Trigger<ServiceKey>,
    synced: mpsc::UnboundedSender<String>,
    budget: Duration,
}

impl Watch {
    async fn run(self, stop: CancellationToken) {
        let mut failures = 0u32;
        loop {
            let outcome = tokio::select! {
                _ = stop.cancelled() => return,
                outcome = self.follow(&mut failures) => outcome,
            };
            let touched = self
                .observed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .unsynced(&self.node.name);
            wake(&self.services, touched);
            failures = failures.saturating_add(1);
            tracing::debug!(node = %self.node.name, error = %outcome, failures, "engine watch broke; listing again after a pause");
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff::error_delay(failures)) => {}
            }
        }
    }

    /// Subscribes, lists, then applies events until the stream breaks;
    /// why it broke.
    async fn follow(&self, failures: &mut u32) -> String {
        let engine = match self.engines.for_node(&self.node) {
            Ok(engine) => engine,
            Err(e) => return e.to_string(),
        };
        let selector = labels::node_selector(&self.cluster, &self.node.name);
        // Subscribed before listing: nothing that changes after the list
        // is missed.
        let mut events = match self.bounded(engine.events(&selector)).await {
            Ok(events) => events,
            Err(e) => return e,
        };
        let listed = match self.bounded(engine.list(&selector)).await {
            Ok(listed) => listed,
            Err(e) => return e,
        };
        let touched = self
            .observed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .relisted(&self.node.name, listed);
        wake(&self.services, touched);
        let _ = self.synced.send(self.node.name.clone());
        *failures = 0;
        loop {
            match events.next().await {
                Some(Ok(event)) => {
                    if let Err(e) = self.apply(&*engine, event).await {
                        return e;
                    }
                }
                Some(Err(e)) => return e.to_string(),
                None => return "the engine closed its event stream".into(),
            }
        }
    }

    async fn apply(
        &self,
        engine: &dyn ContainerRuntime,
        event: RuntimeEvent,
    ) -> Result<(), String> {
        let node = &self.node.name;
        let touched = if event.action == "destroy" {
            self.observed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .removed(node, &event.container_id)
        } else if CHANGES.contains(&event.action.as_str()) {
            let found = self.bounded(engine.inspect(&event.container_id)).await?;
            let mut observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
            match found {
                Some(container) => observed.updated(node, container),
                None => observed.removed(node, &event.container_id),
            }
        } else {
            return Ok(());
        };
        wake(&self.services, touched);
        Ok(())
    }

    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, crate::runtime::RuntimeError>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.budget, call).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.budget)),
        }
    }
}
