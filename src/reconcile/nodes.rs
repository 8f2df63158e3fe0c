//! The node controller: probes every engine in the inventory (Docker
//! `/_ping`, with its own short timeout) and writes only liveness
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
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::engines::Engines;
use super::labels;
use super::watchdog::ProgressReporter;
use super::SupervisorSettings;
use crate::replica::Replica;
use crate::state::{Command, Instance, Node, NodeState};

/// Runs the node controller until `token` is cancelled.
pub async fn run(
    replica: Arc<Replica>,
    engines: Engines,
    settings: SupervisorSettings,
    progress: ProgressReporter,
    token: CancellationToken,
) {
    let leading_since = Instant::now();
    let mut last_ok: HashMap<String, Instant> = HashMap::new();
    let mut interval = tokio::time::interval(settings.probe_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = interval.tick() => {}
        }
        let (cluster, nodes, instances) = replica
            .sm
            .read(|s| (s.cluster_id.clone(), s.nodes.clone(), s.instances.clone()));
        let Some(cluster) = cluster else {
            progress.progress();
            continue;
        };
        let probes = futures::future::join_all(nodes.values().map(|node| {
            let engines = engines.clone();
            async move {
                let result = match engines.for_node(node) {
                    Ok(engine) => engine.ping().await,
                    Err(e) => Err(e),
                };
                (node.clone(), result)
            }
        }))
        .await;
        for (node, result) in probes {
            if token.is_cancelled() {
                return;
            }
            match result {
                Ok(()) if node.state == NodeState::Retired => {
                    let fenced = tokio::time::timeout(
                        settings.round_budget,
                        fence(&engines, &cluster, &node, &instances),
                    )
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
                        match replica.write_as_leader(command).await {
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
                    last_ok.insert(node.name.clone(), Instant::now());
                    // Bounded like every engine call of a round: an
                    // unfinished fence is retried in the next one.
                    if node.state == NodeState::Down
                        && tokio::time::timeout(
                            settings.round_budget,
                            fence(&engines, &cluster, &node, &instances),
                        )
                        .await
                        .unwrap_or(false)
                    {
                        write(
                            &replica,
                            &node.name,
                            NodeState::Ready,
                            "engine answers again; stale containers removed",
                        )
                        .await;
                    }
                }
                Err(e) => {
                    let since = *last_ok.get(&node.name).unwrap_or(&leading_since);
                    let silent = since.elapsed();
                    if node.state == NodeState::Ready && silent >= settings.node_grace {
                        tracing::warn!(node = %node.name, error = %e, ?silent, "node is down");
                        write(
                            &replica,
                            &node.name,
                            NodeState::Down,
                            &format!("engine unreachable for {} ms: {e}", silent.as_millis()),
                        )
                        .await;
                    }
                }
            }
        }
        progress.progress();
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
