//! An in-process fake container engine, for unit tests and the placement
//! benchmark only: it runs nothing. Containers live in a map behind a mutex,
//! ids and host ports are generated, names conflict like Docker's, and
//! container events go out on a broadcast channel. Tests drive failures with
//! [`MemoryRuntime::kill`] (a container "crashes" with an exit code),
//! [`MemoryRuntime::set_unreachable`] (every call fails as if the engine were
//! gone, and open event streams end) and [`MemoryRuntime::set_images`]
//! (which images "exist"); [`MemoryRuntime::set_latency`] adds a delay to
//! create and start to imitate a real engine's cost. Pulls come from a
//! [`MemoryRegistry`] shared by engines ([`MemoryRuntime::set_registry`]);
//! a saved "archive" is the image's name, which a load adds back.
//!
//! At scale (the scale benchmark runs thousands of these), each engine is
//! small: its event buffer is sized with [`MemoryRuntime::with_event_buffer`]
//! (a broadcast channel allocates all its slots up front), calls take no
//! time unless a latency is set, and a [`Tap`] shared by many engines
//! gives one place to watch every container event with the instant it
//! happened.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use tokio::sync::broadcast;

use super::{
    ByteStream, CommandChunk, CommandOutput, CommandRequest, ContainerInfo, ContainerRuntime,
    ContainerSpec, ContainerState, ImageInfo, RegistryAuth, RuntimeError, RuntimeEvent,
};

/// A fake registry: tags and the digests they point at, the account it
/// asks for, and a switch that makes it unreachable. Shared by engines.
#[derive(Debug, Default)]
pub struct MemoryRegistry {
    inner: Mutex<RegistryInner>,
}

#[derive(Debug, Default)]
struct RegistryInner {
    /// `repository:tag` → digest.
    tags: HashMap<String, String>,
    account: Option<(String, String)>,
    down: bool,
    pulls: u64,
}

impl MemoryRegistry {
    /// Points `repository:tag` at `digest` (a push).
    pub fn publish(&self, tag: &str, digest: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.tags.insert(tag.to_string(), digest.to_string());
    }

    /// Pulls need this account from now on.
    pub fn require(&self, username: &str, password: &str) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).account =
            Some((username.to_string(), password.to_string()));
    }

    pub fn set_down(&self, down: bool) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).down = down;
    }

    /// Pulls answered so far (successful or not).
    pub fn pulls(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).pulls
    }

    /// `(repository, digest)` of `reference`, or the registry's refusal.
    fn resolve(
        &self,
        reference: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<(String, String), String> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.pulls += 1;
        if inner.down {
            return Err("dial tcp: connection refused".into());
        }
        if let Some((username, password)) = &inner.account {
            let given = auth.map(|a| (a.username.as_str(), a.password.as_str()));
            if given != Some((username.as_str(), password.as_str())) {
                return Err("unauthorized: authentication required".into());
            }
        }
        let (repository, digest) = match reference.split_once('@') {
            Some((repository, digest)) => (repository.to_string(), digest.to_string()),
            None => {
                let digest = inner.tags.get(reference).ok_or_else(|| {
                    format!("manifest for {reference} not found: manifest unknown")
                })?;
                let repository = match reference.rfind(':') {
                    Some(i) if !reference[i..].contains('/') => &reference[..i],
                    _ => reference,
                };
                (repository.to_string(), digest.clone())
            }
        };
        Ok((repository, digest))
    }
}

/// Events buffered per subscriber before it lags, by default.
pub const EVENT_BUFFER: usize = 4096;
/// Where generated host ports start (Linux's ephemeral range).
const FIRST_HOST_PORT: u16 = 32768;

#[derive(Debug, Clone)]
struct Container {
    id: String,
    spec: ContainerSpec,
    state: ContainerState,
    exit_code: Option<i64>,
    oom_killed: bool,
    started_at: String,
    finished_at: String,
    /// Host ports, assigned at start as Docker does.
    ports: Vec<(u16, super::Protocol, u16)>,
    pid: i64,
    ip_address: Option<String>,
}

/// One container event of some engine sharing a [`Tap`], stamped when it
/// happened.
#[derive(Debug, Clone)]
pub struct Tapped {
    pub at: Instant,
    /// The endpoint of the engine it happened on.
    pub endpoint: Arc<str>,
    pub event: RuntimeEvent,
}

/// A channel that receives the events of every engine it is given to
/// ([`MemoryRuntime::set_tap`]); subscribe with [`broadcast::Sender::subscribe`].
pub type Tap = broadcast::Sender<Tapped>;

