//! Large writes cannot wedge replication: a burst of the largest KV values
//! the API accepts, all at once, is answered (stored, or refused as
//! overloaded — never left hanging), and every replica reaches the same
//! applied index within seconds, after which small writes go through.

use std::time::Duration;

use futures::future::join_all;

use crate::harness::{eventually, Cluster};

/// The largest KV value (`[limits] max_kv_value_bytes`' ceiling).
const VALUE_BYTES: usize = 512 * 1024;
const WRITES: usize = 150;

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_large_writes_is_answered_and_replicated_everywhere() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let http = cluster.http();
    let url = cluster.api_url(leader);
    let value = vec![b'x'; VALUE_BYTES];
    let answers = join_all((0..WRITES).map(|n| {
        let request = http
            .put(format!("{url}/v1/kv/large/{n}"))
            .body(value.clone())
            .timeout(Duration::from_secs(30));
        async move { request.send().await.map(|r| r.status().as_u16()) }
    }))
    .await;
    let mut stored = 0;
    for answer in &answers {
        match answer {
            Ok(200) => stored += 1,
            Ok(429 | 503) => {}
            other => panic!("a large write was answered {other:?}: {answers:?}"),
        }
    }
    assert!(stored > 0, "no large write was stored: {answers:?}");

    // Replication is not wedged: a small write commits, and every replica
    // applies up to it.
    let client = cluster.client();
    eventually(
        "a small write after the burst",
        Duration::from_secs(10),
        || async {
            client
                .kv_put("large/after", b"small", 0, None)
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await;
    let ids = [1, 2, 3];
    eventually(
        "every replica reaches the same applied index",
        Duration::from_secs(15),
        || async {
            let mut applied = Vec::new();
            for id in ids {
                let status = cluster
                    .client_for(id)
                    .cluster_status()
                    .await
                    .map_err(|e| e.to_string())?;
                applied.push(status.applied_index);
            }
            let leader_status = cluster
                .client_for(leader)
                .cluster_status()
                .await
                .map_err(|e| e.to_string())?;
            if applied.iter().all(|a| *a == applied[0])
                && applied[0] >= leader_status.last_log_index
            {
                Ok(())
            } else {
                Err(format!(
                    "applied indexes {applied:?} of {}",
                    leader_status.last_log_index
                ))
            }
        },
    )
    .await;
}
