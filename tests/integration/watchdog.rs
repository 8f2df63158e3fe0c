//! Gray failure of the leader: its supervision stalls (fail point
//! `reconcile-stall`) while it still answers Raft. Followers see its
//! progress go stale, it gives up leadership after `stall_after_ms` (the
//! agent exits with code 75), another replica leads and supervises, and the
//! old leader, restarted as its restart policy would, comes back as a
//! follower. Needs a build with the `failpoints` feature (scripts/test.sh).

use std::time::{Duration, Instant};

use crate::harness::{eventually, Cluster, Tuning};

const STALL_AFTER_MS: u64 = 2_000;

/// Every replica in `ids` follows `leader` and sees it progressing.
async fn all_see_progress(cluster: &Cluster, ids: &[u64], leader: u64) -> Result<(), String> {
    for id in ids {
        let status = cluster.status_of(*id).await?;
        if status.leader_id != Some(leader) {
            return Err(format!("replica {id} follows {:?}", status.leader_id));
        }
        match status.leader_progress_ms_ago {
            Some(ago) if ago < 1_500 && status.leader_last_progress.is_some() => {}
            other => return Err(format!("replica {id}: leader progress {other:?} ms ago")),
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(feature = "failpoints"),
    ignore = "needs the failpoints feature: cargo test --features failpoints"
)]
async fn a_leader_whose_supervision_stalls_gives_up_leadership() {
    let tuning = Tuning {
        extra_toml: format!("[supervisor]\nstall_after_ms = {STALL_AFTER_MS}\n"),
        ..Tuning::default()
    };
    let mut cluster = Cluster::start_with(3, tuning).await;
    let leader = cluster.wait_for_leader().await;
    let followers: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();

    // Healthy: every replica shows the leader's recent progress.
    eventually(
        "every replica sees the leader progressing",
        Duration::from_secs(10),
        || all_see_progress(&cluster, &[1, 2, 3], leader),
    )
    .await;
    let status = cluster.status_of(followers[0]).await.unwrap();
    assert_eq!(status.stall_after_ms, Some(STALL_AFTER_MS));

    // Stall the leader's service loop, as a hung engine call would.
    let stalled_at = Instant::now();
    let response = cluster
        .http()
        .put(format!(
            "{}/v1/debug/failpoints/reconcile-stall",
            cluster.api_url(leader)
        ))
        .body("return")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{response:?}");

    // Before the switch, followers show the leader's progress going stale.
    let stale_ms = eventually(
        "a follower shows the leader's stale progress",
        Duration::from_secs(STALL_AFTER_MS / 1_000 + 3),
        || async {
            let status = cluster.status_of(followers[0]).await?;
            match (status.leader_id, status.leader_progress_ms_ago) {
                (Some(l), Some(ago)) if l == leader && ago >= 1_000 => Ok(ago),
                other => Err(format!("leader and progress ms ago: {other:?}")),
            }
        },
    )
    .await;
    assert!(stale_ms >= 1_000);

    // It gives up leadership: exits with the stall code and says why.
    let exit = cluster
        .wait_for_exit(leader, Duration::from_millis(STALL_AFTER_MS + 5_000))
        .await
        .unwrap_or_else(|| panic!("leader {leader} did not give up its leadership"));
    assert_eq!(exit.code(), Some(75), "{exit:?}");
    let log = cluster.replica(leader).log();
    assert!(
        log.contains("supervision stalled for 2s: giving up leadership"),
        "{log}"
    );

    // Another replica leads within a few election timeouts, and supervises.
    let new_leader = eventually("another replica leads", Duration::from_secs(5), || async {
        let status = cluster.status_of(followers[0]).await?;
        match status.leader_id {
            Some(l) if l != leader && status.state != "candidate" => Ok(l),
            other => Err(format!("leader {other:?}")),
        }
    })
    .await;
    let switched_after = stalled_at.elapsed();
    assert!(
        switched_after < Duration::from_millis(STALL_AFTER_MS + 6_000),
        "{switched_after:?}"
    );
    eventually(
        "the new leader's progress advances",
        Duration::from_secs(10),
        || all_see_progress(&cluster, &followers, new_leader),
    )
    .await;

    // Its restart policy brings the old leader back: as a follower.
    cluster.restart(leader);
    eventually(
        "the old leader is back as a follower",
        Duration::from_secs(15),
        || async {
            let status = cluster.status_of(leader).await?;
            if status.state == "follower" && status.leader_id == Some(new_leader) {
                all_see_progress(&cluster, &[leader], new_leader).await
            } else {
                Err(format!("{} following {:?}", status.state, status.leader_id))
            }
        },
    )
    .await;
    assert_eq!(cluster.wait_for_leader().await, new_leader);
}
