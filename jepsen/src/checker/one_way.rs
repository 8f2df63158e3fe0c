//! The `one-way` checker: a manager that cannot hear the leader (a
//! `partition-one-way` fault) must not disturb the others. For every such
//! fault it measures, from the fault's start until `settle` after its heal
//! (or the next fault's start, if sooner) — the heal included, since the
//! cut-off manager's higher term reaches the leader then:
//! - the longest gap between acknowledged writes (the pulse writer's,
//!   which never waits on the cut-off manager, register writes, successful
//!   compare-and-sets, set adds; the window's edges count), and
//! - how many times the others' term was raised (distinct terms above the
//!   one they held when the fault began, as the observer saw them; the
//!   cut-off manager's own campaigning is not counted).
//!
//! The run is invalid when a gap reaches `max_gap` (1 s) or the term was
//! raised more than `max_raises` (once).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;

use super::Verdict;
use crate::history::{operations, Event, EventType, Process};
use crate::observer::Observation;

/// The fault's name in the history.
pub const FAULT: &str = "partition-one-way";

/// One one-way fault as the history recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub cut: Option<u64>,
    pub start_us: u64,
    pub heal_us: Option<u64>,
    /// Where the measurement ends.
    pub end_us: u64,
}

/// The one-way faults of `events`, each measured until `settle` after its
/// heal or the next fault's start.
pub fn windows(events: &[Event], settle: Duration) -> Vec<Window> {
    let settle_us = settle.as_micros() as u64;
    let last_us = events.last().map_or(0, |e| e.time_us);
    let nemesis: Vec<&Event> = events
        .iter()
        .filter(|e| e.process == Process::NEMESIS)
        .collect();
    let fault = |e: &Event| {
        e.value
            .get("fault")
            .and_then(|f| f.as_str())
            .map(str::to_string)
    };
    let mut windows = Vec::new();
    for (i, event) in nemesis.iter().enumerate() {
        if event.f != "start"
            || event.kind != EventType::Invoke
            || fault(event).as_deref() != Some(FAULT)
        {
            continue;
        }
        let rest = &nemesis[i + 1..];
        let started = rest
            .iter()
            .find(|e| e.f == "start" && e.kind != EventType::Invoke);
        if started.is_some_and(|e| e.value.get("skipped").is_some()) {
            continue;
        }
        let cut = started.and_then(|e| e.value["targets"]["cut"].as_u64());
        let heal = rest
            .iter()
            .position(|e| e.f == "stop" && e.kind != EventType::Invoke);
        let heal_us = heal.map(|at| rest[at].time_us);
        let next_start = heal.and_then(|at| {
            rest[at..]
                .iter()
                .find(|e| e.f == "start" && e.kind == EventType::Invoke)
                .map(|e| e.time_us)
        });
        let end_us = heal_us
            .map_or(last_us, |h| h + settle_us)
            .min(next_start.unwrap_or(u64::MAX))
            .min(last_us.max(event.time_us));
        windows.push(Window {
            cut,
            start_us: event.time_us,
            heal_us,
            end_us,
        });
    }
    windows
}

/// Completion times of acknowledged writes.
pub fn acknowledged_writes(events: &[Event]) -> Vec<u64> {
    let mut times: Vec<u64> = operations(events)
        .iter()
        .filter_map(|op| {
            let completion = op.completion.as_ref()?;
            if completion.kind != EventType::Ok {
                return None;
            }
            let write = match op.invoke.f.as_str() {
                "write" | "add" | crate::workloads::pulse::F => true,
                "cas" => completion.value["swapped"].as_bool() == Some(true),
                _ => false,
            };
            write.then_some(completion.time_us)
        })
        .collect();
    times.sort_unstable();
    times
}

/// The longest stretch of `[from, to]` without a time of `times` (sorted):
/// its length and where it starts.
pub fn longest_gap(times: &[u64], from: u64, to: u64) -> (u64, u64) {
    let mut longest = (0, from);
    let mut previous = from;
    for &t in times.iter().filter(|&&t| t >= from && t <= to) {
        if t - previous > longest.0 {
            longest = (t - previous, previous);
        }
        previous = t;
    }
    if to.saturating_sub(previous) > longest.0 {
        longest = (to - previous, previous);
    }
    longest
}