/// Where an engine's events go: its subscribers and, if set, a shared tap.
#[derive(Debug)]
struct Outlets {
    endpoint: Arc<str>,
    events: broadcast::Sender<RuntimeEvent>,
    buffer: usize,
    tap: Option<Tap>,
}

#[derive(Debug)]
struct Engine {
    containers: HashMap<String, Container>,
    names: HashMap<String, String>,
    /// `None`: every image exists.
    images: Option<HashSet<String>>,
    /// Repo digests of pulled images, by every name they answer to.
    digests: HashMap<String, Vec<String>>,
    registry: Option<Arc<MemoryRegistry>>,
    /// Named volumes made for containers (they outlive them).
    volumes: BTreeSet<String>,
    unreachable: bool,
    latency: Duration,
    outlets: Outlets,
    next_id: u64,
    next_port: u16,
    next_pid: i64,
}

/// The fake engine. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct MemoryRuntime {
    endpoint: String,
    engine: Mutex<Engine>,
    commands: Mutex<Commands>,
}

/// A command the fake engine was asked to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RanCommand {
    /// The container it ran in (`exec`), or the name of the one-shot
    /// container made for it (`run_once`).
    pub container: String,
    pub one_shot: bool,
    /// The named volumes a one-shot container mounted.
    pub volumes: Vec<String>,
    pub command: Vec<String>,
    pub stdin: Option<Bytes>,
}

/// What answers the commands the fake engine runs: the exit code, and
/// what the command writes (`stdout_tail` is its whole stdout).
pub type CommandAnswer = Arc<dyn Fn(&RanCommand) -> CommandOutput + Send + Sync>;

/// The commands run, and what answers them (none: every run is refused).
#[derive(Default)]
struct Commands {
    answer: Option<CommandAnswer>,
    ran: Vec<RanCommand>,
}

impl std::fmt::Debug for Commands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commands")
            .field("answer", &self.answer.as_ref().map(|_| "set"))
            .field("ran", &self.ran)
            .finish()
    }
}

impl Default for MemoryRuntime {
    fn default() -> Self {
        MemoryRuntime::new("memory://local")
    }
}

impl MemoryRuntime {
    /// Answers the commands run from now on (`exec`, `run_once`) with
    /// `answer`; without one, a run is refused as the engine cannot run
    /// programs.
    pub fn answer_commands(&self, answer: CommandAnswer) {
        self.commands_lock().answer = Some(answer);
    }

    /// Every command run so far, in order.
    pub fn ran_commands(&self) -> Vec<RanCommand> {
        self.commands_lock().ran.clone()
    }

    fn commands_lock(&self) -> std::sync::MutexGuard<'_, Commands> {
        self.commands.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the command `request` runs in `container` and answers it:
    /// the answer's stdout goes where the request says.
    async fn run_command(
        &self,
        container: String,
        one_shot: bool,
        volumes: Vec<String>,
        request: CommandRequest,
    ) -> Result<CommandOutput, RuntimeError> {
        let CommandRequest {
            command,
            stdin,
            stdout,
            timeout: _,
        } = request;
        let stdin = match stdin {
            Some(stream) => {
                let chunks: Vec<Bytes> = stream
                    .collect::<Vec<_>>()
                    .await
                    .into_iter()
                    .collect::<Result<_, _>>()?;
                Some(Bytes::from(chunks.concat()))
            }
            None => None,
        };
        let ran = RanCommand {
            one_shot,
            container,
            volumes,
            command,
            stdin,
        };
        let answer = {
            let mut commands = self.commands_lock();
            commands.ran.push(ran.clone());
            commands.answer.clone().ok_or_else(|| {
                RuntimeError::Invalid("the in-memory engine runs no programs".into())
            })?
        };
        let answered = answer(&ran);
        let mut output = CommandOutput {
            exit_code: answered.exit_code,
            stdout_tail: Vec::new(),
            stderr_tail: answered.stderr_tail,
        };
        output
            .take(CommandChunk::Stdout(answered.stdout_tail.into()), &stdout)
            .await?;
        Ok(output)
    }

    /// The named volumes the engine holds.
    pub fn volumes(&self) -> BTreeSet<String> {
        self.engine
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .volumes
            .clone()
    }

    /// A fake engine whose [`ContainerRuntime::endpoint`] is `endpoint`.
    pub fn new(endpoint: &str) -> MemoryRuntime {
        MemoryRuntime::with_event_buffer(endpoint, EVENT_BUFFER)
    }

