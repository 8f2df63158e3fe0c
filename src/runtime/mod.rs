//! Container runtimes behind one trait. The supervisor asks a runtime to
//! create, start, stop, remove, inspect and list containers on one node,
//! to stream the engine's container events, and to pull, load, save,
//! build, inspect and remove images; it never talks to an engine any
//! other way. [`docker`] implements it on bollard; [`memory`] is an
//! in-process runtime for unit tests and the placement benchmark.
//!
//! Every call is bounded by the runtime's own timeouts: an engine that hangs
//! must look unreachable, not stall the reconciler.

pub mod docker;
pub mod memory;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::state::Protocol;

/// What to run. Its `Debug` leaves out the environment's values: they may
/// hold unsealed secrets.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ContainerSpec {
    /// Deterministic name; the engine refuses a second container with it.
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<PortBinding>,
    /// Thousandths of a CPU; 0 = unlimited.
    pub cpu_millis: u32,
    /// 0 = unlimited.
    pub memory_mb: u64,
    /// `(host path or volume name, container path)`: the managers' own
    /// containers (bootstrap); services' containers mount `named_volumes`.
    pub volumes: Vec<(String, String)>,
    /// Named volumes, created on the engine before the container when
    /// they do not exist yet.
    pub named_volumes: Vec<NamedVolume>,
    /// DNS servers for the container.
    pub dns: Vec<String>,
    /// Docker network to attach; `None` = the engine's default bridge.
    pub network: Option<String>,
    /// Engine-side restart policy (`None` = raftvisor restarts it).
    pub restart_unless_stopped: bool,
}

impl std::fmt::Debug for ContainerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerSpec")
            .field("name", &self.name)
            .field("image", &self.image)
            .field("command", &self.command)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("labels", &self.labels)
            .field("ports", &self.ports)
            .field("cpu_millis", &self.cpu_millis)
            .field("memory_mb", &self.memory_mb)
            .field("volumes", &self.volumes)
            .field("named_volumes", &self.named_volumes)
            .field("dns", &self.dns)
            .field("network", &self.network)
            .field("restart_unless_stopped", &self.restart_unless_stopped)
            .finish()
    }
}

/// A named volume a container mounts at `target`: made with `driver`,
/// `options` and `labels` when the engine does not have it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedVolume {
    pub name: String,
    pub target: String,
    pub driver: String,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBinding {
    pub container_port: u16,
    pub protocol: Protocol,
    /// `None`: let the engine pick a free host port.
    pub host_port: Option<u16>,
    /// Host address to bind, e.g. "127.0.0.1"; `None` = all addresses.
    pub host_ip: Option<String>,
}

/// Engine-side container state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

/// What the engine reports about one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub state: ContainerState,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    /// RFC 3339 times as the engine reports them ("" when unknown).
    pub started_at: String,
    pub finished_at: String,
    /// `(container_port, protocol, host_port)` of published ports.
    pub ports: Vec<(u16, Protocol, u16)>,
    /// Address of the container on its network, if any.
    pub ip_address: Option<String>,
    /// Host pid of the main process (0 when not running).
    pub pid: i64,
}

/// An engine event about a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeEvent {
    pub container_id: String,
    /// Engine action: "start", "die", "stop", "kill", "destroy", "oom", "health_status", ...
    pub action: String,
    pub labels: BTreeMap<String, String>,
    /// Exit code for "die".
    pub exit_code: Option<i64>,
}

/// What an engine knows of one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// The image id (`sha256:…` of its config).
    pub id: String,
    pub repo_tags: Vec<String>,
    /// `repository@sha256:…` for each registry it was pulled from or
    /// pushed to.
    pub repo_digests: Vec<String>,
    pub size: u64,
}

/// Credentials for one registry. Its `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    /// `host[:port]` as image references name it.
    pub registry: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("registry", &self.registry)
            .field("username", &self.username)
            .field("password", &crate::secrets::REDACTED)
            .finish()
    }
}

/// A command run inside a container or in a one-shot container (a hook).
pub struct CommandRequest {
    /// The program and its arguments.
    pub command: Vec<String>,
    /// Fed to its stdin, which is then closed; `None`: no stdin.
    pub stdin: Option<ByteStream>,
    /// Where its stdout goes.
    pub stdout: StdoutTo,
    /// Longest run: a command still running then fails with `Timeout`.
    pub timeout: Duration,
}

/// Where a command's stdout goes.
pub enum StdoutTo {
    /// Its last [`OUTPUT_TAIL_BYTES`] are kept in the output.
    Tail,
    /// Every chunk is sent, in order (a backup's artifact); a receiver
    /// that is gone fails the run.
    Send(tokio::sync::mpsc::Sender<Bytes>),
}

/// What a finished command left.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandOutput {
    pub exit_code: i64,
    /// The last [`OUTPUT_TAIL_BYTES`] of its stdout (nothing when it was
    /// sent on).
    pub stdout_tail: Vec<u8>,
    /// The last [`OUTPUT_TAIL_BYTES`] of its stderr.
    pub stderr_tail: Vec<u8>,
}

/// How much of a command's stdout and stderr is kept.
pub const OUTPUT_TAIL_BYTES: usize = 4096;

fn keep_tail(tail: &mut Vec<u8>, bytes: &[u8]) {
    tail.extend_from_slice(bytes);
    let over = tail.len().saturating_sub(OUTPUT_TAIL_BYTES);
    tail.drain(..over);
}

