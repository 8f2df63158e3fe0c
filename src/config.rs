//! Agent configuration: one TOML file per replica, with `RAFTVISOR_*`
//! environment overrides, validated once at start so a bad config fails with
//! one clear line instead of a half-started replica.
//!
//! Parsed once: addresses, networks and numbers are read into their types
//! by the TOML parser and the environment overrides, so the agent never
//! parses a setting again and never falls back to a default. A value that
//! does not parse is an error naming its key (or variable); what types
//! cannot express (`api_addr` ≠ `peer_addr`, timing bounds, …) is checked
//! by [`AgentConfig::validate`].

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path} is not valid: {source}")]
    Parse { path: PathBuf, source: TomlError },
    #[error("environment variable {name}={value:?} is not valid: {reason}")]
    Env {
        name: &'static str,
        value: String,
        reason: String,
    },
    #[error("config is not valid: {0}")]
    Invalid(String),
}

/// One member of the initial cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    pub id: u64,
    pub api_addr: SocketAddr,
    pub peer_addr: SocketAddr,
}

/// The smallest `raft.log_segment_bytes`: a segment holds at least a
/// few entries, so rotation never happens on every append.
pub const MIN_LOG_SEGMENT_BYTES: u64 = 64 * 1024;

/// Raft timing and log-compaction settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftTuning {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_threshold: u64,
    /// Entries kept in the log behind a snapshot for slow followers.
    pub keep_logs_after_snapshot: u64,
    /// A log segment file is closed before it grows past this many bytes.
    pub log_segment_bytes: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        // A follower campaigns after election_max_ms of silence (the
        // loyalty window) plus a random 0..(max - min) ms: 150-200 ms here
        // (see replica::elector).
        RaftTuning {
            heartbeat_ms: 30,
            election_min_ms: 100,
            election_max_ms: 150,
            snapshot_threshold: 10_000,
            keep_logs_after_snapshot: 1_000,
            log_segment_bytes: crate::raft::log_store::DEFAULT_SEGMENT_BYTES,
        }
    }
}

/// Client API limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiTuning {
    /// How long a write or linearizable read may wait for the cluster.
    pub request_timeout_ms: u64,
    pub max_body_bytes: usize,
    /// A connection must finish its TLS handshake and send its first
    /// request header within this time, and every later request header
    /// within this time of its first byte; else it is closed.
    pub header_timeout_ms: u64,
    /// A connection with no request in flight and no traffic for this long
    /// is closed.
    pub idle_timeout_ms: u64,
    /// Connections served at once; more are closed as soon as accepted.
    pub max_connections: usize,
}

impl Default for ApiTuning {
    fn default() -> Self {
        ApiTuning {
            request_timeout_ms: 5_000,
            max_body_bytes: 1024 * 1024,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_connections: 1024,
        }
    }
}

/// Supervisor (leader-only controllers) settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorTuning {
    /// Run the supervisor when leading.
    pub enabled: bool,
    /// A node is down after its engine missed pings for this long.
    pub node_grace_ms: u64,
    pub probe_interval_ms: u64,
    /// The controllers' safety net: every service is looked at again this
    /// often whatever its triggers said (they act on what changed).
    pub resync_ms: u64,
    /// Grace between SIGTERM and SIGKILL when stopping a container.
    pub stop_grace_ms: u64,
    /// A leader whose reconcile loops completed no round for this long
    /// gives up its leadership (the agent exits with code 75 for its
    /// restart policy to bring it back as a follower); 0 turns the
    /// watchdog off. See [`crate::reconcile::watchdog`].
    pub stall_after_ms: u64,
    /// A voter the leader has not heard from for this long, whose machine
    /// or container is gone or stopped, is replaced by a new manager (when
    /// the cluster has a manager plan from `raftvisor bootstrap`).
    pub replace_after_ms: u64,
    /// An image the cluster brought to a node (pulled or loaded) that no
    /// service has used — current or previous version — for this long is
    /// removed from the node; 0 keeps every image.
    pub image_gc_after_ms: u64,
    /// The directory (on every manager) holding the PEM files that nodes'
    /// `docker_tls` may name: relative names are resolved inside it, and
    /// paths outside it (`..`, symbolic links leading out, other absolute
    /// paths) are refused. Unset: nodes with `docker_tls` are refused.
    pub docker_tls_dir: Option<PathBuf>,
}

