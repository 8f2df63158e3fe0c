//! A replica started on a data directory written by the first codec format
//! (`tests/fixtures/format-1`: records without version markers) replays
//! it and serves it: the API answers with the old services, instances, KV
//! and tokens, and new writes land beside them. The data directory is laid
//! out as that release left it: its snapshot file, and the log after it in
//! a segment file named by its first index, records framed
//! `[length u32 LE][crc32 u32 LE][entry]`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::RaftLogStorage;
use raftvisor::config::{AgentConfig, LoopbackPorts};
use raftvisor::raft::log_store::LogStore;
use raftvisor::raft::{Entry, LogId, TypeConfig, Vote};
use tokio_util::sync::CancellationToken;

use crate::harness::{eventually, free_port, ADMIN_TOKEN};

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-1")
}

/// The index of the fixture's snapshot (`snapshot-…6.bin`).
const SNAPSHOT_INDEX: u64 = 6;

/// Lays out `data` as that release left it after a snapshot at index 6:
/// the snapshot file, the log purged up to it, entries 7 and 8 in a
/// segment, and the vote of the term that wrote them.
async fn write_format1_data_dir(data: &Path) {
    let snapshots = data.join("snapshots");
    std::fs::create_dir_all(&snapshots).unwrap();
    let snapshot = format!("snapshot-{SNAPSHOT_INDEX:020}.bin");
    std::fs::copy(fixtures().join(&snapshot), snapshots.join(&snapshot)).unwrap();

    let bytes = std::fs::read(fixtures().join("log-entries.bin")).unwrap();
    let mut segment = Vec::new();
    let mut rest = bytes.as_slice();
    let (mut purged, mut last) = (None, None);
    while let Some((length, tail)) = rest.split_first_chunk::<4>() {
        let (entry, tail) = tail.split_at(u32::from_le_bytes(*length) as usize);
        rest = tail;
        assert_eq!(entry[0], 1, "an entry of codec format 1");
        let decoded: Entry = raftvisor::codec::decode(entry).unwrap();
        if decoded.log_id.index <= SNAPSHOT_INDEX {
            purged = Some(decoded.log_id);
            continue;
        }
        last = Some(decoded.log_id);
        segment.extend_from_slice(length);
        segment.extend_from_slice(&crc32fast::hash(entry).to_le_bytes());
        segment.extend_from_slice(entry);
    }
    let (purged, last): (LogId, LogId) = (purged.unwrap(), last.unwrap());
    assert_eq!((purged.index, last.index), (SNAPSHOT_INDEX, 8));
    // The meta file holds no model record: its body is the same in both
    // codec formats, so the current store writes it.
    let log_dir = data.join("log");
    let mut log = LogStore::<TypeConfig>::open(&log_dir).unwrap();
    log.save_vote(&Vote::new_committed(last.leader_id.term, 1))
        .await
        .unwrap();
    log.purge(purged).await.unwrap();
    drop(log);
    std::fs::write(
        log_dir.join(format!("{:020}.wal", SNAPSHOT_INDEX + 1)),
        segment,
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_on_a_format_1_data_directory_serves_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("replica-1");
    write_format1_data_dir(&data).await;
    let ports = LoopbackPorts {
        api: free_port(),
        peer: free_port(),
        dns: free_port(),
    };
    let mut config = AgentConfig::loopback(1, data, ports, &[(1, ports)]);
    // The old cluster's node points at an engine this test must not touch.
    config.supervisor.enabled = false;
    let shutdown = CancellationToken::new();
    let running = raftvisor::agent::run(config, shutdown.clone())
        .await
        .expect("the agent starts on the old data");
    let replica = Arc::clone(&running.replica);
    let api = format!("http://127.0.0.1:{}", ports.api);
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let request = http.get(format!("{api}{path}")).bearer_auth(ADMIN_TOKEN);
        async move {
            let answer = request.send().await.map_err(|e| e.to_string())?;
            let status = answer.status();
            let body = answer.text().await.map_err(|e| e.to_string())?;
            if status.is_success() {
                Ok(body)
            } else {
                Err(format!("{status}: {body}"))
            }
        }
    };

    // The old log is committed by the new term's first entry, then served.
    let service = eventually("the old service", Duration::from_secs(30), || async {
        let body = get("/v1/services/demo/echo").await?;
        serde_json::from_str::<serde_json::Value>(&body).map_err(|e| e.to_string())
    })
    .await;
    assert_eq!(service["spec"]["image"], "raftvisor-echo:local");
    assert_eq!(service["spec"]["replicas"], 2);
    assert_eq!(service["spec"]["health"]["path"], "/health");
    assert_eq!(get("/v1/kv/config/b?raw").await.unwrap(), "beta");
    assert!(
        get("/v1/kv/config/a?raw").await.is_err(),
        "the deleted key stays deleted"
    );
    replica.sm.read(|s| {
        assert_eq!(s.cluster_id.as_deref(), Some("format1"));
        let instance = &s.instances["demo.echo.0"];
        assert_eq!(instance.node.as_deref(), Some("node-a"));
        assert_eq!(
            instance.template,
            raftvisor::state::supervision::template_fingerprint(
                &s.services[&("demo".to_string(), "echo".to_string())].spec
            ),
            "the upgrade replaces no container"
        );
        assert_eq!(s.tokens["ops"].role, raftvisor::state::Role::Operator);
        assert!(s.manager_template.is_some());
    });

    // New writes go on after the old entries, in the current format.
    let answer = http
        .put(format!("{api}/v1/kv/config/c"))
        .bearer_auth(ADMIN_TOKEN)
        .body("gamma")
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());
    assert_eq!(get("/v1/kv/config/c?raw").await.unwrap(), "gamma");
    assert!(replica.sm.read(|s| s.applied_index) > 8);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), running.stopped())
        .await
        .expect("the agent drains");
}
