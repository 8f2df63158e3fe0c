//! The records of the replicated model: services, instances, nodes,
//! managers, KV entries and events. Plain data with serde derives, shared by
//! the state machine, the API and the CLI; no behaviour beyond defaults.
//!
//! Serde attributes are limited to what both JSON (API) and bincode (log,
//! snapshots) understand: no untagged or internally tagged enums and no
//! `skip_serializing_if`.
//!
//! The specs are persisted records with a version ([`super::migrate`]):
//! the log and snapshots write them with their version marker, JSON as
//! they are. Changing one means a new version with a migration.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Transport protocol of a service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One port a service's containers listen on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    pub name: String,
    pub container_port: u16,
    #[serde(default)]
    pub protocol: Protocol,
    /// SRV weight of this port.
    #[serde(default = "default_weight")]
    pub weight: u16,
    /// Publish on this port of the node (every address) instead of one the
    /// engine picks: a member of a clustered service can then name its own
    /// address before it starts. The slots of a service with a fixed host
    /// port run on different nodes.
    #[serde(default)]
    pub host_port: Option<u16>,
}

fn default_weight() -> u16 {
    1
}

/// Frozen: a port as specs wrote it before fixed host ports.
pub mod port_spec_v1 {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct PortSpec {
        pub name: String,
        pub container_port: u16,
        #[serde(default)]
        pub protocol: Protocol,
        #[serde(default = "default_weight")]
        pub weight: u16,
    }

    impl From<PortSpec> for super::PortSpec {
        fn from(port: PortSpec) -> super::PortSpec {
            let PortSpec {
                name,
                container_port,
                protocol,
                weight,
            } = port;
            super::PortSpec {
                name,
                container_port,
                protocol,
                weight,
                host_port: None,
            }
        }
    }
}

/// Resources reserved for each instance; zero means "not limited".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Resources {
    /// Thousandths of a CPU.
    pub cpu_millis: u32,
    pub memory_mb: u64,
}

/// How replicas are spread across the nodes that match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Spread {
    #[default]
    Node,
    Zone,
    None,
}

/// Where a service's instances may run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Placement {
    pub region: Option<String>,
    pub zone: Option<String>,
    pub node_labels: BTreeMap<String, String>,
    pub spread: Spread,
}

/// Kind of health probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    #[default]
    Http,
    Tcp,
}

/// Health check run by the leader against every running instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(default)]
    pub kind: ProbeKind,
    /// Name of the port (from `ports`) to probe.
    pub port: String,
    /// HTTP path for `http` probes.
    #[serde(default = "default_health_path")]
    pub path: String,
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_retries")]
    pub retries: u32,
}

fn default_health_path() -> String {
    "/health".into()
}
fn default_interval_ms() -> u64 {
    1000
}
fn default_timeout_ms() -> u64 {
    500
}
fn default_retries() -> u32 {
    3
}

/// Restart backoff owned by raftvisor (not the engine's restart policy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RestartPolicy {
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub reset_after_ms: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            initial_backoff_ms: 100,
            max_backoff_ms: 30_000,
            reset_after_ms: 10_000,
        }
    }
}

/// How a changed spec rolls out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct UpdateStrategy {
    pub max_parallel: u32,
    /// What a rollout whose new instances crash-loop, turn unhealthy or
    /// cannot fetch their image, or whose `test` hook fails, does.
    pub on_failure: OnFailure,
    /// Versions of the spec kept for `service history` and `service
    /// rollback` (1 to 100).
    pub history: u32,
    /// How long a new instance runs (healthy) before the rollout counts it
    /// done and replaces the next one (at most an hour).
    pub min_healthy_ms: u64,
    /// Instances of the new version a rollout starts beside the old ones
    /// before it replaces any (extra slots, removed when it is done), so
    /// the service never runs fewer than its replicas. Not with volumes or
    /// fixed host ports: those belong to a slot.
    pub max_surge: u32,
    /// A deploy replaces only this many instances (canaries, beside the
    /// old ones) and waits: `service promote` rolls the rest, `service
    /// abort` goes back to the version before. 0: no canary.
    pub canary: u32,
    /// While canaries wait, the SRV weight of each canary instance (the
    /// others keep their port's `weight`), so clients that weigh SRV
    /// records send the canaries the share this sets. 0: the port's
    /// weight, a share by instance count.
    pub canary_weight: u16,
}

