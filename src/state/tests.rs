//! Unit tests of the pure state machine.

use super::*;

fn req(seq: u128, command: Command) -> Request {
    Request {
        id: RequestId(seq),
        time_ms: 1_000 + seq as u64,
        command,
    }
}

fn put(key: &str, value: &str, cas: Option<u64>) -> Command {
    Command::KvPut {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        flags: 0,
        cas,
    }
}

fn spec(replicas: u32) -> ServiceSpec {
    serde_json::from_value(serde_json::json!({
        "image": "raftvisor-echo:local",
        "replicas": replicas,
        "ports": [{"name": "http", "container_port": 8080}]
    }))
    .unwrap()
}

#[test]
fn kv_put_sets_indexes_and_cas_follows_consul() {
    let mut state = State::default();
    assert_eq!(
        state.apply(5, &req(1, put("a", "1", None))).outcome,
        Outcome::Kv(true)
    );
    let entry = state.kv["a"].clone();
    assert_eq!((entry.create_index, entry.modify_index), (5, 5));

    // cas=0 means "create only": the key exists, so nothing changes.
    assert_eq!(
        state.apply(6, &req(2, put("a", "2", Some(0)))).outcome,
        Outcome::Kv(false)
    );
    assert_eq!(state.kv["a"].value, b"1");
    // Wrong index: refused; right index: applied, create index kept.
    assert_eq!(
        state.apply(7, &req(3, put("a", "2", Some(4)))).outcome,
        Outcome::Kv(false)
    );
    assert_eq!(
        state.apply(8, &req(4, put("a", "2", Some(5)))).outcome,
        Outcome::Kv(true)
    );
    assert_eq!(state.kv["a"].create_index, 5);
    assert_eq!(state.kv["a"].modify_index, 8);
    assert_eq!(state.kv_index, 8);
}

#[test]
fn kv_delete_cas_and_recurse() {
    let mut state = State::default();
    state.apply(1, &req(1, put("app/a", "1", None)));
    state.apply(2, &req(2, put("app/b", "1", None)));
    state.apply(3, &req(3, put("other", "1", None)));
    let delete = |key: &str, cas, recurse| Command::KvDelete {
        key: key.into(),
        cas,
        recurse,
    };
    assert_eq!(
        state
            .apply(4, &req(4, delete("app/a", Some(9), false)))
            .outcome,
        Outcome::Kv(false)
    );
    assert!(state.kv.contains_key("app/a"));
    assert_eq!(
        state
            .apply(5, &req(5, delete("app/a", Some(1), false)))
            .outcome,
        Outcome::Kv(true)
    );
    assert!(!state.kv.contains_key("app/a"));
    assert_eq!(state.kv_delete_index, 5);
    assert_eq!(
        state.apply(6, &req(6, delete("app/", None, true))).outcome,
        Outcome::Kv(true)
    );
    assert_eq!(state.kv.keys().collect::<Vec<_>>(), vec!["other"]);
    assert_eq!(state.kv_read_index("app/", true), 6);
}

#[test]
fn a_retried_request_is_applied_once() {
    let mut state = State::default();
    let first = state.apply(3, &req(42, put("k", "v1", Some(0))));
    assert_eq!(first.outcome, Outcome::Kv(true));
    // The same request forwarded again lands at a later index: same answer,
    // no second change.
    let again = state.apply(9, &req(42, put("k", "v1", Some(0))));
    assert_eq!(again, first);
    assert_eq!(state.kv["k"].modify_index, 3);
}

