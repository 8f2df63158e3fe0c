//! Crash points of the write path: a replica killed from inside (SIGKILL,
//! the `log-crash-*` fail points of the Raft log) at every step where a
//! crash leaves a different disk — before an append's records are written,
//! before and after their fsync, after their acknowledgement and before
//! the watermark's write, around a segment's rotation, while the
//! meta file is written, during a purge and after a truncation lowered the
//! watermark — restarts without a refusal, catches up, and no acknowledged
//! write is lost. Each point is hit on the leader and on a follower while
//! writers keep the log busy. Needs the `failpoints` feature.

use std::time::Duration;

use crate::harness::{eventually, Cluster, TimedWriter, Tuning};

/// Crash points reached by steady writes, in the order of the write path.
/// Truncation needs a deposed leader and has a test step of its own.
const WRITE_PATH: [&str; 8] = [
    "log-crash-before-write",
    "log-crash-before-sync",
    "log-crash-after-sync",
    "log-crash-after-ack",
    "log-crash-meta-before-sync",
    "log-crash-before-rotate",
    "log-crash-after-create",
    "log-crash-during-purge",
];

/// Small segments and frequent snapshots, so rotations and purges come
/// every few seconds of writes.
fn busy_log() -> Tuning {
    Tuning {
        snapshot_threshold: 300,
        keep_logs_after_snapshot: 50,
        extra_raft_toml: "log_segment_bytes = 65536\n".into(),
        ..Tuning::default()
    }
}

/// Arms `point` on replica `id`, waits until the process killed itself
/// there, starts it again on the same disk and waits until it has caught up
/// with the leader (a replica whose log recovery refused would not). A
/// crashed leader comes back only once the others elected a new one: back
/// at once, it would take up its old term as if nothing happened.
async fn crash_and_recover(cluster: &mut Cluster, id: u64, point: &str) {
    let was_leader = cluster.wait_for_leader().await == id;
    let started = std::time::Instant::now();
    // Under writes the point can fire before the answer to arming it
    // leaves: no answer is not a failure, the exit and the log below tell.
    match cluster.try_fail_point(id, point, Some("return")).await {
        Ok(response) => assert!(response.status().is_success(), "{response:?}"),
        Err(e) => eprintln!("arming {point} on replica {id} got no answer: {e}"),
    }
    let status = cluster.wait_for_exit(id, Duration::from_secs(60)).await;
    let crashed = started.elapsed();
    if status.is_none() {
        cluster.dump_logs();
    }
    let status = status.unwrap_or_else(|| panic!("replica {id} never reached {point}"));
    assert!(
        !status.success(),
        "replica {id} stopped at {point} without being killed: {status}"
    );
    assert!(
        cluster
            .replica(id)
            .log()
            .contains(&format!("fail point {point}: killing the process")),
        "replica {id} stopped, but not at {point}"
    );
    if was_leader {
        let successor = cluster.wait_for_leader().await;
        assert_ne!(successor, id);
    }
    cluster.restart(id);
    caught_up(cluster, id, point).await;
    eprintln!(
        "{point} on replica {id}: killed after {} ms, back and caught up after {} ms",
        crashed.as_millis(),
        started.elapsed().as_millis()
    );
}

async fn caught_up(cluster: &mut Cluster, id: u64, point: &str) {
    let leader = cluster.wait_for_leader().await;
    let target = cluster.status_of(leader).await.unwrap().applied_index;
    eventually(
        &format!("replica {id} restarted after {point} and caught up to {target}"),
        Duration::from_secs(30),
        || async {
            let status = cluster.status_of(id).await?;
            if status.applied_index >= target {
                Ok(())
            } else {
                Err(format!("at {} of {target}", status.applied_index))
            }
        },
    )
    .await;
}

async fn follower_of(cluster: &mut Cluster) -> u64 {
    let leader = cluster.wait_for_leader().await;
    cluster
        .running_ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower runs")
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature: cargo test --features failpoints"
)]
async fn a_crash_at_every_step_of_the_write_path_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start_with(3, busy_log()).await;
    cluster.wait_for_leader().await;
    let client = cluster.client();
    // Several writers, so appends carry batches of entries too.
    let writers: Vec<TimedWriter> = (0..4)
        .map(|w| TimedWriter::start(&client, &format!("crash/{w}/")))
        .collect();

    for point in WRITE_PATH {
        let leader = cluster.wait_for_leader().await;
        crash_and_recover(&mut cluster, leader, point).await;
        let follower = follower_of(&mut cluster).await;
        crash_and_recover(&mut cluster, follower, point).await;
    }

    let mut written = Vec::new();
    for writer in writers {
        written.push(writer.stop().await);
    }

    // Truncation: a leader cut off from its peers appends writes nobody
    // else has; once healed, the new leader's entries replace them. Without
    // the writers, so the new leader still holds the entries it sends in
    // its log instead of a snapshot.
    let deposed = cluster.wait_for_leader().await;
    cluster
        .fail_point(deposed, "peer-isolated", Some("return"))
        .await;
    let lone = cluster.client_for(deposed);
    for n in 0..5 {
        let key = format!("crash/uncommitted/{n}");
        let attempt =
            tokio::time::timeout(Duration::from_millis(500), lone.kv_put(&key, b"v", 0, None))
                .await;
        assert!(
            !matches!(attempt, Ok(Ok(true))),
            "a leader without peers acknowledged {key}"
        );
    }
    eventually(
        "the others elect a new leader",
        Duration::from_secs(20),
        || async {
            for id in [1, 2, 3].into_iter().filter(|id| *id != deposed) {
                match cluster.status_of(id).await?.leader_id {
                    Some(leader) if leader != deposed => {}
                    other => return Err(format!("replica {id} follows {other:?}")),
                }
            }
            Ok(())
        },
    )
    .await;
    cluster
        .fail_point(deposed, "log-crash-before-truncate", Some("return"))
        .await;
    cluster.fail_point(deposed, "peer-isolated", None).await;
    let status = cluster
        .wait_for_exit(deposed, Duration::from_secs(60))
        .await;
    if status.is_none() {
        cluster.dump_logs();
    }
    assert!(
        status.is_some(),
        "the deposed leader never truncated its own entries"
    );
    cluster.restart(deposed);
    caught_up(&mut cluster, deposed, "log-crash-before-truncate").await;

    cluster.wait_for_leader().await;
    for w in &written {
        w.all_readable(&client, "writes across the crashes").await;
    }
    // Every replica, read locally, holds every acknowledged write.
    for id in [1, 2, 3] {
        let replica = cluster.client_for(id);
        for w in &written {
            let last = w.acknowledged.last().expect("acknowledged writes");
            eventually(
                &format!("replica {id} holds {last}"),
                Duration::from_secs(10),
                || async {
                    let stored = replica
                        .kv_list(&w.prefix, raftvisor::client::Consistency::Stale)
                        .await
                        .map_err(|e| e.to_string())?;
                    let keys: std::collections::BTreeSet<String> =
                        stored.into_iter().map(|p| p.key).collect();
                    match w.acknowledged.iter().find(|k| !keys.contains(*k)) {
                        None => Ok(()),
                        Some(missing) => Err(format!("{missing} missing")),
                    }
                },
            )
            .await;
        }
    }
}
