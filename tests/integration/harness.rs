//! Shared harness of the integration tests: spawns real `raftvisor agent`
//! processes on loopback, each with its own ports and data directory,
//! kills them (SIGKILL) or restarts them, and offers `eventually`-style
//! waits with deadlines instead of fixed sleeps. Every process is killed
//! when the [`Cluster`] is dropped, also when a test fails.
//!
//! Auth: every cluster names `<dir>/bootstrap.token` as its bootstrap token
//! file, which the harness fills with [`ADMIN_TOKEN`] before the start
//! (unless [`Tuning::prefill_token`] is off: then the initialising replica
//! writes one). Every client the harness hands out carries that token.

#![allow(dead_code)]

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raftvisor::client::{Client, ClientOptions};

/// The admin token of every harness cluster (its bootstrap token).
pub const ADMIN_TOKEN: &str =
    "rvt_harness.5f0c3e1a9b7d2468ace013579bdf2468ace013579bdf02468ace13579bdf0246";
use crate::harness_tls::TestCerts;

/// Waits until `check` returns `Ok`, retrying every 50 ms until `within`
/// has passed; then panics with the last error and `what`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(problem) if Instant::now() >= deadline => {
                panic!("{what}: not true after {within:?}: {problem}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A free loopback port below the kernel's ephemeral range (32768 and up),
/// so outgoing connections, which take ephemeral source ports, cannot grab
/// it between this check and the replica's bind. Each test process starts
/// at its own offset and counts up, so parallel tests do not collide.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FIRST: u32 = 12_000;
    const SPAN: u32 = 18_000;
    let start = 1 + (std::process::id() % SPAN) * 13 % SPAN;
    let _ = NEXT.compare_exchange(0, start, Ordering::SeqCst, Ordering::SeqCst);
    loop {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        let tcp_free = TcpListener::bind(("127.0.0.1", port)).is_ok();
        let udp_free = std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if tcp_free && udp_free {
            return port;
        }
    }
}

/// Settings shared by the replicas of one test cluster.
#[derive(Debug, Clone)]
pub struct Tuning {
    pub snapshot_threshold: u64,
    pub keep_logs_after_snapshot: u64,
    pub request_timeout_ms: u64,
    /// More TOML appended to every replica's config (whole sections).
    pub extra_toml: String,
    /// More keys of the `[raft]` section (which the harness writes itself).
    pub extra_raft_toml: String,
    /// More keys of the `[api]` section (which the harness writes itself).
    pub extra_api_toml: String,
    /// Write [`ADMIN_TOKEN`] to the bootstrap token file before the start.
    pub prefill_token: bool,
    /// Plain HTTP (`[tls] insecure = true`) instead of the default TLS.
    pub insecure: bool,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            snapshot_threshold: 10_000,
            keep_logs_after_snapshot: 1_000,
            request_timeout_ms: 3_000,
            extra_toml: String::new(),
            extra_raft_toml: String::new(),
            extra_api_toml: String::new(),
            prefill_token: true,
            insecure: false,
        }
    }
}

/// One replica process of a test cluster.
pub struct ReplicaProcess {
    pub id: u64,
    pub api_addr: String,
    pub peer_addr: String,
    pub dns_addr: String,
    pub data_dir: PathBuf,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
}

impl ReplicaProcess {
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

/// A set of replica processes on loopback.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub replicas: Vec<ReplicaProcess>,
    pub tuning: Tuning,
    /// The `[auth] bootstrap_token_file` of every replica.
    pub token_file: PathBuf,
    /// The cluster CA and the replicas' certificates.
    pub certs: TestCerts,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_raftvisor")
}