impl Default for UpdateStrategy {
    fn default() -> Self {
        UpdateStrategy {
            max_parallel: 1,
            on_failure: OnFailure::Pause,
            history: super::history::DEFAULT_HISTORY,
            min_healthy_ms: 0,
            max_surge: 0,
            canary: 0,
            canary_weight: 0,
        }
    }
}

/// Frozen: the update strategy as specs wrote it before canaries had a
/// DNS weight of their own.
pub mod update_strategy_v2 {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct UpdateStrategy {
        pub max_parallel: u32,
        pub on_failure: OnFailure,
        pub history: u32,
        pub min_healthy_ms: u64,
        pub max_surge: u32,
        pub canary: u32,
    }

    impl Default for UpdateStrategy {
        fn default() -> Self {
            UpdateStrategy {
                max_parallel: 1,
                on_failure: OnFailure::Pause,
                history: crate::state::history::DEFAULT_HISTORY,
                min_healthy_ms: 0,
                max_surge: 0,
                canary: 0,
            }
        }
    }

    impl From<UpdateStrategy> for super::UpdateStrategy {
        fn from(update: UpdateStrategy) -> super::UpdateStrategy {
            let UpdateStrategy {
                max_parallel,
                on_failure,
                history,
                min_healthy_ms,
                max_surge,
                canary,
            } = update;
            super::UpdateStrategy {
                max_parallel,
                on_failure,
                history,
                min_healthy_ms,
                max_surge,
                canary,
                canary_weight: 0,
            }
        }
    }
}

/// What a failing rollout does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// Stop replacing instances: the rest keep the previous version until
    /// a user deploys again or rolls back.
    #[default]
    Pause,
    /// Go back by itself to the latest earlier version that had rolled
    /// out completely (`service history` shows it as a revert).
    Revert,
    // Variants are only ever appended: the log encodes them by position.
}

/// Frozen: the update strategy as specs wrote it before rollouts could
/// revert and kept a history.
pub mod update_strategy_v1 {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct UpdateStrategy {
        pub max_parallel: u32,
    }

    impl Default for UpdateStrategy {
        fn default() -> Self {
            UpdateStrategy { max_parallel: 1 }
        }
    }

    impl From<UpdateStrategy> for super::update_strategy_v2::UpdateStrategy {
        fn from(update: UpdateStrategy) -> super::update_strategy_v2::UpdateStrategy {
            let UpdateStrategy { max_parallel } = update;
            super::update_strategy_v2::UpdateStrategy {
                max_parallel,
                ..super::update_strategy_v2::UpdateStrategy::default()
            }
        }
    }
}

/// What a user asks for when deploying a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// `container` (default): raftvisor runs it; `external`: a third-party
    /// endpoint outside the cluster, known to DNS only.
    #[serde(default)]
    pub kind: ServiceKind,
    /// The image of a container service: any reference (`name:tag`,
    /// `host:port/name:tag`, `name@sha256:…`). A tag is resolved to a
    /// digest once per version of the spec ([`crate::state::image_catalog`]).
    #[serde(default)]
    pub image: String,
    /// When the leader fetches the image onto a node before creating a
    /// container there.
    #[serde(default)]
    pub pull: PullPolicy,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Environment variables whose values are secret: sealed before they
    /// enter the log, shown as `<redacted>`, unsealed only for the engine.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    pub secret_env: crate::secrets::SecretEnv,
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub placement: Placement,
    #[serde(default)]
    pub health: Option<HealthCheck>,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default)]
    pub update: UpdateStrategy,
    /// External services: the IP addresses DNS answers with.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// External services: a host name DNS answers with (as a CNAME).
    #[serde(default)]
    pub hostname: Option<String>,
    /// Named volumes, one set per slot: a slot's next instance (restarted,
    /// replaced or moved) mounts the same volumes.
    #[serde(default)]
    pub volumes: Vec<VolumeSpec>,
    /// What a slot with `local` volumes does when its node is lost.
    #[serde(default)]
    pub on_node_loss: OnNodeLoss,
    /// Commands run at points of an instance's life, and on request.
    #[serde(default)]
    pub hooks: Hooks,
}

