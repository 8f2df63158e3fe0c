//! Fixed host ports on real containers: a slot publishes the port its spec
//! names on its node and knows its node's address from its env; a
//! replacement on the same node starts once the container before it let
//! go of the port; a second slot finds no node with the port free.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::docker_env::{echo_spec, DockerCluster, LOCAL_ENGINE};
use crate::harness::eventually;

/// A TCP port nothing on loopback listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What the echo server on `port` of loopback answers.
async fn answer(port: u16) -> Result<serde_json::Value, String> {
    reqwest::get(format!("http://127.0.0.1:{port}/"))
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fixed_host_port_is_published_kept_across_a_replacement_and_held_once_per_node() {
    let Some(env) = DockerCluster::start(3).await else {
        return;
    };
    env.add_node("n1", LOCAL_ENGINE, "a").await;
    let port = free_port();
    let spec = |replicas: u32, version: &str| {
        echo_spec(
            replicas,
            json!({
                "env": {"VERSION": version},
                "ports": [{"name": "http", "container_port": 8080, "host_port": port}],
            }),
        )
    };
    let client = env.cluster.client();
    client
        .service_put("fx", "web", &spec(1, "one"), None)
        .await
        .unwrap();
    let first = env.wait_running("web", 1, Duration::from_secs(30)).await[0].clone();
    assert!(
        first
            .ports
            .contains(&(8080, raftvisor::state::Protocol::Tcp, port)),
        "{:?}",
        first.ports
    );
    let said = eventually("the fixed port answers", Duration::from_secs(10), || {
        answer(port)
    })
    .await;
    assert_eq!(said["instance"], "fx.web.0", "{said}");
    let env_of = |name: &str| {
        let output = Command::new("docker")
            .args(["exec", name, "env"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    assert!(
        env_of(&first.name).contains("RAFTVISOR_NODE_ADDRESS=127.0.0.1"),
        "{}",
        env_of(&first.name)
    );

    // A new version on the same node: it starts once the old container is
    // gone (no failed start on a taken port).
    client
        .service_put("fx", "web", &spec(1, "two"), None)
        .await
        .unwrap();
    let second = eventually("the new version runs", Duration::from_secs(30), || async {
        match env.running("web").await.as_slice() {
            [only] if only.id != first.id => Ok(only.clone()),
            other => Err(format!("{} running", other.len())),
        }
    })
    .await;
    assert!(env_of(&second.name).contains("VERSION=two"));
    eventually(
        "the fixed port answers again",
        Duration::from_secs(10),
        || answer(port),
    )
    .await;
    let report = client.service_report("fx", "web").await.unwrap();
    assert!(
        report.last_exits.is_empty() && report.crash_looping == 0,
        "no start failed on the taken port: {report:?}"
    );

    // A second slot: the only node holds the port already.
    client.service_scale("fx", "web", 2).await.unwrap();
    eventually(
        "the second slot is unplaceable",
        Duration::from_secs(30),
        || async {
            let events = client.events(0).await.map_err(|e| e.to_string())?;
            events
                .iter()
                .find(|e| e.kind == "instance.unplaceable" && e.message.starts_with("slot 1"))
                .map(|_| ())
                .ok_or_else(|| "no such event yet".to_string())
        },
    )
    .await;
    assert_eq!(env.running("web").await.len(), 1);
}
