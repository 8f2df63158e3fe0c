//! The pure decision of one service's reconcile: from the desired state
//! (service, instances, inventory) and what the engines report, the list of
//! actions that moves the world one step closer. No I/O and no clock: the
//! controller executes the actions (Raft writes first, then engines) and
//! times crash restarts.

use std::collections::{BTreeMap, BTreeSet};

use super::labels;
use super::placement::{choose_node, Loads};
use crate::runtime::{ContainerInfo, ContainerState};
use crate::state::{Instance, InstanceState, Node, NodeState, RunState, Service, ServiceKind};

/// One step for the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Record through Raft that `slot` runs on `node` (new generation).
    Place { slot: u32, node: String },
    /// Placement impossible for now; reported, retried on the next change.
    /// No node can take the slot; `needs_capacity` when nodes match but
    /// are full, so one more node would help.
    Unplaceable {
        slot: u32,
        reason: String,
        needs_capacity: bool,
    },
    /// Create and start the container of the instance's current generation.
    Create { instance: Instance },
    /// Restart the container of the current generation (a crash: after
    /// the crash backoff).
    Restart {
        instance: Instance,
        container: ContainerInfo,
        reason: RestartReason,
    },
    /// Write the observed state of a running (or stopped) container.
    Report {
        instance: Instance,
        container: Option<ContainerInfo>,
        state: InstanceState,
    },
    /// Stop the container (service stopped); it is kept for a later start.
    Stop { node: String, container_id: String },
    /// Remove a container no current instance owns (orphan, old
    /// generation, scaled away).
    Remove {
        node: String,
        container_id: String,
        why: String,
    },
    /// Forget an instance whose slot was scaled away.
    Forget { id: String, generation: u64 },
}

/// Why a container is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartReason {
    /// It exited on its own.
    Crashed,
    /// It failed its health checks.
    Unhealthy,
    /// `service restart`, or a start after `service stop`.
    Requested,
}

/// Everything one service's plan looks at.
pub struct PlanInput<'a> {
    pub service: &'a Service,
    /// The template of the service's current version; `None` while its
    /// image is being resolved: no container is outdated until it is.
    pub template: Option<&'a str>,
    pub instances: Vec<&'a Instance>,
    pub nodes: &'a BTreeMap<String, Node>,
    /// Containers labelled with this service, with the node they are on.
    pub observed: Vec<(&'a str, &'a ContainerInfo)>,
    /// Nodes whose containers were listed successfully this round.
    pub reachable: &'a BTreeSet<String>,
    /// Instances whose current container passed its health check.
    pub healthy: &'a BTreeSet<String>,
    /// Instances whose current container failed its health check past the retries.
    pub unhealthy: &'a BTreeSet<String>,
    /// The service's test hook has not passed for its current version: its
    /// running instances of the current template still count as a
    /// replacement in flight, so no further one starts.
    pub held_for_test: bool,
    /// Instances of the current template that have not yet run the
    /// spec's `update.min_healthy_ms`: still a replacement in flight.
    pub settling: &'a BTreeSet<String>,
    /// The newest version is a canary deploy not yet promoted: only
    /// `update.canary` instances run it.
    pub canary_held: bool,
}

/// How many surge slots (`update.max_surge`, slots `wanted..`) a rollout
/// runs beside the service's own: all of them while one of its own slots
/// runs an older template, and, once they exist, until every own slot
/// runs the current one; none otherwise.
fn surge_slots(input: &PlanInput, wanted: u32) -> u32 {
    let max = input.service.spec.update.max_surge;
    if max == 0 || wanted == 0 {
        return 0;
    }
    let own = || input.instances.iter().filter(|i| i.slot < wanted);
    let surging = input
        .instances
        .iter()
        .any(|i| i.slot >= wanted && i.slot < wanted + max);
    let Some(template) = input.template else {
        // The version's image is being resolved: nothing changes.
        return if surging { max } else { 0 };
    };
    let outdated = own().any(|i| i.template != template);
    let unsettled = own().count() < wanted as usize
        || own().any(|i| i.state != InstanceState::Running || i.template != template);
    if outdated || (surging && unsettled) {
        max
    } else {
        0
    }
}

