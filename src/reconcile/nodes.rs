//! The node controller: one key per node of the inventory on the
//! [`super::controller`] runtime, probing its engine (Docker `/_ping`, with
//! its own short timeout) every `probe_interval`; it writes only liveness
//! transitions through Raft. A ready node whose engine has not answered for
//! the grace period is marked down (its instances are then placed
//! elsewhere by the service controller); a down node that answers again is
//! fenced — its containers whose instances moved away are removed — before
//! it is marked ready and can receive work. A new leader gives every node a
//! full grace period before judging it. A retired node (`node rm --force`)
//! is fenced the same way while the service controller moves its
//! instances; once nothing is placed on it and none of this cluster's
//! containers are left there, it is removed from the inventory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::controller::{Action, Limits, OnStop, Reason, ReconcileError, Reconciler};
use super::engines::Engines;
use super::labels;
use super::SupervisorSettings;
use crate::replica::Replica;
use crate::state::{Command, Instance, Node, NodeState};

/// The node controller of one term: one key per node, each probed every
/// `probe_interval`.
pub struct Nodes {
    replica: Arc<Replica>,
    engines: Engines,
    settings: SupervisorSettings,
    leading_since: Instant,
    last_ok: Mutex<HashMap<String, Instant>>,
}

impl Nodes {
    pub fn new(replica: Arc<Replica>, engines: Engines, settings: SupervisorSettings) -> Nodes {
        Nodes {
            replica,
            engines,
            settings,
            leading_since: Instant::now(),
            last_ok: Mutex::new(HashMap::new()),
        }
    }

    fn instances(&self) -> std::collections::BTreeMap<String, Instance> {
        self.replica.sm.read(|s| s.instances.clone())
    }
}

#[async_trait::async_trait]
impl Reconciler for Nodes {
    type Key = String;

    fn name(&self) -> &'static str {
        "nodes"
    }

    fn limits(&self) -> Limits {
        Limits {
            // A ping, then a fence bounded by the round budget.
            timeout: self.settings.round_budget * 2,
            concurrency: 64,
            resync: Some(self.settings.resync),
            on_stop: OnStop::Abort,
        }
    }

    fn keys(&self) -> Vec<String> {
        self.replica.sm.read(|s| s.nodes.keys().cloned().collect())
    }

    async fn reconcile(&self, name: &String, _: Reason) -> Result<Action, ReconcileError> {
        let (cluster, node) = self
            .replica
            .sm
            .read(|s| (s.cluster_id.clone(), s.nodes.get(name).cloned()));
        let Some(node) = node else {
            self.last_ok
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(name);
            return Ok(Action::AwaitChange);
        };
        let again = Action::RequeueAfter(self.settings.probe_interval);
        let Some(cluster) = cluster else {
            return Ok(again);
        };
        let result = match self.engines.for_node(&node) {
            Ok(engine) => engine.ping().await,
            Err(e) => Err(e),
        };
        let budget = self.settings.round_budget;
        match result {
            Ok(()) if node.state == NodeState::Retired => {
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
            Ok(()) => {
                self.last_ok
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(node.name.clone(), Instant::now());
                // Bounded like every engine call of a reconcile: an
                // unfinished fence is retried at the next probe.
                if node.state == NodeState::Down
                    && tokio::time::timeout(
                        budget,
                        fence(&self.engines, &cluster, &node, &self.instances()),
                    )
                    .await
                    .unwrap_or(false)
                {
                    write(
                        &self.replica,
                        &node.name,
                        NodeState::Ready,
                        "engine answers again; stale containers removed",
                    )
                    .await;
                }
            }
            Err(e) => {
                let since = self
                    .last_ok
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&node.name)
                    .copied()
                    .unwrap_or(self.leading_since);
                let silent = since.elapsed();
                if node.state == NodeState::Ready && silent >= self.settings.node_grace {
                    tracing::warn!(node = %node.name, error = %e, ?silent, "node is down");
                    write(
                        &self.replica,
                        &node.name,
                        NodeState::Down,
                        &format!("engine unreachable for {} ms: {e}", silent.as_millis()),
                    )
                    .await;
                }
            }
        }
        Ok(again)
    }
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
