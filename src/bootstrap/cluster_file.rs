//! The cluster file `raftvisor bootstrap` reads, and everything derived from
//! it without I/O: each manager's agent config, its container, the files
//! it needs and the nodes to register. The runner ([`super::run`]) compares
//! this desired state with what exists and changes only the difference.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::runtime::ContainerSpec;
use crate::state::{DockerTls, NodeSpec};

/// Label on every manager container: the cluster it belongs to.
pub const MANAGER_CLUSTER_LABEL: &str = "raftvisor.manager.cluster";
/// Label on every manager container: its Raft id.
pub const MANAGER_ID_LABEL: &str = "raftvisor.manager.id";

/// Where a manager container finds its files.
const IN_CONTAINER: &str = "/etc/raftvisor";
const DATA_IN_CONTAINER: &str = "/var/lib/raftvisor";

/// A cluster file (see `cluster-config/docker-3.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// Names the cluster's containers and its directory of secrets.
    pub cluster: String,
    /// CA, certificates, admin token, secrets key and the managers' data;
    /// relative paths are taken from the cluster file's directory.
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
}

/// Manager `dead` is being replaced by manager `new`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replacement {
    pub dead: u64,
    pub new: u64,
}

fn default_image() -> String {
    "raftvisor:local".into()
}

/// A machine with a Docker Engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    pub name: String,
    /// `static` (given: `docker_endpoint` and `address` are required) or a
    /// provider that makes machines (`azure`: `provider_file` names its
    /// settings, e.g. `cluster-config/azure.example.toml`).
    #[serde(default = "default_provider")]
    pub provider: String,
    /// The machine's engine; for a provisioned machine, what provisioning
    /// reported (recorded in the plan).
    #[serde(default)]
    pub docker_endpoint: String,
    #[serde(default)]
    pub docker_tls: Option<DockerTls>,
    /// The address managers and clients reach the machine's ports at.
    #[serde(default)]
    pub address: String,
    /// The provider's settings, for machines it makes; relative paths are
    /// taken from the cluster file's directory.
    #[serde(default)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagerPlacement {
    pub id: u64,
    pub machine: String,
    pub api_port: u16,
    pub peer_port: u16,
    pub dns_port: u16,
}

/// A workload node to register, on one of the machines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodePlacement {
    pub name: String,
    pub machine: String,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub zone: Option<String>,
}

