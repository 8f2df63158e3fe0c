//! Process faults of managers: `kill -9` (of the leader, a minority, or
//! every member) and restart, and `docker pause` of the leader past the
//! election timeout. Proofs: the engine reports the container exited with
//! the SIGKILL status, or paused, and a paused manager does not answer its
//! API; after the fault, restarted managers answer again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use serde_json::json;

use super::{pick, Context, FaultKind, Started, Undo};

pub async fn kill(
    ctx: &Arc<Context>,
    kind: FaultKind,
    rng: &mut StdRng,
) -> anyhow::Result<Option<Started>> {
    let members = super::partition::running_members(ctx).await;
    let targets = match kind {
        FaultKind::KillLeader => match ctx.leader(Duration::from_secs(2)).await {
            Some(leader) if members.contains(&leader) => vec![leader],
            _ => return Ok(None),
        },
        FaultKind::KillMinority => {
            let voters = ctx.voters().len();
            pick(rng, &members, (voters.saturating_sub(1) / 2).max(1))
        }
        _ => members.clone(),
    };
    if targets.is_empty() {
        return Ok(None);
    }
    for &id in &targets {
        ctx.cluster.kill(id).await?;
    }
    let mut states = serde_json::Map::new();
    let mut effective = true;
    for &id in &targets {
        let state = ctx.cluster.state(id).await?;
        // 137: ended by SIGKILL.
        effective &= !state.running && state.exit_code == Some(137);
        states.insert(
            format!("m{id}"),
            json!({ "status": state.status, "exit_code": state.exit_code }),
        );
    }
    Ok(Some(Started {
        targets: json!(targets),
        proof: json!(states),
        effective,
        undo: Undo::Restart(targets),
    }))
}

/// Starts `ids` again and waits until each answers its API.
pub async fn restart(ctx: &Arc<Context>, ids: &[u64]) -> anyhow::Result<serde_json::Value> {
    for &id in ids {
        if !ctx.cluster.state(id).await?.running {
            ctx.cluster.start(id).await?;
        }
    }
    let mut answered = serde_json::Map::new();
    for &id in ids {
        let waited = wait_answering(ctx, id, Duration::from_secs(15)).await;
        answered.insert(
            format!("m{id}"),
            match waited {
                Some(ms) => json!({ "answering_after_ms": ms }),
                None => json!({ "answering": false, "log": ctx.cluster.log_tail(id, 5).await }),
            },
        );
    }
    Ok(json!(answered))
}

/// Milliseconds until manager `id` answers `GET /v1/health`, if it does
/// within `within`.
pub async fn wait_answering(ctx: &Context, id: u64, within: Duration) -> Option<u64> {
    let manager = ctx.cluster.manager(id)?;
    let started = Instant::now();
    while started.elapsed() < within {
        if ctx
            .cluster
            .api
            .health(&manager.api(), Duration::from_millis(500))
            .await
            .is_ok()
        {
            return Some(started.elapsed().as_millis() as u64);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

pub async fn pause_leader(ctx: &Arc<Context>) -> anyhow::Result<Option<Started>> {
    let Some(leader) = ctx.leader(Duration::from_secs(2)).await else {
        return Ok(None);
    };
    let Some(manager) = ctx.cluster.manager(leader) else {
        return Ok(None);
    };
    ctx.cluster.pause(leader).await?;
    let state = ctx.cluster.state(leader).await?;
    let answers = ctx
        .cluster
        .api
        .health(&manager.api(), Duration::from_millis(500))
        .await
        .is_ok();
    Ok(Some(Started {
        targets: json!([leader]),
        proof: json!({ "status": state.status, "paused": state.paused, "api_answers": answers }),
        effective: state.paused && !answers,
        undo: Undo::Unpause(leader),
    }))
}

pub async fn unpause(ctx: &Arc<Context>, id: u64) -> anyhow::Result<serde_json::Value> {
    ctx.cluster.unpause(id).await?;
    let waited = wait_answering(ctx, id, Duration::from_secs(10)).await;
    Ok(json!({ "resumed": id, "answering_after_ms": waited }))
}