    /// [`MemoryRuntime::new`] whose event subscribers lag (their stream
    /// yields an error, as Docker's does on a gap) beyond `buffer` events.
    pub fn with_event_buffer(endpoint: &str, buffer: usize) -> MemoryRuntime {
        let buffer = buffer.max(1);
        MemoryRuntime {
            endpoint: endpoint.to_string(),
            engine: Mutex::new(Engine {
                containers: HashMap::new(),
                names: HashMap::new(),
                images: None,
                digests: HashMap::new(),
                registry: None,
                volumes: BTreeSet::new(),
                unreachable: false,
                latency: Duration::ZERO,
                outlets: Outlets {
                    endpoint: endpoint.into(),
                    events: broadcast::channel(buffer).0,
                    buffer,
                    tap: None,
                },
                next_id: 1,
                next_port: FIRST_HOST_PORT,
                next_pid: 1000,
            }),
            commands: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Engine> {
        // A panic in a test holding the lock leaves consistent data.
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Locks the engine unless it is "unreachable".
    fn reach(&self) -> Result<std::sync::MutexGuard<'_, Engine>, RuntimeError> {
        let engine = self.lock();
        if engine.unreachable {
            return Err(RuntimeError::Unreachable {
                endpoint: self.endpoint.clone(),
                reason: "the in-memory engine is set unreachable".into(),
            });
        }
        Ok(engine)
    }

    async fn delay(&self) {
        let latency = self.lock().latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }

    /// Makes every call fail with `Unreachable` (and ends open event
    /// streams) until called again with `false`. Containers keep their state.
    pub fn set_unreachable(&self, unreachable: bool) {
        let mut engine = self.lock();
        if unreachable && !engine.unreachable {
            // Dropping the sender ends every subscriber's stream.
            engine.outlets.events = broadcast::channel(engine.outlets.buffer).0;
        }
        engine.unreachable = unreachable;
    }

    /// Restricts the images that exist; `None` (the default): all do.
    pub fn set_images(&self, images: Option<&[&str]>) {
        self.lock().images = images.map(|list| list.iter().map(|i| i.to_string()).collect());
    }

    /// Pulls of this engine go to `registry`.
    pub fn set_registry(&self, registry: Arc<MemoryRegistry>) {
        self.lock().registry = Some(registry);
    }

    /// Whether the engine has `reference` (with [`Self::set_images`]).
    pub fn has_image(&self, reference: &str) -> bool {
        self.lock()
            .images
            .as_ref()
            .is_none_or(|images| images.contains(reference))
    }

    /// Sends every container event of this engine to `tap` too.
    pub fn set_tap(&self, tap: Tap) {
        self.lock().outlets.tap = Some(tap);
    }

    /// Delay added to every create and start.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// The container exits on its own with `exit_code` (a crash) and a
    /// "die" event goes out. `NotFound` if it does not exist; a container
    /// that is not running is left as it is.
    pub fn kill(&self, id: &str, exit_code: i64) -> Result<(), RuntimeError> {
        self.exit(id, exit_code, false)
    }

    /// Like [`MemoryRuntime::kill`] with code 137, the OOM flag and an
    /// "oom" event before "die", as when the kernel's OOM killer strikes.
    pub fn oom_kill(&self, id: &str) -> Result<(), RuntimeError> {
        self.exit(id, 137, true)
    }

    fn exit(&self, id: &str, exit_code: i64, oom: bool) -> Result<(), RuntimeError> {
        let mut engine = self.lock();
        let engine = &mut *engine;
        let container = find(&mut engine.containers, &engine.names, id)?;
        if container.state != ContainerState::Running {
            return Ok(());
        }
        if oom {
            send(&engine.outlets, container, "oom", None);
        }
        stop_container(container, exit_code, oom);
        send(&engine.outlets, container, "die", Some(exit_code));
        Ok(())
    }

    /// Number of containers the engine holds (any state).
    pub fn container_count(&self) -> usize {
        self.lock().containers.len()
    }
}

/// Looks a container up by id, id prefix of 12+ characters, or name.
fn find<'a>(
    containers: &'a mut HashMap<String, Container>,
    names: &HashMap<String, String>,
    id: &str,
) -> Result<&'a mut Container, RuntimeError> {
    let key = resolve(containers, names, id).ok_or_else(|| RuntimeError::NotFound(id.into()))?;
    Ok(containers.get_mut(&key).expect("resolved id exists"))
}

fn resolve(
    containers: &HashMap<String, Container>,
    names: &HashMap<String, String>,
    id: &str,
) -> Option<String> {
    if containers.contains_key(id) {
        return Some(id.to_string());
    }
    if let Some(full) = names.get(id.trim_start_matches('/')) {
        return Some(full.clone());
    }
    if id.len() >= 12 {
        return containers.keys().find(|k| k.starts_with(id)).cloned();
    }
    None
}

