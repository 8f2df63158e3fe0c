//! The pulse: one writer that keeps writing a key of its own (`f =
//! "pulse"`, unique values) every few tens of milliseconds through a
//! random member — never the one a `partition-one-way` fault has cut off,
//! whose clients wait for a leader it cannot hear — from before the first
//! fault until after the last heal has settled. Its acknowledged writes
//! are what the `one-way` checker measures gaps on: whether the rest of
//! the cluster kept accepting writes, independent of how many of the other
//! clients happen to be waiting on the cut-off manager.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use tokio::sync::watch;

use super::register::Processes;
use crate::api::CallError;
use crate::history::{Entry, EventType, Process};
use crate::nemesis::Context;

/// The operation's name in the history.
pub const F: &str = "pulse";

/// Writes until `stop` turns true.
pub async fn run(
    ctx: Arc<Context>,
    key: String,
    seed: u64,
    processes: Arc<Processes>,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x7075_6c73);
    let mut process = processes.fresh();
    let mut value: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = super::think(&mut rng, (Duration::from_millis(20), Duration::from_millis(40))) => {}
        }
        let cut = *ctx.one_way_cut.lock().expect("one-way cut");
        let members: Vec<u64> = ctx
            .members()
            .into_iter()
            .filter(|&m| Some(m) != cut)
            .collect();
        let Some(manager) = members
            .choose(&mut rng)
            .and_then(|&m| ctx.cluster.manager(m))
        else {
            continue;
        };
        value += 1;
        let entry = Entry::new(F).key(&key).node(manager.name()).value(value);
        ctx.recorder
            .record(Process::Client(process), EventType::Invoke, entry.clone());
        let result = ctx
            .cluster
            .api
            .kv_put(
                &manager.api(),
                &key,
                &value.to_string(),
                None,
                Duration::from_secs(1),
            )
            .await;
        let (kind, entry) = match result {
            Ok(true) => (EventType::Ok, entry),
            Ok(false) => (EventType::Fail, entry.error("the write answered false")),
            Err(CallError::Definite(e)) => (EventType::Fail, entry.error(e)),
            Err(CallError::Indeterminate(e)) => (EventType::Info, entry.error(e)),
        };
        ctx.recorder.record(Process::Client(process), kind, entry);
        if kind == EventType::Info {
            process = processes.fresh();
        }
    }
}
