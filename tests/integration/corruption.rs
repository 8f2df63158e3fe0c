//! Storage corruption: bytes flipped at seeded offsets in each store file
//! (log segments, the meta file with vote and watermark, the snapshot).
//! The replica must either refuse to start with a clear message or serve
//! exactly the acknowledged data — never wrong data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use raftvisor::client::Consistency;

use crate::harness::{copy_dir, Cluster, Tuning};

const OFFSETS_PER_FILE: usize = 20;
const SEED: u64 = 0x5eed_f00d;

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn store_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for sub in ["log", "snapshots"] {
        for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() && std::fs::metadata(&path).unwrap().len() > 0 {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn flipped_bytes_never_serve_wrong_data() {
    let tuning = Tuning {
        snapshot_threshold: 40,
        keep_logs_after_snapshot: 10,
        ..Tuning::default()
    };
    let mut cluster = Cluster::start_with(1, tuning).await;
    let client = cluster.client();
    let mut acknowledged = BTreeMap::new();
    for i in 0..100 {
        let (key, value) = (format!("c/{i:03}"), format!("value-{i}"));
        assert!(client
            .kv_put(&key, value.as_bytes(), 0, None)
            .await
            .unwrap());
        acknowledged.insert(key, value.into_bytes());
    }
    cluster.wait_for_snapshot(1).await;
    cluster.kill(1);

    let data_dir = cluster.replica(1).data_dir.clone();
    let pristine = cluster.dir.path().join("pristine");
    copy_dir(&data_dir, &pristine);
    let files: Vec<PathBuf> = store_files(&pristine)
        .into_iter()
        .map(|p| p.strip_prefix(&pristine).unwrap().to_path_buf())
        .collect();
    let kinds: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    assert!(
        kinds.iter().any(|k| k.ends_with(".wal")),
        "no log segment in {kinds:?}"
    );
    assert!(
        kinds.iter().any(|k| k.ends_with("meta")),
        "no meta file in {kinds:?}"
    );
    assert!(
        kinds.iter().any(|k| k.contains("snapshot-")),
        "no snapshot in {kinds:?}"
    );

    let mut rng = SEED;
    let (mut refused, mut served) = (0, 0);
    for file in &files {
        let len = std::fs::metadata(pristine.join(file)).unwrap().len();
        for _ in 0..OFFSETS_PER_FILE {
            let offset = xorshift(&mut rng) % len;
            std::fs::remove_dir_all(&data_dir).unwrap();
            copy_dir(&pristine, &data_dir);
            let target = data_dir.join(file);
            let mut bytes = std::fs::read(&target).unwrap();
            bytes[offset as usize] ^= 0x5a;
            std::fs::write(&target, bytes).unwrap();

            let what = format!("{} offset {offset}", file.display());
            cluster.restart(1);
            match outcome(&mut cluster, &acknowledged, &what).await {
                Outcome::Refused(message) => {
                    let lower = message.to_lowercase();
                    assert!(
                        lower.contains("corrupt")
                            || lower.contains("refus")
                            || lower.contains("lost"),
                        "{what}: the replica exited without a clear reason: {message}"
                    );
                    refused += 1;
                }
                Outcome::ServedExactly => served += 1,
            }
            cluster.kill(1);
        }
    }
    eprintln!(
        "corruption: {refused} refused to start, {served} served exactly the acknowledged data"
    );
    assert_eq!(refused + served, files.len() * OFFSETS_PER_FILE);
}

enum Outcome {
    Refused(String),
    ServedExactly,
}

/// Waits until the restarted replica either exits or answers; if it
/// answers, its data must equal `acknowledged` exactly.
async fn outcome(
    cluster: &mut Cluster,
    acknowledged: &BTreeMap<String, Vec<u8>>,
    what: &str,
) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = cluster.client();
    loop {
        let index = cluster.index_of(1);
        if !cluster.replicas[index].is_running() {
            let log = cluster.replicas[index].log();
            let last = log
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .to_string();
            // Forget the exited child so the next restart is allowed.
            cluster.kill(1);
            return Outcome::Refused(last);
        }
        if let Ok(pairs) = client.kv_list("c/", Consistency::Linearizable).await {
            let served: BTreeMap<String, Vec<u8>> =
                pairs.into_iter().map(|p| (p.key, p.value)).collect();
            assert_eq!(
                &served, acknowledged,
                "{what}: the replica served data that differs from what was acknowledged"
            );
            return Outcome::ServedExactly;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the replica neither refused to start nor answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
