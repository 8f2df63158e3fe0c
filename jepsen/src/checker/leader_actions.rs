//! The `leader-actions` checker: no manager destroys a container (remove,
//! stop, kill, restart through the engine) unless it leads a quorum at
//! that moment. Ground truth is the observer's record of every manager's
//! term and leader; the engine calls are the managers' own, recorded by
//! their socket proxies.
//!
//! A call by manager M at time t is judged against the *majority term*:
//! the highest term that a majority of the voters (every voter any
//! observation listed so far — more voters only lower that term) had been
//! seen to hold by `t - slack`. M may act if it was seen leading that
//! term or a later one, and its leadership of that term cannot have begun
//! after `t + slack` (its own last answer with an older term was sent
//! before then). Anything else is flagged: the majority had moved on to a
//! term M did not lead — the deposed leader acting on a stale view. The
//! slack (500 ms in runs) absorbs the observer's 100 ms polling, answers
//! in flight and a lease's own margin; it only ever lets calls pass. A
//! flagged call whose container the majority term's leader had created is
//! named as such: the deposed leader destroying the new leader's work.
//! Calls before the first observation or after the last are not judged.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::json;

use super::Verdict;
use crate::engine_proxy::{Action, EngineCall};
use crate::observer::Observation;

/// The judgement of one destructive call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// The caller led a quorum (within the slack).
    Leader,
    /// The caller did not: the majority was at `majority_term`, led by
    /// `majority_leader` (if one was seen).
    NotQuorumLeader {
        majority_term: u64,
        majority_leader: Option<u64>,
        /// The container was made by the majority term's leader.
        leaders_container: bool,
    },
    /// No observations around the call.
    Unjudged,
}

/// Who led which term, and since when at the earliest.
struct Leaders {
    /// term → (leader, first seen µs)
    by_term: BTreeMap<u64, (u64, u64)>,
}

impl Leaders {
    fn observed(observations: &[Observation]) -> Leaders {
        let mut by_term: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        for o in observations {
            if let Some(leader) = o.leader {
                let entry = by_term.entry(o.term).or_insert((leader, o.time_us));
                if entry.0 == leader {
                    entry.1 = entry.1.min(o.time_us);
                }
            }
        }
        Leaders { by_term }
    }
}

/// The earliest the leadership of `term` by `leader` can have begun: the
/// send time of the leader's own last answer, before it was first seen
/// leading, that showed an older term.
fn leadership_start(observations: &[Observation], term: u64, leader: u64, first_seen: u64) -> u64 {
    observations
        .iter()
        .filter(|o| o.manager == leader && o.term < term && o.time_us <= first_seen)
        .map(|o| o.sent_us)
        .max()
        .unwrap_or(0)
}

/// The highest term a majority of the voters had been seen to hold by `at`.
pub fn majority_term(observations: &[Observation], at: u64) -> u64 {
    let mut voters: BTreeSet<u64> = BTreeSet::new();
    let mut terms: BTreeMap<u64, u64> = BTreeMap::new();
    for o in observations.iter().filter(|o| o.time_us <= at) {
        voters.extend(o.voters.iter().copied());
        let term = terms.entry(o.manager).or_default();
        *term = (*term).max(o.term);
    }
    if voters.is_empty() {
        return 0;
    }
    let mut held: Vec<u64> = voters
        .iter()
        .map(|v| terms.get(v).copied().unwrap_or(0))
        .collect();
    held.sort_unstable_by(|a, b| b.cmp(a));
    let majority = voters.len() / 2 + 1;
    held[majority - 1]
}