/// Plans one service. Each slot it places is counted into `loads` at
/// once, so the next placement (of this plan or a later one sharing the
/// book) sees it.
pub fn plan(input: &PlanInput, loads: &mut Loads) -> Vec<Action> {
    let service = input.service;
    // An external service runs nothing: every slot is scaled away.
    let wanted = if service.spec.kind == ServiceKind::External {
        0
    } else {
        service.spec.replicas
    };
    // The slots planned: the service's own and, while a rollout goes on,
    // its surge slots.
    let replicas = wanted + surge_slots(input, wanted);
    let mut actions = Vec::new();
    let by_slot: BTreeMap<u32, &Instance> = input.instances.iter().map(|i| (i.slot, *i)).collect();

    // Containers: which belong to a current instance, which are orphans.
    let mut owned: BTreeMap<&str, (&str, &ContainerInfo)> = BTreeMap::new();
    // Slots with a container of an earlier generation still there: one
    // with volumes creates its next container only once that one is gone,
    // so a volume is mounted by one container at a time.
    let mut stale_slots: BTreeSet<u32> = BTreeSet::new();
    for (node, container) in &input.observed {
        // A service deleted and made again under the same name has the
        // same instance ids and generations: a container made from a spec
        // older than this service is its predecessor's, never its own.
        let this_service = labels::spec_version(&container.labels)
            .is_none_or(|version| version >= service.create_index);
        let current = labels::owner(&container.labels).and_then(|(id, generation)| {
            input.instances.iter().find(|i| {
                this_service
                    && i.id == id
                    && i.generation == generation
                    && i.node.as_deref() == Some(*node)
                    && i.slot < replicas
            })
        });
        match current {
            Some(instance) if !owned.contains_key(instance.id.as_str()) => {
                owned.insert(instance.id.as_str(), (node, container));
            }
            _ => {
                let slot = labels::owner(&container.labels).and_then(|(id, _)| {
                    input.instances.iter().find(|i| i.id == id).map(|i| i.slot)
                });
                stale_slots.extend(slot);
                actions.push(Action::Remove {
                    node: node.to_string(),
                    container_id: container.id.clone(),
                    why: format!(
                        "container {} belongs to no current instance",
                        container.name
                    ),
                })
            }
        }
    }

    // Slots scaled away.
    for instance in input.instances.iter().filter(|i| i.slot >= replicas) {
        actions.push(Action::Forget {
            id: instance.id.clone(),
            generation: instance.generation,
        });
    }

    // Spread counts of this service (current placements).
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for instance in input.instances.iter().filter(|i| i.slot < replicas) {
        if let Some(node) = &instance.node {
            *counts.entry(node.clone()).or_default() += 1;
        }
    }

    // Rolling update budget: replacements in flight are instances of an
    // old template that are not running yet, or new ones still starting.
    let max_parallel = service.spec.update.max_parallel.max(1) as usize;
    let in_flight = |i: &Instance| {
        matches!(
            i.state,
            InstanceState::Pending
                | InstanceState::Starting
                | InstanceState::CrashLoop
                | InstanceState::Exited
                | InstanceState::Unhealthy
        )
    };
    let untested = |i: &Instance| {
        (input.held_for_test || input.settling.contains(&i.id))
            && i.state == InstanceState::Running
            && input.template == Some(i.template.as_str())
    };
    let mut updating = input
        .instances
        .iter()
        .filter(|i| i.slot < replicas && (in_flight(i) || untested(i)))
        .count();
    // A canary deploy not yet promoted: its canaries hold the whole
    // budget once there are enough of them.
    if input.canary_held {
        let canaries = input
            .instances
            .iter()
            .filter(|i| i.slot < replicas && input.template == Some(i.template.as_str()))
            .count();
        if canaries >= service.spec.update.canary as usize {
            updating = usize::MAX;
        }
    }

    // Surge slots first: the new version starts beside the old one
    // before any of the old one is replaced.
    for slot in (wanted..replicas).chain(0..wanted) {
        let Some(instance) = by_slot.get(&slot).copied() else {
            place(&mut actions, input, slot, &[], &mut counts, loads);
            if slot >= wanted {
                updating = updating.saturating_add(1);
            }
            continue;
        };
        let node_name = instance.node.as_deref().unwrap_or("");
        let node = input.nodes.get(node_name);
        let node_ready = node.is_some_and(|n| n.state == NodeState::Ready);
        let mut stays_on_draining_node = false;
        if let Some(lost) = node.filter(|_| !node_ready && service.spec.waits_for_its_node()) {
            // Its data is on that node: the slot stays and waits for it,
            // unless the spec says to start again elsewhere, empty.
            actions.push(Action::Unplaceable {
                slot,
                reason: format!(
                    "waits for node {node_name} ({}): its local volumes are there (on_node_loss = \"wait\")",
                    format!("{:?}", lost.state).to_lowercase()
                ),
                needs_capacity: false,
            });
            // A draining node still runs it: it serves and is supervised
            // there as before. A node that is down shows it waiting.
            stays_on_draining_node = lost.state == NodeState::Draining;
            if !stays_on_draining_node {
                if instance.state != InstanceState::Waiting {
                    actions.push(Action::Report {
                        instance: instance.clone(),
                        container: None,
                        state: InstanceState::Waiting,
                    });
                }
                continue;
            }
        }
        if !node_ready && !stays_on_draining_node {
            if let Some(n) = counts.get_mut(node_name) {
                *n = n.saturating_sub(1);
            }
            place(&mut actions, input, slot, &[node_name], &mut counts, loads);
            continue;
        }
        if !input.reachable.contains(node_name) {
            continue;
        }
        let container = owned.get(instance.id.as_str()).map(|(_, c)| *c);
        if service.run_state == RunState::Stopped {
            match container {
                Some(c) if c.state == ContainerState::Running => actions.push(Action::Stop {
                    node: node_name.to_string(),
                    container_id: c.id.clone(),
                }),
                _ if instance.state != InstanceState::Stopped => actions.push(Action::Report {
                    instance: instance.clone(),
                    container: container.cloned(),
                    state: InstanceState::Stopped,
                }),
                _ => {}
            }
            continue;
        }
        let Some(container) = container else {
            // Its earlier container is being removed (above): the next
            // round, woken by its removal, creates this one — at once,
            // unless the two would share a volume or a fixed host port.
            let exclusive = !service.spec.volumes.is_empty() || service.spec.holds_host_ports();
            if !exclusive || !stale_slots.contains(&slot) {
                actions.push(Action::Create {
                    instance: instance.clone(),
                });
            }
            continue;
        };
        let outdated = input.template.is_some_and(|template| {
            container.labels.get(labels::TEMPLATE).map(String::as_str) != Some(template)
        });
        match container.state {
            ContainerState::Running | ContainerState::Restarting | ContainerState::Paused => {
                if outdated {
                    // An instance not yet reported running or healthy
                    // (its spec changed after its container was created)
                    // is already counted in `updating` and serves nothing:
                    // it is replaced at once. Waiting for the budget would
                    // wait for itself, as its status is never reported
                    // while its container is outdated.
                    if in_flight(instance) {
                        actions.push(Action::Place {
                            slot,
                            node: node_name.to_string(),
                        });
                    } else if updating < max_parallel {
                        updating += 1;
                        // A new generation on the same node replaces it.
                        actions.push(Action::Place {
                            slot,
                            node: node_name.to_string(),
                        });
                    }
                } else if input.unhealthy.contains(&instance.id) {
                    actions.push(Action::Restart {
                        instance: instance.clone(),
                        container: container.clone(),
                        reason: RestartReason::Unhealthy,
                    });
                } else if instance.restart_epoch < service.restart_epoch {
                    actions.push(Action::Restart {
                        instance: instance.clone(),
                        container: container.clone(),
                        reason: RestartReason::Requested,
                    });
                } else {
                    let state =
                        if service.spec.health.is_none() || input.healthy.contains(&instance.id) {
                            InstanceState::Running
                        } else {
                            InstanceState::Starting
                        };
                    let changed = instance.state != state
                        || instance.container_id.as_deref() != Some(container.id.as_str())
                        || instance.ports.len() != container.ports.len();
                    if changed {
                        actions.push(Action::Report {
                            instance: instance.clone(),
                            container: Some(container.clone()),
                            state,
                        });
                    }
                }
            }
            ContainerState::Created | ContainerState::Exited | ContainerState::Dead => {
                if outdated {
                    actions.push(Action::Place {
                        slot,
                        node: node_name.to_string(),
                    });
                } else {
                    let reason = if container.state != ContainerState::Created
                        && instance.state != InstanceState::Stopped
                    {
                        RestartReason::Crashed
                    } else {
                        RestartReason::Requested
                    };
                    actions.push(Action::Restart {
                        instance: instance.clone(),
                        container: container.clone(),
                        reason,
                    });
                }
            }
            ContainerState::Removing => {}
        }
    }
    actions
}

