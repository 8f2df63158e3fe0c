//! Placement throughput: how many instance placements per second the
//! supervisor commits when thousands of services arrive.
//!
//! In-process and without Docker: one single-member replica (its Raft log
//! and state machine on disk in a temporary directory, fsync included) runs
//! the leader-only controllers (`run_while_leader`) against in-memory
//! engines (`MemoryRuntime`) installed for a few node endpoints, which are
//! therefore never dialled. Services have one replica, no ports and no
//! health check.
//!
//! Two phases, each on a fresh replica:
//!   1. arriving: the supervisor runs while SERVICES services are written
//!      concurrently (the replica's writer batches them); measured from the
//!      first service write until every instance is placed (`PlaceSlot`
//!      committed) and until every instance is reported running. The goal
//!      (>= 5,000 placements/s at 10k services) is judged on this phase.
//!   2. backlog: the services are written first, then the supervisor starts
//!      (as after a leader change with a backlog); measured from its start.
//!
//!     cargo bench --bench placement
//!
//! Environment: PLACEMENT_SERVICES (default 10000), PLACEMENT_NODES (10),
//! PLACEMENT_CONCURRENCY (in-flight service writes, 1024),
//! PLACEMENT_TIMEOUT_S (120 per phase; the run fails past it),
//! RAFTVISOR_LOG (a tracing filter; off by default). Exit status 1 when the
//! instances are not all placed and running in time or a write fails.

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use raftvisor::config::{AgentConfig, LoopbackPorts};
use raftvisor::reconcile::engines::Engines;
use raftvisor::reconcile::{run_while_leader, SupervisorSettings};
use raftvisor::replica::Replica;
use raftvisor::runtime::memory::MemoryRuntime;
use raftvisor::runtime::ContainerRuntime;
use raftvisor::state::{Command, InstanceState, NodeSpec, ServiceSpec};
use tokio_util::sync::CancellationToken;

/// Goal of the issue: placements committed per second at 10k services.
const GOAL_PER_S: f64 = 5_000.0;
/// First port of the (never dialled) node endpoints.
const FIRST_NODE_PORT: u16 = 29_001;

struct Params {
    services: usize,
    nodes: u16,
    concurrency: usize,
    timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The supervisor runs while the services are written.
    Arriving,
    /// The services exist before the supervisor starts.
    Backlog,
}

#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    services: usize,
    placed: usize,
    running: usize,
}

fn progress(replica: &Replica) -> Progress {
    replica.sm.read(|s| Progress {
        services: s.services.len(),
        placed: s.instances.values().filter(|i| i.node.is_some()).count(),
        running: s
            .instances
            .values()
            .filter(|i| i.state == InstanceState::Running)
            .count(),
    })
}

fn main() {
    let params = Params {
        services: common::env_number("PLACEMENT_SERVICES", 10_000),
        nodes: common::env_number("PLACEMENT_NODES", 10),
        concurrency: common::env_number("PLACEMENT_CONCURRENCY", 1024),
        timeout: Duration::from_secs(common::env_number("PLACEMENT_TIMEOUT_S", 120)),
    };
    if params.services == 0 || params.nodes == 0 || params.concurrency == 0 {
        eprintln!("PLACEMENT_SERVICES, PLACEMENT_NODES and PLACEMENT_CONCURRENCY must be positive");
        std::process::exit(2);
    }
    raftvisor::logging::to_stderr(None);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut ok = true;
    for phase in [Phase::Arriving, Phase::Backlog] {
        ok &= runtime.block_on(run(&params, phase));
    }
    // Leftover tasks (event watchers, backoff timers) end with the runtime.
    runtime.shutdown_timeout(Duration::from_secs(5));
    std::process::exit(if ok { 0 } else { 1 });
}