/// Judges one destructive call; `creators` maps a container name to the
/// managers that asked to create it, with when.
pub fn judge(
    observations: &[Observation],
    call: &EngineCall,
    creators: &BTreeMap<String, Vec<(u64, u64)>>,
    slack: Duration,
) -> Judgement {
    let slack_us = slack.as_micros() as u64;
    let (Some(first), Some(last)) = (observations.first(), observations.last()) else {
        return Judgement::Unjudged;
    };
    if call.time_us < first.time_us || call.time_us > last.time_us + slack_us {
        return Judgement::Unjudged;
    }
    let majority = majority_term(observations, call.time_us.saturating_sub(slack_us));
    let leaders = Leaders::observed(observations);
    let leads = leaders
        .by_term
        .range(majority..)
        .any(|(&term, &(leader, first_seen))| {
            leader == call.manager
                && leadership_start(observations, term, leader, first_seen)
                    <= call.time_us + slack_us
        });
    if leads || majority == 0 {
        return Judgement::Leader;
    }
    let majority_leader = leaders.by_term.get(&majority).map(|&(l, _)| l);
    let name = call.name.as_deref().unwrap_or(call.target.as_str());
    let leaders_container = majority_leader.is_some_and(|leader| {
        leader != call.manager
            && creators.get(name).is_some_and(|made| {
                made.iter()
                    .any(|&(by, at)| by == leader && at <= call.time_us)
            })
    });
    Judgement::NotQuorumLeader {
        majority_term: majority,
        majority_leader,
        leaders_container,
    }
}

