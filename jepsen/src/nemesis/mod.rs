//! The nemesis: injects one fault at a time into the cluster under test,
//! on a schedule drawn from the run's seed — a quiet spell, a fault that
//! starts, lasts and heals, again until the run's time is up — and heals
//! everything at the end. Every fault proves it took effect (a cut link
//! really refuses connections, a killed process is gone, a paused one does
//! not answer, a flipped file differs) and records the proof in the
//! history; a fault that could not be made to work is recorded as
//! ineffective, and the run fails on it instead of counting it as passed.

pub mod delay;
pub mod disk;
pub mod membership;
pub mod partition;
pub mod process;
pub mod workload;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::Serialize;
use serde_json::json;

use crate::cluster::Cluster;
use crate::history::{Entry, EventType, Process, Recorder};

/// Every kind of fault the nemesis knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// One manager cut off from all others.
    PartitionOne,
    /// A majority and a minority that cannot reach each other.
    PartitionHalves,
    /// Every manager sees a majority, no two the same one.
    PartitionRing,
    /// Two halves joined by one manager that sees both.
    PartitionBridge,
    /// The current leader cut off from all others.
    PartitionLeader,
    /// One follower cannot hear the leader: packets from the others to
    /// its peer port are dropped, while the connections it opens (vote
    /// requests) still work both ways.
    PartitionOneWay,
    KillLeader,
    KillMinority,
    KillAll,
    /// `docker pause` of the leader past the election timeout.
    PauseLeader,
    /// A share of the packets between managers dropped at random.
    Loss,
    /// Every peer link through a proxy that holds each chunk back.
    Delay,
    /// A new manager joins as a learner.
    MemberAdd,
    /// A learner becomes a voter.
    MemberPromote,
    /// A voter (the leader, sometimes) is removed and left running.
    MemberRemove,
    /// The tail of a stopped follower's Raft log cut off.
    DiskTruncate,
    /// Bits flipped in a stopped follower's snapshot.
    DiskSnapshot,
    /// `kill -9` of a workload container.
    KillWorkload,
}

impl FaultKind {
    pub const ALL: [FaultKind; 18] = [
        FaultKind::PartitionOne,
        FaultKind::PartitionHalves,
        FaultKind::PartitionRing,
        FaultKind::PartitionBridge,
        FaultKind::PartitionLeader,
        FaultKind::PartitionOneWay,
        FaultKind::KillLeader,
        FaultKind::KillMinority,
        FaultKind::KillAll,
        FaultKind::PauseLeader,
        FaultKind::Loss,
        FaultKind::Delay,
        FaultKind::MemberAdd,
        FaultKind::MemberPromote,
        FaultKind::MemberRemove,
        FaultKind::DiskTruncate,
        FaultKind::DiskSnapshot,
        FaultKind::KillWorkload,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::PartitionOne => "partition-one",
            FaultKind::PartitionHalves => "partition-halves",
            FaultKind::PartitionRing => "partition-ring",
            FaultKind::PartitionBridge => "partition-bridge",
            FaultKind::PartitionLeader => "partition-leader",
            FaultKind::PartitionOneWay => "partition-one-way",
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillMinority => "kill-minority",
            FaultKind::KillAll => "kill-all",
            FaultKind::PauseLeader => "pause-leader",
            FaultKind::Loss => "loss",
            FaultKind::Delay => "delay",
            FaultKind::MemberAdd => "member-add",
            FaultKind::MemberPromote => "member-promote",
            FaultKind::MemberRemove => "member-remove",
            FaultKind::DiskTruncate => "disk-truncate",
            FaultKind::DiskSnapshot => "disk-snapshot",
            FaultKind::KillWorkload => "kill-workload",
        }
    }

    /// A fault kind, or a group: `partition`, `kill`, `pause`, `network`
    /// (loss and delay), `membership`, `disk`, `workload`, `all`.
    pub fn parse_list(text: &str) -> Result<Vec<FaultKind>, String> {
        let mut kinds = BTreeSet::new();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let group: Vec<FaultKind> = match word {
                "all" => FaultKind::ALL.to_vec(),
                "partition" => vec![
                    FaultKind::PartitionOne,
                    FaultKind::PartitionHalves,
                    FaultKind::PartitionRing,
                    FaultKind::PartitionBridge,
                    FaultKind::PartitionLeader,
                    FaultKind::PartitionOneWay,
                ],
                "kill" => vec![FaultKind::KillLeader, FaultKind::KillMinority, FaultKind::KillAll],
                "pause" => vec![FaultKind::PauseLeader],
                "network" => vec![FaultKind::Loss, FaultKind::Delay],
                "membership" => vec![
                    FaultKind::MemberAdd,
                    FaultKind::MemberPromote,
                    FaultKind::MemberRemove,
                ],
                "disk" => vec![FaultKind::DiskTruncate, FaultKind::DiskSnapshot],
                "workload" => vec![FaultKind::KillWorkload],
                "none" => Vec::new(),
                name => match FaultKind::ALL.iter().find(|k| k.name() == name) {
                    Some(kind) => vec![*kind],
                    None => {
                        return Err(format!(
                            "unknown nemesis {name:?}: use one of {}, or a group (partition, kill, pause, network, membership, disk, workload, all, none)",
                            FaultKind::ALL.map(FaultKind::name).join(", ")
                        ))
                    }
                },
            };
            kinds.extend(group);
        }
        Ok(kinds.into_iter().collect())
    }
}

