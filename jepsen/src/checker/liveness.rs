//! Liveness and agreement after healing:
//! - `liveness`: within the limit, the members agree on one leader and a
//!   write through the API is acknowledged;
//! - `replicas`: once every member has applied the same index, all of them
//!   hold exactly the same keys, values and modify indexes under the run's
//!   prefix (read locally with `?stale`) — a member that recovered from a
//!   disk fault must not hold different data.

use std::collections::BTreeMap;
use std::time::Duration;

use raftvisor::wire::ConsulEntry;
use serde_json::json;
use tokio::time::Instant;

use super::Verdict;
use crate::nemesis::Context;

pub async fn liveness(ctx: &Context, prefix: &str, within: Duration) -> Verdict {
    let started = Instant::now();
    let deadline = started + within;
    let mut last = String::from("not tried");
    let mut leader_after = None;
    while Instant::now() < deadline {
        let members = ctx.members();
        match ctx.cluster.agreed_view(&members).await {
            Ok(view) => {
                leader_after.get_or_insert(started.elapsed());
                let leader = view.leader_id.unwrap_or(0);
                let Some(manager) = ctx.cluster.manager(leader) else {
                    last = format!("leader m{leader} is not a manager of this run");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                match ctx
                    .cluster
                    .api
                    .kv_put(
                        &manager.api(),
                        &format!("{prefix}/liveness"),
                        "1",
                        None,
                        Duration::from_secs(3),
                    )
                    .await
                {
                    Ok(true) => {
                        return Verdict::new(
                            "liveness",
                            Some(true),
                            format!(
                            "leader m{leader} agreed after {} ms, a write acknowledged after {} ms",
                            leader_after.unwrap_or_default().as_millis(),
                            started.elapsed().as_millis()
                        ),
                            json!({
                                "leader": leader,
                                "leader_agreed_ms": leader_after.map(|d| d.as_millis() as u64),
                                "write_acknowledged_ms": started.elapsed().as_millis() as u64,
                            }),
                        )
                    }
                    Ok(false) => last = "the write answered false".into(),
                    Err(e) => last = format!("write through m{leader}: {e}"),
                }
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Verdict::new(
        "liveness",
        Some(false),
        format!("no agreed leader and acknowledged write within {within:?}: {last}"),
        json!({ "last_problem": last, "members": ctx.members() }),
    )
}

/// What replicas must agree on of a KV entry: its key, value and modify
/// index (the create index and flags are not compared).
type Entry = ConsulEntry<'static>;

fn compared(entry: &Entry) -> (&str, Option<&str>, u64) {
    (&entry.key, entry.value.as_deref(), entry.modify_index)
}

pub async fn replicas(ctx: &Context, prefix: &str, within: Duration) -> Verdict {
    let deadline = Instant::now() + within;
    let mut last = String::from("not compared");
    while Instant::now() < deadline {
        match compare(ctx, prefix).await {
            Ok(keys) => {
                return Verdict::new(
                    "replicas",
                    Some(true),
                    format!("{} members hold the same {keys} keys", ctx.members().len()),
                    json!({ "keys": keys, "members": ctx.members() }),
                )
            }
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Verdict::new(
        "replicas",
        Some(false),
        format!("members still differ after {within:?}: {last}"),
        json!({ "last_difference": last }),
    )
}

/// `Ok(keys)` when every member, at the same applied index, holds the same
/// entries; otherwise what differs.
async fn compare(ctx: &Context, prefix: &str) -> Result<usize, String> {
    let mut states: BTreeMap<u64, (u64, Vec<Entry>)> = BTreeMap::new();
    for id in ctx.members() {
        let manager = ctx.cluster.manager(id).ok_or(format!("no manager {id}"))?;
        let api = &ctx.cluster.api;
        let before = api
            .cluster(&manager.api(), Duration::from_secs(1))
            .await
            .map_err(|e| format!("m{id}: {e}"))?
            .applied_index;
        let entries: Vec<Entry> = api
            .kv_list(
                &manager.api(),
                &format!("{prefix}/"),
                "recurse&stale",
                Duration::from_secs(3),
            )
            .await
            .map_err(|e| format!("m{id}: {e}"))?;
        let after = api
            .cluster(&manager.api(), Duration::from_secs(1))
            .await
            .map_err(|e| format!("m{id}: {e}"))?
            .applied_index;
        if before != after {
            return Err(format!("m{id} applied {before}..{after} while being read"));
        }
        states.insert(id, (after, entries));
    }
    let mut iter = states.iter();
    let Some((first_id, (first_index, first_entries))) = iter.next() else {
        return Err("no members".into());
    };
    for (id, (index, entries)) in iter {
        if index != first_index {
            return Err(format!(
                "m{first_id} applied {first_index}, m{id} applied {index}"
            ));
        }
        if !first_entries
            .iter()
            .map(compared)
            .eq(entries.iter().map(compared))
        {
            let differing = first_entries
                .iter()
                .zip(entries.iter())
                .find(|(a, b)| compared(a) != compared(b))
                .map(|(a, b)| format!("{a:?} vs {b:?}"))
                .unwrap_or_else(|| format!("{} vs {} entries", first_entries.len(), entries.len()));
            return Err(format!(
                "m{first_id} and m{id} differ at index {index}: {differing}"
            ));
        }
    }
    Ok(first_entries.len())
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn entry(key: &str, value: &str, create_index: u64, modify_index: u64) -> Entry {
        ConsulEntry {
            lock_index: 0,
            key: Cow::Owned(key.into()),
            flags: 0,
            value: Some(value.into()),
            create_index,
            modify_index,
            session: None,
        }
    }

    #[test]
    fn replicas_are_compared_on_key_value_and_modify_index() {
        let a = entry("r/k", "MQ==", 3, 7);
        assert_eq!(compared(&a), compared(&entry("r/k", "MQ==", 4, 7)));
        assert_ne!(compared(&a), compared(&entry("r/k", "Mg==", 3, 7)));
        assert_ne!(compared(&a), compared(&entry("r/k", "MQ==", 3, 8)));
        assert_ne!(compared(&a), compared(&entry("r/j", "MQ==", 3, 7)));
    }
}
