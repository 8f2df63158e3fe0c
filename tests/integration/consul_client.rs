//! A Consul client library that raftvisor did not write (py-consul) drives
//! the KV API of a live cluster through a follower, authenticated with the
//! token py-consul sends as Consul's `X-Consul-Token`.

use std::process::Command;

use crate::harness::{Cluster, ADMIN_TOKEN};

#[tokio::test(flavor = "multi_thread")]
async fn py_consul_drives_the_kv_api() {
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
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/consul/kv_client.py");
    let ca = cluster.certs.ca.display().to_string();
    let output = tokio::task::spawn_blocking({
        let (host, port) = (host.to_string(), port.to_string());
        move || {
            Command::new("python3")
                .args([script, &host, &port, "pyconsul", &ca, ADMIN_TOKEN])
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
