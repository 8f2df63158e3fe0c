//! The manager template: where the cluster's managers run and how to start
//! more — the machines, each manager's placement, the replacement history —
//! as `raftvisor bootstrap` recorded it and manager replacement keeps it.
//!
//! A typed value checked by [`ManagerTemplate::validate`] before it enters
//! the state, so readers neither parse nor re-check it. Pure data: reading
//! the cluster file and acting on the template (containers, certificates,
//! providers) belong to `crate::bootstrap` and the manager controller.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::types::DockerTls;
use super::validate::Invalid;

/// Where the managers run and how to start more (the shape of the cluster
/// file, `cluster-config/docker-3.toml`, and of `GET /v1/cluster/plan`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ManagerTemplate {
    /// Names the cluster's containers and its directory of secrets.
    pub cluster: String,
    /// CA, certificates, admin token, secrets key and the managers' data.
    #[schema(value_type = String)]
    pub state_dir: PathBuf,
    #[serde(default = "default_image")]
    pub image: String,
    pub machines: Vec<Machine>,
    pub managers: Vec<ManagerPlacement>,
    #[serde(default)]
    pub nodes: Vec<NodePlacement>,
    /// A voter unreachable this long whose container is gone or stopped is
    /// replaced by a new manager (default 30 s).
    #[serde(default)]
    pub replace_after_ms: Option<u64>,
    /// Managers replaced by the cluster; their ids are never used again.
    #[serde(default)]
    pub retired: Vec<u64>,
    /// A replacement in progress (a new leader finishes it).
    #[serde(default)]
    pub replacing: Option<Replacement>,
    /// Where a replacement's machine comes from when no machine of the
    /// plan is free (none answers that hosts no other manager).
    #[serde(default)]
    pub spares: Option<Spares>,
}

impl super::migrate::Migrate for ManagerTemplate {
    const VERSION_MARKER: &'static [u8] = b"MT02";
    type Previous = v1::ManagerTemplate;

    /// There were no spare machines.
    fn migrate(previous: v1::ManagerTemplate) -> ManagerTemplate {
        let v1::ManagerTemplate {
            cluster,
            state_dir,
            image,
            machines,
            managers,
            nodes,
            replace_after_ms,
            retired,
            replacing,
        } = previous;
        ManagerTemplate {
            cluster,
            state_dir,
            image,
            machines,
            managers,
            nodes,
            replace_after_ms,
            retired,
            replacing,
            spares: None,
        }
    }
}

/// Where new manager machines come from: a machine provider's settings
/// (`static`: spare Docker hosts listed there; `azure`: new VMs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Spares {
    /// `static` or `azure`, as the settings file says.
    pub provider: String,
    /// The provider's settings (e.g. `cluster-config/azure.example.toml`).
    #[schema(value_type = String)]
    pub provider_file: PathBuf,
    /// How long a new machine's engine may take to answer before the
    /// machine is deleted and the replacement retried (default 300000).
    #[serde(default)]
    pub engine_wait_ms: Option<u64>,
}

/// Frozen: the template as recorded before spare machines.
pub mod v1 {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ManagerTemplate {
        pub cluster: String,
        pub state_dir: PathBuf,
        #[serde(default = "default_image")]
        pub image: String,
        pub machines: Vec<Machine>,
        pub managers: Vec<ManagerPlacement>,
        #[serde(default)]
        pub nodes: Vec<NodePlacement>,
        #[serde(default)]
        pub replace_after_ms: Option<u64>,
        #[serde(default)]
        pub retired: Vec<u64>,
        #[serde(default)]
        pub replacing: Option<Replacement>,
    }

    impl crate::state::migrate::FirstVersion for ManagerTemplate {
        const VERSION_MARKER: &'static [u8] = b"MT01";
    }
}

/// Manager `dead` is being replaced by manager `new`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Replacement {
    pub dead: u64,
    pub new: u64,
}

fn default_image() -> String {
    "raftvisor:local".into()
}

/// A machine with a Docker Engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    pub name: String,
    /// `static` (given: `docker_endpoint` and `address` are required) or a
    /// provider that makes machines (`azure`: `provider_file` names its
    /// settings, e.g. `cluster-config/azure.example.toml`).
    #[serde(default = "default_provider")]
    pub provider: String,
    /// The machine's engine; for a provisioned machine, what provisioning
    /// reported (recorded in the template).
    #[serde(default)]
    pub docker_endpoint: String,
    #[serde(default)]
    pub docker_tls: Option<DockerTls>,
    /// The address managers and clients reach the machine's ports at.
    #[serde(default)]
    pub address: String,
    /// The provider's settings, for machines it makes.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub provider_file: Option<PathBuf>,
}

impl Machine {
    /// Whether bootstrap makes this machine through a provider.
    pub fn is_provisioned(&self) -> bool {
        self.provider != "static"
    }
}

fn default_provider() -> String {
    "static".into()
}

/// One manager: its Raft id (never reused), machine and ports. Managers use
/// the machine's network (`--network host`), so ports must be free there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ManagerPlacement {
    pub id: u64,
    pub machine: String,
    pub api_port: u16,
    pub peer_port: u16,
    pub dns_port: u16,
}

