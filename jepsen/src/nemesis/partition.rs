//! Partitions and packet loss between managers. A partition is a grudge:
//! for each manager, the managers whose packets it drops (iptables in its
//! network namespace, see [`crate::net`]). The shapes are Jepsen's: one
//! manager alone, a majority and a minority, a ring of overlapping
//! majorities, a bridge, the leader alone, and a one-way cut (a follower
//! whose peer port the others can no longer reach, while its own
//! connections to them work). The proof of a cut is a TCP connection that
//! no longer completes across it (while it did just before), checked for
//! every cut pair.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::json;

use super::{Context, FaultKind, Started, Undo};
use crate::cluster::PEER_PORT;
use crate::net;

/// Manager → the managers it drops packets from.
pub type Grudge = BTreeMap<u64, Vec<u64>>;

/// Both sides drop each other's packets.
fn cut_between(grudge: &mut Grudge, a: &[u64], b: &[u64]) {
    for &x in a {
        grudge.entry(x).or_default().extend(b.iter().copied());
    }
    for &y in b {
        grudge.entry(y).or_default().extend(a.iter().copied());
    }
}

/// The grudge of `kind` over `nodes` (already shuffled); `leader` for the
/// shapes that single it out.
pub fn grudge(kind: FaultKind, nodes: &[u64], leader: Option<u64>) -> Grudge {
    let mut grudge = Grudge::new();
    let n = nodes.len();
    if n < 2 {
        return grudge;
    }
    match kind {
        FaultKind::PartitionOne | FaultKind::PartitionLeader => {
            let alone = match (kind, leader) {
                (FaultKind::PartitionLeader, Some(l)) if nodes.contains(&l) => l,
                _ => nodes[0],
            };
            let others: Vec<u64> = nodes.iter().copied().filter(|&x| x != alone).collect();
            cut_between(&mut grudge, &[alone], &others);
        }
        FaultKind::PartitionHalves => {
            let (minority, majority) = nodes.split_at(n / 2);
            cut_between(&mut grudge, minority, majority);
        }
        FaultKind::PartitionBridge => {
            // [left | bridge | right]: the bridge hears both sides.
            let left = &nodes[..(n - 1) / 2];
            let right = &nodes[(n - 1) / 2 + 1..];
            cut_between(&mut grudge, left, right);
        }
        FaultKind::PartitionRing => {
            // Each node sees itself and its nearest neighbours on the
            // ring, a majority in all; no two see the same majority.
            let majority = n / 2 + 1;
            let before = (majority - 1) / 2;
            let after = majority - 1 - before;
            for (i, &x) in nodes.iter().enumerate() {
                let sees: Vec<u64> = (0..=before)
                    .map(|d| nodes[(i + n - d) % n])
                    .chain((1..=after).map(|d| nodes[(i + d) % n]))
                    .collect();
                let drops: Vec<u64> = nodes
                    .iter()
                    .copied()
                    .filter(|y| !sees.contains(y))
                    .collect();
                if !drops.is_empty() {
                    grudge.insert(x, drops);
                }
            }
        }
        FaultKind::PartitionOneWay => {
            // The first node hears nobody; the others still hear it (as
            // applied, only its peer port is cut: see `one_way`).
            let others: Vec<u64> = nodes[1..].to_vec();
            grudge.insert(nodes[0], others);
        }
        _ => {}
    }
    for drops in grudge.values_mut() {
        drops.sort_unstable();
        drops.dedup();
    }
    grudge
}

/// The main process of manager `id`, if it runs and is not paused.
pub(super) async fn pid_of(ctx: &Context, id: u64) -> anyhow::Result<u32> {
    let state = ctx.cluster.state(id).await?;
    state
        .pid
        .filter(|_| state.running && !state.paused)
        .with_context(|| format!("m{id} is not running ({})", state.status))
}

fn ip_of(ctx: &Context, id: u64) -> Option<Ipv4Addr> {
    ctx.cluster.manager(id).map(|m| m.ip)
}

/// Applies `grudge`, then proves every cut: a connection from the
/// dropping side to the other side's peer port no longer completes.
pub async fn apply(ctx: &Context, grudge: &Grudge) -> anyhow::Result<(serde_json::Value, bool)> {
    let mut pids = BTreeMap::new();
    for &id in grudge.keys() {
        pids.insert(id, pid_of(ctx, id).await?);
    }
    // The probe itself must work before the cut, or its failure after
    // proves nothing.
    let mut baseline_ok = true;
    if let Some((&x, drops)) = grudge.iter().next() {
        if let (Some(&y), Some(&pid)) = (drops.first(), pids.get(&x)) {
            let ip = ip_of(ctx, y).context("unknown manager")?;
            baseline_ok = net::can_connect(pid, ip, PEER_PORT, Duration::from_secs(2)).await;
        }
    }
    for (&id, drops) in grudge {
        let pid = pids[&id];
        net::prepare(pid).await?;
        let sources: Vec<Ipv4Addr> = drops.iter().filter_map(|&y| ip_of(ctx, y)).collect();
        net::drop_from(pid, &sources).await?;
    }
    let probes = grudge
        .iter()
        .flat_map(|(&x, drops)| drops.iter().map(move |&y| (x, y)));
    let checks = futures::future::join_all(probes.map(|(x, y)| {
        let pid = pids[&x];
        let ip = ip_of(ctx, y);
        async move {
            let connected = match ip {
                Some(ip) => net::can_connect(pid, ip, PEER_PORT, Duration::from_millis(800)).await,
                None => true,
            };
            (x, y, connected)
        }
    }))
    .await;
    let still_connected: Vec<String> = checks
        .iter()
        .filter(|(_, _, connected)| *connected)
        .map(|(x, y, _)| format!("m{x}->m{y}"))
        .collect();
    let effective = baseline_ok && still_connected.is_empty();
    let proof = json!({
        "probe_before_cut": if baseline_ok { "connected" } else { "FAILED: the probe did not connect before the cut" },
        "pairs_checked": checks.len(),
        "still_connected": still_connected,
    });
    Ok((proof, effective))
}

