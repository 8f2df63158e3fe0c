//! Image clean-up, a controller with one key (the cluster): images the
//! cluster brought to a node ([`crate::state::image_catalog`]'s `brought`:
//! pulled or loaded by the puller) that no service uses — neither its
//! current version nor the one before, kept for a rollback — are removed
//! from that node once they have been unused for `image_gc_after`. Images
//! the cluster did not bring are never touched, and an image a container
//! still uses is left (the engine refuses its removal). How long an image
//! has been unused is kept in the leader's memory: a new leader starts the
//! clock again, which only ever keeps an image longer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::controller::{self, Action, Limits, OnStop, Reason, Reconciler};
use super::engines::Engines;
use crate::replica::Replica;
use crate::runtime::RuntimeError;
use crate::state::{Command, NodeState};

/// Removals at once, across nodes.
const CONCURRENCY: usize = 1;

/// The clean-up of one term.
pub struct ImageGc {
    replica: Arc<Replica>,
    engines: Engines,
    /// `None`: clean-up is off.
    after: Option<Duration>,
    /// `(node, reference)` → when it was first seen unused.
    unused_since: Mutex<HashMap<(String, String), Instant>>,
}

impl ImageGc {
    pub fn new(replica: Arc<Replica>, engines: Engines, after: Option<Duration>) -> ImageGc {
        ImageGc {
            replica,
            engines,
            after,
            unused_since: Mutex::new(HashMap::new()),
        }
    }

    /// How often the brought images are looked at.
    fn period(after: Duration) -> Duration {
        (after / 4).clamp(Duration::from_secs(1), Duration::from_secs(300))
    }
}

#[async_trait::async_trait]
impl Reconciler for ImageGc {
    type Key = ();
    type Error = std::convert::Infallible;

    fn name(&self) -> &'static str {
        "image-gc"
    }

    fn limits(&self) -> Limits {
        Limits {
            timeout: Duration::from_secs(120),
            concurrency: CONCURRENCY,
            resync: None,
            on_stop: OnStop::Abort,
        }
    }

    fn keys(&self) -> Vec<()> {
        vec![()]
    }

    async fn reconcile(&self, _: &(), _: Reason) -> Result<Action, Self::Error> {
        let Some(after) = self.after else {
            return Ok(Action::AwaitChange);
        };
        let now = controller::now();
        // What was brought and is unused now, on ready nodes.
        let candidates = self.replica.sm.read(|s| {
            let used = s.images.in_use(s.services.values());
            let mut unused = Vec::new();
            for (node, references) in &s.images.brought {
                let Some(node) = s.nodes.get(node).filter(|n| n.state == NodeState::Ready) else {
                    continue;
                };
                for reference in references {
                    if !used.contains(reference.as_str()) {
                        unused.push((node.clone(), reference.clone()));
                    }
                }
            }
            unused
        });
        let due: Vec<_> = {
            let mut since = self.unused_since.lock().unwrap_or_else(|e| e.into_inner());
            let current: std::collections::HashSet<(String, String)> = candidates
                .iter()
                .map(|(node, reference)| (node.name.clone(), reference.clone()))
                .collect();
            since.retain(|key, _| current.contains(key));
            candidates
                .into_iter()
                .filter(|(node, reference)| {
                    let first = *since
                        .entry((node.name.clone(), reference.clone()))
                        .or_insert(now);
                    now.duration_since(first) >= after
                })
                .collect()
        };
        for (node, reference) in due {
            let Ok(engine) = self.engines.for_node(&node) else {
                continue;
            };
            match engine.remove_image(&reference).await {
                Ok(()) => {
                    tracing::info!(node = %node.name, image = %reference, "removed an image no service uses");
                    let _ = self
                        .replica
                        .write_as_leader(Command::ImageOnNode {
                            node: node.name.clone(),
                            reference: reference.clone(),
                            present: false,
                        })
                        .await;
                    self.unused_since
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&(node.name.clone(), reference));
                }
                Err(RuntimeError::Conflict(_)) => {
                    tracing::debug!(node = %node.name, image = %reference, "a container still uses the image");
                }
                Err(e) => {
                    tracing::debug!(node = %node.name, image = %reference, error = %e, "image removal failed")
                }
            }
        }
        Ok(Action::RequeueAfter(Self::period(after)))
    }
}
