//! The scale benchmark of issue 13: a 3-replica cluster driving 5,000
//! simulated nodes (in-memory engines, `MemoryRuntime`), 10,000 services
//! and 100,000 instances, all in this process.
//!
//! The replicas are started with `agent::run_with`, each on a tokio
//! runtime of its own whose threads carry its name (`rv-<id>`), sharing one
//! set of in-memory engines; writes go to the leader's replica directly
//! (no HTTP in the measured path). Phases, each bounded in time:
//!
//!   1. placement: the services are written (SCALE_IN_FLIGHT at a time)
//!      while the supervisor runs; placements committed per second from the
//!      first service write until every instance is placed, and until every
//!      instance is reported running.
//!   2. steady state: the leader's CPU (its threads' user + system time
//!      from /proc/self/task) over SCALE_CPU_WINDOW_S with nothing changing.
//!   3. one service changed (a new env value), SCALE_CHANGES times: from the
//!      write to the first engine call on its containers ("acted on") and
//!      until all its instances were started with the new spec.
//!   4. one node lost (its engine set unreachable): until every instance
//!      that ran there is reported running elsewhere, detection included.
//!   5. snapshot + restart: a follower builds a snapshot of the full state,
//!      is stopped (drained) and started again from its data directory;
//!      until it answers `/v1/health` and until it has applied everything
//!      the leader had applied when it restarted.
//!   6. the peer: a 3-member etcd on loopback stores the same placement
//!      records in the same batching (see `etcd.rs`); the ratio is
//!      reported. Skipped when SCALE_ETCD is empty or etcd is missing.
//!
//!     cargo bench --bench scale        (scripts/bench-scale.sh wraps it)
//!
//! Environment: SCALE_NODES (5000), SCALE_SERVICES (10000),
//! SCALE_REPLICAS (instances per service, 10), SCALE_IN_FLIGHT (256),
//! SCALE_STALL_AFTER_MS (the supervisor watchdog; unset: the default, 0: off),
//! SCALE_CHANGES (40), SCALE_CPU_WINDOW_S (10), SCALE_PHASE_TIMEOUT_S (300),
//! SCALE_PORT_BASE (31000: API +1..3, peer +101..103; etcd +501..503
//! and +511..513), SCALE_ETCD
//! (etcd binary, default /usr/bin/etcd), SCALE_COMMIT (shown in the
//! report), SCALE_JSON and SCALE_MARKDOWN (files for the results),
//! RAFTVISOR_LOG (a tracing filter; off by default). Exit status 1 when a
//! phase could not be measured (a figure that misses its target is still
//! a measurement).

mod cluster;
mod cpu;
mod etcd;
mod phases;
mod report;

#[path = "../common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use raftvisor::reconcile::engines::Engines;
use raftvisor::runtime::memory::{MemoryRuntime, Tap};
use raftvisor::state::Command;

use cluster::Member;
use report::{Params, Placement, Report};

/// Events each in-memory engine buffers per subscriber: a node holds tens
/// of containers, and a lagging subscriber relists.
const ENGINE_EVENT_BUFFER: usize = 64;
pub const NAMESPACE: &str = "bench";

fn main() {
    let params = Params {
        nodes: common::env_number("SCALE_NODES", 5_000),
        services: common::env_number("SCALE_SERVICES", 10_000),
        replicas: common::env_number("SCALE_REPLICAS", 10),
        in_flight: common::env_number("SCALE_IN_FLIGHT", 256),
        changes: common::env_number("SCALE_CHANGES", 40),
        cpu_window_s: common::env_number("SCALE_CPU_WINDOW_S", 10),
        phase_timeout_s: common::env_number("SCALE_PHASE_TIMEOUT_S", 300),
        port_base: common::env_number("SCALE_PORT_BASE", 31_000),
        stall_after_ms: std::env::var("SCALE_STALL_AFTER_MS")
            .ok()
            .map(|_| common::env_number("SCALE_STALL_AFTER_MS", 0)),
    };
    if params.nodes == 0 || params.services == 0 || params.replicas == 0 || params.in_flight == 0 {
        eprintln!(
            "SCALE_NODES, SCALE_SERVICES, SCALE_REPLICAS and SCALE_IN_FLIGHT must be positive"
        );
        std::process::exit(2);
    }
    raftvisor::logging::to_stderr(None);
    let driver = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-driver")
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut report = Report {
        commit: std::env::var("SCALE_COMMIT").unwrap_or_else(|_| "unknown".into()),
        params: Some(params.clone()),
        ..Report::default()
    };
    let measured = driver.block_on(run(&params, &mut report));
    if let Err(e) = measured {
        report.errors.push(e);
    }
    report.peak_rss_mb = peak_rss_mb();
    let json = serde_json::to_string_pretty(&report).expect("the report serialises");
    let markdown = report::markdown(&report);
    println!("{markdown}");
    for (var, text) in [("SCALE_JSON", &json), ("SCALE_MARKDOWN", &markdown)] {
        if let Ok(path) = std::env::var(var) {
            if let Err(e) = std::fs::write(&path, text) {
                eprintln!("cannot write {var}={path}: {e}");
            }
        }
    }
    driver.shutdown_timeout(Duration::from_secs(5));
    std::process::exit(if report.errors.is_empty() { 0 } else { 1 });
}

/// The peak resident memory of this process (VmHWM), in MiB.
fn peak_rss_mb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