/// A service's lifecycle hooks (each optional).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    /// Run once per new container: inside it once it started (`instance`),
    /// or before it is created, in a one-shot container with the slot's
    /// volumes (`oneshot`). A failure counts as the container's exit.
    #[serde(default)]
    pub start: Option<Hook>,
    /// Run before a container is stopped or removed (`instance`), or after
    /// it is gone, with the slot's volumes (`oneshot`).
    #[serde(default)]
    pub stop: Option<Hook>,
    /// `service backup`: run per slot; what it writes to stdout is the
    /// slot's part of the backup.
    #[serde(default)]
    pub backup: Option<Hook>,
    /// `service restore --from ID`: run per slot with that slot's part of
    /// the backup on stdin.
    #[serde(default)]
    pub restore: Option<Hook>,
    /// Run once per version of the spec, against its first running
    /// instance; the rollout goes on only once it exits 0.
    #[serde(default)]
    pub test: Option<Hook>,
}

/// One hook: a command and where it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Hook {
    /// The program and its arguments (no shell unless you name one).
    pub command: Vec<String>,
    #[serde(default)]
    pub run: HookRun,
    /// Longest run; a hook still running then is killed and failed.
    #[serde(default = "default_hook_timeout")]
    pub timeout_secs: u32,
}

fn default_hook_timeout() -> u32 {
    60
}

/// Where a hook's command runs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum HookRun {
    /// Inside the slot's running container (an exec).
    #[default]
    Instance,
    /// In a one-shot container of the service's image, env and the slot's
    /// volumes, on the slot's node, removed afterwards.
    Oneshot,
}

/// The hooks by name, for events and errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookKind {
    Start,
    Stop,
    Backup,
    Restore,
    Test,
}

impl HookKind {
    pub fn name(self) -> &'static str {
        match self {
            HookKind::Start => "start",
            HookKind::Stop => "stop",
            HookKind::Backup => "backup",
            HookKind::Restore => "restore",
            HookKind::Test => "test",
        }
    }
}

impl Hooks {
    /// The hook of `kind`, if the spec has one.
    pub fn get(&self, kind: HookKind) -> Option<&Hook> {
        match kind {
            HookKind::Start => self.start.as_ref(),
            HookKind::Stop => self.stop.as_ref(),
            HookKind::Backup => self.backup.as_ref(),
            HookKind::Restore => self.restore.as_ref(),
            HookKind::Test => self.test.as_ref(),
        }
    }

    /// Every hook the spec has, with its kind.
    pub fn all(&self) -> impl Iterator<Item = (HookKind, &Hook)> {
        [
            HookKind::Start,
            HookKind::Stop,
            HookKind::Backup,
            HookKind::Restore,
            HookKind::Test,
        ]
        .into_iter()
        .filter_map(|kind| self.get(kind).map(|hook| (kind, hook)))
    }
}

/// One named volume of a service: each slot gets its own
/// (`rv-<cluster>-<namespace>.<service>.<slot>-<name>`), mounted at `mount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    /// A DNS label, unique within the service.
    pub name: String,
    /// The absolute path inside the container.
    pub mount: String,
    /// The Docker volume driver: `local` (the default) keeps the data on
    /// one node; any other driver is taken to reach shared storage from
    /// every node.
    #[serde(default = "default_volume_driver")]
    pub driver: String,
    /// The driver's options (e.g. the `local` driver's `type`, `o`,
    /// `device` naming an NFS export, which makes it shared).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

