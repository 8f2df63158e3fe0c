//! The `static` provider: machines that exist already, given by name,
//! address and Docker endpoint in the configuration. Provisioning one only
//! checks that its engine answers (`/_ping`, over TLS when `docker_tls` is
//! given) and returns the node to register; its status is whether the
//! engine answers. It cannot power machines on or off, so restart,
//! deallocate and delete are refused with a clear reason, and start only
//! confirms a machine that is already up.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Machine, MachineProvider, MachineRequest, MachineStatus, ProviderError};
use crate::runtime::docker::{DockerRuntime, DockerTimeouts};
use crate::runtime::ContainerRuntime;
use crate::state::{Capacity, DockerTls, NodeSpec};

const KIND: &str = "static";

/// The machines the static provider offers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    /// How long an engine may take to answer `/_ping` (default 2000 ms).
    #[serde(default)]
    pub ping_timeout_ms: Option<u64>,
    #[serde(default)]
    pub machines: Vec<StaticMachine>,
}

/// One given machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticMachine {
    pub name: String,
    pub docker_endpoint: String,
    #[serde(default)]
    pub docker_tls: Option<DockerTls>,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub capacity: Capacity,
}

impl StaticMachine {
    /// The node to register for this machine, with the request's labels
    /// merged over the configured ones.
    fn node_spec(&self, request: Option<&MachineRequest>) -> NodeSpec {
        let mut labels = self.labels.clone();
        if let Some(request) = request {
            labels.extend(request.labels.clone());
        }
        NodeSpec {
            provider: KIND.to_string(),
            docker_endpoint: self.docker_endpoint.clone(),
            address: self.address.clone(),
            region: self.region.clone(),
            zone: self.zone.clone(),
            labels,
            capacity: self.capacity.clone(),
            docker_tls: self.docker_tls.clone(),
        }
    }
}

/// Serves the machines of a [`StaticConfig`].
#[derive(Debug)]
pub struct StaticProvider {
    machines: BTreeMap<String, StaticMachine>,
    ping_timeout: Duration,
}

impl StaticProvider {
    pub fn new(config: &StaticConfig) -> Result<StaticProvider, ProviderError> {
        let mut machines = BTreeMap::new();
        for machine in &config.machines {
            if machine.name.trim().is_empty() {
                return Err(ProviderError::Config(
                    "a static machine needs a name".to_string(),
                ));
            }
            if machines
                .insert(machine.name.clone(), machine.clone())
                .is_some()
            {
                return Err(ProviderError::Config(format!(
                    "static machine {:?} is given twice",
                    machine.name
                )));
            }
        }
        Ok(StaticProvider {
            machines,
            ping_timeout: Duration::from_millis(config.ping_timeout_ms.unwrap_or(2000)),
        })
    }

    fn machine(&self, id: &str) -> Result<&StaticMachine, ProviderError> {
        self.machines
            .get(id)
            .ok_or_else(|| ProviderError::UnknownMachine(id.to_string()))
    }

    /// Pings the machine's engine.
    async fn ping(&self, machine: &StaticMachine) -> Result<(), ProviderError> {
        let timeouts = DockerTimeouts {
            ping: self.ping_timeout,
            ..DockerTimeouts::default()
        };
        let engine = match &machine.docker_tls {
            Some(tls) => DockerRuntime::connect_tls(&machine.docker_endpoint, tls, timeouts),
            None => DockerRuntime::connect_with_timeouts(&machine.docker_endpoint, timeouts),
        }
        .map_err(|e| ProviderError::Config(format!("machine {:?}: {e}", machine.name)))?;
        engine.ping().await.map_err(|e| ProviderError::Unreachable {
            machine: machine.name.clone(),
            reason: e.to_string(),
        })
    }

    fn not_supported(operation: &'static str, reason: &str) -> ProviderError {
        ProviderError::NotSupported {
            provider: KIND,
            operation,
            reason: reason.to_string(),
        }
    }
}

