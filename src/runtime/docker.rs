//! The Docker Engine runtime: [`ContainerRuntime`] on bollard's HTTP client,
//! over a unix socket or plain TCP. Every call runs under raftvisor's own
//! timeout (bollard has a single client-wide one), engine errors are mapped
//! to [`RuntimeError`] by status code (a registry's refusal of a pull keeps
//! the registry's own words), and the API version is negotiated with the
//! engine on first contact so old and new engines both answer.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, EventMessage,
    HostConfig, Mount, MountType, PortBinding as BollardPortBinding, RestartPolicy,
    RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    BuildImageOptions, CreateContainerOptions, CreateImageOptions, EventsOptions,
    ImportImageOptions, ListContainersOptions, RemoveContainerOptions, RemoveImageOptions,
    StopContainerOptions,
};
use bollard::{Docker, API_DEFAULT_VERSION};
use futures::stream::{BoxStream, StreamExt};
use tokio::sync::OnceCell;

use super::{
    ByteStream, CommandChunk, CommandOutput, CommandRequest, ContainerInfo, ContainerRuntime,
    ContainerSpec, ContainerState, ImageInfo, RegistryAuth, RuntimeError, RuntimeEvent, StdoutTo,
};
use crate::error_chain::error_chain;
use crate::state::Protocol;

/// Per-operation time limits of a [`DockerRuntime`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DockerTimeouts {
    /// `GET /_ping` (and the version negotiation on first contact).
    pub ping: Duration,
    /// create, start, inspect, list, remove, image lookups, opening the event stream.
    pub call: Duration,
    /// Added to the stop grace period to bound a stop.
    pub stop_slack: Duration,
}

impl Default for DockerTimeouts {
    fn default() -> Self {
        DockerTimeouts {
            ping: Duration::from_millis(500),
            call: Duration::from_secs(10),
            stop_slack: Duration::from_secs(5),
        }
    }
}

/// bollard's own (client-wide) limit: only a backstop behind ours.
const BOLLARD_BACKSTOP_SECS: u64 = 3600;
/// How far back an event subscription starts, so that events raised while
/// the stream is being opened are not lost (they are replayed instead).
const EVENTS_REPLAY: Duration = Duration::from_secs(2);
/// Concurrent inspections while listing.
const LIST_INSPECT_CONCURRENCY: usize = 8;

/// How the engine is reached.
#[derive(Debug, Clone)]
enum Transport {
    /// `unix:///path`
    Unix(String),
    /// `tcp://host:port`
    Http(String),
    /// `https://host:port` / `tcp+tls://host:port` with a client certificate.
    Tls {
        address: String,
        tls: crate::state::DockerTls,
    },
}

/// A Docker Engine reached over `unix://`, `tcp://` or `http://`.
#[derive(Debug)]
pub struct DockerRuntime {
    endpoint: String,
    transport: Transport,
    timeouts: DockerTimeouts,
    /// The client, made on first contact once the API version has been
    /// agreed with the engine (a missing socket is then just unreachable).
    client: OnceCell<Docker>,
}

impl DockerRuntime {
    /// Prepares a client for `endpoint` without contacting the engine:
    /// `unix:///var/run/docker.sock`, `tcp://host:port` or `http://host:port`.
    /// TLS endpoints need [`DockerRuntime::connect_tls`].
    pub fn connect(endpoint: &str) -> Result<DockerRuntime, RuntimeError> {
        Self::connect_with_timeouts(endpoint, DockerTimeouts::default())
    }

    /// A client for a TLS endpoint (`https://host:port`, `tcp+tls://host:port`):
    /// it presents `tls.cert`/`tls.key` and accepts only an engine
    /// certificate signed by `tls.ca_cert` for the endpoint's host.
    pub fn connect_tls(
        endpoint: &str,
        tls: &crate::state::DockerTls,
        timeouts: DockerTimeouts,
    ) -> Result<DockerRuntime, RuntimeError> {
        let endpoint = endpoint.trim();
        let rest = endpoint
            .strip_prefix("https://")
            .or_else(|| endpoint.strip_prefix("tcp+tls://"))
            .ok_or_else(|| {
                RuntimeError::Invalid(format!(
                    "docker endpoint {endpoint:?}: TLS needs https://host:port or tcp+tls://host:port"
                ))
            })?;
        let authority = host_and_port(endpoint, rest)?;
        for path in [&tls.ca_cert, &tls.cert, &tls.key] {
            if !std::path::Path::new(path).is_file() {
                return Err(RuntimeError::Invalid(format!(
                    "docker endpoint {endpoint:?}: TLS file {path:?} does not exist on this manager"
                )));
            }
        }
        Ok(DockerRuntime {
            endpoint: endpoint.to_string(),
            transport: Transport::Tls {
                address: format!("https://{authority}"),
                tls: tls.clone(),
            },
            timeouts,
            client: OnceCell::new(),
        })
    }

