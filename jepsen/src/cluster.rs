//! The cluster under test: raftvisor managers as containers of the
//! `raftvisor:local` image on a Docker network of their own (one address
//! each, so faults can cut single links), with security on — a CA of the
//! run, a manager certificate per container for mutual TLS between them and
//! HTTPS on the API, and an admin token — supervising echo containers on
//! the local engine through its socket. This module creates the network,
//! certificates, configs and containers, starts, kills, pauses and removes
//! managers, and tears everything of the run down at the end (collecting
//! the managers' logs first). It never touches containers of other runs:
//! everything it makes carries the run's name.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HostConfig, Ipam, IpamConfig,
    NetworkCreateRequest, NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use raftvisor::wire::ClusterStatus;
use rand::Rng;

use crate::api::{self, Api};
use crate::engine_proxy::{EngineLog, EngineProxy};

/// Ports every manager listens on, at its own address.
pub const API_PORT: u16 = 7000;
pub const PEER_PORT: u16 = 7100;
pub const DNS_PORT: u16 = 8600;
/// Label on every container and the network of a run.
pub const RUN_LABEL: &str = "raftvisor-jepsen.run";
/// Where the managers reach the local engine (bind-mounted socket).
const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// How to build the cluster of one run.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Names the network, containers and directories of the run.
    pub run: String,
    pub image: String,
    pub managers: u64,
    /// The `raftvisor` binary on this machine (for `certs init|issue`).
    pub raftvisor_bin: PathBuf,
    /// The run's directory: certificates, configs, data, logs.
    pub dir: PathBuf,
    /// `FAILPOINTS` given to every manager (builds with fail points only).
    pub failpoints: Option<String>,
    /// Picks the first subnet tried, so parallel runs spread out.
    pub seed: u64,
    /// The run's clock (the history's start): engine calls are timed on it.
    pub clock: Instant,
}

/// One manager container.
#[derive(Debug, Clone)]
pub struct Manager {
    pub id: u64,
    pub ip: Ipv4Addr,
    pub container: String,
    /// Host directory mounted at `/data` (config and Raft data).
    pub dir: PathBuf,
}

impl Manager {
    pub fn api(&self) -> String {
        format!("https://{}:{API_PORT}", self.ip)
    }

    pub fn api_addr(&self) -> String {
        format!("{}:{API_PORT}", self.ip)
    }

    pub fn peer_addr(&self) -> String {
        format!("{}:{PEER_PORT}", self.ip)
    }

    pub fn dns_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, DNS_PORT))
    }

    /// The Raft data directory as the host sees it.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn name(&self) -> String {
        format!("m{}", self.id)
    }
}

/// A running cluster of the run.
pub struct Cluster {
    pub docker: Docker,
    pub api: Api,
    pub options: ClusterOptions,
    pub network: String,
    /// The host's address on the run's network: managers reach published
    /// container ports (health checks) and the harness' proxies there.
    pub gateway: Ipv4Addr,
    subnet_base: [u8; 3],
    managers: Mutex<BTreeMap<u64, Manager>>,
    certs: PathBuf,
    token_file: PathBuf,
    /// Every manager's destructive engine calls (and creations), recorded
    /// by its own proxy of the engine's socket.
    pub engine_log: EngineLog,
    proxies: Mutex<BTreeMap<u64, EngineProxy>>,
    /// Where the proxies' sockets live (short: a Unix socket path is
    /// limited to 108 bytes).
    proxy_dir: PathBuf,
}

