//! Templates of clustered third-party services kept by the cluster: added
//! from a TOML file through the CLI on one replica, listed and shown on
//! another exactly as added, a bad one refused in one line with nothing
//! kept, and removed.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{eventually, Cluster};

const TEMPLATE: &str = r#"# A key-value store, one member per slot.
name = "kv"
description = "a replicated key-value store"
image = "raftvisor-echo:local"
ports = [{ name = "client", container_port = 8080 }]
volumes = [{ name = "data", mount = "/data" }]

[commands]
seed = ["sh", "-c", "exec /raftvisor-echo"]
join = ["sh", "-c", "exec /raftvisor-echo"]
check = ["sh", "-c", "test -d /data"]
leave = ["true"]
"#;

#[tokio::test(flavor = "multi_thread")]
async fn templates_are_added_shown_as_written_refused_when_bad_and_removed() {
    let cluster = Cluster::start(3).await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("kv.toml");
    std::fs::write(&good, TEMPLATE).unwrap();
    let (code, out, err) = cluster.cli(1, &["template", "add", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("template kv added"), "{out}");

    // Another replica lists it and shows the very text that was added.
    let (code, out, err) = eventually("replica 2 lists it", Duration::from_secs(10), || async {
        match cluster.cli(2, &["--output", "json", "template", "ls"]) {
            (0, out, err) if out.contains("\"kv\"") => Ok((0, out, err)),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(code, 0, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["image"], "raftvisor-echo:local", "{listed}");
    assert_eq!(listed[0]["description"], "a replicated key-value store");
    let (code, out, err) = cluster.cli(3, &["template", "show", "kv"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim_end(), TEMPLATE.trim_end());

    // A bad template: one line, exit 2, nothing kept.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        TEMPLATE.replace("check = [\"sh\", \"-c\", \"test -d /data\"]", "check = []"),
    )
    .unwrap();
    let (code, _, err) = cluster.cli(1, &["template", "add", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("commands.check names no program"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // The API refuses one whose name is not its path's.
    let other = cluster
        .client()
        .template_put("other", TEMPLATE)
        .await
        .unwrap_err()
        .to_string();
    assert!(other.contains("named \"kv\""), "{other}");
    let (_, out, _) = cluster.cli(1, &["--output", "json", "template", "ls"]);
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");

    let (code, _, err) = cluster.cli(1, &["template", "rm", "kv"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cluster.cli(1, &["template", "show", "kv"]);
    assert_eq!(code, 3, "{err}");
}