impl CommandOutput {
    /// Takes one chunk of output: kept, or sent where `stdout` says.
    pub async fn take(
        &mut self,
        chunk: CommandChunk,
        stdout: &StdoutTo,
    ) -> Result<(), RuntimeError> {
        match (chunk, stdout) {
            (CommandChunk::Stdout(bytes), StdoutTo::Send(sender)) => {
                sender.send(bytes).await.map_err(|_| {
                    RuntimeError::Invalid("the command's stdout is no longer read".into())
                })?;
            }
            (CommandChunk::Stdout(bytes), StdoutTo::Tail) => {
                keep_tail(&mut self.stdout_tail, &bytes)
            }
            (CommandChunk::Stderr(bytes), _) => keep_tail(&mut self.stderr_tail, &bytes),
        }
        Ok(())
    }
}

/// One piece of a command's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandChunk {
    Stdout(Bytes),
    Stderr(Bytes),
}

/// A stream of archive bytes (`docker save` format, or a build context).
pub type ByteStream = BoxStream<'static, Result<Bytes, RuntimeError>>;

/// Why a runtime call failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RuntimeError {
    #[error("engine {endpoint} is unreachable: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("engine {endpoint} did not answer {operation} within {timeout:?}")]
    Timeout {
        endpoint: String,
        operation: &'static str,
        timeout: Duration,
    },
    #[error("container {0} not found")]
    NotFound(String),
    #[error("a container named {0} already exists")]
    Conflict(String),
    #[error("image {0} is not present on the engine")]
    ImageNotFound(String),
    /// The registry (or the engine on its behalf) refused or failed a
    /// pull; the text is the registry's own reason.
    #[error("pulling {reference} failed: {reason}")]
    Pull { reference: String, reason: String },
    /// A build failed: the step's own output.
    #[error("the build failed: {0}")]
    Build(String),
    /// The engine refused the request as invalid (bad port, bad resources, ...).
    #[error("the engine refused the container: {0}")]
    Invalid(String),
    #[error("engine error: {0}")]
    Engine(String),
    /// A leader without a fresh quorum may not change engines.
    #[error("refusing to {operation} a container: {reason}")]
    NoLease {
        operation: &'static str,
        reason: String,
    },
}

impl RuntimeError {
    /// Whether the node itself looks unreachable (as opposed to a refused request).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            RuntimeError::Unreachable { .. } | RuntimeError::Timeout { .. }
        )
    }
}

/// A container engine on one node.
#[async_trait::async_trait]
pub trait ContainerRuntime: Send + Sync + 'static {
    /// The endpoint this runtime talks to (for messages).
    fn endpoint(&self) -> &str;
    /// Liveness of the engine (Docker: `GET /_ping`), with its own short timeout.
    async fn ping(&self) -> Result<(), RuntimeError>;
    /// Creates a container; `Conflict` when the name is taken.
    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError>;
    async fn start(&self, id: &str) -> Result<(), RuntimeError>;
    /// Stops with SIGTERM, then SIGKILL after `grace`.
    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError>;
    /// Removes (forcibly, with its anonymous volumes). Missing is not an error.
    async fn remove(&self, id: &str) -> Result<(), RuntimeError>;
    /// Removes the named volume, unless a container mounts it (then
    /// `Conflict`). Missing is not an error.
    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError>;
    /// `None` when the container does not exist.
    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, RuntimeError>;
    /// All containers (running or not) carrying every label in `labels`.
    async fn list(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<ContainerInfo>, RuntimeError>;
    /// Container events of containers carrying every label in `labels`,
    /// until the engine connection ends.
    async fn events(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<BoxStream<'static, Result<RuntimeEvent, RuntimeError>>, RuntimeError>;
    /// What the engine knows of `reference` (a name, `name@digest` or an
    /// image id); `None` when it does not have it.
    async fn inspect_image(&self, reference: &str) -> Result<Option<ImageInfo>, RuntimeError>;
    /// Whether the engine has `reference`.
    async fn image_exists(&self, reference: &str) -> Result<bool, RuntimeError> {
        Ok(self.inspect_image(reference).await?.is_some())
    }
    /// Pulls `reference` from its registry (with `auth` when given) and
    /// answers what the engine then has; bounded by `limit`.
    async fn pull(
        &self,
        reference: &str,
        auth: Option<&RegistryAuth>,
        limit: Duration,
    ) -> Result<ImageInfo, RuntimeError>;
    /// Asks the registry (through the engine, which knows how to reach
    /// it) which digest the tag `reference` points at now, without pulling.
    async fn resolve(
        &self,
        reference: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<String, RuntimeError>;
    /// Removes the image `reference` names, unless a container uses it
    /// (then `Conflict`). Missing is not an error.
    async fn remove_image(&self, reference: &str) -> Result<(), RuntimeError>;
    /// `docker save` of one image, as a stream.
    async fn save_image(&self, reference: &str) -> Result<ByteStream, RuntimeError>;
    /// `docker load` of an archive; bounded by `limit`.
    async fn load_image(&self, archive: ByteStream, limit: Duration) -> Result<(), RuntimeError>;
    /// Runs a command inside the running container `id` (an exec), feeding
    /// it `request.stdin`; its exit code and output.
    async fn exec(&self, id: &str, request: CommandRequest) -> Result<CommandOutput, RuntimeError>;
    /// Runs a command in a new container made from `spec` (its image, env,
    /// labels and volumes; the command replaces its entrypoint), then
    /// removes that container, whatever happened. A container left with
    /// the same name (a run cut short) is removed first.
    async fn run_once(
        &self,
        spec: &ContainerSpec,
        request: CommandRequest,
    ) -> Result<CommandOutput, RuntimeError>;
    /// Builds `context` (a tar with a Dockerfile at its root) as `tag`,
    /// sending each line of the build's output to `log`; bounded by
    /// `limit`.
    async fn build_image(
        &self,
        context: ByteStream,
        tag: &str,
        log: tokio::sync::mpsc::UnboundedSender<String>,
        limit: Duration,
    ) -> Result<ImageInfo, RuntimeError>;
}