impl Default for SupervisorTuning {
    fn default() -> Self {
        SupervisorTuning {
            enabled: true,
            node_grace_ms: 2_000,
            probe_interval_ms: 250,
            resync_ms: 10_000,
            stop_grace_ms: 10_000,
            image_gc_after_ms: 3_600_000,
            stall_after_ms: 10_000,
            replace_after_ms: 30_000,
            docker_tls_dir: None,
        }
    }
}

/// DNS service discovery settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsTuning {
    /// Serve DNS on `dns_addr`.
    pub enabled: bool,
    /// The cluster's domain (`<service>.<namespace>.svc.<domain>`).
    pub domain: String,
    pub ttl_secs: u32,
    /// Resolvers (`IP:port`) asked for names outside the domain, in order,
    /// so containers can use raftvisor as their only resolver. Empty: such
    /// names are refused.
    pub upstreams: Vec<SocketAddr>,
    /// Networks (`address/prefix`) whose clients may have names outside
    /// the domain forwarded to `upstreams`; others get REFUSED. Default:
    /// loopback and Docker's default address pool 172.16.0.0/12 (where
    /// its bridge networks, and so the managed containers, live).
    pub forward_from: Vec<crate::dns::forward::Network>,
    /// Most forwarded queries waiting for upstreams at once; one more gets
    /// SERVFAIL at once.
    pub max_forwards: usize,
    /// More addresses to serve DNS on, e.g. the Docker bridge gateway's
    /// port 53 so containers reach it.
    pub extra_addrs: Vec<SocketAddr>,
    /// DNS servers (IP addresses, port 53) given to managed containers, so
    /// they resolve cluster names: e.g. the Docker bridge gateway on which
    /// a replica serves (`extra_addrs = ["172.17.0.1:53"]`).
    pub container_resolvers: Vec<IpAddr>,
}

impl DnsTuning {
    /// The domain as the zone is named: without leading or trailing dots.
    pub fn zone(&self) -> String {
        self.domain.trim_matches('.').to_ascii_lowercase()
    }
}

impl Default for DnsTuning {
    fn default() -> Self {
        DnsTuning {
            enabled: true,
            domain: "cluster.local".into(),
            ttl_secs: 5,
            upstreams: Vec::new(),
            forward_from: ["127.0.0.0/8", "::1/128", "172.16.0.0/12"]
                .map(|net| net.parse().expect("the default networks parse"))
                .to_vec(),
            max_forwards: 256,
            extra_addrs: Vec::new(),
            container_resolvers: Vec::new(),
        }
    }
}

/// Secret environment values of services (see [`crate::secrets`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// File with the 32-byte key (64 hex digits or base64) that seals
    /// services' `secret_env`; every replica needs the same key. Without
    /// one, specs with `secret_env` are refused.
    pub key_file: Option<PathBuf>,
}

/// Client authentication (`[auth]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// File of the cluster's bootstrap admin token. If it exists when the
    /// cluster is initialised, its token becomes the first admin token; if
    /// it is named but missing, the initialising replica writes a new token
    /// there (mode 0600). Unset: the new token is printed once in the log.
    pub bootstrap_token_file: Option<PathBuf>,
}

/// Transport security (`[tls]`). With `ca_cert`, `cert` and `key` the peer
/// port requires mutual TLS with manager certificates of the cluster CA and
/// the API serves HTTPS. Plain HTTP needs an explicit `insecure = true`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// PEM of the cluster CA (`raftvisor certs init`).
    pub ca_cert: Option<PathBuf>,
    /// PEM of this replica's manager certificate (`raftvisor certs issue --role manager`).
    pub cert: Option<PathBuf>,
    /// PEM of its private key.
    pub key: Option<PathBuf>,
    /// Serve and speak plain HTTP: local development only.
    pub insecure: bool,
}