impl Cluster {
    /// Creates the network, the certificates and token, and the first
    /// managers; returns once they have elected a leader with all of them
    /// as voters.
    pub async fn create(options: ClusterOptions) -> anyhow::Result<Cluster> {
        let docker = Docker::connect_with_local_defaults()
            .context("cannot reach the Docker Engine")?
            .negotiate_version()
            .await
            .context("cannot reach the Docker Engine")?;
        std::fs::create_dir_all(&options.dir)?;
        let network = format!("rvj-{}", options.run);
        let (subnet_base, gateway) = create_network(&docker, &network, &options).await?;
        let certs = options.dir.join("certs");
        let token_file = options.dir.join("admin.token");
        make_certificates(&options.raftvisor_bin, &certs)?;
        std::fs::write(&token_file, new_token())?;
        let token = std::fs::read_to_string(&token_file)?;
        let api = Api::new(&certs.join("ca.pem"), token.trim())?;
        let engine_log = EngineLog::new(options.clock);
        let proxy_dir = std::env::temp_dir().join(format!("rvj-{}", options.run));
        let cluster = Cluster {
            engine_log,
            proxies: Mutex::new(BTreeMap::new()),
            proxy_dir,
            docker,
            api,
            network,
            gateway,
            subnet_base,
            managers: Mutex::new(BTreeMap::new()),
            certs,
            token_file,
            options,
        };
        match cluster.form().await {
            Ok(()) => Ok(cluster),
            Err(e) => {
                if let Err(cleanup) = cluster.teardown(None).await {
                    tracing::warn!(error = %cleanup, "cleaning up after a failed setup");
                }
                Err(e)
            }
        }
    }

    async fn form(&self) -> anyhow::Result<()> {
        let ids: Vec<u64> = (1..=self.options.managers).collect();
        for &id in &ids {
            self.add_container(id, &ids).await?;
        }
        if let Err(e) = self.wait_for_voters(&ids, Duration::from_secs(60)).await {
            let mut logs = String::new();
            for &id in &ids {
                logs.push_str(&format!("\n--- m{id} ---\n{}", self.log_tail(id, 5).await));
            }
            return Err(e.context(format!("the managers did not form a cluster{logs}")));
        }
        Ok(())
    }

    fn ip_of(&self, id: u64) -> Ipv4Addr {
        let [a, b, c] = self.subnet_base;
        Ipv4Addr::new(a, b, c, 10 + id as u8)
    }

    pub fn managers(&self) -> Vec<Manager> {
        self.managers
            .lock()
            .expect("managers")
            .values()
            .cloned()
            .collect()
    }

    pub fn manager(&self, id: u64) -> Option<Manager> {
        self.managers.lock().expect("managers").get(&id).cloned()
    }

    pub fn next_id(&self) -> u64 {
        self.managers
            .lock()
            .expect("managers")
            .keys()
            .max()
            .copied()
            .unwrap_or(0)
            + 1
    }

    /// Creates and starts the container of manager `id`. With `members`
    /// empty it waits to be added (`POST /v1/cluster/members`).
    pub async fn add_container(&self, id: u64, members: &[u64]) -> anyhow::Result<Manager> {
        if id == 0 || id > 200 {
            bail!("manager ids run from 1 to 200 (asked for {id})");
        }
        let manager = Manager {
            id,
            ip: self.ip_of(id),
            container: format!("rvj-{}-m{id}", self.options.run),
            dir: self.options.dir.join(format!("m{id}")),
        };
        std::fs::create_dir_all(manager.data_dir())?;
        issue_certificate(&self.options.raftvisor_bin, &self.certs, &manager)?;
        self.write_config(&manager, members)?;
        self.start_proxy(id)?;
        self.create_container(&manager).await?;
        self.managers
            .lock()
            .expect("managers")
            .insert(id, manager.clone());
        self.start(id).await?;
        Ok(manager)
    }

    /// The socket manager `id` reaches the engine through.
    fn proxy_socket(&self, id: u64) -> PathBuf {
        self.proxy_dir.join(format!("m{id}.sock"))
    }

    /// Starts manager `id`'s recording proxy of the engine's socket (once:
    /// the socket must exist before the container mounts it).
    fn start_proxy(&self, id: u64) -> anyhow::Result<()> {
        let mut proxies = self.proxies.lock().expect("proxies");
        if let std::collections::btree_map::Entry::Vacant(slot) = proxies.entry(id) {
            slot.insert(EngineProxy::start(
                &self.proxy_socket(id),
                id,
                self.engine_log.clone(),
                self.docker.clone(),
            )?);
        }
        Ok(())
    }