fn describe(grudge: &Grudge) -> serde_json::Value {
    json!(grudge
        .iter()
        .map(|(x, drops)| (
            format!("m{x}"),
            drops.iter().map(|y| format!("m{y}")).collect::<Vec<_>>()
        ))
        .collect::<BTreeMap<_, _>>())
}

pub async fn start(
    ctx: &Arc<Context>,
    kind: FaultKind,
    rng: &mut StdRng,
) -> anyhow::Result<Option<Started>> {
    let mut nodes = running_members(ctx).await;
    if nodes.len() < 3 {
        return Ok(None);
    }
    nodes.shuffle(rng);
    if kind == FaultKind::PartitionOneWay {
        return one_way(ctx, nodes).await;
    }
    let leader = if kind == FaultKind::PartitionLeader {
        let Some(leader) = ctx.leader(Duration::from_secs(2)).await else {
            return Ok(None);
        };
        Some(leader)
    } else {
        None
    };
    let grudge = grudge(kind, &nodes, leader);
    let (proof, effective) = apply(ctx, &grudge).await?;
    Ok(Some(Started {
        targets: json!({ "drops_from": describe(&grudge), "leader": leader }),
        proof,
        effective,
        undo: Undo::HealNetwork(grudge.keys().copied().collect()),
    }))
}

/// The one-way cut: a follower stops hearing the others at its peer port
/// (the leader's appends, anyone's vote requests), while the connections
/// it opens itself still work both ways — so it campaigns, and its vote
/// requests reach the others and are answered. Proof: no other manager
/// can connect to its peer port any more (each could before), while it
/// still connects to every other's.
async fn one_way(ctx: &Arc<Context>, nodes: Vec<u64>) -> anyhow::Result<Option<Started>> {
    let leader = ctx.leader(Duration::from_secs(2)).await;
    let Some(cut) = nodes.iter().copied().find(|&n| Some(n) != leader) else {
        return Ok(None);
    };
    // Known before the cut, so no pulse write waits on it.
    *ctx.one_way_cut.lock().expect("one-way cut") = Some(cut);
    let others: Vec<u64> = nodes.iter().copied().filter(|&n| n != cut).collect();
    let cut_ip = ip_of(ctx, cut).context("unknown manager")?;
    let cut_pid = pid_of(ctx, cut).await?;
    let mut pids = BTreeMap::new();
    for &y in &others {
        pids.insert(y, pid_of(ctx, y).await?);
    }
    let probe_to_cut = |y: u64, within: Duration| {
        let pid = pids[&y];
        async move { (y, net::can_connect(pid, cut_ip, PEER_PORT, within).await) }
    };
    let before = futures::future::join_all(
        others
            .iter()
            .map(|&y| probe_to_cut(y, Duration::from_secs(2))),
    )
    .await;
    net::prepare(cut_pid).await?;
    let sources: Vec<Ipv4Addr> = others.iter().filter_map(|&y| ip_of(ctx, y)).collect();
    net::drop_to_port_from(cut_pid, &sources, PEER_PORT).await?;
    let after = futures::future::join_all(
        others
            .iter()
            .map(|&y| probe_to_cut(y, Duration::from_millis(800))),
    )
    .await;
    let outgoing = futures::future::join_all(others.iter().map(|&y| {
        let ip = ip_of(ctx, y);
        async move {
            let connected = match ip {
                Some(ip) => net::can_connect(cut_pid, ip, PEER_PORT, Duration::from_secs(2)).await,
                None => false,
            };
            (y, connected)
        }
    }))
    .await;
    let named = |list: &[(u64, bool)], want: bool| -> Vec<String> {
        list.iter()
            .filter(|(_, connected)| *connected == want)
            .map(|(y, _)| format!("m{y}"))
            .collect()
    };
    let not_before = named(&before, false);
    let still_in = named(&after, true);
    let out_failed = named(&outgoing, false);
    let effective = not_before.is_empty() && still_in.is_empty() && out_failed.is_empty();
    let mut grudge = Grudge::new();
    grudge.insert(cut, others.clone());
    Ok(Some(Started {
        targets: json!({ "cut": cut, "leader": leader, "drops_from": describe(&grudge), "port": PEER_PORT }),
        proof: json!({
            "probes_to_the_cut_off_peer_port": others.len(),
            "could_not_connect_before_the_cut": not_before,
            "still_connected_after_the_cut": still_in,
            "its_own_connections_failed": out_failed,
        }),
        effective,
        undo: Undo::HealNetwork(vec![cut]),
    }))
}

