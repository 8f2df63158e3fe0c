//! The named scenarios: `--smoke`, a few seeds that together touch every
//! kind of fault in a few minutes (run by the project's test command), with
//! a canary run against a build whose fail point answers linearizable
//! reads locally — the harness must call that run invalid; and `--full`,
//! every nemesis group against every workload, for longer. Both hold the
//! scenarios of issue 12 (the leader's quorum): services churned during
//! partitions (`leader-actions`) and a one-way cut (`one-way`).

use std::time::Duration;

use crate::nemesis::{FaultKind, Pace};
use crate::run::Workloads;

/// One run of a suite.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub seed: u64,
    pub nemeses: Vec<FaultKind>,
    pub workloads: Workloads,
    pub duration: Duration,
    /// Fail points for the managers (`FAILPOINTS`); needs an image built
    /// with them.
    pub failpoints: Option<String>,
    /// The run must be found invalid (a known bug the harness must catch).
    pub expect_invalid: bool,
    pub pace: Pace,
}

impl Scenario {
    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        let mut command =
            format!(
            "scripts/jepsen.sh run --name {} --seed {} --nemesis {} --workload {} --duration {}",
            self.name,
            self.seed,
            if self.nemeses.is_empty() {
                "none".to_string()
            } else {
                self.nemeses.iter().map(|k| k.name()).collect::<Vec<_>>().join(",")
            },
            self.workloads.names().join(","),
            self.duration.as_secs()
        );
        if self.pace == smoke_pace() {
            command.push_str(" --pace smoke");
        }
        if let Some(failpoints) = &self.failpoints {
            command.push_str(&format!(" --failpoints '{failpoints}'"));
        }
        command
    }
}

fn kinds(list: &str) -> Vec<FaultKind> {
    FaultKind::parse_list(list).expect("suite nemesis lists are valid")
}

fn all_workloads() -> Workloads {
    Workloads::parse("all").expect("valid")
}

/// Shorter faults and pauses, so a half-minute run goes through a whole
/// round of its faults.
pub fn smoke_pace() -> Pace {
    Pace {
        quiet: (Duration::from_millis(500), Duration::from_millis(1500)),
        fault: (Duration::from_millis(1500), Duration::from_millis(3000)),
    }
}

/// The fail point that turns linearizable reads into local reads.
pub const LOCAL_READS_FAILPOINT: &str = "read-index-local=return";

/// A few minutes, every kind of fault at least in reach; `base_seed`
/// shifts every seed (CI uses a fixed one, so runs are replayable).
pub fn smoke(base_seed: u64) -> Vec<Scenario> {
    let duration = Duration::from_secs(30);
    vec![
        Scenario {
            name: "smoke-partitions".into(),
            seed: base_seed + 1,
            nemeses: kinds("partition,kill-leader"),
            workloads: all_workloads(),
            duration,
            failpoints: None,
            expect_invalid: false,
            pace: smoke_pace(),
        },
        Scenario {
            name: "smoke-crash-pause-loss".into(),
            seed: base_seed + 2,
            nemeses: kinds("kill-minority,kill-all,pause-leader,loss,kill-workload"),
            workloads: all_workloads(),
            duration,
            failpoints: None,
            expect_invalid: false,
            pace: smoke_pace(),
        },
        Scenario {
            name: "smoke-membership-disk-delay".into(),
            seed: base_seed + 3,
            nemeses: kinds("membership,disk,delay"),
            workloads: all_workloads(),
            // Disk faults restart a manager and may restore it from peers.
            duration: Duration::from_secs(40),
            failpoints: None,
            expect_invalid: false,
            pace: smoke_pace(),
        },
        canary(base_seed + 4),
        supervisor_partitions(base_seed + 5),
        one_way("smoke-one-way", base_seed + 6, Duration::from_secs(20)),
    ]
}

/// Issue 12, item 1: services deployed, scaled and moved while the leader
/// (or a minority holding it) is cut off; no manager may destroy a
/// container unless it leads a quorum (`leader-actions`). Faults at the
/// default pace, so a deposed leader has seconds to act.
pub fn supervisor_partitions(seed: u64) -> Scenario {
    Scenario {
        name: "smoke-supervisor-partitions".into(),
        seed,
        nemeses: kinds("partition-leader,partition-halves,partition-one"),
        workloads: Workloads::parse("register,supervisor,churn").expect("valid"),
        duration: Duration::from_secs(30),
        failpoints: None,
        expect_invalid: false,
        pace: Pace::default(),
    }
}