#[async_trait::async_trait]
impl MachineProvider for StaticProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn provision(&self, request: &MachineRequest) -> Result<Machine, ProviderError> {
        let machine = self.machine(&request.name)?;
        self.ping(machine).await?;
        tracing::info!(machine = %machine.name, endpoint = %machine.docker_endpoint, "static machine answers");
        Ok(Machine {
            id: machine.name.clone(),
            node: machine.node_spec(Some(request)),
        })
    }

    /// A given machine cannot be powered on from here: start succeeds only
    /// when its engine already answers.
    async fn start(&self, id: &str) -> Result<(), ProviderError> {
        let machine = self.machine(id)?;
        self.ping(machine).await.map_err(|e| {
            Self::not_supported(
                "start",
                &format!("its machines are powered on by their owner, and this one does not answer ({e})"),
            )
        })
    }

    async fn restart(&self, id: &str) -> Result<(), ProviderError> {
        self.machine(id)?;
        Err(Self::not_supported(
            "restart",
            "its machines are given, not managed",
        ))
    }

    async fn deallocate(&self, id: &str) -> Result<(), ProviderError> {
        self.machine(id)?;
        Err(Self::not_supported(
            "deallocate",
            "its machines are given, not managed",
        ))
    }

    async fn delete(&self, id: &str) -> Result<(), ProviderError> {
        self.machine(id)?;
        Err(Self::not_supported(
            "delete",
            "its machines are given, not made; remove it from the configuration instead",
        ))
    }

    async fn status(&self, id: &str) -> Result<MachineStatus, ProviderError> {
        let Some(machine) = self.machines.get(id) else {
            return Ok(MachineStatus::Missing);
        };
        Ok(match self.ping(machine).await {
            Ok(()) => MachineStatus::Running,
            Err(ProviderError::Unreachable { reason, .. }) => {
                MachineStatus::Unknown(format!("unreachable: {reason}"))
            }
            Err(other) => return Err(other),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> StaticConfig {
        crate::provider::ProviderConfig::parse(
            r#"
            kind = "static"
            ping_timeout_ms = 300
            [[machines]]
            name = "gone"
            docker_endpoint = "tcp://127.0.0.1:1"
            address = "127.0.0.1"
            zone = "z1"
            labels = { disk = "ssd" }
            "#,
        )
        .map(|c| match c {
            crate::provider::ProviderConfig::Static(c) => c,
            other => panic!("not static: {other:?}"),
        })
        .unwrap()
    }

    #[test]
    fn duplicate_names_are_refused() {
        let mut config = config();
        config.machines.push(config.machines[0].clone());
        let err = StaticProvider::new(&config).unwrap_err();
        assert!(err.to_string().contains("given twice"), "{err}");
    }

    #[test]
    fn node_spec_merges_request_labels() {
        let config = config();
        let request = MachineRequest {
            name: "gone".into(),
            labels: [("role".to_string(), "db".to_string())].into(),
            ..MachineRequest::default()
        };
        let spec = config.machines[0].node_spec(Some(&request));
        assert_eq!(spec.provider, "static");
        assert_eq!(spec.zone.as_deref(), Some("z1"));
        assert_eq!(spec.labels.len(), 2);
    }

    #[tokio::test]
    async fn unreachable_and_unknown_machines() {
        let provider = StaticProvider::new(&config()).unwrap();
        let request = MachineRequest {
            name: "gone".into(),
            ..MachineRequest::default()
        };
        let err = provider.provision(&request).await.unwrap_err();
        assert!(matches!(err, ProviderError::Unreachable { .. }), "{err}");
        assert!(matches!(
            provider.status("gone").await.unwrap(),
            MachineStatus::Unknown(_)
        ));
        assert_eq!(
            provider.status("other").await.unwrap(),
            MachineStatus::Missing
        );
        let err = provider
            .provision(&MachineRequest {
                name: "other".into(),
                ..MachineRequest::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err, ProviderError::UnknownMachine("other".into()));
        let err = provider.deallocate("gone").await.unwrap_err();
        assert!(err
            .to_string()
            .contains("not supported by the static provider"));
    }
}
