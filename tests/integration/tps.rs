//! A clustered third-party service from a shipped template, on real etcd
//! (Debian's etcd-server in a FROM-scratch image): `tps create --size 3`
//! makes the seed then each member in turn; a key written through one
//! member is read through another; resized to 5, then back to 3 (refused
//! without --force, the members leave with it); a member's container
//! killed comes back with its volume and the cluster stays healthy; `tps
//! rm` keeps the volumes and a new `tps create` of the same name finds the
//! data again. And Redis (Debian's redis-server): a replica serves what
//! the primary was given.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use raftvisor::state::NodeSpec;

use crate::docker_env::{crash, DockerCluster, LOCAL_ENGINE};
use crate::harness::eventually;

/// The address containers reach the host's published ports at (the
/// engine's default bridge).
fn bridge_address() -> String {
    let output = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "docker0"])
        .output()
        .expect("run ip");
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .skip_while(|word| *word != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .expect("docker0 has an IPv4 address")
        .to_string()
}

/// Registers the local engine as node n1 (published ports reached at the
/// bridge's address) and adds the shipped template `name`.
async fn add_node_and_template(env: &DockerCluster, name: &str) {
    let spec = NodeSpec {
        provider: "static".into(),
        docker_endpoint: LOCAL_ENGINE.into(),
        address: Some(bridge_address()),
        region: Some("local".into()),
        zone: Some("a".into()),
        labels: BTreeMap::new(),
        capacity: Default::default(),
        docker_tls: None,
    };
    env.cluster.client().node_put("n1", &spec).await.unwrap();
    let template = format!(
        "{}/cluster-config/templates/{name}.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let (code, _, err) = env.cluster.cli(1, &["template", "add", &template]);
    assert_eq!(code, 0, "{err}");
}

/// `PROGRAM ARGS` inside `container`: its stdout, or its stderr.
fn exec(container: &str, program: &[&str], args: &[&str]) -> Result<String, String> {
    let output = Command::new("docker")
        .arg("exec")
        .arg(container)
        .args(program)
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}

/// `etcdctl ARGS` inside `container`: its stdout, or its stderr.
fn etcdctl(container: &str, args: &[&str]) -> Result<String, String> {
    exec(
        container,
        &["etcdctl", "--endpoints", "http://127.0.0.1:2379"],
        args,
    )
}

/// The running container of member `k` of tps `name`.
async fn member(env: &DockerCluster, name: &str, k: u32) -> raftvisor::runtime::ContainerInfo {
    let service = format!("{name}-{k}");
    env.wait_running(&service, 1, Duration::from_secs(60)).await[0].clone()
}

/// How many started members member 0 sees.
fn started_members(container: &str) -> Result<usize, String> {
    let list = etcdctl(container, &["member", "list"])?;
    Ok(list.lines().filter(|l| l.contains(", started, ")).count())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_etcd_tps_is_created_resized_survives_a_kill_and_comes_back_from_its_volumes() {
    let Some(env) = DockerCluster::start(3).await else {
        return;
    };
    add_node_and_template(&env, "etcd").await;

    let (code, out, err) = env.cluster.cli(
        1,
        &["tps", "create", "kv", "--template", "etcd", "--size", "3"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("3 member(s)"), "{out}");
    let m0 = member(&env, "kv", 0).await;
    let m2 = member(&env, "kv", 2).await;
    assert_eq!(started_members(&m0.name), Ok(3));
    etcdctl(&m0.name, &["put", "greeting", "hello"]).unwrap();
    assert_eq!(
        etcdctl(&m2.name, &["get", "greeting", "--print-value-only"]),
        Ok("hello".to_string())
    );

    // Grown to five, one member at a time.
    let (code, _, err) = env.cluster.cli(1, &["tps", "resize", "kv", "5"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(started_members(&m0.name), Ok(5));
    // Back to three: refused while it holds data, then forced.
    let (code, _, err) = env.cluster.cli(1, &["tps", "resize", "kv", "3"]);
    assert_ne!(code, 0);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(started_members(&m0.name), Ok(5), "nothing changed");
    let (code, _, err) = env.cluster.cli(1, &["tps", "resize", "kv", "3", "--force"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(started_members(&m0.name), Ok(3), "the two left the cluster");

    // A member's process killed: restarted in its container, with its data.
    let m1 = member(&env, "kv", 1).await;
    crash(&m1);
    env.wait_restarted(&m1, "member kv-1").await;
    let value = eventually("kv-1 serves again", Duration::from_secs(30), || async {
        etcdctl(&m1.name, &["get", "greeting", "--print-value-only"])
    })
    .await;
    assert_eq!(value, "hello");
    eventually(
        "the cluster is healthy",
        Duration::from_secs(30),
        || async {
            match started_members(&m0.name)? {
                3 => etcdctl(&m0.name, &["endpoint", "health", "--cluster"]).map(drop),
                n => Err(format!("{n} started")),
            }
        },
    )
    .await;

    // Removed: the volumes stay; created again: the data is there.
    let (code, _, err) = env.cluster.cli(1, &["tps", "rm", "kv"]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = env.cluster.cli(
        1,
        &["--output", "json", "volume", "ls", "--namespace", "tps"],
    );
    let volumes: serde_json::Value = serde_json::from_str(&out).unwrap();
    let kept = volumes
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["state"] == "kept")
        .count();
    assert!(kept >= 3, "{volumes}");
    let (code, _, err) = env.cluster.cli(
        1,
        &[
            "tps",
            "create",
            "kv",
            "--template",
            "etcd",
            "--size",
            "3",
            "--timeout",
            "60s",
        ],
    );
    if code != 0 {
        let events = env.cluster.client().events(0).await.unwrap();
        for e in events.iter().filter(|e| e.subject.contains("kv-0")) {
            eprintln!("EVENT {} {} {}", e.kind, e.subject, e.message);
        }
    }
    assert_eq!(code, 0, "{err}");
    let m0 = member(&env, "kv", 0).await;
    let value = eventually("the data is back", Duration::from_secs(30), || async {
        etcdctl(&m0.name, &["get", "greeting", "--print-value-only"])
    })
    .await;
    assert_eq!(value, "hello");
}

/// `redis-cli ARGS` inside `container`.
fn redis_cli(container: &str, args: &[&str]) -> Result<String, String> {
    exec(container, &["redis-cli", "-p", "6379"], args)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_replica_serves_what_the_primary_was_given() {
    let Some(env) = DockerCluster::start(3).await else {
        return;
    };
    add_node_and_template(&env, "redis").await;
    let (code, out, err) = env.cluster.cli(
        1,
        &[
            "tps",
            "create",
            "cache",
            "--template",
            "redis",
            "--size",
            "3",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("3 member(s)"), "{out}");
    let primary = member(&env, "cache", 0).await;
    let replica = member(&env, "cache", 2).await;
    let roles = redis_cli(&primary.name, &["info", "replication"]).unwrap();
    assert!(roles.contains("role:master"), "{roles}");
    assert!(roles.contains("connected_slaves:2"), "{roles}");

    assert_eq!(
        redis_cli(&primary.name, &["set", "greeting", "hello"]),
        Ok("OK".to_string())
    );
    let value = eventually(
        "the replica has the key",
        Duration::from_secs(30),
        || async {
            match redis_cli(&replica.name, &["get", "greeting"])? {
                value if value.is_empty() => Err("not yet".to_string()),
                value => Ok(value),
            }
        },
    )
    .await;
    assert_eq!(value, "hello");
    let refused = redis_cli(&replica.name, &["set", "greeting", "bye"]).unwrap();
    assert!(
        refused.contains("READONLY"),
        "a replica takes no writes: {refused}"
    );

    // The primary's process killed: restarted with its append-only file,
    // the replicas follow it again.
    crash(&primary);
    env.wait_restarted(&primary, "the primary").await;
    redis_cli(&primary.name, &["set", "after", "restart"]).unwrap_or_default();
    let value = eventually(
        "the replica follows again",
        Duration::from_secs(60),
        || async {
            let greeting = redis_cli(&replica.name, &["get", "greeting"])?;
            match redis_cli(&replica.name, &["get", "after"])? {
                after if after == "restart" => Ok(greeting),
                _ => {
                    // Written again: the primary may have answered before it
                    // had loaded its file.
                    redis_cli(&primary.name, &["set", "after", "restart"])?;
                    Err("not yet".to_string())
                }
            }
        },
    )
    .await;
    assert_eq!(value, "hello", "the primary came back with its data");

    let (code, _, err) = env.cluster.cli(1, &["tps", "rm", "cache"]);
    assert_eq!(code, 0, "{err}");
}