impl ClusterFile {
    /// Reads and checks `path`; relative `state_dir` is resolved against
    /// the file's directory. The error is one line.
    pub fn load(path: &Path) -> Result<ClusterFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut file: ClusterFile =
            crate::config::parse_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
        if file.state_dir.is_relative() {
            file.state_dir = base.join(&file.state_dir);
        }
        for machine in &mut file.machines {
            if let Some(provider_file) = machine.provider_file.as_mut().filter(|f| f.is_relative())
            {
                *provider_file = base.join(&*provider_file);
            }
        }
        file.validate()?;
        Ok(file)
    }

    /// Checks what can be checked without touching anything.
    pub fn validate(&self) -> Result<(), String> {
        crate::state::validate::dns_label("cluster", &self.cluster)?;
        if self.managers.is_empty() {
            return Err("at least one manager is needed (three tolerate one loss)".into());
        }
        let mut machines = BTreeSet::new();
        for machine in &self.machines {
            crate::state::validate::dns_label("machine name", &machine.name)?;
            if !machines.insert(machine.name.as_str()) {
                return Err(format!("machine {:?} is listed twice", machine.name));
            }
            match (machine.is_provisioned(), &machine.provider_file) {
                (false, _) if machine.docker_endpoint.is_empty() || machine.address.is_empty() => {
                    return Err(format!(
                        "machine {:?}: a static machine needs docker_endpoint and address",
                        machine.name
                    ))
                }
                (true, None) => {
                    return Err(format!(
                        "machine {:?}: provider {:?} needs provider_file (its settings)",
                        machine.name, machine.provider
                    ))
                }
                _ => {}
            }
        }
        let mut ids = BTreeSet::new();
        let mut ports = BTreeSet::new();
        for manager in &self.managers {
            if manager.id == 0 || !ids.insert(manager.id) {
                return Err(format!(
                    "manager id {} must be positive and unique",
                    manager.id
                ));
            }
            if !machines.contains(manager.machine.as_str()) {
                return Err(format!(
                    "manager {} is on unknown machine {:?}",
                    manager.id, manager.machine
                ));
            }
            for port in [manager.api_port, manager.peer_port, manager.dns_port] {
                if port == 0 || !ports.insert((manager.machine.as_str(), port)) {
                    return Err(format!(
                        "manager {}: port {port} is zero or used twice on {}",
                        manager.id, manager.machine
                    ));
                }
            }
        }
        let mut nodes = BTreeSet::new();
        for node in &self.nodes {
            crate::state::validate::dns_label("node name", &node.name)?;
            if !nodes.insert(node.name.as_str()) {
                return Err(format!("node {:?} is listed twice", node.name));
            }
            if !machines.contains(node.machine.as_str()) {
                return Err(format!(
                    "node {:?} is on unknown machine {:?}",
                    node.name, node.machine
                ));
            }
        }
        Ok(())
    }

    pub fn machine(&self, name: &str) -> &Machine {
        self.machines
            .iter()
            .find(|m| m.name == name)
            .expect("validated: every placement names a known machine")
    }

    pub fn certs_dir(&self) -> PathBuf {
        self.state_dir.join("certs")
    }

    /// The cluster's record of its managers, kept beside the secrets by
    /// bootstrap and by manager replacement.
    pub fn plan_file(&self) -> PathBuf {
        self.state_dir.join("plan.json")
    }

    /// Takes the managers (and replacement history) from the recorded
    /// plan, if any: after a replacement the cluster's record, not the
    /// file, says which managers exist.
    pub fn merge_recorded(&mut self, recorded: &ClusterFile) {
        for machine in self.machines.iter_mut().filter(|m| m.is_provisioned()) {
            if let Some(known) = recorded.machines.iter().find(|r| r.name == machine.name) {
                machine.docker_endpoint = known.docker_endpoint.clone();
                machine.address = known.address.clone();
                machine.docker_tls = known.docker_tls.clone();
            }
        }
        self.managers = recorded.managers.clone();
        self.retired = recorded.retired.clone();
        self.replacing = recorded.replacing;
    }

    /// Writes the plan file (best effort for callers that can go on).
    pub fn save_plan_file(&self) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        let temp = self.plan_file().with_extension("json.tmp");
        crate::file_modes::write(&temp, json)?;
        std::fs::rename(temp, self.plan_file())
    }

    pub fn token_file(&self) -> PathBuf {
        self.state_dir.join("bootstrap.token")
    }

    pub fn secrets_key_file(&self) -> PathBuf {
        self.state_dir.join("secrets.key")
    }

    pub fn manager_dir(&self, id: u64) -> PathBuf {
        self.state_dir
            .join("managers")
            .join(format!("replica-{id}"))
    }

    /// `address:port` of a manager's API.
    pub fn api_addr(&self, manager: &ManagerPlacement) -> String {
        format!(
            "{}:{}",
            self.machine(&manager.machine).address,
            manager.api_port
        )
    }

    fn peer_addr(&self, manager: &ManagerPlacement) -> String {
        format!(
            "{}:{}",
            self.machine(&manager.machine).address,
            manager.peer_port
        )
    }

    /// The names a manager's certificate must carry.
    pub fn manager_sans(&self, manager: &ManagerPlacement) -> Vec<String> {
        let mut sans = vec![self.machine(&manager.machine).address.clone()];
        for extra in ["127.0.0.1", "localhost"] {
            if !sans.iter().any(|s| s == extra) {
                sans.push(extra.to_string());
            }
        }
        sans
    }

    /// The agent config of `manager`, with paths as the container sees them.
    /// A `joining` manager lists no members: it waits to be added.
    pub fn agent_config(&self, manager: &ManagerPlacement, joining: bool) -> String {
        let address = &self.machine(&manager.machine).address;
        let mut text = format!(
            "# Written by `raftvisor bootstrap` for cluster {cluster}; changes are overwritten.\n\
             id = {id}\n\
             data_dir = \"{DATA_IN_CONTAINER}/data\"\n\
             api_addr = \"{address}:{api}\"\n\
             peer_addr = \"{address}:{peer}\"\n\
             dns_addr = \"{address}:{dns}\"\n",
            cluster = self.cluster,
            id = manager.id,
            api = manager.api_port,
            peer = manager.peer_port,
            dns = manager.dns_port,
        );
        for member in self.managers.iter().filter(|_| !joining) {
            text.push_str(&format!(
                "\n[[members]]\nid = {}\napi_addr = \"{}\"\npeer_addr = \"{}\"\n",
                member.id,
                self.api_addr(member),
                self.peer_addr(member)
            ));
        }
        text.push_str(&format!(
            "\n[tls]\nca_cert = \"{IN_CONTAINER}/ca.pem\"\ncert = \"{IN_CONTAINER}/manager.pem\"\nkey = \"{IN_CONTAINER}/manager-key.pem\"\n\
             \n[auth]\nbootstrap_token_file = \"{IN_CONTAINER}/bootstrap.token\"\n\
             \n[secrets]\nkey_file = \"{IN_CONTAINER}/secrets.key\"\n"
        ));
        // TLS files of the nodes' engines live in the shared state
        // directory, which every manager container mounts at its own path.
        text.push_str(&format!(
            "\n[supervisor]\ndocker_tls_dir = {:?}\n",
            self.docker_tls_dir().display().to_string()
        ));
        if let Some(ms) = self.replace_after_ms {
            text.push_str(&format!("replace_after_ms = {ms}\n"));
        }
        text
    }

    pub fn container_name(&self, id: u64) -> String {
        format!("rv-manager-{}-{id}", self.cluster)
    }

    /// The container of `manager`: the machine's network, Docker's
    /// `unless-stopped` as local first aid, its files bind-mounted.
    pub fn manager_container(&self, manager: &ManagerPlacement) -> ContainerSpec {
        let dir = self.manager_dir(manager.id);
        let certs = self.certs_dir();
        let name = format!("replica-{}", manager.id);
        let file = |path: PathBuf, target: &str| {
            (
                path.display().to_string(),
                format!("{IN_CONTAINER}/{target}:ro"),
            )
        };
        let mut volumes = vec![
            (dir.display().to_string(), DATA_IN_CONTAINER.to_string()),
            // At its own path: a leader writes a replacement manager's
            // files there (this includes the CA key it signs with).
            (
                self.state_dir.display().to_string(),
                self.state_dir.display().to_string(),
            ),
            file(dir.join("config.toml"), "config.toml"),
            file(certs.join("ca.pem"), "ca.pem"),
            file(certs.join(format!("{name}.pem")), "manager.pem"),
            file(certs.join(format!("{name}-key.pem")), "manager-key.pem"),
            file(self.token_file(), "bootstrap.token"),
            file(self.secrets_key_file(), "secrets.key"),
        ];
        let endpoint = &self.machine(&manager.machine).docker_endpoint;
        if let Some(socket) = endpoint.strip_prefix("unix://") {
            // The supervisor drives this machine's engine from inside.
            volumes.push((socket.to_string(), socket.to_string()));
        }
        ContainerSpec {
            name: self.container_name(manager.id),
            image: self.image.clone(),
            command: vec![
                "agent".into(),
                "--config".into(),
                format!("{IN_CONTAINER}/config.toml"),
            ],
            env: [(
                "RAFTVISOR_LOG".to_string(),
                "info,openraft=warn,hickory_server=warn".to_string(),
            )]
            .into(),
            labels: [
                (MANAGER_CLUSTER_LABEL.to_string(), self.cluster.clone()),
                (MANAGER_ID_LABEL.to_string(), manager.id.to_string()),
            ]
            .into(),
            volumes,
            network: Some("host".into()),
            restart_unless_stopped: true,
            ..ContainerSpec::default()
        }
    }

    /// Where the managers find the TLS files of the nodes' engines (their
    /// `[supervisor] docker_tls_dir`): copies bootstrap makes of each
    /// machine's `docker_tls`, see [`ClusterFile::staged_docker_tls`].
    pub fn docker_tls_dir(&self) -> PathBuf {
        self.state_dir.join("docker-tls")
    }

    /// The `docker_tls` of `machine` as staged under
    /// [`ClusterFile::docker_tls_dir`]: `(source, staged)` paths of its CA,
    /// certificate and key.
    pub fn staged_docker_tls(&self, machine: &Machine) -> Option<(DockerTls, DockerTls)> {
        let tls = machine.docker_tls.clone()?;
        let staged = |what: &str| {
            self.docker_tls_dir()
                .join(format!("{}-{what}.pem", machine.name))
                .display()
                .to_string()
        };
        let copy = DockerTls {
            ca_cert: staged("ca"),
            cert: staged("cert"),
            key: staged("key"),
        };
        Some((tls, copy))
    }

    /// The spec a workload node is registered with.
    pub fn node_spec(&self, node: &NodePlacement) -> NodeSpec {
        let machine = self.machine(&node.machine);
        NodeSpec {
            provider: machine.provider.clone(),
            docker_endpoint: machine.docker_endpoint.clone(),
            address: Some(machine.address.clone()),
            region: node.region.clone(),
            zone: node.zone.clone(),
            labels: Default::default(),
            capacity: Default::default(),
            docker_tls: self.staged_docker_tls(machine).map(|(_, staged)| staged),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> ClusterFile {
        toml::from_str(
            r#"
            cluster = "demo"
            state_dir = "/srv/rv"
            [[machines]]
            name = "local"
            docker_endpoint = "unix:///var/run/docker.sock"
            address = "127.0.0.1"
            [[managers]]
            id = 1
            machine = "local"
            api_port = 7301
            peer_port = 7311
            dns_port = 7321
            [[managers]]
            id = 2
            machine = "local"
            api_port = 7302
            peer_port = 7312
            dns_port = 7322
            [[nodes]]
            name = "local"
            machine = "local"
            zone = "a"
            "#,
        )
        .unwrap()
    }

    #[test]
    fn a_manager_gets_a_config_listing_every_member_and_its_files() {
        let file = file();
        file.validate().unwrap();
        let config = file.agent_config(&file.managers[1], false);
        let parsed = crate::config::AgentConfig::parse(&config).unwrap();
        assert_eq!(parsed.id, 2);
        assert_eq!(parsed.api_addr, "127.0.0.1:7302");
        assert_eq!(parsed.members.len(), 2);
        assert!(parsed.tls.files().is_some());
        parsed.validate().unwrap();
        let container = file.manager_container(&file.managers[1]);
        assert_eq!(container.name, "rv-manager-demo-2");
        assert_eq!(container.network.as_deref(), Some("host"));
        assert!(container.restart_unless_stopped);
        assert!(container.volumes.iter().any(
            |(s, t)| s == "/srv/rv/certs/replica-2.pem" && t == "/etc/raftvisor/manager.pem:ro"
        ));
        let joiner =
            crate::config::AgentConfig::parse(&file.agent_config(&file.managers[1], true)).unwrap();
        assert!(joiner.members.is_empty());
        assert_eq!(file.node_spec(&file.nodes[0]).zone.as_deref(), Some("a"));
    }

    #[test]
    fn bad_files_are_one_line_errors() {
        let mut twice = file();
        twice.managers[1].id = 1;
        assert!(twice.validate().unwrap_err().contains("unique"));
        let mut port = file();
        port.managers[1].api_port = 7301;
        assert!(port.validate().unwrap_err().contains("used twice"));
        let mut machine = file();
        machine.nodes[0].machine = "nowhere".into();
        assert!(machine.validate().unwrap_err().contains("unknown machine"));
    }
}