/// How often the managers other than `cut` raised their term in
/// `[from, to]`, and the terms they went through.
pub fn term_raises(
    observations: &[Observation],
    cut: Option<u64>,
    from: u64,
    to: u64,
) -> (usize, u64, Vec<u64>) {
    let others = observations.iter().filter(|o| Some(o.manager) != cut);
    let base = others
        .clone()
        .filter(|o| o.time_us <= from)
        .map(|o| o.term)
        .max()
        .or_else(|| {
            others
                .clone()
                .filter(|o| o.time_us <= to)
                .map(|o| o.term)
                .min()
        })
        .unwrap_or(0);
    let raised: BTreeSet<u64> = others
        .filter(|o| o.time_us > from && o.time_us <= to && o.term > base)
        .map(|o| o.term)
        .collect();
    (raised.len(), base, raised.into_iter().collect())
}

pub fn check(
    events: &[Event],
    observations: &[Observation],
    settle: Duration,
    max_gap: Duration,
    max_raises: usize,
) -> Verdict {
    let windows = windows(events, settle);
    if windows.is_empty() {
        return Verdict::new(
            "one-way",
            Some(true),
            "no one-way fault took place",
            json!({ "faults": 0 }),
        );
    }
    let writes = acknowledged_writes(events);
    if writes.is_empty() {
        return Verdict::new(
            "one-way",
            None,
            "no acknowledged writes in the run: cannot measure write gaps",
            json!({ "faults": windows.len() }),
        );
    }
    if observations.is_empty() {
        return Verdict::new(
            "one-way",
            None,
            "no observations of the managers' terms: cannot count term raises",
            json!({ "faults": windows.len() }),
        );
    }
    let max_gap_us = max_gap.as_micros() as u64;
    let mut details = Vec::new();
    let mut bad = 0;
    let mut longest_overall = 0;
    let mut most_raises = 0;
    for window in &windows {
        let (gap, gap_from) = longest_gap(&writes, window.start_us, window.end_us);
        let (raises, base, terms) =
            term_raises(observations, window.cut, window.start_us, window.end_us);
        let cut_term = observations
            .iter()
            .filter(|o| Some(o.manager) == window.cut)
            .filter(|o| o.time_us >= window.start_us && o.time_us <= window.end_us)
            .map(|o| o.term)
            .max();
        let ok = gap < max_gap_us && raises <= max_raises;
        if !ok {
            bad += 1;
        }
        longest_overall = longest_overall.max(gap);
        most_raises = most_raises.max(raises);
        details.push(json!({
            "cut": window.cut,
            "start_us": window.start_us,
            "heal_us": window.heal_us,
            "end_us": window.end_us,
            "longest_write_gap_ms": gap / 1000,
            "gap_from_us": gap_from,
            "term_at_start": base,
            "term_raises": raises,
            "terms": terms,
            "cut_off_managers_highest_term": cut_term,
            "valid": ok,
        }));
    }
    Verdict::new(
        "one-way",
        Some(bad == 0),
        format!(
            "{} one-way faults ({} bad): longest write gap {} ms (limit {} ms), most term raises {} (limit {}), through the heal + {} ms",
            windows.len(),
            bad,
            longest_overall / 1000,
            max_gap.as_millis(),
            most_raises,
            max_raises,
            settle.as_millis()
        ),
        json!({
            "faults": details,
            "longest_write_gap_ms": longest_overall / 1000,
            "most_term_raises": most_raises,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Entry;

    fn seen(time_ms: u64, manager: u64, term: u64) -> Observation {
        Observation {
            time_us: time_ms * 1000,
            sent_us: time_ms * 1000,
            manager,
            term,
            leader: None,
            state: None,
            voters: vec![1, 2, 3],
            quorum_contact_ms: None,
        }
    }

    /// Writes every 100 ms from 0 to 5 s except in `[hole_from, hole_to)`
    /// ms, a one-way fault of m3 from 1 s to 3 s.
    fn history(hole_from: u64, hole_to: u64) -> Vec<Event> {
        let mut events = Vec::new();
        let mut index = 0;
        let mut push = |time_ms: u64, process: Process, kind: EventType, entry: Entry| {
            events.push(Event {
                index,
                time_us: time_ms * 1000,
                process,
                kind,
                f: entry.f,
                key: entry.key,
                value: entry.value,
                node: None,
                error: None,
            });
            index += 1;
        };
        let fault = |extra: serde_json::Value| {
            let mut value = json!({ "fault": FAULT });
            if let serde_json::Value::Object(more) = extra {
                value.as_object_mut().unwrap().extend(more);
            }
            value
        };
        for t in (0..5000).step_by(100) {
            if t == 1000 {
                push(
                    t,
                    Process::NEMESIS,
                    EventType::Invoke,
                    Entry::new("start").value(fault(json!({}))),
                );
                push(
                    t,
                    Process::NEMESIS,
                    EventType::Ok,
                    Entry::new("start").value(fault(json!({"targets": {"cut": 3}}))),
                );
            }
            if t == 3000 {
                push(
                    t,
                    Process::NEMESIS,
                    EventType::Invoke,
                    Entry::new("stop").value(fault(json!({}))),
                );
                push(
                    t,
                    Process::NEMESIS,
                    EventType::Ok,
                    Entry::new("stop").value(fault(json!({}))),
                );
            }
            if t >= hole_from && t < hole_to {
                continue;
            }
            push(
                t,
                Process::Client(1),
                EventType::Invoke,
                Entry::new("write").key("k").value(t),
            );
            push(
                t + 5,
                Process::Client(1),
                EventType::Ok,
                Entry::new("write").key("k").value(t),
            );
        }
        events
    }

    fn steady_terms() -> Vec<Observation> {
        let mut observations = Vec::new();
        for t in (0..5000).step_by(100) {
            observations.push(seen(t, 1, 4));
            observations.push(seen(t, 2, 4));
            // The cut-off manager campaigns on its own.
            observations.push(seen(
                t,
                3,
                if (1000..3000).contains(&t) {
                    4 + t / 100
                } else {
                    4
                },
            ));
        }
        observations
    }

    #[test]
    fn writes_flowing_and_a_steady_term_pass() {
        let events = history(0, 0);
        let verdict = check(
            &events,
            &steady_terms(),
            Duration::from_secs(2),
            Duration::from_secs(1),
            1,
        );
        assert!(verdict.passed(), "{}", verdict.summary);
        let windows = windows(&events, Duration::from_secs(2));
        assert_eq!(windows.len(), 1);
        assert_eq!(windows[0].cut, Some(3));
        assert_eq!(windows[0].end_us, 4_905_000, "the last event");
    }

    #[test]
    fn a_write_gap_of_a_second_is_flagged_also_after_the_heal() {
        // Nothing acknowledged from 3.0 s to 4.2 s: after the heal.
        let events = history(3000, 4200);
        let verdict = check(
            &events,
            &steady_terms(),
            Duration::from_secs(2),
            Duration::from_secs(1),
            1,
        );
        assert_eq!(verdict.valid, Some(false), "{}", verdict.summary);
        assert!(verdict.details["longest_write_gap_ms"].as_u64().unwrap() >= 1000);
        // A hole of 0.8 s is fine.
        let events = history(1500, 2300);
        let verdict = check(
            &events,
            &steady_terms(),
            Duration::from_secs(2),
            Duration::from_secs(1),
            1,
        );
        assert!(verdict.passed(), "{}", verdict.summary);
    }

    #[test]
    fn the_others_raising_their_term_twice_is_flagged() {
        let events = history(0, 0);
        let mut observations = steady_terms();
        // At the heal the leader adopts the cut-off manager's term 29,
        // then an election raises it to 30.
        for t in (3100..5000).step_by(100) {
            let term = if t < 3300 { 29 } else { 30 };
            observations.push(seen(t + 1, 1, term));
            observations.push(seen(t + 1, 2, term));
        }
        let verdict = check(
            &events,
            &observations,
            Duration::from_secs(2),
            Duration::from_secs(1),
            1,
        );
        assert_eq!(verdict.valid, Some(false), "{}", verdict.summary);
        assert_eq!(verdict.details["most_term_raises"], 2);
        assert_eq!(
            term_raises(&observations, Some(3), 1_000_000, 4_900_000).0,
            2
        );
    }

    #[test]
    fn the_longest_gap_counts_the_edges() {
        assert_eq!(longest_gap(&[], 0, 500), (500, 0));
        assert_eq!(longest_gap(&[100, 200, 900], 0, 1000), (700, 200));
        assert_eq!(longest_gap(&[100, 200], 0, 1000), (800, 200));
    }
}