impl TlsSettings {
    /// The three certificate paths, when TLS is configured.
    pub fn files(&self) -> Option<(&Path, &Path, &Path)> {
        match (&self.ca_cert, &self.cert, &self.key) {
            (Some(ca), Some(cert), Some(key)) => Some((ca, cert, key)),
            _ => None,
        }
    }
}

/// Horizontal scaling (`[autoscale]`): when placement finds no capacity,
/// the leader provisions one more node through `provider`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutoscaleConfig {
    /// The machine provider (`kind = "static"` with spare `machines`, or
    /// `kind = "azure"`); none: no automatic provisioning.
    pub provider: Option<crate::provider::ProviderConfig>,
    /// Most nodes this provider may add.
    pub max_nodes: u32,
    /// Names of provisioned machines (`<prefix>-<n>`) for providers that
    /// make machines; the static provider offers its configured names.
    pub name_prefix: String,
}

impl Default for AutoscaleConfig {
    fn default() -> Self {
        AutoscaleConfig {
            provider: None,
            max_nodes: 10,
            name_prefix: "auto".into(),
        }
    }
}

/// TOML that does not parse into what it should be, with toml's message
/// (several lines, with a caret under the culprit) folded into one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}")]
pub struct TomlError {
    line: String,
}

/// Parses TOML text into `T`.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, TomlError> {
    toml::from_str(text).map_err(|e| TomlError {
        line: e
            .to_string()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect::<Vec<_>>()
            .join(" "),
    })
}

/// Configuration of one replica (`raftvisor agent --config FILE`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub id: u64,
    pub data_dir: PathBuf,
    pub api_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    pub dns_addr: SocketAddr,
    /// The initial cluster. The member with the lowest id initialises it
    /// when its data directory is new; empty means "wait to be added".
    #[serde(default)]
    pub members: Vec<MemberConfig>,
    #[serde(default)]
    pub raft: RaftTuning,
    #[serde(default)]
    pub api: ApiTuning,
    #[serde(default)]
    pub supervisor: SupervisorTuning,
    #[serde(default)]
    pub dns: DnsTuning,
    #[serde(default)]
    pub secrets: SecretsConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub tls: TlsSettings,
    #[serde(default)]
    pub autoscale: AutoscaleConfig,
    /// Size limits and quotas (`[limits]`); the leader's apply to every
    /// write (see [`crate::state::limits`]).
    #[serde(default)]
    pub limits: crate::state::limits::Limits,
}

/// The ports of one replica on loopback (see [`AgentConfig::loopback`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopbackPorts {
    pub api: u16,
    pub peer: u16,
    pub dns: u16,
}

impl LoopbackPorts {
    /// API on `api`, peer on `api + 100`, DNS on `api + 200`.
    pub fn from_api(api: u16) -> LoopbackPorts {
        LoopbackPorts {
            api,
            peer: api + 100,
            dns: api + 200,
        }
    }
}

