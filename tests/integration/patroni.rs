//! Debian's Patroni runs three PostgreSQL nodes with raftvisor as its
//! Consul DCS (sessions with TTLs, `?acquire` locks, blocking reads): it
//! elects a primary; the raftvisor leader is killed and Patroni's primary
//! keeps its leader lock for longer than the lock's TTL; then the primary
//! (Patroni and its PostgreSQL) is killed and Patroni promotes a replica
//! once the dead primary's session expires on raftvisor's new leader.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{eventually, free_port, Cluster, ADMIN_TOKEN};

const PATRONI: &str = "/usr/bin/patroni";
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// Patroni's leader-lock TTL (it asks raftvisor for half, Consul-style).
const TTL_S: u64 = 20;

struct Node {
    name: String,
    rest: u16,
    data_dir: PathBuf,
    child: Option<std::process::Child>,
}

/// Three Patroni nodes; every process they started dies with the test.
struct Patroni {
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

fn chown_to_postgres(path: &Path) {
    let status = std::process::Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()
        .expect("run chown");
    assert!(status.success(), "chown {path:?}");
}

impl Patroni {
    fn start(cluster: &Cluster, replica: u64) -> Patroni {
        for needed in [PATRONI, PG_BIN] {
            assert!(
                Path::new(needed).exists(),
                "{needed} is missing: apt-get install patroni postgresql python3-consul (scripts/test.sh installs them)"
            );
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = dir.path().join("ca.pem");
        std::fs::copy(&cluster.certs.ca, &ca).expect("copy the CA");
        let api = cluster.replica(replica).api_addr.clone();
        let mut nodes = Vec::new();
        for i in 1..=3 {
            let name = format!("pg{i}");
            let rest = free_port();
            let pg_port = free_port();
            let data_dir = dir.path().join(&name);
            let config = format!(
                r#"scope: rvtest
namespace: /service/
name: {name}
restapi:
  listen: 127.0.0.1:{rest}
  connect_address: 127.0.0.1:{rest}
consul:
  host: {api}
  scheme: https
  cacert: {ca}
  verify: true
  token: {ADMIN_TOKEN}
  register_service: false
bootstrap:
  dcs:
    ttl: {TTL_S}
    loop_wait: 2
    retry_timeout: 6
    maximum_lag_on_failover: 1048576
  initdb:
  - encoding: UTF8
  pg_hba:
  - local all all trust
  - host replication replicator 127.0.0.1/32 md5
  - host all all 127.0.0.1/32 md5
postgresql:
  listen: 127.0.0.1:{pg_port}
  connect_address: 127.0.0.1:{pg_port}
  data_dir: {data}
  bin_dir: {PG_BIN}
  pgpass: {pgpass}
  authentication:
    superuser:
      username: postgres
      password: supersecret
    replication:
      username: replicator
      password: replsecret
  parameters:
    unix_socket_directories: {sockets}
"#,
                ca = ca.display(),
                data = data_dir.display(),
                pgpass = dir.path().join(format!("pgpass-{name}")).display(),
                sockets = dir.path().display(),
            );
            std::fs::write(dir.path().join(format!("{name}.yml")), config).expect("write config");
            nodes.push(Node {
                name,
                rest,
                data_dir,
                child: None,
            });
        }
        chown_to_postgres(dir.path());
        let mut patroni = Patroni { nodes, dir };
        for i in 0..3 {
            patroni.spawn(i);
        }
        patroni
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", node.name)))
            .expect("log file");
        let child = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--", PATRONI])
            .arg(self.dir.path().join(format!("{}.yml", node.name)))
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start patroni");
        node.child = Some(child);
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let text = std::fs::read_to_string(self.dir.path().join(format!("{}.log", n.name)))
                    .unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                format!(
                    "--- {} ---\n{}",
                    n.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Kills node `i`'s Patroni and its PostgreSQL (which runs in a
    /// session of its own) with SIGKILL.
    fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(mut child) = node.child.take() {
            let pid = child.id() as i32;
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let _ = child.wait();
        }
        let pidfile = node.data_dir.join("postmaster.pid");
        if let Some(pid) = std::fs::read_to_string(pidfile)
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse::<i32>().ok())
        {
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    /// Patroni's view of the cluster as (name, role, state), asked of the
    /// first node in `alive` that answers.
    async fn members(&self, alive: &[usize]) -> Result<Vec<(String, String, String)>, String> {
        let mut last = String::new();
        for i in alive {
            let url = format!("http://127.0.0.1:{}/cluster", self.nodes[*i].rest);
            match reqwest::get(&url).await {
                Ok(response) => {
                    let body: Value = response.json().await.map_err(|e| e.to_string())?;
                    return Ok(body["members"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .map(|m| {
                            let field = |f: &str| m[f].as_str().unwrap_or_default().to_string();
                            (field("name"), field("role"), field("state"))
                        })
                        .collect());
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }

    /// Waits for a running leader other than `not` and `replicas` running
    /// replicas, as the nodes in `alive` see them; returns the leader's name.
    async fn wait_for_primary(
        &self,
        alive: &[usize],
        replicas: usize,
        not: Option<&str>,
        within: Duration,
    ) -> String {
        eventually("Patroni has a primary and its replicas", within, || async {
            let members = self.members(alive).await?;
            let running = |s: &str| s == "running" || s == "streaming";
            let leader = members.iter().find(|(name, role, state)| {
                role == "leader" && running(state) && Some(name.as_str()) != not
            });
            let streaming = members
                .iter()
                .filter(|(name, role, state)| {
                    role != "leader" && running(state) && Some(name.as_str()) != not
                })
                .count();
            match leader {
                Some((name, _, _)) if streaming >= replicas => Ok(name.clone()),
                _ => Err(format!("{members:?}\n{}", self.logs())),
            }
        })
        .await
    }

    fn index_of(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .expect("a node")
    }
}

impl Drop for Patroni {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn patroni_keeps_its_leader_lock_across_a_raftvisor_failover_and_fails_over_postgres() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    // Patroni speaks to one replica; not the one about to be killed.
    let contact = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let mut patroni = Patroni::start(&cluster, contact);
    let primary = patroni
        .wait_for_primary(&[0, 1, 2], 2, None, Duration::from_secs(180))
        .await;

    // raftvisor's leader dies: its successor re-arms every session, and
    // Patroni, renewing through a surviving replica, keeps the lock.
    cluster.kill(leader);
    let killed_at = Instant::now();
    let hold = Duration::from_secs(TTL_S + 10);
    while killed_at.elapsed() < hold {
        let members = patroni.members(&[0, 1, 2]).await.unwrap_or_default();
        let leaders: Vec<&str> = members
            .iter()
            .filter(|(_, role, _)| role == "leader")
            .map(|(name, _, _)| name.as_str())
            .collect();
        assert!(
            leaders.is_empty() || leaders == [primary.as_str()],
            "the primary {primary} lost its lock while raftvisor failed over: {members:?}\n{}",
            patroni.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let still = patroni
        .wait_for_primary(&[0, 1, 2], 2, None, Duration::from_secs(30))
        .await;
    assert_eq!(
        still, primary,
        "the primary is unchanged after raftvisor's failover"
    );

    // The primary dies for good: its session runs out on raftvisor's
    // leader, the lock key goes with it, and a replica is promoted.
    let dead = patroni.index_of(&primary);
    patroni.kill(dead);
    let killed_at = Instant::now();
    let alive: Vec<usize> = (0..3).filter(|i| *i != dead).collect();
    let promoted = patroni
        .wait_for_primary(&alive, 1, Some(&primary), Duration::from_secs(120))
        .await;
    assert_ne!(promoted, primary, "a replica took over");
    // PostgreSQL itself agrees: Patroni's /primary answers 200 only on a
    // node whose PostgreSQL runs as the primary.
    let rest = patroni.nodes[patroni.index_of(&promoted)].rest;
    eventually(
        "the promoted node serves as primary",
        Duration::from_secs(30),
        || async {
            let status = reqwest::get(format!("http://127.0.0.1:{rest}/primary"))
                .await
                .map_err(|e| e.to_string())?
                .status();
            if status == 200 {
                Ok(())
            } else {
                Err(format!("GET /primary: {status}"))
            }
        },
    )
    .await;
    eprintln!(
        "patroni: {promoted} promoted {:.1} s after {primary} was killed",
        killed_at.elapsed().as_secs_f64()
    );
}