/// Runs the CLI with `args` and `token` (as `RAFTVISOR_TOKEN`): (exit
/// code, stdout, stderr).
pub fn run_cli(args: &[String], token: &str) -> (i32, String, String) {
    let output = Command::new(binary())
        .args(args)
        .env("RAFTVISOR_TOKEN", token)
        .output()
        .expect("run the CLI");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

impl Cluster {
    /// Starts `n` replicas forming one cluster.
    pub async fn start(n: usize) -> Cluster {
        Cluster::start_with(n, Tuning::default()).await
    }

    pub async fn start_with(n: usize, tuning: Tuning) -> Cluster {
        Cluster::start_seeded(n, tuning, None, |_| {}).await
    }

    /// Starts `n` replicas after `seed` has prepared each one (its config
    /// is written, it has not run yet), e.g. with `cluster restore`.
    /// `secrets_key` is the cluster's secrets key to use instead of a new
    /// one (a restored cluster unseals what the backed-up one sealed).
    pub async fn start_seeded(
        n: usize,
        tuning: Tuning,
        secrets_key: Option<&Path>,
        seed: impl Fn(&ReplicaProcess),
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        if let Some(key) = secrets_key {
            std::fs::copy(key, dir.path().join("secrets.key")).expect("copy the secrets key");
        }
        let token_file = dir.path().join("bootstrap.token");
        if tuning.prefill_token {
            std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).expect("write token file");
        }
        let certs = TestCerts::create(dir.path(), tuning.insecure);
        let mut cluster = Cluster {
            dir,
            replicas: Vec::new(),
            tuning,
            token_file,
            certs,
        };
        for id in 1..=n as u64 {
            cluster.define_replica(id);
        }
        let members: Vec<(u64, String, String)> = cluster
            .replicas
            .iter()
            .map(|r| (r.id, r.api_addr.clone(), r.peer_addr.clone()))
            .collect();
        for index in 0..cluster.replicas.len() {
            cluster.write_config(index, &members);
            seed(&cluster.replicas[index]);
            cluster.spawn(index);
        }
        cluster.wait_for_leader().await;
        cluster
    }

    fn define_replica(&mut self, id: u64) -> usize {
        let data_dir = self.dir.path().join(format!("replica-{id}"));
        self.replicas.push(ReplicaProcess {
            id,
            api_addr: format!("127.0.0.1:{}", free_port()),
            peer_addr: format!("127.0.0.1:{}", free_port()),
            dns_addr: format!("127.0.0.1:{}", free_port()),
            config_path: self.dir.path().join(format!("replica-{id}.toml")),
            log_path: self.dir.path().join(format!("replica-{id}.log")),
            data_dir,
            child: None,
        });
        self.replicas.len() - 1
    }

    fn write_config(&self, index: usize, members: &[(u64, String, String)]) {
        let r = &self.replicas[index];
        let mut text = format!(
            "id = {}\ndata_dir = {:?}\napi_addr = {:?}\npeer_addr = {:?}\ndns_addr = {:?}\n",
            r.id, r.data_dir, r.api_addr, r.peer_addr, r.dns_addr
        );
        for (id, api, peer) in members {
            text.push_str(&format!(
                "[[members]]\nid = {id}\napi_addr = {api:?}\npeer_addr = {peer:?}\n"
            ));
        }
        // Slower timings than the defaults: parallel tests on two cores
        // starve replicas of CPU for longer than a tuned election timeout.
        text.push_str(&format!(
            "[raft]\nheartbeat_ms = 50\nelection_min_ms = 150\nelection_max_ms = 300\nsnapshot_threshold = {}\nkeep_logs_after_snapshot = {}\n{}[api]\nrequest_timeout_ms = {}\n",
            self.tuning.snapshot_threshold, self.tuning.keep_logs_after_snapshot, self.tuning.extra_raft_toml, self.tuning.request_timeout_ms
        ));
        text.push_str(&self.tuning.extra_api_toml);
        let key_file = self.dir.path().join("secrets.key");
        if !key_file.exists() {
            let key: [u8; 32] = rand::random();
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            std::fs::write(&key_file, hex).expect("write the secrets key");
        }
        text.push_str(&format!("[secrets]\nkey_file = {key_file:?}\n"));
        text.push_str(&format!(
            "[auth]\nbootstrap_token_file = {:?}\n",
            self.token_file
        ));
        text.push_str(&self.certs.toml(r.id));
        text.push_str(&self.tuning.extra_toml);
        std::fs::write(&r.config_path, text).expect("write config");
    }

    fn spawn(&mut self, index: usize) {
        let r = &mut self.replicas[index];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&r.log_path)
            .expect("open log");
        let child = Command::new(binary())
            .args(["agent", "--config"])
            .arg(&r.config_path)
            .env("RAFTVISOR_LOG", "info,openraft=error,hickory_server=warn")
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn raftvisor agent");
        r.child = Some(child);
    }

    /// Adds a replica that starts with no initial members and waits to be
    /// added with `cluster add-member`. Returns its index.
    pub fn spawn_joiner(&mut self, id: u64) -> usize {
        let index = self.define_replica(id);
        self.write_config(index, &[]);
        self.spawn(index);
        index
    }

    /// [`Cluster::spawn_joiner`], returning the joiner's API and peer
    /// addresses (what `add_member` needs).
    pub fn spawn_joiner_addrs(&mut self, id: u64) -> (String, String) {
        let index = self.spawn_joiner(id);
        let replica = &self.replicas[index];
        (replica.api_addr.clone(), replica.peer_addr.clone())
    }

    pub fn index_of(&self, id: u64) -> usize {
        self.replicas
            .iter()
            .position(|r| r.id == id)
            .expect("known replica id")
    }

    pub fn replica(&self, id: u64) -> &ReplicaProcess {
        &self.replicas[self.index_of(id)]
    }

    /// SIGKILLs replica `id`.
    pub fn kill(&mut self, id: u64) {
        let index = self.index_of(id);
        if let Some(mut child) = self.replicas[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts replica `id` again on its data directory.
    pub fn restart(&mut self, id: u64) {
        let index = self.index_of(id);
        assert!(
            self.replicas[index].child.is_none(),
            "replica {id} is still running"
        );
        self.spawn(index);
    }

    /// Waits until replica `id` exits by itself (as an agent giving up
    /// leadership does), for at most `within`; returns its exit status and
    /// leaves it stopped, ready for [`Cluster::restart`] — the harness's
    /// stand-in for a restart policy.
    pub async fn wait_for_exit(
        &mut self,
        id: u64,
        within: Duration,
    ) -> Option<std::process::ExitStatus> {
        let index = self.index_of(id);
        let deadline = Instant::now() + within;
        loop {
            let status = self.replicas[index]
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if status.is_some() {
                self.replicas[index].child = None;
                return status;
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs replica `id` in the foreground until it exits or `within`
    /// passes; returns (exited, output). Used to see a refusal to start.
    pub fn run_to_exit(
        &mut self,
        id: u64,
        within: Duration,
    ) -> (Option<std::process::ExitStatus>, String) {
        let index = self.index_of(id);
        self.spawn(index);
        let deadline = Instant::now() + within;
        loop {
            let status = self.replicas[index]
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if status.is_some() || Instant::now() >= deadline {
                if status.is_some() {
                    self.replicas[index].child = None;
                }
                return (status, self.replicas[index].log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs the CLI against replica `id`: (exit code, stdout, stderr).
    pub fn cli(&self, id: u64, args: &[&str]) -> (i32, String, String) {
        let mut all = vec!["--addr".to_string(), self.replica(id).api_addr.clone()];
        all.extend(self.certs.cli_args());
        all.extend(args.iter().map(|a| a.to_string()));
        run_cli(&all, &self.admin_token())
    }

    /// The cluster's admin token: what its bootstrap token file holds
    /// (empty while the file is not written yet).
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(&self.token_file)
            .map(|t| t.trim().to_string())
            .unwrap_or_default()
    }

    pub fn client_for(&self, id: u64) -> Client {
        self.client_with_token(&[id], Some(self.admin_token()))
    }

    /// A client that knows every replica's address.
    pub fn client(&self) -> Client {
        let ids: Vec<u64> = self.replicas.iter().map(|r| r.id).collect();
        self.client_with_token(&ids, Some(self.admin_token()))
    }

    /// A client of replicas `ids` that sends `token` (or none).
    pub fn client_with_token(&self, ids: &[u64], token: Option<String>) -> Client {
        let mut options =
            ClientOptions::new(ids.iter().map(|id| self.replica(*id).api_addr.clone()));
        options.timeout = Duration::from_secs(10);
        options.token = token;
        self.certs.configure(&mut options);
        Client::new(options).expect("client")
    }

    /// `GET /v1/cluster` of replica `id`.
    pub async fn status_of(&self, id: u64) -> Result<raftvisor::wire::ClusterStatus, String> {
        self.client_for(id)
            .cluster_status()
            .await
            .map_err(|e| format!("replica {id}: {e}"))
    }

    /// Sets fail point `name` of replica `id` to `actions`, or removes it
    /// (`None`); needs a build with the `failpoints` feature.
    pub async fn fail_point(&self, id: u64, name: &str, actions: Option<&str>) {
        let response = self
            .try_fail_point(id, name, actions)
            .await
            .expect("fail point request");
        assert!(response.status().is_success(), "{response:?}");
    }

    /// [`Cluster::fail_point`] that hands back a request that got no
    /// answer: a crash point can kill the replica before its answer leaves.
    pub async fn try_fail_point(
        &self,
        id: u64,
        name: &str,
        actions: Option<&str>,
    ) -> reqwest::Result<reqwest::Response> {
        let url = format!("{}/v1/debug/failpoints/{name}", self.api_url(id));
        let request = match actions {
            Some(actions) => self.http().put(url).body(actions.to_string()),
            None => self.http().delete(url),
        };
        request.send().await
    }

    /// The API base URL of replica `id` (`https://…`).
    pub fn api_url(&self, id: u64) -> String {
        self.certs.url(&self.replica(id).api_addr)
    }

    /// A raw HTTP client that trusts the cluster's CA and sends the admin
    /// token on every request.
    pub fn http(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", self.admin_token())
                .parse()
                .expect("a token is a valid header"),
        );
        self.certs
            .http_builder()
            .default_headers(headers)
            .build()
            .expect("an HTTP client")
    }

    /// The ids of the replicas this harness runs.
    pub fn running_ids(&mut self) -> Vec<u64> {
        self.replicas
            .iter_mut()
            .filter_map(|r| r.is_running().then_some(r.id))
            .collect()
    }

    /// Waits until every running replica names the same leader, which is
    /// itself running, and returns it.
    pub async fn wait_for_leader(&mut self) -> u64 {
        let running = self.running_ids();
        let this = &*self;
        eventually(
            "one leader known to every running replica",
            Duration::from_secs(20),
            || {
                // Made anew each round: without a prefilled token file the
                // token appears only once the cluster has written it.
                let clients: Vec<(u64, Client)> = running
                    .iter()
                    .map(|id| (*id, this.client_for(*id)))
                    .collect();
                let running = running.clone();
                async move {
                    let mut leaders = Vec::new();
                    for (id, client) in &clients {
                        let status = client
                            .cluster_status()
                            .await
                            .map_err(|e| format!("replica {id}: {e}"))?;
                        leaders.push(
                            status
                                .leader_id
                                .ok_or_else(|| format!("replica {id} knows no leader"))?,
                        );
                    }
                    leaders.dedup();
                    match leaders.as_slice() {
                        [leader] if running.contains(leader) => Ok(*leader),
                        other => Err(format!("leaders seen: {other:?}")),
                    }
                }
            },
        )
        .await
    }

    /// Waits until replica `id` has built or installed a snapshot.
    pub async fn wait_for_snapshot(&self, id: u64) {
        let client = self.client_for(id);
        eventually(
            &format!("replica {id} has a snapshot"),
            Duration::from_secs(10),
            || async {
                let status = client.cluster_status().await.map_err(|e| e.to_string())?;
                if status.snapshot_index > 0 {
                    Ok(())
                } else {
                    Err("no snapshot yet".into())
                }
            },
        )
        .await
    }

    /// Prints every replica's log (for failure diagnosis).
    pub fn dump_logs(&self) {
        for r in &self.replicas {
            eprintln!("===== replica {} log =====\n{}", r.id, tail(&r.log(), 60));
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for r in &mut self.replicas {
            if let Some(mut child) = r.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            self.dump_logs();
        }
    }
}

/// Copies a directory tree (to keep a pristine data directory).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy file");
        }
    }
}

/// Writes keys under a prefix until stopped (at most 240 s or 100,000
/// writes), timing each acknowledgement.
pub struct TimedWriter {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<Written>,
}

/// What a [`TimedWriter`] wrote.
pub struct Written {
    pub prefix: String,
    pub acknowledged: Vec<String>,
    pub failed: u32,
    pub longest_gap: Duration,
}

impl TimedWriter {
    pub fn start(client: &Client, prefix: &str) -> TimedWriter {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let client = client.clone();
        let prefix = prefix.to_string();
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(240);
            let mut written = Written {
                prefix,
                acknowledged: Vec::new(),
                failed: 0,
                longest_gap: Duration::ZERO,
            };
            let mut last_ack = std::time::Instant::now();
            let mut n = 0u32;
            while !flag.load(std::sync::atomic::Ordering::Relaxed)
                && std::time::Instant::now() < deadline
                && n < 100_000
            {
                n += 1;
                let key = format!("{}{n}", written.prefix);
                match client.kv_put(&key, b"acknowledged", 0, None).await {
                    Ok(true) => {
                        written.longest_gap = written.longest_gap.max(last_ack.elapsed());
                        last_ack = std::time::Instant::now();
                        written.acknowledged.push(key);
                    }
                    _ => written.failed += 1,
                }
            }
            written
        });
        TimedWriter { stop, task }
    }

    pub async fn stop(self) -> Written {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

impl Written {
    /// Every acknowledged key is readable (a linearizable read); prints
    /// the counts and the longest gap between acknowledgements.
    pub async fn all_readable(&self, client: &Client, what: &str) {
        let stored = client
            .kv_list(&self.prefix, raftvisor::client::Consistency::Linearizable)
            .await
            .unwrap();
        let stored: std::collections::BTreeSet<String> =
            stored.into_iter().map(|p| p.key).collect();
        assert!(!self.acknowledged.is_empty());
        for key in &self.acknowledged {
            assert!(stored.contains(key), "acknowledged {key} is lost");
        }
        eprintln!(
            "{what}: {} writes acknowledged, {} refused or failed, longest gap between acknowledgements {} ms",
            self.acknowledged.len(),
            self.failed,
            self.longest_gap.as_millis()
        );
    }
}
