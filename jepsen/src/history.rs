//! The history of one run, as Jepsen keeps it: every client operation's
//! invocation and completion (`ok`, `fail` or the indeterminate `info`),
//! and every nemesis step, in the order the harness saw them, with the time
//! since the run started. It is written to `history.jsonl` as it grows (one
//! event a line) and read back by `raftvisor-jepsen check`, so a verdict can
//! be recomputed from the file alone.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// What an event says of its operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// The operation was sent.
    Invoke,
    /// It took effect, with this result.
    Ok,
    /// It certainly did not take effect.
    Fail,
    /// Nobody knows: it may have taken effect, now or later (a timeout, a
    /// lost answer). The process that sent it never sends again.
    Info,
}

/// Who performed an event: a client process or the nemesis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Process {
    Client(u64),
    Nemesis(NemesisProcess),
}

/// The nemesis' name in a history (serialised as the string `"nemesis"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NemesisProcess {
    Nemesis,
}

impl Process {
    pub const NEMESIS: Process = Process::Nemesis(NemesisProcess::Nemesis);

    pub fn client(self) -> Option<u64> {
        match self {
            Process::Client(p) => Some(p),
            Process::Nemesis(_) => None,
        }
    }
}

/// One line of `history.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub index: u64,
    /// Microseconds since the run started.
    pub time_us: u64,
    pub process: Process,
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The operation: `read`, `write`, `cas`, `add`, `final-read`, or the
    /// nemesis' `start` / `stop` of a fault.
    pub f: String,
    /// The register or set the operation is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The operation's argument on `invoke`, its result on completion.
    #[serde(default)]
    pub value: serde_json::Value,
    /// The replica the request went to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a caller fills in; index and time are the recorder's.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    pub f: String,
    pub key: Option<String>,
    pub value: serde_json::Value,
    pub node: Option<String>,
    pub error: Option<String>,
}

impl Entry {
    pub fn new(f: impl Into<String>) -> Entry {
        Entry {
            f: f.into(),
            ..Entry::default()
        }
    }

    pub fn key(mut self, key: impl Into<String>) -> Entry {
        self.key = Some(key.into());
        self
    }

    pub fn value(mut self, value: impl Serialize) -> Entry {
        self.value = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
        self
    }

    pub fn node(mut self, node: impl Into<String>) -> Entry {
        self.node = Some(node.into());
        self
    }

    pub fn error(mut self, error: impl Into<String>) -> Entry {
        self.error = Some(error.into());
        self
    }
}

struct Inner {
    events: Vec<Event>,
    file: Option<BufWriter<File>>,
    write_error: Option<String>,
}

/// Appends events in the order they happen, from any task, and mirrors
/// them to the history file. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    started: Instant,
    inner: Arc<Mutex<Inner>>,
}

impl Recorder {
    /// A recorder writing to `path` (created or truncated).
    pub fn create(path: &Path) -> std::io::Result<Recorder> {
        let file = BufWriter::new(File::create(path)?);
        Ok(Recorder::with_file(Some(file)))
    }

    /// A recorder that keeps events in memory only.
    pub fn in_memory() -> Recorder {
        Recorder::with_file(None)
    }

    fn with_file(file: Option<BufWriter<File>>) -> Recorder {
        Recorder {
            started: Instant::now(),
            inner: Arc::new(Mutex::new(Inner {
                events: Vec::new(),
                file,
                write_error: None,
            })),
        }
    }

    /// When the run started: the clock every other record of the run
    /// (engine calls, observations) is timed on.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Microseconds since the run started.
    pub fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// Records one event and returns it.
    pub fn record(&self, process: Process, kind: EventType, entry: Entry) -> Event {
        let mut inner = self.inner.lock().expect("history lock");
        let event = Event {
            index: inner.events.len() as u64,
            // Taken under the lock, so times never go backwards in the file.
            time_us: self.now_us(),
            process,
            kind,
            f: entry.f,
            key: entry.key,
            value: entry.value,
            node: entry.node,
            error: entry.error,
        };
        if let Some(file) = inner.file.as_mut() {
            let line = serde_json::to_string(&event).expect("events serialise");
            if let Err(e) = writeln!(file, "{line}") {
                inner.write_error.get_or_insert(e.to_string());
            }
        }
        inner.events.push(event.clone());
        event
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Event> {
        self.inner.lock().expect("history lock").events.clone()
    }

    /// Flushes the file; the first write error, if any, is returned.
    pub fn flush(&self) -> std::io::Result<()> {
        let mut inner = self.inner.lock().expect("history lock");
        if let Some(e) = inner.write_error.take() {
            return Err(std::io::Error::other(e));
        }
        match inner.file.as_mut() {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

/// Reads a `history.jsonl`.
pub fn load(path: &Path) -> anyhow::Result<Vec<Event>> {
    let file = File::open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut events = Vec::new();
    for (number, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let event: Event = serde_json::from_str(&line)
            .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), number + 1))?;
        events.push(event);
    }
    Ok(events)
}

/// An invocation with its completion, if it had one.
#[derive(Debug, Clone)]
pub struct Operation {
    pub invoke: Event,
    /// `None` when the run ended before an answer (treated as `info`).
    pub completion: Option<Event>,
}

impl Operation {
    /// How the operation ended; an operation without completion is `info`.
    pub fn outcome(&self) -> EventType {
        self.completion.as_ref().map_or(EventType::Info, |c| c.kind)
    }

