//! A replica's data is private (issue 12, item 11): after it started,
//! wrote, and built a snapshot, every directory under its data directory
//! (the data directory included) has mode 0700 and every file 0600.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::harness::{Cluster, Tuning};

fn walk(dir: &Path, found: &mut Vec<(String, u32, bool)>) {
    let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
    found.push((dir.display().to_string(), mode, true));
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, found);
        } else {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            found.push((path.display().to_string(), mode, false));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_file_under_a_data_directory_is_private() {
    let tuning = Tuning {
        snapshot_threshold: 5,
        keep_logs_after_snapshot: 2,
        ..Tuning::default()
    };
    let cluster = Cluster::start_with(1, tuning).await;
    let client = cluster.client();
    for i in 0..12 {
        assert!(client
            .kv_put(&format!("mode/{i}"), b"v", 0, None)
            .await
            .unwrap());
    }
    cluster.wait_for_snapshot(1).await;
    let mut found = Vec::new();
    walk(&cluster.replica(1).data_dir, &mut found);
    assert!(
        found.iter().filter(|(_, _, dir)| !dir).count() >= 3,
        "expected log, meta and snapshot files: {found:?}"
    );
    let wrong: Vec<_> = found
        .iter()
        .filter(|(_, mode, dir)| *mode != if *dir { 0o700 } else { 0o600 })
        .collect();
    assert!(wrong.is_empty(), "not private: {wrong:?}");
}
