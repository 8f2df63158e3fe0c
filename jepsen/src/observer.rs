//! The observer: asks every manager of the run for its view of the
//! cluster (`GET /v1/cluster`, answered locally) every 100 ms for the
//! whole run — its term, the leader it knows, its Raft state, the voters,
//! and on a leader how long ago it last heard from a quorum
//! (`quorum_contact_ms`, where the build reports it). The harness reaches
//! every manager's API even while the nemesis cuts the peer links, so
//! these views are the ground truth of who led which term when; the
//! `leader-actions` and `one-way` checkers judge against them.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::nemesis::Context;

/// How often every manager is asked.
pub const INTERVAL: Duration = Duration::from_millis(100);

/// One manager's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// When the answer arrived (µs since the run started): the view held
    /// at some moment between `sent_us` and this.
    pub time_us: u64,
    pub sent_us: u64,
    pub manager: u64,
    pub term: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default)]
    pub voters: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum_contact_ms: Option<u64>,
}

/// Asks every manager until `stop` turns true; returns every answer in
/// the order received.
pub async fn observe(ctx: Arc<Context>, mut stop: watch::Receiver<bool>) -> Vec<Observation> {
    let mut observations = Vec::new();
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => {}
        }
        let managers = ctx.cluster.managers();
        let answers = futures::future::join_all(managers.iter().map(|manager| {
            let ctx = ctx.clone();
            async move {
                let sent_us = ctx.recorder.now_us();
                let view = ctx
                    .cluster
                    .api
                    .cluster(&manager.api(), Duration::from_millis(400))
                    .await
                    .ok()?;
                Some(Observation {
                    time_us: ctx.recorder.now_us(),
                    sent_us,
                    manager: manager.id,
                    term: view.term,
                    leader: view.leader_id,
                    voters: crate::api::voters(&view),
                    state: Some(view.state),
                    quorum_contact_ms: view.quorum_contact_ms,
                })
            }
        }))
        .await;
        observations.extend(answers.into_iter().flatten());
    }
    observations.sort_by_key(|o| o.time_us);
    observations
}
