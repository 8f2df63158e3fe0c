//! The outputs of a run, next to its `history.jsonl`: `verdict.json` (every
//! checker's finding and the run's settings, seed included, so the run can
//! be replayed), `summary.txt` for humans, `supervisor.jsonl` (the engine's
//! samples and container deaths the supervisor checker judged),
//! `observer.jsonl` and `engine.jsonl` (the managers' views and engine
//! calls) and `timeline.svg` (operations per client process, faults shaded).

pub mod timeline;

use std::io::Write;
use std::path::Path;

use serde_json::json;

use crate::checker::Verdict;
use crate::engine_proxy::EngineCall;
use crate::history::{self, Event, EventType};
use crate::observer::Observation;
use crate::run::RunOptions;
use crate::workloads::supervisor::{Death, Sample};

pub fn write(
    dir: &Path,
    options: &RunOptions,
    events: &[Event],
    verdicts: &[Verdict],
    samples: &[Sample],
    deaths: &[Death],
) -> anyhow::Result<()> {
    let valid = verdicts.iter().all(Verdict::passed);
    let settings = json!({
        "name": options.name,
        "seed": options.seed,
        "nemeses": options.nemeses.iter().map(|k| k.name()).collect::<Vec<_>>(),
        "workloads": options.workloads.names(),
        "duration_s": options.duration.as_secs_f64(),
        "managers": options.managers,
        "image": options.image,
        "failpoints": options.failpoints,
        "client_processes": options.client_processes,
    });
    let verdict = json!({
        "valid": valid,
        "run": settings,
        "checkers": verdicts,
    });
    std::fs::write(
        dir.join("verdict.json"),
        serde_json::to_string_pretty(&verdict)?,
    )?;
    std::fs::write(
        dir.join("summary.txt"),
        summary(options, events, verdicts, valid),
    )?;

    let mut supervisor =
        std::io::BufWriter::new(std::fs::File::create(dir.join("supervisor.jsonl"))?);
    for sample in samples {
        writeln!(supervisor, "{}", json!({ "sample": sample }))?;
    }
    for death in deaths {
        writeln!(supervisor, "{}", json!({ "death": death }))?;
    }
    supervisor.flush()?;

    draw_timeline(dir, options, events)?;
    Ok(())
}

/// `observer.jsonl` (every manager's view, every 100 ms) and
/// `engine.jsonl` (the managers' container creations and destructive
/// engine calls), which the `leader-actions` and `one-way` checkers judged.
pub fn write_records(
    dir: &Path,
    observations: &[Observation],
    calls: &[EngineCall],
) -> anyhow::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(dir.join("observer.jsonl"))?);
    for observation in observations {
        writeln!(file, "{}", serde_json::to_string(observation)?)?;
    }
    file.flush()?;
    let mut file = std::io::BufWriter::new(std::fs::File::create(dir.join("engine.jsonl"))?);
    for call in calls {
        writeln!(file, "{}", serde_json::to_string(call)?)?;
    }
    file.flush()?;
    Ok(())
}

fn draw_timeline(dir: &Path, options: &RunOptions, events: &[Event]) -> anyhow::Result<()> {
    let ops: Vec<timeline::TimelineOp> = history::operations(events)
        .iter()
        .map(|op| {
            let workload = match op.invoke.f.as_str() {
                "add" | "final-read" => "set",
                "scale" | "deploy" | "move" => "churn",
                crate::workloads::pulse::F => "pulse",
                _ => "register",
            };
            let label = match op.invoke.f.as_str() {
                "write" | "add" => format!("{} {}", op.invoke.f, op.invoke.value),
                "cas" => format!("cas {}->{}", op.invoke.value["from"], op.invoke.value["to"]),
                f => f.to_string(),
            };
            timeline::TimelineOp {
                lane: format!("{workload} p{}", op.invoke.process.client().unwrap_or(0)),
                start_us: op.invoke.time_us,
                end_us: op.completion.as_ref().map(|c| c.time_us),
                outcome: match op.outcome() {
                    EventType::Ok => timeline::Outcome::Ok,
                    EventType::Fail => timeline::Outcome::Fail,
                    _ => timeline::Outcome::Info,
                },
                label,
            }
        })
        .collect();
    let faults: Vec<timeline::FaultWindow> = history::fault_windows(events)
        .into_iter()
        .map(|w| timeline::FaultWindow {
            name: w.name,
            start_us: w.start_us,
            end_us: w.end_us,
        })
        .collect();
    let duration = events.last().map_or(0, |e| e.time_us);
    let title = format!(
        "raftvisor-jepsen {} (seed {}): {}",
        options.name,
        options.seed,
        options
            .nemeses
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    timeline::render_svg(&dir.join("timeline.svg"), &title, duration, &ops, &faults)?;
    Ok(())
}

fn summary(options: &RunOptions, events: &[Event], verdicts: &[Verdict], valid: bool) -> String {
    let ops = history::operations(events);
    let count = |kind: EventType| ops.iter().filter(|o| o.outcome() == kind).count();
    let faults = history::fault_windows(events);
    let mut text = format!(
        "raftvisor-jepsen run {name}: {verdict}\n\
         seed {seed}, {duration:?}, {managers} managers, image {image}{failpoints}\n\
         nemeses: {nemeses}\n\
         workloads: {workloads}\n\
         operations: {total} ({ok} ok, {fail} fail, {info} indeterminate)\n\
         faults injected: {faults}\n\n",
        name = options.name,
        verdict = if valid { "VALID" } else { "INVALID" },
        seed = options.seed,
        duration = options.duration,
        managers = options.managers,
        image = options.image,
        failpoints = options
            .failpoints
            .as_ref()
            .map(|f| format!(", fail points {f}"))
            .unwrap_or_default(),
        nemeses = options
            .nemeses
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", "),
        workloads = options.workloads.names().join(", "),
        total = ops.len(),
        ok = count(EventType::Ok),
        fail = count(EventType::Fail),
        info = count(EventType::Info),
        faults = faults.len(),
    );
    for verdict in verdicts {
        text.push_str(&format!(
            "  {:<13} {:<9} {}\n",
            verdict.checker,
            verdict.label(),
            verdict.summary
        ));
    }
    text.push_str("\nfaults:\n");
    for window in &faults {
        text.push_str(&format!(
            "  {:>8.3}s – {:<9} {}\n",
            window.start_us as f64 / 1e6,
            window
                .end_us
                .map_or("(open)".to_string(), |e| format!("{:.3}s", e as f64 / 1e6)),
            window.name
        ));
    }
    text
}