fn send(outlets: &Outlets, c: &Container, action: &str, exit: Option<i64>) {
    // Nobody listening costs nothing: no event is built.
    let tap = outlets.tap.as_ref().filter(|t| t.receiver_count() > 0);
    if outlets.events.receiver_count() == 0 && tap.is_none() {
        return;
    }
    let event = RuntimeEvent {
        container_id: c.id.clone(),
        action: action.to_string(),
        labels: c.spec.labels.clone(),
        exit_code: exit,
    };
    if let Some(tap) = tap {
        // A receiver that left meanwhile is not an error.
        let _ = tap.send(Tapped {
            at: Instant::now(),
            endpoint: outlets.endpoint.clone(),
            event: event.clone(),
        });
    }
    let _ = outlets.events.send(event);
}

fn stop_container(c: &mut Container, exit_code: i64, oom: bool) {
    c.state = ContainerState::Exited;
    c.exit_code = Some(exit_code);
    c.oom_killed = oom;
    c.finished_at = crate::dates::rfc3339(SystemTime::now());
    c.pid = 0;
    c.ports.clear();
    c.ip_address = None;
}

fn info(c: &Container) -> ContainerInfo {
    ContainerInfo {
        id: c.id.clone(),
        name: c.spec.name.clone(),
        image: c.spec.image.clone(),
        labels: c.spec.labels.clone(),
        state: c.state,
        exit_code: c.exit_code,
        oom_killed: c.oom_killed,
        started_at: c.started_at.clone(),
        finished_at: c.finished_at.clone(),
        ports: c.ports.clone(),
        ip_address: c.ip_address.clone(),
        pid: c.pid,
    }
}