pub fn check(observations: &[Observation], calls: &[EngineCall], slack: Duration) -> Verdict {
    let mut creators: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    for call in calls.iter().filter(|c| c.action == Action::Create) {
        creators
            .entry(call.target.clone())
            .or_default()
            .push((call.manager, call.time_us));
    }
    let destructive: Vec<&EngineCall> = calls.iter().filter(|c| c.action.destructive()).collect();
    let mut flagged = Vec::new();
    let mut unjudged = 0;
    let mut victims = 0;
    for call in &destructive {
        match judge(observations, call, &creators, slack) {
            Judgement::Leader => {}
            Judgement::Unjudged => unjudged += 1,
            Judgement::NotQuorumLeader {
                majority_term,
                majority_leader,
                leaders_container,
            } => {
                if leaders_container {
                    victims += 1;
                }
                let own = observations
                    .iter()
                    .rev()
                    .find(|o| o.manager == call.manager && o.time_us <= call.time_us);
                flagged.push(json!({
                    "time_us": call.time_us,
                    "manager": call.manager,
                    "action": call.action,
                    "container": call.name.as_deref().unwrap_or(&call.target),
                    "slot": call.slot,
                    "generation": call.generation,
                    "majority_term": majority_term,
                    "majority_leader": majority_leader,
                    "leaders_container": leaders_container,
                    "caller_seen": own.map(|o| json!({
                        "term": o.term, "leader": o.leader, "state": o.state,
                        "quorum_contact_ms": o.quorum_contact_ms, "time_us": o.time_us,
                    })),
                }));
            }
        }
    }
    let longest_contact = observations
        .iter()
        .filter(|o| o.leader == Some(o.manager))
        .filter_map(|o| o.quorum_contact_ms)
        .max();
    let mut by_manager: BTreeMap<u64, usize> = BTreeMap::new();
    for call in &destructive {
        *by_manager.entry(call.manager).or_default() += 1;
    }
    let valid = if observations.is_empty() && !destructive.is_empty() {
        None
    } else {
        Some(flagged.is_empty())
    };
    let summary = format!(
        "{} destructive engine calls ({} creations), {} not judged; {} by a manager that did not lead a quorum (slack {} ms), {} of them on the new leader's containers; {} observations{}",
        destructive.len(),
        calls.len() - destructive.len(),
        unjudged,
        flagged.len(),
        slack.as_millis(),
        victims,
        observations.len(),
        match longest_contact {
            Some(ms) => format!(", longest quorum_contact_ms a leader reported: {ms}"),
            None => String::new(),
        }
    );
    Verdict::new(
        "leader-actions",
        valid,
        summary,
        json!({
            "destructive_calls": destructive.len(),
            "by_manager": by_manager,
            "unjudged": unjudged,
            "slack_ms": slack.as_millis() as u64,
            "flagged": flagged,
            "on_the_new_leaders_containers": victims,
            "longest_leader_quorum_contact_ms": longest_contact,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(time_ms: u64, manager: u64, term: u64, leader: Option<u64>) -> Observation {
        Observation {
            time_us: time_ms * 1000,
            sent_us: time_ms * 1000 - 5_000,
            manager,
            term,
            leader,
            state: None,
            voters: vec![1, 2, 3, 4, 5],
            quorum_contact_ms: None,
        }
    }

    fn call(time_ms: u64, manager: u64, action: Action, name: &str) -> EngineCall {
        EngineCall {
            time_us: time_ms * 1000,
            manager,
            action,
            target: name.into(),
            name: Some(name.into()),
            slot: Some("jepsen/churn-a#0".into()),
            generation: Some(2),
            request: String::new(),
        }
    }

    /// m1 leads term 3 until a partition at 1 s; m2 wins term 4 with
    /// m3–m5 by 1.3 s while m1 still believes it leads term 3.
    fn deposed_history() -> Vec<Observation> {
        let mut observations = Vec::new();
        for t in (100..=3000).step_by(100) {
            observations.push(seen(t, 1, 3, Some(1)));
            let (term, leader) = if t < 1300 { (3, 1) } else { (4, 2) };
            for m in 2..=5 {
                observations.push(seen(t + 10, m, term, Some(leader)));
            }
        }
        observations.sort_by_key(|o| o.time_us);
        observations
    }

    #[test]
    fn a_deposed_leaders_removal_of_the_new_leaders_container_is_flagged() {
        let observations = deposed_history();
        let calls = vec![
            call(500, 1, Action::Create, "rv-a-0-1"),
            call(800, 1, Action::Remove, "rv-old"),
            call(1500, 2, Action::Create, "rv-a-0-2"),
            call(1800, 2, Action::Remove, "rv-a-0-1"),
            call(2500, 1, Action::Remove, "rv-a-0-2"),
        ];
        let verdict = check(&observations, &calls, Duration::from_millis(500));
        assert_eq!(verdict.valid, Some(false), "{}", verdict.summary);
        let flagged = verdict.details["flagged"].as_array().unwrap();
        assert_eq!(flagged.len(), 1, "{flagged:?}");
        assert_eq!(flagged[0]["manager"], 1);
        assert_eq!(flagged[0]["majority_term"], 4);
        assert_eq!(flagged[0]["majority_leader"], 2);
        assert_eq!(flagged[0]["leaders_container"], true);
    }

    #[test]
    fn the_slack_lets_the_old_leader_finish_what_it_started_at_the_cut() {
        let observations = deposed_history();
        // m1 acts 300 ms after the majority moved on: within the slack.
        let calls = vec![call(1600, 1, Action::Stop, "rv-b-1-1")];
        assert!(check(&observations, &calls, Duration::from_millis(500)).passed());
        // The same call with no slack is flagged.
        let verdict = check(&observations, &calls, Duration::ZERO);
        assert_eq!(verdict.valid, Some(false), "{}", verdict.summary);
    }

    #[test]
    fn a_new_leader_acting_just_before_it_is_first_seen_passes() {
        let observations = deposed_history();
        // m2 was first seen leading at 1.31 s; its last older answer was
        // sent at 1.2 s: a removal at 1.25 s may be its first act.
        let calls = vec![call(1250, 2, Action::Remove, "rv-a-0-1")];
        let verdict = check(&observations, &calls, Duration::ZERO);
        assert!(verdict.passed(), "{}", verdict.summary);
        // A follower that never led is flagged, whenever it acts.
        let calls = vec![call(2000, 3, Action::Kill, "rv-a-0-1")];
        let verdict = check(&observations, &calls, Duration::from_millis(500));
        assert_eq!(verdict.valid, Some(false), "{}", verdict.summary);
    }

    #[test]
    fn calls_outside_the_observed_time_are_not_judged() {
        let observations = deposed_history();
        let calls = vec![
            call(10, 3, Action::Remove, "x"),
            call(9000, 3, Action::Remove, "y"),
        ];
        let verdict = check(&observations, &calls, Duration::from_millis(500));
        assert!(verdict.passed());
        assert_eq!(verdict.details["unjudged"], 2);
        let verdict = check(&[], &calls, Duration::from_millis(500));
        assert_eq!(verdict.valid, None);
    }

    #[test]
    fn the_majority_term_needs_a_majority_of_the_voters() {
        let observations = vec![
            seen(100, 1, 7, None),
            seen(100, 2, 7, None),
            seen(100, 3, 5, Some(3)),
            seen(100, 4, 5, Some(3)),
            seen(100, 5, 5, Some(3)),
        ];
        assert_eq!(majority_term(&observations, 100_000), 5);
        assert_eq!(majority_term(&observations, 0), 0);
    }
}
