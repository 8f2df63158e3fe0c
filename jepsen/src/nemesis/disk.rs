//! Disk faults on a stopped follower: the tail of its newest Raft log
//! segment cut off, or bits flipped in its snapshot. The follower is then
//! started again and must either recover (and, as the checkers verify,
//! serve only right data) or refuse to start with a message — never serve
//! wrong data. A manager that refuses is restored as raftvisor's README
//! says: removed from the cluster, its data directory wiped, started again
//! and re-added (learner, then voter).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use reqwest::Method;
use serde_json::json;

use super::{Context, FaultKind, Started, Undo};

/// Non-empty regular files of `dir` whose names end with `suffix`
/// (`None`: any), sorted by name.
fn files(dir: &Path, suffix: Option<&str>) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.ends_with(".tmp") && suffix.is_none_or(|s| name.ends_with(s))
        })
        .collect();
    files.sort();
    files
}

/// Cuts 1..=max bytes off the end of `path`; returns (before, after).
pub fn truncate_tail(path: &Path, rng: &mut StdRng, max: u64) -> std::io::Result<(u64, u64)> {
    let before = std::fs::metadata(path)?.len();
    let cut = rng.gen_range(1..=max.min(before).max(1));
    let after = before.saturating_sub(cut);
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.set_len(after)?;
    file.sync_all()?;
    Ok((before, after))
}

/// Flips one bit at each of `count` random offsets of `path`; returns the
/// offsets.
pub fn flip_bits(path: &Path, rng: &mut StdRng, count: usize) -> std::io::Result<Vec<u64>> {
    let mut bytes = std::fs::read(path)?;
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut offsets = Vec::new();
    for _ in 0..count {
        let at = rng.gen_range(0..bytes.len());
        bytes[at] ^= 1 << rng.gen_range(0..8);
        offsets.push(at as u64);
    }
    std::fs::write(path, &bytes)?;
    Ok(offsets)
}

pub async fn start(
    ctx: &Arc<Context>,
    kind: FaultKind,
    rng: &mut StdRng,
) -> anyhow::Result<Option<Started>> {
    let voters = ctx.voters();
    let leader = ctx.leader(Duration::from_secs(2)).await;
    let running = super::partition::running_members(ctx).await;
    let followers: Vec<u64> = voters
        .iter()
        .copied()
        .filter(|v| Some(*v) != leader && running.contains(v))
        .collect();
    // The others must still be a majority while it is down.
    if voters.len() < 3 || running.len() < voters.len() {
        return Ok(None);
    }
    let Some(&target) = followers.choose(rng) else {
        return Ok(None);
    };
    let manager = ctx.cluster.manager(target).context("unknown manager")?;
    let data = manager.data_dir();
    // Pick the file before the kill: no snapshot yet means nothing to do.
    let file = match kind {
        FaultKind::DiskSnapshot => files(&data.join("snapshots"), None).pop(),
        _ => files(&data.join("log"), Some(".wal")).pop(),
    };
    let Some(file) = file else {
        return Ok(None);
    };
    ctx.cluster.kill(target).await?;
    wait_stopped(ctx, target).await?;
    let damage = match kind {
        FaultKind::DiskSnapshot => {
            let count = rng.gen_range(1..=3);
            let offsets = flip_bits(&file, rng, count)?;
            json!({ "file": file.display().to_string(), "flipped_bit_at": offsets })
        }
        _ => {
            let (before, after) = truncate_tail(&file, rng, 600)?;
            json!({ "file": file.display().to_string(), "bytes_before": before, "bytes_after": after })
        }
    };
    let effective = match kind {
        FaultKind::DiskSnapshot => !damage["flipped_bit_at"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        _ => damage["bytes_after"].as_u64() < damage["bytes_before"].as_u64(),
    };
    ctx.cluster.start(target).await?;
    let outcome = observe_start(ctx, target).await;
    Ok(Some(Started {
        targets: json!([target]),
        proof: json!({ "damage": damage, "after_restart": outcome }),
        effective,
        undo: Undo::DiskRecovery(target),
    }))
}

async fn wait_stopped(ctx: &Context, id: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if !ctx.cluster.state(id).await?.running {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("m{id} did not stop after kill -9")
}

/// Whether the restarted manager came up (`recovered`) or refused
/// (`refused`, with its last log lines), within a few seconds.
async fn observe_start(ctx: &Context, id: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        match ctx.cluster.state(id).await {
            Ok(state) if !state.running => {
                return json!({
                    "outcome": "refused",
                    "exit_code": state.exit_code,
                    "log": ctx.cluster.log_tail(id, 3).await,
                });
            }
            Ok(_) => {
                if super::process::wait_answering(ctx, id, Duration::from_millis(300))
                    .await
                    .is_some()
                {
                    return json!({ "outcome": "recovered" });
                }
            }
            Err(e) => return json!({ "outcome": "unknown", "error": e.to_string() }),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    json!({ "outcome": "starting", "note": "neither answering nor exited after 8 s" })
}

/// Leaves a recovered manager as it is; restores one that refused to start.
pub async fn recover(ctx: &Arc<Context>, id: u64) -> anyhow::Result<serde_json::Value> {
    let state = ctx.cluster.state(id).await?;
    let answering = super::process::wait_answering(ctx, id, Duration::from_secs(3)).await;
    if state.running && answering.is_some() {
        return Ok(json!({ "m": id, "action": "none: it recovered by itself" }));
    }
    if state.running {
        ctx.cluster.kill(id).await?;
        wait_stopped(ctx, id).await?;
    }
    restore_from_peers(ctx, id).await
}

/// Removes manager `id` from the cluster, wipes its data and adds it back
/// as a new learner that is then promoted.
pub async fn restore_from_peers(ctx: &Arc<Context>, id: u64) -> anyhow::Result<serde_json::Value> {
    let manager = ctx.cluster.manager(id).context("unknown manager")?;
    super::membership::send(
        ctx,
        Method::DELETE,
        &format!("/v1/cluster/members/{id}"),
        None,
        Some(id),
    )
    .await?;
    let data = manager.data_dir();
    std::fs::remove_dir_all(&data).with_context(|| format!("cannot wipe {}", data.display()))?;
    std::fs::create_dir_all(&data)?;
    ctx.cluster.rewrite_config(id, &[])?;
    ctx.cluster.start(id).await?;
    super::process::wait_answering(ctx, id, Duration::from_secs(15))
        .await
        .with_context(|| format!("m{id} does not answer after its data was wiped"))?;
    for voter in [false, true] {
        let (answer, proof, agreed) = super::membership::set_role(ctx, &manager, voter).await;
        if !agreed {
            anyhow::bail!("re-adding m{id} (voter: {voter}) did not take effect: {answer} {proof}");
        }
    }
    Ok(json!({ "m": id, "action": "removed, wiped, re-added as learner and promoted" }))
}