fn default_volume_driver() -> String {
    "local".to_string()
}

impl VolumeSpec {
    /// Whether the volume's data lives on one node only: the `local`
    /// driver without options that mount network storage.
    pub fn is_node_local(&self) -> bool {
        let network_mount = self
            .options
            .get("type")
            .is_some_and(|t| matches!(t.as_str(), "nfs" | "nfs4" | "cifs" | "ceph" | "glusterfs"));
        self.driver == "local" && !network_mount
    }
}

/// What a slot whose volumes are local to its node does when that node is
/// down, draining or retired.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum OnNodeLoss {
    /// Stay with the data: the slot waits for its node to be ready again.
    #[default]
    Wait,
    /// Start again elsewhere with empty volumes.
    MoveEmpty,
}

impl ServiceSpec {
    /// Whether a slot of this service stays on its node: it has a volume
    /// whose data lives there and is told to wait for it.
    pub fn waits_for_its_node(&self) -> bool {
        self.on_node_loss == OnNodeLoss::Wait && self.volumes.iter().any(VolumeSpec::is_node_local)
    }

    /// Whether a slot publishes a port of its node that no other container
    /// there may hold (a fixed host port).
    pub fn holds_host_ports(&self) -> bool {
        self.ports.iter().any(|port| port.host_port.is_some())
    }
}

impl super::migrate::Migrate for ServiceSpec {
    const VERSION_MARKER: &'static [u8] = b"SS06";
    type Previous = service_spec_v5::ServiceSpec;

    /// Specs written before canaries had a DNS weight keep the port's.
    fn migrate(previous: service_spec_v5::ServiceSpec) -> ServiceSpec {
        let service_spec_v5::ServiceSpec {
            kind,
            image,
            pull,
            command,
            env,
            secret_env,
            ports,
            replicas,
            resources,
            placement,
            health,
            restart,
            update,
            addresses,
            hostname,
            volumes,
            on_node_loss,
            hooks,
        } = previous;
        ServiceSpec {
            kind,
            image,
            pull,
            command,
            env,
            secret_env,
            ports,
            replicas,
            resources,
            placement,
            health,
            restart,
            update: update.into(),
            addresses,
            hostname,
            volumes,
            on_node_loss,
            hooks,
        }
    }
}

/// Frozen: the service spec as written before canaries had a DNS weight.
pub mod service_spec_v5 {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ServiceSpec {
        #[serde(default)]
        pub kind: ServiceKind,
        #[serde(default)]
        pub image: String,
        #[serde(default)]
        pub pull: PullPolicy,
        #[serde(default)]
        pub command: Vec<String>,
        #[serde(default)]
        pub env: BTreeMap<String, String>,
        #[serde(default)]
        pub secret_env: crate::secrets::SecretEnv,
        #[serde(default)]
        pub ports: Vec<PortSpec>,
        #[serde(default = "default_replicas")]
        pub replicas: u32,
        #[serde(default)]
        pub resources: Resources,
        #[serde(default)]
        pub placement: Placement,
        #[serde(default)]
        pub health: Option<HealthCheck>,
        #[serde(default)]
        pub restart: RestartPolicy,
        #[serde(default)]
        pub update: update_strategy_v2::UpdateStrategy,
        #[serde(default)]
        pub addresses: Vec<String>,
        #[serde(default)]
        pub hostname: Option<String>,
        #[serde(default)]
        pub volumes: Vec<VolumeSpec>,
        #[serde(default)]
        pub on_node_loss: OnNodeLoss,
        #[serde(default)]
        pub hooks: Hooks,
    }

    impl crate::state::migrate::Migrate for ServiceSpec {
        const VERSION_MARKER: &'static [u8] = b"SS05";
        type Previous = super::service_spec_v4::ServiceSpec;

