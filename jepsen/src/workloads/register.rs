//! The register workload: clients read, write and compare-and-set KV keys
//! through the HTTP API of random managers, and every operation goes into
//! the history for the linearizability checker. Keys rotate (a new one
//! every `ops_per_key` operations) so each key's history stays small enough
//! to check. Every written value is unique, so a compare-and-set can be
//! made of Consul's primitives — a linearizable read of the value and its
//! ModifyIndex, then `PUT ?cas=<index>` — and still mean "swap if the value
//! is `from`": any write in between changes the value.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::json;
use tokio::time::Instant;

use crate::api::CallError;
use crate::history::{Entry, EventType, Process};
use crate::nemesis::Context;

#[derive(Debug, Clone)]
pub struct RegisterOptions {
    pub processes: u64,
    pub ops_per_key: u64,
    /// Keys are `<prefix>/r<n>`.
    pub prefix: String,
    pub timeout: Duration,
    /// At most this many operations in all.
    pub max_ops: u64,
    /// Pause between one process' operations.
    pub think: (Duration, Duration),
}

/// Hands out process ids: a process whose operation ended `info` is never
/// used again (its request may still be in flight), as in Jepsen.
pub struct Processes {
    next: AtomicU64,
}

impl Processes {
    pub fn new(first: u64) -> Processes {
        Processes {
            next: AtomicU64::new(first),
        }
    }

    pub fn fresh(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
}

struct Shared {
    options: RegisterOptions,
    operations: AtomicU64,
    values: AtomicU64,
}

/// Runs the register clients until `until` or `max_ops`.
pub async fn run(
    ctx: Arc<Context>,
    options: RegisterOptions,
    seed: u64,
    processes: Arc<Processes>,
    until: Instant,
) {
    let shared = Arc::new(Shared {
        options,
        operations: AtomicU64::new(0),
        values: AtomicU64::new(1),
    });
    let count = shared.options.processes;
    super::run_clients(count, seed, 0x5265_6769, |rng| {
        client(ctx.clone(), shared.clone(), processes.clone(), rng, until)
    })
    .await;
}

async fn client(
    ctx: Arc<Context>,
    shared: Arc<Shared>,
    processes: Arc<Processes>,
    mut rng: StdRng,
    until: Instant,
) {
    let mut process = processes.fresh();
    let mut last_seen: HashMap<String, u64> = HashMap::new();
    let options = &shared.options;
    while Instant::now() < until {
        let n = shared.operations.fetch_add(1, Ordering::Relaxed);
        if n >= options.max_ops {
            return;
        }
        let key = format!("{}/r{}", options.prefix, n / options.ops_per_key);
        let managers = ctx.cluster.managers();
        let Some(manager) = managers.choose(&mut rng) else {
            return;
        };
        let node = manager.name();
        let base = manager.api();
        let api = &ctx.cluster.api;
        let recorder = &ctx.recorder;
        let roll: f64 = rng.gen();
        let outcome = if roll < 0.5 {
            let entry = Entry::new("read").key(&key).node(&node);
            recorder.record(Process::Client(process), EventType::Invoke, entry.clone());
            match api.kv_get(&base, &key, options.timeout).await {
                Ok(found) => {
                    let value = found.map(|v| v.value);
                    if let Some(v) = value {
                        last_seen.insert(key.clone(), v);
                    }
                    recorder.record(Process::Client(process), EventType::Ok, entry.value(value));
                    EventType::Ok
                }
                Err(e) => {
                    recorder.record(
                        Process::Client(process),
                        EventType::Fail,
                        entry.error(e.to_string()),
                    );
                    EventType::Fail
                }
            }
        } else if roll < 0.8 || !last_seen.contains_key(&key) {
            let value = shared.values.fetch_add(1, Ordering::Relaxed);
            let entry = Entry::new("write").key(&key).node(&node).value(value);
            recorder.record(Process::Client(process), EventType::Invoke, entry.clone());
            let result = api
                .kv_put(&base, &key, &value.to_string(), None, options.timeout)
                .await;
            let kind = match &result {
                Ok(true) => EventType::Ok,
                Ok(false) => EventType::Info,
                Err(e) if e.is_definite() => EventType::Fail,
                Err(_) => EventType::Info,
            };
            if kind == EventType::Ok {
                last_seen.insert(key.clone(), value);
            }
            let entry = match result {
                Err(e) => entry.error(e.to_string()),
                Ok(false) => entry.error("an unconditional write answered false"),
                Ok(true) => entry,
            };
            recorder.record(Process::Client(process), kind, entry);
            kind
        } else {
            let from = last_seen[&key];
            let to = shared.values.fetch_add(1, Ordering::Relaxed);
            let entry = Entry::new("cas")
                .key(&key)
                .node(&node)
                .value(json!({ "from": from, "to": to }));
            recorder.record(Process::Client(process), EventType::Invoke, entry.clone());
            let (kind, entry) =
                cas(ctx.as_ref(), &base, &key, from, to, options.timeout, entry).await;
            if kind == EventType::Ok {
                last_seen.remove(&key);
            }
            recorder.record(Process::Client(process), kind, entry);
            kind
        };
        if outcome == EventType::Info {
            process = processes.fresh();
        }
        super::think(&mut rng, options.think).await;
    }
}

/// One compare-and-set: its outcome and the completion entry, whose
/// value says whether it swapped (and what it saw when it did not).
async fn cas(
    ctx: &Context,
    base: &str,
    key: &str,
    from: u64,
    to: u64,
    timeout: Duration,
    entry: Entry,
) -> (EventType, Entry) {
    let api = &ctx.cluster.api;
    let current = match api.kv_get(base, key, timeout).await {
        Ok(current) => current,
        // Nothing was written: the swap certainly did not happen.
        Err(e) => {
            return (
                EventType::Fail,
                entry.error(format!("read before swap: {e}")),
            )
        }
    };
    let Some(current) = current.filter(|c| c.value == from) else {
        let seen = current.map(|c| c.value);
        return (
            EventType::Ok,
            entry.value(json!({ "from": from, "to": to, "swapped": false, "saw": seen })),
        );
    };
    match api
        .kv_put(
            base,
            key,
            &to.to_string(),
            Some(current.modify_index),
            timeout,
        )
        .await
    {
        Ok(swapped) => (
            EventType::Ok,
            entry.value(json!({ "from": from, "to": to, "swapped": swapped })),
        ),
        Err(CallError::Definite(e)) => (EventType::Fail, entry.error(e)),
        Err(CallError::Indeterminate(e)) => (EventType::Info, entry.error(e)),
    }
}
