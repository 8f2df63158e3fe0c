//! The supervisor's commands applied to the model: run state and restart
//! requests of services, placement intents (instance → node, generation),
//! observed instance status fenced by generation, and node liveness
//! transitions. Pure, like the rest of `apply`.

use super::{Instance, InstanceState, InstanceStatus, NodeState, Outcome, RunState, State};

/// The fingerprint of what a container runs: FNV-1a over the canonical
/// JSON of the spec without its replica count, so scaling never replaces
/// containers but a new image or environment does.
pub fn template_fingerprint(spec: &super::ServiceSpec) -> String {
    let mut template = spec.clone();
    template.replicas = 0;
    let mut text = serde_json::to_string(&template).unwrap_or_default();
    // JSON shows sealed secrets as `<redacted>`; the sealed texts make a
    // changed secret change the template. They are sealed under random
    // nonces, so the fingerprint (which read tokens see) depends on no
    // clear value: equal secrets do not give equal fingerprints.
    for (name, sealed) in &spec.secret_env.0 {
        text.push_str(&format!("\0{name}\0{sealed}"));
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The id of a service slot's instance; stable across generations:
/// `<namespace>.<service>.<slot>`. Namespaces and service names are DNS
/// labels, which never contain a `.`, so the id is unique for every
/// `(namespace, service, slot)` — `x-y/z` and `x/y-z` give `x-y.z.0` and
/// `x.y-z.0` — and it stays a valid Docker name and DNS name.
pub fn instance_id(namespace: &str, service: &str, slot: u32) -> String {
    format!("{namespace}.{service}.{slot}")
}

/// The id [`Command::PlaceInstance`](super::Command::PlaceInstance) gave
/// before ids were unique (`<namespace>-<service>-<slot>`, ambiguous when
/// names contain `-`). Log entries written then still replay with it, and
/// instances placed then keep it until their slot is placed anew.
pub fn legacy_instance_id(namespace: &str, service: &str, slot: u32) -> String {
    format!("{namespace}-{service}-{slot}")
}

impl State {
    pub(super) fn set_run_state(
        &mut self,
        index: u64,
        time_ms: u64,
        namespace: &str,
        name: &str,
        run_state: RunState,
    ) -> Outcome {
        let key = (namespace.to_string(), name.to_string());
        let Some(service) = self.services.get_mut(&key) else {
            return Outcome::NotFound;
        };
        if service.run_state == run_state {
            return Outcome::Service(Box::new(service.clone()));
        }
        service.run_state = run_state;
        service.version = index;
        let service = service.clone();
        let verb = match run_state {
            RunState::Running => "started",
            RunState::Stopped => "stopped",
        };
        self.event(
            index,
            time_ms,
            &format!("service.{verb}"),
            &format!("{namespace}/{name}"),
            format!("service {verb} by request"),
        );
        Outcome::Service(Box::new(service))
    }

    pub(super) fn restart_service(
        &mut self,
        index: u64,
        time_ms: u64,
        namespace: &str,
        name: &str,
    ) -> Outcome {
        let key = (namespace.to_string(), name.to_string());
        let Some(service) = self.services.get_mut(&key) else {
            return Outcome::NotFound;
        };
        service.restart_epoch = index;
        service.version = index;
        let service = service.clone();
        self.event(
            index,
            time_ms,
            "service.restart",
            &format!("{namespace}/{name}"),
            "restart of every instance requested".into(),
        );
        Outcome::Service(Box::new(service))
    }

    /// Places `slot` on `node`. `unique_ids`: the instance gets its
    /// [`instance_id`] (a `PlaceSlot` entry), and an instance of this very
    /// slot still under its [`legacy_instance_id`] moves to it; otherwise
    /// (a `PlaceInstance` entry written by an older leader) the legacy id,
    /// exactly as those entries were first applied.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn place_instance(
        &mut self,
        index: u64,
        time_ms: u64,
        namespace: &str,
        service: &str,
        slot: u32,
        node: &str,
        unique_ids: bool,
    ) -> Outcome {
        let key = (namespace.to_string(), service.to_string());
        let Some(svc) = self.services.get(&key) else {
            return Outcome::NotFound;
        };
        if slot >= svc.spec.replicas {
            return Outcome::Rejected(format!(
                "slot {slot} is beyond the {} replicas of {namespace}/{service}",
                svc.spec.replicas
            ));
        }
        match self.nodes.get(node) {
            None => return Outcome::Rejected(format!("node {node} is not in the inventory")),
            Some(n) if n.state == NodeState::Retired => {
                return Outcome::Rejected(format!(
                    "node {node} is retired: nothing is placed on it"
                ))
            }
            Some(_) => {}
        }
        let spec_version = svc.version;
        let restart_epoch = svc.restart_epoch;
        let template = template_fingerprint(&svc.spec);
        let (id, legacy) = if unique_ids {
            let legacy = legacy_instance_id(namespace, service, slot);
            // Only the legacy instance of this very slot: under an
            // ambiguous id it may belong to another service.
            let ours = self.instances.get(&legacy).is_some_and(|i| {
                i.namespace == namespace && i.service == service && i.slot == slot
            });
            (
                instance_id(namespace, service, slot),
                ours.then_some(legacy),
            )
        } else {
            (legacy_instance_id(namespace, service, slot), None)
        };
        let legacy_previous = legacy.and_then(|legacy| self.instances.remove(&legacy));
        let previous = self.instances.get(&id).or(legacy_previous.as_ref());
        let generation = previous.map_or(1, |i| i.generation + 1);
        let from = previous.and_then(|i| i.node.clone());
        let instance = Instance {
            id: id.clone(),
            namespace: namespace.to_string(),
            service: service.to_string(),
            slot,
            generation,
            node: Some(node.to_string()),
            container_id: None,
            state: InstanceState::Pending,
            restarts: 0,
            last_exit: previous.and_then(|i| i.last_exit.clone()),
            address: None,
            ports: Vec::new(),
            spec_version,
            restart_epoch,
            template,
        };
        self.instances.insert(id.clone(), instance.clone());
        let message = match from {
            Some(from) if from != node => {
                format!("generation {generation} placed on {node} (moved from {from})")
            }
            _ => format!("generation {generation} placed on {node}"),
        };
        self.event(index, time_ms, "instance.placed", &id, message);
        Outcome::Instance(Box::new(instance))
    }

    pub(super) fn set_instance_status(
        &mut self,
        index: u64,
        time_ms: u64,
        id: &str,
        generation: u64,
        status: &InstanceStatus,
    ) -> Outcome {
        let Some(instance) = self.instances.get_mut(id) else {
            return Outcome::NotFound;
        };
        if instance.generation != generation {
            return Outcome::Rejected(format!(
                "instance {id} is at generation {}, not {generation}",
                instance.generation
            ));
        }
        let before = instance.state;
        instance.state = status.state;
        instance.container_id = status.container_id.clone();
        instance.restarts = status.restarts;
        instance.last_exit = status.last_exit.clone();
        instance.address = status.address.clone();
        instance.ports = status.ports.clone();
        instance.spec_version = status.spec_version;
        instance.restart_epoch = status.restart_epoch;
        let instance = instance.clone();
        if before != status.state {
            let detail = match (&status.state, &status.last_exit) {
                (InstanceState::Exited | InstanceState::CrashLoop, Some(exit)) => {
                    format!(" (exit {}: {})", exit.code, exit.reason)
                }
                _ => String::new(),
            };
            self.event(
                index,
                time_ms,
                "instance.state",
                id,
                format!(
                    "{} -> {}{detail}",
                    state_name(before),
                    state_name(status.state)
                ),
            );
        }
        Outcome::Instance(Box::new(instance))
    }

    pub(super) fn remove_instance(
        &mut self,
        index: u64,
        time_ms: u64,
        id: &str,
        generation: u64,
    ) -> Outcome {
        match self.instances.get(id) {
            None => Outcome::NotFound,
            Some(instance) if instance.generation != generation => Outcome::Rejected(format!(
                "instance {id} is at generation {}, not {generation}",
                instance.generation
            )),
            Some(_) => {
                self.instances.remove(id);
                self.event(
                    index,
                    time_ms,
                    "instance.removed",
                    id,
                    format!("generation {generation} removed"),
                );
                Outcome::Deleted
            }
        }
    }

    pub(super) fn set_node_state(
        &mut self,
        index: u64,
        time_ms: u64,
        name: &str,
        state: NodeState,
        reason: &str,
    ) -> Outcome {
        let Some(node) = self.nodes.get_mut(name) else {
            return Outcome::NotFound;
        };
        if node.state == state {
            return Outcome::Node(Box::new(node.clone()));
        }
        if node.state == NodeState::Retired {
            return Outcome::Rejected(format!("node {name} is retired; it is being removed"));
        }
        let before = node.state;
        node.state = state;
        node.version = index;
        let node = node.clone();
        self.event(
            index,
            time_ms,
            "node.state",
            name,
            format!("{before:?} -> {state:?}: {reason}").to_lowercase(),
        );
        Outcome::Node(Box::new(node))
    }
}

/// The error code of a node removal refused while instances are placed on
/// the node (or its containers may still run).
pub const NODE_NOT_DRAINED: &str = "node_not_drained";

impl State {
    /// `node rm`: removes a node nothing runs on. A node with instances
    /// placed on it — or a down node, whose containers may still run — is
    /// refused (`node_not_drained`) unless `force`, which retires it: the
    /// supervisor places its instances elsewhere and the node controller
    /// removes this cluster's containers there, then the node itself. A
    /// second `force` on a retired node nothing is placed on removes it at
    /// once (its machine is gone for good).
    pub(super) fn remove_node(
        &mut self,
        index: u64,
        time_ms: u64,
        name: &str,
        force: bool,
    ) -> Outcome {
        let Some(node) = self.nodes.get(name) else {
            return Outcome::NotFound;
        };
        let placed: Vec<&str> = self
            .instances
            .values()
            .filter(|i| i.node.as_deref() == Some(name))
            .map(|i| i.id.as_str())
            .collect();
        let state = node.state;
        if placed.is_empty()
            && (state == NodeState::Retired && force
                || !force
                    && matches!(
                        state,
                        NodeState::Ready | NodeState::Draining | NodeState::Provisioning
                    ))
        {
            self.nodes.remove(name);
            self.event(
                index,
                time_ms,
                "node.removed",
                name,
                "node removed from the inventory".into(),
            );
            return Outcome::Deleted;
        }
        if !force {
            let why = if placed.is_empty() {
                format!(
                    "node {name} is {}: containers may still run there",
                    format!("{state:?}").to_lowercase()
                )
            } else {
                let shown: Vec<&str> = placed.iter().take(5).copied().collect();
                format!(
                    "node {name} has {} instance(s) placed on it ({}{})",
                    placed.len(),
                    shown.join(", "),
                    if placed.len() > shown.len() {
                        ", …"
                    } else {
                        ""
                    }
                )
            };
            return Outcome::Refused {
                code: NODE_NOT_DRAINED.into(),
                message: format!(
                    "{why}; drain it first (raftvisor node drain {name}) or remove it with --force (?force=true): its instances move and its containers are removed"
                ),
            };
        }
        let count = placed.len();
        let Some(node) = self.nodes.get_mut(name) else {
            return Outcome::NotFound;
        };
        node.state = NodeState::Retired;
        node.version = index;
        let node = node.clone();
        self.event(
            index,
            time_ms,
            "node.retired",
            name,
            format!("forced removal: {count} instance(s) move elsewhere, then its containers and the node are removed"),
        );
        Outcome::Node(Box::new(node))
    }
}

/// The snake_case name of an instance state, as the API shows it.
pub fn state_name(state: InstanceState) -> &'static str {
    match state {
        InstanceState::Pending => "pending",
        InstanceState::Starting => "starting",
        InstanceState::Running => "running",
        InstanceState::Unhealthy => "unhealthy",
        InstanceState::Exited => "exited",
        InstanceState::CrashLoop => "crash_loop",
        InstanceState::Stopped => "stopped",
    }
}