        /// Specs written before rollouts could revert keep pausing, with the
        /// default history.
        fn migrate(previous: super::service_spec_v4::ServiceSpec) -> ServiceSpec {
            let super::service_spec_v4::ServiceSpec {
                kind,
                image,
                pull,
                command,
                env,
                secret_env,
                ports,
                replicas,
                resources,
                placement,
                health,
                restart,
                update,
                addresses,
                hostname,
                volumes,
                on_node_loss,
                hooks,
            } = previous;
            ServiceSpec {
                kind,
                image,
                pull,
                command,
                env,
                secret_env,
                ports,
                replicas,
                resources,
                placement,
                health,
                restart,
                update: update.into(),
                addresses,
                hostname,
                volumes,
                on_node_loss,
                hooks,
            }
        }
    }
}

/// Frozen: the service spec as written before rollouts could revert.
pub mod service_spec_v4 {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ServiceSpec {
        #[serde(default)]
        pub kind: ServiceKind,
        #[serde(default)]
        pub image: String,
        #[serde(default)]
        pub pull: PullPolicy,
        #[serde(default)]
        pub command: Vec<String>,
        #[serde(default)]
        pub env: BTreeMap<String, String>,
        #[serde(default)]
        pub secret_env: crate::secrets::SecretEnv,
        #[serde(default)]
        pub ports: Vec<PortSpec>,
        #[serde(default = "default_replicas")]
        pub replicas: u32,
        #[serde(default)]
        pub resources: Resources,
        #[serde(default)]
        pub placement: Placement,
        #[serde(default)]
        pub health: Option<HealthCheck>,
        #[serde(default)]
        pub restart: RestartPolicy,
        #[serde(default)]
        pub update: update_strategy_v1::UpdateStrategy,
        #[serde(default)]
        pub addresses: Vec<String>,
        #[serde(default)]
        pub hostname: Option<String>,
        #[serde(default)]
        pub volumes: Vec<VolumeSpec>,
        #[serde(default)]
        pub on_node_loss: OnNodeLoss,
        #[serde(default)]
        pub hooks: Hooks,
    }

    impl crate::state::migrate::Migrate for ServiceSpec {
        const VERSION_MARKER: &'static [u8] = b"SS04";
        type Previous = super::service_spec_v3::ServiceSpec;

        /// Specs written before hooks had none.
        fn migrate(previous: super::service_spec_v3::ServiceSpec) -> ServiceSpec {
            let super::service_spec_v3::ServiceSpec {
                kind,
                image,
                pull,
                command,
                env,
                secret_env,
                ports,
                replicas,
                resources,
                placement,
                health,
                restart,
                update,
                addresses,
                hostname,
                volumes,
                on_node_loss,
            } = previous;
            ServiceSpec {
                kind,
                image,
                pull,
                command,
                env,
                secret_env,
                ports: ports.into_iter().map(Into::into).collect(),
                replicas,
                resources,
                placement,
                health,
                restart,
                update,
                addresses,
                hostname,
                volumes,
                on_node_loss,
                hooks: Hooks::default(),
            }
        }
    }
}

/// Frozen: the service spec as written before it had hooks.
pub mod service_spec_v3 {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ServiceSpec {
        #[serde(default)]
        pub kind: ServiceKind,
        #[serde(default)]
        pub image: String,
        #[serde(default)]
        pub pull: PullPolicy,
        #[serde(default)]
        pub command: Vec<String>,
        #[serde(default)]
        pub env: BTreeMap<String, String>,
        #[serde(default)]
        pub secret_env: crate::secrets::SecretEnv,
        #[serde(default)]
        pub ports: Vec<port_spec_v1::PortSpec>,
        #[serde(default = "default_replicas")]
        pub replicas: u32,
        #[serde(default)]
        pub resources: Resources,
        #[serde(default)]
        pub placement: Placement,
        #[serde(default)]
        pub health: Option<HealthCheck>,
        #[serde(default)]
        pub restart: RestartPolicy,
        #[serde(default)]
        pub update: update_strategy_v1::UpdateStrategy,
        #[serde(default)]
        pub addresses: Vec<String>,
        #[serde(default)]
        pub hostname: Option<String>,
        #[serde(default)]
        pub volumes: Vec<VolumeSpec>,
        #[serde(default)]
        pub on_node_loss: OnNodeLoss,
    }

