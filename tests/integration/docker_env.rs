//! What the Docker-backed tests share: the local engine (required when
//! `CI` is set — a missing Docker fails the test rather than skipping it),
//! the project's images, a cluster with the local engine registered as
//! nodes, and container listings by the cluster's labels. Every container a
//! test's cluster created is removed when the test ends, also on failure.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use raftvisor::runtime::docker::DockerRuntime;
use raftvisor::runtime::{ContainerInfo, ContainerRuntime, ContainerState};
use raftvisor::state::NodeSpec;

use crate::harness::{eventually, Cluster, Tuning};

pub const ECHO_IMAGE: &str = "raftvisor-echo:local";
pub const LOCAL_ENGINE: &str = "unix:///var/run/docker.sock";

/// The local engine, or `None` (test skipped loudly) outside CI.
pub async fn docker() -> Option<Arc<DockerRuntime>> {
    let engine = DockerRuntime::connect(LOCAL_ENGINE).ok();
    let reachable = match &engine {
        Some(engine) => engine.ping().await.is_ok(),
        None => false,
    };
    if !reachable {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but the Docker engine at {LOCAL_ENGINE} does not answer"
        );
        eprintln!("SKIPPED: no Docker engine at {LOCAL_ENGINE} (set CI=1 to make this a failure)");
        return None;
    }
    let engine = Arc::new(engine.expect("reachable engine"));
    assert!(
        engine.image_exists(ECHO_IMAGE).await.unwrap_or(false),
        "image {ECHO_IMAGE} is missing: run scripts/build-images.sh (scripts/test.sh does)"
    );
    Some(engine)
}

/// A cluster of `replicas` whose containers are removed on drop.
pub struct DockerCluster {
    pub cluster: Cluster,
    pub cluster_id: String,
    pub engine: Arc<DockerRuntime>,
}

impl DockerCluster {
    pub async fn start(replicas: usize) -> Option<DockerCluster> {
        DockerCluster::start_with(replicas, Tuning::default()).await
    }

    pub async fn start_with(replicas: usize, tuning: Tuning) -> Option<DockerCluster> {
        let engine = docker().await?;
        let cluster = Cluster::start_with(replicas, tuning).await;
        let client = cluster.client();
        let cluster_id = eventually("the cluster has an id", Duration::from_secs(10), || async {
            client
                .cluster_status()
                .await
                .map_err(|e| e.to_string())?
                .cluster_id
                .ok_or_else(|| "not yet".to_string())
        })
        .await;
        Some(DockerCluster {
            cluster,
            cluster_id,
            engine,
        })
    }

    /// Registers a node reached at `endpoint` (the local engine, or a proxy to it).
    pub async fn add_node(&self, name: &str, endpoint: &str, zone: &str) {
        let spec = NodeSpec {
            provider: "static".into(),
            docker_endpoint: endpoint.into(),
            address: Some("127.0.0.1".into()),
            region: Some("local".into()),
            zone: Some(zone.into()),
            labels: BTreeMap::new(),
            capacity: Default::default(),
            docker_tls: None,
        };
        self.cluster
            .client()
            .node_put(name, &spec)
            .await
            .expect("register node");
    }

    /// Containers of this cluster (optionally of one service), any state.
    pub async fn containers(&self, service: Option<&str>) -> Vec<ContainerInfo> {
        let mut labels =
            BTreeMap::from([("raftvisor.cluster".to_string(), self.cluster_id.clone())]);
        if let Some(service) = service {
            labels.insert("raftvisor.service".into(), service.into());
        }
        self.engine.list(&labels).await.expect("list containers")
    }

    pub async fn running(&self, service: &str) -> Vec<ContainerInfo> {
        self.containers(Some(service))
            .await
            .into_iter()
            .filter(|c| c.state == ContainerState::Running)
            .collect()
    }

    /// Waits until exactly `n` containers of `service` run, one per slot.
    pub async fn wait_running(
        &self,
        service: &str,
        n: usize,
        within: Duration,
    ) -> Vec<ContainerInfo> {
        eventually(
            &format!("{n} running containers of {service}"),
            within,
            || async {
                let all = self.containers(Some(service)).await;
                let running: Vec<ContainerInfo> = all
                    .iter()
                    .filter(|c| c.state == ContainerState::Running)
                    .cloned()
                    .collect();
                let mut slots: Vec<&String> = running
                    .iter()
                    .filter_map(|c| c.labels.get("raftvisor.slot"))
                    .collect();
                slots.sort();
                slots.dedup();
                if running.len() == n && slots.len() == n && all.len() == n {
                    Ok(running)
                } else {
                    Err(format!(
                        "{} running over {} slots, {} in all: {:?}",
                        running.len(),
                        slots.len(),
                        all.len(),
                        all.iter().map(|c| (&c.name, c.state)).collect::<Vec<_>>()
                    ))
                }
            },
        )
        .await
    }
}