    /// [`DockerRuntime::connect`] with other time limits.
    pub fn connect_with_timeouts(
        endpoint: &str,
        timeouts: DockerTimeouts,
    ) -> Result<DockerRuntime, RuntimeError> {
        let endpoint = endpoint.trim();
        let invalid =
            |why: &str| RuntimeError::Invalid(format!("docker endpoint {endpoint:?}: {why}"));
        let transport = if let Some(path) = endpoint.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(invalid(
                    "a unix socket needs an absolute path (unix:///var/run/docker.sock)",
                ));
            }
            Transport::Unix(endpoint.to_string())
        } else if endpoint.starts_with("https://") || endpoint.starts_with("tcp+tls://") {
            return Err(invalid(
                "a TLS endpoint needs the CA, client certificate and key (docker_tls)",
            ));
        } else if let Some(rest) = endpoint
            .strip_prefix("tcp://")
            .or_else(|| endpoint.strip_prefix("http://"))
        {
            Transport::Http(format!("tcp://{}", host_and_port(endpoint, rest)?))
        } else {
            return Err(invalid("expected unix://, tcp:// or http://"));
        };
        Ok(DockerRuntime {
            endpoint: endpoint.to_string(),
            transport,
            timeouts,
            client: OnceCell::new(),
        })
    }

    pub fn timeouts(&self) -> DockerTimeouts {
        self.timeouts
    }

    /// Runs `work` on the client (made first if need be) under `limit`,
    /// mapping bollard's errors with `map`.
    /// Makes the named volumes `spec` mounts. Docker answers a create of
    /// an existing volume with that volume (same driver): the slot's next
    /// container finds its data.
    async fn make_volumes(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        for volume in &spec.named_volumes {
            let request = VolumeCreateRequest {
                name: Some(volume.name.clone()),
                driver: Some(volume.driver.clone()),
                driver_opts: Some(volume.options.clone().into_iter().collect()),
                labels: Some(volume.labels.clone().into_iter().collect()),
                ..Default::default()
            };
            self.call(
                "create volume",
                self.timeouts.call,
                |d| async move { d.create_volume(request).await },
                |e| match e {
                    bollard::errors::Error::DockerResponseServerError { message, .. } => {
                        RuntimeError::Invalid(format!("volume {}: {message}", volume.name))
                    }
                    other => self.map_error(other),
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Feeds `stdin` to a started command (then closes it) while its output
    /// is taken, until the output ends.
    async fn collect_output(
        &self,
        mut output: std::pin::Pin<
            Box<dyn futures::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>,
        >,
        mut input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
        stdin: Option<ByteStream>,
        stdout: &StdoutTo,
    ) -> Result<CommandOutput, RuntimeError> {
        use tokio::io::AsyncWriteExt;
        let feed = async {
            if let Some(mut stdin) = stdin {
                while let Some(chunk) = stdin.next().await {
                    // A command that exits without reading all of its
                    // stdin is not an error: its exit code says how it went.
                    if input.write_all(&chunk?).await.is_err() {
                        break;
                    }
                }
                let _ = input.shutdown().await;
            }
            Ok::<_, RuntimeError>(input)
        };
        let read = async {
            let mut collected = CommandOutput::default();
            while let Some(chunk) = output.next().await {
                let chunk = match chunk.map_err(|e| self.map_error(e))? {
                    LogOutput::StdOut { message } => CommandChunk::Stdout(message),
                    LogOutput::StdErr { message } => CommandChunk::Stderr(message),
                    LogOutput::Console { message } => CommandChunk::Stdout(message),
                    LogOutput::StdIn { .. } => continue,
                };
                collected.take(chunk, stdout).await?;
            }
            Ok::<_, RuntimeError>(collected)
        };
        let (fed, collected) = tokio::join!(feed, read);
        fed?;
        collected
    }

    async fn call<T, F, Fut>(
        &self,
        operation: &'static str,
        limit: Duration,
        work: F,
        map: impl FnOnce(bollard::errors::Error) -> RuntimeError,
    ) -> Result<T, RuntimeError>
    where
        F: FnOnce(Docker) -> Fut,
        Fut: Future<Output = Result<T, bollard::errors::Error>>,
    {
        let call = async {
            let client = self.client().await?;
            work(client).await.map_err(map)
        };
        match tokio::time::timeout(limit, call).await {
            Ok(result) => result,
            Err(_) => Err(self.timeout(operation, limit)),
        }
    }

    /// The client, made once: bollard's client for the transport, at the
    /// API version agreed with the engine (`GET /version`), so that engines
    /// older than bollard's default version answer too.
    async fn client(&self) -> Result<Docker, RuntimeError> {
        self.client
            .get_or_try_init(|| async {
                let made = match &self.transport {
                    Transport::Unix(path) => {
                        Docker::connect_with_unix(path, BOLLARD_BACKSTOP_SECS, API_DEFAULT_VERSION)
                    }
                    Transport::Http(address) => Docker::connect_with_http(
                        address,
                        BOLLARD_BACKSTOP_SECS,
                        API_DEFAULT_VERSION,
                    ),
                    Transport::Tls { address, tls } => Docker::connect_with_ssl(
                        address,
                        std::path::Path::new(&tls.key),
                        std::path::Path::new(&tls.cert),
                        std::path::Path::new(&tls.ca_cert),
                        BOLLARD_BACKSTOP_SECS,
                        API_DEFAULT_VERSION,
                    ),
                };
                let docker = made.map_err(|e| self.map_error(e))?;
                docker
                    .negotiate_version()
                    .await
                    .map_err(|e| self.map_error(e))
            })
            .await
            .cloned()
    }

    fn timeout(&self, operation: &'static str, timeout: Duration) -> RuntimeError {
        RuntimeError::Timeout {
            endpoint: self.endpoint.clone(),
            operation,
            timeout,
        }
    }

    /// The generic mapping: transport failures mean the engine is unreachable.
    fn map_error(&self, error: bollard::errors::Error) -> RuntimeError {
        use bollard::errors::Error as E;
        match error {
            E::DockerResponseServerError {
                status_code,
                message,
            } => match status_code {
                400 => RuntimeError::Invalid(message),
                _ => RuntimeError::Engine(format!("{status_code}: {message}")),
            },
            E::RequestTimeoutError => RuntimeError::Timeout {
                endpoint: self.endpoint.clone(),
                operation: "request",
                timeout: Duration::from_secs(BOLLARD_BACKSTOP_SECS),
            },
            E::IOError { .. }
            | E::HyperResponseError { .. }
            | E::HyperLegacyError { .. }
            | E::SocketNotFoundError(_) => RuntimeError::Unreachable {
                endpoint: self.endpoint.clone(),
                reason: error_chain(&error),
            },
            other => RuntimeError::Engine(error_chain(&other)),
        }
    }

    /// Mapping for calls naming one container: 404 is `NotFound(id)`.
    fn map_container_error(&self, id: &str, error: bollard::errors::Error) -> RuntimeError {
        match error {
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            } => RuntimeError::NotFound(id.to_string()),
            other => self.map_error(other),
        }
    }

    /// Mapping for create: a missing image is `ImageNotFound`, a taken name
    /// `Conflict`, the engine's refusals of a bad spec (ports, resources,
    /// network) `Invalid`.
    fn map_spec_error(&self, spec: &ContainerSpec, error: bollard::errors::Error) -> RuntimeError {
        match error {
            bollard::errors::Error::DockerResponseServerError {
                status_code,
                message,
            } => {
                let lower = message.to_ascii_lowercase();
                match status_code {
                    404 if lower.contains("no such image") => {
                        RuntimeError::ImageNotFound(spec.image.clone())
                    }
                    404 => RuntimeError::Invalid(message),
                    409 => RuntimeError::Conflict(spec.name.clone()),
                    400 => RuntimeError::Invalid(message),
                    500 if refuses_spec(&lower) => RuntimeError::Invalid(message),
                    _ => RuntimeError::Engine(format!("{status_code}: {message}")),
                }
            }
            other => self.map_error(other),
        }
    }

    async fn inspect_raw(
        &self,
        id: &str,
    ) -> Result<Option<ContainerInspectResponse>, RuntimeError> {
        let result = self
            .call(
                "inspect",
                self.timeouts.call,
                |d| async move { d.inspect_container(id, None).await },
                |e| self.map_container_error(id, e),
            )
            .await;
        match result {
            Ok(response) => Ok(Some(response)),
            Err(RuntimeError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Whether a 500 from the engine is really a refusal of the container's
/// settings (a host port taken, resources beyond the machine, a bind source
/// missing, ...) rather than a failure of the engine itself.
fn refuses_spec(lower_message: &str) -> bool {
    [
        "port is already allocated",
        "address already in use",
        "invalid",
        "minimum memory",
        "memory limit",
        "range of cpus",
        "nanocpus",
        "out of range",
        "bind source path does not exist",
        "no such file or directory",
    ]
    .iter()
    .any(|words| lower_message.contains(words))
}

fn port_key(container_port: u16, protocol: Protocol) -> String {
    format!("{container_port}/{}", protocol.as_str())
}

/// The engine's request body for `spec`.
fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let mut exposed = Vec::new();
    let mut bindings: HashMap<String, Option<Vec<BollardPortBinding>>> = HashMap::new();
    for port in &spec.ports {
        let key = port_key(port.container_port, port.protocol);
        if !exposed.contains(&key) {
            exposed.push(key.clone());
        }
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(BollardPortBinding {
                host_ip: port.host_ip.clone(),
                // An empty host port lets the engine pick an ephemeral one.
                host_port: Some(port.host_port.map(|p| p.to_string()).unwrap_or_default()),
            });
    }
    let host_config = HostConfig {
        port_bindings: (!bindings.is_empty()).then_some(bindings),
        nano_cpus: (spec.cpu_millis > 0).then(|| i64::from(spec.cpu_millis) * 1_000_000),
        memory: (spec.memory_mb > 0).then(|| (spec.memory_mb as i64).saturating_mul(1024 * 1024)),
        binds: (!spec.volumes.is_empty()).then(|| {
            spec.volumes
                .iter()
                .map(|(source, target)| format!("{source}:{target}"))
                .collect()
        }),
        mounts: (!spec.named_volumes.is_empty()).then(|| {
            spec.named_volumes
                .iter()
                .map(|volume| Mount {
                    target: Some(volume.target.clone()),
                    source: Some(volume.name.clone()),
                    typ: Some(MountType::VOLUME),
                    ..Default::default()
                })
                .collect()
        }),
        dns: (!spec.dns.is_empty()).then(|| spec.dns.clone()),
        network_mode: spec.network.clone(),
        restart_policy: Some(RestartPolicy {
            name: Some(if spec.restart_unless_stopped {
                RestartPolicyNameEnum::UNLESS_STOPPED
            } else {
                RestartPolicyNameEnum::NO
            }),
            maximum_retry_count: None,
        }),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
        env: (!spec.env.is_empty()).then(|| {
            spec.env
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect()
        }),
        labels: Some(
            spec.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// `host:port` of `rest`, the part of `endpoint` after its scheme.
fn host_and_port<'a>(endpoint: &str, rest: &'a str) -> Result<&'a str, RuntimeError> {
    let authority = rest.trim_end_matches('/');
    let valid = match authority.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty() && !authority.contains('/') && port.parse::<u16>().is_ok()
        }
        None => false,
    };
    if valid {
        Ok(authority)
    } else {
        Err(RuntimeError::Invalid(format!(
            "docker endpoint {endpoint:?}: expected SCHEME://host:port"
        )))
    }
}

fn label_filters(labels: &BTreeMap<String, String>) -> Vec<String> {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

fn map_state(status: Option<ContainerStateStatusEnum>) -> ContainerState {
    match status {
        // A stopping container still runs until it has stopped.
        Some(ContainerStateStatusEnum::RUNNING) | Some(ContainerStateStatusEnum::STOPPING) => {
            ContainerState::Running
        }
        Some(ContainerStateStatusEnum::PAUSED) => ContainerState::Paused,
        Some(ContainerStateStatusEnum::RESTARTING) => ContainerState::Restarting,
        Some(ContainerStateStatusEnum::REMOVING) => ContainerState::Removing,
        Some(ContainerStateStatusEnum::EXITED) => ContainerState::Exited,
        Some(ContainerStateStatusEnum::DEAD) => ContainerState::Dead,
        Some(ContainerStateStatusEnum::CREATED) | Some(ContainerStateStatusEnum::EMPTY) | None => {
            ContainerState::Created
        }
    }
}

/// The engine's "zero" time means "never".
fn engine_time(time: Option<String>) -> String {
    match time {
        Some(t) if !t.starts_with("0001-01-01") => t,
        _ => String::new(),
    }
}

/// What raftvisor needs of an inspection.
fn container_info(response: ContainerInspectResponse, network: Option<&str>) -> ContainerInfo {
    let config = response.config.unwrap_or_default();
    let state = response.state.unwrap_or_default();
    let status = map_state(state.status);
    let settings = response.network_settings.unwrap_or_default();

    let mut ports = Vec::new();
    for (key, bindings) in settings.ports.unwrap_or_default() {
        let (port, proto) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
        let protocol = match proto {
            "udp" => Protocol::Udp,
            "tcp" => Protocol::Tcp,
            _ => continue,
        };
        let Ok(container_port) = port.parse::<u16>() else {
            continue;
        };
        // The engine may publish a port on IPv4 and IPv6 with different host
        // ports; clients reach nodes by IPv4 address, so the IPv4 binding
        // is the one that counts, and a container port gets one host port.
        let bindings = bindings.unwrap_or_default();
        let is_v6 = |b: &&bollard::models::PortBinding| {
            b.host_ip.as_deref().is_some_and(|ip| ip.contains(':'))
        };
        let chosen = bindings
            .iter()
            .filter(|b| !is_v6(b))
            .chain(bindings.iter().filter(|b| is_v6(b)))
            .find_map(|b| b.host_port.as_deref().and_then(|p| p.parse::<u16>().ok()));
        if let Some(host_port) = chosen {
            ports.push((container_port, protocol, host_port));
        }
    }
    ports.sort_by_key(|(port, protocol, host)| (*port, protocol.as_str(), *host));

    let networks = settings.networks.unwrap_or_default();
    let ip_of = |name: &str| {
        networks
            .get(name)
            .and_then(|n| n.ip_address.clone())
            .filter(|ip| !ip.is_empty())
    };
    let ip_address = network
        .and_then(ip_of)
        .or_else(|| ip_of("bridge"))
        .or_else(|| {
            let mut names: Vec<&String> = networks.keys().collect();
            names.sort();
            names.into_iter().find_map(|name| ip_of(name))
        });

    let running = matches!(
        status,
        ContainerState::Running | ContainerState::Paused | ContainerState::Restarting
    );
    let finished_at = engine_time(state.finished_at);
    let exit_code = match status {
        ContainerState::Exited | ContainerState::Dead => state.exit_code,
        // A restarting container reports the code of its last exit.
        ContainerState::Restarting if !finished_at.is_empty() => state.exit_code,
        _ => None,
    };
    ContainerInfo {
        id: response.id.unwrap_or_default(),
        name: response
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        image: config.image.unwrap_or_default(),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        state: status,
        exit_code,
        oom_killed: state.oom_killed.unwrap_or(false),
        started_at: engine_time(state.started_at),
        finished_at,
        ports,
        ip_address,
        pid: if running { state.pid.unwrap_or(0) } else { 0 },
    }
}

/// Engine attributes of container events that are not the container's labels.
const EVENT_ATTRIBUTES: &[&str] = &["image", "name", "exitCode", "signal", "execID", "container"];

fn runtime_event(message: EventMessage) -> Option<RuntimeEvent> {
    let action = message.action?;
    // "health_status: healthy", "exec_start: sh -c ..." → the verb.
    let action = action
        .split_once(':')
        .map(|(verb, _)| verb.to_string())
        .unwrap_or(action);
    let actor = message.actor.unwrap_or_default();
    let attributes = actor.attributes.unwrap_or_default();
    let exit_code = attributes
        .get("exitCode")
        .and_then(|c| c.parse::<i64>().ok());
    let labels = attributes
        .into_iter()
        .filter(|(key, _)| !EVENT_ATTRIBUTES.contains(&key.as_str()))
        .collect();
    Some(RuntimeEvent {
        container_id: actor.id?,
        action,
        labels,
        exit_code,
    })
}

#[async_trait::async_trait]
impl ContainerRuntime for DockerRuntime {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    async fn ping(&self) -> Result<(), RuntimeError> {
        self.call(
            "ping",
            self.timeouts.ping,
            |d| async move { d.ping().await },
            |e| self.map_error(e),
        )
        .await
        .map(|_| ())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        if spec.name.is_empty() {
            return Err(RuntimeError::Invalid("a container needs a name".into()));
        }
        self.make_volumes(spec).await?;
        let options = CreateContainerOptions {
            name: Some(spec.name.clone()),
            ..Default::default()
        };
        let response = self
            .call(
                "create",
                self.timeouts.call,
                |d| async move { d.create_container(Some(options), create_body(spec)).await },
                |e| self.map_spec_error(spec, e),
            )
            .await?;
        Ok(response.id)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.call(
            "start",
            self.timeouts.call,
            |d| async move { d.start_container(id, None).await },
            |e| match e {
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 404,
                    ref message,
                } if message.to_ascii_lowercase().contains("no such container") => {
                    RuntimeError::NotFound(id.to_string())
                }
                // A host port already taken, a network gone, ...
                bollard::errors::Error::DockerResponseServerError {
                    status_code,
                    message,
                } if status_code == 400
                    || status_code == 404
                    || (status_code == 500 && refuses_spec(&message.to_ascii_lowercase())) =>
                {
                    RuntimeError::Invalid(message)
                }
                other => self.map_error(other),
            },
        )
        .await
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let grace_secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        let options = StopContainerOptions {
            t: Some(i32::try_from(grace_secs).unwrap_or(i32::MAX)),
            ..Default::default()
        };
        let limit = Duration::from_secs(grace_secs) + self.timeouts.stop_slack;
        self.call(
            "stop",
            limit,
            |d| async move { d.stop_container(id, Some(options)).await },
            |e| self.map_container_error(id, e),
        )
        .await
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        let result = self
            .call(
                "remove",
                self.timeouts.call,
                |d| async move { d.remove_container(id, Some(options)).await },
                |e| match e {
                    bollard::errors::Error::DockerResponseServerError {
                        status_code: 404, ..
                    } => RuntimeError::NotFound(id.to_string()),
                    // "removal of container ... is already in progress"
                    bollard::errors::Error::DockerResponseServerError {
                        status_code: 409,
                        ref message,
                    } if message.contains("already in progress") => {
                        RuntimeError::NotFound(id.to_string())
                    }
                    other => self.map_error(other),
                },
            )
            .await;
        match result {
            Ok(()) | Err(RuntimeError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        Ok(self.inspect_raw(id).await?.map(|response| {
            let network = response
                .host_config
                .as_ref()
                .and_then(|h| h.network_mode.clone());
            container_info(response, network.as_deref())
        }))
    }

    async fn list(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let mut filters = HashMap::new();
        if !labels.is_empty() {
            filters.insert("label".to_string(), label_filters(labels));
        }
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let work = async {
            let summaries = self
                .call(
                    "list",
                    self.timeouts.call,
                    |d| async move { d.list_containers(Some(options)).await },
                    |e| self.map_error(e),
                )
                .await?;
            let ids: Vec<String> = summaries.into_iter().filter_map(|s| s.id).collect();
            let inspected: Vec<Result<Option<ContainerInfo>, RuntimeError>> =
                futures::stream::iter(ids)
                    .map(|id| async move { self.inspect(&id).await })
                    .buffered(LIST_INSPECT_CONCURRENCY)
                    .collect()
                    .await;
            let mut infos = Vec::new();
            for info in inspected {
                // A container removed between listing and inspecting is gone.
                if let Some(info) = info? {
                    infos.push(info);
                }
            }
            Ok(infos)
        };
        match tokio::time::timeout(self.timeouts.call, work).await {
            Ok(result) => result,
            Err(_) => Err(self.timeout("list", self.timeouts.call)),
        }
    }

    async fn events(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<BoxStream<'static, Result<RuntimeEvent, RuntimeError>>, RuntimeError> {
        // Fail fast when the engine is not there; the client (at the agreed
        // API version) is needed to build the stream's request anyway.
        let client = self
            .call(
                "events",
                self.timeouts.call,
                |d| async move { d.ping().await.map(|_| d) },
                |e| self.map_error(e),
            )
            .await?;
        let mut filters = HashMap::new();
        filters.insert("type".to_string(), vec!["container".to_string()]);
        if !labels.is_empty() {
            filters.insert("label".to_string(), label_filters(labels));
        }
        let since = SystemTime::now()
            .checked_sub(EVENTS_REPLAY)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs().to_string());
        let options = EventsOptions {
            since,
            until: None,
            filters: Some(filters),
        };
        let endpoint = self.endpoint.clone();
        let stream = client.events(Some(options)).filter_map(move |item| {
            let mapped = match item {
                Ok(message) => runtime_event(message).map(Ok),
                Err(error) => Some(Err(map_stream_error(&endpoint, error))),
            };
            futures::future::ready(mapped)
        });
        Ok(stream.boxed())
    }

    async fn inspect_image(&self, reference: &str) -> Result<Option<ImageInfo>, RuntimeError> {
        let result = self
            .call(
                "image lookup",
                self.timeouts.call,
                |d| async move { d.inspect_image(reference).await },
                |e| match e {
                    bollard::errors::Error::DockerResponseServerError {
                        status_code: 404, ..
                    } => RuntimeError::ImageNotFound(reference.to_string()),
                    other => self.map_error(other),
                },
            )
            .await;
        match result {
            Ok(image) => Ok(Some(ImageInfo {
                id: image.id.unwrap_or_default(),
                repo_tags: image.repo_tags.unwrap_or_default(),
                repo_digests: image.repo_digests.unwrap_or_default(),
                size: image.size.unwrap_or(0).max(0) as u64,
            })),
            Err(RuntimeError::ImageNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn pull(
        &self,
        reference: &str,
        auth: Option<&RegistryAuth>,
        limit: Duration,
    ) -> Result<ImageInfo, RuntimeError> {
        let options = CreateImageOptions {
            from_image: Some(reference.to_string()),
            ..Default::default()
        };
        let credentials = auth.map(credentials);
        let refused = |reason: String| RuntimeError::Pull {
            reference: reference.to_string(),
            reason,
        };
        let work = async {
            let client = self.client().await?;
            let mut progress = client.create_image(Some(options), None, credentials);
            while let Some(step) = progress.next().await {
                if let Err(error) = step {
                    return Err(match error {
                        bollard::errors::Error::DockerStreamError { error } => refused(error),
                        bollard::errors::Error::DockerResponseServerError { message, .. } => {
                            refused(message)
                        }
                        other => self.map_error(other),
                    });
                }
            }
            Ok(())
        };
        match tokio::time::timeout(limit, work).await {
            Ok(result) => result?,
            Err(_) => return Err(refused(format!("no answer within {} s", limit.as_secs()))),
        }
        self.inspect_image(reference)
            .await?
            .ok_or_else(|| refused("the engine reports success but has no such image".into()))
    }

    async fn resolve(
        &self,
        reference: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<String, RuntimeError> {
        let credentials = auth.map(credentials);
        let refused = |reason: String| RuntimeError::Pull {
            reference: reference.to_string(),
            reason,
        };
        let inspected = self
            .call(
                "registry lookup",
                self.timeouts.call.max(Duration::from_secs(30)),
                |d| async move { d.inspect_registry_image(reference, credentials).await },
                |e| match e {
                    bollard::errors::Error::DockerResponseServerError { message, .. } => {
                        refused(message)
                    }
                    other => self.map_error(other),
                },
            )
            .await?;
        inspected
            .descriptor
            .digest
            .ok_or_else(|| refused("the registry named no digest".into()))
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        let result = self
            .call(
                "volume removal",
                self.timeouts.call,
                |d| async move {
                    d.remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
                        .await
                },
                |e| match e {
                    bollard::errors::Error::DockerResponseServerError {
                        status_code: 404, ..
                    } => RuntimeError::NotFound(name.to_string()),
                    bollard::errors::Error::DockerResponseServerError {
                        status_code: 409,
                        message,
                    } => RuntimeError::Conflict(format!("{name}: {message}")),
                    other => self.map_error(other),
                },
            )
            .await;
        match result {
            Ok(_) | Err(RuntimeError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn remove_image(&self, reference: &str) -> Result<(), RuntimeError> {
        let options = RemoveImageOptions {
            force: false,
            noprune: false,
            ..Default::default()
        };
        let result = self
            .call(
                "image removal",
                self.timeouts.call,
                |d| async move { d.remove_image(reference, Some(options), None).await },
                |e| match e {
                    bollard::errors::Error::DockerResponseServerError {
                        status_code: 404, ..
                    } => RuntimeError::ImageNotFound(reference.to_string()),
                    bollard::errors::Error::DockerResponseServerError {
                        status_code: 409, ..
                    } => RuntimeError::Conflict(reference.to_string()),
                    other => self.map_error(other),
                },
            )
            .await;
        match result {
            Ok(_) | Err(RuntimeError::ImageNotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn save_image(&self, reference: &str) -> Result<ByteStream, RuntimeError> {
        // Asking first turns a missing image into ImageNotFound rather
        // than an error in the middle of a stream.
        if self.inspect_image(reference).await?.is_none() {
            return Err(RuntimeError::ImageNotFound(reference.to_string()));
        }
        let client = self.client().await?;
        let endpoint = self.endpoint.clone();
        let stream = client
            .export_image(reference)
            .map(move |chunk| chunk.map_err(|e| map_stream_error(&endpoint, e)));
        Ok(stream.boxed())
    }

    async fn load_image(&self, archive: ByteStream, limit: Duration) -> Result<(), RuntimeError> {
        let work = async {
            let client = self.client().await?;
            let mut answers = client.import_image_stream(
                ImportImageOptions {
                    quiet: true,
                    ..Default::default()
                },
                archive,
                None,
            );
            while let Some(answer) = answers.next().await {
                if let Err(error) = answer {
                    return Err(match error {
                        bollard::errors::Error::DockerStreamError { error } => {
                            RuntimeError::Invalid(format!(
                                "the engine refused the archive: {error}"
                            ))
                        }
                        bollard::errors::Error::DockerResponseServerError { message, .. } => {
                            RuntimeError::Invalid(format!(
                                "the engine refused the archive: {message}"
                            ))
                        }
                        other => self.map_error(other),
                    });
                }
            }
            Ok(())
        };
        match tokio::time::timeout(limit, work).await {
            Ok(result) => result,
            Err(_) => Err(self.timeout("image load", limit)),
        }
    }

    async fn exec(&self, id: &str, request: CommandRequest) -> Result<CommandOutput, RuntimeError> {
        let CommandRequest {
            command,
            stdin,
            stdout,
            timeout,
        } = request;
        let work = async {
            let client = self.client().await?;
            let options = CreateExecOptions::<String> {
                attach_stdin: Some(stdin.is_some()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                cmd: Some(command),
                ..Default::default()
            };
            let created = client.create_exec(id, options).await.map_err(|e| match e {
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                } => RuntimeError::NotFound(id.to_string()),
                // "container ... is not running"
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 409,
                    message,
                } => RuntimeError::Invalid(message),
                other => self.map_error(other),
            })?;
            let started = client
                .start_exec(
                    &created.id,
                    Some(StartExecOptions {
                        detach: false,
                        tty: false,
                        output_capacity: Some(64 * 1024),
                    }),
                )
                .await
                .map_err(|e| self.map_error(e))?;
            let StartExecResults::Attached { output, input } = started else {
                return Err(RuntimeError::Engine(
                    "the engine started the command detached".into(),
                ));
            };
            let mut collected = self.collect_output(output, input, stdin, &stdout).await?;
            // The output ends as the command does; its exit code follows.
            loop {
                let inspected = client
                    .inspect_exec(&created.id)
                    .await
                    .map_err(|e| self.map_error(e))?;
                if inspected.running != Some(true) {
                    collected.exit_code = inspected.exit_code.unwrap_or(-1);
                    return Ok(collected);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(self.timeout("exec", timeout)),
        }
    }

    async fn run_once(
        &self,
        spec: &ContainerSpec,
        request: CommandRequest,
    ) -> Result<CommandOutput, RuntimeError> {
        let CommandRequest {
            command,
            stdin,
            stdout,
            timeout,
        } = request;
        self.remove(&spec.name).await?;
        self.make_volumes(spec).await?;
        let mut body = create_body(spec);
        body.entrypoint = Some(command);
        body.cmd = None;
        body.attach_stdin = Some(stdin.is_some());
        body.open_stdin = Some(stdin.is_some());
        body.stdin_once = Some(true);
        body.attach_stdout = Some(true);
        body.attach_stderr = Some(true);
        body.tty = Some(false);
        let options = CreateContainerOptions {
            name: Some(spec.name.clone()),
            ..Default::default()
        };
        let id = self
            .call(
                "create",
                self.timeouts.call,
                |d| async move { d.create_container(Some(options), body).await },
                |e| self.map_spec_error(spec, e),
            )
            .await?
            .id;
        let work = async {
            let client = self.client().await?;
            let attach = bollard::query_parameters::AttachContainerOptionsBuilder::new()
                .stream(true)
                .stdin(stdin.is_some())
                .stdout(true)
                .stderr(true)
                .build();
            let attached = client
                .attach_container(&id, Some(attach))
                .await
                .map_err(|e| self.map_error(e))?;
            self.start(&id).await?;
            let mut collected = self
                .collect_output(attached.output, attached.input, stdin, &stdout)
                .await?;
            loop {
                match self.inspect(&id).await? {
                    Some(info) if info.state == ContainerState::Running => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Some(info) => {
                        collected.exit_code = info.exit_code.unwrap_or(-1);
                        return Ok(collected);
                    }
                    None => return Err(RuntimeError::NotFound(id.clone())),
                }
            }
        };
        let outcome = match tokio::time::timeout(timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(self.timeout("one-shot run", timeout)),
        };
        // Whatever happened, the one-shot container goes.
        let removed = self.remove(&id).await;
        let output = outcome?;
        removed?;
        Ok(output)
    }

    async fn build_image(
        &self,
        context: ByteStream,
        tag: &str,
        log: tokio::sync::mpsc::UnboundedSender<String>,
        limit: Duration,
    ) -> Result<ImageInfo, RuntimeError> {
        let options = BuildImageOptions {
            dockerfile: "Dockerfile".into(),
            t: Some(tag.to_string()),
            rm: true,
            forcerm: true,
            ..Default::default()
        };
        let work = async {
            let client = self.client().await?;
            let body =
                bollard::body_try_stream(context.map(|chunk| chunk.map_err(std::io::Error::other)));
            let mut steps = client.build_image(options, None, Some(body));
            let mut tail = String::new();
            while let Some(step) = steps.next().await {
                match step {
                    Ok(info) => {
                        if let Some(text) = info.stream.or(info.status) {
                            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                                tail = line.to_string();
                                let _ = log.send(line.to_string());
                            }
                        }
                        if let Some(error) = info.error_detail.and_then(|d| d.message) {
                            let _ = log.send(error.clone());
                            return Err(RuntimeError::Build(error));
                        }
                    }
                    Err(bollard::errors::Error::DockerStreamError { error }) => {
                        let _ = log.send(error.clone());
                        return Err(RuntimeError::Build(error));
                    }
                    Err(bollard::errors::Error::DockerResponseServerError { message, .. }) => {
                        let _ = log.send(message.clone());
                        return Err(RuntimeError::Build(message));
                    }
                    Err(other) => return Err(self.map_error(other)),
                }
            }
            Ok(tail)
        };
        match tokio::time::timeout(limit, work).await {
            Ok(result) => {
                result?;
            }
            Err(_) => return Err(self.timeout("image build", limit)),
        }
        self.inspect_image(tag)
            .await?
            .ok_or_else(|| RuntimeError::Build(format!("the engine built nothing tagged {tag}")))
    }
}

/// What the engine sends the registry for `auth`.
fn credentials(auth: &RegistryAuth) -> DockerCredentials {
    DockerCredentials {
        username: Some(auth.username.clone()),
        password: Some(auth.password.clone()),
        serveraddress: Some(auth.registry.clone()),
        ..Default::default()
    }
}

/// Errors of an open event stream: the connection to the engine broke.
fn map_stream_error(endpoint: &str, error: bollard::errors::Error) -> RuntimeError {
    use bollard::errors::Error as E;
    match error {
        E::DockerResponseServerError {
            status_code,
            message,
        } => RuntimeError::Engine(format!("{status_code}: {message}")),
        E::JsonDataError { .. } | E::JsonSerdeError { .. } => {
            RuntimeError::Engine(error_chain(&error))
        }
        other => RuntimeError::Unreachable {
            endpoint: endpoint.to_string(),
            reason: error_chain(&other),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::PortBinding;

    #[test]
    fn endpoints_are_checked() {
        assert!(DockerRuntime::connect("unix:///var/run/docker.sock").is_ok());
        assert!(DockerRuntime::connect("tcp://127.0.0.1:2375").is_ok());
        assert!(DockerRuntime::connect("http://docker-1:2375").is_ok());
        for bad in [
            "https://host:2376",
            "tcp+tls://host:2376",
            "ftp://host:1",
            "tcp://host",
            "tcp://:2375",
            "tcp://host:notaport",
            "unix://relative.sock",
            "",
        ] {
            assert!(
                matches!(DockerRuntime::connect(bad), Err(RuntimeError::Invalid(_))),
                "{bad}"
            );
        }
        let tls = DockerRuntime::connect("https://host:2376").unwrap_err();
        assert!(tls.to_string().contains("TLS"), "{tls}");
    }

    #[test]
    fn create_body_carries_the_spec() {
        let spec = ContainerSpec {
            name: "rv-a".into(),
            image: "raftvisor-echo:local".into(),
            command: vec!["/raftvisor-echo".into()],
            env: [("PORT".to_string(), "8080".to_string())].into(),
            labels: [("raftvisor.cluster".to_string(), "c".to_string())].into(),
            ports: vec![
                PortBinding {
                    container_port: 8080,
                    protocol: Protocol::Tcp,
                    host_port: None,
                    host_ip: Some("127.0.0.1".into()),
                },
                PortBinding {
                    container_port: 53,
                    protocol: Protocol::Udp,
                    host_port: Some(5353),
                    host_ip: None,
                },
            ],
            cpu_millis: 500,
            memory_mb: 64,
            volumes: vec![("data".into(), "/data".into())],
            named_volumes: Vec::new(),
            dns: vec!["10.0.0.2".into()],
            network: Some("rv-net".into()),
            restart_unless_stopped: true,
        };
        let body = create_body(&spec);
        assert_eq!(body.env.unwrap(), vec!["PORT=8080".to_string()]);
        let mut exposed = body.exposed_ports.unwrap();
        exposed.sort();
        assert_eq!(exposed, vec!["53/udp".to_string(), "8080/tcp".to_string()]);
        let host = body.host_config.unwrap();
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.memory, Some(64 * 1024 * 1024));
        assert_eq!(host.binds.unwrap(), vec!["data:/data".to_string()]);
        assert_eq!(host.network_mode.as_deref(), Some("rv-net"));
        assert_eq!(
            host.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::UNLESS_STOPPED)
        );
        let bindings = host.port_bindings.unwrap();
        let http = bindings["8080/tcp"].as_ref().unwrap();
        assert_eq!(http[0].host_port.as_deref(), Some(""));
        assert_eq!(http[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(
            bindings["53/udp"].as_ref().unwrap()[0].host_port.as_deref(),
            Some("5353")
        );

        let bare = create_body(&ContainerSpec {
            name: "x".into(),
            image: "i".into(),
            ..Default::default()
        });
        let host = bare.host_config.unwrap();
        assert_eq!(host.nano_cpus, None);
        assert_eq!(host.memory, None);
        assert_eq!(
            host.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::NO)
        );
        assert!(bare.cmd.is_none() && bare.exposed_ports.is_none());
    }

    #[test]
    fn refusals_are_told_from_engine_failures() {
        for refusal in [
            "driver failed programming external connectivity on endpoint x: Bind for \
             127.0.0.1:8080 failed: port is already allocated",
            "Minimum memory limit allowed is 6MB",
            "invalid mount config for type \"bind\": bind source path does not exist: /x",
        ] {
            assert!(refuses_spec(&refusal.to_ascii_lowercase()), "{refusal}");
        }
        for failure in [
            "rpc error: code = Unavailable desc = transport is closing",
            "failed to create endpoint x on network bridge: timeout",
        ] {
            assert!(!refuses_spec(&failure.to_ascii_lowercase()), "{failure}");
        }
    }

    #[test]
    fn die_events_carry_exit_code_and_labels() {
        let message = EventMessage {
            action: Some("die".into()),
            actor: Some(bollard::models::EventActor {
                id: Some("abc".into()),
                attributes: Some(
                    [
                        ("exitCode", "3"),
                        ("image", "raftvisor-echo:local"),
                        ("name", "rv-x"),
                        ("raftvisor.instance", "i-1"),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ),
            }),
            ..Default::default()
        };
        let event = runtime_event(message).unwrap();
        assert_eq!(event.action, "die");
        assert_eq!(event.exit_code, Some(3));
        assert_eq!(event.container_id, "abc");
        assert_eq!(
            event.labels,
            [("raftvisor.instance".to_string(), "i-1".to_string())].into()
        );
        let health = runtime_event(EventMessage {
            action: Some("health_status: unhealthy".into()),
            actor: Some(bollard::models::EventActor {
                id: Some("abc".into()),
                attributes: None,
            }),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(health.action, "health_status");
        assert_eq!(health.exit_code, None);
    }
}
