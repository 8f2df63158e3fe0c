//! Workload faults: `kill -9` of one running workload container (SIGKILL
//! from the engine, recorded so the supervisor checker does not blame the
//! control plane for it). The fault lasts until raftvisor runs the slot
//! again, which is its proof of recovery.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::query_parameters::KillContainerOptionsBuilder;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde_json::json;

use super::{Context, Started, Undo};
use crate::containers;

pub async fn kill(ctx: &Arc<Context>, rng: &mut StdRng) -> anyhow::Result<Option<Started>> {
    let docker = &ctx.cluster.docker;
    let running: Vec<containers::Workload> = containers::list(docker, &ctx.cluster_id)
        .await?
        .into_iter()
        .filter(|w| w.state == "running")
        .collect();
    let Some(victim) = running.choose(rng).cloned() else {
        return Ok(None);
    };
    // Recorded before the kill: its death must never count against the
    // control plane.
    ctx.killed_workloads
        .lock()
        .expect("killed workloads")
        .push((victim.id.clone(), ctx.recorder.now_us()));
    let before = docker
        .inspect_container(&victim.id, None)
        .await?
        .state
        .unwrap_or_default()
        .started_at;
    let options = KillContainerOptionsBuilder::new().signal("KILL").build();
    docker.kill_container(&victim.id, Some(options)).await?;
    let inspect = docker.inspect_container(&victim.id, None).await?;
    let state = inspect.state.unwrap_or_default();
    let effective = took_effect(
        before.as_deref(),
        state.started_at.as_deref(),
        state.exit_code,
        state.running,
    );
    Ok(Some(Started {
        targets: json!({ "container": &victim.id[..12.min(victim.id.len())], "slot": victim.slot_key() }),
        proof: json!({
            "status": state.status.map(|s| s.to_string()),
            "exit_code": state.exit_code,
            "started_at_before": before,
            "started_at_after": state.started_at,
        }),
        effective,
        undo: Undo::WorkloadRestart {
            slot: victim.slot_key(),
            container: victim.id,
        },
    }))
}

/// Whether a `kill -9` of a container shows in its state read just after:
/// it died (exit code 137, or not running) — or raftvisor has already
/// started it again, which resets the exit code; then its start time moved.
fn took_effect(
    started_before: Option<&str>,
    started_after: Option<&str>,
    exit_code: Option<i64>,
    running: Option<bool>,
) -> bool {
    let restarted = started_after.is_some() && started_after != started_before;
    exit_code == Some(137) || running != Some(true) || restarted
}

/// Waits up to 15 s for the killed container's slot to run again (the
/// same container restarted, or another one placed in the slot).
pub async fn wait_restarted(
    ctx: &Arc<Context>,
    container: &str,
    slot: &str,
) -> anyhow::Result<serde_json::Value> {
    let docker = &ctx.cluster.docker;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(15) {
        let all = containers::list(docker, &ctx.cluster_id).await?;
        let running = all
            .iter()
            .any(|w| w.state == "running" && (w.id == container || w.slot_key() == slot));
        if running {
            return Ok(
                json!({ "slot_running_again_after_ms": started.elapsed().as_millis() as u64 }),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(json!({ "slot_running_again": false, "waited_ms": 15000 }))
}

#[cfg(test)]
mod tests {
    use super::took_effect;

    #[test]
    fn a_kill_shows_as_a_death_or_as_a_start_after_it() {
        let before = Some("2026-12-03T14:00:00.1Z");
        assert!(took_effect(before, before, Some(137), Some(false)));
        assert!(took_effect(before, before, Some(0), Some(false)));
        // Restarted by raftvisor between the kill and the look: running,
        // exit code reset, but a new start time.
        assert!(took_effect(
            before,
            Some("2026-12-03T14:00:00.9Z"),
            Some(0),
            Some(true)
        ));
        // Still running, same start: the kill did nothing.
        assert!(!took_effect(before, before, Some(0), Some(true)));
    }
}
