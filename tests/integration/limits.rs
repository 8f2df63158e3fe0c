//! Size limits and quotas over HTTP (400 / 413 / 409 naming the limit,
//! and nothing already stored is lost), health-check rules at deploy,
//! unique instance ids for services whose names collide when joined with
//! `-`, and `node rm` that refuses a node with instances unless forced —
//! then its instances move and its containers are removed.

use std::time::Duration;

use raftvisor::client::ClientError;
use raftvisor::runtime::ContainerRuntime;
use raftvisor::state::{NodeState, ServiceSpec};
use serde_json::json;

use crate::docker_env::{self, DockerCluster, ECHO_IMAGE, LOCAL_ENGINE};
use crate::harness::{eventually, Cluster, Tuning};

fn spec(json: serde_json::Value) -> ServiceSpec {
    serde_json::from_value(json).unwrap()
}

fn api_error(result: Result<impl std::fmt::Debug, ClientError>) -> (u16, String, String) {
    match result {
        Err(ClientError::Api {
            status,
            code,
            message,
            ..
        }) => (status, code, message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sizes_and_quotas_are_refused_with_the_limit_named_and_nothing_is_lost() {
    let tuning = Tuning {
        extra_toml: "[limits]\nmax_services = 2\nmax_kv_keys = 2\nmax_kv_value_bytes = 1000\n"
            .into(),
        ..Tuning::default()
    };
    let mut cluster = Cluster::start_with(3, tuning).await;
    cluster.wait_for_leader().await;
    let client = cluster.client();
    let echo = |image: &str| spec(json!({"image": image, "replicas": 0}));

    // A size limit: 400, code limit_exceeded, the limit named.
    let (status, code, message) = api_error(
        client
            .service_put("lim", "big", &echo(&"i".repeat(600)), None)
            .await,
    );
    assert_eq!(
        (status, code.as_str()),
        (400, "limit_exceeded"),
        "{message}"
    );
    assert!(message.contains("max_image_bytes"), "{message}");

    // Health checks: an absolute path only, a timeout within the interval.
    let with_health = |health: serde_json::Value| {
        spec(json!({
            "image": ECHO_IMAGE, "replicas": 0,
            "ports": [{"name": "http", "container_port": 8080}],
            "health": health,
        }))
    };
    let (status, _, message) = api_error(
        client
            .service_put(
                "lim",
                "ssrf",
                &with_health(json!({"port": "http", "path": "@127.0.0.1:2375/"})),
                None,
            )
            .await,
    );
    assert_eq!(status, 400, "{message}");
    assert!(message.contains("health.path"), "{message}");
    let (status, _, message) = api_error(
        client
            .service_put(
                "lim",
                "slow",
                &with_health(json!({"port": "http", "interval_ms": 1000, "timeout_ms": 600000})),
                None,
            )
            .await,
    );
    assert_eq!(status, 400, "{message}");
    assert!(message.contains("health.timeout_ms"), "{message}");

    // The service quota: 409 quota_exceeded naming max_services.
    for name in ["a", "b"] {
        client
            .service_put("lim", name, &echo("e"), None)
            .await
            .unwrap();
    }
    let (status, code, message) = api_error(client.service_put("lim", "c", &echo("e"), None).await);
    assert_eq!(
        (status, code.as_str()),
        (409, "quota_exceeded"),
        "{message}"
    );
    assert!(message.contains("max_services"), "{message}");
    // An update of a service that exists is no new service.
    client
        .service_put("lim", "a", &echo("e2"), None)
        .await
        .unwrap();

    // KV: a value over the limit is 413 naming max_kv_value_bytes; the key
    // quota is 409 naming max_kv_keys.
    let http = cluster.http();
    let url = |key: &str| format!("{}/v1/kv/{key}", cluster.api_url(1));
    for key in ["k1", "k2"] {
        let r = http.put(url(key)).body("v").send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = http
        .put(url("k1"))
        .body(vec![b'x'; 1001])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "too_large", "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("max_kv_value_bytes"),
        "{body}"
    );
    let r = http.put(url("k3")).body("v").send().await.unwrap();
    assert_eq!(r.status(), 409);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "quota_exceeded", "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("max_kv_keys"),
        "{body}"
    );

    // Nothing already stored was lost or changed by the refusals.
    let services = client.service_list().await.unwrap();
    let mut names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(
        services.iter().find(|s| s.name == "a").unwrap().spec.image,
        "e2"
    );
    for key in ["k1", "k2"] {
        let r = http.get(format!("{}?raw", url(key))).send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), "v");
    }
    assert_eq!(http.get(url("k3")).send().await.unwrap().status(), 404);
}

fn echo_spec(replicas: u32) -> ServiceSpec {
    docker_env::echo_spec(replicas, json!({}))
}