    /// Rewrites manager `id`'s config with `members` (empty: it waits to
    /// be added); takes effect at its next start.
    pub fn rewrite_config(&self, id: u64, members: &[u64]) -> anyhow::Result<()> {
        let manager = self
            .manager(id)
            .ok_or_else(|| anyhow::anyhow!("no manager {id} in this run"))?;
        self.write_config(&manager, members)
    }

    fn write_config(&self, manager: &Manager, members: &[u64]) -> anyhow::Result<()> {
        let config = agent_config(manager, members, |m| self.ip_of(m));
        std::fs::write(manager.dir.join("config.toml"), config)?;
        Ok(())
    }

    async fn create_container(&self, manager: &Manager) -> anyhow::Result<()> {
        let ro = |host: PathBuf, target: &str| format!("{}:{target}:ro", host.display());
        let binds = vec![
            format!("{}:/data", manager.dir.display()),
            ro(self.certs.join("ca.pem"), "/etc/raftvisor/ca.pem"),
            ro(
                self.certs.join(format!("{}.pem", manager.name())),
                "/etc/raftvisor/manager.pem",
            ),
            ro(
                self.certs.join(format!("{}-key.pem", manager.name())),
                "/etc/raftvisor/manager-key.pem",
            ),
            ro(self.token_file.clone(), "/etc/raftvisor/admin.token"),
            // Its own recording proxy of the engine, never the engine itself
            // (unless `JEPSEN_DIRECT_ENGINE=1`, a diagnostic: the engine's
            // own socket, and no record of the managers' calls).
            if std::env::var_os("JEPSEN_DIRECT_ENGINE").is_some_and(|v| v == "1") {
                format!("{DOCKER_SOCKET}:{DOCKER_SOCKET}")
            } else {
                format!(
                    "{}:{DOCKER_SOCKET}",
                    self.proxy_socket(manager.id).display()
                )
            },
        ];
        let mut env = vec!["RAFTVISOR_LOG=info,openraft=warn,hickory_server=warn".to_string()];
        if let Some(failpoints) = &self.options.failpoints {
            env.push(format!("FAILPOINTS={failpoints}"));
        }
        let body = ContainerCreateBody {
            image: Some(self.options.image.clone()),
            cmd: Some(vec![
                "agent".into(),
                "--config".into(),
                "/data/config.toml".into(),
            ]),
            env: Some(env),
            labels: Some(HashMap::from([
                (RUN_LABEL.to_string(), self.options.run.clone()),
                (
                    "raftvisor-jepsen.manager".to_string(),
                    manager.id.to_string(),
                ),
            ])),
            host_config: Some(HostConfig {
                binds: Some(binds),
                network_mode: Some(self.network.clone()),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    self.network.clone(),
                    EndpointSettings {
                        ipam_config: Some(EndpointIpamConfig {
                            ipv4_address: Some(manager.ip.to_string()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new()
            .name(&manager.container)
            .build();
        self.docker
            .create_container(Some(options), body)
            .await
            .with_context(|| format!("cannot create {}", manager.container))?;
        Ok(())
    }

    fn container_of(&self, id: u64) -> anyhow::Result<String> {
        self.manager(id)
            .map(|m| m.container)
            .ok_or_else(|| anyhow::anyhow!("no manager {id} in this run"))
    }

    pub async fn start(&self, id: u64) -> anyhow::Result<()> {
        let container = self.container_of(id)?;
        self.docker
            .start_container(&container, None)
            .await
            .with_context(|| format!("cannot start {container}"))
    }

    /// `kill -9` of the manager's process (the container stops).
    pub async fn kill(&self, id: u64) -> anyhow::Result<()> {
        let container = self.container_of(id)?;
        let options = KillContainerOptionsBuilder::new().signal("KILL").build();
        self.docker
            .kill_container(&container, Some(options))
            .await
            .with_context(|| format!("cannot kill {container}"))
    }

    pub async fn pause(&self, id: u64) -> anyhow::Result<()> {
        let container = self.container_of(id)?;
        self.docker
            .pause_container(&container)
            .await
            .with_context(|| format!("cannot pause {container}"))
    }

    pub async fn unpause(&self, id: u64) -> anyhow::Result<()> {
        let container = self.container_of(id)?;
        self.docker
            .unpause_container(&container)
            .await
            .with_context(|| format!("cannot unpause {container}"))
    }

    /// The container's state as the engine reports it (`running`,
    /// `paused`, `exited`, …), its exit code and main process id.
    pub async fn state(&self, id: u64) -> anyhow::Result<ContainerStatus> {
        let container = self.container_of(id)?;
        let inspect = self
            .docker
            .inspect_container(&container, None)
            .await
            .with_context(|| format!("cannot inspect {container}"))?;
        let state = inspect.state.unwrap_or_default();
        Ok(ContainerStatus {
            status: state
                .status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "unknown".into()),
            exit_code: state.exit_code,
            pid: state.pid.filter(|p| *p > 0).map(|p| p as u32),
            paused: state.paused.unwrap_or(false),
            running: state.running.unwrap_or(false),
        })
    }

    /// The last lines of the manager's log.
    pub async fn log_tail(&self, id: u64, lines: usize) -> String {
        let Ok(container) = self.container_of(id) else {
            return String::new();
        };
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        collect_logs(&self.docker, &container, options).await
    }

    /// Waits until every manager in `voters` reports the same leader and
    /// exactly `voters` as voting members.
    pub async fn wait_for_voters(&self, voters: &[u64], within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let mut last = String::from("no answer yet");
        let mut wanted = voters.to_vec();
        wanted.sort_unstable();
        while Instant::now() < deadline {
            match self.agreed_view(voters).await {
                Ok(view) => {
                    let mut have = api::voters(&view);
                    have.sort_unstable();
                    if have == wanted {
                        return Ok(());
                    }
                    last = format!("voters {have:?}, want {wanted:?}");
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("after {within:?}: {last}")
    }

    /// The cluster view of `ids` if they all name the same leader.
    pub async fn agreed_view(&self, ids: &[u64]) -> anyhow::Result<ClusterStatus> {
        let mut agreed: Option<ClusterStatus> = None;
        for &id in ids {
            let manager = self
                .manager(id)
                .ok_or_else(|| anyhow::anyhow!("no manager {id}"))?;
            let view = self
                .api
                .cluster(&manager.api(), Duration::from_secs(1))
                .await
                .map_err(|e| anyhow::anyhow!("m{id}: {e}"))?;
            let Some(leader) = view.leader_id else {
                bail!("m{id} knows no leader");
            };
            if let Some(first) = &agreed {
                if first.leader_id != Some(leader) {
                    bail!(
                        "m{id} follows m{leader}, m{} follows {:?}",
                        first.this_id,
                        first.leader_id
                    );
                }
            } else {
                agreed = Some(view);
            }
        }
        agreed.ok_or_else(|| anyhow::anyhow!("no managers asked"))
    }

    /// The leader as the first answering manager among `ids` reports it.
    pub async fn leader(&self, ids: &[u64]) -> Option<u64> {
        for &id in ids {
            let Some(manager) = self.manager(id) else {
                continue;
            };
            if let Ok(view) = self
                .api
                .cluster(&manager.api(), Duration::from_millis(500))
                .await
            {
                if let Some(leader) = view.leader_id {
                    return Some(leader);
                }
            }
        }
        None
    }

    /// Writes every manager's log to `logs/m<id>.log` in the run's
    /// directory, then removes the run's containers (managers, and the
    /// workload containers of `cluster_id`) and its network.
    pub async fn teardown(&self, cluster_id: Option<&str>) -> anyhow::Result<()> {
        let logs = self.options.dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        for manager in self.managers() {
            let options = LogsOptionsBuilder::new().stdout(true).stderr(true).build();
            let text = collect_logs(&self.docker, &manager.container, options).await;
            std::fs::write(logs.join(format!("{}.log", manager.name())), text)?;
        }
        let mut labels = vec![format!("{RUN_LABEL}={}", self.options.run)];
        if let Some(id) = cluster_id {
            labels.push(format!("raftvisor.cluster={id}"));
        }
        for label in labels {
            remove_labelled(&self.docker, &label).await?;
        }
        self.proxies.lock().expect("proxies").clear();
        let _ = std::fs::remove_dir_all(&self.proxy_dir);
        // A removed container may hold the network for a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.docker.remove_network(&self.network).await {
                Ok(()) => break,
                Err(e) if Instant::now() > deadline => {
                    return Err(e).with_context(|| format!("cannot remove {}", self.network))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        Ok(())
    }
}

/// What the engine says of a manager container.
#[derive(Debug, Clone)]
pub struct ContainerStatus {
    pub status: String,
    pub exit_code: Option<i64>,
    pub pid: Option<u32>,
    pub paused: bool,
    pub running: bool,
}

/// Removes what earlier runs left behind when they were interrupted: their
/// manager containers and networks (labelled with the run) and the
/// workload containers of their clusters (raftvisor's label for the
/// harness' namespace). Returns how many containers went.
pub async fn remove_leftovers(docker: &Docker) -> anyhow::Result<usize> {
    let mut removed = remove_labelled(docker, RUN_LABEL).await?;
    removed += remove_labelled(docker, "raftvisor.namespace=jepsen").await?;
    let options = bollard::query_parameters::ListNetworksOptionsBuilder::new()
        .filters(&HashMap::from([("label", vec![RUN_LABEL])]))
        .build();
    for network in docker.list_networks(Some(options)).await? {
        if let Some(name) = network.name {
            docker
                .remove_network(&name)
                .await
                .with_context(|| format!("cannot remove the leftover network {name}"))?;
        }
    }
    Ok(removed)
}

/// Removes every container carrying `label` (`key` or `key=value`),
/// running or not.
pub async fn remove_labelled(docker: &Docker, label: &str) -> anyhow::Result<usize> {
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&HashMap::from([("label", vec![label])]))
        .build();
    let containers = docker.list_containers(Some(options)).await?;
    let mut removed = 0;
    for container in containers {
        let Some(id) = container.id else { continue };
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match docker.remove_container(&id, Some(options)).await {
            Ok(()) => removed += 1,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove container {id}")),
        }
    }
    Ok(removed)
}

async fn collect_logs(
    docker: &Docker,
    container: &str,
    options: bollard::query_parameters::LogsOptions,
) -> String {
    let mut stream = docker.logs(container, Some(options));
    let mut text = String::new();
    let collect = async {
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(output) => text.push_str(&String::from_utf8_lossy(&output.into_bytes())),
                Err(e) => {
                    text.push_str(&format!("\n[logs unavailable: {e}]\n"));
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), collect).await;
    strip_ansi(&text)
}

/// The text without terminal colour sequences (`ESC [ … m`).
fn strip_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip to the final byte of the sequence.
            for next in chars.by_ref() {
                if next.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// Creates the run's bridge network on the first free /24 of 10.214.0.0/16.
async fn create_network(
    docker: &Docker,
    name: &str,
    options: &ClusterOptions,
) -> anyhow::Result<([u8; 3], Ipv4Addr)> {
    let mut last_error = None;
    for attempt in 0..64u64 {
        let third = ((options.seed.wrapping_add(attempt * 7)) % 250) as u8 + 1;
        let base = [10, 214, third];
        let gateway = Ipv4Addr::new(10, 214, third, 1);
        let request = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            ipam: Some(Ipam {
                config: Some(vec![IpamConfig {
                    subnet: Some(format!("10.214.{third}.0/24")),
                    gateway: Some(gateway.to_string()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            labels: Some(HashMap::from([(
                RUN_LABEL.to_string(),
                options.run.clone(),
            )])),
            ..Default::default()
        };
        match docker.create_network(request).await {
            Ok(_) => return Ok((base, gateway)),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.expect("at least one attempt")).context("cannot create the run's network")
}

fn run_raftvisor(bin: &Path, args: &[&str]) -> anyhow::Result<()> {
    let output = std::process::Command::new(bin)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    if !output.status.success() {
        bail!(
            "{} {}: {}",
            bin.display(),
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn make_certificates(bin: &Path, dir: &Path) -> anyhow::Result<()> {
    let dir_text = dir.display().to_string();
    run_raftvisor(bin, &["certs", "init", "--dir", &dir_text])
}

fn issue_certificate(bin: &Path, dir: &Path, manager: &Manager) -> anyhow::Result<()> {
    if dir.join(format!("{}.pem", manager.name())).exists() {
        return Ok(());
    }
    let dir_text = dir.display().to_string();
    let ip = manager.ip.to_string();
    let name = manager.name();
    let id = manager.id.to_string();
    run_raftvisor(
        bin,
        &[
            "certs", "issue", "--dir", &dir_text, "--role", "manager", "--name", &name, "--id",
            &id, "--san", &ip,
        ],
    )
}

/// A bootstrap admin token in raftvisor's format.
fn new_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let id: String = (0..12)
        .map(|_| (b'a' + rng.gen_range(0..26)) as char)
        .collect();
    let secret: String = (0..43)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("rvt_{id}.{secret}\n")
}

/// The agent config of `manager` as the container sees its files.
fn agent_config(manager: &Manager, members: &[u64], ip_of: impl Fn(u64) -> Ipv4Addr) -> String {
    let mut text = format!(
        "# Written by raftvisor-jepsen.\n\
         id = {id}\n\
         data_dir = \"/data/data\"\n\
         api_addr = \"{ip}:{API_PORT}\"\n\
         peer_addr = \"{ip}:{PEER_PORT}\"\n\
         dns_addr = \"{ip}:{DNS_PORT}\"\n",
        id = manager.id,
        ip = manager.ip,
    );
    for &member in members {
        let ip = ip_of(member);
        text.push_str(&format!(
            "\n[[members]]\nid = {member}\napi_addr = \"{ip}:{API_PORT}\"\npeer_addr = \"{ip}:{PEER_PORT}\"\n"
        ));
    }
    // Small snapshots and log compaction, so runs also exercise snapshot
    // transfer to lagging and new members.
    text.push_str(
        "\n[raft]\nsnapshot_threshold = 500\nkeep_logs_after_snapshot = 100\n\
         \n[api]\nrequest_timeout_ms = 2000\n\
         \n[tls]\nca_cert = \"/etc/raftvisor/ca.pem\"\ncert = \"/etc/raftvisor/manager.pem\"\nkey = \"/etc/raftvisor/manager-key.pem\"\n\
         \n[auth]\nbootstrap_token_file = \"/etc/raftvisor/admin.token\"\n",
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_sequences_are_stripped_from_logs() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m ready"),
            "2026  INFO ready"
        );
    }

    #[test]
    fn tokens_have_raftvisors_format() {
        let token = new_token();
        let token = token.trim();
        let (id, secret) = token.strip_prefix("rvt_").unwrap().split_once('.').unwrap();
        assert_eq!(id.len(), 12);
        assert!(id.bytes().all(|b| b.is_ascii_lowercase()));
        assert!(secret.len() >= 32);
    }

    #[test]
    fn a_joining_manager_lists_no_members() {
        let manager = Manager {
            id: 6,
            ip: Ipv4Addr::new(10, 214, 3, 16),
            container: "c".into(),
            dir: PathBuf::from("/tmp/m6"),
        };
        let ip_of = |id: u64| Ipv4Addr::new(10, 214, 3, 10 + id as u8);
        let joining = agent_config(&manager, &[], ip_of);
        assert!(!joining.contains("[[members]]"));
        assert!(joining.contains("api_addr = \"10.214.3.16:7000\""));
        let founding = agent_config(&manager, &[1, 2], ip_of);
        assert_eq!(founding.matches("[[members]]").count(), 2);
        assert!(founding.contains("peer_addr = \"10.214.3.12:7100\""));
    }
}
