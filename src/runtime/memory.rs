//! An in-process fake container engine, for unit tests and the placement
//! benchmark only: it runs nothing. Containers live in a map behind a mutex,
//! ids and host ports are generated, names conflict like Docker's, and
//! container events go out on a broadcast channel. Tests drive failures with
//! [`MemoryRuntime::kill`] (a container "crashes" with an exit code),
//! [`MemoryRuntime::set_unreachable`] (every call fails as if the engine were
//! gone, and open event streams end) and [`MemoryRuntime::set_images`]
//! (which images "exist"); [`MemoryRuntime::set_latency`] adds a delay to
//! create and start to imitate a real engine's cost.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use futures::stream::{BoxStream, StreamExt};
use tokio::sync::broadcast;

use super::{
    ContainerInfo, ContainerRuntime, ContainerSpec, ContainerState, RuntimeError, RuntimeEvent,
};

/// Events buffered per subscriber before it lags.
const EVENT_BUFFER: usize = 4096;
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

#[derive(Debug)]
struct Engine {
    containers: HashMap<String, Container>,
    names: HashMap<String, String>,
    /// `None`: every image exists.
    images: Option<HashSet<String>>,
    unreachable: bool,
    latency: Duration,
    events: broadcast::Sender<RuntimeEvent>,
    next_id: u64,
    next_port: u16,
    next_pid: i64,
}

/// The fake engine. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct MemoryRuntime {
    endpoint: String,
    engine: Mutex<Engine>,
}

impl Default for MemoryRuntime {
    fn default() -> Self {
        MemoryRuntime::new("memory://local")
    }
}

impl MemoryRuntime {
    /// A fake engine whose [`ContainerRuntime::endpoint`] is `endpoint`.
    pub fn new(endpoint: &str) -> MemoryRuntime {
        MemoryRuntime {
            endpoint: endpoint.to_string(),
            engine: Mutex::new(Engine {
                containers: HashMap::new(),
                names: HashMap::new(),
                images: None,
                unreachable: false,
                latency: Duration::ZERO,
                events: broadcast::channel(EVENT_BUFFER).0,
                next_id: 1,
                next_port: FIRST_HOST_PORT,
                next_pid: 1000,
            }),
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
            engine.events = broadcast::channel(EVENT_BUFFER).0;
        }
        engine.unreachable = unreachable;
    }

    /// Restricts the images that exist; `None` (the default): all do.
    pub fn set_images(&self, images: Option<&[&str]>) {
        self.lock().images = images.map(|list| list.iter().map(|i| i.to_string()).collect());
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
            send(&engine.events, container, "oom", None);
        }
        stop_container(container, exit_code, oom);
        send(&engine.events, container, "die", Some(exit_code));
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

fn send(events: &broadcast::Sender<RuntimeEvent>, c: &Container, action: &str, exit: Option<i64>) {
    // No subscriber is not an error.
    let _ = events.send(RuntimeEvent {
        container_id: c.id.clone(),
        action: action.to_string(),
        labels: c.spec.labels.clone(),
        exit_code: exit,
    });
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
        send(&engine.events, &container, "create", None);
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
        send(&engine.events, container, "start", None);
        Ok(())
    }

    async fn stop(&self, id: &str, _grace: Duration) -> Result<(), RuntimeError> {
        let mut guard = self.reach()?;
        let engine = &mut *guard;
        let container = find(&mut engine.containers, &engine.names, id)?;
        if container.state == ContainerState::Running || container.state == ContainerState::Paused {
            send(&engine.events, container, "kill", None);
            stop_container(container, 0, false);
            send(&engine.events, container, "die", Some(0));
            send(&engine.events, container, "stop", None);
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
            send(&engine.events, &container, "kill", None);
            stop_container(&mut container, 137, false);
            send(&engine.events, &container, "die", Some(137));
        }
        send(&engine.events, &container, "destroy", None);
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
        let receiver = self.reach()?.events.subscribe();
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

    async fn image_exists(&self, image: &str) -> Result<bool, RuntimeError> {
        let engine = self.reach()?;
        Ok(engine
            .images
            .as_ref()
            .is_none_or(|images| images.contains(image)))
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
        assert!(rt.image_exists("raftvisor-echo:local").await.unwrap());
        assert!(!rt.image_exists("nginx").await.unwrap());
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
}