#[test]
fn services_compare_and_set_on_version() {
    let mut state = State::default();
    let created = state.apply(
        10,
        &req(
            1,
            Command::PutService {
                namespace: "demo".into(),
                name: "echo".into(),
                spec: spec(3),
                expected_version: Some(0),
            },
        ),
    );
    let Outcome::Service(service) = created.outcome else {
        panic!("expected a service, got {created:?}");
    };
    assert_eq!(service.version, 10);
    let stale = state.apply(
        11,
        &req(
            2,
            Command::PutService {
                namespace: "demo".into(),
                name: "echo".into(),
                spec: spec(5),
                expected_version: Some(9),
            },
        ),
    );
    assert_eq!(stale.outcome, Outcome::VersionMismatch { current: 10 });
    assert_eq!(
        state.services[&("demo".into(), "echo".into())]
            .spec
            .replicas,
        3
    );

    let scaled = state.apply(
        12,
        &req(
            3,
            Command::ScaleService {
                namespace: "demo".into(),
                name: "echo".into(),
                replicas: 1,
            },
        ),
    );
    assert!(
        matches!(scaled.outcome, Outcome::Service(s) if s.spec.replicas == 1 && s.version == 12 && s.create_index == 10)
    );
}

#[test]
fn invalid_commands_are_rejected_without_change() {
    let mut state = State::default();
    let outcome = state
        .apply(
            1,
            &req(
                1,
                Command::PutService {
                    namespace: "Bad_NS".into(),
                    name: "echo".into(),
                    spec: spec(1),
                    expected_version: None,
                },
            ),
        )
        .outcome;
    assert!(matches!(outcome, Outcome::Rejected(_)));
    assert!(state.services.is_empty());
    assert!(state.events.is_empty());
}

#[test]
fn snapshot_image_round_trips_through_the_codec() {
    let mut state = State::default();
    state.apply(
        1,
        &req(
            1,
            Command::InitCluster {
                cluster_id: "c1".into(),
            },
        ),
    );
    state.apply(2, &req(2, put("a", "1", None)));
    state.apply(
        3,
        &req(
            3,
            Command::PutNode {
                name: "n1".into(),
                spec: serde_json::from_value(
                    serde_json::json!({"docker_endpoint": "unix:///var/run/docker.sock"}),
                )
                .unwrap(),
                expected_version: None,
            },
        ),
    );
    let bytes = crate::codec::encode(&state.to_image()).unwrap();
    let mut restored = State::from_image(crate::codec::decode(&bytes).unwrap());
    assert_eq!(restored.cluster_id.as_deref(), Some("c1"));
    assert_eq!(restored.kv, state.kv);
    assert_eq!(restored.nodes, state.nodes);
    assert_eq!(restored.events, state.events);
    // Duplicate detection survives the snapshot.
    let again = restored.apply(7, &req(2, put("a", "1", None)));
    assert_eq!(again.index, 2);
}

#[test]
fn event_log_is_bounded() {
    let mut state = State::default();
    for i in 0..(EVENT_LOG_CAPACITY as u128 + 10) {
        state.apply(
            i as u64 + 1,
            &req(
                i,
                Command::RecordEvent {
                    kind: "test".into(),
                    subject: "s".into(),
                    message: i.to_string(),
                },
            ),
        );
    }
    assert_eq!(state.events.len(), EVENT_LOG_CAPACITY);
    assert_eq!(state.events.front().unwrap().message, "10");
}

fn deploy_with_node(state: &mut State) {
    state.apply(
        1,
        &req(
            100,
            Command::PutService {
                namespace: "demo".into(),
                name: "echo".into(),
                spec: spec(2),
                expected_version: None,
            },
        ),
    );
    for (i, node) in ["n1", "n2"].into_iter().enumerate() {
        state.apply(
            2 + i as u64,
            &req(
                101 + i as u128,
                Command::PutNode {
                    name: node.into(),
                    spec: serde_json::from_value(
                        serde_json::json!({"docker_endpoint": "unix:///var/run/docker.sock"}),
                    )
                    .unwrap(),
                    expected_version: None,
                },
            ),
        );
    }
}

fn place(slot: u32, node: &str) -> Command {
    Command::PlaceInstance {
        namespace: "demo".into(),
        service: "echo".into(),
        slot,
        node: node.into(),
    }
}

