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

/// The id of a service slot's instance; stable across generations.
pub fn instance_id(namespace: &str, service: &str, slot: u32) -> String {
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

    pub(super) fn place_instance(
        &mut self,
        index: u64,
        time_ms: u64,
        namespace: &str,
        service: &str,
        slot: u32,
        node: &str,
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
        if !self.nodes.contains_key(node) {
            return Outcome::Rejected(format!("node {node} is not in the inventory"));
        }
        let spec_version = svc.version;
        let restart_epoch = svc.restart_epoch;
        let template = template_fingerprint(&svc.spec);
        let id = instance_id(namespace, service, slot);
        let previous = self.instances.get(&id);
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