fn has_labels(have: &BTreeMap<String, String>, want: &BTreeMap<String, String>) -> bool {
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

#[async_trait::async_trait]
impl ContainerRuntime for MemoryRuntime {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    async fn ping(&self) -> Result<(), RuntimeError> {
        self.reach().map(|_| ())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        self.delay().await;
        let mut engine = self.reach()?;
        if spec.name.is_empty() {
            return Err(RuntimeError::Invalid("a container needs a name".into()));
        }
        if let Some(images) = &engine.images {
            if !images.contains(&spec.image) {
                return Err(RuntimeError::ImageNotFound(spec.image.clone()));
            }
        }
        if engine.names.contains_key(&spec.name) {
            return Err(RuntimeError::Conflict(spec.name.clone()));
        }
        if spec.ports.iter().any(|p| p.container_port == 0) {
            return Err(RuntimeError::Invalid("container port 0".into()));
        }
        engine
            .volumes
            .extend(spec.named_volumes.iter().map(|v| v.name.clone()));
        let id = format!("{:064x}", engine.next_id);
        engine.next_id += 1;
        let container = Container {
            id: id.clone(),
            spec: spec.clone(),
            state: ContainerState::Created,
            exit_code: None,
            oom_killed: false,
            started_at: String::new(),
            finished_at: String::new(),
            ports: Vec::new(),
            pid: 0,
            ip_address: None,
        };
        send(&engine.outlets, &container, "create", None);
        engine.names.insert(spec.name.clone(), id.clone());
        engine.containers.insert(id.clone(), container);
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.delay().await;
        let mut guard = self.reach()?;
        let engine = &mut *guard;
        let key = resolve(&engine.containers, &engine.names, id)
            .ok_or_else(|| RuntimeError::NotFound(id.into()))?;
        let state = engine.containers[&key].state;
        if matches!(state, ContainerState::Running | ContainerState::Paused) {
            return Ok(());
        }
        // Host ports other containers hold now.
        let taken: HashSet<u16> = engine
            .containers
            .values()
            .flat_map(|c| c.ports.iter().map(|(_, _, host)| *host))
            .collect();
        let wanted = engine.containers[&key].spec.ports.clone();
        let mut ports = Vec::new();
        for port in &wanted {
            let host = match port.host_port {
                Some(host) if taken.contains(&host) => {
                    return Err(RuntimeError::Invalid(format!(
                        "host port {host} is already allocated"
                    )));
                }
                Some(host) => host,
                None => loop {
                    let candidate = engine.next_port;
                    engine.next_port = engine.next_port.checked_add(1).unwrap_or(FIRST_HOST_PORT);
                    if !taken.contains(&candidate) {
                        break candidate;
                    }
                },
            };
            ports.push((port.container_port, port.protocol, host));
        }
        let pid = engine.next_pid;
        engine.next_pid += 1;
        let serial = engine.next_pid;
        let container = engine.containers.get_mut(&key).expect("resolved id exists");
        container.state = ContainerState::Running;
        container.exit_code = None;
        container.oom_killed = false;
        container.started_at = crate::dates::rfc3339(SystemTime::now());
        container.ports = ports;
        container.pid = pid;
        container.ip_address = Some(format!(
            "172.17.{}.{}",
            (serial / 250) % 250,
            serial % 250 + 2
        ));
        send(&engine.outlets, container, "start", None);
        Ok(())
    }

    async fn stop(&self, id: &str, _grace: Duration) -> Result<(), RuntimeError> {
        let mut guard = self.reach()?;
        let engine = &mut *guard;
        let container = find(&mut engine.containers, &engine.names, id)?;
        if container.state == ContainerState::Running || container.state == ContainerState::Paused {
            send(&engine.outlets, container, "kill", None);
            stop_container(container, 0, false);
            send(&engine.outlets, container, "die", Some(0));
            send(&engine.outlets, container, "stop", None);
        }
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let mut guard = self.reach()?;
        let engine = &mut *guard;
        let Some(key) = resolve(&engine.containers, &engine.names, id) else {
            return Ok(());
        };
        let mut container = engine.containers.remove(&key).expect("resolved id exists");
        engine.names.remove(&container.spec.name);
        if container.state == ContainerState::Running {
            send(&engine.outlets, &container, "kill", None);
            stop_container(&mut container, 137, false);
            send(&engine.outlets, &container, "die", Some(137));
        }
        send(&engine.outlets, &container, "destroy", None);
        Ok(())
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        let engine = self.reach()?;
        Ok(
            resolve(&engine.containers, &engine.names, id)
                .map(|key| info(&engine.containers[&key])),
        )
    }

    async fn list(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let engine = self.reach()?;
        let mut found: Vec<ContainerInfo> = engine
            .containers
            .values()
            .filter(|c| has_labels(&c.spec.labels, labels))
            .map(info)
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    async fn events(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<BoxStream<'static, Result<RuntimeEvent, RuntimeError>>, RuntimeError> {
        let receiver = self.reach()?.outlets.events.subscribe();
        let labels = labels.clone();
        let stream = futures::stream::unfold(receiver, move |mut receiver| {
            let labels = labels.clone();
            async move {
                loop {
                    match receiver.recv().await {
                        Ok(event) if has_labels(&event.labels, &labels) => {
                            return Some((Ok(event), receiver));
                        }
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            let error = RuntimeError::Engine(format!(
                                "event stream lagged: {missed} events missed"
                            ));
                            return Some((Err(error), receiver));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        Ok(stream.boxed())
    }

    async fn inspect_image(&self, reference: &str) -> Result<Option<ImageInfo>, RuntimeError> {
        let engine = self.reach()?;
        let present = engine
            .images
            .as_ref()
            .is_none_or(|images| images.contains(reference));
        Ok(present.then(|| image_info(&engine, reference)))
    }

    async fn pull(
        &self,
        reference: &str,
        auth: Option<&RegistryAuth>,
        _limit: Duration,
    ) -> Result<ImageInfo, RuntimeError> {
        self.delay().await;
        let registry = self.reach()?.registry.clone();
        let refused = |reason: String| RuntimeError::Pull {
            reference: reference.to_string(),
            reason,
        };
        let registry = registry.ok_or_else(|| refused("no registry is reachable".into()))?;
        let (repository, digest) = registry.resolve(reference, auth).map_err(refused)?;
        let mut engine = self.reach()?;
        let pinned = format!("{repository}@{digest}");
        let names = [reference.to_string(), pinned.clone()];
        for name in &names {
            if let Some(images) = engine.images.as_mut() {
                images.insert(name.clone());
            }
            let digests = engine.digests.entry(name.clone()).or_default();
            if !digests.contains(&pinned) {
                digests.push(pinned.clone());
            }
        }
        Ok(image_info(&engine, reference))
    }

    async fn resolve(
        &self,
        reference: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<String, RuntimeError> {
        let registry = self.reach()?.registry.clone();
        let refused = |reason: String| RuntimeError::Pull {
            reference: reference.to_string(),
            reason,
        };
        let registry = registry.ok_or_else(|| refused("no registry is reachable".into()))?;
        registry
            .resolve(reference, auth)
            .map(|(_, digest)| digest)
            .map_err(refused)
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        let mut engine = self.reach()?;
        let mounted = engine
            .containers
            .values()
            .any(|c| c.spec.named_volumes.iter().any(|v| v.name == name));
        if mounted {
            return Err(RuntimeError::Conflict(name.to_string()));
        }
        engine.volumes.remove(name);
        Ok(())
    }

    async fn exec(&self, id: &str, request: CommandRequest) -> Result<CommandOutput, RuntimeError> {
        self.delay().await;
        let name = {
            let engine = self.reach()?;
            let key = resolve(&engine.containers, &engine.names, id)
                .ok_or_else(|| RuntimeError::NotFound(id.into()))?;
            let container = &engine.containers[&key];
            if container.state != ContainerState::Running {
                return Err(RuntimeError::Invalid(format!(
                    "container {} is not running",
                    container.spec.name
                )));
            }
            container.spec.name.clone()
        };
        self.run_command(name, false, Vec::new(), request).await
    }

    async fn run_once(
        &self,
        spec: &ContainerSpec,
        request: CommandRequest,
    ) -> Result<CommandOutput, RuntimeError> {
        self.delay().await;
        {
            let mut engine = self.reach()?;
            if let Some(images) = &engine.images {
                if !images.contains(&spec.image) {
                    return Err(RuntimeError::ImageNotFound(spec.image.clone()));
                }
            }
            engine
                .volumes
                .extend(spec.named_volumes.iter().map(|v| v.name.clone()));
        }
        let volumes = spec.named_volumes.iter().map(|v| v.name.clone()).collect();
        self.run_command(spec.name.clone(), true, volumes, request)
            .await
    }

    async fn remove_image(&self, reference: &str) -> Result<(), RuntimeError> {
        let mut engine = self.reach()?;
        if engine
            .containers
            .values()
            .any(|c| c.spec.image == reference)
        {
            return Err(RuntimeError::Conflict(reference.to_string()));
        }
        if let Some(images) = engine.images.as_mut() {
            images.remove(reference);
        }
        engine.digests.remove(reference);
        Ok(())
    }

    async fn save_image(&self, reference: &str) -> Result<ByteStream, RuntimeError> {
        if self.inspect_image(reference).await?.is_none() {
            return Err(RuntimeError::ImageNotFound(reference.to_string()));
        }
        let archive = Bytes::from(reference.to_string());
        Ok(futures::stream::once(async move { Ok(archive) }).boxed())
    }

    async fn load_image(&self, archive: ByteStream, _limit: Duration) -> Result<(), RuntimeError> {
        let chunks: Vec<Bytes> = archive
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        let name = String::from_utf8(chunks.concat())
            .map_err(|_| RuntimeError::Invalid("not an archive of this engine".into()))?;
        if let Some(images) = self.reach()?.images.as_mut() {
            images.insert(name);
        }
        Ok(())
    }

    async fn build_image(
        &self,
        context: ByteStream,
        tag: &str,
        log: tokio::sync::mpsc::UnboundedSender<String>,
        limit: Duration,
    ) -> Result<ImageInfo, RuntimeError> {
        let _ = log.send(format!("Successfully tagged {tag}"));
        let _ = context.collect::<Vec<_>>().await;
        let name = Bytes::from(tag.to_string());
        self.load_image(
            futures::stream::once(async move { Ok(name) }).boxed(),
            limit,
        )
        .await?;
        let engine = self.reach()?;
        Ok(image_info(&engine, tag))
    }
}

/// What the fake engine tells of an image it has: a stable id made from
/// its name, and the digests of its pulls.
fn image_info(engine: &Engine, reference: &str) -> ImageInfo {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in reference.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    ImageInfo {
        id: format!("sha256:{hash:064x}"),
        repo_tags: vec![reference.to_string()],
        repo_digests: engine.digests.get(reference).cloned().unwrap_or_default(),
        size: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::PortBinding;
    use crate::state::Protocol;

    fn spec(name: &str) -> ContainerSpec {
        ContainerSpec {
            name: name.into(),
            image: "raftvisor-echo:local".into(),
            labels: [("raftvisor.cluster".to_string(), "t".to_string())].into(),
            ports: vec![PortBinding {
                container_port: 8080,
                protocol: Protocol::Tcp,
                host_port: None,
                host_ip: None,
            }],
            ..Default::default()
        }
    }

    async fn next_event(
        events: &mut BoxStream<'static, Result<RuntimeEvent, RuntimeError>>,
    ) -> RuntimeEvent {
        tokio::time::timeout(Duration::from_secs(2), events.next())
            .await
            .expect("an event within 2 s")
            .expect("the stream is open")
            .expect("no stream error")
    }

    #[tokio::test]
    async fn lifecycle_and_name_conflicts() {
        let rt = MemoryRuntime::default();
        rt.ping().await.unwrap();
        let id = rt.create(&spec("a")).await.unwrap();
        assert_eq!(
            rt.create(&spec("a")).await,
            Err(RuntimeError::Conflict("a".into()))
        );
        let created = rt.inspect(&id).await.unwrap().unwrap();
        assert_eq!(created.state, ContainerState::Created);
        assert!(created.ports.is_empty());

        rt.start(&id).await.unwrap();
        let running = rt.inspect("a").await.unwrap().unwrap();
        assert_eq!(running.state, ContainerState::Running);
        assert_eq!(running.ports.len(), 1);
        assert!(running.ports[0].2 >= FIRST_HOST_PORT);
        assert!(running.pid > 0 && running.ip_address.is_some());
        assert!(!running.started_at.is_empty());

        rt.stop(&id, Duration::from_secs(1)).await.unwrap();
        let stopped = rt.inspect(&id).await.unwrap().unwrap();
        assert_eq!(stopped.state, ContainerState::Exited);
        assert_eq!(stopped.exit_code, Some(0));
        assert_eq!(stopped.pid, 0);

        rt.remove(&id).await.unwrap();
        rt.remove(&id).await.unwrap();
        assert_eq!(rt.inspect(&id).await.unwrap(), None);
        assert_eq!(rt.start(&id).await, Err(RuntimeError::NotFound(id.clone())));
        // The name is free again.
        rt.create(&spec("a")).await.unwrap();
    }

    #[tokio::test]
    async fn list_filters_by_every_label() {
        let rt = MemoryRuntime::default();
        let mut other = spec("b");
        other
            .labels
            .insert("raftvisor.service".into(), "web".into());
        rt.create(&spec("a")).await.unwrap();
        rt.create(&other).await.unwrap();
        let all = rt.list(&BTreeMap::new()).await.unwrap();
        assert_eq!(all.len(), 2);
        let web = rt
            .list(&[("raftvisor.service".to_string(), "web".to_string())].into())
            .await
            .unwrap();
        assert_eq!(web.len(), 1);
        assert_eq!(web[0].name, "b");
        let none = rt
            .list(&[("raftvisor.cluster".to_string(), "other".to_string())].into())
            .await
            .unwrap();
        assert!(none.is_empty());
    }

    #[tokio::test]
    async fn kill_reports_die_with_the_exit_code() {
        let rt = MemoryRuntime::default();
        let mine = [("raftvisor.cluster".to_string(), "t".to_string())].into();
        let mut events = rt.events(&mine).await.unwrap();
        let mut foreign = spec("foreign");
        foreign.labels = [("raftvisor.cluster".to_string(), "x".to_string())].into();
        let foreign_id = rt.create(&foreign).await.unwrap();
        let id = rt.create(&spec("a")).await.unwrap();
        rt.start(&id).await.unwrap();
        rt.start(&foreign_id).await.unwrap();
        rt.kill(&foreign_id, 1).unwrap();
        rt.kill(&id, 3).unwrap();

        let actions: Vec<RuntimeEvent> = vec![
            next_event(&mut events).await,
            next_event(&mut events).await,
            next_event(&mut events).await,
        ];
        assert!(actions.iter().all(|e| e.container_id == id), "{actions:?}");
        assert_eq!(
            actions
                .iter()
                .map(|e| e.action.as_str())
                .collect::<Vec<_>>(),
            ["create", "start", "die"]
        );
        assert_eq!(actions[2].exit_code, Some(3));
        let info = rt.inspect(&id).await.unwrap().unwrap();
        assert_eq!(
            (info.state, info.exit_code),
            (ContainerState::Exited, Some(3))
        );

        rt.start(&id).await.unwrap();
        rt.oom_kill(&id).unwrap();
        assert_eq!(next_event(&mut events).await.action, "start");
        assert_eq!(next_event(&mut events).await.action, "oom");
        assert_eq!(next_event(&mut events).await.exit_code, Some(137));
        assert!(rt.inspect(&id).await.unwrap().unwrap().oom_killed);
        assert!(matches!(rt.kill("nope", 1), Err(RuntimeError::NotFound(_))));
    }

    #[tokio::test]
    async fn unreachable_fails_calls_and_ends_streams() {
        let rt = MemoryRuntime::default();
        let id = rt.create(&spec("a")).await.unwrap();
        let mut events = rt.events(&BTreeMap::new()).await.unwrap();
        rt.set_unreachable(true);
        let error = rt.ping().await.unwrap_err();
        assert!(error.is_unreachable(), "{error}");
        assert!(rt.inspect(&id).await.unwrap_err().is_unreachable());
        assert!(rt
            .list(&BTreeMap::new())
            .await
            .unwrap_err()
            .is_unreachable());
        let end = tokio::time::timeout(Duration::from_secs(2), events.next())
            .await
            .expect("the stream ends");
        assert!(end.is_none());
        rt.set_unreachable(false);
        // Containers survive an engine outage.
        assert!(rt.inspect(&id).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn images_and_host_ports() {
        let rt = MemoryRuntime::default();
        rt.set_images(Some(&["raftvisor-echo:local"]));
        assert!(rt
            .inspect_image("raftvisor-echo:local")
            .await
            .unwrap()
            .is_some());
        assert!(rt.inspect_image("nginx").await.unwrap().is_none());
        let mut missing = spec("m");
        missing.image = "nginx".into();
        assert_eq!(
            rt.create(&missing).await,
            Err(RuntimeError::ImageNotFound("nginx".into()))
        );

        let mut fixed = spec("fixed");
        fixed.ports[0].host_port = Some(18080);
        let mut clash = spec("clash");
        clash.ports[0].host_port = Some(18080);
        let a = rt.create(&fixed).await.unwrap();
        let b = rt.create(&clash).await.unwrap();
        rt.start(&a).await.unwrap();
        assert!(matches!(rt.start(&b).await, Err(RuntimeError::Invalid(_))));
        let c = rt.create(&spec("c")).await.unwrap();
        let d = rt.create(&spec("d")).await.unwrap();
        rt.start(&c).await.unwrap();
        rt.start(&d).await.unwrap();
        let port_c = rt.inspect(&c).await.unwrap().unwrap().ports[0].2;
        let port_d = rt.inspect(&d).await.unwrap().unwrap().ports[0].2;
        assert_ne!(port_c, port_d);
    }

    #[tokio::test]
    async fn remove_of_a_running_container_reports_die_and_destroy() {
        let rt = MemoryRuntime::default();
        let id = rt.create(&spec("a")).await.unwrap();
        rt.start(&id).await.unwrap();
        let mut events = rt.events(&BTreeMap::new()).await.unwrap();
        rt.remove("a").await.unwrap();
        assert_eq!(next_event(&mut events).await.action, "kill");
        let die = next_event(&mut events).await;
        assert_eq!((die.action.as_str(), die.exit_code), ("die", Some(137)));
        assert_eq!(next_event(&mut events).await.action, "destroy");
        assert_eq!(rt.container_count(), 0);
    }

    #[tokio::test]
    async fn a_subscriber_lags_beyond_the_event_buffer() {
        let rt = MemoryRuntime::with_event_buffer("memory://small", 2);
        let mut events = rt.events(&BTreeMap::new()).await.unwrap();
        for name in ["a", "b", "c"] {
            rt.create(&spec(name)).await.unwrap();
        }
        let first = tokio::time::timeout(Duration::from_secs(2), events.next())
            .await
            .expect("an item within 2 s")
            .expect("the stream is open");
        assert!(
            matches!(&first, Err(RuntimeError::Engine(m)) if m.contains("lagged")),
            "{first:?}"
        );
        // The newest events are still there after the gap.
        assert_eq!(next_event(&mut events).await.action, "create");
    }

    #[tokio::test]
    async fn a_tap_gathers_the_events_of_many_engines_with_their_time() {
        let tap: Tap = broadcast::channel(16).0;
        let one = MemoryRuntime::with_event_buffer("memory://one", 4);
        let two = MemoryRuntime::with_event_buffer("memory://two", 4);
        one.set_tap(tap.clone());
        two.set_tap(tap.clone());
        // Nothing listens yet: nothing is kept.
        one.create(&spec("early")).await.unwrap();
        let mut tapped = tap.subscribe();
        let before = Instant::now();
        let id = one.create(&spec("a")).await.unwrap();
        two.create(&spec("b")).await.unwrap();
        one.start(&id).await.unwrap();
        let after = Instant::now();
        let mut seen = Vec::new();
        for _ in 0..3 {
            let t = tokio::time::timeout(Duration::from_secs(2), tapped.recv())
                .await
                .expect("an event within 2 s")
                .expect("the tap is open");
            assert!(before <= t.at && t.at <= after);
            seen.push((t.endpoint.to_string(), t.event.action));
        }
        assert_eq!(
            seen,
            [
                ("memory://one".to_string(), "create".to_string()),
                ("memory://two".to_string(), "create".to_string()),
                ("memory://one".to_string(), "start".to_string()),
            ]
        );
        assert!(
            tapped.try_recv().is_err(),
            "no event before the subscription"
        );
    }
}
