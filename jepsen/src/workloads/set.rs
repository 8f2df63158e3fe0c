//! The set workload: clients add unique elements (one KV key each under
//! `<prefix>/`) through random managers while faults come and go; after
//! healing, one linearizable read of the prefix is the final set. The set
//! checker then counts acknowledged adds that were lost and elements that
//! appeared without being added.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use tokio::time::Instant;

use super::register::Processes;
use crate::history::{Entry, EventType, Process};
use crate::nemesis::Context;

#[derive(Debug, Clone)]
pub struct SetOptions {
    pub processes: u64,
    pub prefix: String,
    pub timeout: Duration,
    pub max_ops: u64,
    pub think: (Duration, Duration),
}

pub async fn run(
    ctx: Arc<Context>,
    options: SetOptions,
    seed: u64,
    processes: Arc<Processes>,
    until: Instant,
) {
    let next = Arc::new(AtomicU64::new(0));
    let count = options.processes;
    super::run_clients(count, seed, 0x5365_7400, |rng| {
        client(
            ctx.clone(),
            options.clone(),
            next.clone(),
            processes.clone(),
            rng,
            until,
        )
    })
    .await;
}

async fn client(
    ctx: Arc<Context>,
    options: SetOptions,
    next: Arc<AtomicU64>,
    processes: Arc<Processes>,
    mut rng: StdRng,
    until: Instant,
) {
    let mut process = processes.fresh();
    while Instant::now() < until {
        let element = next.fetch_add(1, Ordering::Relaxed);
        if element >= options.max_ops {
            return;
        }
        let managers = ctx.cluster.managers();
        let Some(manager) = managers.choose(&mut rng) else {
            return;
        };
        let entry = Entry::new("add")
            .key(&options.prefix)
            .node(manager.name())
            .value(element);
        ctx.recorder
            .record(Process::Client(process), EventType::Invoke, entry.clone());
        let key = format!("{}/{element}", options.prefix);
        let result = ctx
            .cluster
            .api
            .kv_put(&manager.api(), &key, "1", None, options.timeout)
            .await;
        let (kind, entry) = match result {
            Ok(true) => (EventType::Ok, entry),
            Ok(false) => (
                EventType::Info,
                entry.error("an unconditional write answered false"),
            ),
            Err(e) if e.is_definite() => (EventType::Fail, entry.error(e.to_string())),
            Err(e) => (EventType::Info, entry.error(e.to_string())),
        };
        ctx.recorder.record(Process::Client(process), kind, entry);
        if kind == EventType::Info {
            process = processes.fresh();
        }
        super::think(&mut rng, options.think).await;
    }
}

/// Reads the final set through the members, retrying for up to `within`;
/// each attempt is an operation of the history.
pub async fn final_read(
    ctx: &Context,
    prefix: &str,
    processes: &Processes,
    within: Duration,
) -> Option<Vec<u64>> {
    let deadline = Instant::now() + within;
    let process = processes.fresh();
    let key_prefix = format!("{prefix}/");
    while Instant::now() < deadline {
        for id in ctx.members() {
            let Some(manager) = ctx.cluster.manager(id) else {
                continue;
            };
            let entry = Entry::new("final-read").key(prefix).node(manager.name());
            ctx.recorder
                .record(Process::Client(process), EventType::Invoke, entry.clone());
            match ctx
                .cluster
                .api
                .kv_list::<String>(&manager.api(), &key_prefix, "keys", Duration::from_secs(5))
                .await
            {
                Ok(keys) => {
                    let mut elements: Vec<u64> = keys
                        .iter()
                        .filter_map(|k| k.strip_prefix(&key_prefix)?.parse().ok())
                        .collect();
                    elements.sort_unstable();
                    ctx.recorder.record(
                        Process::Client(process),
                        EventType::Ok,
                        entry.value(&elements),
                    );
                    return Some(elements);
                }
                Err(e) => {
                    ctx.recorder.record(
                        Process::Client(process),
                        EventType::Fail,
                        entry.error(e.to_string()),
                    );
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}