/// Members whose containers run (and are not paused).
pub async fn running_members(ctx: &Context) -> Vec<u64> {
    let mut running = Vec::new();
    for id in ctx.members() {
        if pid_of(ctx, id).await.is_ok() {
            running.push(id);
        }
    }
    running
}

/// Random loss of 20–40 % of the packets between all running members.
pub async fn loss(ctx: &Arc<Context>, rng: &mut StdRng) -> anyhow::Result<Option<Started>> {
    let nodes = running_members(ctx).await;
    if nodes.len() < 2 {
        return Ok(None);
    }
    let probability: f64 = rng.gen_range(0.2..0.4);
    let mut pids = Vec::new();
    for &id in &nodes {
        let pid = pid_of(ctx, id).await?;
        net::prepare(pid).await?;
        let others: Vec<Ipv4Addr> = nodes
            .iter()
            .filter(|&&y| y != id)
            .filter_map(|&y| ip_of(ctx, y))
            .collect();
        net::lose_from(pid, &others, probability).await?;
        pids.push(pid);
    }
    // Heartbeats flow every few milliseconds: within a second the rules
    // must have dropped some of them.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut dropped = 0;
    let mut counted = 0;
    for pid in pids {
        let (d, c) = net::counters(pid).await?;
        dropped += d;
        counted += c;
    }
    Ok(Some(Started {
        targets: json!({ "managers": nodes, "probability": probability }),
        proof: json!({ "packets_seen": counted, "packets_dropped": dropped }),
        effective: dropped > 0,
        undo: Undo::HealNetwork(nodes),
    }))
}

/// Flushes the rules of `ids` and proves links work again.
pub async fn heal(ctx: &Arc<Context>, ids: &[u64]) -> anyhow::Result<serde_json::Value> {
    {
        let mut cut = ctx.one_way_cut.lock().expect("one-way cut");
        if cut.is_some_and(|c| ids.contains(&c)) {
            *cut = None;
        }
    }
    let mut healed = Vec::new();
    let mut dropped_total = 0;
    for &id in ids {
        // A stopped or paused manager has no rules left to flush (a
        // stopped container's namespace is gone with it).
        let Ok(pid) = pid_of(ctx, id).await else {
            continue;
        };
        if let Ok((dropped, _)) = net::counters(pid).await {
            dropped_total += dropped;
        }
        net::heal(pid).await?;
        healed.push(id);
    }
    Ok(json!({ "flushed": healed, "packets_dropped_while_active": dropped_total }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sees(grudge: &Grudge, x: u64, y: u64) -> bool {
        !grudge.get(&x).is_some_and(|d| d.contains(&y))
    }

    #[test]
    fn halves_cut_a_minority_from_a_majority() {
        let g = grudge(FaultKind::PartitionHalves, &[1, 2, 3, 4, 5], None);
        assert!(!sees(&g, 1, 3) && !sees(&g, 3, 1));
        assert!(sees(&g, 1, 2) && sees(&g, 3, 4) && sees(&g, 4, 5));
    }

    #[test]
    fn every_ring_member_sees_a_different_majority() {
        let nodes = [1, 2, 3, 4, 5];
        let g = grudge(FaultKind::PartitionRing, &nodes, None);
        let mut majorities = std::collections::BTreeSet::new();
        for &x in &nodes {
            let view: Vec<u64> = nodes
                .iter()
                .copied()
                .filter(|&y| y == x || sees(&g, x, y))
                .collect();
            assert_eq!(view.len(), 3, "m{x} sees {view:?}");
            majorities.insert(view);
        }
        assert_eq!(majorities.len(), 5);
    }

    #[test]
    fn the_bridge_hears_both_sides_that_cannot_hear_each_other() {
        let g = grudge(FaultKind::PartitionBridge, &[1, 2, 3, 4, 5], None);
        assert!(!g.contains_key(&3), "the bridge drops nothing: {g:?}");
        assert!(!sees(&g, 1, 4) && !sees(&g, 5, 2));
        assert!(sees(&g, 1, 3) && sees(&g, 4, 3) && sees(&g, 1, 2));
    }

    #[test]
    fn the_leader_partition_isolates_the_leader() {
        let g = grudge(FaultKind::PartitionLeader, &[1, 2, 3], Some(2));
        assert_eq!(g[&2], vec![1, 3]);
        assert_eq!(g[&1], vec![2]);
    }

    #[test]
    fn one_way_cuts_only_what_one_node_hears() {
        let g = grudge(FaultKind::PartitionOneWay, &[4, 1, 2], None);
        assert_eq!(g.len(), 1);
        assert_eq!(g[&4], vec![1, 2]);
    }
}