pub fn service_spec(replicas: usize, change: Option<usize>) -> raftvisor::state::ServiceSpec {
    let mut spec = serde_json::json!({
        "image": "raftvisor-echo:local",
        "replicas": replicas,
        "restart": {"initial_backoff_ms": 100, "max_backoff_ms": 30000, "reset_after_ms": 10000}
    });
    if let Some(change) = change {
        spec["env"] = serde_json::json!({"BENCH_CHANGE": change.to_string()});
    }
    serde_json::from_value(spec).expect("service spec")
}

pub fn service_name(i: usize) -> String {
    format!("svc-{i:05}")
}

pub fn node_name(n: usize) -> String {
    format!("node-{n:04}")
}

/// A never-dialled endpoint: its in-memory engine is installed for it.
pub fn node_endpoint(n: usize) -> String {
    format!(
        "tcp://10.{}.{}.{}:2375",
        n / 65_536 % 256,
        n / 256 % 256,
        n % 256
    )
}

async fn run(params: &Params, report: &mut Report) -> Result<(), String> {
    let dir = tempfile::Builder::new()
        .prefix("raftvisor-scale-bench.")
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?;

    // The simulated nodes: one in-memory engine each, all on one tap.
    let engines = Engines::default();
    let tap: Tap = tokio::sync::broadcast::channel(65_536).0;
    let memory: Vec<Arc<MemoryRuntime>> = (0..params.nodes)
        .map(|n| {
            let endpoint = node_endpoint(n);
            let engine = Arc::new(MemoryRuntime::with_event_buffer(
                &endpoint,
                ENGINE_EVENT_BUFFER,
            ));
            engine.set_tap(tap.clone());
            engines.install(&endpoint, engine.clone());
            engine
        })
        .collect();

    let mut members = Vec::new();
    for id in 1..=3u64 {
        let config = cluster::config(id, dir.path(), params.port_base, 3, params.stall_after_ms);
        config.validate().map_err(|e| format!("config: {e}"))?;
        if id == 1 {
            for (name, value) in [
                ("heartbeat_ms", config.raft.heartbeat_ms),
                ("election_min_ms", config.raft.election_min_ms),
                ("election_max_ms", config.raft.election_max_ms),
                ("snapshot_threshold", config.raft.snapshot_threshold),
                ("node_grace_ms", config.supervisor.node_grace_ms),
                ("probe_interval_ms", config.supervisor.probe_interval_ms),
                ("resync_ms", config.supervisor.resync_ms),
                ("stall_after_ms", config.supervisor.stall_after_ms),
            ] {
                report.settings.insert(name.into(), value);
            }
        }
        members.push(Member::start(config, engines.clone()).await?);
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let mut bench = phases::Bench {
        params,
        members: &mut members,
        memory: &memory,
        tap: &tap,
        token_file: dir.path().join("token"),
        token: String::new(),
        http,
    };
    let result = bench.run(report).await;
    for member in &mut members {
        let stopped_itself = member.stopped_itself();
        let stopped = member.stop().await;
        if stopped_itself {
            let code = stopped.and_then(|s| s.exit_code);
            report.stopped_replicas.push((member.id, code));
        }
    }
    result?;

    // The peer runs alone, after raftvisor has stopped.
    let etcd_binary = std::env::var("SCALE_ETCD").unwrap_or_else(|_| "/usr/bin/etcd".into());
    if let Some(placement) = &report.placement {
        if !etcd_binary.is_empty() && std::path::Path::new(&etcd_binary).exists() {
            report.etcd = Some(run_etcd(params, placement, &etcd_binary, dir.path()).await?);
        }
    }
    Ok(())
}

/// etcd stores the placements raftvisor committed, in its batching.
async fn run_etcd(
    params: &Params,
    placement: &Placement,
    binary: &str,
    dir: &std::path::Path,
) -> Result<etcd::EtcdRun, String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let etcd = etcd::start(binary, dir, params.port_base + 500).await?;
    let leader = etcd.leader(&http, Duration::from_secs(30)).await?;
    // The records: the PlaceSlot commands of the placement phase, encoded
    // as raftvisor's log encodes them, keyed by their slot.
    let records: Vec<(String, Vec<u8>)> = (0..params.services)
        .flat_map(|i| (0..params.replicas).map(move |slot| (i, slot)))
        .map(|(i, slot)| {
            let command = Command::PlaceSlot {
                namespace: NAMESPACE.into(),
                service: service_name(i),
                slot: slot as u32,
                node: node_name((i * params.replicas + slot) % params.nodes),
            };
            let value = raftvisor::codec::encode(&command).unwrap_or_default();
            (
                format!("/placements/{NAMESPACE}/{}/{slot}", service_name(i)),
                value,
            )
        })
        .collect();
    // raftvisor's batching: commands per Raft entry its writer made in the
    // placement phase (from its summary; else from the entries applied).
    let per_entry = match (placement.commands_written, placement.write_batches) {
        (Some(commands), Some(batches)) if batches > 0 => commands as f64 / batches as f64,
        _ => {
            (placement.placements_committed as f64 + params.services as f64)
                / placement.raft_entries.max(1) as f64
        }
    };
    let batch = per_entry.round().max(1.0) as usize;
    let run = etcd
        .write(&http, &leader, records, batch, WRITER_IN_FLIGHT)
        .await;
    etcd.stop().await;
    println!("etcd: {run:?}");
    Ok(run)
}

/// Raft entries raftvisor's writer keeps in flight (`replica::writer`).
const WRITER_IN_FLIGHT: usize = 4;
