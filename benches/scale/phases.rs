//! The measuring phases of the scale benchmark, in the order they run on
//! one cluster: nodes and placement from empty, steady-state CPU, one
//! service changed, one node lost, a follower's snapshot and restart.
//! Every wait is bounded by a deadline; a phase that cannot finish
//! records what it got so far.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use raftvisor::replica::Replica;
use raftvisor::runtime::memory::{MemoryRuntime, Tap, Tapped};
use raftvisor::state::{Command, InstanceState};

use crate::cluster::{self, Member};
use crate::report::{percentile, Change, NodeLoss, Params, Placement, Report, Restart, Steady};
use crate::{node_endpoint, node_name, service_name, service_spec, NAMESPACE};

/// What the phases share.
pub struct Bench<'a> {
    pub params: &'a Params,
    pub members: &'a mut [Member],
    /// The in-memory engine of node `n` at index `n`.
    pub memory: &'a [Arc<MemoryRuntime>],
    pub tap: &'a Tap,
    /// The bootstrap token file, written once the cluster is initialised.
    pub token_file: std::path::PathBuf,
    /// Its token, read by [`Bench::run`].
    pub token: String,
    pub http: reqwest::Client,
}

impl Bench<'_> {
    fn phase_timeout(&self) -> Duration {
        Duration::from_secs(self.params.phase_timeout_s)
    }

    /// Runs every phase, filling `report`; stops at the first phase that
    /// cannot be measured.
    pub async fn run(&mut self, report: &mut Report) -> Result<(), String> {
        let leader = wait_for_leader(self.members, Duration::from_secs(30)).await?;
        println!("leader: replica {}", leader.id);
        self.token = wait_for_token(&self.token_file, Duration::from_secs(30)).await?;
        report.nodes_registered_s = Some(self.register_nodes(&leader).await?);
        let placement = self.place(&leader).await?;
        let placed_all = placement.placed_s.is_some() && placement.running_s.is_some();
        report.placement = Some(placement);
        if !placed_all {
            return Err("not every instance was placed and running: later phases skipped".into());
        }
        report.steady = Some(self.steady().await?);
        report.change = Some(self.change().await?);
        report.node_loss = Some(self.lose_node().await?);
        report.restart = Some(self.restart_follower().await?);
        Ok(())
    }

    async fn register_nodes(&self, leader: &Arc<Replica>) -> Result<f64, String> {
        let started = Instant::now();
        let nodes: Vec<Command> = (0..self.params.nodes)
            .map(|n| Command::PutNode {
                name: node_name(n),
                spec: serde_json::from_value(serde_json::json!({
                    "provider": "static",
                    "docker_endpoint": node_endpoint(n),
                    "address": format!("10.{}.{}.{}", n / 65_536 % 256, n / 256 % 256, n % 256),
                }))
                .expect("node spec"),
                expected_version: None,
            })
            .collect();
        let errors = write_all(leader, nodes, self.params.in_flight).await;
        if let Some(e) = errors.first() {
            return Err(format!("{} node writes failed, first: {e}", errors.len()));
        }
        let took = started.elapsed().as_secs_f64();
        println!("{} nodes registered in {took:.2} s", self.params.nodes);
        Ok(took)
    }

    /// 1. Placement from an empty cluster, the services written meanwhile.
    async fn place(&self, leader: &Arc<Replica>) -> Result<Placement, String> {
        let params = self.params;
        let leader_api = format!("127.0.0.1:{}", params.port_base + leader.id as u16);
        let batches_before = write_batches(&self.http, &leader_api, &self.token).await;
        let index_before = leader.sm.read(|s| s.applied_index);
        let instances = params.services * params.replicas;
        let services: Vec<Command> = (0..params.services)
            .map(|i| Command::PutService {
                namespace: NAMESPACE.into(),
                name: service_name(i),
                spec: service_spec(params.replicas, None),
                expected_version: None,
            })
            .collect();
        let start = Instant::now();
        let mut writer = Some({
            let replica = leader.clone();
            let in_flight = params.in_flight;
            tokio::spawn(async move {
                let errors = write_all(&replica, services, in_flight).await;
                (Instant::now(), errors)
            })
        });
        let mut placement = Placement {
            instances,
            ..Placement::default()
        };
        let deadline = start + self.phase_timeout();
        let mut last_print = Instant::now();
        let mut written = None;
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if writer.as_ref().is_some_and(|w| w.is_finished()) {
                let (at, errors) = writer
                    .take()
                    .expect("writer")
                    .await
                    .map_err(|e| e.to_string())?;
                if let Some(e) = errors.first() {
                    return Err(format!(
                        "{} service writes failed, first: {e}",
                        errors.len()
                    ));
                }
                written = Some(at.duration_since(start));
            }
            let (placed, running) = placement_progress(leader);
            let elapsed = start.elapsed().as_secs_f64();
            if placement.placed_s.is_none() && placed >= instances {
                placement.placed_s = Some(elapsed);
            }
            if running >= instances && written.is_some() {
                placement.running_s = Some(elapsed);
                break;
            }
            if last_print.elapsed() >= Duration::from_secs(5) {
                println!("  t={elapsed:6.1}s placed {placed:7} running {running:7} of {instances}");
                last_print = Instant::now();
            }
            let stopped = self.members.iter().any(Member::stopped_itself);
            if Instant::now() > deadline || stopped {
                placement.placed_at_timeout = placed;
                println!(
                    "  {}: {placed} placed, {running} running of {instances}",
                    if stopped {
                        "a replica stopped itself"
                    } else {
                        "TIMEOUT"
                    }
                );
                break;
            }
        }
        if let Some(w) = writer.take() {
            w.abort();
        }
        placement.services_written_s = written.map_or(f64::NAN, |d| d.as_secs_f64());
        placement.placements_per_s = placement.placed_s.map(|t| instances as f64 / t);
        placement.placements_committed = leader
            .sm
            .read(|s| s.instances.values().map(|i| i.generation).sum());
        placement.raft_entries = leader.sm.read(|s| s.applied_index) - index_before;
        if let (Some(before), Some(after)) = (
            batches_before,
            write_batches(&self.http, &leader_api, &self.token).await,
        ) {
            placement.commands_written = Some((after.0 - before.0) as u64);
            placement.write_batches = Some((after.1 - before.1) as u64);
        }
        println!("placement: {placement:?}");
        Ok(placement)
    }

    /// 2. The leader's CPU with nothing changing.
    async fn steady(&self) -> Result<Steady, String> {
        let leader = wait_for_leader(self.members, Duration::from_secs(10)).await?;
        settle(self.tap, Duration::from_secs(2), Duration::from_secs(30)).await;
        let cpu_before: Vec<(u64, Duration)> = self
            .members
            .iter()
            .map(|m| (m.id, crate::cpu::threads_cpu(&cluster::thread_prefix(m.id))))
            .collect();
        let index_before = leader.sm.read(|s| s.applied_index);
        let t = Instant::now();
        tokio::time::sleep(Duration::from_secs(self.params.cpu_window_s)).await;
        let wall = t.elapsed().as_secs_f64();
        let mut steady = Steady {
            window_s: wall,
            leader: leader.id,
            raft_entries_in_window: leader.sm.read(|s| s.applied_index) - index_before,
            ..Steady::default()
        };
        for (id, before) in cpu_before {
            let used = crate::cpu::threads_cpu(&cluster::thread_prefix(id)).saturating_sub(before);
            let pct = used.as_secs_f64() / wall * 100.0;
            if id == leader.id {
                steady.leader_cpu_pct = pct;
            } else {
                steady.followers_cpu_pct.push(pct);
            }
        }
        println!("steady: {steady:?}");
        Ok(steady)
    }

    /// 3. One service changed at a time.
    async fn change(&self) -> Result<Change, String> {
        let params = self.params;
        let leader = wait_for_leader(self.members, Duration::from_secs(10)).await?;
        let mut change = Change::default();
        for trial in 0..params.changes {
            // Services spread over the whole range, none changed twice.
            let name = service_name((trial * 7_919) % params.services);
            let mut events = self.tap.subscribe();
            let t0 = Instant::now();
            let written = leader
                .write(Command::PutService {
                    namespace: NAMESPACE.into(),
                    name: name.clone(),
                    spec: service_spec(params.replicas, Some(trial + 1)),
                    expected_version: None,
                })
                .await;
            if let Err(e) = written {
                return Err(format!("change of {name}: {e}"));
            }
            let version = leader.sm.read(|s| {
                s.services
                    .get(&(NAMESPACE.to_string(), name.clone()))
                    .map_or(0, |svc| svc.version)
            });
            let (first, all) = watch_change(
                &mut events,
                &name,
                version,
                params.replicas,
                t0,
                Duration::from_secs(15),
            )
            .await;
            change.trials += 1;
            match first {
                Some(ms) => change.first_action_ms.push(ms),
                None => change.missed += 1,
            }
            if let Some(ms) = all {
                change.all_started_ms.push(ms);
            }
        }
        println!(
            "change: {} trials, first action p50 {:?} p99 {:?} ms, all started p50 {:?} ms, missed {}",
            change.trials,
            percentile(&change.first_action_ms, 50.0),
            percentile(&change.first_action_ms, 99.0),
            percentile(&change.all_started_ms, 50.0),
            change.missed
        );
        Ok(change)
    }

    /// 4. The node with the most instances loses its engine.
    async fn lose_node(&self) -> Result<NodeLoss, String> {
        let leader = wait_for_leader(self.members, Duration::from_secs(10)).await?;
        settle(self.tap, Duration::from_secs(1), Duration::from_secs(30)).await;
        let (lost, slots) = leader.sm.read(|s| {
            let mut by_node: HashMap<&str, HashSet<(String, u32)>> = HashMap::new();
            for i in s.instances.values() {
                if let Some(node) = &i.node {
                    by_node
                        .entry(node.as_str())
                        .or_default()
                        .insert((i.service.clone(), i.slot));
                }
            }
            by_node
                .into_iter()
                .max_by_key(|(_, slots)| slots.len())
                .map(|(node, slots)| (node.to_string(), slots))
                .unwrap_or_default()
        });
        let lost_index: usize = lost
            .trim_start_matches("node-")
            .parse()
            .map_err(|_| format!("no node to lose ({lost:?})"))?;
        let mut node_loss = NodeLoss {
            node: lost.clone(),
            instances: slots.len(),
            ..NodeLoss::default()
        };
        let t0 = Instant::now();
        self.memory[lost_index].set_unreachable(true);
        let deadline = t0 + Duration::from_secs(30).min(self.phase_timeout());
        loop {
            let moved = leader.sm.read(|s| {
                s.instances
                    .values()
                    .filter(|i| {
                        i.state == InstanceState::Running
                            && i.node.as_deref().is_some_and(|n| n != lost)
                            && slots.contains(&(i.service.clone(), i.slot))
                    })
                    .count()
            });
            if moved >= slots.len() {
                node_loss.rescheduled_s = Some(t0.elapsed().as_secs_f64());
                break;
            }
            if Instant::now() > deadline {
                node_loss.moved_at_timeout = moved;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        println!("node loss: {node_loss:?}");
        Ok(node_loss)
    }

    /// 5. A follower snapshots the full state, is stopped and started again.
    async fn restart_follower(&mut self) -> Result<Restart, String> {
        let leader = wait_for_leader(self.members, Duration::from_secs(10)).await?;
        let bound = Duration::from_secs(60).min(self.phase_timeout());
        let port_base = self.params.port_base;
        let follower = self
            .members
            .iter_mut()
            .find(|m| m.id != leader.id && m.replica().is_some())
            .ok_or("no follower to restart")?;
        let replica = follower.replica().expect("running").clone();
        let mut restart = Restart {
            replica: follower.id,
            ..Restart::default()
        };
        let applied = replica.metrics().last_applied.map_or(0, |l| l.index);
        let t0 = Instant::now();
        replica
            .raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| e.to_string())?;
        while t0.elapsed() < bound {
            if replica
                .metrics()
                .snapshot
                .is_some_and(|s| s.index >= applied)
            {
                restart.snapshot_build_s = Some(t0.elapsed().as_secs_f64());
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let data_dir = replica.config.data_dir.clone();
        drop(replica);
        restart.snapshot_bytes = dir_bytes(&data_dir.join("snapshots"));
        let t0 = Instant::now();
        let stopped = follower.stop().await;
        restart.drain_s = t0.elapsed().as_secs_f64();
        restart.abandoned_tasks = stopped
            .map(|s| s.abandoned.iter().map(|t| t.to_string()).collect())
            .unwrap_or_default();
        let follower_api = format!("127.0.0.1:{}", port_base + follower.id as u16);
        let target = leader.sm.read(|s| s.applied_index);
        let started = follower.restart().await?;
        let replica = follower.replica().expect("restarted").clone();
        while started.elapsed() < bound
            && (restart.health_s.is_none() || restart.caught_up_s.is_none())
        {
            if restart.health_s.is_none() {
                let healthy = self
                    .http
                    .get(format!("http://{follower_api}/v1/health"))
                    .timeout(Duration::from_millis(500))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if healthy {
                    restart.health_s = Some(started.elapsed().as_secs_f64());
                }
            }
            if restart.caught_up_s.is_none() && replica.sm.read(|s| s.applied_index) >= target {
                restart.caught_up_s = Some(started.elapsed().as_secs_f64());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        println!("restart: {restart:?}");
        Ok(restart)
    }
}

/// The member that leads, if one does and has the cluster id written.
fn leader(members: &[Member]) -> Option<&Member> {
    members.iter().find(|m| {
        m.replica().is_some_and(|r| {
            r.metrics().state == openraft::ServerState::Leader
                && r.sm.read(|s| s.cluster_id.is_some())
        })
    })
}

pub async fn wait_for_leader(members: &[Member], within: Duration) -> Result<Arc<Replica>, String> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(m) = leader(members) {
            return Ok(m.replica().expect("a leader runs").clone());
        }
        if Instant::now() > deadline {
            return Err(format!("no leader with a cluster id within {within:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The bootstrap token, once the replica that applied the cluster's
/// initialisation has written its file (just after a leader is known).
async fn wait_for_token(file: &std::path::Path, within: Duration) -> Result<String, String> {
    let deadline = Instant::now() + within;
    loop {
        match std::fs::read_to_string(file) {
            Ok(token) if !token.trim().is_empty() => return Ok(token.trim().to_string()),
            Ok(_) => {}
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("bootstrap token {}: {e}", file.display()))
            }
            Err(_) => {}
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no bootstrap token in {} within {within:?}",
                file.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes `commands` through `replica`, `in_flight` at a time; the first
/// few errors are returned as text.
async fn write_all(
    replica: &Arc<Replica>,
    commands: Vec<Command>,
    in_flight: usize,
) -> Vec<String> {
    let errors: Vec<String> = futures::stream::iter(commands)
        .map(|command| {
            let replica = replica.clone();
            async move { replica.write(command).await.err().map(|e| e.to_string()) }
        })
        .buffer_unordered(in_flight)
        .filter_map(|e| async move { e })
        .collect()
        .await;
    errors
}

/// `(placed, running)` instances of the bench namespace.
fn placement_progress(replica: &Replica) -> (usize, usize) {
    replica.sm.read(|s| {
        s.instances.values().fold((0, 0), |(placed, running), i| {
            (
                placed + usize::from(i.node.is_some()),
                running + usize::from(i.state == InstanceState::Running),
            )
        })
    })
}

/// Prometheus text `name_sum` and `name_count` of a summary from the
/// process-wide metrics (the leader's writer is the only one writing).
async fn write_batches(http: &reqwest::Client, api: &str, token: &str) -> Option<(f64, f64)> {
    let text = http
        .get(format!("http://{api}/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    Some((
        value("raftvisor_write_batch_size_sum ")?,
        value("raftvisor_write_batch_size_count ")?,
    ))
}

/// Waits until the engines have been quiet for `quiet` (bounded by `within`).
async fn settle(tap: &Tap, quiet: Duration, within: Duration) {
    let mut events = tap.subscribe();
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        match tokio::time::timeout(quiet, events.recv()).await {
            Err(_) => return,
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return,
            Ok(_) => continue,
        }
    }
}

/// From `t0`: ms until the first engine event of service `name`'s
/// containers, and until `replicas` of its containers with spec version
/// `version` were started.
async fn watch_change(
    events: &mut tokio::sync::broadcast::Receiver<Tapped>,
    name: &str,
    version: u64,
    replicas: usize,
    t0: Instant,
    within: Duration,
) -> (Option<f64>, Option<f64>) {
    use raftvisor::reconcile::labels;
    let deadline = tokio::time::Instant::from_std(t0 + within);
    let version = version.to_string();
    let mut first = None;
    let mut started = HashSet::new();
    loop {
        let tapped = match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => return (first, None),
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return (first, None),
            Ok(Ok(tapped)) => tapped,
        };
        let labels = &tapped.event.labels;
        if labels.get(labels::SERVICE).map(String::as_str) != Some(name)
            || labels.get(labels::NAMESPACE).map(String::as_str) != Some(NAMESPACE)
        {
            continue;
        }
        let ms = tapped.at.saturating_duration_since(t0).as_secs_f64() * 1e3;
        first.get_or_insert(ms);
        if tapped.event.action == "start" && labels.get(labels::SPEC_VERSION) == Some(&version) {
            if let Some(slot) = labels.get(labels::SLOT) {
                started.insert(slot.clone());
            }
            if started.len() >= replicas {
                return (first, Some(ms));
            }
        }
    }
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
