//! The set checker: after healing, the final read must hold every add that
//! was acknowledged (`lost` = 0) and nothing that was never added or that
//! certainly failed (`unexpected` = 0). Indeterminate adds may go either
//! way; how many made it is reported. Without a final read it cannot
//! decide.

use std::collections::BTreeSet;

use serde_json::json;

use super::Verdict;
use crate::history::{operations, Event, EventType};

pub fn check(events: &[Event]) -> Verdict {
    let mut acknowledged = BTreeSet::new();
    let mut failed = BTreeSet::new();
    let mut indeterminate = BTreeSet::new();
    let mut final_read: Option<BTreeSet<u64>> = None;
    for op in operations(events) {
        match op.invoke.f.as_str() {
            "add" => {
                let Some(element) = op.invoke.value.as_u64() else {
                    continue;
                };
                match op.outcome() {
                    EventType::Ok => acknowledged.insert(element),
                    EventType::Fail => failed.insert(element),
                    _ => indeterminate.insert(element),
                };
            }
            "final-read" if op.outcome() == EventType::Ok => {
                let read = op
                    .completion
                    .as_ref()
                    .and_then(|c| serde_json::from_value::<Vec<u64>>(c.value.clone()).ok());
                if let Some(read) = read {
                    final_read = Some(read.into_iter().collect());
                }
            }
            _ => {}
        }
    }
    let attempted = acknowledged.len() + failed.len() + indeterminate.len();
    let Some(read) = final_read else {
        return Verdict::new(
            "set",
            if attempted == 0 { Some(true) } else { None },
            if attempted == 0 {
                "no set operations in this run".to_string()
            } else {
                "no final read succeeded: cannot decide".to_string()
            },
            json!({ "attempted": attempted }),
        );
    };
    let lost: Vec<u64> = acknowledged.difference(&read).copied().collect();
    let unexpected: Vec<u64> = read
        .iter()
        .copied()
        .filter(|e| !acknowledged.contains(e) && !indeterminate.contains(e))
        .collect();
    let recovered = indeterminate.intersection(&read).count();
    let valid = lost.is_empty() && unexpected.is_empty();
    Verdict::new(
        "set",
        Some(valid),
        format!(
            "{} acknowledged adds, {} lost, {} unexpected; {} of {} indeterminate adds present",
            acknowledged.len(),
            lost.len(),
            unexpected.len(),
            recovered,
            indeterminate.len()
        ),
        json!({
            "attempted": attempted,
            "acknowledged": acknowledged.len(),
            "failed": failed.len(),
            "indeterminate": indeterminate.len(),
            "indeterminate_present": recovered,
            "final_size": read.len(),
            "lost": lost,
            "unexpected": unexpected,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Entry, Process, Recorder};

    fn add(recorder: &Recorder, process: u64, element: u64, outcome: EventType) {
        let entry = Entry::new("add").key("s").value(element);
        recorder.record(Process::Client(process), EventType::Invoke, entry.clone());
        recorder.record(Process::Client(process), outcome, entry);
    }

    fn final_read(recorder: &Recorder, elements: &[u64]) {
        let entry = Entry::new("final-read").key("s");
        recorder.record(Process::Client(99), EventType::Invoke, entry.clone());
        recorder.record(Process::Client(99), EventType::Ok, entry.value(elements));
    }

    #[test]
    fn a_lost_acknowledged_add_is_invalid() {
        let recorder = Recorder::in_memory();
        add(&recorder, 1, 1, EventType::Ok);
        add(&recorder, 1, 2, EventType::Ok);
        final_read(&recorder, &[1]);
        let verdict = check(&recorder.events());
        assert_eq!(verdict.valid, Some(false));
        assert_eq!(verdict.details["lost"], json!([2]));
    }

    #[test]
    fn an_element_that_failed_or_was_never_added_is_unexpected() {
        let recorder = Recorder::in_memory();
        add(&recorder, 1, 1, EventType::Fail);
        add(&recorder, 2, 2, EventType::Ok);
        final_read(&recorder, &[1, 2, 7]);
        let verdict = check(&recorder.events());
        assert_eq!(verdict.valid, Some(false));
        assert_eq!(verdict.details["unexpected"], json!([1, 7]));
    }

    #[test]
    fn indeterminate_adds_may_go_either_way() {
        let recorder = Recorder::in_memory();
        add(&recorder, 1, 1, EventType::Info);
        add(&recorder, 2, 2, EventType::Info);
        add(&recorder, 3, 3, EventType::Ok);
        final_read(&recorder, &[1, 3]);
        let verdict = check(&recorder.events());
        assert_eq!(verdict.valid, Some(true), "{}", verdict.summary);
        assert_eq!(verdict.details["indeterminate_present"], json!(1));
    }

    #[test]
    fn without_a_final_read_the_checker_cannot_decide() {
        let recorder = Recorder::in_memory();
        add(&recorder, 1, 1, EventType::Ok);
        assert_eq!(check(&recorder.events()).valid, None);
    }
}