impl AgentConfig {
    /// Reads `path`, applies environment overrides and validates.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        config.apply_env(|name| std::env::var(name).ok())?;
        config.validate()?;
        Ok(config)
    }

    /// A replica on 127.0.0.1 at `ports` — replicas run in one process by
    /// tests, benchmarks and examples — with every setting at its default,
    /// plain HTTP between the members (they share the host) and `members`
    /// (ids and ports) as the initial cluster (empty: wait to be added).
    /// Callers adjust the sections they need; [`AgentConfig::validate`]
    /// still applies.
    pub fn loopback(
        id: u64,
        data_dir: PathBuf,
        ports: LoopbackPorts,
        members: &[(u64, LoopbackPorts)],
    ) -> AgentConfig {
        let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        AgentConfig {
            id,
            data_dir,
            api_addr: local(ports.api),
            peer_addr: local(ports.peer),
            dns_addr: local(ports.dns),
            members: members
                .iter()
                .map(|(member, ports)| MemberConfig {
                    id: *member,
                    api_addr: local(ports.api),
                    peer_addr: local(ports.peer),
                })
                .collect(),
            raft: RaftTuning::default(),
            api: ApiTuning::default(),
            supervisor: SupervisorTuning::default(),
            dns: DnsTuning::default(),
            secrets: SecretsConfig::default(),
            auth: AuthConfig::default(),
            tls: TlsSettings {
                insecure: true,
                ..TlsSettings::default()
            },
            autoscale: AutoscaleConfig::default(),
            limits: crate::state::limits::Limits::default(),
        }
    }

    /// Parses TOML text; the error is one line.
    pub fn parse(text: &str) -> Result<AgentConfig, TomlError> {
        parse_toml(text)
    }

    /// Applies `RAFTVISOR_*` overrides read through `lookup`.
    pub fn apply_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        fn number(name: &'static str, value: String) -> Result<u64, ConfigError> {
            parsed(name, value)
        }
        fn parsed<T: std::str::FromStr>(name: &'static str, value: String) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            value.parse().map_err(|e: T::Err| ConfigError::Env {
                name,
                reason: e.to_string(),
                value,
            })
        }
        if let Some(v) = lookup("RAFTVISOR_ID") {
            self.id = number("RAFTVISOR_ID", v)?;
        }
        if let Some(v) = lookup("RAFTVISOR_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = lookup("RAFTVISOR_API_ADDR") {
            self.api_addr = parsed("RAFTVISOR_API_ADDR", v)?;
        }
        if let Some(v) = lookup("RAFTVISOR_PEER_ADDR") {
            self.peer_addr = parsed("RAFTVISOR_PEER_ADDR", v)?;
        }
        if let Some(v) = lookup("RAFTVISOR_DNS_ADDR") {
            self.dns_addr = parsed("RAFTVISOR_DNS_ADDR", v)?;
        }
        if let Some(v) = lookup("RAFTVISOR_HEARTBEAT_MS") {
            self.raft.heartbeat_ms = number("RAFTVISOR_HEARTBEAT_MS", v)?;
        }
        if let Some(v) = lookup("RAFTVISOR_ELECTION_MIN_MS") {
            self.raft.election_min_ms = number("RAFTVISOR_ELECTION_MIN_MS", v)?;
        }
        if let Some(v) = lookup("RAFTVISOR_ELECTION_MAX_MS") {
            self.raft.election_max_ms = number("RAFTVISOR_ELECTION_MAX_MS", v)?;
        }
        if let Some(v) = lookup("RAFTVISOR_SNAPSHOT_THRESHOLD") {
            self.raft.snapshot_threshold = number("RAFTVISOR_SNAPSHOT_THRESHOLD", v)?;
        }
        if let Some(v) = lookup("RAFTVISOR_LOG_SEGMENT_BYTES") {
            self.raft.log_segment_bytes = number("RAFTVISOR_LOG_SEGMENT_BYTES", v)?;
        }
        if let Some(v) = lookup("RAFTVISOR_SECRETS_KEY_FILE") {
            self.secrets.key_file = Some(PathBuf::from(v));
        }
        if let Some(v) = lookup("RAFTVISOR_DOCKER_TLS_DIR") {
            self.supervisor.docker_tls_dir = (!v.is_empty()).then(|| PathBuf::from(v));
        }
        if let Some(v) = lookup("RAFTVISOR_BOOTSTRAP_TOKEN_FILE") {
            self.auth.bootstrap_token_file = (!v.is_empty()).then(|| PathBuf::from(v));
        }
        if let Some(v) = lookup("RAFTVISOR_TLS_CA_CERT") {
            self.tls.ca_cert = Some(PathBuf::from(v));
        }
        if let Some(v) = lookup("RAFTVISOR_TLS_CERT") {
            self.tls.cert = Some(PathBuf::from(v));
        }
        if let Some(v) = lookup("RAFTVISOR_TLS_KEY") {
            self.tls.key = Some(PathBuf::from(v));
        }
        if let Some(v) = lookup("RAFTVISOR_TLS_INSECURE") {
            self.tls.insecure = match v.as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(ConfigError::Env {
                        name: "RAFTVISOR_TLS_INSECURE",
                        value: v,
                        reason: "expected true or false".into(),
                    })
                }
            };
        }
        Ok(())
    }

    /// Checks everything that can be checked without touching the network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.id == 0 {
            return invalid("id must be a positive integer".into());
        }
        if self.api_addr == self.peer_addr {
            return invalid("api_addr and peer_addr must differ".into());
        }
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir must not be empty".into());
        }
        let mut ids = std::collections::BTreeSet::new();
        for member in &self.members {
            if !ids.insert(member.id) {
                return invalid(format!("member id {} is listed twice", member.id));
            }
        }
        if !self.members.is_empty() && !ids.contains(&self.id) {
            return invalid(format!(
                "members does not list this replica's id {}",
                self.id
            ));
        }
        let r = &self.raft;
        if r.heartbeat_ms == 0 || r.election_min_ms <= r.heartbeat_ms * 2 {
            return invalid("raft.election_min_ms must be more than twice raft.heartbeat_ms (and heartbeat positive)".into());
        }
        if r.election_max_ms <= r.election_min_ms {
            return invalid(
                "raft.election_max_ms must be greater than raft.election_min_ms".into(),
            );
        }
        if r.snapshot_threshold == 0 {
            return invalid("raft.snapshot_threshold must be positive".into());
        }
        if r.log_segment_bytes < MIN_LOG_SEGMENT_BYTES {
            return invalid(format!(
                "raft.log_segment_bytes must be at least {MIN_LOG_SEGMENT_BYTES}"
            ));
        }
        let domain = self.dns.domain.trim_matches('.');
        if domain.is_empty()
            || domain
                .split('.')
                .any(|label| crate::state::validate::dns_label("dns.domain label", label).is_err())
        {
            return invalid(format!(
                "dns.domain {:?} is not a DNS name of lowercase labels",
                self.dns.domain
            ));
        }
        if self.dns.max_forwards == 0 {
            return invalid("dns.max_forwards must be positive".into());
        }
        let s = &self.supervisor;
        if s.probe_interval_ms == 0 || s.resync_ms == 0 || s.node_grace_ms < s.probe_interval_ms {
            return invalid("supervisor.probe_interval_ms and resync_ms must be positive and node_grace_ms at least one probe interval".into());
        }
        // The runtime reports progress on every turn of its queues (at
        // least every 250 ms), whatever the resync; the prober's round
        // takes up to one probe interval.
        if s.stall_after_ms != 0 && s.stall_after_ms < (2 * s.probe_interval_ms).max(1_000) {
            return invalid("supervisor.stall_after_ms must be 0 (off) or at least 1000 and twice probe_interval_ms".into());
        }
        self.limits
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if self.api.request_timeout_ms == 0 || self.api.max_body_bytes == 0 {
            return invalid(
                "api.request_timeout_ms and api.max_body_bytes must be positive".into(),
            );
        }
        if self.api.header_timeout_ms == 0
            || self.api.idle_timeout_ms == 0
            || self.api.max_connections == 0
        {
            return invalid(
                "api.header_timeout_ms, api.idle_timeout_ms and api.max_connections must be positive"
                    .into(),
            );
        }
        let t = &self.tls;
        let given = [("ca_cert", &t.ca_cert), ("cert", &t.cert), ("key", &t.key)];
        let missing: Vec<&str> = given
            .iter()
            .filter(|(_, path)| path.as_ref().is_none_or(|p| p.as_os_str().is_empty()))
            .map(|(name, _)| *name)
            .collect();
        match (missing.len(), t.insecure) {
            (0, false) | (3, true) => {}
            (0, true) => {
                return invalid(
                    "tls: certificates are given and insecure = true; choose one".into(),
                )
            }
            (3, false) => return invalid(
                "tls: no certificates configured: set [tls] ca_cert, cert and key (see `raftvisor certs`), or insecure = true for local development only".into(),
            ),
            _ => {
                return invalid(format!(
                    "tls: {} missing; ca_cert, cert and key go together",
                    missing.join(", ")
                ))
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
id = 1
data_dir = "/tmp/rv1"
api_addr = "127.0.0.1:7001"
peer_addr = "127.0.0.1:7101"
dns_addr = "127.0.0.1:8601"
[[members]]
id = 1
api_addr = "127.0.0.1:7001"
peer_addr = "127.0.0.1:7101"
[tls]
insecure = true
"#;

    #[test]
    fn parses_and_validates() {
        let config = AgentConfig::parse(GOOD).unwrap();
        config.validate().unwrap();
        assert_eq!(config.raft, RaftTuning::default());
    }

    #[test]
    fn a_loopback_config_is_the_parsed_file_it_stands_for() {
        let ports = LoopbackPorts::from_api(7001);
        let mut dns = ports;
        dns.dns = 8601;
        let config = AgentConfig::loopback(1, PathBuf::from("/tmp/rv1"), dns, &[(1, ports)]);
        config.validate().unwrap();
        assert_eq!(config, AgentConfig::parse(GOOD).unwrap());
    }

    #[test]
    fn env_overrides_win() {
        let mut config = AgentConfig::parse(GOOD).unwrap();
        config
            .apply_env(|name| (name == "RAFTVISOR_API_ADDR").then(|| "127.0.0.1:9999".to_string()))
            .unwrap();
        assert_eq!(config.api_addr.to_string(), "127.0.0.1:9999");
        let err = config
            .apply_env(|name| (name == "RAFTVISOR_ID").then(|| "x".to_string()))
            .unwrap_err();
        assert!(err.to_string().contains("RAFTVISOR_ID"));
    }

    #[test]
    fn auth_section_and_env() {
        let config = AgentConfig::parse(GOOD).unwrap();
        assert_eq!(config.auth.bootstrap_token_file, None);
        let mut config = AgentConfig::parse(&format!(
            "{GOOD}[auth]\nbootstrap_token_file = \"/etc/rv/admin.token\"\n"
        ))
        .unwrap();
        config.validate().unwrap();
        assert_eq!(
            config.auth.bootstrap_token_file,
            Some(PathBuf::from("/etc/rv/admin.token"))
        );
        config
            .apply_env(|name| {
                (name == "RAFTVISOR_BOOTSTRAP_TOKEN_FILE").then(|| "/run/t".to_string())
            })
            .unwrap();
        assert_eq!(
            config.auth.bootstrap_token_file,
            Some(PathBuf::from("/run/t"))
        );
        assert!(AgentConfig::parse(&format!("{GOOD}[auth]\ntoken = \"x\"\n")).is_err());
    }

    #[test]
    fn dns_forwarding_limits_default_and_validate() {
        let config = AgentConfig::parse(GOOD).unwrap();
        let defaults: Vec<String> = config
            .dns
            .forward_from
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(defaults, ["127.0.0.0/8", "::1/128", "172.16.0.0/12"]);
        assert_eq!(config.dns.max_forwards, 256);
        let mut config = AgentConfig::parse(&format!(
            "{GOOD}[dns]\nupstreams = [\"10.0.0.2:53\"]\nforward_from = [\"10.0.0.0/8\"]\nmax_forwards = 8\n"
        ))
        .unwrap();
        config.validate().unwrap();
        config.dns.max_forwards = 0;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("max_forwards"), "{err}");
    }

    #[test]
    fn docker_tls_dir_from_file_and_env() {
        let config = AgentConfig::parse(GOOD).unwrap();
        assert_eq!(config.supervisor.docker_tls_dir, None);
        let mut config = AgentConfig::parse(&format!(
            "{GOOD}[supervisor]\ndocker_tls_dir = \"/etc/raftvisor/docker\"\n"
        ))
        .unwrap();
        config.validate().unwrap();
        assert_eq!(
            config.supervisor.docker_tls_dir,
            Some(PathBuf::from("/etc/raftvisor/docker"))
        );
        config
            .apply_env(|name| (name == "RAFTVISOR_DOCKER_TLS_DIR").then(|| "/run/tls".to_string()))
            .unwrap();
        assert_eq!(
            config.supervisor.docker_tls_dir,
            Some(PathBuf::from("/run/tls"))
        );
    }

    #[test]
    fn stall_after_defaults_and_bounds() {
        let config = AgentConfig::parse(GOOD).unwrap();
        assert_eq!(config.supervisor.stall_after_ms, 10_000);
        let mut config =
            AgentConfig::parse(&format!("{GOOD}[supervisor]\nstall_after_ms = 2000\n")).unwrap();
        config.validate().unwrap();
        config.supervisor.stall_after_ms = 0;
        config.validate().unwrap();
        config.supervisor.stall_after_ms = 900;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("stall_after_ms"), "{err}");
        config.supervisor.stall_after_ms = 1_000;
        config.supervisor.probe_interval_ms = 600;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("twice probe_interval_ms"), "{err}");
        assert!(AgentConfig::parse(&format!("{GOOD}[supervisor]\nstall_after = 1\n")).is_err());
    }

    /// The progress the watchdog judges comes from the runtime's turns,
    /// not from resyncs: a resync slower than `stall_after_ms` is fine.
    #[test]
    fn a_slow_resync_is_allowed_whatever_stall_after_is() {
        let config = AgentConfig::parse(&format!(
            "{GOOD}[supervisor]\nresync_ms = 60000\nstall_after_ms = 2000\n"
        ))
        .unwrap();
        config.validate().unwrap();
        assert_eq!(
            AgentConfig::parse(GOOD).unwrap().supervisor.resync_ms,
            10_000
        );
    }

    #[test]
    fn bad_configs_fail_with_one_line() {
        let unknown = AgentConfig::parse(&format!("{GOOD}\nbogus = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(
            unknown.contains("bogus") && !unknown.contains('\n'),
            "{unknown}"
        );
        let mut config = AgentConfig::parse(GOOD).unwrap();
        config.id = 2;
        assert!(config.validate().is_err());
    }

    #[test]
    fn tls_needs_certificates_or_an_explicit_insecure() {
        let mut config = AgentConfig::parse(GOOD).unwrap();
        config.tls.insecure = false;
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("no certificates configured") && !err.contains('\n'),
            "{err}"
        );
        config
            .apply_env(|name| match name {
                "RAFTVISOR_TLS_CA_CERT" => Some("ca.pem".into()),
                "RAFTVISOR_TLS_CERT" => Some("r1.pem".into()),
                _ => None,
            })
            .unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("key missing"), "{err}");
        config.tls.key = Some("r1-key.pem".into());
        config.validate().unwrap();
        assert!(config.tls.files().is_some());
        config.tls.insecure = true;
        assert!(config.validate().is_err());
        let parsed = AgentConfig::parse(&GOOD.replace(
            "insecure = true",
            "ca_cert = \"ca.pem\"\ncert = \"a\"\nkey = \"b\"",
        ))
        .unwrap();
        parsed.validate().unwrap();
        assert!(AgentConfig::parse(&format!("{GOOD}\nverify = false\n")).is_err());
    }

    /// Every value that does not parse into its type, with the key the
    /// error must name: nothing falls back to a default.
    #[test]
    fn each_unparsable_value_is_refused_naming_its_key() {
        let top = |key: &str, value: &str| {
            let line = GOOD
                .lines()
                .find(|l| l.starts_with(&format!("{key} =")))
                .unwrap();
            GOOD.replacen(line, &format!("{key} = {value}"), 1)
        };
        let cases = [
            (top("api_addr", "\"localhost:7001\""), "api_addr"),
            (top("peer_addr", "\"127.0.0.1\""), "peer_addr"),
            (top("dns_addr", "\"127.0.0.1:99999\""), "dns_addr"),
            (top("id", "\"one\""), "id"),
            (
                GOOD.replace(
                    "api_addr = \"127.0.0.1:7001\"\npeer_addr = \"127.0.0.1:7101\"\n[tls]",
                    "api_addr = \"here\"\npeer_addr = \"127.0.0.1:7101\"\n[tls]",
                ),
                "api_addr",
            ),
            (
                format!("{GOOD}[dns]\nupstreams = [\"10.0.0.2\"]\n"),
                "upstreams",
            ),
            (
                format!("{GOOD}[dns]\nextra_addrs = [\"gateway:53\"]\n"),
                "extra_addrs",
            ),
            (
                format!("{GOOD}[dns]\nforward_from = [\"10.0.0.0/40\"]\n"),
                "forward_from",
            ),
            (
                format!("{GOOD}[dns]\ncontainer_resolvers = [\"172.17.0.1:53\"]\n"),
                "container_resolvers",
            ),
            (format!("{GOOD}[raft]\nheartbeat_ms = -1\n"), "heartbeat_ms"),
            (
                format!("{GOOD}[supervisor]\nenabled = \"yes\"\n"),
                "enabled",
            ),
        ];
        for (text, key) in cases {
            let error = AgentConfig::parse(&text).expect_err(key).to_string();
            assert!(
                error.contains(key) && !error.contains('\n'),
                "{key}: {error}"
            );
        }
        let env = [
            ("RAFTVISOR_ID", "0x1"),
            ("RAFTVISOR_API_ADDR", "localhost:7001"),
            ("RAFTVISOR_PEER_ADDR", "127.0.0.1"),
            ("RAFTVISOR_DNS_ADDR", ":53"),
            ("RAFTVISOR_HEARTBEAT_MS", "fast"),
            ("RAFTVISOR_ELECTION_MIN_MS", "-5"),
            ("RAFTVISOR_ELECTION_MAX_MS", "1.5"),
            ("RAFTVISOR_SNAPSHOT_THRESHOLD", ""),
            ("RAFTVISOR_TLS_INSECURE", "yes"),
        ];
        for (name, value) in env {
            let mut config = AgentConfig::parse(GOOD).unwrap();
            let error = config
                .apply_env(|asked| (asked == name).then(|| value.to_string()))
                .expect_err(name)
                .to_string();
            assert!(error.contains(name), "{name}: {error}");
        }
    }

    /// What types cannot express is refused by `validate`, naming the key.
    #[test]
    fn each_invalid_combination_is_refused_naming_its_key() {
        type Breaks = fn(&mut AgentConfig);
        let cases: [(&str, Breaks); 11] = [
            ("id", |c| c.id = 0),
            ("api_addr and peer_addr", |c| c.peer_addr = c.api_addr),
            ("data_dir", |c| c.data_dir = PathBuf::new()),
            ("listed twice", |c| c.members.push(c.members[0].clone())),
            ("members", |c| c.id = 2),
            ("raft.election_min_ms", |c| c.raft.heartbeat_ms = 60),
            ("raft.election_max_ms", |c| c.raft.election_max_ms = 100),
            ("raft.snapshot_threshold", |c| c.raft.snapshot_threshold = 0),
            ("raft.log_segment_bytes", |c| c.raft.log_segment_bytes = 100),
            ("dns.domain", |c| c.dns.domain = "Not A Domain".into()),
            ("supervisor.probe_interval_ms", |c| {
                c.supervisor.probe_interval_ms = 0
            }),
        ];
        for (key, break_it) in cases {
            let mut config = AgentConfig::parse(GOOD).unwrap();
            config.validate().unwrap();
            break_it(&mut config);
            let error = config.validate().expect_err(key).to_string();
            assert!(error.contains(key), "{key}: {error}");
        }
    }
}
