//! A Consul client library that raftvisor did not write (py-consul) drives
//! the KV API of a live cluster through a follower, authenticated with the
//! token py-consul sends as Consul's `X-Consul-Token`: plain KV, then
//! sessions, locks and transactions.

use std::process::Command;

use crate::harness::{Cluster, ADMIN_TOKEN};

/// Runs `tests/consul/<script>` against a follower of a new three-replica
/// cluster with `HOST PORT PREFIX CA TOKEN` and expects it to succeed.
async fn run_against_a_follower(script: &str, prefix: &str) {
    let probe = Command::new("python3")
        .args(["-c", "import consul"])
        .output();
    let available = probe.as_ref().is_ok_and(|o| o.status.success());
    assert!(
        available,
        "python3 with py-consul is required (python3 -m pip install py-consul; scripts/test.sh installs it): {probe:?}"
    );
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let addr = cluster.replica(follower).api_addr.clone();
    let (host, port) = addr.split_once(':').unwrap();
    let script = format!("{}/tests/consul/{script}", env!("CARGO_MANIFEST_DIR"));
    let ca = cluster.certs.ca.display().to_string();
    let output = tokio::task::spawn_blocking({
        let (host, port, prefix) = (host.to_string(), port.to_string(), prefix.to_string());
        move || {
            Command::new("python3")
                .args([&script, &host, &port, &prefix, &ca, ADMIN_TOKEN])
                .output()
                .expect("run python3")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "py-consul run failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all expectations held"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn py_consul_drives_the_kv_api() {
    run_against_a_follower("kv_client.py", "pyconsul").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn py_consul_takes_locks_with_sessions_and_transactions() {
    run_against_a_follower("sessions_client.py", "locks").await;
}