/// Which managers are in the cluster, as the nemesis has changed it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Membership {
    pub voters: BTreeSet<u64>,
    pub learners: BTreeSet<u64>,
    /// Removed from the cluster and left running with their data.
    pub removed: BTreeSet<u64>,
}

impl Membership {
    /// Voters and learners: the managers that take part in Raft.
    pub fn members(&self) -> Vec<u64> {
        self.voters.union(&self.learners).copied().collect()
    }
}

/// What the nemesis and the checkers share.
pub struct Context {
    pub cluster: Arc<Cluster>,
    pub recorder: Recorder,
    pub membership: Mutex<Membership>,
    /// Workload containers the nemesis killed on purpose, with when (µs
    /// since the run started).
    pub killed_workloads: Mutex<Vec<(String, u64)>>,
    /// The cluster's id: the `raftvisor.cluster` label of its containers.
    pub cluster_id: String,
    /// Faults that could not be shown to take effect.
    pub ineffective: Mutex<Vec<String>>,
    /// Delay proxies of an active `delay` fault.
    pub delay: tokio::sync::Mutex<Option<delay::ActiveDelay>>,
    /// The manager an active `partition-one-way` fault cut off (the pulse
    /// writer leaves it alone).
    pub one_way_cut: Mutex<Option<u64>>,
}

impl Context {
    pub fn members(&self) -> Vec<u64> {
        self.membership.lock().expect("membership").members()
    }

    pub fn voters(&self) -> Vec<u64> {
        self.membership
            .lock()
            .expect("membership")
            .voters
            .iter()
            .copied()
            .collect()
    }

