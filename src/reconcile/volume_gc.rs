//! Volume removal, a controller keyed by Docker volume name: a volume
//! marked for removal ([`crate::state::volumes`]: `volume rm`, `service rm
//! --purge`) is removed from every node whose engine made it, and each
//! removal is written back, so the book forgets the volume once no node
//! holds it. It never removes a volume that is not marked, and the engine
//! refuses to remove one a container still mounts (the service controller
//! is removing that container: tried again). A node that is down is
//! waited for; a node that left the inventory is crossed out (its engine
//! is out of reach for good).

use std::sync::Arc;
use std::time::Duration;

use super::controller::{Action, Limits, OnStop, Reason, Reconciler};
use super::engines::Engines;
use crate::replica::Replica;
use crate::runtime::RuntimeError;
use crate::state::{Command, NodeState};

/// How soon a volume some node still holds is looked at again.
const RETRY: Duration = Duration::from_secs(3);

/// The volume removal of one term.
pub struct VolumeGc {
    replica: Arc<Replica>,
    engines: Engines,
}

impl VolumeGc {
    pub fn new(replica: Arc<Replica>, engines: Engines) -> VolumeGc {
        VolumeGc { replica, engines }
    }

    /// Writes that `node` no longer holds `name`.
    async fn removed_from(&self, name: &str, node: &str) -> bool {
        let command = Command::VolumeRemovedFrom {
            name: name.to_string(),
            node: node.to_string(),
        };
        match self.replica.write_as_leader(command).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(volume = name, node, error = %e, "cannot record a volume's removal");
                false
            }
        }
    }
}

#[async_trait::async_trait]
impl Reconciler for VolumeGc {
    type Key = String;
    type Error = std::convert::Infallible;

    fn name(&self) -> &'static str {
        "volume-gc"
    }

    fn limits(&self) -> Limits {
        Limits {
            timeout: Duration::from_secs(60),
            concurrency: 4,
            resync: Some(Duration::from_secs(60)),
            on_stop: OnStop::Abort,
        }
    }

    fn keys(&self) -> Vec<String> {
        self.replica
            .sm
            .read(|s| s.volumes.removing().map(|(name, _)| name.clone()).collect())
    }

    async fn reconcile(&self, name: &String, _: Reason) -> Result<Action, Self::Error> {
        let holders = self.replica.sm.read(|s| {
            s.volumes
                .volumes
                .get(name)
                .filter(|record| record.removing)
                .map(|record| {
                    record
                        .nodes
                        .iter()
                        .map(|node| (node.clone(), s.nodes.get(node).cloned()))
                        .collect::<Vec<_>>()
                })
        });
        let Some(holders) = holders else {
            return Ok(Action::AwaitChange);
        };
        let mut left = false;
        for (node_name, node) in holders {
            let Some(node) = node else {
                left |= !self.removed_from(name, &node_name).await;
                continue;
            };
            // A draining or retired node's engine still answers; a down
            // one is waited for.
            let usable = !matches!(node.state, NodeState::Down | NodeState::Provisioning);
            let engine = match self.engines.for_node(&node) {
                Ok(engine) if usable => engine,
                _ => {
                    left = true;
                    continue;
                }
            };
            match engine.remove_volume(name).await {
                Ok(()) => {
                    tracing::info!(volume = %name, node = %node_name, "removed a volume");
                    left |= !self.removed_from(name, &node_name).await;
                }
                Err(RuntimeError::Conflict(why)) => {
                    tracing::debug!(volume = %name, node = %node_name, %why, "a container still mounts the volume");
                    left = true;
                }
                Err(e) => {
                    tracing::debug!(volume = %name, node = %node_name, error = %e, "volume removal failed");
                    left = true;
                }
            }
        }
        Ok(if left {
            Action::RequeueAfter(RETRY)
        } else {
            Action::AwaitChange
        })
    }
}
