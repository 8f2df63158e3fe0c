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
fn a_single_key_reports_its_own_modify_index_whatever_else_is_deleted() {
    let mut state = State::default();
    state.apply(5, &req(1, put("service/pg/leader", "pg1", None)));
    state.apply(6, &req(2, put("service/pg/other", "x", None)));
    state.apply(
        7,
        &req(
            3,
            Command::KvDelete {
                key: "service/pg/other".into(),
                cas: None,
                recurse: false,
            },
        ),
    );
    // Patroni blocks on the leader key with its ModifyIndex and loops at
    // once whenever the answer's index differs.
    assert_eq!(state.kv_read_index("service/pg/leader", false), 5);
    assert_eq!(
        state.kv_read_index("service/pg/other", false),
        7,
        "a missing key: the newest change"
    );
    assert_eq!(
        state.kv_read_index("service/pg/", true),
        7,
        "a prefix: includes its deletions"
    );
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
fn the_cluster_version_only_rises_and_survives_a_snapshot() {
    let mut state = State::default();
    assert_eq!(state.cluster_version(), 1);
    state.apply(1, &req(1, Command::SetClusterVersion { version: 2 }));
    assert_eq!(state.cluster_version(), 2);
    assert!(state
        .events
        .iter()
        .any(|e| e.message.contains("cluster version raised from 1 to 2")));
    // A late or repeated write for a lower version changes nothing.
    state.apply(2, &req(2, Command::SetClusterVersion { version: 1 }));
    assert_eq!(state.cluster_version(), 2);
    let bytes = crate::codec::encode(&migrate::Versioned(state.to_image())).unwrap();
    let image: migrate::Versioned<StateImage> = crate::codec::decode(&bytes).unwrap();
    assert_eq!(State::from_image(image.0).cluster_version(), 2);
}

fn session(id: &str, behavior: sessions::Behavior, lock_delay_ms: u64) -> Command {
    Command::CreateSession {
        request: sessions::SessionRequest {
            id: id.into(),
            name: id.into(),
            node: "manager-1".into(),
            lock_delay_ms,
            behavior,
            ttl_ms: Some(10_000),
            checks: Vec::new(),
        },
    }
}

fn acquire(key: &str, value: &str, session: &str) -> Command {
    Command::KvAcquire {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        flags: 0,
        session: session.into(),
    }
}

#[test]
fn locks_survive_a_snapshot_and_an_invalidated_session_frees_them_by_behaviour() {
    use sessions::Behavior;
    let mut state = State::default();
    state.apply(1, &req(1, session("keep", Behavior::Release, 0)));
    state.apply(2, &req(2, session("drop", Behavior::Delete, 1_000)));
    assert_eq!(
        state
            .apply(3, &req(3, acquire("pg/leader", "pg1", "drop")))
            .outcome,
        Outcome::Kv(true)
    );
    assert_eq!(
        state
            .apply(4, &req(4, acquire("pg/leader", "pg2", "keep")))
            .outcome,
        Outcome::Kv(false)
    );
    assert_eq!(
        state
            .apply(5, &req(5, acquire("pg/config", "c", "keep")))
            .outcome,
        Outcome::Kv(true)
    );
    let unknown = state
        .apply(6, &req(6, acquire("pg/x", "x", "nope")))
        .outcome;
    assert!(
        matches!(&unknown, Outcome::Rejected(r) if r.starts_with("invalid session")),
        "{unknown:?}"
    );

    let bytes = crate::codec::encode(&state.to_image()).unwrap();
    let mut state = State::from_image(crate::codec::decode(&bytes).unwrap());
    assert_eq!(
        state
            .sessions
            .lock_of("pg/leader")
            .unwrap()
            .session
            .as_deref(),
        Some("drop")
    );

    // A renewal that raced the leader's expiry wins.
    state.apply(7, &req(7, Command::RenewSession { id: "drop".into() }));
    let expire = |renewals| Command::DestroySession {
        id: "drop".into(),
        if_renewals: Some(renewals),
        reason: "its TTL ran out".into(),
    };
    assert_eq!(
        state.apply(8, &req(8, expire(0))).outcome,
        Outcome::NotFound
    );
    assert!(state.kv.contains_key("pg/leader"));
    let mut at = |index: u64, time_ms: u64, command: Command| {
        state.apply(
            index,
            &Request {
                id: RequestId(u128::from(index)),
                time_ms,
                command,
            },
        )
    };
    assert_eq!(at(9, 50_000, expire(1)).outcome, Outcome::Done);
    // Deleted with its session (Patroni's leader key), then under lock-delay.
    assert_eq!(
        at(10, 50_500, acquire("pg/leader", "pg2", "keep")).outcome,
        Outcome::Kv(false)
    );
    assert_eq!(
        at(11, 51_000, acquire("pg/leader", "pg2", "keep")).outcome,
        Outcome::Kv(true)
    );
    assert_eq!(state.kv["pg/leader"].value, b"pg2");
    assert!(state
        .events
        .iter()
        .any(|e| e.kind == "session" && e.subject == "drop"));

    // Destroying "keep" releases its keys and keeps them.
    state.apply(
        12,
        &req(
            12,
            Command::DestroySession {
                id: "keep".into(),
                if_renewals: None,
                reason: "destroyed".into(),
            },
        ),
    );
    assert_eq!(
        state.kv["pg/config"].modify_index, 12,
        "a release is a change"
    );
    assert!(state
        .sessions
        .lock_of("pg/config")
        .unwrap()
        .session
        .is_none());
}

#[test]
fn events_name_the_actor_of_a_command_and_keep_it_in_a_snapshot() {
    let mut state = State::default();
    let actor = Actor {
        token_id: "3f9a0c12d4e5".into(),
        token_name: "deployer".into(),
    };
    state.apply(
        1,
        &req(
            1,
            Command::As {
                actor: actor.clone(),
                command: Box::new(Command::PutService {
                    namespace: "demo".into(),
                    name: "echo".into(),
                    spec: spec(1),
                    expected_version: None,
                }),
            },
        ),
    );
    state.apply(
        2,
        &req(
            2,
            Command::RecordEvent {
                kind: "x".into(),
                subject: "y".into(),
                message: "the control plane's own".into(),
            },
        ),
    );
    assert_eq!(state.events[0].actor.as_ref(), Some(&actor));
    assert_eq!(
        state.events[1].actor, None,
        "the actor is the command's only"
    );
    let bytes = crate::codec::encode(&state.to_image()).unwrap();
    let restored = State::from_image(crate::codec::decode(&bytes).unwrap());
    assert_eq!(restored.events, state.events);
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
    Command::PlaceSlot {
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
    assert_eq!(first.id, "demo.echo.0");
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
    assert_eq!(state.instances["demo.echo.0"].state, InstanceState::Pending);
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
                        id: "demo.echo.0".into(),
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
                        id: "demo.echo.0".into(),
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

#[test]
fn instance_ids_of_x_y_z_and_x_y_z_do_not_collide() {
    use super::supervision::instance_id;
    assert_ne!(instance_id("x-y", "z", 0), instance_id("x", "y-z", 0));
    assert_eq!(instance_id("x-y", "z", 0), "x-y.z.0");
    assert_eq!(instance_id("x", "y-z", 0), "x.y-z.0");
}

fn put_service(state: &mut State, index: u64, namespace: &str, name: &str) {
    let outcome = state
        .apply(
            index,
            &req(
                index as u128 + 10_000,
                Command::PutService {
                    namespace: namespace.into(),
                    name: name.into(),
                    spec: spec(1),
                    expected_version: None,
                },
            ),
        )
        .outcome;
    assert!(matches!(outcome, Outcome::Service(_)), "{outcome:?}");
}

fn place_slot(namespace: &str, service: &str, slot: u32, node: &str) -> Command {
    Command::PlaceSlot {
        namespace: namespace.into(),
        service: service.into(),
        slot,
        node: node.into(),
    }
}

#[test]
fn services_x_y_z_and_x_y_z_keep_their_own_instances() {
    let mut state = State::default();
    deploy_with_node(&mut state);
    put_service(&mut state, 5, "x-y", "z");
    put_service(&mut state, 6, "x", "y-z");
    state.apply(7, &req(7, place_slot("x-y", "z", 0, "n1")));
    state.apply(8, &req(8, place_slot("x", "y-z", 0, "n2")));
    let a = state.service_instances("x-y", "z");
    let b = state.service_instances("x", "y-z");
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!((a[0].node.as_deref(), a[0].generation), (Some("n1"), 1));
    assert_eq!((b[0].node.as_deref(), b[0].generation), (Some("n2"), 1));
    assert_ne!(a[0].id, b[0].id);
}

#[test]
fn a_legacy_instance_moves_to_its_unique_id_with_a_new_generation() {
    let mut state = State::default();
    deploy_with_node(&mut state);
    // Written by an older leader: the legacy id, replayed as it was.
    let legacy = state.apply(
        10,
        &req(
            1,
            Command::PlaceInstance {
                namespace: "demo".into(),
                service: "echo".into(),
                slot: 0,
                node: "n1".into(),
            },
        ),
    );
    let Outcome::Instance(legacy) = legacy.outcome else {
        panic!("{legacy:?}")
    };
    assert_eq!(legacy.id, "demo-echo-0");
    let moved = state.apply(11, &req(2, place(0, "n2"))).outcome;
    let Outcome::Instance(moved) = moved else {
        panic!("{moved:?}")
    };
    assert_eq!(moved.id, "demo.echo.0");
    assert_eq!((moved.generation, moved.node.as_deref()), (2, Some("n2")));
    assert!(!state.instances.contains_key("demo-echo-0"));
    assert_eq!(state.service_instances("demo", "echo").len(), 1);
}

#[test]
fn a_legacy_id_of_another_service_is_left_alone() {
    let mut state = State::default();
    deploy_with_node(&mut state);
    put_service(&mut state, 5, "x-y", "z");
    put_service(&mut state, 6, "x", "y-z");
    state.apply(
        7,
        &req(
            7,
            Command::PlaceInstance {
                namespace: "x-y".into(),
                service: "z".into(),
                slot: 0,
                node: "n1".into(),
            },
        ),
    );
    // The other service's slot 0 has the same legacy id, "x-y-z-0".
    state.apply(8, &req(8, place_slot("x", "y-z", 0, "n2")));
    assert_eq!(state.instances["x-y-z-0"].namespace, "x-y");
    assert_eq!(state.service_instances("x-y", "z").len(), 1);
    assert_eq!(state.service_instances("x", "y-z").len(), 1);
}

fn limited(limits: &limits::Limits, command: Command) -> Command {
    Command::WithLimits {
        limits: limits.clone(),
        command: Box::new(command),
    }
}

fn refused_code(outcome: &Outcome) -> (&str, &str) {
    match outcome {
        Outcome::Refused { code, message } => (code.as_str(), message.as_str()),
        other => panic!("not refused: {other:?}"),
    }
}

fn service_put(namespace: &str, name: &str, spec: ServiceSpec) -> Command {
    Command::PutService {
        namespace: namespace.into(),
        name: name.into(),
        spec,
        expected_version: None,
    }
}

#[test]
fn the_service_quota_is_enforced_by_apply_and_names_max_services() {
    let limits = limits::Limits {
        max_services: 2,
        ..Default::default()
    };
    let mut state = State::default();
    for (i, name) in ["a", "b"].into_iter().enumerate() {
        let outcome = state
            .apply(
                i as u64 + 1,
                &req(
                    i as u128 + 1,
                    limited(&limits, service_put("ns", name, spec(1))),
                ),
            )
            .outcome;
        assert!(matches!(outcome, Outcome::Service(_)), "{outcome:?}");
    }
    let third = state
        .apply(
            3,
            &req(3, limited(&limits, service_put("ns", "c", spec(1)))),
        )
        .outcome;
    let (code, message) = refused_code(&third);
    assert_eq!(code, limits::QUOTA_EXCEEDED);
    assert!(message.contains("max_services"), "{message}");
    assert_eq!(state.services.len(), 2, "nothing was added");
    // Updating a service that exists is no new service.
    let update = state
        .apply(
            4,
            &req(4, limited(&limits, service_put("ns", "a", spec(2)))),
        )
        .outcome;
    assert!(matches!(update, Outcome::Service(_)), "{update:?}");
}

#[test]
fn the_instance_quota_counts_replicas_of_all_services() {
    let limits = limits::Limits {
        max_instances: 5,
        ..Default::default()
    };
    let mut state = State::default();
    state.apply(
        1,
        &req(1, limited(&limits, service_put("ns", "a", spec(3)))),
    );
    let over = state
        .apply(
            2,
            &req(2, limited(&limits, service_put("ns", "b", spec(3)))),
        )
        .outcome;
    assert!(refused_code(&over).1.contains("max_instances"));
    let scale = state
        .apply(
            3,
            &req(
                3,
                limited(
                    &limits,
                    Command::ScaleService {
                        namespace: "ns".into(),
                        name: "a".into(),
                        replicas: 6,
                    },
                ),
            ),
        )
        .outcome;
    assert!(refused_code(&scale).1.contains("max_instances"));
    assert_eq!(state.services[&("ns".into(), "a".into())].spec.replicas, 3);
    let down = state
        .apply(
            4,
            &req(
                4,
                limited(
                    &limits,
                    Command::ScaleService {
                        namespace: "ns".into(),
                        name: "a".into(),
                        replicas: 5,
                    },
                ),
            ),
        )
        .outcome;
    assert!(matches!(down, Outcome::Service(_)), "{down:?}");
}

#[test]
fn kv_quotas_bound_keys_and_bytes_and_keep_what_exists() {
    let limits = limits::Limits {
        max_kv_keys: 2,
        max_kv_bytes: 10,
        ..Default::default()
    };
    let mut state = State::default();
    assert_eq!(
        state
            .apply(1, &req(1, limited(&limits, put("a", "1234", None))))
            .outcome,
        Outcome::Kv(true)
    );
    assert_eq!(
        state
            .apply(2, &req(2, limited(&limits, put("b", "1234", None))))
            .outcome,
        Outcome::Kv(true)
    );
    let third = state
        .apply(3, &req(3, limited(&limits, put("c", "1", None))))
        .outcome;
    assert!(refused_code(&third).1.contains("max_kv_keys"));
    let bigger = state
        .apply(4, &req(4, limited(&limits, put("a", "1234567", None))))
        .outcome;
    assert!(refused_code(&bigger).1.contains("max_kv_bytes"));
    // Replacing within the total is fine; deleting frees room.
    assert_eq!(
        state
            .apply(5, &req(5, limited(&limits, put("a", "123456", None))))
            .outcome,
        Outcome::Kv(true)
    );
    assert_eq!(state.kv_bytes, 10);
    state.apply(
        6,
        &req(
            6,
            Command::KvDelete {
                key: "b".into(),
                cas: None,
                recurse: false,
            },
        ),
    );
    assert_eq!(state.kv_bytes, 6);
    assert_eq!(
        state
            .apply(7, &req(7, limited(&limits, put("c", "1", None))))
            .outcome,
        Outcome::Kv(true)
    );
    assert_eq!(State::from_image(state.to_image()).kv_bytes, state.kv_bytes);
}

#[test]
fn sizes_and_health_rules_are_checked_by_apply_under_limits() {
    let limits = limits::Limits::default();
    let mut state = State::default();
    let mut long_image = spec(1);
    long_image.image = "i".repeat(600);
    let outcome = state
        .apply(
            1,
            &req(1, limited(&limits, service_put("ns", "a", long_image))),
        )
        .outcome;
    let (code, message) = refused_code(&outcome);
    assert_eq!(code, limits::LIMIT_EXCEEDED);
    assert!(message.contains("max_image_bytes"), "{message}");
    let mut ssrf = spec(1);
    ssrf.health = Some(
        serde_json::from_value(serde_json::json!({"port": "http", "path": "@127.0.0.1:2375/"}))
            .unwrap(),
    );
    let outcome = state
        .apply(
            2,
            &req(2, limited(&limits, service_put("ns", "a", ssrf.clone()))),
        )
        .outcome;
    assert!(
        matches!(&outcome, Outcome::Rejected(r) if r.contains("health.path")),
        "{outcome:?}"
    );
    assert!(state.services.is_empty());
    // An entry written before limits existed replays as it was applied.
    let replayed = state
        .apply(3, &req(3, service_put("ns", "a", ssrf)))
        .outcome;
    assert!(matches!(replayed, Outcome::Service(_)), "{replayed:?}");
}

#[test]
fn event_messages_are_truncated_not_refused() {
    let mut state = State::default();
    let outcome = state
        .apply(
            1,
            &req(
                1,
                Command::RecordEvent {
                    kind: "k".repeat(1000),
                    subject: "s".into(),
                    message: "m".repeat(100_000),
                },
            ),
        )
        .outcome;
    assert_eq!(outcome, Outcome::Done);
    let event = state.events.back().unwrap();
    assert!(event.message.len() <= limits::MAX_EVENT_MESSAGE_BYTES);
    assert!(event.message.starts_with("mmm") && event.message.ends_with('…'));
    assert!(event.kind.len() <= limits::MAX_EVENT_FIELD_BYTES);
}

fn remove_node(name: &str, force: bool) -> Command {
    Command::RemoveNode {
        name: name.into(),
        force,
    }
}

#[test]
fn a_node_with_instances_is_not_removed_without_force() {
    let mut state = State::default();
    deploy_with_node(&mut state);
    state.apply(10, &req(1, place(0, "n1")));
    let outcome = state.apply(11, &req(2, remove_node("n1", false))).outcome;
    let (code, message) = refused_code(&outcome);
    assert_eq!(code, supervision::NODE_NOT_DRAINED);
    assert!(message.contains("demo.echo.0"), "{message}");
    assert!(state.nodes.contains_key("n1"));
    // A node nothing is placed on goes at once.
    assert_eq!(
        state.apply(12, &req(3, remove_node("n2", false))).outcome,
        Outcome::Deleted
    );
    assert!(!state.nodes.contains_key("n2"));
}

#[test]
fn a_forced_node_removal_retires_the_node_until_its_instances_moved() {
    let mut state = State::default();
    deploy_with_node(&mut state);
    state.apply(10, &req(1, place(0, "n1")));
    let outcome = state.apply(11, &req(2, remove_node("n1", true))).outcome;
    let Outcome::Node(node) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(node.state, NodeState::Retired);
    // Nothing new lands there and liveness no longer changes it.
    let placed = state.apply(12, &req(3, place(1, "n1"))).outcome;
    assert!(matches!(placed, Outcome::Rejected(_)), "{placed:?}");
    let revived = state
        .apply(
            13,
            &req(
                4,
                Command::SetNodeState {
                    name: "n1".into(),
                    state: NodeState::Ready,
                    reason: "pings".into(),
                },
            ),
        )
        .outcome;
    assert!(matches!(revived, Outcome::Rejected(_)), "{revived:?}");
    // The supervisor moves the instance; then the node controller's forced
    // removal drops the node.
    state.apply(14, &req(5, place(0, "n2")));
    assert_eq!(state.instances["demo.echo.0"].node.as_deref(), Some("n2"));
    assert_eq!(
        state.apply(15, &req(6, remove_node("n1", true))).outcome,
        Outcome::Deleted
    );
    assert!(!state.nodes.contains_key("n1"));
}

#[test]
fn a_down_node_is_not_removed_without_force() {
    let mut state = State::default();
    deploy_with_node(&mut state);
    state.apply(
        10,
        &req(
            1,
            Command::SetNodeState {
                name: "n1".into(),
                state: NodeState::Down,
                reason: "silent".into(),
            },
        ),
    );
    let outcome = state.apply(11, &req(2, remove_node("n1", false))).outcome;
    assert_eq!(refused_code(&outcome).0, supervision::NODE_NOT_DRAINED);
    let retired = state.apply(12, &req(3, remove_node("n1", true))).outcome;
    assert!(matches!(retired, Outcome::Node(n) if n.state == NodeState::Retired));
}

const MANAGER_TEMPLATE: &str = r#"{"cluster":"demo","state_dir":"/srv/rv","machines":[{"name":"local","docker_endpoint":"unix:///var/run/docker.sock","address":"127.0.0.1"}],"managers":[{"id":1,"machine":"local","api_port":7301,"peer_port":7311,"dns_port":7321}]}"#;

#[test]
fn the_manager_template_is_validated_once_when_it_is_recorded() {
    let mut state = State::default();
    let template = ManagerTemplate::from_json(MANAGER_TEMPLATE).unwrap();
    let put = |template: ManagerTemplate| Command::PutManagerTemplate { template };
    assert_eq!(
        state.apply(1, &req(1, put(template.clone()))).outcome,
        Outcome::Done
    );
    assert_eq!(state.manager_template.as_ref(), Some(&template));

    let mut broken = template.clone();
    broken.managers[0].machine = "nowhere".into();
    let outcome = state.apply(2, &req(2, put(broken))).outcome;
    assert!(
        matches!(&outcome, Outcome::Rejected(reason) if reason.contains("unknown machine")),
        "{outcome:?}"
    );
    assert_eq!(state.manager_template.as_ref(), Some(&template));

    // Entries written before the template was typed carry it as JSON.
    let json = |json: String| Command::PutManagerTemplateJson { json };
    let outcome = state.apply(3, &req(3, json("{not json".into()))).outcome;
    assert!(matches!(outcome, Outcome::Rejected(_)), "{outcome:?}");
    let mut renamed = template.clone();
    renamed.cluster = "other".into();
    let outcome = state
        .apply(4, &req(4, json(serde_json::to_string(&renamed).unwrap())))
        .outcome;
    assert_eq!(outcome, Outcome::Done);
    assert_eq!(state.manager_template.as_ref(), Some(&renamed));

    let image = crate::codec::encode(&migrate::Versioned(state.to_image())).unwrap();
    let restored = State::from_image(
        crate::codec::decode::<migrate::Versioned<StateImage>>(&image)
            .unwrap()
            .0,
    );
    assert_eq!(restored.manager_template, state.manager_template);
}

fn put_spec(state: &mut State, index: u64, spec: ServiceSpec) -> Outcome {
    state
        .apply(
            index,
            &req(
                index as u128,
                Command::PutService {
                    namespace: "demo".into(),
                    name: "web".into(),
                    spec,
                    expected_version: None,
                },
            ),
        )
        .outcome
}

fn image_spec(image: &str, extra: serde_json::Value) -> ServiceSpec {
    let mut json = serde_json::json!({ "image": image, "replicas": 2 });
    json.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    serde_json::from_value(json).unwrap()
}

fn web(state: &State) -> Service {
    state.services[&("demo".to_string(), "web".to_string())].clone()
}

#[test]
fn a_rollback_brings_back_an_earlier_spec_and_its_image_with_the_current_replicas() {
    const PIN_ONE: &str =
        "echo@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut state = State::default();
    put_spec(&mut state, 10, image_spec("echo:1", serde_json::json!({})));
    let pin = Command::PinImage {
        namespace: "demo".into(),
        service: "web".into(),
        version: 10,
        reference: PIN_ONE.into(),
    };
    assert_eq!(state.apply(11, &req(11, pin)).outcome, Outcome::Done);
    let first_template = state.template_of(&web(&state));
    put_spec(&mut state, 20, image_spec("echo:2", serde_json::json!({})));
    let scale = Command::ScaleService {
        namespace: "demo".into(),
        name: "web".into(),
        replicas: 5,
    };
    state.apply(25, &req(25, scale));
    let rollback = |to: Option<u64>| Command::RollbackService {
        namespace: "demo".into(),
        name: "web".into(),
        to,
        expected_version: None,
        revert: None,
    };
    for (to, refusal) in [(Some(20), "is the one"), (Some(15), "kept: 10, 20")] {
        let outcome = state
            .apply(26, &req(26 + to.unwrap() as u128, rollback(to)))
            .outcome;
        assert!(
            matches!(&outcome, Outcome::Rejected(reason) if reason.contains(refusal)),
            "{outcome:?}"
        );
    }
    let outcome = state.apply(30, &req(30, rollback(None))).outcome;
    let Outcome::Service(service) = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(service.version, 30);
    assert_eq!(service.spec.image, "echo:1");
    assert_eq!(service.spec.replicas, 5, "the current replica count stays");
    assert_eq!(
        state.images.pin("demo", "web", 30),
        Some(PIN_ONE),
        "the image it ran, not the tag again"
    );
    assert_eq!(
        state.template_of(&service),
        first_template,
        "the first version's containers are its own again"
    );
    let history = state.history.revisions("demo", "web");
    let versions: Vec<u64> = history.iter().map(|r| r.version).collect();
    assert_eq!(versions, [10, 20, 30]);
    assert_eq!(history[2].cause, history::Cause::Rollback { to: 10 });
    assert_eq!(history[2].pin.as_deref(), Some(PIN_ONE));
    assert!(state
        .events
        .iter()
        .any(|e| e.kind == "service.rolled_back" && e.message.contains("version 10")));

    // Kept across a snapshot; gone with the service.
    let bytes = crate::codec::encode(&state.to_image()).unwrap();
    let restored = State::from_image(crate::codec::decode(&bytes).unwrap());
    assert_eq!(restored.history, state.history);
    let delete = Command::DeleteService {
        namespace: "demo".into(),
        name: "web".into(),
        expected_version: None,
    };
    state.apply(40, &req(40, delete));
    assert!(state.history.revisions("demo", "web").is_empty());
}

#[test]
fn a_failed_rollout_reverts_once_to_the_latest_version_that_rolled_out() {
    let mut state = State::default();
    let revert = serde_json::json!({
        "replicas": 0,
        "update": { "on_failure": "revert", "history": 5 },
        "hooks": { "test": { "command": ["true"] } },
    });
    put_spec(&mut state, 10, image_spec("echo:1", revert.clone()));
    assert_eq!(
        state.rollout_standing(&web(&state)),
        rollouts::Standing::Going,
        "its test has not run"
    );
    let verdict = |version: u64, passed: bool| Command::RecordTestVerdict {
        namespace: "demo".into(),
        service: "web".into(),
        verdict: hooks::TestVerdict {
            version,
            passed,
            instance: "demo.web.0".into(),
            summary: if passed { "exited 0" } else { "exited 3" }.into(),
            at_ms: 1,
        },
    };
    state.apply(11, &req(11, verdict(10, true)));
    assert_eq!(
        state.rollout_standing(&web(&state)),
        rollouts::Standing::Finished { version: 10 }
    );
    let settle = Command::SettleRevision {
        namespace: "demo".into(),
        name: "web".into(),
        version: 10,
    };
    state.apply(12, &req(12, settle));
    assert_eq!(
        state.rollout_standing(&web(&state)),
        rollouts::Standing::Settled
    );

    put_spec(&mut state, 20, image_spec("echo:2", revert.clone()));
    assert_eq!(state.revert_due(&web(&state)), None, "not failed yet");
    state.apply(21, &req(21, verdict(20, false)));
    let (to, reason) = state.revert_due(&web(&state)).expect("a revert is due");
    assert_eq!(to, 10);
    assert!(
        reason.contains("version 20") && reason.contains("exited 3"),
        "{reason}"
    );

    let rollback = Command::RollbackService {
        namespace: "demo".into(),
        name: "web".into(),
        to: Some(to),
        expected_version: Some(20),
        revert: Some(reason),
    };
    assert!(matches!(
        state.apply(22, &req(22, rollback.clone())).outcome,
        Outcome::Service(_)
    ));
    assert_eq!(web(&state).spec.image, "echo:1");
    assert!(matches!(
        state.history.newest("demo", "web").unwrap().cause,
        history::Cause::Revert {
            from: 20,
            to: 10,
            ..
        }
    ));
    // Written again (a second leader's view): the version moved on.
    assert!(matches!(
        state.apply(23, &req(23, rollback)).outcome,
        Outcome::VersionMismatch { current: 22 }
    ));
    // The revert's own test fails: it is never reverted, it pauses.
    state.apply(24, &req(24, verdict(22, false)));
    assert!(matches!(
        state.rollout_standing(&web(&state)),
        rollouts::Standing::Failed { .. }
    ));
    assert_eq!(state.revert_due(&web(&state)), None);
    assert!(state.events.iter().any(|e| e.kind == "service.reverted"));

    // A spec that says pause never reverts.
    put_spec(
        &mut state,
        30,
        image_spec("echo:3", serde_json::json!({"replicas": 0})),
    );
    state.apply(31, &req(31, verdict(30, false)));
    assert_eq!(state.revert_due(&web(&state)), None);
}

#[test]
fn a_spec_written_before_canaries_had_a_weight_keeps_its_strategy_and_the_port_weight() {
    use migrate::Migrate;
    let mut spec = image_spec(
        "echo:1",
        serde_json::json!({"update": {"canary": 1, "max_surge": 2}}),
    );
    spec.update.canary_weight = 0;
    let types::ServiceSpec {
        kind,
        image,
        pull,
        command,
        env,
        secret_env,
        ports,
        replicas,
        resources,
        placement,
        health,
        restart,
        update,
        addresses,
        hostname,
        volumes,
        on_node_loss,
        hooks,
    } = spec.clone();
    let old = types::service_spec_v5::ServiceSpec {
        kind,
        image,
        pull,
        command,
        env,
        secret_env,
        ports,
        replicas,
        resources,
        placement,
        health,
        restart,
        update: types::update_strategy_v2::UpdateStrategy {
            max_parallel: update.max_parallel,
            on_failure: update.on_failure,
            history: update.history,
            min_healthy_ms: update.min_healthy_ms,
            max_surge: update.max_surge,
            canary: update.canary,
        },
        addresses,
        hostname,
        volumes,
        on_node_loss,
        hooks,
    };
    let decoded = ServiceSpec::decode(&Migrate::encode(&old).unwrap()).unwrap();
    assert_eq!(decoded, spec);
    assert_eq!((decoded.update.canary, decoded.update.max_surge), (1, 2));
    // Its weight is not what runs: the template stays.
    let mut weighted = spec.clone();
    weighted.update.canary_weight = 9;
    assert_eq!(
        supervision::template_fingerprint_pinned(&weighted, None),
        supervision::template_fingerprint_pinned(&spec, None)
    );
}

#[test]
fn a_spec_written_before_rollouts_could_revert_decodes_with_the_defaults() {
    use migrate::Migrate;
    let old = types::service_spec_v4::ServiceSpec {
        kind: ServiceKind::Container,
        image: "echo:1".into(),
        pull: Default::default(),
        command: vec![],
        env: Default::default(),
        secret_env: Default::default(),
        ports: vec![],
        replicas: 3,
        resources: Default::default(),
        placement: Default::default(),
        health: None,
        restart: Default::default(),
        update: types::update_strategy_v1::UpdateStrategy { max_parallel: 2 },
        addresses: vec![],
        hostname: None,
        volumes: vec![],
        on_node_loss: Default::default(),
        hooks: Default::default(),
    };
    let bytes = Migrate::encode(&old).unwrap();
    let spec = ServiceSpec::decode(&bytes).unwrap();
    assert_eq!(spec.replicas, 3);
    assert_eq!(spec.update.max_parallel, 2);
    assert_eq!(spec.update.on_failure, OnFailure::Pause);
    assert_eq!(spec.update.history, history::DEFAULT_HISTORY);
}

#[test]
fn surge_slots_are_refused_with_volumes_and_placed_up_to_the_surge() {
    let mut state = State::default();
    deploy_with_node(&mut state);
    let with_volume = image_spec(
        "echo:1",
        serde_json::json!({
            "update": { "max_surge": 1 },
            "volumes": [{ "name": "data", "mount": "/data" }],
        }),
    );
    let outcome = put_spec(&mut state, 10, with_volume);
    assert!(
        matches!(&outcome, Outcome::Rejected(r) if r.contains("max_surge")),
        "{outcome:?}"
    );
    put_spec(
        &mut state,
        11,
        image_spec(
            "echo:1",
            serde_json::json!({ "update": { "max_surge": 1 } }),
        ),
    );
    for (slot, placed) in [(2, true), (3, false)] {
        let outcome = state
            .apply(
                20 + u64::from(slot),
                &req(20 + u128::from(slot), place_slot("demo", "web", slot, "n1")),
            )
            .outcome;
        assert_eq!(
            matches!(outcome, Outcome::Rejected(_)),
            !placed,
            "slot {slot}: {outcome:?}"
        );
    }
}

#[test]
fn a_canary_deploy_is_held_until_promoted_and_a_rollback_is_never_a_canary() {
    let mut state = State::default();
    let canary = serde_json::json!({ "replicas": 3, "update": { "canary": 1 } });
    put_spec(&mut state, 10, image_spec("echo:1", canary.clone()));
    assert!(state.history.canary_held("demo", "web"));
    let promote = Command::PromoteCanary {
        namespace: "demo".into(),
        name: "web".into(),
    };
    assert!(matches!(
        state.apply(11, &req(11, promote.clone())).outcome,
        Outcome::Service(_)
    ));
    assert!(!state.history.canary_held("demo", "web"));
    let again = state.apply(12, &req(12, promote.clone())).outcome;
    assert!(
        matches!(&again, Outcome::Refused { code, .. } if code == history::NO_CANARY),
        "{again:?}"
    );
    put_spec(&mut state, 20, image_spec("echo:2", canary));
    assert!(state.history.canary_held("demo", "web"));
    let back = Command::RollbackService {
        namespace: "demo".into(),
        name: "web".into(),
        to: None,
        expected_version: None,
        revert: None,
    };
    state.apply(21, &req(21, back));
    assert!(
        !state.history.canary_held("demo", "web"),
        "going back to a known version rolls out whole"
    );
    let too_many = image_spec(
        "echo:3",
        serde_json::json!({ "replicas": 2, "update": { "canary": 2 } }),
    );
    assert!(matches!(
        put_spec(&mut state, 30, too_many),
        Outcome::Rejected(_)
    ));
}

fn put_in(namespace: &str, name: &str, spec: ServiceSpec) -> Command {
    Command::PutService {
        namespace: namespace.into(),
        name: name.into(),
        spec,
        expected_version: None,
    }
}

#[test]
fn a_namespace_clones_into_an_empty_one_in_one_write_sharing_what_it_is_told() {
    let mut state = State::default();
    let external: ServiceSpec =
        serde_json::from_value(serde_json::json!({"kind": "external", "addresses": ["10.0.0.9"]}))
            .unwrap();
    state.apply(10, &req(1, put_in("a", "web", spec(3))));
    state.apply(11, &req(2, put_in("a", "db", spec(1))));
    state.apply(12, &req(3, put_in("a", "mail", external.clone())));
    state.apply(13, &req(4, put_in("c", "other", spec(1))));
    let clone = |to: &str, shared: &[&str]| Command::CloneNamespace {
        from: "a".into(),
        to: to.into(),
        shared: shared.iter().map(|s| s.to_string()).collect(),
        domain: "cluster.local".into(),
    };
    assert_eq!(
        state.apply(20, &req(5, clone("b", &["db"]))).outcome,
        Outcome::Done
    );
    let b = |name: &str| state.services[&("b".to_string(), name.to_string())].clone();
    assert_eq!(b("web").spec, spec(3));
    assert_eq!((b("web").version, b("web").create_index), (20, 20));
    assert_eq!(b("mail").spec, external);
    let db = b("db").spec;
    assert_eq!(db.kind, ServiceKind::External);
    assert_eq!(db.hostname.as_deref(), Some("db.a.svc.cluster.local"));
    assert_eq!(state.history.revisions("b", "web").len(), 1);
    // The original is untouched; a clone into a namespace with services,
    // of an empty namespace or sharing an unknown service changes nothing.
    assert_eq!(state.services[&("a".into(), "db".into())].spec, spec(1));
    let before = state.services.len();
    assert!(matches!(
        state.apply(21, &req(6, clone("c", &[]))).outcome,
        Outcome::Refused { ref code, .. } if code == topology::NAMESPACE_NOT_EMPTY
    ));
    assert!(matches!(
        state.apply(22, &req(7, clone("d", &["nope"]))).outcome,
        Outcome::Rejected(_)
    ));
    let empty = Command::CloneNamespace {
        from: "zz".into(),
        to: "d".into(),
        shared: Vec::new(),
        domain: "cluster.local".into(),
    };
    assert!(matches!(
        state.apply(23, &req(8, empty)).outcome,
        Outcome::Rejected(_)
    ));
    assert_eq!(state.services.len(), before);
}

#[test]
fn a_saved_topology_keeps_its_versions_without_secret_values() {
    let mut state = State::default();
    let mut secret = spec(1);
    secret
        .secret_env
        .0
        .insert("PASSWORD".into(), "sealed-or-not".into());
    let topology = |n: usize| topology::Topology {
        source: Some("a".into()),
        exported_index: Some(n as u64),
        services: vec![topology::TopologyService {
            name: "web".into(),
            spec: secret.clone(),
        }],
    };
    for n in 0..(topology::VERSIONS_KEPT + 3) {
        let saved = Command::PutTopology {
            name: "shop".into(),
            topology: topology(n),
        };
        assert_eq!(
            state
                .apply(100 + n as u64, &req(n as u128 + 1, saved))
                .outcome,
            Outcome::Done
        );
    }
    let versions = &state.topologies.topologies["shop"];
    assert_eq!(versions.len(), topology::VERSIONS_KEPT);
    assert_eq!(versions[0].version, 103);
    let newest = state.topologies.get("shop", None).unwrap();
    assert_eq!(
        newest.topology.services[0].spec.secret_env.0["PASSWORD"],
        crate::secrets::REDACTED
    );
    assert!(state.topologies.get("shop", Some(100)).is_none());
    assert!(state.topologies.get("shop", Some(110)).is_some());
    // Bad names and specs are refused.
    let bad = Command::PutTopology {
        name: "Bad_Name".into(),
        topology: topology(0),
    };
    assert!(matches!(
        state.apply(200, &req(99, bad)).outcome,
        Outcome::Rejected(_)
    ));
    let mut twice = topology(0);
    twice.services.push(twice.services[0].clone());
    let twice = Command::PutTopology {
        name: "x".into(),
        topology: twice,
    };
    assert!(matches!(
        state.apply(201, &req(100, twice)).outcome,
        Outcome::Rejected(_)
    ));
    // Survives a snapshot.
    let restored = State::from_image(state.to_image());
    assert_eq!(restored.topologies, state.topologies);
    assert_eq!(restored.releases, state.releases);
}