/// A workload node to register, on one of the machines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodePlacement {
    pub name: String,
    pub machine: String,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub zone: Option<String>,
}

impl ManagerTemplate {
    /// Checks what can be checked without touching anything: names, unique
    /// ids and ports, every placement on a known machine. The error is one
    /// line.
    pub fn validate(&self) -> Result<(), Invalid> {
        super::validate::dns_label("cluster", &self.cluster)?;
        if self.managers.is_empty() {
            return Err(Invalid::new(
                "at least one manager is needed (three tolerate one loss)",
            ));
        }
        let mut machines = BTreeSet::new();
        for machine in &self.machines {
            super::validate::dns_label("machine name", &machine.name)?;
            if !machines.insert(machine.name.as_str()) {
                return Err(Invalid::new(format!(
                    "machine {:?} is listed twice",
                    machine.name
                )));
            }
            match (machine.is_provisioned(), &machine.provider_file) {
                (false, _) if machine.docker_endpoint.is_empty() || machine.address.is_empty() => {
                    return Err(Invalid::new(format!(
                        "machine {:?}: a static machine needs docker_endpoint and address",
                        machine.name
                    )))
                }
                (true, None) => {
                    return Err(Invalid::new(format!(
                        "machine {:?}: provider {:?} needs provider_file (its settings)",
                        machine.name, machine.provider
                    )))
                }
                _ => {}
            }
        }
        let mut ids = BTreeSet::new();
        let mut ports = BTreeSet::new();
        for manager in &self.managers {
            if manager.id == 0 || !ids.insert(manager.id) {
                return Err(Invalid::new(format!(
                    "manager id {} must be positive and unique",
                    manager.id
                )));
            }
            if !machines.contains(manager.machine.as_str()) {
                return Err(Invalid::new(format!(
                    "manager {} is on unknown machine {:?}",
                    manager.id, manager.machine
                )));
            }
            for port in [manager.api_port, manager.peer_port, manager.dns_port] {
                if port == 0 || !ports.insert((manager.machine.as_str(), port)) {
                    return Err(Invalid::new(format!(
                        "manager {}: port {port} is zero or used twice on {}",
                        manager.id, manager.machine
                    )));
                }
            }
        }
        if let Some(spares) = &self.spares {
            if !matches!(spares.provider.as_str(), "static" | "azure") {
                return Err(Invalid::new(format!(
                    "spares: provider {:?} is not static or azure",
                    spares.provider
                )));
            }
        }
        let mut nodes = BTreeSet::new();
        for node in &self.nodes {
            super::validate::dns_label("node name", &node.name)?;
            if !nodes.insert(node.name.as_str()) {
                return Err(Invalid::new(format!(
                    "node {:?} is listed twice",
                    node.name
                )));
            }
            if !machines.contains(node.machine.as_str()) {
                return Err(Invalid::new(format!(
                    "node {:?} is on unknown machine {:?}",
                    node.name, node.machine
                )));
            }
        }
        Ok(())
    }

    /// Parses and checks a template recorded as JSON (how entries written
    /// before templates were typed carry it).
    pub fn from_json(json: &str) -> Result<ManagerTemplate, TemplateJsonError> {
        let template: ManagerTemplate =
            serde_json::from_str(json).map_err(TemplateJsonError::Parse)?;
        template.validate()?;
        Ok(template)
    }
}

/// Why a template recorded as JSON is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TemplateJsonError {
    #[error("the manager template does not parse: {0}")]
    Parse(#[source] serde_json::Error),
    #[error(transparent)]
    Invalid(#[from] Invalid),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_recorded_before_spares_reads_back_without_them() {
        use crate::state::migrate::Migrate;
        let old = v1::ManagerTemplate {
            cluster: "demo".into(),
            state_dir: "/srv".into(),
            image: "raftvisor:local".into(),
            machines: vec![],
            managers: vec![],
            nodes: vec![],
            replace_after_ms: Some(5_000),
            retired: vec![4],
            replacing: Some(Replacement { dead: 2, new: 5 }),
        };
        let read = ManagerTemplate::decode(&old.encode().unwrap()).unwrap();
        assert_eq!(read.retired, vec![4]);
        assert_eq!(read.replacing, Some(Replacement { dead: 2, new: 5 }));
        assert_eq!(read.spares, None);
        let again = ManagerTemplate::decode(&read.encode().unwrap()).unwrap();
        assert_eq!(again, read);
    }

    #[test]
    fn json_errors_say_whether_it_parses_or_breaks_a_rule() {
        let error = ManagerTemplate::from_json("{").unwrap_err().to_string();
        assert!(
            error.starts_with("the manager template does not parse: "),
            "{error}"
        );
        let json = r#"{"cluster": "demo", "state_dir": "/srv", "machines": [], "managers": []}"#;
        assert_eq!(
            ManagerTemplate::from_json(json).unwrap_err().to_string(),
            "at least one manager is needed (three tolerate one loss)"
        );
    }
}
