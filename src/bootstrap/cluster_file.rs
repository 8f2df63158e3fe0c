//! The cluster file `raftvisor bootstrap` reads, and everything derived from
//! it without I/O: each manager's agent config, its container, the files
//! it needs and the nodes to register. The runner ([`super::run`]) compares
//! this desired state with what exists and changes only the difference.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::runtime::ContainerSpec;
pub use crate::state::manager_template::{Machine, ManagerPlacement, NodePlacement, Replacement};
use crate::state::{DockerTls, ManagerTemplate, NodeSpec};

/// Label on every manager container: the cluster it belongs to.
pub const MANAGER_CLUSTER_LABEL: &str = "raftvisor.manager.cluster";
/// Label on every manager container: its Raft id.
pub const MANAGER_ID_LABEL: &str = "raftvisor.manager.id";

/// Where a manager container finds its files.
const IN_CONTAINER: &str = "/etc/raftvisor";
const DATA_IN_CONTAINER: &str = "/var/lib/raftvisor";

/// A cluster file (see `cluster-config/docker-3.toml`): the manager
/// template it describes, with relative paths resolved against the file's
/// directory. What the cluster records of it is the template itself
/// ([`crate::state::ManagerTemplate`]); this type adds what bootstrap and
/// manager replacement derive from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClusterFile(ManagerTemplate);

impl From<ManagerTemplate> for ClusterFile {
    fn from(template: ManagerTemplate) -> ClusterFile {
        ClusterFile(template)
    }
}

impl std::ops::Deref for ClusterFile {
    type Target = ManagerTemplate;

    fn deref(&self) -> &ManagerTemplate {
        &self.0
    }
}

impl std::ops::DerefMut for ClusterFile {
    fn deref_mut(&mut self) -> &mut ManagerTemplate {
        &mut self.0
    }
}

/// Why a cluster file cannot be used; each is one line naming the file
/// (or, for a file that parses, what is wrong in it).
#[derive(Debug, thiserror::Error)]
pub enum ClusterFileError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: crate::config::TomlError,
    },
    #[error("{0}")]
    Invalid(#[from] crate::state::validate::Invalid),
}

impl ClusterFile {
    /// Reads and checks `path`; relative `state_dir` is resolved against
    /// the file's directory. The error is one line.
    pub fn load(path: &Path) -> Result<ClusterFile, ClusterFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClusterFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut file: ClusterFile =
            crate::config::parse_toml(&text).map_err(|source| ClusterFileError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
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

    /// The template the cluster records.
    pub fn template(&self) -> &ManagerTemplate {
        &self.0
    }

    /// A placement's machine. Every cluster file holds a validated
    /// template (read by [`ClusterFile::load`], or from the state, which
    /// refuses templates that do not validate), where each placement names
    /// a machine of the template.
    pub fn machine(&self, name: &str) -> &Machine {
        self.machines
            .iter()
            .find(|m| m.name == name)
            .expect("validated: every placement names a known machine")
    }

    /// The managers' certificates, the CA certificate and the manager
    /// issuer (see [`crate::tls::certs::init_issuer`]); the managers mount it.
    pub fn certs_dir(&self) -> PathBuf {
        self.state_dir.join("certs")
    }

    /// Where the cluster CA's key lives: beside `state_dir`, not in it, so
    /// no manager container mounts it (`<state_dir>-ca`).
    pub fn ca_dir(&self) -> PathBuf {
        let mut name = self
            .state_dir
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "state".into());
        name.push("-ca");
        self.state_dir.with_file_name(name)
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
            // files there, its certificate signed by the manager issuer's
            // key in `certs` (the CA's key is not there: see `ca_dir`).
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

    #[test]
    fn a_cluster_file_that_cannot_be_used_says_why_in_one_line_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.toml");
        let error = ClusterFile::load(&missing).unwrap_err();
        assert!(matches!(error, ClusterFileError::Read { .. }));
        assert!(
            error
                .to_string()
                .starts_with(&format!("cannot read {}: ", missing.display())),
            "{error}"
        );
        let garbled = dir.path().join("garbled.toml");
        std::fs::write(&garbled, "cluster = [").unwrap();
        let error = ClusterFile::load(&garbled).unwrap_err();
        assert!(matches!(error, ClusterFileError::Parse { .. }));
        assert!(
            error
                .to_string()
                .starts_with(&format!("{}: ", garbled.display())),
            "{error}"
        );
        assert_eq!(error.to_string().lines().count(), 1, "{error}");
    }

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
        assert_eq!(parsed.api_addr.to_string(), "127.0.0.1:7302");
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
