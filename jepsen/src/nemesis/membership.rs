//! Membership changes under load: a new manager joins as a learner
//! (`POST /v1/cluster/members` with `"voter": false`), a learner is
//! promoted (`"voter": true`), a voter — the leader about a third of the
//! time — is removed (`DELETE /v1/cluster/members/{id}`) and left running
//! with its data, as a removed node in the wild would be. Voters never drop
//! below three. The proof of each change is the membership as the other
//! members report it afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use reqwest::Method;
use serde_json::json;

use super::{Context, Started, Undo};
use crate::cluster::Manager;

/// The most voters the nemesis grows the cluster to.
const MAX_VOTERS: usize = 6;
const MIN_VOTERS: usize = 3;
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends a membership change to some running member other than `except`
/// (writes are forwarded to the leader) and returns its answer.
pub async fn send(
    ctx: &Context,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
    except: Option<u64>,
) -> anyhow::Result<serde_json::Value> {
    let mut last = anyhow::anyhow!("no member to ask");
    for id in super::partition::running_members(ctx).await {
        if Some(id) == except {
            continue;
        }
        let Some(manager) = ctx.cluster.manager(id) else {
            continue;
        };
        match ctx
            .cluster
            .api
            .send_json(
                method.clone(),
                &manager.api(),
                path,
                body.as_ref(),
                CHANGE_TIMEOUT,
            )
            .await
        {
            Ok(answer) => return Ok(answer),
            // Refused outright (e.g. not a member any more): try another.
            Err(e) if e.is_definite() => last = anyhow::anyhow!("m{id}: {e}"),
            Err(e) => return Err(anyhow::anyhow!("m{id}: {e}")),
        }
    }
    Err(last)
}

/// Waits until the members other than `subject` agree that `subject` is
/// a voter (`Some(true)`), a learner (`Some(false)`) or gone (`None`).
async fn wait_for_role(ctx: &Context, subject: u64, role: Option<bool>) -> serde_json::Value {
    let deadline = Instant::now() + CHANGE_TIMEOUT;
    let mut last = json!(null);
    while Instant::now() < deadline {
        let askers: Vec<u64> = ctx
            .members()
            .into_iter()
            .filter(|&m| m != subject)
            .collect();
        let mut agreeing = 0;
        for &id in &askers {
            let Some(manager) = ctx.cluster.manager(id) else {
                continue;
            };
            if let Ok(view) = ctx
                .cluster
                .api
                .cluster(&manager.api(), Duration::from_millis(500))
                .await
            {
                let seen = view
                    .members
                    .iter()
                    .find(|m| m.id == subject)
                    .map(|m| m.voter);
                if seen == role {
                    agreeing += 1;
                }
                last = json!({ "asked": id, "members": view.members.iter().map(|m| json!({"id": m.id, "voter": m.voter})).collect::<Vec<_>>() });
            }
        }
        if !askers.is_empty() && agreeing * 2 > askers.len() {
            return json!({ "agreeing_members": agreeing, "asked": askers.len(), "view": last });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    json!({ "agreeing_members": 0, "view": last })
}

/// The leader's answer to a change, or the error instead.
fn answer_json(answer: anyhow::Result<serde_json::Value>) -> serde_json::Value {
    answer.unwrap_or_else(|e| json!({ "error": format!("{e:#}") }))
}

fn agreed(proof: &serde_json::Value) -> bool {
    proof["agreeing_members"].as_u64().unwrap_or(0) > 0
}

/// Adds `manager` as a learner (`voter: false`) or promotes it (`true`)
/// and waits for the other members to agree: the leader's answer, the
/// membership as they report it, and whether they agree.
pub async fn set_role(
    ctx: &Context,
    manager: &Manager,
    voter: bool,
) -> (serde_json::Value, serde_json::Value, bool) {
    let answer = send(
        ctx,
        Method::POST,
        "/v1/cluster/members",
        Some(json!({
            "id": manager.id,
            "api_addr": manager.api_addr(),
            "peer_addr": manager.peer_addr(),
            "voter": voter,
        })),
        Some(manager.id),
    )
    .await;
    let proof = wait_for_role(ctx, manager.id, Some(voter)).await;
    let agreed = agreed(&proof);
    (answer_json(answer), proof, agreed)
}

fn started(
    targets: serde_json::Value,
    answer: serde_json::Value,
    proof: serde_json::Value,
    effective: bool,
) -> Started {
    Started {
        targets,
        proof: json!({ "answer": answer, "membership": proof }),
        effective,
        undo: Undo::Nothing,
    }
}

pub async fn add(ctx: &Arc<Context>) -> anyhow::Result<Option<Started>> {
    let (voters, learners) = {
        let m = ctx.membership.lock().expect("membership");
        (m.voters.len(), m.learners.len())
    };
    if voters >= MAX_VOTERS || learners > 0 {
        return Ok(None);
    }
    let id = ctx.cluster.next_id();
    let manager = ctx.cluster.add_container(id, &[]).await?;
    let (answer, proof, effective) = set_role(ctx, &manager, false).await;
    if effective {
        ctx.membership
            .lock()
            .expect("membership")
            .learners
            .insert(id);
    }
    Ok(Some(started(json!([id]), answer, proof, effective)))
}

pub async fn promote(ctx: &Arc<Context>) -> anyhow::Result<Option<Started>> {
    let learner = ctx
        .membership
        .lock()
        .expect("membership")
        .learners
        .iter()
        .next()
        .copied();
    let Some(manager) = learner.and_then(|id| ctx.cluster.manager(id)) else {
        return Ok(None);
    };
    let (answer, proof, effective) = set_role(ctx, &manager, true).await;
    if effective {
        let mut m = ctx.membership.lock().expect("membership");
        m.learners.remove(&manager.id);
        m.voters.insert(manager.id);
    }
    Ok(Some(started(json!([manager.id]), answer, proof, effective)))
}

pub async fn remove(ctx: &Arc<Context>, rng: &mut StdRng) -> anyhow::Result<Option<Started>> {
    let voters = ctx.voters();
    if voters.len() <= MIN_VOTERS {
        return Ok(None);
    }
    let leader = ctx.leader(Duration::from_secs(2)).await;
    let target = match leader {
        Some(l) if rng.gen_bool(1.0 / 3.0) => l,
        _ => *voters.choose(rng).expect("voters is not empty"),
    };
    let answer = send(
        ctx,
        Method::DELETE,
        &format!("/v1/cluster/members/{target}"),
        None,
        None,
    )
    .await;
    {
        // Out of the member list before the proof, so it is not asked.
        let mut m = ctx.membership.lock().expect("membership");
        m.voters.remove(&target);
        m.removed.insert(target);
    }
    let proof = wait_for_role(ctx, target, None).await;
    let effective = agreed(&proof);
    if !effective {
        // Still a member as far as the cluster knows: keep it counted.
        let mut m = ctx.membership.lock().expect("membership");
        m.removed.remove(&target);
        m.voters.insert(target);
    }
    Ok(Some(started(
        json!({ "removed": target, "was_leader": leader == Some(target) }),
        answer_json(answer),
        proof,
        effective,
    )))
}
