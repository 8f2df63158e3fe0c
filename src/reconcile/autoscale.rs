//! Horizontal scaling, a controller on the [`super::controller`] runtime
//! with one key (the cluster): when placement finds nodes that match a
//! slot but none with capacity left, the service controller asks for
//! capacity ([`CapacityWanted`]); this controller provisions one more
//! machine through the configured provider (`[autoscale]`), waits for its
//! engine, and registers it as a node, which wakes the services that could
//! not be placed. One machine at a time, at most `max_nodes` from this
//! provider, and a failure waits [`RETRY_AFTER`] before the next attempt —
//! never a provisioning storm. A provisioning in flight is finished, not
//! cut off, when the leader pauses or steps down: a machine made but not
//! registered would be a machine nobody knows about.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::controller::{Action, Limits, OnStop, Reason, ReconcileError, Reconciler, Trigger};
use crate::config::AutoscaleConfig;
use crate::provider::{MachineProvider, MachineRequest, ProviderConfig, ProviderError};
use crate::replica::{OpError, Replica};
use crate::state::Command;

/// Pause after a failed provisioning before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Longest one provisioning may take (a cloud VM and its engine).
const PROVISION_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// How the service controller asks for capacity; cheap to clone.
#[derive(Clone)]
pub struct CapacityWanted {
    wanted: Arc<AtomicBool>,
    trigger: Trigger<()>,
}

impl CapacityWanted {
    pub fn new(trigger: Trigger<()>) -> CapacityWanted {
        CapacityWanted {
            wanted: Arc::new(AtomicBool::new(false)),
            trigger,
        }
    }

    /// A slot found matching nodes, all full.
    pub fn ask(&self) {
        if !self.wanted.swap(true, Ordering::AcqRel) {
            self.trigger.wake((), Reason::Commit);
        }
    }

    fn take(&self) -> bool {
        self.wanted.swap(false, Ordering::AcqRel)
    }

    /// Keeps an answered request standing without waking anyone: the
    /// failed attempt is retried after its pause.
    fn keep(&self) {
        self.wanted.store(true, Ordering::Release);
    }
}

/// Provisions nodes on demand; inert without a provider.
pub struct Autoscaler {
    replica: Arc<Replica>,
    config: AutoscaleConfig,
    provider: Option<Arc<dyn MachineProvider>>,
    wanted: CapacityWanted,
}

impl Autoscaler {
    pub fn new(replica: Arc<Replica>, wanted: CapacityWanted) -> Autoscaler {
        let config = replica.config.autoscale.clone();
        let provider = config.provider.as_ref().and_then(|provider| {
            crate::provider::from_config(provider)
                .map_err(|e| tracing::error!(error = %e, "autoscale provider unusable: no automatic provisioning"))
                .ok()
        });
        Autoscaler {
            replica,
            config,
            provider,
            wanted,
        }
    }
}

#[async_trait::async_trait]
impl Reconciler for Autoscaler {
    type Key = ();
    type Error = ProvisionError;

    fn name(&self) -> &'static str {
        "autoscale"
    }

    fn limits(&self) -> Limits {
        Limits {
            timeout: PROVISION_TIMEOUT,
            concurrency: 1,
            // Asked for, never polled.
            resync: None,
            on_stop: OnStop::Finish,
        }
    }

    fn keys(&self) -> Vec<()> {
        vec![()]
    }

    async fn reconcile(&self, _: &(), _: Reason) -> Result<Action, ProvisionError> {
        let Some(provider) = self.provider.clone() else {
            self.wanted.take();
            return Ok(Action::AwaitChange);
        };
        if !self.wanted.take() {
            return Ok(Action::AwaitChange);
        }
        let (registered, ours) = self.replica.sm.read(|s| {
            let registered: BTreeSet<String> = s.nodes.keys().cloned().collect();
            let ours = s
                .nodes
                .values()
                .filter(|n| {
                    n.spec.provider == provider.kind() && n.spec.labels.contains_key(AUTOSCALED)
                })
                .count();
            (registered, ours)
        });
        let name = if ours >= self.config.max_nodes as usize {
            None
        } else {
            next_name(&self.config, &registered)
        };
        let Some(name) = name else {
            return Ok(Action::AwaitChange);
        };
        let outcome = provision(&self.replica, provider.as_ref(), &name).await;
        // What was asked while this machine was being made was asked
        // without it: the services still short of room ask again once its
        // registration wakes them.
        self.wanted.take();
        match outcome {
            Ok(()) => Ok(Action::AwaitChange),
            Err(e) => {
                record(&self.replica, &name, format!("provisioning failed: {e}")).await;
                // Still wanted: the slots that asked are still unplaced.
                self.wanted.keep();
                Err(e)
            }
        }
    }

    fn error_policy(&self, _: &(), _: &ReconcileError<ProvisionError>, _: u32) -> Action {
        Action::RequeueAfter(RETRY_AFTER)
    }
}

