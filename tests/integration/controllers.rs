//! The supervisor's triggers, in process and without Docker: one replica
//! (a single-member cluster that elects itself) supervising in-memory
//! engines, its reconciles counted per key. A KV write reconciles no
//! service; a change to one service reconciles that service and no other;
//! a container that dies is restarted from its engine's event alone; an
//! engine that keeps answering costs probe rounds, not node reconciles.

use std::sync::Arc;
use std::time::{Duration, Instant};

use raftvisor::config::{AgentConfig, LoopbackPorts};
use raftvisor::reconcile::controller::Counts;
use raftvisor::reconcile::engines::Engines;
use raftvisor::reconcile::{supervise, SupervisorSettings};
use raftvisor::replica::Replica;
use raftvisor::runtime::memory::MemoryRuntime;
use raftvisor::runtime::ContainerRuntime;
use raftvisor::state::{Command, InstanceState, NodeSpec};
use tokio_util::sync::CancellationToken;

use crate::harness::eventually;

const ENDPOINT: &str = "tcp://127.0.0.1:1";

struct InProcess {
    _dir: tempfile::TempDir,
    replica: Arc<Replica>,
    engine: Arc<MemoryRuntime>,
    /// Where more engines are installed.
    engines: Engines,
    counts: Counts,
    stop: CancellationToken,
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A leader with one in-memory node, supervising; the resync is an hour
/// away, so every reconcile seen is one a trigger asked for.
async fn start() -> InProcess {
    start_with(None).await
}

/// [`start`], removing images unused for `image_gc_after`.
async fn start_with(image_gc_after: Option<Duration>) -> InProcess {
    let dir = tempfile::Builder::new()
        .prefix("raftvisor-controllers.")
        .tempdir()
        .unwrap();
    // A single member: its peer, API and DNS addresses are never bound.
    let ports = LoopbackPorts {
        api: 1,
        peer: 2,
        dns: 3,
    };
    let config = AgentConfig::loopback(1, dir.path().join("replica-1"), ports, &[(1, ports)]);
    let replica = Replica::start(config, raftvisor::raft::network::PeerNetwork::new(None))
        .await
        .unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(raftvisor::reconcile::housekeeping::run(
        replica.clone(),
        stop.clone(),
    ));
    eventually(
        "the replica leads with a cluster id",
        Duration::from_secs(30),
        || async {
            match replica.sm.read(|s| s.cluster_id.clone()) {
                Some(_) => Ok(()),
                None => Err("no cluster id yet".to_string()),
            }
        },
    )
    .await;
    let engines = Engines::default();
    let engine = Arc::new(MemoryRuntime::new(ENDPOINT));
    engines.install(ENDPOINT, engine.clone());
    replica
        .write(Command::PutNode {
            name: "mem-0".into(),
            spec: NodeSpec {
                address: Some("127.0.0.1".into()),
                ..NodeSpec::static_engine(ENDPOINT)
            },
            expected_version: None,
        })
        .await
        .unwrap();
    let counts = Counts::default();
    let settings = SupervisorSettings {
        resync: Duration::from_secs(3_600),
        image_gc_after,
        ..SupervisorSettings::default()
    };
    tokio::spawn(supervise(
        replica.clone(),
        engines.clone(),
        settings,
        counts.clone(),
        stop.clone(),
    ));
    InProcess {
        _dir: dir,
        replica,
        engine,
        engines,
        counts,
        stop,
    }
}

async fn deploy_image(replica: &Replica, name: &str, image: &str) {
    deploy_replicas_of(replica, name, image, 1).await
}

/// Deploys `ctl/name` with the spec `spec` (JSON).
async fn deploy_spec(replica: &Replica, name: &str, spec: serde_json::Value) {
    replica
        .write(Command::PutService {
            namespace: "ctl".into(),
            name: name.into(),
            spec: serde_json::from_value(spec).unwrap(),
            expected_version: None,
        })
        .await
        .unwrap();
}

async fn deploy_replicas_of(replica: &Replica, name: &str, image: &str, replicas: u32) {
    deploy_spec(
        replica,
        name,
        serde_json::json!({"image": image, "replicas": replicas}),
    )
    .await
}

async fn deploy(replica: &Replica, name: &str, replicas: u32) {
    deploy_spec(
        replica,
        name,
        serde_json::json!({
            "image": "raftvisor-echo:dev",
            "replicas": replicas,
            "ports": [{"name": "http", "container_port": 8080}]
        }),
    )
    .await
}

/// Running instances of `ctl/name`.
fn running(replica: &Replica, name: &str) -> usize {
    replica.sm.read(|s| {
        s.instances
            .values()
            .filter(|i| i.namespace == "ctl" && i.service == name)
            .filter(|i| i.state == InstanceState::Running)
            .count()
    })
}

async fn wait_running(replica: &Replica, name: &str, count: usize) {
    eventually(
        &format!("{count} instance(s) of ctl/{name} run"),
        Duration::from_secs(10),
        || async {
            match running(replica, name) {
                n if n == count => Ok(()),
                n => Err(format!("{n} running")),
            }
        },
    )
    .await;
}

/// Waits until no reconcile has started for a while (the work a change
/// caused, including the writes of its status, is done).
async fn settled(counts: &Counts) {
    let mut last = (counts.total("services"), Instant::now());
    eventually("the supervisor settles", Duration::from_secs(10), || {
        let now = counts.total("services");
        let quiet = if now == last.0 {
            last.1.elapsed()
        } else {
            last = (now, Instant::now());
            Duration::ZERO
        };
        async move {
            if quiet >= Duration::from_millis(300) {
                Ok(())
            } else {
                Err(format!("{now} reconciles, quiet for {quiet:?}"))
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kv_write_reconciles_nothing_and_a_service_change_only_that_service() {
    let world = start().await;
    deploy(&world.replica, "a", 1).await;
    deploy(&world.replica, "b", 1).await;
    wait_running(&world.replica, "a", 1).await;
    wait_running(&world.replica, "b", 1).await;
    settled(&world.counts).await;
    let a_before = world.counts.of("services", "ctl/a");
    let b_before = world.counts.of("services", "ctl/b");
    assert!(a_before > 0 && b_before > 0);

    for i in 0..20 {
        world
            .replica
            .write(Command::KvPut {
                key: format!("ctl/key-{i}"),
                value: b"v".to_vec(),
                flags: 0,
                cas: None,
            })
            .await
            .unwrap();
    }
    world
        .replica
        .write(Command::ScaleService {
            namespace: "ctl".into(),
            name: "b".into(),
            replicas: 2,
        })
        .await
        .unwrap();
    wait_running(&world.replica, "b", 2).await;
    settled(&world.counts).await;
    assert_eq!(
        world.counts.of("services", "ctl/a"),
        a_before,
        "neither the KV writes nor b's change reconciled a"
    );
    assert!(world.counts.of("services", "ctl/b") > b_before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_that_dies_is_restarted_on_its_engines_event() {
    let world = start().await;
    deploy(&world.replica, "crash", 1).await;
    wait_running(&world.replica, "crash", 1).await;
    settled(&world.counts).await;
    let id = world
        .replica
        .sm
        .read(|s| {
            s.instances
                .values()
                .find(|i| i.service == "crash")
                .and_then(|i| i.container_id.clone())
        })
        .unwrap();
    world.engine.kill(&id, 3).unwrap();
    eventually(
        "the crashed container runs again",
        Duration::from_secs(10),
        || async {
            let restarts = world.replica.sm.read(|s| {
                s.instances
                    .values()
                    .find(|i| i.service == "crash")
                    .map(|i| i.restarts)
            });
            let info = world.engine.inspect(&id).await.map_err(|e| e.to_string())?;
            match (restarts, info) {
                (Some(r), Some(c))
                    if r >= 1 && c.state == raftvisor::runtime::ContainerState::Running =>
                {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

async fn wait_node_state(replica: &Replica, wanted: raftvisor::state::NodeState) {
    eventually(
        &format!("node mem-0 is {wanted:?}"),
        Duration::from_secs(10),
        || async {
            match replica.sm.read(|s| s.nodes.get("mem-0").map(|n| n.state)) {
                Some(state) if state == wanted => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_steady_node_is_probed_without_reconciling_it_and_a_silent_one_goes_down_and_back() {
    use raftvisor::state::NodeState;
    let world = start().await;
    let probes = |n: u64| {
        let counts = world.counts.clone();
        async move {
            match counts.total("probes") {
                seen if seen >= n => Ok(()),
                seen => Err(format!("{seen} probe rounds")),
            }
        }
    };
    eventually("the prober runs", Duration::from_secs(10), || probes(2)).await;
    let node_before = world.counts.of("nodes", "mem-0");
    let rounds = world.counts.total("probes");
    eventually("four more probe rounds", Duration::from_secs(10), || {
        probes(rounds + 4)
    })
    .await;
    assert_eq!(
        world.counts.of("nodes", "mem-0"),
        node_before,
        "an engine that keeps answering wakes no reconcile of its node"
    );

    world.engine.set_unreachable(true);
    wait_node_state(&world.replica, NodeState::Down).await;
    world.engine.set_unreachable(false);
    wait_node_state(&world.replica, NodeState::Ready).await;
    assert!(world.counts.of("nodes", "mem-0") > node_before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_update_fetches_its_image_before_it_stops_the_old_instance_and_unused_images_go()
{
    use raftvisor::runtime::memory::MemoryRegistry;
    let world = start_with(Some(Duration::from_millis(300))).await;
    let registry = Arc::new(MemoryRegistry::default());
    world.engine.set_registry(registry.clone());
    // An image the cluster did not bring: never removed.
    world.engine.set_images(Some(&["local-only:1"]));
    let digest = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    let pinned = |c: char| format!("reg.test:5000/app@{}", digest(c));
    registry.publish("reg.test:5000/app:1", &digest('a'));
    deploy_image(&world.replica, "roll", "reg.test:5000/app:1").await;
    wait_running(&world.replica, "roll", 1).await;
    let labels =
        std::collections::BTreeMap::from([("raftvisor.service".to_string(), "roll".to_string())]);
    let old = world.engine.list(&labels).await.unwrap().remove(0);
    assert_eq!(old.image, pinned('a'));

    // Version 2's image takes a while to arrive: the old instance runs
    // until it is there.
    registry.publish("reg.test:5000/app:2", &digest('b'));
    world.engine.set_latency(Duration::from_millis(1500));
    deploy_image(&world.replica, "roll", "reg.test:5000/app:2").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !world.engine.has_image(&pinned('b')) {
        assert!(Instant::now() < deadline, "version 2's image never arrived");
        let still = world.engine.inspect(&old.id).await.unwrap();
        assert!(
            still.is_some_and(|c| c.state == raftvisor::runtime::ContainerState::Running),
            "the old instance stopped before the new image was on its node"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    world.engine.set_latency(Duration::ZERO);
    let image_running = |want: String| {
        let engine = world.engine.clone();
        let labels = labels.clone();
        async move {
            let running: Vec<String> = engine
                .list(&labels)
                .await
                .unwrap()
                .into_iter()
                .filter(|c| c.state == raftvisor::runtime::ContainerState::Running)
                .map(|c| c.image)
                .collect();
            if running == [want.clone()] {
                Ok(())
            } else {
                Err(format!("running {running:?}, not {want}"))
            }
        }
    };
    eventually("version 2 runs", Duration::from_secs(20), || {
        image_running(pinned('b'))
    })
    .await;

    // Version 1 is kept while it is the previous version; version 3
    // makes it unused, and it goes. What the cluster did not bring stays.
    assert!(world.engine.has_image(&pinned('a')));
    registry.publish("reg.test:5000/app:3", &digest('c'));
    deploy_image(&world.replica, "roll", "reg.test:5000/app:3").await;
    eventually("version 3 runs", Duration::from_secs(20), || {
        image_running(pinned('c'))
    })
    .await;
    eventually(
        "version 1's image is removed",
        Duration::from_secs(20),
        || async {
            if world.engine.has_image(&pinned('a')) {
                Err("still there".to_string())
            } else {
                Ok(())
            }
        },
    )
    .await;
    assert!(
        world.engine.has_image(&pinned('b')),
        "the previous version is kept"
    );
    assert!(world.engine.has_image("local-only:1"));
    eventually(
        "the removal is recorded",
        Duration::from_secs(10),
        || async {
            let brought = world
                .replica
                .sm
                .read(|s| s.images.brought.get("mem-0").cloned().unwrap_or_default());
            if brought.contains(&pinned('a')) {
                Err(format!("{brought:?}"))
            } else {
                Ok(())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_joins_receives_the_image_before_an_instance_is_placed_on_it() {
    use raftvisor::runtime::memory::MemoryRegistry;
    let world = start().await;
    let registry = Arc::new(MemoryRegistry::default());
    world.engine.set_registry(registry.clone());
    registry.publish(
        "reg.test:5000/join:1",
        &format!("sha256:{}", "d".repeat(64)),
    );
    // The first node takes one instance; the second slot waits for room.
    world
        .replica
        .write(Command::PutNode {
            name: "mem-0".into(),
            spec: NodeSpec {
                address: Some("127.0.0.1".into()),
                capacity: raftvisor::state::Capacity {
                    max_instances: 1,
                    ..Default::default()
                },
                ..NodeSpec::static_engine(ENDPOINT)
            },
            expected_version: None,
        })
        .await
        .unwrap();
    deploy_replicas_of(&world.replica, "join", "reg.test:5000/join:1", 2).await;
    wait_running(&world.replica, "join", 1).await;

    // A node joins with an engine that has no image and pulls slowly.
    const SECOND: &str = "tcp://127.0.0.1:2";
    let second = Arc::new(MemoryRuntime::new(SECOND));
    second.set_images(Some(&[]));
    second.set_registry(registry.clone());
    second.set_latency(Duration::from_millis(500));
    world.engines.install(SECOND, second.clone());
    world
        .replica
        .write(Command::PutNode {
            name: "mem-1".into(),
            spec: NodeSpec {
                address: Some("127.0.0.1".into()),
                ..NodeSpec::static_engine(SECOND)
            },
            expected_version: None,
        })
        .await
        .unwrap();
    wait_running(&world.replica, "join", 2).await;
    let (pulled, placed) = world.replica.sm.read(|s| {
        let index_of = |kind: &str, on: &str| {
            s.events
                .iter()
                .find(|e| e.kind == kind && e.message.contains(on))
                .map(|e| e.index)
        };
        (
            index_of("image.pulling", "onto node mem-1"),
            index_of("instance.placed", "placed on mem-1"),
        )
    });
    let (pulled, placed) = (
        pulled.expect("a pull onto mem-1"),
        placed.expect("a placement on mem-1"),
    );
    assert!(
        pulled < placed,
        "the instance was placed on mem-1 (entry {placed}) before its image was fetched there (entry {pulled})"
    );
    assert!(second.has_image(&format!("reg.test:5000/join@sha256:{}", "d".repeat(64))));
}

/// The volumes of `ctl/name` the state records, by name.
fn recorded_volumes(replica: &Replica, name: &str) -> Vec<String> {
    replica.sm.read(|s| {
        s.volumes
            .volumes
            .iter()
            .filter(|(_, r)| r.namespace == "ctl" && r.service == name)
            .map(|(volume, _)| volume.clone())
            .collect()
    })
}

async fn deploy_with_volume(replica: &Replica, name: &str, replicas: u32) {
    deploy_spec(
        replica,
        name,
        serde_json::json!({
            "image": "raftvisor-echo:dev",
            "replicas": replicas,
            "volumes": [{"name": "data", "mount": "/data"}],
        }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn volumes_outlive_their_service_until_removed_or_purged() {
    use raftvisor::state::Outcome;
    let world = start().await;
    let engine_volumes = |prefix: String| {
        world
            .engine
            .volumes()
            .into_iter()
            .filter(|v| v.contains(&prefix))
            .collect::<Vec<_>>()
    };
    deploy_with_volume(&world.replica, "kept", 2).await;
    wait_running(&world.replica, "kept", 2).await;
    let recorded = recorded_volumes(&world.replica, "kept");
    assert_eq!(recorded.len(), 2, "one volume per slot: {recorded:?}");
    assert_eq!(engine_volumes("ctl.kept.".into()).len(), 2);
    let (slot0, slot1) = (recorded[0].clone(), recorded[1].clone());

    // A slot that runs keeps its volume.
    let refused = world
        .replica
        .write(Command::RemoveVolume {
            name: slot0.clone(),
        })
        .await
        .unwrap();
    assert!(
        matches!(&refused.outcome, Outcome::Refused { code, .. } if code == "volume_in_use"),
        "{refused:?}"
    );

    // The service goes, its containers with it; the volumes stay.
    world
        .replica
        .write(Command::DeleteService {
            namespace: "ctl".into(),
            name: "kept".into(),
            expected_version: None,
        })
        .await
        .unwrap();
    let labels = std::collections::BTreeMap::new();
    eventually(
        "its containers are removed",
        Duration::from_secs(10),
        || async {
            match world.engine.list(&labels).await.unwrap().len() {
                0 => Ok(()),
                n => Err(format!("{n} left")),
            }
        },
    )
    .await;
    assert_eq!(recorded_volumes(&world.replica, "kept").len(), 2);
    assert_eq!(engine_volumes("ctl.kept.".into()).len(), 2);

    // `volume rm` of one: gone from the engine and the book; the other stays.
    let removing = world
        .replica
        .write(Command::RemoveVolume {
            name: slot0.clone(),
        })
        .await
        .unwrap();
    assert_eq!(removing.outcome, Outcome::Done);
    eventually("the volume is removed", Duration::from_secs(10), || async {
        match recorded_volumes(&world.replica, "kept").len() {
            1 => Ok(()),
            n => Err(format!("{n} recorded")),
        }
    })
    .await;
    assert_eq!(engine_volumes("ctl.kept.".into()), vec![slot1.clone()]);

    // `service rm --purge`: the service and its volumes go together.
    deploy_with_volume(&world.replica, "purged", 1).await;
    wait_running(&world.replica, "purged", 1).await;
    assert_eq!(engine_volumes("ctl.purged.".into()).len(), 1);
    world
        .replica
        .write(Command::DeleteServiceAndVolumes {
            namespace: "ctl".into(),
            name: "purged".into(),
            expected_version: None,
        })
        .await
        .unwrap();
    eventually("its volume is removed", Duration::from_secs(10), || async {
        let left = engine_volumes("ctl.purged.".into());
        match (left.len(), recorded_volumes(&world.replica, "purged").len()) {
            (0, 0) => Ok(()),
            other => Err(format!("{other:?} left: {left:?}")),
        }
    })
    .await;
    assert_eq!(engine_volumes("ctl.kept.".into()), vec![slot1]);
}

/// A `oneshot` start hook runs before the slot's container is made, in a
/// one-shot container with the slot's volume; while it fails, no container
/// is made (each failure an event); once it passes, the slot starts and
/// the hook does not run again for that generation.
#[tokio::test(flavor = "multi_thread")]
async fn a_one_shot_start_hook_runs_before_the_container_and_holds_it_while_it_fails() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let world = start().await;
    let failing = Arc::new(AtomicBool::new(true));
    let answer = failing.clone();
    world
        .engine
        .answer_commands(Arc::new(move |_| raftvisor::runtime::CommandOutput {
            exit_code: if answer.load(Ordering::SeqCst) { 4 } else { 0 },
            stdout_tail: Vec::new(),
            stderr_tail: b"not ready".to_vec(),
        }));
    deploy_spec(
        &world.replica,
        "init",
        serde_json::json!({
            "image": "raftvisor-echo:dev",
            "volumes": [{"name": "data", "mount": "/data"}],
            "hooks": {"start": {"command": ["prepare", "/data"], "run": "oneshot"}},
        }),
    )
    .await;
    eventually(
        "the failed start hook is an event",
        Duration::from_secs(10),
        || async {
            let said = world.replica.sm.read(|s| {
                s.events.iter().any(|e| {
                    e.kind == "hook.start"
                        && e.message.contains("exited 4")
                        && e.message.contains("not ready")
                })
            });
            said.then_some(()).ok_or_else(|| "not yet".to_string())
        },
    )
    .await;
    let containers = world.engine.list(&Default::default()).await.unwrap();
    assert!(
        containers.is_empty(),
        "no container while its start hook fails: {containers:?}"
    );
    let ran = world.engine.ran_commands();
    assert!(
        ran.iter().all(|r| r.one_shot
            && r.command == ["prepare", "/data"]
            && r.volumes.len() == 1
            && r.volumes[0].contains("ctl.init.0-data")),
        "{ran:?}"
    );

    failing.store(false, Ordering::SeqCst);
    wait_running(&world.replica, "init", 1).await;
    let runs = world.engine.ran_commands().len();
    assert!(runs >= 2, "retried until it passed: {runs}");
    settled(&world.counts).await;
    assert_eq!(
        world.engine.ran_commands().len(),
        runs,
        "a passed start hook does not run again"
    );
}

/// A backup streams each slot's stdout into an archive the replica keeps;
/// a restore from it feeds each slot's archive to the restore hook of the
/// same slot.
#[tokio::test(flavor = "multi_thread")]
async fn a_backup_keeps_each_slots_stdout_and_a_restore_feeds_it_back() {
    use raftvisor::state::hooks::JobState;
    let world = start().await;
    world
        .engine
        .answer_commands(Arc::new(|ran| raftvisor::runtime::CommandOutput {
            exit_code: 0,
            // The backup writes whose data it is.
            stdout_tail: if ran.command[0] == "dump" {
                format!("data of {}", ran.container).into_bytes()
            } else {
                Vec::new()
            },
            stderr_tail: Vec::new(),
        }));
    deploy_spec(
        &world.replica,
        "db",
        serde_json::json!({
            "image": "raftvisor-echo:dev",
            "replicas": 2,
            "volumes": [{"name": "data", "mount": "/data"}],
            "hooks": {
                "backup": {"command": ["dump"]},
                "restore": {"command": ["load"], "run": "oneshot"},
            },
        }),
    )
    .await;
    wait_running(&world.replica, "db", 2).await;
    let job = |id: &str, command: Command| {
        let replica = world.replica.clone();
        let id = id.to_string();
        async move {
            replica.write(command).await.unwrap();
            eventually(
                &format!("job {id} ends"),
                Duration::from_secs(10),
                || async {
                    let state = replica.sm.read(|s| {
                        s.hooks
                            .backups
                            .get(&id)
                            .map(|b| b.state.clone())
                            .or_else(|| s.hooks.restores.get(&id).map(|r| r.state.clone()))
                    });
                    match state {
                        Some(JobState::Running) | None => Err(format!("{state:?}")),
                        Some(ended) => Ok(ended),
                    }
                },
            )
            .await
        }
    };
    let ended = job(
        "b1",
        Command::RequestBackup {
            id: "b1".into(),
            namespace: "ctl".into(),
            service: "db".into(),
        },
    )
    .await;
    assert_eq!(ended, JobState::Done);
    let backup = world.replica.sm.read(|s| s.hooks.backups["b1"].clone());
    assert_eq!(backup.slots.len(), 2);
    for part in &backup.slots {
        let path = world
            .replica
            .archives
            .path(&part.archive)
            .expect("the replica keeps the artifact");
        let text = std::fs::read_to_string(path).unwrap();
        assert!(
            text.starts_with("data of rv-") && text.contains(&format!("ctl.db.{}", part.slot)),
            "slot {}: {text}",
            part.slot
        );
        assert_eq!(part.bytes, text.len() as u64);
    }

    let ended = job(
        "r1",
        Command::RequestRestore {
            id: "r1".into(),
            namespace: "ctl".into(),
            service: "db".into(),
            backup: "b1".into(),
        },
    )
    .await;
    assert_eq!(ended, JobState::Done);
    let loads: Vec<_> = world
        .engine
        .ran_commands()
        .into_iter()
        .filter(|r| r.command == ["load"])
        .collect();
    assert_eq!(loads.len(), 2, "{loads:?}");
    for load in &loads {
        let stdin = String::from_utf8(load.stdin.clone().unwrap().to_vec()).unwrap();
        assert!(load.one_shot && load.volumes.len() == 1, "{load:?}");
        let slot = load.volumes[0]
            .split("ctl.db.")
            .nth(1)
            .unwrap()
            .split('-')
            .next()
            .unwrap();
        assert!(
            stdin.contains(&format!("ctl.db.{slot}")),
            "slot {slot} got its own artifact: {stdin}"
        );
    }
}