/// Issue 12, item 2: a follower that cannot hear the leader must not
/// depose it: writes keep flowing (no gap of 1 s) and the others' term is
/// raised at most once, through the heal (`one-way`).
pub fn one_way(name: &str, seed: u64, duration: Duration) -> Scenario {
    Scenario {
        name: name.into(),
        seed,
        nemeses: kinds("partition-one-way"),
        workloads: Workloads::parse("register,set").expect("valid"),
        duration,
        failpoints: None,
        expect_invalid: false,
        pace: Pace::default(),
    }
}

/// Local "linearizable" reads while partitions isolate the leader and a
/// minority: stale reads follow, and the register checker must say so.
pub fn canary(seed: u64) -> Scenario {
    Scenario {
        name: "canary-local-reads".into(),
        seed,
        nemeses: kinds("partition-leader,partition-halves,partition-one"),
        workloads: Workloads::parse("register").expect("valid"),
        duration: Duration::from_secs(15),
        failpoints: Some(LOCAL_READS_FAILPOINT.into()),
        expect_invalid: true,
        pace: smoke_pace(),
    }
}

/// Every nemesis group against every workload, a minute each.
pub fn full(base_seed: u64) -> Vec<Scenario> {
    let groups = [
        "partition",
        "kill",
        "pause",
        "network",
        "membership",
        "disk",
        "workload",
    ];
    let mut scenarios = Vec::new();
    let mut seed = base_seed + 100;
    for group in groups {
        for workload in ["register", "set", "supervisor"] {
            seed += 1;
            let mut workloads = Workloads::parse(workload).expect("valid");
            // The supervisor checker needs services, and the other two
            // give the cluster something to replicate meanwhile.
            workloads.supervisor |= group == "workload";
            scenarios.push(Scenario {
                name: format!("full-{group}-{workload}"),
                seed,
                nemeses: kinds(group),
                workloads,
                duration: Duration::from_secs(60),
                failpoints: None,
                expect_invalid: false,
                pace: Pace::default(),
            });
        }
    }
    scenarios.push(canary(base_seed + 99));
    scenarios.push(Scenario {
        name: "full-partition-churn".into(),
        seed: base_seed + 131,
        nemeses: kinds("partition"),
        workloads: Workloads::parse("register,supervisor,churn").expect("valid"),
        duration: Duration::from_secs(60),
        failpoints: None,
        expect_invalid: false,
        pace: Pace::default(),
    });
    scenarios.push(one_way(
        "full-one-way",
        base_seed + 132,
        Duration::from_secs(60),
    ));
    scenarios
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn the_smoke_suite_reaches_every_kind_of_fault() {
        let reached: BTreeSet<FaultKind> =
            smoke(0).iter().flat_map(|s| s.nemeses.clone()).collect();
        let all: BTreeSet<FaultKind> = FaultKind::ALL.into_iter().collect();
        assert_eq!(reached, all);
        assert_eq!(smoke(0).iter().filter(|s| s.expect_invalid).count(), 1);
    }

    #[test]
    fn the_full_suite_crosses_every_group_with_every_workload() {
        let full = full(0);
        assert_eq!(full.len(), 7 * 3 + 1 + 2);
        let reached: BTreeSet<FaultKind> = full.iter().flat_map(|s| s.nemeses.clone()).collect();
        assert_eq!(reached.len(), FaultKind::ALL.len());
        let names: BTreeSet<&str> = full.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names.len(), full.len(), "names are unique");
    }

    #[test]
    fn the_quorum_scenarios_of_issue_12_are_in_both_suites() {
        let names =
            |list: Vec<Scenario>| -> Vec<String> { list.into_iter().map(|s| s.name).collect() };
        let smoke_names = names(smoke(0));
        assert!(smoke_names.contains(&"smoke-supervisor-partitions".to_string()));
        assert!(smoke_names.contains(&"smoke-one-way".to_string()));
        let full = full(0);
        let churn = full
            .iter()
            .find(|s| s.name == "full-partition-churn")
            .unwrap();
        assert!(churn.workloads.churn && churn.workloads.supervisor);
        assert!(churn.nemeses.contains(&FaultKind::PartitionLeader));
        let one_way = full.iter().find(|s| s.name == "full-one-way").unwrap();
        assert_eq!(one_way.nemeses, vec![FaultKind::PartitionOneWay]);
        assert!(one_way.workloads.register, "gaps are measured on writes");
        let seeds: BTreeSet<u64> = full.iter().map(|s| s.seed).collect();
        assert_eq!(seeds.len(), full.len(), "seeds are unique");
        let replay = smoke(0)[4].replay_command();
        assert!(
            replay.contains("--workload register,supervisor,churn"),
            "{replay}"
        );
    }

    #[test]
    fn a_scenario_says_how_to_replay_it() {
        let command = canary(7).replay_command();
        assert!(command.contains("--seed 7"), "{command}");
        assert!(command.contains("read-index-local=return"), "{command}");
    }
}