/// Label on nodes this scaler added.
pub const AUTOSCALED: &str = "raftvisor.autoscaled";

/// The next machine name: a configured static machine not registered yet,
/// or `<prefix>-<n>` for providers that make machines.
fn next_name(config: &AutoscaleConfig, registered: &BTreeSet<String>) -> Option<String> {
    match config.provider.as_ref()? {
        ProviderConfig::Static(machines) => machines
            .machines
            .iter()
            .map(|m| m.name.clone())
            .find(|name| !registered.contains(name)),
        _ => (1..)
            .map(|n| format!("{}-{n}", config.name_prefix))
            .find(|name| !registered.contains(name)),
    }
}

/// Why a machine was not added.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("provisioning {name} failed: {source}")]
    Provider { name: String, source: ProviderError },
    #[error("registering {name} as a node failed: {source}")]
    Register { name: String, source: OpError },
}

async fn provision(
    replica: &Replica,
    provider: &dyn MachineProvider,
    name: &str,
) -> Result<(), ProvisionError> {
    record(
        replica,
        name,
        "placement needs capacity: provisioning a node".into(),
    )
    .await;
    let request = MachineRequest {
        name: name.to_string(),
        zone: None,
        labels: [(AUTOSCALED.to_string(), "true".to_string())].into(),
        tags: [("raftvisor".to_string(), "autoscaled".to_string())].into(),
    };
    let machine =
        provider
            .provision(&request)
            .await
            .map_err(|source| ProvisionError::Provider {
                name: name.to_string(),
                source,
            })?;
    let mut spec = machine.node;
    spec.labels
        .insert(AUTOSCALED.to_string(), "true".to_string());
    replica
        .write_as_leader(Command::PutNode {
            name: name.to_string(),
            spec,
            expected_version: None,
        })
        .await
        .map_err(|source| ProvisionError::Register {
            name: name.to_string(),
            source,
        })?;
    record(
        replica,
        name,
        format!(
            "provisioned by the {} provider and registered",
            provider.kind()
        ),
    )
    .await;
    tracing::info!("node provisioned for capacity");
    Ok(())
}

async fn record(replica: &Replica, name: &str, message: String) {
    let _ = replica
        .write_as_leader(Command::RecordEvent {
            kind: "node.autoscale".into(),
            subject: name.to_string(),
            message,
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_spare_machines_or_the_prefix() {
        let spare: AutoscaleConfig = toml::from_str(
            r#"
            max_nodes = 2
            [provider]
            kind = "static"
            [[provider.machines]]
            name = "a"
            docker_endpoint = "unix:///var/run/docker.sock"
            [[provider.machines]]
            name = "b"
            docker_endpoint = "unix:///var/run/docker.sock"
            "#,
        )
        .unwrap();
        let registered: BTreeSet<String> = ["a".to_string()].into();
        assert_eq!(next_name(&spare, &registered).as_deref(), Some("b"));
        let all: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
        assert_eq!(next_name(&spare, &all), None);
        let none = AutoscaleConfig::default();
        assert_eq!(next_name(&none, &registered), None);
    }
}