    impl crate::state::migrate::Migrate for ServiceSpec {
        const VERSION_MARKER: &'static [u8] = b"SS03";
        type Previous = super::service_spec_v2::ServiceSpec;

        /// Specs written before volumes had none.
        fn migrate(previous: super::service_spec_v2::ServiceSpec) -> ServiceSpec {
            let super::service_spec_v2::ServiceSpec {
                kind,
                image,
                pull,
                command,
                env,
                secret_env,
                ports,
                replicas,
                resources,
                placement,
                health,
                restart,
                update,
                addresses,
                hostname,
            } = previous;
            ServiceSpec {
                kind,
                image,
                pull,
                command,
                env,
                secret_env,
                ports,
                replicas,
                resources,
                placement,
                health,
                restart,
                update,
                addresses,
                hostname,
                volumes: Vec::new(),
                on_node_loss: OnNodeLoss::default(),
            }
        }
    }
}

/// Frozen: the service spec as written before it had volumes.
pub mod service_spec_v2 {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ServiceSpec {
        #[serde(default)]
        pub kind: ServiceKind,
        #[serde(default)]
        pub image: String,
        #[serde(default)]
        pub pull: PullPolicy,
        #[serde(default)]
        pub command: Vec<String>,
        #[serde(default)]
        pub env: BTreeMap<String, String>,
        #[serde(default)]
        pub secret_env: crate::secrets::SecretEnv,
        #[serde(default)]
        pub ports: Vec<port_spec_v1::PortSpec>,
        #[serde(default = "default_replicas")]
        pub replicas: u32,
        #[serde(default)]
        pub resources: Resources,
        #[serde(default)]
        pub placement: Placement,
        #[serde(default)]
        pub health: Option<HealthCheck>,
        #[serde(default)]
        pub restart: RestartPolicy,
        #[serde(default)]
        pub update: update_strategy_v1::UpdateStrategy,
        #[serde(default)]
        pub addresses: Vec<String>,
        #[serde(default)]
        pub hostname: Option<String>,
    }

    impl crate::state::migrate::Migrate for ServiceSpec {
        const VERSION_MARKER: &'static [u8] = b"SS02";
        type Previous = super::service_spec_v1::ServiceSpec;

        /// Specs written before pull policies pulled nothing; `if-missing`
        /// pulls only what an engine lacks, which a spec that ran had not.
        fn migrate(previous: super::service_spec_v1::ServiceSpec) -> ServiceSpec {
            let super::service_spec_v1::ServiceSpec {
                kind,
                image,
                command,
                env,
                secret_env,
                ports,
                replicas,
                resources,
                placement,
                health,
                restart,
                update,
                addresses,
                hostname,
            } = previous;
            ServiceSpec {
                kind,
                image,
                pull: PullPolicy::default(),
                command,
                env,
                secret_env,
                ports,
                replicas,
                resources,
                placement,
                health,
                restart,
                update,
                addresses,
                hostname,
            }
        }
    }
}

/// Frozen: the service spec as written before it had a pull policy.
pub mod service_spec_v1 {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ServiceSpec {
        #[serde(default)]
        pub kind: ServiceKind,
        #[serde(default)]
        pub image: String,
        #[serde(default)]
        pub command: Vec<String>,
        #[serde(default)]
        pub env: BTreeMap<String, String>,
        #[serde(default)]
        pub secret_env: crate::secrets::SecretEnv,
        #[serde(default)]
        pub ports: Vec<port_spec_v1::PortSpec>,
        #[serde(default = "default_replicas")]
        pub replicas: u32,
        #[serde(default)]
        pub resources: Resources,
        #[serde(default)]
        pub placement: Placement,
        #[serde(default)]
        pub health: Option<HealthCheck>,
        #[serde(default)]
        pub restart: RestartPolicy,
        #[serde(default)]
        pub update: update_strategy_v1::UpdateStrategy,
        #[serde(default)]
        pub addresses: Vec<String>,
        #[serde(default)]
        pub hostname: Option<String>,
    }