    /// The leader as the members report it, waiting up to `within`.
    pub async fn leader(&self, within: Duration) -> Option<u64> {
        let deadline = Instant::now() + within;
        loop {
            let members = self.members();
            if let Some(leader) = self.cluster.leader(&members).await {
                if members.contains(&leader) {
                    return Some(leader);
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn ineffective(&self, what: String) {
        self.ineffective.lock().expect("ineffective").push(what);
    }
}

/// What starting a fault did: the managers or containers it hit, and its
/// proof of effect (`effective: false` when the proof failed).
#[derive(Debug, Clone)]
pub struct Started {
    pub targets: serde_json::Value,
    pub proof: serde_json::Value,
    pub effective: bool,
    /// What `stop` must undo.
    pub undo: Undo,
}

/// How to end an active fault.
#[derive(Debug, Clone)]
pub enum Undo {
    /// Nothing: the fault was a single step (e.g. a membership change).
    Nothing,
    HealNetwork(Vec<u64>),
    Restart(Vec<u64>),
    Unpause(u64),
    StopDelay,
    /// A manager hit by a disk fault: restart it if it refused to start
    /// and replace it if it keeps refusing.
    DiskRecovery(u64),
    /// Wait for the workload container's slot to run again.
    WorkloadRestart {
        container: String,
        slot: String,
    },
}

/// How long faults last and how long the quiet spells between them are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    pub quiet: (Duration, Duration),
    pub fault: (Duration, Duration),
}

impl Default for Pace {
    fn default() -> Pace {
        Pace {
            quiet: (Duration::from_millis(1000), Duration::from_millis(3000)),
            fault: (Duration::from_millis(2000), Duration::from_millis(6000)),
        }
    }
}

fn between(rng: &mut StdRng, (low, high): (Duration, Duration)) -> Duration {
    if high <= low {
        return low;
    }
    Duration::from_millis(rng.gen_range(low.as_millis() as u64..=high.as_millis() as u64))
}

/// Runs faults from `kinds` until `until`, then returns (healing is
/// [`heal_everything`]'s job).
pub async fn run(
    ctx: Arc<Context>,
    kinds: Vec<FaultKind>,
    mut rng: StdRng,
    pace: Pace,
    until: Instant,
) -> anyhow::Result<()> {
    if kinds.is_empty() {
        return Ok(());
    }
    let mut queue = Vec::new();
    loop {
        let quiet = between(&mut rng, pace.quiet);
        if Instant::now() + quiet >= until {
            return Ok(());
        }
        tokio::time::sleep(quiet).await;
        if queue.is_empty() {
            queue = round(&kinds, &mut rng);
        }
        let kind = queue.remove(0);
        let hold = between(&mut rng, pace.fault);
        let Some(started) = start(&ctx, kind, &mut rng).await else {
            continue;
        };
        let stop_at = (Instant::now() + hold).min(until);
        tokio::time::sleep_until(stop_at.into()).await;
        stop(&ctx, kind, started).await;
    }
}

/// One round of the schedule: every kind once, in a seeded order in which
/// a learner is added before one is promoted.
pub fn round(kinds: &[FaultKind], rng: &mut StdRng) -> Vec<FaultKind> {
    let mut order = kinds.to_vec();
    order.shuffle(rng);
    let add = order.iter().position(|k| *k == FaultKind::MemberAdd);
    let promote = order.iter().position(|k| *k == FaultKind::MemberPromote);
    if let (Some(add), Some(promote)) = (add, promote) {
        if promote < add {
            order.swap(add, promote);
        }
    }
    order
}

/// Starts one fault and records it. `None` when it does not apply now
/// (e.g. no learner to promote), which is recorded too.
async fn start(ctx: &Arc<Context>, kind: FaultKind, rng: &mut StdRng) -> Option<Started> {
    let recorder = &ctx.recorder;
    recorder.record(
        Process::NEMESIS,
        EventType::Invoke,
        Entry::new("start").value(json!({ "fault": kind.name() })),
    );
    let result = match kind {
        FaultKind::PartitionOne
        | FaultKind::PartitionHalves
        | FaultKind::PartitionRing
        | FaultKind::PartitionBridge
        | FaultKind::PartitionLeader
        | FaultKind::PartitionOneWay => partition::start(ctx, kind, rng).await,
        FaultKind::KillLeader | FaultKind::KillMinority | FaultKind::KillAll => {
            process::kill(ctx, kind, rng).await
        }
        FaultKind::PauseLeader => process::pause_leader(ctx).await,
        FaultKind::Loss => partition::loss(ctx, rng).await,
        FaultKind::Delay => delay::start(ctx, rng).await,
        FaultKind::MemberAdd => membership::add(ctx).await,
        FaultKind::MemberPromote => membership::promote(ctx).await,
        FaultKind::MemberRemove => membership::remove(ctx, rng).await,
        FaultKind::DiskTruncate | FaultKind::DiskSnapshot => disk::start(ctx, kind, rng).await,
        FaultKind::KillWorkload => workload::kill(ctx, rng).await,
    };
    match result {
        Ok(Some(started)) => {
            if !started.effective {
                ctx.ineffective(format!(
                    "{}: {} (targets {})",
                    kind.name(),
                    started.proof,
                    started.targets
                ));
            }
            recorder.record(
                Process::NEMESIS,
                if started.effective {
                    EventType::Ok
                } else {
                    EventType::Fail
                },
                Entry::new("start").value(json!({
                    "fault": kind.name(),
                    "targets": started.targets,
                    "proof": started.proof,
                    "effective": started.effective,
                })),
            );
            Some(started)
        }
        Ok(None) => {
            recorder.record(
                Process::NEMESIS,
                EventType::Ok,
                Entry::new("start").value(json!({
                    "fault": kind.name(),
                    "skipped": "does not apply to the cluster as it is now",
                })),
            );
            recorder.record(
                Process::NEMESIS,
                EventType::Ok,
                Entry::new("stop").value(json!({ "fault": kind.name() })),
            );
            None
        }
        Err(e) => {
            // The fault may be half applied: heal what it may have touched.
            ctx.ineffective(format!("{}: could not be started: {e:#}", kind.name()));
            recorder.record(
                Process::NEMESIS,
                EventType::Fail,
                Entry::new("start")
                    .value(json!({ "fault": kind.name() }))
                    .error(format!("{e:#}")),
            );
            let _ = heal_everything(ctx).await;
            recorder.record(
                Process::NEMESIS,
                EventType::Ok,
                Entry::new("stop").value(json!({ "fault": kind.name(), "healed": "everything" })),
            );
            None
        }
    }
}

async fn stop(ctx: &Arc<Context>, kind: FaultKind, started: Started) {
    let recorder = &ctx.recorder;
    recorder.record(
        Process::NEMESIS,
        EventType::Invoke,
        Entry::new("stop").value(json!({ "fault": kind.name() })),
    );
    let result = match started.undo {
        Undo::Nothing => Ok(json!(null)),
        Undo::HealNetwork(ids) => partition::heal(ctx, &ids).await,
        Undo::Restart(ids) => process::restart(ctx, &ids).await,
        Undo::Unpause(id) => process::unpause(ctx, id).await,
        Undo::StopDelay => delay::stop(ctx).await,
        Undo::DiskRecovery(id) => disk::recover(ctx, id).await,
        Undo::WorkloadRestart { container, slot } => {
            workload::wait_restarted(ctx, &container, &slot).await
        }
    };
    match result {
        Ok(proof) => recorder.record(
            Process::NEMESIS,
            EventType::Ok,
            Entry::new("stop").value(json!({ "fault": kind.name(), "proof": proof })),
        ),
        Err(e) => recorder.record(
            Process::NEMESIS,
            EventType::Info,
            Entry::new("stop")
                .value(json!({ "fault": kind.name() }))
                .error(format!("{e:#}")),
        ),
    };
}

/// Ends every fault: network rules flushed, delay proxies stopped, paused
/// managers resumed, stopped members started again. Managers removed from
/// the cluster are left as they are.
pub async fn heal_everything(ctx: &Arc<Context>) -> anyhow::Result<serde_json::Value> {
    let mut problems = Vec::new();
    if let Err(e) = delay::stop(ctx).await {
        problems.push(format!("delay: {e:#}"));
    }
    let all: Vec<u64> = ctx.cluster.managers().iter().map(|m| m.id).collect();
    for &id in &all {
        let Ok(state) = ctx.cluster.state(id).await else {
            continue;
        };
        if state.paused {
            if let Err(e) = ctx.cluster.unpause(id).await {
                problems.push(format!("unpause m{id}: {e:#}"));
            }
        }
    }
    if let Err(e) = partition::heal(ctx, &all).await {
        problems.push(format!("network: {e:#}"));
    }
    let members = ctx.members();
    let mut started = Vec::new();
    for &id in &members {
        if let Ok(state) = ctx.cluster.state(id).await {
            if !state.running {
                match ctx.cluster.start(id).await {
                    Ok(()) => started.push(id),
                    Err(e) => problems.push(format!("start m{id}: {e:#}")),
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(json!({ "restarted": started }))
    } else {
        anyhow::bail!(problems.join("; "))
    }
}

/// Up to `count` distinct members, drawn with `rng`.
pub fn pick(rng: &mut StdRng, from: &[u64], count: usize) -> Vec<u64> {
    let mut chosen: Vec<u64> = from.choose_multiple(rng, count).copied().collect();
    chosen.sort_unstable();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nemesis_lists_take_groups_and_names() {
        let kinds = FaultKind::parse_list("partition,kill-leader").unwrap();
        assert_eq!(kinds.len(), 7);
        assert!(kinds.contains(&FaultKind::PartitionOneWay));
        assert_eq!(
            FaultKind::parse_list("all").unwrap().len(),
            FaultKind::ALL.len()
        );
        assert!(FaultKind::parse_list("none").unwrap().is_empty());
        let error = FaultKind::parse_list("partition,meteor").unwrap_err();
        assert!(error.contains("meteor"), "{error}");
    }

    #[test]
    fn a_round_runs_every_kind_once_and_adds_before_promoting() {
        use rand::SeedableRng;
        for seed in 0..50 {
            let mut rng = StdRng::seed_from_u64(seed);
            let order = round(&FaultKind::ALL, &mut rng);
            let distinct: BTreeSet<FaultKind> = order.iter().copied().collect();
            assert_eq!(distinct.len(), FaultKind::ALL.len());
            let at = |k| order.iter().position(|x| *x == k).unwrap();
            assert!(at(FaultKind::MemberAdd) < at(FaultKind::MemberPromote));
        }
        let again = round(&FaultKind::ALL, &mut rand::SeedableRng::seed_from_u64(7));
        let first = round(&FaultKind::ALL, &mut rand::SeedableRng::seed_from_u64(7));
        assert_eq!(again, first, "the same seed draws the same schedule");
    }

    #[test]
    fn every_kind_has_a_distinct_name() {
        let names: BTreeSet<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), FaultKind::ALL.len());
    }
}
