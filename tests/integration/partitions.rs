//! The control plane under partitions: a replica that cannot hear the
//! leader (a one-way cut, fail point `peer-deaf`) neither raises its term
//! nor deposes the leader, during the cut or when it heals; a leader cut
//! off from everyone (fail point `peer-isolated`) pauses its supervisor and
//! leaves the containers of the leader that replaced it alone. Needs a
//! build with the `failpoints` feature (scripts/test.sh); the second test
//! also the local Docker Engine.

use std::time::{Duration, Instant};

use raftvisor::state::ServiceSpec;
use serde_json::json;

use crate::docker_env::{self, DockerCluster, LOCAL_ENGINE};
use crate::harness::{eventually, Cluster};

/// Writes through `leader` for `during`; returns the longest time between
/// two acknowledged writes (from the start, and to the end).
async fn write_for(cluster: &Cluster, leader: u64, during: Duration, tag: &str) -> Duration {
    let client = cluster.client_for(leader);
    let started = Instant::now();
    let mut last_ack = started;
    let mut longest = Duration::ZERO;
    let mut n = 0u64;
    while started.elapsed() < during {
        n += 1;
        let key = format!("partition/{tag}/{n}");
        let attempt =
            tokio::time::timeout(Duration::from_secs(2), client.kv_put(&key, b"v", 0, None)).await;
        if matches!(attempt, Ok(Ok(_))) {
            longest = longest.max(last_ack.elapsed());
            last_ack = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    longest.max(last_ack.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature: cargo test --features failpoints"
)]
async fn a_replica_that_cannot_hear_the_leader_does_not_depose_it() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let deaf = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let before = cluster.status_of(leader).await.unwrap();
    let deaf_before = cluster.status_of(deaf).await.unwrap();

    cluster.fail_point(deaf, "peer-deaf", Some("return")).await;
    let gap_cut = write_for(&cluster, leader, Duration::from_secs(4), "cut").await;
    let deaf_during = cluster.status_of(deaf).await.unwrap();
    cluster.fail_point(deaf, "peer-deaf", None).await;
    let gap_heal = write_for(&cluster, leader, Duration::from_secs(3), "heal").await;

    let after = cluster.status_of(leader).await.unwrap();
    assert_eq!(
        (after.leader_id, after.term),
        (Some(leader), before.term),
        "the leader was deposed; deaf replica {deaf} went from term {} to {} while cut off",
        deaf_before.term,
        deaf_during.term
    );
    assert_eq!(
        deaf_during.term, deaf_before.term,
        "the replica that could not hear the leader raised its term"
    );
    assert!(
        gap_cut < Duration::from_secs(1) && gap_heal < Duration::from_secs(1),
        "writes stalled: longest gap {gap_cut:?} during the cut, {gap_heal:?} after it"
    );
    // Healed, it follows again and catches up.
    eventually(
        "the healed replica follows the leader and catches up",
        Duration::from_secs(10),
        || async {
            let leader_status = cluster.status_of(leader).await?;
            let status = cluster.status_of(deaf).await?;
            if status.leader_id == Some(leader)
                && status.applied_index >= leader_status.applied_index
            {
                Ok(())
            } else {
                Err(format!(
                    "follows {:?} at {} of {}",
                    status.leader_id, status.applied_index, leader_status.applied_index
                ))
            }
        },
    )
    .await;
}

fn echo_spec(replicas: u32) -> ServiceSpec {
    docker_env::echo_spec(replicas, json!({}))
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature: cargo test --features failpoints"
)]
async fn a_deposed_leader_leaves_the_new_leaders_containers_alone() {
    let Some(mut env) = DockerCluster::start(3).await else {
        return;
    };
    env.add_node("local", LOCAL_ENGINE, "a").await;
    let client = env.cluster.client();
    client
        .service_put("p1", "before", &echo_spec(1), None)
        .await
        .unwrap();
    env.wait_running("before", 1, Duration::from_secs(30)).await;

    // Cut the leader off from everyone; the others elect a new one.
    let old = env.cluster.wait_for_leader().await;
    env.cluster
        .fail_point(old, "peer-isolated", Some("return"))
        .await;
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != old).collect();
    let cluster = &env.cluster;
    let new = eventually(
        "the others elect a new leader",
        Duration::from_secs(10),
        || async {
            let status = cluster.status_of(others[0]).await?;
            match status.leader_id {
                Some(l) if l != old && status.state != "candidate" => Ok(l),
                other => Err(format!("leader {other:?}")),
            }
        },
    )
    .await;

    // The new leader deploys and scales while the old one still believes
    // it leads (openraft 0.9 never steps down by itself).
    let majority = env
        .cluster
        .client_with_token(&others, Some(env.cluster.admin_token()));
    majority
        .service_put("p1", "during", &echo_spec(1), None)
        .await
        .unwrap();
    majority.service_scale("p1", "before", 2).await.unwrap();
    let during = env.wait_running("during", 1, Duration::from_secs(30)).await;
    let before = env.wait_running("before", 2, Duration::from_secs(30)).await;
    let old_status = env.cluster.status_of(old).await.unwrap();
    assert_eq!(old_status.state, "leader", "{old_status:?}");

    // For a while, nothing of the new leader's is stopped or removed.
    let watched: Vec<String> = during.iter().chain(&before).map(|c| c.id.clone()).collect();
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let running: Vec<String> = env
            .containers(None)
            .await
            .into_iter()
            .filter(|c| c.state == raftvisor::runtime::ContainerState::Running)
            .map(|c| c.id)
            .collect();
        for id in &watched {
            assert!(
                running.contains(id),
                "container {id} of new leader {new} was stopped or removed (old leader {old}): {}",
                env.cluster.replica(old).log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = env.cluster.replica(old).log();
    assert!(
        log.contains("lost contact with a quorum: pausing the supervisor"),
        "{log}"
    );

    // Healed, the old leader follows the new one; the work stands.
    env.cluster.fail_point(old, "peer-isolated", None).await;
    assert_eq!(env.cluster.wait_for_leader().await, new);
    env.wait_running("during", 1, Duration::from_secs(10)).await;
    env.wait_running("before", 2, Duration::from_secs(10)).await;
}