fn place(
    actions: &mut Vec<Action>,
    input: &PlanInput,
    slot: u32,
    exclude: &[&str],
    counts: &mut BTreeMap<String, u32>,
    loads: &mut Loads,
) {
    let spec = &input.service.spec;
    // Two slots publishing the same fixed host port cannot share a node.
    let taken: Vec<&str> = if spec.holds_host_ports() {
        counts
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(node, _)| node.as_str())
            .collect()
    } else {
        Vec::new()
    };
    let exclude: Vec<&str> = exclude.iter().copied().chain(taken).collect();
    match choose_node(spec, input.nodes, loads, counts, &exclude) {
        Ok(node) => {
            *counts.entry(node.clone()).or_default() += 1;
            loads.add(&node, &spec.resources);
            actions.push(Action::Place { slot, node });
        }
        Err(e) => actions.push(Action::Unplaceable {
            slot,
            needs_capacity: matches!(e, super::placement::PlacementError::NoCapacity(_)),
            reason: e.to_string(),
        }),
    }
}

/// The plan's actions in the order they must run: each batch after the
/// one before, the actions of one batch in any order. Consecutive creates
/// and restarts — each for its own instance, and planned only when
/// nothing else of its slot runs this round — form one batch; every other
/// action is a batch of its own, in plan order (removals stay before the
/// creates that follow them).
pub fn batches(actions: Vec<Action>) -> Vec<Vec<Action>> {
    let mut batches: Vec<Vec<Action>> = Vec::new();
    let mut joins_last = false;
    for action in actions {
        let independent = matches!(action, Action::Create { .. } | Action::Restart { .. });
        match batches.last_mut() {
            Some(last) if independent && joins_last => last.push(action),
            _ => batches.push(vec![action]),
        }
        joins_last = independent;
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{NodeSpec, Protocol, ServiceSpec};

    fn service(replicas: u32) -> Service {
        let spec: ServiceSpec = serde_json::from_value(serde_json::json!({"image": "echo", "replicas": replicas, "update": {"max_parallel": 1}})).unwrap();
        Service {
            namespace: "ns".into(),
            name: "svc".into(),
            spec,
            run_state: RunState::Running,
            version: 10,
            create_index: 1,
            restart_epoch: 0,
        }
    }

    fn node(name: &str, state: NodeState) -> Node {
        Node {
            name: name.into(),
            spec: NodeSpec {
                provider: "static".into(),
                docker_endpoint: "unix:///x".into(),
                address: None,
                region: None,
                zone: None,
                labels: Default::default(),
                capacity: Default::default(),
                docker_tls: None,
            },
            state,
            version: 1,
            create_index: 1,
        }
    }

    fn instance(slot: u32, generation: u64, node: &str, state: InstanceState) -> Instance {
        Instance {
            id: format!("ns-svc-{slot}"),
            namespace: "ns".into(),
            service: "svc".into(),
            slot,
            generation,
            node: Some(node.into()),
            container_id: None,
            state,
            restarts: 0,
            last_exit: None,
            address: None,
            ports: vec![],
            spec_version: 10,
            restart_epoch: 0,
            template: String::new(),
        }
    }

    fn container(instance: &Instance, state: ContainerState, template: &str) -> ContainerInfo {
        let mut labelled = instance.clone();
        labelled.spec_version = 10;
        ContainerInfo {
            id: format!("c-{}-{}", instance.slot, instance.generation),
            name: format!("rv-x-ns-svc-{}-{}", instance.slot, instance.generation),
            image: "echo".into(),
            labels: labels::container_labels("x", &labelled, template),
            state,
            exit_code: Some(1),
            oom_killed: false,
            started_at: String::new(),
            finished_at: String::new(),
            ports: vec![(8080, Protocol::Tcp, 32768)],
            ip_address: None,
            pid: 1,
        }
    }

    struct World {
        service: Service,
        nodes: BTreeMap<String, Node>,
        reachable: BTreeSet<String>,
        instances: Vec<Instance>,
        containers: Vec<(String, ContainerInfo)>,
        held_for_test: bool,
        settling: BTreeSet<String>,
        canary_held: bool,
    }

    impl World {
        fn new(replicas: u32) -> World {
            let nodes: BTreeMap<String, Node> = ["a", "b"]
                .iter()
                .map(|n| (n.to_string(), node(n, NodeState::Ready)))
                .collect();
            World {
                service: service(replicas),
                reachable: nodes.keys().cloned().collect(),
                nodes,
                instances: vec![],
                containers: vec![],
                held_for_test: false,
                settling: BTreeSet::new(),
                canary_held: false,
            }
        }

        fn template(&self) -> String {
            labels::template_fingerprint(&self.service.spec)
        }

        fn plan(&self) -> Vec<Action> {
            let template = self.template();
            let input = PlanInput {
                service: &self.service,
                template: Some(&template),
                instances: self.instances.iter().collect(),
                nodes: &self.nodes,
                observed: self
                    .containers
                    .iter()
                    .map(|(n, c)| (n.as_str(), c))
                    .collect(),
                reachable: &self.reachable,
                healthy: &BTreeSet::new(),
                unhealthy: &BTreeSet::new(),
                held_for_test: self.held_for_test,
                settling: &self.settling,
                canary_held: self.canary_held,
            };
            plan(&input, &mut Loads::default())
        }
    }

    #[test]
    fn new_slots_are_placed_spread_over_nodes() {
        let world = World::new(3);
        assert_eq!(
            world.plan(),
            vec![
                Action::Place {
                    slot: 0,
                    node: "a".into()
                },
                Action::Place {
                    slot: 1,
                    node: "b".into()
                },
                Action::Place {
                    slot: 2,
                    node: "a".into()
                },
            ]
        );
    }

    #[test]
    fn placed_instances_get_containers_and_running_ones_are_reported_once() {
        let mut world = World::new(2);
        world.instances = vec![
            instance(0, 1, "a", InstanceState::Pending),
            instance(1, 1, "b", InstanceState::Running),
        ];
        let running = container(
            &world.instances[1],
            ContainerState::Running,
            &world.template(),
        );
        world.instances[1].container_id = Some(running.id.clone());
        world.instances[1].ports = vec![crate::state::PublishedPort {
            name: "http".into(),
            container_port: 8080,
            host_port: 32768,
            protocol: Protocol::Tcp,
        }];
        world.containers = vec![("b".into(), running)];
        assert_eq!(
            world.plan(),
            vec![Action::Create {
                instance: world.instances[0].clone()
            }]
        );
    }

    #[test]
    fn exited_containers_restart_and_orphans_are_removed() {
        let mut world = World::new(1);
        world.instances = vec![instance(0, 2, "a", InstanceState::Running)];
        let current = container(
            &world.instances[0],
            ContainerState::Exited,
            &world.template(),
        );
        let old = container(
            &instance(0, 1, "a", InstanceState::Running),
            ContainerState::Running,
            &world.template(),
        );
        world.containers = vec![("a".into(), current.clone()), ("a".into(), old.clone())];
        let actions = world.plan();
        assert!(
            actions.contains(&Action::Restart {
                instance: world.instances[0].clone(),
                container: current,
                reason: RestartReason::Crashed
            }),
            "{actions:?}"
        );
        assert!(
            actions.iter().any(
                |a| matches!(a, Action::Remove { container_id, .. } if *container_id == old.id)
            ),
            "{actions:?}"
        );
    }

    #[test]
    fn instances_on_down_nodes_move_and_unreachable_ready_nodes_wait() {
        let mut world = World::new(2);
        world.instances = vec![
            instance(0, 1, "a", InstanceState::Running),
            instance(1, 1, "b", InstanceState::Running),
        ];
        world.nodes.get_mut("a").unwrap().state = NodeState::Down;
        world.reachable.remove("a");
        world.reachable.remove("b");
        // Slot 0 moves to b; slot 1 waits for its node to be judged.
        assert_eq!(
            world.plan(),
            vec![Action::Place {
                slot: 0,
                node: "b".into()
            }]
        );
    }

    #[test]
    fn a_slot_with_local_volumes_waits_for_its_lost_node_unless_told_to_move_empty() {
        for (volumes, on_node_loss, waits) in [
            (
                serde_json::json!([{"name": "data", "mount": "/data"}]),
                "wait",
                true,
            ),
            (
                serde_json::json!([{"name": "data", "mount": "/data"}]),
                "move-empty",
                false,
            ),
            // Shared storage re-binds on the next node.
            (
                serde_json::json!([{"name": "data", "mount": "/data", "driver": "nfs-plugin"}]),
                "wait",
                false,
            ),
        ] {
            for lost in [NodeState::Down, NodeState::Draining] {
                let mut world = World::new(1);
                world.service.spec.volumes = serde_json::from_value(volumes.clone()).unwrap();
                world.service.spec.on_node_loss =
                    serde_json::from_value(serde_json::json!(on_node_loss)).unwrap();
                world.instances = vec![instance(0, 1, "a", InstanceState::Running)];
                world.nodes.get_mut("a").unwrap().state = lost;
                let actions = world.plan();
                if waits && lost == NodeState::Draining {
                    // It says why; its container on the draining node
                    // serves and is supervised as before.
                    assert!(
                        matches!(&actions[..], [
                            Action::Unplaceable { slot: 0, needs_capacity: false, reason },
                            Action::Create { .. },
                        ] if reason.contains("waits for node a (draining)")),
                        "{lost:?} {on_node_loss}: {actions:?}"
                    );
                } else if waits {
                    // It says why, and shows it on the instance.
                    assert!(
                        matches!(&actions[..], [
                            Action::Unplaceable { slot: 0, needs_capacity: false, reason },
                            Action::Report { container: None, state: InstanceState::Waiting, .. },
                        ] if reason.contains("waits for node a (down)")),
                        "{lost:?} {on_node_loss}: {actions:?}"
                    );
                    // Already shown: said again, not written again.
                    world.instances[0].state = InstanceState::Waiting;
                    assert!(
                        matches!(&world.plan()[..], [Action::Unplaceable { .. }]),
                        "{lost:?} {on_node_loss}"
                    );
                } else {
                    assert_eq!(
                        actions,
                        vec![Action::Place {
                            slot: 0,
                            node: "b".into()
                        }],
                        "{lost:?} {on_node_loss} {volumes}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_slot_with_volumes_starts_its_next_container_only_once_the_last_is_gone() {
        for with_volumes in [true, false] {
            let mut world = World::new(1);
            if with_volumes {
                world.service.spec.volumes = serde_json::from_value(
                    serde_json::json!([{"name": "data", "mount": "/data", "driver": "shared"}]),
                )
                .unwrap();
            }
            let template = world.template();
            // Moved from a to b (generation 2): the generation-1 container
            // is still on a.
            let old = instance(0, 1, "a", InstanceState::Running);
            world.containers = vec![(
                "a".into(),
                container(&old, ContainerState::Running, &template),
            )];
            world.instances = vec![instance(0, 2, "b", InstanceState::Pending)];
            let actions = world.plan();
            assert!(
                matches!(&actions[0], Action::Remove { node, .. } if node == "a"),
                "{actions:?}"
            );
            let creates = actions
                .iter()
                .filter(|a| matches!(a, Action::Create { .. }))
                .count();
            assert_eq!(creates, usize::from(!with_volumes), "{actions:?}");
            // Gone: the next container is created.
            world.containers.clear();
            assert!(
                matches!(&world.plan()[..], [Action::Create { .. }]),
                "with volumes: {with_volumes}"
            );
        }
    }

    #[test]
    fn scale_down_forgets_slots_and_removes_their_containers() {
        let mut world = World::new(1);
        world.instances = vec![
            instance(0, 1, "a", InstanceState::Running),
            instance(1, 1, "b", InstanceState::Running),
        ];
        let template = world.template();
        world.containers = vec![
            (
                "a".into(),
                container(&world.instances[0], ContainerState::Running, &template),
            ),
            (
                "b".into(),
                container(&world.instances[1], ContainerState::Running, &template),
            ),
        ];
        let actions = world.plan();
        assert!(
            actions.contains(&Action::Forget {
                id: "ns-svc-1".into(),
                generation: 1
            }),
            "{actions:?}"
        );
        assert!(
            actions.iter().any(
                |a| matches!(a, Action::Remove { container_id, .. } if container_id == "c-1-1")
            ),
            "{actions:?}"
        );
        assert!(
            !actions.iter().any(
                |a| matches!(a, Action::Remove { container_id, .. } if container_id == "c-0-1")
            ),
            "{actions:?}"
        );
    }

    #[test]
    fn a_held_canary_deploy_replaces_only_its_canaries() {
        let mut world = World::new(3);
        world.service.spec.update.canary = 1;
        world.service.spec.update.max_parallel = 3;
        let old_template = world.template();
        world.instances = (0..3)
            .map(|slot| {
                let mut i = instance(slot, 1, "a", InstanceState::Running);
                i.template = old_template.clone();
                i
            })
            .collect();
        world.containers = world
            .instances
            .iter()
            .map(|i| {
                (
                    "a".to_string(),
                    container(i, ContainerState::Running, &old_template),
                )
            })
            .collect();
        world.service.spec.image = "echo:v2".into();
        let new_template = world.template();
        world.canary_held = true;
        let places = |world: &World| -> Vec<u32> {
            world
                .plan()
                .into_iter()
                .filter_map(|a| match a {
                    Action::Place { slot, .. } => Some(slot),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(places(&world), [0, 1, 2], "max_parallel 3, no canary yet");
        // One canary runs the new version: held there.
        world.instances[0] = instance(0, 2, "a", InstanceState::Running);
        world.instances[0].template = new_template.clone();
        world.containers[0] = (
            "a".into(),
            container(&world.instances[0], ContainerState::Running, &new_template),
        );
        assert!(places(&world).is_empty());
        // Promoted: the rest rolls out.
        world.canary_held = false;
        assert_eq!(places(&world), [1, 2]);
    }

    #[test]
    fn a_surge_slot_runs_the_new_version_before_any_is_replaced_and_goes_when_done() {
        let mut world = World::new(2);
        world.service.spec.update.max_surge = 1;
        let old_template = world.template();
        let running = |slot: u32, generation: u64, template: &str| {
            let mut i = instance(slot, generation, "a", InstanceState::Running);
            i.template = template.to_string();
            i
        };
        world.instances = vec![running(0, 1, &old_template), running(1, 1, &old_template)];
        world.containers = world
            .instances
            .iter()
            .map(|i| {
                (
                    "a".to_string(),
                    container(i, ContainerState::Running, &old_template),
                )
            })
            .collect();
        let places = |world: &World| -> Vec<u32> {
            world
                .plan()
                .into_iter()
                .filter_map(|a| match a {
                    Action::Place { slot, .. } => Some(slot),
                    _ => None,
                })
                .collect()
        };
        assert!(places(&world).is_empty(), "nothing to roll out: no surge");
        world.service.spec.image = "echo:v2".into();
        let new_template = world.template();
        assert_eq!(
            places(&world),
            [2],
            "the surge slot first, nothing replaced"
        );
        // The surge instance starting: nothing else moves.
        let mut surge = instance(2, 1, "b", InstanceState::Starting);
        surge.template = new_template.clone();
        world.instances.push(surge.clone());
        assert!(places(&world).is_empty());
        // Running: the first own slot is replaced.
        surge.state = InstanceState::Running;
        world.instances[2] = surge.clone();
        world.containers.push((
            "b".into(),
            container(&surge, ContainerState::Running, &new_template),
        ));
        assert_eq!(places(&world), [0]);
        // Every own slot runs the new version: the surge slot goes.
        world.instances[0] = running(0, 2, &new_template);
        world.instances[1] = running(1, 2, &new_template);
        world.containers = world
            .instances
            .iter()
            .map(|i| {
                (
                    i.node.clone().unwrap(),
                    container(i, ContainerState::Running, &new_template),
                )
            })
            .collect();
        let actions = world.plan();
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::Forget { id, .. } if *id == surge.id)),
            "{actions:?}"
        );
        // A slot still being replaced keeps it.
        world.instances[1].state = InstanceState::Starting;
        assert!(!world
            .plan()
            .iter()
            .any(|a| matches!(a, Action::Forget { .. })));
    }

    #[test]
    fn a_changed_template_rolls_out_max_parallel_at_a_time() {
        let mut world = World::new(3);
        let old_template = world.template();
        world.instances = (0..3)
            .map(|slot| {
                instance(
                    slot,
                    1,
                    ["a", "b", "a"][slot as usize],
                    InstanceState::Running,
                )
            })
            .collect();
        world.containers = world
            .instances
            .iter()
            .map(|i| {
                (
                    i.node.clone().unwrap(),
                    container(i, ContainerState::Running, &old_template),
                )
            })
            .collect();
        world.service.spec.image = "echo:v2".into();
        let places: Vec<Action> = world
            .plan()
            .into_iter()
            .filter(|a| matches!(a, Action::Place { .. }))
            .collect();
        assert_eq!(
            places,
            vec![Action::Place {
                slot: 0,
                node: "a".into()
            }]
        );
        // While a replacement is starting, nothing else is replaced.
        world.instances[0] = instance(0, 2, "a", InstanceState::Starting);
        let places: Vec<Action> = world
            .plan()
            .into_iter()
            .filter(|a| matches!(a, Action::Place { .. }))
            .collect();
        assert!(places.is_empty(), "{places:?}");
    }

    #[test]
    fn a_container_of_a_deleted_service_of_the_same_name_is_not_taken_for_its_own() {
        // The service was deleted and made again (create index 50): its
        // slot 0 has the same id and generation as its predecessor's,
        // whose container (spec version 10) is still being removed.
        let mut world = World::new(1);
        world.service.create_index = 50;
        world.service.version = 50;
        world.service.spec.volumes = vec![crate::state::VolumeSpec {
            name: "data".into(),
            mount: "/data".into(),
            driver: "local".into(),
            options: Default::default(),
        }];
        let template = world.template();
        world.instances = vec![instance(0, 1, "a", InstanceState::Pending)];
        world.containers = vec![(
            "a".into(),
            container(&world.instances[0], ContainerState::Running, &template),
        )];
        let actions = world.plan();
        assert!(
            actions.iter().any(
                |a| matches!(a, Action::Remove { container_id, .. } if container_id == "c-0-1")
            ),
            "the predecessor's container goes: {actions:?}"
        );
        assert!(
            !actions.iter().any(|a| matches!(a, Action::Report { .. } | Action::Create { .. })),
            "it is not reported as this slot's, and the slot's own waits for it to be gone: {actions:?}"
        );
    }

    #[test]
    fn slots_with_a_fixed_host_port_go_to_different_nodes() {
        let mut world = World::new(3);
        world.service.spec.ports = vec![crate::state::PortSpec {
            name: "peer".into(),
            container_port: 2380,
            protocol: Protocol::Tcp,
            weight: 1,
            host_port: Some(12380),
        }];
        let actions = world.plan();
        let places: Vec<&str> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Place { node, .. } => Some(node.as_str()),
                _ => None,
            })
            .collect();
        let mut distinct = places.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!((places.len(), distinct.len()), (2, 2), "{actions:?}");
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::Unplaceable { slot: 2, .. })),
            "a third slot has no node left: {actions:?}"
        );
    }

    #[test]
    fn a_rollout_waits_for_its_versions_test_before_the_next_replacement() {
        let mut world = World::new(2);
        let old_template = world.template();
        world.instances = (0..2)
            .map(|slot| instance(slot, 1, "a", InstanceState::Running))
            .collect();
        world.service.spec.image = "echo:v2".into();
        let new_template = world.template();
        // Slot 0 was replaced and runs the new version; slot 1 the old.
        world.instances[0] = instance(0, 2, "a", InstanceState::Running);
        world.instances[0].template = new_template.clone();
        world.containers = vec![
            (
                "a".into(),
                container(&world.instances[0], ContainerState::Running, &new_template),
            ),
            (
                "a".into(),
                container(&world.instances[1], ContainerState::Running, &old_template),
            ),
        ];
        let places = |world: &World| -> Vec<Action> {
            world
                .plan()
                .into_iter()
                .filter(|a| matches!(a, Action::Place { .. }))
                .collect()
        };
        world.held_for_test = true;
        assert!(places(&world).is_empty(), "the test has not passed yet");
        world.held_for_test = false;
        world.settling = BTreeSet::from([world.instances[0].id.clone()]);
        assert!(
            places(&world).is_empty(),
            "the new instance has not run update.min_healthy_ms yet"
        );
        world.settling.clear();
        assert_eq!(
            places(&world),
            vec![Action::Place {
                slot: 1,
                node: "a".into()
            }],
            "once it passed, the next slot is replaced"
        );
    }

    #[test]
    fn a_pending_instance_whose_running_container_is_outdated_is_replaced() {
        // The container was created from the spec as it was, the spec
        // changed before its running state was reported: the instance is
        // still pending. It must not hold the rolling-update budget against
        // its own replacement.
        let mut world = World::new(2);
        let old_template = world.template();
        world.instances = vec![
            instance(0, 11, "a", InstanceState::Pending),
            instance(1, 5, "b", InstanceState::Pending),
        ];
        world.containers = world
            .instances
            .iter()
            .map(|i| {
                (
                    i.node.clone().unwrap(),
                    container(i, ContainerState::Running, &old_template),
                )
            })
            .collect();
        world
            .service
            .spec
            .env
            .insert("GENERATION".into(), "2".into());
        let places: Vec<Action> = world
            .plan()
            .into_iter()
            .filter(|a| matches!(a, Action::Place { .. }))
            .collect();
        assert_eq!(
            places,
            vec![
                Action::Place {
                    slot: 0,
                    node: "a".into()
                },
                Action::Place {
                    slot: 1,
                    node: "b".into()
                },
            ]
        );
    }

    #[test]
    fn a_stopped_service_stops_containers_and_keeps_them() {
        let mut world = World::new(1);
        world.service.run_state = RunState::Stopped;
        world.instances = vec![instance(0, 1, "a", InstanceState::Running)];
        let c = container(
            &world.instances[0],
            ContainerState::Running,
            &world.template(),
        );
        world.containers = vec![("a".into(), c.clone())];
        assert_eq!(
            world.plan(),
            vec![Action::Stop {
                node: "a".into(),
                container_id: c.id
            }]
        );
    }

    #[test]
    fn creates_and_restarts_in_a_row_run_together_and_everything_else_in_order() {
        let create = |slot| Action::Create {
            instance: instance(slot, 1, "a", InstanceState::Pending),
        };
        let remove = |id: &str| Action::Remove {
            node: "a".into(),
            container_id: id.into(),
            why: "stale".into(),
        };
        let place = |slot| Action::Place {
            slot,
            node: "a".into(),
        };
        let restart = |slot| {
            let instance = instance(slot, 1, "a", InstanceState::Running);
            Action::Restart {
                container: container(&instance, ContainerState::Exited, "t"),
                instance,
                reason: RestartReason::Crashed,
            }
        };
        let plan = vec![
            remove("c-0"),
            remove("c-1"),
            create(0),
            create(1),
            restart(2),
            place(3),
            create(4),
        ];
        assert_eq!(
            batches(plan),
            vec![
                vec![remove("c-0")],
                vec![remove("c-1")],
                vec![create(0), create(1), restart(2)],
                vec![place(3)],
                vec![create(4)],
            ]
        );
        assert!(batches(Vec::new()).is_empty());
    }
}
