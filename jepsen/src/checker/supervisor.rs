//! The supervisor checker, over what the engine showed during the run:
//! - no slot ran more than one container for longer than a short grace
//!   (a deposed leader may act for a moment; the real one must clean up);
//! - after healing, every service came back to its desired count within
//!   the limit;
//! - no workload container died unless the nemesis killed it or it was a
//!   redundant copy of its slot: control-plane faults alone never stop
//!   workloads (the churn workload's services excepted: their containers
//!   are scaled away and moved on purpose).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use super::Verdict;
use crate::workloads::churn;
use crate::workloads::supervisor::{Death, Sample};

/// What the run recorded for this checker.
pub struct Observed<'a> {
    pub samples: &'a [Sample],
    pub deaths: &'a [Death],
    /// Containers the nemesis killed, with when (µs since the start).
    pub killed: &'a [(String, u64)],
    /// How long convergence took after healing, or what was wrong.
    pub convergence: Result<Duration, String>,
    pub duplicate_grace: Duration,
    /// Whether services were deployed at all in this run.
    pub deployed: bool,
}

/// A stretch of time during which a slot ran several containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlap {
    pub slot: String,
    pub from_us: u64,
    /// `None`: still more than one at the last sample.
    pub to_us: Option<u64>,
    pub most: usize,
}

/// Every stretch in which a slot had more than one running container.
pub fn overlaps(samples: &[Sample]) -> Vec<Overlap> {
    let mut open: BTreeMap<String, Overlap> = BTreeMap::new();
    let mut closed = Vec::new();
    for sample in samples {
        let mut running: BTreeMap<String, usize> = BTreeMap::new();
        for container in sample.containers.iter().filter(|c| c.state == "running") {
            *running.entry(container.slot_key()).or_default() += 1;
        }
        for (slot, &count) in &running {
            if count > 1 {
                let overlap = open.entry(slot.clone()).or_insert_with(|| Overlap {
                    slot: slot.clone(),
                    from_us: sample.time_us,
                    to_us: None,
                    most: count,
                });
                overlap.most = overlap.most.max(count);
            }
        }
        let ended: Vec<String> = open
            .keys()
            .filter(|slot| running.get(*slot).copied().unwrap_or(0) <= 1)
            .cloned()
            .collect();
        for slot in ended {
            let mut overlap = open.remove(&slot).expect("open overlap");
            overlap.to_us = Some(sample.time_us);
            closed.push(overlap);
        }
    }
    closed.extend(open.into_values());
    closed
}

/// Deaths the nemesis did not cause and that did not remove a redundant
/// copy of a slot.
pub fn unexplained_deaths(
    samples: &[Sample],
    deaths: &[Death],
    killed: &[(String, u64)],
) -> Vec<Death> {
    // The nemesis' SIGKILL shows up as a death moments later.
    const KILL_WINDOW_US: u64 = 5_000_000;
    deaths
        .iter()
        .filter(|death| {
            let ours = killed.iter().any(|(id, at)| {
                id == &death.container
                    && death.time_us + 1_000_000 >= *at
                    && death.time_us <= at + KILL_WINDOW_US
            });
            // A churned service's containers go on purpose (scaled away,
            // moved, replaced); the `leader-actions` checker judges who
            // removed them.
            if ours || death.slot.as_deref().is_some_and(churn::churned) {
                return false;
            }
            // Redundant: its slot ran another container at the last sample
            // before it died.
            let redundant = death.slot.as_ref().is_some_and(|slot| {
                samples
                    .iter()
                    .rev()
                    .find(|s| s.time_us <= death.time_us)
                    .is_some_and(|s| {
                        s.containers
                            .iter()
                            .filter(|c| &c.slot_key() == slot && c.state == "running")
                            .any(|c| c.id != death.container)
                    })
            });
            !redundant
        })
        .cloned()
        .collect()
}

