//! Volumes bound to slots, on real containers: a slot's named volume
//! outlives its container (a replacement finds the data), and a slot whose
//! data is local to its node waits for that node instead of starting empty
//! elsewhere.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::docker_env::{echo_spec, DockerCluster, EngineProxy, LOCAL_ENGINE};
use crate::harness::eventually;

/// What the echo instance behind `container` answers (its published port
/// on loopback).
async fn echo_answer(container: &raftvisor::runtime::ContainerInfo) -> Result<Value, String> {
    let port = container
        .ports
        .iter()
        .find(|(inner, _, _)| *inner == 8080)
        .map(|(_, _, host)| *host)
        .ok_or("no published port")?;
    reqwest::get(format!("http://127.0.0.1:{port}/"))
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())
}

fn volume_labels(name: &str) -> Option<Value> {
    let output = Command::new("docker")
        .args(["volume", "inspect", "--format", "{{json .Labels}}", name])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| serde_json::from_slice(&output.stdout).ok())
        .flatten()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slot_keeps_its_volume_across_containers_and_waits_for_its_lost_node() {
    let Some(env) = DockerCluster::start(3).await else {
        return;
    };
    let mut proxy = EngineProxy::start().await;
    env.add_node("n1", &proxy.endpoint(), "a").await;
    let client = env.cluster.client();
    let spec = echo_spec(
        1,
        json!({
            "env": {"ECHO_STATE_DIR": "/data"},
            "volumes": [{"name": "data", "mount": "/data"}],
        }),
    );
    client
        .service_put("vol", "store", &spec, None)
        .await
        .unwrap();
    let first = env.wait_running("store", 1, Duration::from_secs(30)).await[0].clone();
    let answer = eventually(
        "the first container answers",
        Duration::from_secs(10),
        || echo_answer(&first),
    )
    .await;
    assert_eq!(answer["starts"], 1, "{answer}");

    // The slot's volume, named and labelled as the README says.
    let volume = format!("rv-{}-vol.store.0-data", env.cluster_id);
    let labels = volume_labels(&volume).unwrap_or_else(|| panic!("volume {volume} exists"));
    assert_eq!(labels["raftvisor.volume"], "data", "{labels}");
    assert_eq!(labels["raftvisor.node"], "n1", "{labels}");

    // The container is removed (its own file system with it): the slot's
    // next container finds the data the first one wrote.
    let removed = Command::new("docker")
        .args(["rm", "-f", &first.id])
        .output()
        .unwrap();
    assert!(removed.status.success());
    let second = eventually(
        "a new container for the slot",
        Duration::from_secs(30),
        || async {
            let running = env.running("store").await;
            match running.first() {
                Some(c) if c.id != first.id => Ok(c.clone()),
                _ => Err("not yet".to_string()),
            }
        },
    )
    .await;
    let answer = eventually(
        "the second container answers",
        Duration::from_secs(10),
        || echo_answer(&second),
    )
    .await;
    assert_eq!(
        answer["starts"], 2,
        "the volume carried the first start: {answer}"
    );

    // Its node is lost while another is ready: the slot waits for it (its
    // data is there), says so, and runs nowhere else.
    env.add_node("n2", LOCAL_ENGINE, "b").await;
    proxy.cut();
    eventually(
        "the slot says it waits for n1",
        Duration::from_secs(30),
        || async {
            let events = client.events(0).await.map_err(|e| e.to_string())?;
            events
                .iter()
                .find(|e| {
                    e.kind == "instance.unplaceable" && e.message.contains("waits for node n1")
                })
                .map(|_| ())
                .ok_or_else(|| "no such event yet".to_string())
        },
    )
    .await;
    assert_eq!(
        client.node_get("n1").await.unwrap().state,
        raftvisor::state::NodeState::Down
    );
    let instances = client.service_instances("vol", "store").await.unwrap();
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0].node.as_deref(), Some("n1"), "{instances:?}");
    let elsewhere: Vec<_> = env
        .containers(Some("store"))
        .await
        .into_iter()
        .filter(|c| c.labels.get("raftvisor.node").map(String::as_str) == Some("n2"))
        .collect();
    assert!(elsewhere.is_empty(), "nothing started on n2: {elsewhere:?}");

    // The node comes back: the slot runs there again, on the same data.
    proxy.resume().await;
    eventually("n1 is ready again", Duration::from_secs(30), || async {
        match client
            .node_get("n1")
            .await
            .map_err(|e| e.to_string())?
            .state
        {
            raftvisor::state::NodeState::Ready => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let back = env.wait_running("store", 1, Duration::from_secs(30)).await[0].clone();
    assert_eq!(back.labels["raftvisor.node"], "n1");
    let answer = eventually("the slot answers again", Duration::from_secs(10), || {
        echo_answer(&back)
    })
    .await;
    assert!(answer["starts"].as_u64().unwrap() >= 2, "{answer}");
}