    /// Completion time, unless the outcome is indeterminate.
    pub fn ret_us(&self) -> Option<u64> {
        match &self.completion {
            Some(c) if c.kind != EventType::Info => Some(c.time_us),
            _ => None,
        }
    }
}

/// Pairs every client invocation with the next completion of its process.
/// Nemesis events are left out.
pub fn operations(events: &[Event]) -> Vec<Operation> {
    let mut open: HashMap<u64, usize> = HashMap::new();
    let mut operations: Vec<Operation> = Vec::new();
    for event in events {
        let Some(process) = event.process.client() else {
            continue;
        };
        match event.kind {
            EventType::Invoke => {
                open.insert(process, operations.len());
                operations.push(Operation {
                    invoke: event.clone(),
                    completion: None,
                });
            }
            _ => {
                if let Some(at) = open.remove(&process) {
                    operations[at].completion = Some(event.clone());
                }
            }
        }
    }
    operations
}

/// A fault as the nemesis recorded it: when it started and stopped.
#[derive(Debug, Clone, Serialize)]
pub struct FaultWindow {
    pub name: String,
    pub start_us: u64,
    pub end_us: Option<u64>,
}

/// The nemesis' fault windows: a `start` event opens a window named by its
/// value's `fault`, the next `stop` of the same fault closes it.
pub fn fault_windows(events: &[Event]) -> Vec<FaultWindow> {
    let mut windows: Vec<FaultWindow> = Vec::new();
    for event in events.iter().filter(|e| e.process == Process::NEMESIS) {
        let name = event
            .value
            .get("fault")
            .and_then(|f| f.as_str())
            .unwrap_or("fault")
            .to_string();
        match (event.f.as_str(), event.kind) {
            ("start", EventType::Invoke) => windows.push(FaultWindow {
                name,
                start_us: event.time_us,
                end_us: None,
            }),
            ("stop", EventType::Ok | EventType::Info | EventType::Fail) => {
                if let Some(open) = windows
                    .iter_mut()
                    .rev()
                    .find(|w| w.name == name && w.end_us.is_none())
                {
                    open.end_us = Some(event.time_us);
                }
            }
            _ => {}
        }
    }
    windows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let recorder = Recorder::create(&path).unwrap();
        recorder.record(
            Process::Client(3),
            EventType::Invoke,
            Entry::new("cas").key("r/1").value([1, 2]).node("n2"),
        );
        recorder.record(
            Process::NEMESIS,
            EventType::Invoke,
            Entry::new("start").value(serde_json::json!({"fault": "kill"})),
        );
        recorder.record(
            Process::Client(3),
            EventType::Info,
            Entry::new("cas").key("r/1").error("timeout"),
        );
        recorder.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"process\":\"nemesis\""), "{text}");
        assert!(text.contains("\"type\":\"info\""), "{text}");
        let loaded = load(&path).unwrap();
        assert_eq!(loaded, recorder.events());
    }

    #[test]
    fn invocations_pair_with_their_process_completion() {
        let recorder = Recorder::in_memory();
        recorder.record(Process::Client(1), EventType::Invoke, Entry::new("read"));
        recorder.record(Process::Client(2), EventType::Invoke, Entry::new("write"));
        recorder.record(Process::Client(1), EventType::Ok, Entry::new("read"));
        recorder.record(Process::Client(1), EventType::Invoke, Entry::new("read"));
        let ops = operations(&recorder.events());
        assert_eq!(ops.len(), 3);
        assert_eq!(ops[0].outcome(), EventType::Ok);
        assert_eq!(ops[1].outcome(), EventType::Info, "never answered");
        assert!(ops[1].ret_us().is_none());
        assert_eq!(ops[2].outcome(), EventType::Info);
    }

    #[test]
    fn fault_windows_open_on_start_and_close_on_stop() {
        let recorder = Recorder::in_memory();
        let fault = |name: &str| serde_json::json!({ "fault": name });
        recorder.record(
            Process::NEMESIS,
            EventType::Invoke,
            Entry::new("start").value(fault("pause")),
        );
        recorder.record(
            Process::NEMESIS,
            EventType::Invoke,
            Entry::new("start").value(fault("kill")),
        );
        recorder.record(
            Process::NEMESIS,
            EventType::Ok,
            Entry::new("stop").value(fault("pause")),
        );
        let windows = fault_windows(&recorder.events());
        assert_eq!(windows.len(), 2);
        assert!(windows[0].end_us.is_some());
        assert!(windows[1].end_us.is_none(), "kill never stopped");
    }
}