    impl crate::state::migrate::FirstVersion for ServiceSpec {
        const VERSION_MARKER: &'static [u8] = b"SS01";
    }
}

/// When the leader fetches a service's image onto a node.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    /// Pull only when the node's engine does not have the image.
    #[default]
    IfMissing,
    /// Ask the registry before every container created.
    Always,
    /// Never pull: the image must be on the engine (or imported into the
    /// cluster).
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::IfMissing => "if-missing",
            PullPolicy::Always => "always",
            PullPolicy::Never => "never",
        }
    }
}

/// What a service is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    #[default]
    Container,
    External,
}

fn default_replicas() -> u32 {
    1
}

/// Whether a service's instances should be running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    #[default]
    Running,
    Stopped,
}

/// A deployed service as replicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    #[serde(with = "super::migrate::versioned")]
    pub spec: ServiceSpec,
    pub run_state: RunState,
    /// Raft index of the last change; the compare-and-set token.
    pub version: u64,
    pub create_index: u64,
    /// Raft index of the last `restart` request; instances started before
    /// it are restarted.
    pub restart_epoch: u64,
}

/// Lifecycle of one instance (one slot of a service on one node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    #[default]
    Pending,
    Starting,
    Running,
    Unhealthy,
    Exited,
    CrashLoop,
    Stopped,
    // Variants are only ever appended: the log encodes them by position.
    /// Placed; its image is being fetched onto its node.
    Pulling,
    /// Placed; fetching its image failed (the reason is its last exit),
    /// retried with backoff.
    PullFailed,
    /// Its node is down, draining or retired and its local volumes are
    /// there: the slot waits for the node rather than start empty elsewhere.
    Waiting,
}

/// How a container ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExitInfo {
    pub code: i64,
    pub reason: String,
    pub at_ms: u64,
}

/// A published port of a running instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PublishedPort {
    pub name: String,
    pub container_port: u16,
    pub host_port: u16,
    pub protocol: Protocol,
}

/// One slot of a service placed on a node; ids are generated by raftvisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Instance {
    pub id: String,
    pub namespace: String,
    pub service: String,
    pub slot: u32,
    /// Grows whenever the slot is placed anew.
    pub generation: u64,
    pub node: Option<String>,
    pub container_id: Option<String>,
    pub state: InstanceState,
    pub restarts: u32,
    pub last_exit: Option<ExitInfo>,
    pub address: Option<String>,
    pub ports: Vec<PublishedPort>,
    pub spec_version: u64,
    /// The service's `restart_epoch` this instance was last (re)started for.
    pub restart_epoch: u64,
    /// Fingerprint of the service template this generation was placed with.
    pub template: String,
}

/// What the leader observed about an instance, written back through Raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InstanceStatus {
    pub state: InstanceState,
    pub container_id: Option<String>,
    pub restarts: u32,
    pub last_exit: Option<ExitInfo>,
    pub address: Option<String>,
    pub ports: Vec<PublishedPort>,
    pub spec_version: u64,
    pub restart_epoch: u64,
}

/// Lifecycle of a machine in the inventory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Provisioning,
    #[default]
    Ready,
    Down,
    Draining,
    Retired,
}

/// Capacity a node offers to instances; zero means "not limited".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Capacity {
    pub cpu_millis: u32,
    pub memory_mb: u64,
    pub max_instances: u32,
}

/// What a user gives when registering a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    #[serde(default = "default_provider")]
    pub provider: String,
    pub docker_endpoint: String,
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
    /// Client certificate and CA for a `https://` / `tcp+tls://` engine.
    #[serde(default)]
    pub docker_tls: Option<DockerTls>,
}

