//! The supervisor against the real Docker engine: deploy, restart after a
//! crash, crash-loop backoff, adoption after a leader change, scaling,
//! start/stop/restart, node loss and return, drain, and clear errors for
//! impossible work.

use std::time::{Duration, Instant};

use raftvisor::runtime::ContainerRuntime;
use raftvisor::state::{InstanceState, RunState, ServiceSpec};
use serde_json::json;

use crate::docker_env::{self, crash, DockerCluster, LOCAL_ENGINE};
use crate::harness::{eventually, Tuning};

fn echo_spec(replicas: u32, extra: serde_json::Value) -> ServiceSpec {
    let mut fields = json!({
        "restart": {"initial_backoff_ms": 200, "max_backoff_ms": 5000, "reset_after_ms": 10000}
    });
    fields
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    docker_env::echo_spec(replicas, fields)
}

#[tokio::test(flavor = "multi_thread")]
async fn deployed_replicas_run_and_a_crashed_container_is_restarted() {
    let Some(env) = DockerCluster::start(3).await else {
        return;
    };
    env.add_node("local", LOCAL_ENGINE, "a").await;
    let client = env.cluster.client();
    client
        .service_put("t1", "echo", &echo_spec(3, json!({})), None)
        .await
        .unwrap();
    let running = env.wait_running("echo", 3, Duration::from_secs(30)).await;
    for container in &running {
        for label in [
            "raftvisor.cluster",
            "raftvisor.namespace",
            "raftvisor.service",
            "raftvisor.instance",
            "raftvisor.slot",
            "raftvisor.generation",
            "raftvisor.node",
            "raftvisor.spec-version",
        ] {
            assert!(
                container.labels.contains_key(label),
                "{} lacks {label}",
                container.name
            );
        }
        // The published port answers (once the server inside is listening).
        let (_, _, host_port) = container.ports[0];
        eventually(
            "the published port answers",
            Duration::from_secs(10),
            || async {
                match reqwest::get(format!("http://127.0.0.1:{host_port}/health")).await {
                    Ok(r) if r.status() == 200 => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    }
    eventually(
        "instances report running with ports",
        Duration::from_secs(10),
        || async {
            let instances = client
                .service_instances("t1", "echo")
                .await
                .map_err(|e| e.to_string())?;
            let ok = instances.len() == 3
                && instances.iter().all(|i| {
                    i.state == InstanceState::Running
                        && i.ports.iter().any(|p| p.name == "http" && p.host_port > 0)
                });
            if ok {
                Ok(())
            } else {
                Err(format!("{instances:?}"))
            }
        },
    )
    .await;

    // A crash: the main process killed from the host.
    let victim = running[0].clone();
    crash(&victim);
    env.wait_restarted(&victim, "the crashed container").await;
    // `docker kill` is a death too for raftvisor (not a manual stop).
    let victim = env.running("echo").await[1].clone();
    std::process::Command::new("docker")
        .args(["kill", &victim.id])
        .output()
        .unwrap();
    env.wait_restarted(&victim, "the killed container").await;
    env.wait_running("echo", 3, Duration::from_secs(10)).await;
    let report = client.service_report("t1", "echo").await.unwrap();
    assert!(report.restarts >= 2, "{report:?}");
    assert!(report.last_exits.len() >= 2, "{report:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_looping_service_backs_off_and_says_so() {
    let Some(env) = DockerCluster::start(3).await else {
        return;
    };
    env.add_node("local", LOCAL_ENGINE, "a").await;
    let client = env.cluster.client();
    let spec = echo_spec(
        1,
        json!({"env": {"ECHO_CRASH_AFTER_MS": "100"}, "restart": {"initial_backoff_ms": 300, "max_backoff_ms": 2000, "reset_after_ms": 10000}}),
    );
    client
        .service_put("t2", "crashy", &spec, None)
        .await
        .unwrap();
    let instance = eventually(
        "the instance is shown crash-looping",
        Duration::from_secs(30),
        || async {
            let instances = client
                .service_instances("t2", "crashy")
                .await
                .map_err(|e| e.to_string())?;
            match instances.first() {
                Some(i) if i.state == InstanceState::CrashLoop && i.restarts >= 3 => Ok(i.clone()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert!(
        instance.last_exit.as_ref().is_some_and(|e| e.code == 1),
        "{instance:?}"
    );
    // Backoff grows: restarts slow down instead of spinning.
    let before = instance.restarts;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = client.service_instances("t2", "crashy").await.unwrap()[0].restarts;
    assert!(
        after - before <= 4,
        "restarted {} times in 3 s: no backoff",
        after - before
    );
    // The managers stay healthy.
    for r in &env.cluster.replicas {
        assert!(env.cluster.client_for(r.id).health().await.is_ok());
    }
    // Between its short runs the instance is shown crash-looping.
    eventually(
        "the report counts the crash loop",
        Duration::from_secs(10),
        || async {
            let report = client
                .service_report("t2", "crashy")
                .await
                .map_err(|e| e.to_string())?;
            if report.crash_looping == 1 {
                Ok(())
            } else {
                Err(format!("{report:?}"))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_leader_adopts_instead_of_duplicating() {
    let Some(mut env) = DockerCluster::start(3).await else {
        return;
    };
    env.add_node("local", LOCAL_ENGINE, "a").await;
    let client = env.cluster.client();
    client
        .service_put("t3", "echo", &echo_spec(4, json!({})), None)
        .await
        .unwrap();
    // Kill the leader in the middle of the deployment.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let leader = env.cluster.wait_for_leader().await;
    env.cluster.kill(leader);
    env.cluster.wait_for_leader().await;
    let running = env.wait_running("echo", 4, Duration::from_secs(30)).await;
    // Stays converged: no slot ever gets a second container afterwards.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(env.containers(Some("echo")).await.len(), 4);
    }
    env.cluster.restart(leader);
    env.cluster.wait_for_leader().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The same four containers: none replaced, none added.
    let mut before: Vec<String> = running.into_iter().map(|c| c.id).collect();
    before.sort();
    let after = env.wait_running("echo", 4, Duration::from_secs(20)).await;
    let mut after: Vec<String> = after.into_iter().map(|c| c.id).collect();
    after.sort();
    assert_eq!(
        before, after,
        "containers were replaced after the old leader returned"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn scale_start_stop_restart_and_remove() {
    let Some(env) = DockerCluster::start(3).await else {
        return;
    };
    env.add_node("local", LOCAL_ENGINE, "a").await;
    let client = env.cluster.client();
    client
        .service_put("t4", "echo", &echo_spec(3, json!({})), None)
        .await
        .unwrap();
    let first = env.wait_running("echo", 3, Duration::from_secs(30)).await;
    client.service_scale("t4", "echo", 5).await.unwrap();
    let five = env.wait_running("echo", 5, Duration::from_secs(30)).await;
    // Scaling up keeps the containers that ran.
    for c in &first {
        assert!(
            five.iter().any(|f| f.id == c.id),
            "scale-up replaced {}",
            c.name
        );
    }
    client.service_scale("t4", "echo", 1).await.unwrap();
    env.wait_running("echo", 1, Duration::from_secs(30)).await;
    eventually(
        "instances follow the scale",
        Duration::from_secs(10),
        || async {
            let n = client
                .service_instances("t4", "echo")
                .await
                .map_err(|e| e.to_string())?
                .len();
            if n == 1 {
                Ok(())
            } else {
                Err(format!("{n} instances"))
            }
        },
    )
    .await;

    let stopped = client.service_action("t4", "echo", "stop").await.unwrap();
    assert_eq!(stopped.run_state, RunState::Stopped);
    eventually(
        "the container is stopped, not removed",
        Duration::from_secs(20),
        || async {
            let all = env.containers(Some("echo")).await;
            let instances = client
                .service_instances("t4", "echo")
                .await
                .map_err(|e| e.to_string())?;
            if all.len() == 1
                && all[0].state != raftvisor::runtime::ContainerState::Running
                && instances[0].state == InstanceState::Stopped
            {
                Ok(())
            } else {
                Err(format!(
                    "{:?} {:?}",
                    all.iter().map(|c| c.state).collect::<Vec<_>>(),
                    instances
                ))
            }
        },
    )
    .await;
    client.service_action("t4", "echo", "start").await.unwrap();
    let started = env.wait_running("echo", 1, Duration::from_secs(20)).await;
    client
        .service_action("t4", "echo", "restart")
        .await
        .unwrap();
    eventually(
        "restart gives the container a new process",
        Duration::from_secs(20),
        || async {
            let now = env.running("echo").await;
            if now.len() == 1 && now[0].id == started[0].id && now[0].pid != started[0].pid {
                Ok(())
            } else {
                Err(format!("{now:?}"))
            }
        },
    )
    .await;
    client.service_delete("t4", "echo", None).await.unwrap();
    eventually(
        "a removed service leaves no container",
        Duration::from_secs(20),
        || async {
            let n = env.containers(Some("echo")).await.len();
            if n == 0 {
                Ok(())
            } else {
                Err(format!("{n} left"))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn impossible_work_is_a_clear_error_not_a_hot_loop() {
    let Some(env) = DockerCluster::start(3).await else {
        return;
    };
    env.add_node("local", LOCAL_ENGINE, "a").await;
    let client = env.cluster.client();
    let missing = echo_spec(1, json!({"image": "raftvisor-no-such-image:local"}));
    client
        .service_put("t5", "ghost", &missing, None)
        .await
        .unwrap();
    let impossible = echo_spec(1, json!({"placement": {"zone": "nowhere"}}));
    client
        .service_put("t5", "homeless", &impossible, None)
        .await
        .unwrap();
    eventually(
        "the missing image is reported on the instance",
        Duration::from_secs(20),
        || async {
            let instances = client
                .service_instances("t5", "ghost")
                .await
                .map_err(|e| e.to_string())?;
            match instances.first() {
                // The engine has no such image and its registry does not
                // answer for it: the pull's failure, in the engine's words.
                Some(i)
                    if i.state == InstanceState::PullFailed
                        && i.last_exit.as_ref().is_some_and(|e| {
                            e.reason
                                .contains("pulling raftvisor-no-such-image:local failed")
                        }) =>
                {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    eventually(
        "the impossible placement is reported",
        Duration::from_secs(20),
        || async {
            let report = client
                .service_report("t5", "homeless")
                .await
                .map_err(|e| e.to_string())?;
            if report
                .recent_events
                .iter()
                .any(|e| e.kind == "instance.unplaceable" && e.message.contains("zone=nowhere"))
            {
                Ok(())
            } else {
                Err(format!("{:?}", report.recent_events))
            }
        },
    )
    .await;
    // No hot loop: the event log does not grow while nothing changes.
    let before = client
        .events(0)
        .await
        .unwrap()
        .last()
        .map(|e| e.index)
        .unwrap_or(0);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let new_events = client.events(before).await.unwrap();
    assert!(
        new_events.len() <= 2,
        "{} events in {:?}: {new_events:?}",
        new_events.len(),
        started.elapsed()
    );
    assert!(env.containers(Some("homeless")).await.is_empty());
}

fn on_node<'a>(
    containers: &'a [raftvisor::runtime::ContainerInfo],
    node: &str,
) -> Vec<&'a raftvisor::runtime::ContainerInfo> {
    containers
        .iter()
        .filter(|c| c.labels.get("raftvisor.node").map(String::as_str) == Some(node))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_node_moves_its_instances_and_is_fenced_when_it_returns() {
    let Some(env) = DockerCluster::start(3).await else {
        return;
    };
    let mut proxy = crate::docker_env::EngineProxy::start().await;
    env.add_node("n1", &proxy.endpoint(), "a").await;
    env.add_node("n2", LOCAL_ENGINE, "b").await;
    let client = env.cluster.client();
    client
        .service_put("t6", "echo", &echo_spec(2, json!({})), None)
        .await
        .unwrap();
    let running = env.wait_running("echo", 2, Duration::from_secs(30)).await;
    assert_eq!(on_node(&running, "n1").len(), 1, "spread over both nodes");
    let stale = on_node(&running, "n1")[0].clone();

    proxy.cut();
    let lost_at = Instant::now();
    eventually(
        "both instances run on n2",
        Duration::from_secs(20),
        || async {
            let all = env.containers(Some("echo")).await;
            let running_n2 = on_node(&all, "n2")
                .into_iter()
                .filter(|c| c.state == raftvisor::runtime::ContainerState::Running)
                .count();
            if running_n2 == 2 {
                Ok(())
            } else {
                Err(format!("{running_n2} on n2"))
            }
        },
    )
    .await;
    eprintln!(
        "node loss -> instances running elsewhere in {:?}",
        lost_at.elapsed()
    );
    let node = client.node_get("n1").await.unwrap();
    assert_eq!(node.state, raftvisor::state::NodeState::Down);
    // The node only lost contact: its container was left running meanwhile.
    assert!(env.engine.inspect(&stale.id).await.unwrap().is_some());

    proxy.resume().await;
    eventually(
        "the returning node is fenced and ready",
        Duration::from_secs(20),
        || async {
            let gone = env
                .engine
                .inspect(&stale.id)
                .await
                .map_err(|e| e.to_string())?
                .is_none();
            let ready = client
                .node_get("n1")
                .await
                .map_err(|e| e.to_string())?
                .state
                == raftvisor::state::NodeState::Ready;
            if gone && ready {
                Ok(())
            } else {
                Err(format!("stale container gone: {gone}, node ready: {ready}"))
            }
        },
    )
    .await;
    env.wait_running("echo", 2, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn draining_a_node_moves_its_instances_off() {
    let Some(env) = DockerCluster::start(3).await else {
        return;
    };
    let proxy = crate::docker_env::EngineProxy::start().await;
    env.add_node("n1", LOCAL_ENGINE, "a").await;
    env.add_node("n2", &proxy.endpoint(), "b").await;
    let client = env.cluster.client();
    client
        .service_put("t7", "echo", &echo_spec(4, json!({})), None)
        .await
        .unwrap();
    let running = env.wait_running("echo", 4, Duration::from_secs(30)).await;
    assert_eq!(on_node(&running, "n1").len(), 2);
    let drained = client.node_drain("n1", false).await.unwrap();
    assert_eq!(drained.state, raftvisor::state::NodeState::Draining);
    eventually(
        "every instance runs on n2 and n1 holds nothing",
        Duration::from_secs(30),
        || async {
            let all = env.containers(Some("echo")).await;
            let n2 = on_node(&all, "n2")
                .into_iter()
                .filter(|c| c.state == raftvisor::runtime::ContainerState::Running)
                .count();
            let n1 = on_node(&all, "n1").len();
            if n2 == 4 && n1 == 0 {
                Ok(())
            } else {
                Err(format!("n1 {n1}, n2 running {n2}"))
            }
        },
    )
    .await;
    let instances = client.service_instances("t7", "echo").await.unwrap();
    assert!(
        instances.iter().all(|i| i.node.as_deref() == Some("n2")),
        "{instances:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rolling_updates_replace_one_at_a_time_and_pause_on_failure() {
    let Some(env) = DockerCluster::start(3).await else {
        return;
    };
    env.add_node("local", LOCAL_ENGINE, "a").await;
    let client = env.cluster.client();
    let health = json!({"health": {"kind": "http", "port": "http", "path": "/health", "interval_ms": 200, "timeout_ms": 200, "retries": 2}});
    let mut spec = echo_spec(3, health.clone());
    client.service_put("t8", "echo", &spec, None).await.unwrap();
    env.wait_running("echo", 3, Duration::from_secs(30)).await;
    eventually("all healthy", Duration::from_secs(20), || async {
        let r = client
            .service_report("t8", "echo")
            .await
            .map_err(|e| e.to_string())?;
        if r.running == 3 {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await;

    // A good update: every instance replaced, never more than one down.
    spec.env.insert("VERSION".into(), "2".into());
    client.service_put("t8", "echo", &spec, None).await.unwrap();
    let mut least_running = 3;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let report = client.service_report("t8", "echo").await.unwrap();
        least_running = least_running.min(report.running);
        if report.outdated == 0 && report.running == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rollout did not finish: {report:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        least_running >= 2,
        "more than max_parallel instances were down at once ({least_running} running)"
    );
    let containers = env.wait_running("echo", 3, Duration::from_secs(10)).await;
    let template = containers[0].labels["raftvisor.template"].clone();
    assert!(containers
        .iter()
        .all(|c| c.labels["raftvisor.template"] == template));

    // A bad update: the new version never turns healthy. The rollout pauses
    // after the first replacement and says why; the others keep running.
    spec.env.insert("ECHO_UNHEALTHY".into(), "1".into());
    client.service_put("t8", "echo", &spec, None).await.unwrap();
    let report = eventually(
        "the failing rollout pauses and says why",
        Duration::from_secs(30),
        || async {
            let r = client
                .service_report("t8", "echo")
                .await
                .map_err(|e| e.to_string())?;
            match &r.rollout_paused {
                Some(reason) if reason.contains("unhealthy") => Ok(r),
                _ => Err(format!("{r:?}")),
            }
        },
    )
    .await;
    assert_eq!(report.outdated, 2, "{report:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = client.service_report("t8", "echo").await.unwrap();
    assert_eq!(
        report.outdated, 2,
        "the rollout went on despite the failure: {report:?}"
    );
    let old_running = env
        .running("echo")
        .await
        .into_iter()
        .filter(|c| c.labels["raftvisor.template"] == template)
        .count();
    assert_eq!(old_running, 2);
}

/// A deployment that needs more capacity than the registered nodes have
/// gets a node from the autoscale provider (here the static provider with
/// one spare machine: the local engine again), and runs there.
#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_that_needs_capacity_provisions_a_node() {
    let tuning = Tuning {
        extra_toml: format!(
            "[autoscale]\nmax_nodes = 1\n[autoscale.provider]\nkind = \"static\"\n\
             [[autoscale.provider.machines]]\nname = \"spare\"\ndocker_endpoint = {LOCAL_ENGINE:?}\naddress = \"127.0.0.1\"\nzone = \"b\"\n"
        ),
        ..Tuning::default()
    };
    let Some(env) = DockerCluster::start_with(3, tuning).await else {
        return;
    };
    let client = env.cluster.client();
    let full = raftvisor::state::NodeSpec {
        provider: "static".into(),
        docker_endpoint: LOCAL_ENGINE.into(),
        address: Some("127.0.0.1".into()),
        region: None,
        zone: Some("a".into()),
        labels: Default::default(),
        capacity: raftvisor::state::Capacity {
            max_instances: 1,
            ..Default::default()
        },
        docker_tls: None,
    };
    client.node_put("small", &full).await.unwrap();
    client
        .service_put("scale", "echo", &echo_spec(2, json!({})), None)
        .await
        .unwrap();
    let running = env.wait_running("echo", 2, Duration::from_secs(60)).await;
    let nodes: std::collections::BTreeSet<&str> = running
        .iter()
        .map(|c| c.labels["raftvisor.node"].as_str())
        .collect();
    assert_eq!(nodes, ["small", "spare"].into(), "{running:?}");
    let spare = client.node_get("spare").await.unwrap();
    assert_eq!(
        spare
            .spec
            .labels
            .get("raftvisor.autoscaled")
            .map(String::as_str),
        Some("true")
    );
    let events = client.events(0).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "node.autoscale" && e.message.contains("provisioned")),
        "{events:?}"
    );
    // max_nodes = 1: a third replica finds no capacity and no more nodes.
    client.service_scale("scale", "echo", 3).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(client.node_list().await.unwrap().len(), 2);
}