pub fn check(observed: Observed<'_>) -> Verdict {
    if !observed.deployed {
        return Verdict::new(
            "supervisor",
            Some(true),
            "no services in this run",
            json!({}),
        );
    }
    if observed.samples.is_empty() {
        return Verdict::new(
            "supervisor",
            None,
            "no container samples: cannot decide",
            json!({}),
        );
    }
    let grace_us = observed.duplicate_grace.as_micros() as u64;
    let last_us = observed.samples.last().map_or(0, |s| s.time_us);
    let all_overlaps = overlaps(observed.samples);
    let long_overlaps: Vec<&Overlap> = all_overlaps
        .iter()
        .filter(|o| {
            o.to_us.unwrap_or(last_us).saturating_sub(o.from_us) > grace_us || o.to_us.is_none()
        })
        .collect();
    let stream_broken = observed.deaths.iter().any(|d| d.container.starts_with('<'));
    let unexplained = unexplained_deaths(observed.samples, observed.deaths, observed.killed);
    let converged = observed.convergence.as_ref().map(|d| d.as_millis() as u64);
    let valid = if stream_broken {
        None
    } else {
        Some(long_overlaps.is_empty() && unexplained.is_empty() && converged.is_ok())
    };
    let summary = format!(
        "{} samples; {} slots ran twice beyond {:?} ({} briefly); {} unexplained container deaths; {}",
        observed.samples.len(),
        long_overlaps.len(),
        observed.duplicate_grace,
        all_overlaps.len() - long_overlaps.len(),
        unexplained.len(),
        match &converged {
            Ok(ms) => format!("desired counts {ms} ms after healing"),
            Err(e) => format!("NOT converged after healing: {e}"),
        }
    );
    Verdict::new(
        "supervisor",
        valid,
        if stream_broken {
            format!("the engine's event stream broke: cannot decide ({summary})")
        } else {
            summary
        },
        json!({
            "samples": observed.samples.len(),
            "overlaps": all_overlaps.iter().map(|o| json!({
                "slot": o.slot, "from_us": o.from_us, "to_us": o.to_us, "most": o.most,
            })).collect::<Vec<_>>(),
            "overlaps_beyond_grace": long_overlaps.len(),
            "deaths": observed.deaths.len(),
            "killed_by_nemesis": observed.killed.len(),
            "unexplained_deaths": unexplained.iter().map(|d| json!({
                "container": d.container, "slot": d.slot, "time_us": d.time_us, "exit_code": d.exit_code,
            })).collect::<Vec<_>>(),
            "convergence_ms": converged.as_ref().ok(),
            "convergence_error": converged.as_ref().err(),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containers::Workload;

    fn container(id: &str, slot: u32, state: &str) -> Workload {
        Workload {
            id: id.into(),
            namespace: "jepsen".into(),
            service: "echo-a".into(),
            slot,
            generation: 1,
            state: state.into(),
        }
    }

    fn sample(time_s: u64, containers: Vec<Workload>) -> Sample {
        Sample {
            time_us: time_s * 1_000_000,
            containers,
        }
    }

    fn observed<'a>(
        samples: &'a [Sample],
        deaths: &'a [Death],
        killed: &'a [(String, u64)],
    ) -> Observed<'a> {
        Observed {
            samples,
            deaths,
            killed,
            convergence: Ok(Duration::from_millis(800)),
            duplicate_grace: Duration::from_secs(5),
            deployed: true,
        }
    }

    #[test]
    fn a_brief_double_is_tolerated_a_long_one_is_not() {
        let samples = vec![
            sample(0, vec![container("a", 0, "running")]),
            sample(
                1,
                vec![container("a", 0, "running"), container("b", 0, "running")],
            ),
            sample(2, vec![container("b", 0, "running")]),
        ];
        assert!(check(observed(&samples, &[], &[])).passed());
        let long: Vec<Sample> = (0..10)
            .map(|t| {
                sample(
                    t,
                    vec![container("a", 0, "running"), container("b", 0, "running")],
                )
            })
            .collect();
        let verdict = check(observed(&long, &[], &[]));
        assert_eq!(verdict.valid, Some(false), "{}", verdict.summary);
    }

    #[test]
    fn a_death_is_explained_only_by_the_nemesis_or_redundancy() {
        let samples = vec![
            sample(
                0,
                vec![container("a", 0, "running"), container("c", 1, "running")],
            ),
            sample(
                1,
                vec![
                    container("a", 0, "running"),
                    container("b", 0, "running"),
                    container("c", 1, "running"),
                ],
            ),
            sample(
                2,
                vec![container("a", 0, "running"), container("c", 1, "running")],
            ),
        ];
        let death = |id: &str, slot: u32, at_s: u64| Death {
            time_us: at_s * 1_000_000 + 500_000,
            container: id.into(),
            slot: Some(format!("jepsen/echo-a#{slot}")),
            exit_code: Some(137),
        };
        // The redundant copy "b" may go; "c" was killed by the nemesis.
        let deaths = vec![death("b", 0, 1), death("c", 1, 1)];
        let killed = vec![("c".to_string(), 1_400_000)];
        assert!(check(observed(&samples, &deaths, &killed)).passed());
        // Nobody killed "c": the control plane stopped a workload.
        let verdict = check(observed(&samples, &deaths, &[]));
        assert_eq!(verdict.valid, Some(false));
        assert_eq!(unexplained_deaths(&samples, &deaths, &[]).len(), 1);
    }

    #[test]
    fn no_convergence_after_healing_is_invalid_and_no_samples_undecided() {
        let samples = vec![sample(0, vec![container("a", 0, "running")])];
        let mut o = observed(&samples, &[], &[]);
        o.convergence = Err("echo-a#1: 0 running containers".into());
        assert_eq!(check(o).valid, Some(false));
        assert_eq!(check(observed(&[], &[], &[])).valid, None);
    }
}
