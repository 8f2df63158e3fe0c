//! The workload containers raftvisor manages for the cluster under test,
//! as the Docker Engine lists them: found by the `raftvisor.cluster` label
//! and described by the contract's other labels (namespace, service, slot,
//! generation). The supervisor checker samples them; the workload nemesis
//! picks its victims among them.

use std::collections::HashMap;

use bollard::query_parameters::ListContainersOptionsBuilder;
use bollard::Docker;
use serde::{Deserialize, Serialize};

/// One managed container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    pub id: String,
    pub namespace: String,
    pub service: String,
    pub slot: u32,
    pub generation: u64,
    /// The engine's state: `running`, `exited`, `created`, …
    pub state: String,
}

impl Workload {
    /// `namespace/service#slot`.
    pub fn slot_key(&self) -> String {
        format!("{}/{}#{}", self.namespace, self.service, self.slot)
    }
}

/// Every container of cluster `cluster_id`, running or not.
pub async fn list(docker: &Docker, cluster_id: &str) -> anyhow::Result<Vec<Workload>> {
    let label = format!("raftvisor.cluster={cluster_id}");
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&HashMap::from([("label", vec![label.as_str()])]))
        .build();
    let containers = docker.list_containers(Some(options)).await?;
    Ok(containers
        .into_iter()
        .filter_map(|c| {
            let labels = c.labels.unwrap_or_default();
            let label = |name: &str| labels.get(&format!("raftvisor.{name}")).cloned();
            Some(Workload {
                id: c.id?,
                namespace: label("namespace")?,
                service: label("service")?,
                slot: label("slot")?.parse().ok()?,
                generation: label("generation")?.parse().ok()?,
                state: c
                    .state
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "unknown".into()),
            })
        })
        .collect())
}
