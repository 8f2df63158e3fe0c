//! Replication, failover, durability, snapshots, membership and quorum loss.

use std::time::{Duration, Instant};

use raftvisor::client::{Client, Consistency};

use crate::harness::{eventually, Cluster, Tuning};

/// Waits until `client` (a single replica) reads `value` at `key` locally.
async fn stale_value_is(client: &Client, key: &str, value: &str) {
    eventually(
        &format!("{key} = {value}"),
        Duration::from_secs(10),
        || async {
            match client.kv_get(key, Consistency::Stale).await {
                Ok(Some(pair)) if pair.value == value.as_bytes() => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_to_a_follower_is_applied_everywhere() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster
        .running_ids()
        .into_iter()
        .find(|id| *id != leader)
        .unwrap();
    assert!(cluster
        .client_for(follower)
        .kv_put("greeting", b"hello", 0, None)
        .await
        .unwrap());
    for id in [1, 2, 3] {
        stale_value_is(&cluster.client_for(id), "greeting", "hello").await;
    }
    // The cluster got its identity and one manager record per member.
    let status = cluster.client_for(follower).cluster_status().await.unwrap();
    assert!(status.cluster_id.is_some());
    assert_eq!(status.members.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_leader_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3).await;
    let client = cluster.client();
    for i in 0..50 {
        assert!(client
            .kv_put(&format!("k/{i}"), format!("v{i}").as_bytes(), 0, None)
            .await
            .unwrap());
    }
    let old_leader = cluster.wait_for_leader().await;
    cluster.kill(old_leader);
    let new_leader = cluster.wait_for_leader().await;
    assert_ne!(new_leader, old_leader);
    // Writes go on while the old leader is down.
    for i in 50..60 {
        assert!(client
            .kv_put(&format!("k/{i}"), format!("v{i}").as_bytes(), 0, None)
            .await
            .unwrap());
    }
    let all = client
        .kv_list("k/", Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(all.len(), 60);
    cluster.restart(old_leader);
    // The killed replica rejoins and catches up.
    stale_value_is(&cluster.client_for(old_leader), "k/59", "v59").await;
    let caught_up = cluster
        .client_for(old_leader)
        .kv_list("k/", Consistency::Stale)
        .await
        .unwrap();
    assert_eq!(caught_up.len(), 60);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_acknowledged_write_survives_killing_all_replicas() {
    let mut cluster = Cluster::start(3).await;
    let client = cluster.client();
    // Concurrent writers, so batched entries are covered too.
    let mut writers = Vec::new();
    for w in 0..8 {
        let client = client.clone();
        writers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..25 {
                let key = format!("durable/{w}/{i}");
                if client.kv_put(&key, key.as_bytes(), 0, None).await.unwrap() {
                    acknowledged.push(key);
                }
            }
            acknowledged
        }));
    }
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.unwrap());
    }
    assert_eq!(acknowledged.len(), 200);
    let before = client.cluster_status().await.unwrap().term;
    for id in [1, 2, 3] {
        cluster.kill(id);
    }
    for id in [1, 2, 3] {
        cluster.restart(id);
    }
    cluster.wait_for_leader().await;
    // The old leader must not resume its term: the commit point it would
    // read back can be lower than what it acknowledged, and a linearizable
    // read from there could miss acknowledged writes.
    let after = client.cluster_status().await.unwrap().term;
    assert!(
        after > before,
        "the cluster leads in term {after} after a restart of every replica in term {before}"
    );
    let found = client
        .kv_list("durable/", Consistency::Linearizable)
        .await
        .unwrap();
    let keys: std::collections::BTreeSet<_> = found.iter().map(|p| p.key.clone()).collect();
    for key in &acknowledged {
        assert!(
            keys.contains(key),
            "acknowledged {key} lost after kill -9 of every replica"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_learner_catches_up_by_snapshot_is_promoted_and_members_can_be_removed() {
    let tuning = Tuning {
        snapshot_threshold: 20,
        keep_logs_after_snapshot: 5,
        ..Tuning::default()
    };
    let mut cluster = Cluster::start_with(3, tuning).await;
    let client = cluster.client();
    for i in 0..120 {
        assert!(client
            .kv_put(&format!("s/{i:03}"), b"x", 0, None)
            .await
            .unwrap());
    }
    // The leader has compacted its log behind a snapshot.
    let leader = cluster.wait_for_leader().await;
    cluster.wait_for_snapshot(leader).await;

    let (api, peer) = cluster.spawn_joiner_addrs(4);
    // A learner first: it replicates (by snapshot) but does not vote.
    client.add_member(4, &api, &peer, false).await.unwrap();
    let joined = cluster.client_for(4);
    stale_value_is(&joined, "s/119", "x").await;
    let status = client.cluster_status().await.unwrap();
    assert!(
        status.members.iter().any(|m| m.id == 4 && !m.voter),
        "replica 4 is not a learner: {status:?}"
    );
    assert_eq!(status.voter_ids().len(), 3);
    // Adding it again as a voter promotes it.
    client.add_member(4, &api, &peer, true).await.unwrap();
    assert_eq!(
        joined
            .kv_list("s/", Consistency::Stale)
            .await
            .unwrap()
            .len(),
        120
    );
    let status = joined.cluster_status().await.unwrap();
    assert!(
        status.snapshot_index > 0,
        "replica 4 caught up without a snapshot: {status:?}"
    );
    assert!(status.members.iter().any(|m| m.id == 4 && m.voter));
    assert!(
        cluster.replica(4).log().contains("snapshot installed"),
        "replica 4 did not install a snapshot"
    );

    // Remove a follower that is not the leader; the cluster keeps committing.
    let leader = cluster.wait_for_leader().await;
    let victim = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    client.remove_member(victim).await.unwrap();
    // Left running, it learns it was removed and sends callers elsewhere
    // at once (421) instead of waiting for a leader it will never have.
    let removed = cluster.client_for(victim);
    eventually(
        "the removed replica answers 421",
        Duration::from_secs(15),
        || async {
            match removed.kv_put("x", b"1", 0, None).await {
                Err(e) if e.status() == Some(421) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    cluster.kill(victim);
    assert!(client
        .kv_put("after-removal", b"ok", 0, None)
        .await
        .unwrap());
    let status = cluster.client_for(leader).cluster_status().await.unwrap();
    assert!(
        !status.members.iter().any(|m| m.id == victim),
        "{victim} still a member: {status:?}"
    );
    stale_value_is(&joined, "after-removal", "ok").await;
}

/// Regression, found by the failure harness (`smoke-membership-disk-delay`,
/// seed 3): a replica that joins by installing a snapshot older than the
/// current leader's own joining learns a membership without that leader.
/// Peers refused Raft messages from non-members — appends included — so it
/// refused its leader's appends for good and never caught up.
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_given_a_snapshot_older_than_its_leader_still_follows_it() {
    let tuning = Tuning {
        snapshot_threshold: 100,
        keep_logs_after_snapshot: 5,
        ..Tuning::default()
    };
    let mut cluster = Cluster::start_with(3, tuning).await;
    let client = cluster.client();
    // One snapshot at about index 100; the membership changes below stay
    // well short of the next one.
    for i in 0..110 {
        assert!(client
            .kv_put(&format!("s/{i:03}"), b"x", 0, None)
            .await
            .unwrap());
    }
    for id in 1..=3 {
        cluster.wait_for_snapshot(id).await;
    }
    // 4 and 5 join by installing that snapshot, which lists members 1-3.
    let mut joined_at = Vec::new();
    for id in [4, 5] {
        let (api, peer) = cluster.spawn_joiner_addrs(id);
        let answer = client.add_member(id, &api, &peer, true).await.unwrap();
        joined_at.push(answer["index"].as_u64().unwrap());
    }
    // The founders leave, the leader last: 4 or 5 leads, and its newest
    // snapshot is the one it joined with.
    let leader = cluster.wait_for_leader().await;
    let mut founders: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    founders.push(leader);
    for id in founders {
        cluster.client_for(id).remove_member(id).await.unwrap();
        cluster.kill(id);
    }
    let leader = cluster.wait_for_leader().await;
    assert!([4, 5].contains(&leader), "leader {leader}");
    let status = cluster.client_for(leader).cluster_status().await.unwrap();
    assert!(
        status.snapshot_index < joined_at[0],
        "the leader's snapshot ({}) is not older than its joining ({joined_at:?}): \
         the scenario did not happen",
        status.snapshot_index
    );

    // A new replica receives that snapshot and must still follow the leader.
    let (api, peer) = cluster.spawn_joiner_addrs(6);
    let client = cluster.client_with_token(&[4, 5], Some(cluster.admin_token()));
    client.add_member(6, &api, &peer, true).await.unwrap();
    assert!(client.kv_put("after", b"joined", 0, None).await.unwrap());
    let newest = cluster.client_for(6);
    stale_value_is(&newest, "s/109", "x").await;
    stale_value_is(&newest, "after", "joined").await;
    assert!(
        !cluster.replica(6).log().contains("outside the membership"),
        "replica 6 refused its leader"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_quorum_writes_and_linearizable_reads_fail_but_stale_reads_answer() {
    let tuning = Tuning {
        request_timeout_ms: 1_500,
        ..Tuning::default()
    };
    let mut cluster = Cluster::start_with(3, tuning).await;
    let client = cluster.client();
    assert!(client.kv_put("before", b"1", 0, None).await.unwrap());
    let leader = cluster.wait_for_leader().await;
    let survivor = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    stale_value_is(&cluster.client_for(survivor), "before", "1").await;
    for id in [1, 2, 3] {
        if id != survivor {
            cluster.kill(id);
        }
    }
    let lonely = cluster.client_for(survivor);
    let started = Instant::now();
    let error = lonely.kv_put("during", b"2", 0, None).await.unwrap_err();
    assert_eq!(error.status(), Some(503), "{error}");
    assert!(error.to_string().contains("did not answer"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "write failed only after {:?}",
        started.elapsed()
    );

    let error = lonely
        .kv_get("before", Consistency::Linearizable)
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(503), "{error}");
    let stale = lonely
        .kv_get("before", Consistency::Stale)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stale.value, b"1");
}

/// openraft 0.9 has no pre-vote: a member removed while it was dead that
/// comes back with its old data campaigns with higher terms. The members
/// refuse its messages, so their term and leader stay put, writes go on, and
/// the removed replica stops and says why.
#[tokio::test(flavor = "multi_thread")]
async fn a_removed_member_that_returns_does_not_disturb_the_cluster() {
    let mut cluster = Cluster::start(4).await;
    let leader = cluster.wait_for_leader().await;
    let victim = [4, 3, 2, 1].into_iter().find(|id| *id != leader).unwrap();
    let client = cluster.client_for(leader);
    assert!(client.kv_put("before", b"1", 0, None).await.unwrap());
    cluster.kill(victim);
    client.remove_member(victim).await.unwrap();
    let term = client.cluster_status().await.unwrap().term;

    cluster.restart(victim);
    let returned = cluster.client_for(victim);
    eventually(
        "the removed replica stops and says why",
        Duration::from_secs(30),
        || async {
            let health = returned.health().await.map_err(|e| e.to_string())?;
            if health["status"] == "removed"
                && health["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("non-member"))
            {
                Ok(())
            } else {
                Err(health.to_string())
            }
        },
    )
    .await;
    // Meanwhile, and after, the members kept their leader and term.
    for id in cluster.running_ids() {
        if id == victim {
            continue;
        }
        let status = cluster.client_for(id).cluster_status().await.unwrap();
        assert_eq!(status.leader_id, Some(leader), "replica {id}");
        assert_eq!(status.term, term, "replica {id}: the term moved");
        assert!(status.members.iter().all(|m| m.id != victim));
    }
    assert!(client.kv_put("after", b"2", 0, None).await.unwrap());
    let log = cluster.replica(victim).log();
    assert!(log.contains("removed from the cluster"), "{log}");
    // Requests that need a leader fail at once on the removed replica
    // (421, "ask a member"; waiting out the request timeout would end in a
    // 503): found by the failure harness, whose clients waited 2 s on
    // every removed manager.
    let error = returned
        .kv_get("after", Consistency::Linearizable)
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(421), "{error}");
    assert!(
        error.to_string().contains("removed from the cluster"),
        "{error}"
    );
    let error = returned.kv_put("x", b"1", 0, None).await.unwrap_err();
    assert_eq!(error.status(), Some(421), "{error}");
}