/// Writes the services; returns how long it took and how many failed.
async fn write_services(
    replica: Arc<Replica>,
    services: usize,
    concurrency: usize,
) -> (Duration, usize) {
    let spec: ServiceSpec = serde_json::from_value(serde_json::json!({
        "image": "raftvisor-echo:local",
        "replicas": 1,
        "restart": {"initial_backoff_ms": 100, "max_backoff_ms": 30000, "reset_after_ms": 10000}
    }))
    .expect("service spec");
    let start = Instant::now();
    let failed = Arc::new(AtomicUsize::new(0));
    futures::stream::iter(0..services)
        .map(|i| {
            let replica = replica.clone();
            let spec = spec.clone();
            let failed = failed.clone();
            async move {
                let command = Command::PutService {
                    namespace: "bench".into(),
                    name: format!("svc-{i:05}"),
                    spec,
                    expected_version: None,
                };
                if let Err(e) = replica.write(command).await {
                    if failed.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("service write {i} failed: {e}");
                    }
                }
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;
    (start.elapsed(), failed.load(Ordering::Relaxed))
}

async fn run(params: &Params, phase: Phase) -> bool {
    let services = params.services;
    let dir = tempfile::Builder::new()
        .prefix("raftvisor-placement-bench.")
        .tempdir()
        .expect("temporary data directory");
    // A single member: it elects itself; its peer, API and DNS addresses are
    // never bound or dialled. Everything else is the agent's defaults.
    let ports = LoopbackPorts::from_api(29201);
    let config = AgentConfig::loopback(1, dir.path().join("replica-1"), ports, &[(1, ports)]);
    let replica =
        match Replica::start(config, raftvisor::raft::network::PeerNetwork::new(None)).await {
            Ok(replica) => replica,
            Err(e) => {
                eprintln!("the replica did not start: {e}");
                return false;
            }
        };

    // Leader, and the cluster id the controllers need (written by
    // housekeeping once it leads).
    let housekeeping = CancellationToken::new();
    let _stop_housekeeping = housekeeping.clone().drop_guard();
    tokio::spawn(raftvisor::reconcile::housekeeping::run(
        replica.clone(),
        housekeeping,
    ));
    let ready_by = Instant::now() + Duration::from_secs(30);
    while replica.sm.read(|s| s.cluster_id.is_none()) {
        if Instant::now() > ready_by {
            eprintln!("the single-member cluster did not elect itself and get an id within 30 s");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let engines = Engines::default();
    let mut memory = Vec::new();
    for n in 0..params.nodes {
        let endpoint = format!("tcp://127.0.0.1:{}", FIRST_NODE_PORT + n);
        let engine = Arc::new(MemoryRuntime::new(&endpoint));
        engines.install(&endpoint, engine.clone());
        memory.push(engine);
        let spec = NodeSpec {
            address: Some("127.0.0.1".into()),
            ..NodeSpec::static_engine(endpoint)
        };
        if let Err(e) = replica
            .write(Command::PutNode {
                name: format!("mem-{n}"),
                spec,
                expected_version: None,
            })
            .await
        {
            eprintln!("registering node mem-{n} failed: {e}");
            return false;
        }
    }

    println!();
    match phase {
        Phase::Arriving => println!(
            "phase 1, arriving: the supervisor runs while {services} services x 1 replica are \
             written ({} writes in flight), {} in-memory nodes",
            params.concurrency, params.nodes
        ),
        Phase::Backlog => println!(
            "phase 2, backlog: {services} services x 1 replica exist before the supervisor \
             starts, {} in-memory nodes",
            params.nodes
        ),
    }
    let stop = CancellationToken::new();
    let start_supervisor = || {
        tokio::spawn(run_while_leader(
            replica.clone(),
            engines.clone(),
            SupervisorSettings::default(),
            stop.clone(),
        ))
    };
    let mut failures = 0;
    let mut written_at: Option<Duration> = None;
    let mut writes = None;
    let supervisor;
    if phase == Phase::Backlog {
        let (took, failed) = write_services(replica.clone(), services, params.concurrency).await;
        failures += failed;
        println!(
            "  services written in {:.3} s ({:.0}/s) before the supervisor starts",
            took.as_secs_f64(),
            services as f64 / took.as_secs_f64()
        );
        supervisor = start_supervisor();
    } else {
        supervisor = start_supervisor();
        writes = Some(tokio::spawn(write_services(
            replica.clone(),
            services,
            params.concurrency,
        )));
    }
    let index_before = replica.sm.read(|s| s.applied_index);
    let start = Instant::now();
    let deadline = start + params.timeout;

    let mut placed_at: Option<Duration> = None;
    let mut running_at: Option<Duration> = None;
    let mut last_report = Instant::now();
    let mut last = progress(&replica);
    let mut ok = true;
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = progress(&replica);
        let elapsed = start.elapsed();
        if writes.as_ref().is_some_and(|w| w.is_finished()) {
            let (took, failed) = writes.take().expect("writes task").await.expect("writes");
            written_at = Some(took);
            failures += failed;
        }
        if placed_at.is_none() && now.placed >= services {
            placed_at = Some(elapsed);
        }
        if running_at.is_none() && now.running >= services {
            running_at = Some(elapsed);
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            let dt = last_report.elapsed().as_secs_f64();
            println!(
                "  t={:6.2}s  services {:6}  placed {:6} (+{:6.0}/s)  running {:6} (+{:6.0}/s)",
                elapsed.as_secs_f64(),
                now.services,
                now.placed,
                now.placed.saturating_sub(last.placed) as f64 / dt,
                now.running,
                now.running.saturating_sub(last.running) as f64 / dt,
            );
            last = now;
            last_report = Instant::now();
        }
        if writes.is_none() && running_at.is_some() {
            break;
        }
        if Instant::now() > deadline {
            println!(
                "  TIMEOUT after {} s: {} services written, {} placed, {} running of {services}",
                params.timeout.as_secs(),
                now.services,
                now.placed,
                now.running
            );
            ok = false;
            break;
        }
    }
    if let Some(w) = writes.take() {
        w.abort();
    }
    if failures > 0 {
        println!("  {failures} service writes failed");
        ok = false;
    }

    let index_after = replica.sm.read(|s| s.applied_index);
    let per_node: BTreeMap<String, usize> = replica.sm.read(|s| {
        let mut counts = BTreeMap::new();
        for instance in s.instances.values() {
            if let Some(node) = &instance.node {
                *counts.entry(node.clone()).or_insert(0) += 1;
            }
        }
        counts
    });
    // A slot's generation grows by one per PlaceSlot, so the sum of
    // generations is the number of placements committed.
    let (generations_above_1, placements_committed) = replica.sm.read(|s| {
        (
            s.instances.values().filter(|i| i.generation > 1).count(),
            s.instances.values().map(|i| i.generation).sum::<u64>(),
        )
    });
    let containers: usize = memory.iter().map(|m| m.container_count()).sum();
    // The in-memory engine numbers container ids 1, 2, ...: the highest id
    // is how many containers it ever created.
    let mut created = 0u64;
    for engine in &memory {
        let listed = engine.list(&BTreeMap::new()).await.unwrap_or_default();
        created += listed
            .iter()
            .filter_map(|c| u64::from_str_radix(&c.id, 16).ok())
            .max()
            .unwrap_or(0);
    }

    let from = match phase {
        Phase::Arriving => "the first service write",
        Phase::Backlog => "the supervisor's start",
    };
    println!("  results ({services} services, {} nodes):", params.nodes);
    if let Some(t) = written_at {
        println!(
            "    all service writes acknowledged after {:8.3} s  ({:8.0} services/s)",
            t.as_secs_f64(),
            services as f64 / t.as_secs_f64()
        );
    }
    if let Some(t) = placed_at {
        println!(
            "    all instances placed after            {:8.3} s  ({:8.0} placements/s) from {from}",
            t.as_secs_f64(),
            services as f64 / t.as_secs_f64()
        );
    }
    if let Some(t) = running_at {
        println!(
            "    all instances running after           {:8.3} s  ({:8.0} instances/s) from {from}",
            t.as_secs_f64(),
            services as f64 / t.as_secs_f64()
        );
    }
    println!(
        "    raft entries applied meanwhile: {}",
        index_after.saturating_sub(index_before)
    );
    println!("    instances per node: {per_node:?}");
    println!(
        "    PlaceSlot commits: {placements_committed} for {services} slots; \
         slots placed more than once (generation > 1): {generations_above_1}"
    );
    println!(
        "    containers now in the in-memory engines: {containers}; created in total: {created}"
    );
    if phase == Phase::Arriving {
        match placed_at {
            Some(t) => {
                let rate = services as f64 / t.as_secs_f64();
                println!(
                    "    goal >= {GOAL_PER_S:.0} placements/s: {}",
                    if rate >= GOAL_PER_S { "met" } else { "NOT met" }
                );
            }
            None => println!("    goal >= {GOAL_PER_S:.0} placements/s: NOT met (not all placed)"),
        }
    }

    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), supervisor).await;
    // What every reconcile round pays at this size, however little changed
    // (measured with the supervisor stopped): a copy of the services,
    // instances and nodes, and a listing of every node's containers
    // (median of 5).
    let mut snapshot = Vec::new();
    let mut listing = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let copy = replica.sm.read(|s| {
            (
                s.cluster_id.clone(),
                s.services.clone(),
                s.instances.clone(),
                s.nodes.clone(),
            )
        });
        snapshot.push(t.elapsed());
        drop(copy);
        let t = Instant::now();
        for engine in &memory {
            let _ = engine.list(&BTreeMap::new()).await;
        }
        listing.push(t.elapsed());
    }
    snapshot.sort();
    listing.sort();

    println!(
        "    fixed cost of one reconcile round at this size: state copy {:.1} ms, \
         container listings {:.1} ms",
        snapshot[2].as_secs_f64() * 1e3,
        listing[2].as_secs_f64() * 1e3
    );
    let _ = replica.raft.shutdown().await;
    drop(dir);
    ok
}
