//! The results of the scale benchmark: the figures each phase measured,
//! the targets and Nomad's published figure, and the Markdown
//! table docs/benchmarks.md shows.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::etcd::EtcdRun;

/// Targets of issue 13, and Nomad's published figure.
const TARGET_PLACEMENTS_PER_S: f64 = 5_000.0;
const NOMAD_C1M_PLACEMENTS_PER_S: f64 = 3_750.0;
const TARGET_ACT_P99_MS: f64 = 50.0;
const TARGET_LEADER_CPU_PCT: f64 = 25.0;
const TARGET_RESTART_S: f64 = 5.0;
const TARGET_NODE_LOSS_S: f64 = 3.0;

/// The size and bounds of a run (from the SCALE_* environment).
#[derive(Debug, Clone, Serialize)]
pub struct Params {
    pub nodes: usize,
    pub services: usize,
    pub replicas: usize,
    pub in_flight: usize,
    pub changes: usize,
    pub cpu_window_s: u64,
    pub phase_timeout_s: u64,
    pub port_base: u16,
    pub stall_after_ms: Option<u64>,
}

/// Everything one run measured; `None` for a phase that did not run.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub commit: String,
    pub params: Option<Params>,
    pub settings: BTreeMap<String, u64>,
    pub nodes_registered_s: Option<f64>,
    pub placement: Option<Placement>,
    pub etcd: Option<EtcdRun>,
    pub steady: Option<Steady>,
    pub change: Option<Change>,
    pub node_loss: Option<NodeLoss>,
    pub restart: Option<Restart>,
    /// Replicas that stopped on their own during the run (a stall, a
    /// Raft failure), with their exit codes.
    pub stopped_replicas: Vec<(u64, Option<i32>)>,
    pub peak_rss_mb: u64,
    pub errors: Vec<String>,
}

/// Phase 1: placements from an empty cluster.
#[derive(Debug, Default, Serialize)]
pub struct Placement {
    pub instances: usize,
    pub services_written_s: f64,
    pub placed_s: Option<f64>,
    pub placements_per_s: Option<f64>,
    pub running_s: Option<f64>,
    pub placements_committed: u64,
    pub raft_entries: u64,
    /// Commands the leader's writer took and the batches (Raft entries)
    /// it made of them, from its `raftvisor_write_batch_size` summary.
    pub commands_written: Option<u64>,
    pub write_batches: Option<u64>,
    pub placed_at_timeout: usize,
}

/// Phase 2: CPU with nothing changing.
#[derive(Debug, Default, Serialize)]
pub struct Steady {
    pub window_s: f64,
    pub leader: u64,
    pub leader_cpu_pct: f64,
    pub followers_cpu_pct: Vec<f64>,
    pub raft_entries_in_window: u64,
}

/// Phase 3: one service changed at a time.
#[derive(Debug, Default, Serialize)]
pub struct Change {
    pub trials: usize,
    pub first_action_ms: Vec<f64>,
    pub all_started_ms: Vec<f64>,
    /// Trials in which nothing was acted on within the trial's bound.
    pub missed: usize,
}

/// Phase 4: one node lost.
#[derive(Debug, Default, Serialize)]
pub struct NodeLoss {
    pub node: String,
    pub instances: usize,
    pub rescheduled_s: Option<f64>,
    pub moved_at_timeout: usize,
}

/// Phase 5: a follower's snapshot and restart.
#[derive(Debug, Default, Serialize)]
pub struct Restart {
    pub replica: u64,
    pub snapshot_build_s: Option<f64>,
    pub snapshot_bytes: u64,
    pub drain_s: f64,
    pub abandoned_tasks: Vec<String>,
    pub health_s: Option<f64>,
    pub caught_up_s: Option<f64>,
}

pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn shown(value: Option<f64>, digits: usize) -> String {
    value.map_or("—".into(), |v| format!("{v:.digits$}"))
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

/// The docs/benchmarks.md table of this run.
pub fn markdown(r: &Report) -> String {
    let mut out = String::new();
    let p = r.params.as_ref();
    out.push_str(&format!(
        "Commit {}: {} nodes, {} services x {} = {} instances, 3 replicas in one process; supervisor watchdog {}; peak RSS {} MiB.\n\n",
        r.commit,
        p.map_or(0, |p| p.nodes),
        p.map_or(0, |p| p.services),
        p.map_or(0, |p| p.replicas),
        p.map_or(0, |p| p.services * p.replicas),
        match r.settings.get("stall_after_ms") {
            Some(0) => "off".to_string(),
            Some(ms) => format!("stall_after_ms {ms}"),
            None => "default".to_string(),
        },
        r.peak_rss_mb
    ));
    out.push_str("| figure | raftvisor | reference | target | verdict |\n|---|---|---|---|---|\n");
    if let Some(pl) = &r.placement {
        let etcd = r.etcd.as_ref();
        let ratio = match (pl.placements_per_s, etcd) {
            (Some(rv), Some(e)) => format!(
                "etcd {:.0} records/s in txns of {} ({} in flight) → ratio {:.2}",
                e.records_per_s,
                e.batch,
                e.in_flight,
                rv / e.records_per_s
            ),
            _ => format!("Nomad C1M {NOMAD_C1M_PLACEMENTS_PER_S:.0}/s (5 servers)"),
        };
        out.push_str(&format!(
            "| placements committed per second, empty cluster | {} /s (all placed {} s, all running {} s) | {ratio} | ≥ {TARGET_PLACEMENTS_PER_S:.0}/s | {} |\n",
            shown(pl.placements_per_s, 0),
            shown(pl.placed_s, 1),
            shown(pl.running_s, 1),
            verdict(pl.placements_per_s.map(|v| v >= TARGET_PLACEMENTS_PER_S)),
        ));
    }
    if let Some(c) = &r.change {
        let p99 = percentile(&c.first_action_ms, 99.0);
        out.push_str(&format!(
            "| one service changed → its containers acted on (p50 / p99 of {}; {} missed) | {} / {} ms (all restarted: p50 {} ms) | issue target | ≤ {TARGET_ACT_P99_MS:.0} ms p99 | {} |\n",
            c.trials,
            c.missed,
            shown(percentile(&c.first_action_ms, 50.0), 1),
            shown(p99, 1),
            shown(percentile(&c.all_started_ms, 50.0), 0),
            verdict(p99.map(|v| v <= TARGET_ACT_P99_MS && c.missed == 0)),
        ));
    }
    if let Some(s) = &r.steady {
        out.push_str(&format!(
            "| leader CPU in steady state ({:.0} s window) | {:.1} % of one core (followers {}) | issue target | < {TARGET_LEADER_CPU_PCT:.0} % | {} |\n",
            s.window_s,
            s.leader_cpu_pct,
            s.followers_cpu_pct.iter().map(|v| format!("{v:.1} %")).collect::<Vec<_>>().join(", "),
            verdict(Some(s.leader_cpu_pct < TARGET_LEADER_CPU_PCT)),
        ));
    }
    if let Some(x) = &r.restart {
        out.push_str(&format!(
            "| snapshot of the full state + restart of a replica to serving | snapshot {} s ({:.1} MiB), drain {:.2} s, health {} s, caught up {} s | issue target | ≤ {TARGET_RESTART_S:.0} s | {} |\n",
            shown(x.snapshot_build_s, 2),
            x.snapshot_bytes as f64 / 1048576.0,
            x.drain_s,
            shown(x.health_s, 2),
            shown(x.caught_up_s, 2),
            verdict(match (x.snapshot_build_s, x.caught_up_s) {
                (Some(a), Some(b)) => Some(a + b <= TARGET_RESTART_S),
                _ => None,
            }),
        ));
    }
    if let Some(n) = &r.node_loss {
        out.push_str(&format!(
            "| one node lost → its {} instances running elsewhere, detection included | {} s | issue target; node grace {} ms | ≤ {TARGET_NODE_LOSS_S:.0} s | {} |\n",
            n.instances,
            shown(n.rescheduled_s, 2),
            r.settings.get("node_grace_ms").copied().unwrap_or(0),
            verdict(n.rescheduled_s.map(|v| v <= TARGET_NODE_LOSS_S)),
        ));
    }
    if !r.stopped_replicas.is_empty() {
        out.push_str(&format!(
            "\nReplicas that stopped on their own during the run (id, exit code; 75: the supervisor watchdog): {:?}\n",
            r.stopped_replicas
        ));
    }
    for e in &r.errors {
        out.push_str(&format!("\nError: {e}\n"));
    }
    out
}