impl DockerCluster {
    /// Waits until `victim` runs again as a new process (same container).
    pub async fn wait_restarted(&self, victim: &ContainerInfo, what: &str) {
        eventually(
            &format!("{what} runs again"),
            Duration::from_secs(10),
            || async {
                let info = self
                    .engine
                    .inspect(&victim.id)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("gone")?;
                if info.state == ContainerState::Running && info.pid != victim.pid {
                    Ok(())
                } else {
                    Err(format!("{:?}", info.state))
                }
            },
        )
        .await
    }
}

impl Drop for DockerCluster {
    fn drop(&mut self) {
        // Stop the managers first, so nothing recreates what is removed.
        let ids: Vec<u64> = self.cluster.replicas.iter().map(|r| r.id).collect();
        for id in ids {
            self.cluster.kill(id);
        }
        let label = format!("label=raftvisor.cluster={}", self.cluster_id);
        let ids = docker_words(&["ps", "-aq", "--filter", &label]);
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .output();
        }
        // Then the slots' volumes, which outlive containers by design.
        let volumes = docker_words(&["volume", "ls", "-q", "--filter", &label]);
        if !volumes.is_empty() {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f"])
                .args(&volumes)
                .output();
        }
    }
}

/// The words `docker ARGS` prints (ids, names); none when it fails.
fn docker_words(args: &[&str]) -> Vec<String> {
    Command::new("docker")
        .args(args)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Kills the main process of a container from the host (a crash, not a
/// `docker kill`).
pub fn crash(container: &ContainerInfo) {
    assert!(container.pid > 0, "container {} has no pid", container.name);
    let status = Command::new("kill")
        .args(["-9", &container.pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// A TCP endpoint forwarding to the local engine's socket, so a test can
/// make a "node" unreachable (stop) and bring it back (start) while its
/// containers keep running on the same engine.
pub struct EngineProxy {
    pub port: u16,
    tasks: Option<tokio::task::JoinSet<()>>,
}

impl EngineProxy {
    pub async fn start() -> EngineProxy {
        let mut proxy = EngineProxy {
            port: crate::harness::free_port(),
            tasks: None,
        };
        proxy.resume().await;
        proxy
    }

    pub fn endpoint(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// Accepts and forwards connections again, on the same port.
    pub async fn resume(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("bind the engine proxy");
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    break;
                };
                connections.spawn(async move {
                    if let Ok(mut outbound) =
                        tokio::net::UnixStream::connect("/var/run/docker.sock").await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        self.tasks = Some(tasks);
    }

    /// Refuses new connections and cuts the open ones.
    pub fn cut(&mut self) {
        if let Some(mut tasks) = self.tasks.take() {
            tasks.abort_all();
        }
    }
}

/// A service of [`ECHO_IMAGE`] with `replicas`, its `http` port published,
/// and `extra` fields (an object) merged in.
pub fn echo_spec(replicas: u32, extra: serde_json::Value) -> raftvisor::state::ServiceSpec {
    let mut spec = serde_json::json!({
        "image": ECHO_IMAGE,
        "replicas": replicas,
        "ports": [{"name": "http", "container_port": 8080}],
    });
    spec.as_object_mut().expect("an object").extend(
        extra
            .as_object()
            .expect("extra fields are an object")
            .clone(),
    );
    serde_json::from_value(spec).expect("a valid service spec")
}

/// The Docker volume driver whose volumes every node of a test cluster
/// reaches ([`tests/volume_plugin/shared_dir.py`]): the tests' network
/// storage.
pub const SHARED_DRIVER: &str = "raftvisor-test-shared";

/// Starts the shared volume driver unless it answers already, and answers
/// its name. It is left running: the engine keeps a driver it once used
/// and asks it on every volume listing, which waits 15 s for a driver that
/// went away.
pub async fn shared_volume_driver() -> &'static str {
    let socket = format!("/run/docker/plugins/{SHARED_DRIVER}.sock");
    let answers =
        |socket: String| async move { tokio::net::UnixStream::connect(&socket).await.is_ok() };
    if !answers(socket.clone()).await {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/volume_plugin/shared_dir.py"
        );
        let root = std::env::temp_dir().join(SHARED_DRIVER);
        // `setsid -f` forks the driver into its own session and returns.
        let started = Command::new("setsid")
            .arg("-f")
            .arg("python3")
            .arg(script)
            .arg(&root)
            .arg(&socket)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("start the shared volume driver");
        assert!(started.success(), "setsid -f python3 {script}: {started}");
        eventually(
            "the shared volume driver answers",
            Duration::from_secs(10),
            || async {
                if answers(socket.clone()).await {
                    Ok(())
                } else {
                    Err(format!("nothing at {socket}"))
                }
            },
        )
        .await;
    }
    SHARED_DRIVER
}
