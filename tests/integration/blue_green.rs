//! Blue-green releases on real containers: the release's DNS name answers
//! as the entry of its live environment; `release switch` moves it in one
//! write, and a follower resolving all the while sees one environment or
//! the other, never a mix and never nothing; a switch to an environment
//! whose entry runs nowhere is refused and changes nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use serde_json::{json, Value};

use crate::dns::query;
use crate::docker_env::{echo_spec, DockerCluster, LOCAL_ENGINE};
use crate::harness::eventually;

const NAME: &str = "_http._tcp.shop.release.cluster.local.";

/// When an answer came, which environment it was, and its ports.
type Answers = Arc<Mutex<Vec<(Instant, &'static str, Vec<u16>)>>>;

/// The published ports of `namespace`'s running `web` instances.
async fn ports_of(env: &DockerCluster, namespace: &str) -> Vec<u16> {
    eventually(
        &format!("two instances of {namespace}/web run"),
        Duration::from_secs(60),
        || async {
            let instances = env
                .cluster
                .client()
                .service_instances(namespace, "web")
                .await
                .map_err(|e| e.to_string())?;
            let mut ports: Vec<u16> = instances
                .iter()
                .filter(|i| i.state == raftvisor::state::InstanceState::Running)
                .filter_map(|i| i.ports.first().map(|p| p.host_port))
                .collect();
            ports.sort();
            if ports.len() == 2 {
                Ok(ports)
            } else {
                Err(format!("{instances:?}"))
            }
        },
    )
    .await
}

async fn srv_ports(server: &str) -> Vec<u16> {
    let answer = query(server, NAME, RecordType::SRV, false).await;
    crate::dns::srv_ports(&answer).iter().map(|p| p.0).collect()
}

fn release_json(env: &DockerCluster, args: &[&str]) -> Result<Value, String> {
    let mut all = vec!["--output", "json", "release"];
    all.extend_from_slice(args);
    let (code, out, err) = env.cluster.cli(1, &all);
    if code != 0 {
        return Err(err);
    }
    Ok(serde_json::from_str(&out).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_switch_moves_the_release_name_at_once_and_never_answers_a_mix() {
    let Some(env) = DockerCluster::start(3).await else {
        return;
    };
    env.add_node("n1", LOCAL_ENGINE, "a").await;
    let client = env.cluster.client();
    for (namespace, version) in [("bg-blue", "blue"), ("bg-green", "green")] {
        let spec = echo_spec(2, json!({"env": {"VERSION": version}}));
        client
            .service_put(namespace, "web", &spec, None)
            .await
            .unwrap();
    }
    let blue = ports_of(&env, "bg-blue").await;
    let green = ports_of(&env, "bg-green").await;

    // Bad input first: one line, exit 1, nothing made.
    let (code, _, err) = env.cluster.cli(
        1,
        &[
            "release", "create", "shop", "--entry", "web", "--blue", "bg-blue", "--green",
            "bg-blue",
        ],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("two namespaces") && err.trim().lines().count() == 1,
        "{err}"
    );
    let created = release_json(
        &env,
        &[
            "create", "shop", "--entry", "web", "--blue", "bg-blue", "--green", "bg-green",
        ],
    )
    .unwrap();
    assert_eq!(created["live"], "blue", "{created}");
    assert_eq!(created["dns_name"], "shop.release.cluster.local");

    // Resolve on a follower.
    let status = env.cluster.status_of(1).await.unwrap();
    let leader = status.leader_id.expect("a leader");
    let follower = (1..=3u64).find(|id| *id != leader).unwrap();
    let server = env.cluster.replica(follower).dns_addr.clone();
    eventually(
        "the follower answers blue",
        Duration::from_secs(20),
        || async {
            match srv_ports(&server).await {
                ports if ports == blue => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;

    // A resolver asks the follower without pause while the release is
    // switched to green and back; every answer is classified.
    let stop = Arc::new(AtomicBool::new(false));
    let answers: Answers = Arc::default();
    let resolver = {
        let (stop, answers, server) = (stop.clone(), answers.clone(), server.clone());
        let (blue, green) = (blue.clone(), green.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            for _ in 0..200_000 {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                let ports = srv_ports(&server).await;
                let class = if ports == blue {
                    "blue"
                } else if ports == green {
                    "green"
                } else {
                    "other"
                };
                answers.lock().unwrap().push((Instant::now(), class, ports));
            }
        })
    };
    let seen = |class: &'static str, after: Instant| {
        let answers = answers.clone();
        move || {
            let answers = answers.clone();
            async move {
                answers
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|(at, c, _)| *c == class && *at >= after)
                    .map(|(at, _, _)| *at)
                    .ok_or_else(|| format!("no {class} answer yet"))
            }
        }
    };
    let switch_body = raftvisor::wire::SwitchBody::default();
    let sent = Instant::now();
    let switched = client.release_switch("shop", &switch_body).await.unwrap();
    let acked = Instant::now();
    assert_eq!(switched.live, "green");
    let first_green = eventually(
        "the follower answers green",
        Duration::from_secs(10),
        seen("green", sent),
    )
    .await;
    let back_sent = Instant::now();
    let (code, out, err) = env.cluster.cli(
        1,
        &["--output", "json", "release", "switch", "shop", "--back"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["live"], "blue");
    eventually(
        "the follower answers blue again",
        Duration::from_secs(10),
        seen("blue", back_sent),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    resolver.await.unwrap();
    let answers = answers.lock().unwrap().clone();
    let others: Vec<_> = answers.iter().filter(|(_, c, _)| *c == "other").collect();
    assert!(
        others.is_empty(),
        "answers of neither environment: {others:?}"
    );
    // Once green answered, blue does not come back before the switch back.
    assert!(
        !answers
            .iter()
            .any(|(at, c, _)| *c == "blue" && *at > first_green && *at < back_sent),
        "blue answered after green and before the switch back"
    );
    eprintln!(
        "release switch: {} answers on follower {follower}; write acknowledged after {:?}, \
         the follower answered green {:?} after sending it ({:?} after the acknowledgement)",
        answers.len(),
        acked - sent,
        first_green - sent,
        first_green.saturating_duration_since(acked),
    );

    // Green's entry stops: a switch there is refused and blue stays live.
    let stopped = raftvisor::state::ServiceSpec {
        replicas: 0,
        ..echo_spec(2, json!({"env": {"VERSION": "green"}}))
    };
    client
        .service_put("bg-green", "web", &stopped, None)
        .await
        .unwrap();
    eventually(
        "green's entry runs nowhere",
        Duration::from_secs(60),
        || async {
            let shown = release_json(&env, &["show", "shop"])?;
            match shown["green"]["entry_running"].as_u64() {
                Some(0) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let (code, _, err) = env.cluster.cli(1, &["release", "switch", "shop"]);
    assert_ne!(code, 0);
    assert!(err.contains("no running instance"), "{err}");
    let shown = release_json(&env, &["show", "shop"]).unwrap();
    assert_eq!(shown["live"], "blue", "{shown}");
    let switches = shown["switches"].as_array().unwrap();
    assert_eq!(switches.len(), 2, "{shown}");
    assert_eq!(switches[1]["back"], true);
    assert_eq!(srv_ports(&server).await, blue);
    let listed = release_json(&env, &["ls"]).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    release_json(&env, &["rm", "shop"]).unwrap();
    // The follower answers from its own copy, which applies the removal
    // a moment after the replica that took the write.
    eventually(
        "the follower no longer answers the release's name",
        Duration::from_secs(10),
        || async {
            match query(&server, NAME, RecordType::SRV, false)
                .await
                .answers
                .len()
            {
                0 => Ok(()),
                n => Err(format!("{n} answers")),
            }
        },
    )
    .await;
}
