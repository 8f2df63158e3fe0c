//! Volumes bound to slots, on real containers: a slot's named volume
//! outlives its container (a replacement finds the data); a slot whose
//! data is local to its node stays with it through a drain and waits for
//! it when it is lost, instead of starting empty elsewhere; a slot on
//! shared storage moves with its data; volumes outlive their service
//! until `volume rm` or `service rm --purge`.

use std::process::Command;
use std::time::Duration;

use raftvisor::runtime::ContainerRuntime;
use serde_json::{json, Value};

use crate::docker_env::{
    crash, echo_spec, shared_volume_driver, DockerCluster, EngineProxy, LOCAL_ENGINE,
};
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

/// Waits until an `instance.unplaceable` event says `text`.
async fn said_unplaceable(client: &raftvisor::client::Client, text: &str) {
    eventually(
        &format!("an event says {text:?}"),
        Duration::from_secs(30),
        || async {
            let events = client.events(0).await.map_err(|e| e.to_string())?;
            events
                .iter()
                .find(|e| e.kind == "instance.unplaceable" && e.message.contains(text))
                .map(|_| ())
                .ok_or_else(|| "no such event yet".to_string())
        },
    )
    .await;
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

    // Its node is drained while another is ready: the slot stays (its data
    // is there), says so, and keeps serving from the same container.
    env.add_node("n2", LOCAL_ENGINE, "b").await;
    client.node_drain("n1", false).await.unwrap();
    said_unplaceable(&client, "waits for node n1 (draining)").await;
    let running = env.running("store").await;
    assert_eq!(
        running.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        vec![second.id.as_str()],
        "the same container serves on n1"
    );
    client.node_drain("n1", true).await.unwrap();

    // Its node is lost: the slot waits for it (its data is there), says
    // so, shows it, and runs nowhere else.
    proxy.cut();
    said_unplaceable(&client, "waits for node n1 (down)").await;
    assert_eq!(
        client.node_get("n1").await.unwrap().state,
        raftvisor::state::NodeState::Down
    );
    let instances = eventually(
        "the instance shows it waits",
        Duration::from_secs(10),
        || async {
            let instances = client
                .service_instances("vol", "store")
                .await
                .map_err(|e| e.to_string())?;
            match instances.first().map(|i| i.state) {
                Some(raftvisor::state::InstanceState::Waiting) => Ok(instances),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
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

/// `raftvisor volume ls` as JSON, as the CLI prints it.
fn volume_ls(env: &DockerCluster) -> Vec<Value> {
    let (code, out, err) = env.cluster.cli(1, &["--output", "json", "volume", "ls"]);
    assert_eq!(code, 0, "volume ls: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slot_on_shared_storage_moves_with_its_data_and_its_volume_outlives_the_service() {
    let Some(env) = DockerCluster::start(3).await else {
        return;
    };
    let driver = shared_volume_driver().await;
    let proxy = EngineProxy::start().await;
    env.add_node("n1", &proxy.endpoint(), "a").await;
    env.add_node("n2", LOCAL_ENGINE, "b").await;
    let client = env.cluster.client();
    let spec = echo_spec(
        1,
        json!({
            "env": {"ECHO_STATE_DIR": "/data"},
            "volumes": [{"name": "data", "mount": "/data", "driver": driver}],
        }),
    );
    client
        .service_put("shr", "store", &spec, None)
        .await
        .unwrap();
    let first = env.wait_running("store", 1, Duration::from_secs(30)).await[0].clone();
    let answer = eventually("the slot answers", Duration::from_secs(10), || {
        echo_answer(&first)
    })
    .await;
    assert_eq!(answer["starts"], 1, "{answer}");

    // Its process is killed: restarted in the same container, same data.
    crash(&first);
    env.wait_restarted(&first, "the slot").await;
    // Its ports are published anew.
    let restarted = env.engine.inspect(&first.id).await.unwrap().unwrap();
    let answer = eventually(
        "the restarted slot answers",
        Duration::from_secs(10),
        || echo_answer(&restarted),
    )
    .await;
    assert_eq!(answer["starts"], 2, "{answer}");

    // Its node is drained: the slot moves, and finds its data there.
    let from = first.labels["raftvisor.node"].clone();
    let to = if from == "n1" { "n2" } else { "n1" };
    client.node_drain(&from, false).await.unwrap();
    let moved = eventually(
        "the slot runs on the other node",
        Duration::from_secs(30),
        || async {
            match env.running("store").await.first() {
                Some(c) if c.labels["raftvisor.node"] == to => Ok(c.clone()),
                other => Err(format!("{:?}", other.map(|c| &c.labels["raftvisor.node"]))),
            }
        },
    )
    .await;
    let answer = eventually("the moved slot answers", Duration::from_secs(10), || {
        echo_answer(&moved)
    })
    .await;
    assert_eq!(
        answer["starts"], 3,
        "the data moved with the slot: {answer}"
    );
    assert!(
        env.containers(Some("store")).await.len() == 1,
        "one container mounts the volume"
    );

    // Listed, used, on both nodes.
    let volume = format!("rv-{}-shr.store.0-data", env.cluster_id);
    let listed = volume_ls(&env);
    let entry = listed
        .iter()
        .find(|v| v["name"] == volume.as_str())
        .unwrap_or_else(|| panic!("{volume} listed: {listed:?}"));
    assert_eq!(entry["state"], "in-use", "{entry}");
    assert_eq!(entry["driver"], driver, "{entry}");
    assert_eq!(entry["nodes"], json!(["n1", "n2"]), "{entry}");
    let (code, _, err) = env.cluster.cli(1, &["volume", "rm", &volume]);
    assert_ne!(code, 0, "a volume in use is not removed");
    assert!(err.contains("slot 0 of shr/store"), "{err}");

    // The service goes; its volume and data stay.
    let (code, _, err) = env.cluster.cli(1, &["service", "rm", "shr/store"]);
    assert_eq!(code, 0, "{err}");
    eventually(
        "its container is removed",
        Duration::from_secs(30),
        || async {
            match env.containers(Some("store")).await.len() {
                0 => Ok(()),
                n => Err(format!("{n} left")),
            }
        },
    )
    .await;
    let listed = volume_ls(&env);
    assert!(
        listed
            .iter()
            .any(|v| v["name"] == volume.as_str() && v["state"] == "kept"),
        "{listed:?}"
    );
    assert!(
        volume_labels(&volume).is_some(),
        "the engine still has {volume}"
    );

    // `volume rm`: gone from the engine, then from the list.
    let (code, _, err) = env.cluster.cli(1, &["volume", "rm", &volume]);
    assert_eq!(code, 0, "{err}");
    eventually("the volume is removed", Duration::from_secs(30), || async {
        let listed = volume_ls(&env);
        match (volume_labels(&volume), listed.is_empty()) {
            (None, true) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // `service rm --purge` takes a service's volumes with it.
    client
        .service_put("shr", "gone", &spec, None)
        .await
        .unwrap();
    env.wait_running("gone", 1, Duration::from_secs(30)).await;
    let gone = format!("rv-{}-shr.gone.0-data", env.cluster_id);
    assert!(volume_labels(&gone).is_some());
    let (code, _, err) = env
        .cluster
        .cli(1, &["service", "rm", "--purge", "shr/gone"]);
    assert_eq!(code, 0, "{err}");
    eventually(
        "the purged volume is removed",
        Duration::from_secs(30),
        || async {
            match (volume_labels(&gone), volume_ls(&env).is_empty()) {
                (None, true) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}
