//! The register checker: turns the history's `read`, `write` and `cas`
//! operations into register operations — definite ones with their results,
//! indeterminate ones (`info`, or never answered) as Knossos treats them,
//! certainly-failed ones left out — and checks each key's history for
//! linearizability with [`super::linearizable`].

use serde_json::json;

use super::linearizable::{
    self, Budget, KeyVerdict, RegisterInput, RegisterOperation, RegisterOutput,
};
use super::Verdict;
use crate::history::{operations, Event, EventType};

/// The register operations of a history.
pub fn register_operations(events: &[Event]) -> Vec<RegisterOperation> {
    let mut ops = Vec::new();
    for op in operations(events) {
        let invoke = &op.invoke;
        let (Some(key), Some(process)) = (invoke.key.clone(), invoke.process.client()) else {
            continue;
        };
        let outcome = op.outcome();
        if outcome == EventType::Fail {
            continue;
        }
        let result = op.completion.as_ref().map(|c| &c.value);
        let (input, output) = match invoke.f.as_str() {
            "read" => {
                // A read without an answer tells nothing.
                if outcome != EventType::Ok {
                    continue;
                }
                (
                    RegisterInput::Read,
                    RegisterOutput::Read(result.and_then(|v| v.as_u64())),
                )
            }
            "write" => {
                let Some(value) = invoke.value.as_u64() else {
                    continue;
                };
                let output = if outcome == EventType::Ok {
                    RegisterOutput::Write
                } else {
                    RegisterOutput::Unknown
                };
                (RegisterInput::Write(value), output)
            }
            "cas" => {
                let (Some(from), Some(to)) =
                    (invoke.value["from"].as_u64(), invoke.value["to"].as_u64())
                else {
                    continue;
                };
                let output = match (outcome, result.and_then(|v| v["swapped"].as_bool())) {
                    (EventType::Ok, Some(true)) => RegisterOutput::CasOk,
                    (EventType::Ok, Some(false)) => RegisterOutput::CasFail,
                    _ => RegisterOutput::Unknown,
                };
                (RegisterInput::Cas { from, to }, output)
            }
            _ => continue,
        };
        ops.push(RegisterOperation {
            id: invoke.index,
            process,
            key,
            input,
            output,
            call: invoke.time_us,
            ret: if outcome == EventType::Ok {
                op.ret_us()
            } else {
                None
            },
        });
    }
    ops
}

pub fn check(events: &[Event]) -> Verdict {
    let ops = register_operations(events);
    if ops.is_empty() {
        return Verdict::new(
            "linearizable",
            Some(true),
            "no register operations in this run",
            json!({}),
        );
    }
    let report = linearizable::check(&ops, Budget::default());
    let invalid: Vec<(&String, &KeyVerdict)> = report
        .keys
        .iter()
        .filter(|(_, v)| matches!(v, KeyVerdict::NotLinearizable { .. }))
        .collect();
    let unknown: Vec<&String> = report
        .keys
        .iter()
        .filter(|(_, v)| matches!(v, KeyVerdict::Unknown { .. }))
        .map(|(k, _)| k)
        .collect();
    let summary = match report.valid {
        Some(true) => format!(
            "{} operations on {} keys linearizable ({} indeterminate)",
            report.operations,
            report.keys.len(),
            report.indeterminate
        ),
        Some(false) => format!(
            "NOT linearizable: {} of {} keys ({})",
            invalid.len(),
            report.keys.len(),
            invalid
                .iter()
                .map(|(k, _)| k.as_str())
                .take(5)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => format!(
            "undecided: the search gave up on {} keys ({})",
            unknown.len(),
            unknown
                .iter()
                .take(5)
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let details = json!({
        "operations": report.operations,
        "indeterminate": report.indeterminate,
        "keys": report.keys.len(),
        "invalid_keys": invalid.iter().map(|(k, v)| json!({ "key": k, "verdict": v })).collect::<Vec<_>>(),
        "undecided_keys": unknown,
    });
    Verdict::new("linearizable", report.valid, summary, details)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Entry, Process, Recorder};

    /// Records `entry` with its own microsecond, so real-time order is
    /// strict (equal times count as concurrent).
    fn record(r: &Recorder, process: u64, kind: EventType, entry: Entry) {
        std::thread::sleep(std::time::Duration::from_millis(1));
        r.record(Process::Client(process), kind, entry);
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_write_is_caught() {
        let r = Recorder::in_memory();
        let write = Entry::new("write").key("k").value(1);
        record(&r, 1, EventType::Invoke, write.clone());
        record(&r, 1, EventType::Ok, write);
        let write = Entry::new("write").key("k").value(2);
        record(&r, 1, EventType::Invoke, write.clone());
        record(&r, 1, EventType::Ok, write);
        let read = Entry::new("read").key("k");
        record(&r, 2, EventType::Invoke, read.clone());
        record(&r, 2, EventType::Ok, read.value(1));
        let verdict = check(&r.events());
        assert_eq!(verdict.valid, Some(false), "{}", verdict.summary);
    }

    #[test]
    fn cas_results_and_indeterminate_writes_are_understood() {
        let r = Recorder::in_memory();
        let write = Entry::new("write").key("k").value(1);
        r.record(Process::Client(1), EventType::Invoke, write.clone());
        r.record(Process::Client(1), EventType::Info, write.error("timeout"));
        let cas = Entry::new("cas")
            .key("k")
            .value(json!({"from": 1, "to": 2}));
        r.record(Process::Client(2), EventType::Invoke, cas.clone());
        r.record(
            Process::Client(2),
            EventType::Ok,
            cas.value(json!({"from": 1, "to": 2, "swapped": true})),
        );
        let read = Entry::new("read").key("k");
        r.record(Process::Client(3), EventType::Invoke, read.clone());
        r.record(Process::Client(3), EventType::Ok, read.value(2));
        let ops = register_operations(&r.events());
        assert_eq!(ops.len(), 3);
        assert_eq!(ops[0].output, RegisterOutput::Unknown);
        assert!(ops[0].ret.is_none());
        assert_eq!(ops[1].output, RegisterOutput::CasOk);
        assert_eq!(check(&r.events()).valid, Some(true));
    }
}