impl NodeSpec {
    /// A node of the `static` provider (a given Docker host) reached at
    /// `docker_endpoint`, everything else unset.
    pub fn static_engine(docker_endpoint: impl Into<String>) -> NodeSpec {
        NodeSpec {
            provider: default_provider(),
            docker_endpoint: docker_endpoint.into(),
            address: None,
            region: None,
            zone: None,
            labels: BTreeMap::new(),
            capacity: Capacity::default(),
            docker_tls: None,
        }
    }
}

/// How the managers reach a Docker engine over TLS: PEM files present at
/// these paths on every manager. The engine's certificate must be signed by
/// `ca_cert` and name the endpoint's host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DockerTls {
    pub ca_cert: String,
    pub cert: String,
    pub key: String,
}

impl super::migrate::FirstVersion for NodeSpec {
    const VERSION_MARKER: &'static [u8] = b"NS01";
}

fn default_provider() -> String {
    "static".into()
}

/// A machine (VM or Docker host) in the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Node {
    pub name: String,
    #[serde(with = "super::migrate::versioned")]
    pub spec: NodeSpec,
    pub state: NodeState,
    pub version: u64,
    pub create_index: u64,
}

/// Which replica runs where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Manager {
    pub raft_id: u64,
    pub peer_addr: String,
    pub api_addr: String,
    pub node: Option<String>,
}

/// One key of the KV store, Consul-shaped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KvEntry {
    pub value: Vec<u8>,
    pub flags: u64,
    pub create_index: u64,
    pub modify_index: u64,
}

/// One entry of the bounded, replicated log of what the control plane did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    pub index: u64,
    pub time_ms: u64,
    pub kind: String,
    pub subject: String,
    pub message: String,
    /// The API token whose request caused it; `None` for the control
    /// plane's own work (the supervisor, expiries, bootstrap).
    #[serde(default)]
    pub actor: Option<Actor>,
}

/// Who asked for a change: an API token's public id and its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Actor {
    pub token_id: String,
    pub token_name: String,
}

/// Frozen: events as written before they named their actor.
pub mod event_v1 {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Event {
        pub index: u64,
        pub time_ms: u64,
        pub kind: String,
        pub subject: String,
        pub message: String,
    }

    impl From<Event> for super::Event {
        fn from(e: Event) -> super::Event {
            super::Event {
                index: e.index,
                time_ms: e.time_ms,
                kind: e.kind,
                subject: e.subject,
                message: e.message,
                actor: None,
            }
        }
    }
}

/// What an API token may do. Ordered: each role includes the ones before it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads only (GET).
    Read,
    /// Reads, and writes services, nodes and KV.
    Operator,
    /// Everything, including cluster membership and tokens.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Role, String> {
        match text {
            "read" => Ok(Role::Read),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "role {other:?} is not one of read, operator, admin"
            )),
        }
    }
}

/// What a limited token may reach: the services, instances, events and
/// catalog entries of `namespaces`, and the KV keys under `kv_prefixes`
/// (either may be empty, not both). A token without limits reaches the
/// whole cluster as its role allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenLimits {
    pub namespaces: Vec<String>,
    pub kv_prefixes: Vec<String>,
}

impl TokenLimits {
    pub fn allows_namespace(&self, namespace: &str) -> bool {
        self.namespaces.iter().any(|n| n == namespace)
    }

    /// Whether `key` — or, for recursive operations, every key under the
    /// prefix `key` — lies under one of the token's prefixes.
    pub fn allows_key(&self, key: &str) -> bool {
        self.kv_prefixes.iter().any(|p| key.starts_with(p.as_str()))
    }
}

/// One API token as the cluster stores it: the public id and the SHA-256
/// of the whole token, never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub hash: [u8; 32],
    pub created_ms: u64,
    pub create_index: u64,
}