#[test]
fn placement_bumps_the_generation_and_fences_stale_status() {
    let mut state = State::default();
    deploy_with_node(&mut state);
    let first = state.apply(10, &req(1, place(0, "n1"))).outcome;
    let Outcome::Instance(first) = first else {
        panic!("{first:?}")
    };
    assert_eq!((first.generation, first.node.as_deref()), (1, Some("n1")));
    assert_eq!(first.id, "demo-echo-0");
    let moved = state.apply(11, &req(2, place(0, "n2"))).outcome;
    let Outcome::Instance(moved) = moved else {
        panic!("{moved:?}")
    };
    assert_eq!((moved.generation, moved.node.as_deref()), (2, Some("n2")));

    let status = InstanceStatus {
        state: InstanceState::Running,
        container_id: Some("c1".into()),
        restarts: 0,
        last_exit: None,
        address: None,
        ports: vec![],
        spec_version: 1,
        restart_epoch: 0,
    };
    // A deposed leader reporting on generation 1 changes nothing.
    let stale = state
        .apply(
            12,
            &req(
                3,
                Command::SetInstanceStatus {
                    id: first.id.clone(),
                    generation: 1,
                    status: status.clone(),
                },
            ),
        )
        .outcome;
    assert!(matches!(stale, Outcome::Rejected(_)), "{stale:?}");
    assert_eq!(state.instances["demo-echo-0"].state, InstanceState::Pending);
    let current = state
        .apply(
            13,
            &req(
                4,
                Command::SetInstanceStatus {
                    id: first.id.clone(),
                    generation: 2,
                    status,
                },
            ),
        )
        .outcome;
    assert!(matches!(current, Outcome::Instance(i) if i.state == InstanceState::Running));

    // Slots beyond the replica count and unknown nodes are refused.
    assert!(matches!(
        state.apply(14, &req(5, place(2, "n1"))).outcome,
        Outcome::Rejected(_)
    ));
    assert!(matches!(
        state.apply(15, &req(6, place(1, "nowhere"))).outcome,
        Outcome::Rejected(_)
    ));
    assert!(matches!(
        state
            .apply(
                16,
                &req(
                    7,
                    Command::RemoveInstance {
                        id: "demo-echo-0".into(),
                        generation: 1
                    }
                )
            )
            .outcome,
        Outcome::Rejected(_)
    ));
    assert_eq!(
        state
            .apply(
                17,
                &req(
                    8,
                    Command::RemoveInstance {
                        id: "demo-echo-0".into(),
                        generation: 2
                    }
                )
            )
            .outcome,
        Outcome::Deleted
    );
    assert!(state.instances.is_empty());
}

#[test]
fn run_state_restart_and_node_liveness() {
    let mut state = State::default();
    deploy_with_node(&mut state);
    let key = ("demo".to_string(), "echo".to_string());
    state.apply(
        20,
        &req(
            1,
            Command::SetServiceRunState {
                namespace: "demo".into(),
                name: "echo".into(),
                run_state: RunState::Stopped,
            },
        ),
    );
    assert_eq!(state.services[&key].run_state, RunState::Stopped);
    state.apply(
        21,
        &req(
            2,
            Command::RestartService {
                namespace: "demo".into(),
                name: "echo".into(),
            },
        ),
    );
    assert_eq!(state.services[&key].restart_epoch, 21);
    // A later deploy keeps the run state and restart epoch.
    state.apply(
        22,
        &req(
            3,
            Command::PutService {
                namespace: "demo".into(),
                name: "echo".into(),
                spec: spec(3),
                expected_version: None,
            },
        ),
    );
    assert_eq!(
        (
            state.services[&key].run_state,
            state.services[&key].restart_epoch
        ),
        (RunState::Stopped, 21)
    );

    let down = state.apply(
        23,
        &req(
            4,
            Command::SetNodeState {
                name: "n1".into(),
                state: NodeState::Down,
                reason: "no ping for 2s".into(),
            },
        ),
    );
    assert!(matches!(down.outcome, Outcome::Node(n) if n.state == NodeState::Down));
    assert!(state.events.back().unwrap().message.contains("no ping"));
}