#[tokio::test(flavor = "multi_thread")]
async fn services_x_y_z_and_x_y_z_run_side_by_side_with_their_own_containers() {
    let Some(env) = DockerCluster::start(3).await else {
        return;
    };
    env.add_node("local", LOCAL_ENGINE, "a").await;
    let client = env.cluster.client();
    // Joined with '-', both would be "x-y-z": their ids and container
    // names used to collide, and the two took each other's slots.
    client
        .service_put("x-y", "z", &echo_spec(2), None)
        .await
        .unwrap();
    client
        .service_put("x", "y-z", &echo_spec(2), None)
        .await
        .unwrap();
    let first_z = env.wait_running("z", 2, Duration::from_secs(30)).await;
    let first_yz = env.wait_running("y-z", 2, Duration::from_secs(30)).await;
    for (containers, namespace) in [(&first_z, "x-y"), (&first_yz, "x")] {
        for c in containers.iter() {
            assert_eq!(
                c.labels.get("raftvisor.namespace").map(String::as_str),
                Some(namespace),
                "{c:?}"
            );
        }
    }
    // Stable: the same containers keep running; nobody takes them over.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ids = |v: &[raftvisor::runtime::ContainerInfo]| {
        let mut ids: Vec<String> = v.iter().map(|c| c.id.clone()).collect();
        ids.sort();
        ids
    };
    assert_eq!(
        ids(&env.wait_running("z", 2, Duration::from_secs(5)).await),
        ids(&first_z)
    );
    assert_eq!(
        ids(&env.wait_running("y-z", 2, Duration::from_secs(5)).await),
        ids(&first_yz)
    );
    let a = client.service_instances("x-y", "z").await.unwrap();
    let b = client.service_instances("x", "y-z").await.unwrap();
    assert_eq!((a.len(), b.len()), (2, 2), "{a:?} {b:?}");
    assert!(a.iter().all(|i| i.namespace == "x-y" && i.service == "z"));
    assert!(b.iter().all(|i| i.namespace == "x" && i.service == "y-z"));
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_a_node_with_instances_needs_force_and_then_moves_them() {
    let Some(env) = DockerCluster::start(3).await else {
        return;
    };
    let proxy = crate::docker_env::EngineProxy::start().await;
    env.add_node("n1", LOCAL_ENGINE, "a").await;
    env.add_node("n2", &proxy.endpoint(), "b").await;
    let client = env.cluster.client();
    client
        .service_put("rm", "echo", &echo_spec(4), None)
        .await
        .unwrap();
    let running = env.wait_running("echo", 4, Duration::from_secs(30)).await;
    let on = |node: &str, all: &[raftvisor::runtime::ContainerInfo]| {
        all.iter()
            .filter(|c| c.labels.get("raftvisor.node").map(String::as_str) == Some(node))
            .count()
    };
    assert_eq!(on("n1", &running), 2);

    // Without force: 409 node_not_drained, and nothing changes.
    let (status, code, message) = api_error(client.node_remove("n1", false).await);
    assert_eq!(
        (status, code.as_str()),
        (409, "node_not_drained"),
        "{message}"
    );
    let (exit, _, stderr) = env.cluster.cli(1, &["node", "rm", "n1"]);
    assert_ne!(exit, 0, "the CLI fails too");
    assert!(stderr.contains("node_not_drained"), "{stderr}");
    assert_eq!(client.node_get("n1").await.unwrap().state, NodeState::Ready);

    // With force (the CLI's --force): retired, instances move, the old
    // containers are removed, then the node itself.
    let (exit, stdout, stderr) = env.cluster.cli(1, &["node", "rm", "n1", "--force"]);
    assert_eq!(exit, 0, "{stdout} {stderr}");
    eventually(
        "every instance runs on n2, n1 holds no container and is gone",
        Duration::from_secs(40),
        || async {
            let all = env.containers(Some("echo")).await;
            let n1 = on("n1", &all);
            let n2 = all
                .iter()
                .filter(|c| {
                    c.state == raftvisor::runtime::ContainerState::Running
                        && c.labels.get("raftvisor.node").map(String::as_str) == Some("n2")
                })
                .count();
            let nodes = client.node_list().await.map_err(|e| e.to_string())?;
            let n1_listed = nodes.iter().any(|n| n.name == "n1");
            if n1 == 0 && n2 == 4 && !n1_listed {
                Ok(())
            } else {
                Err(format!(
                    "n1 containers {n1}, n2 running {n2}, n1 listed {n1_listed}"
                ))
            }
        },
    )
    .await;
    let instances = client.service_instances("rm", "echo").await.unwrap();
    assert!(
        instances.iter().all(|i| i.node.as_deref() == Some("n2")),
        "{instances:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_container_under_an_instances_name_is_not_adopted() {
    let Some(env) = DockerCluster::start(3).await else {
        return;
    };
    env.add_node("local", LOCAL_ENGINE, "a").await;
    // A container that is not the instance's holds the name its first
    // generation will want. It carries only the cluster label (so the
    // harness removes it at the end), not the instance's.
    let name = format!("rv-{}-fc.echo.0-1", env.cluster_id);
    let created = std::process::Command::new("docker")
        .args(["create", "--name", &name, "--label"])
        .arg(format!("raftvisor.cluster={}", env.cluster_id))
        .arg(ECHO_IMAGE)
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let foreign = String::from_utf8_lossy(&created.stdout).trim().to_string();
    let client = env.cluster.client();
    client
        .service_put("fc", "echo", &echo_spec(1), None)
        .await
        .unwrap();
    let instance = eventually(
        "the instance reports the name conflict",
        Duration::from_secs(30),
        || async {
            let instances = client
                .service_instances("fc", "echo")
                .await
                .map_err(|e| e.to_string())?;
            match instances.first() {
                Some(i)
                    if i.last_exit
                        .as_ref()
                        .is_some_and(|x| x.reason.contains("is taken by container")) =>
                {
                    Ok(i.clone())
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert_eq!(instance.container_id, None, "{instance:?}");
    // The foreign container is left as it was: not adopted, started or removed.
    let info = env
        .engine
        .inspect(&foreign)
        .await
        .unwrap()
        .expect("still there");
    assert_eq!(info.state, raftvisor::runtime::ContainerState::Created);
}
