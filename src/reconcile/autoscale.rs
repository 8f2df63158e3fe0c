//! Horizontal scaling: when placement finds nodes that match a slot but
//! none with capacity left, the leader provisions one more machine through
//! the configured provider (`[autoscale]`), waits for its engine, and
//! registers it as a node; the next reconcile round places the slot there.
//! One machine at a time, at most `max_nodes` from this provider, and a
//! failure waits before the next attempt — never a provisioning storm.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::AutoscaleConfig;
use crate::provider::{MachineProvider, MachineRequest, ProviderConfig};
use crate::replica::Replica;
use crate::state::Command;

/// Pause after a failed provisioning before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Provisions nodes on demand; inert without a provider.
pub struct Autoscaler {
    config: AutoscaleConfig,
    provider: Option<Arc<dyn MachineProvider>>,
    busy: Arc<AtomicBool>,
    failed_at: Arc<Mutex<Option<Instant>>>,
}

impl Autoscaler {
    pub fn from_config(config: &AutoscaleConfig) -> Autoscaler {
        let provider = config.provider.as_ref().and_then(|provider| {
            crate::provider::from_config(provider)
                .map_err(|e| tracing::error!(error = %e, "autoscale provider unusable: no automatic provisioning"))
                .ok()
        });
        Autoscaler {
            config: config.clone(),
            provider,
            busy: Arc::new(AtomicBool::new(false)),
            failed_at: Arc::new(Mutex::new(None)),
        }
    }

    /// Asks for one more node; returns at once (the work runs in a task).
    pub fn more_capacity(&self, replica: &Arc<Replica>) {
        let Some(provider) = self.provider.clone() else {
            return;
        };
        if let Some(at) = *self.failed_at.lock().unwrap_or_else(|e| e.into_inner()) {
            if at.elapsed() < RETRY_AFTER {
                return;
            }
        }
        if self.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        let registered: BTreeSet<String> = replica.sm.read(|s| s.nodes.keys().cloned().collect());
        let ours = replica.sm.read(|s| {
            s.nodes
                .values()
                .filter(|n| {
                    n.spec.provider == provider.kind() && n.spec.labels.contains_key(AUTOSCALED)
                })
                .count()
        });
        let name = if ours >= self.config.max_nodes as usize {
            None
        } else {
            next_name(&self.config, &registered)
        };
        let Some(name) = name else {
            self.busy.store(false, Ordering::Release);
            return;
        };
        let replica = replica.clone();
        let busy = self.busy.clone();
        let failed_at = self.failed_at.clone();
        let span = tracing::info_span!("autoscale", node = %name);
        let work = async move {
            let outcome = provision(&replica, provider.as_ref(), &name).await;
            if let Err(e) = &outcome {
                tracing::warn!(error = %e, "provisioning a node failed");
                *failed_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                record(&replica, &name, format!("provisioning failed: {e}")).await;
            }
            busy.store(false, Ordering::Release);
        };
        tokio::spawn(tracing::Instrument::instrument(work, span));
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

async fn provision(
    replica: &Replica,
    provider: &dyn MachineProvider,
    name: &str,
) -> Result<(), String> {
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
    let machine = provider
        .provision(&request)
        .await
        .map_err(|e| e.to_string())?;
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
        .map_err(|e| e.to_string())?;
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
