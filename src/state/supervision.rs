//! The supervisor's commands applied to the model: run state and restart
//! requests of services, placement intents (instance → node, generation),
//! observed instance status fenced by generation, and node liveness
//! transitions. Pure, like the rest of `apply`.

use super::{Instance, InstanceState, InstanceStatus, NodeState, Outcome, RunState, State};

/// The fingerprint of what a container runs: FNV-1a over
/// [`template_text`] and the sealed secret values. Scaling never changes
/// it; a new image, command or environment does.
pub fn template_fingerprint(spec: &super::ServiceSpec) -> String {
    template_fingerprint_pinned(spec, None)
}

/// [`template_fingerprint`] of a spec whose image was resolved to `pin`
/// (a digest reference, see [`super::image_catalog`]): a tag that moved between
/// two versions of the spec changes the template, so it rolls; a pin
/// equal to the spec's own reference (an image no registry resolved)
/// leaves the fingerprint as it was.
pub fn template_fingerprint_pinned(spec: &super::ServiceSpec, pin: Option<&str>) -> String {
    let mut text = template_text(spec);
    if let Some(pin) = pin.filter(|pin| *pin != spec.image) {
        text.push_str(&format!("\0image_pin\0{pin}"));
    }
    // The text shows sealed secrets as `<redacted>`; the sealed texts make a
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

/// The stable encoding of a service's template: every field by name, in a
/// fixed order, written here rather than derived from the spec's serde
/// shape, so neither a new field nor a reordering changes the fingerprint
/// of a stored spec (which would replace every container on upgrade).
///
/// The text is the JSON the fingerprint was first computed over (the spec
/// with a replica count of 0), so fingerprints of instances placed before
/// still match. A field added to the spec is written after the others
/// and only when it differs from its default ([`push_unless_default`]),
/// so a spec that does not use it keeps its fingerprint. The destructuring
/// below stops the build until a new field is given its place here.
fn template_text(spec: &super::ServiceSpec) -> String {
    object(&template_fields(spec))
}

/// The fields of [`template_text`], in order.
fn template_fields(spec: &super::ServiceSpec) -> Vec<(&'static str, String)> {
    let super::ServiceSpec {
        kind,
        image,
        // How the image is fetched, not what runs: a change replaces nothing.
        pull: _,
        command,
        env,
        secret_env,
        ports,
        replicas: _,
        resources,
        placement,
        health,
        restart,
        update,
        addresses,
        hostname,
        volumes,
        // Where a slot goes when its node is lost, not what runs.
        on_node_loss: _,
        // Run beside the containers, not in what they run.
        hooks: _,
    } = spec;
    let ports: Vec<String> = ports
        .iter()
        .map(|port| {
            let super::PortSpec {
                name,
                container_port,
                protocol,
                weight,
                host_port,
            } = port;
            let mut fields = vec![
                ("name", json(name)),
                ("container_port", json(container_port)),
                ("protocol", json(protocol)),
                ("weight", json(weight)),
            ];
            push_unless_default(&mut fields, "host_port", host_port);
            object(&fields)
        })
        .collect();
    let super::Resources {
        cpu_millis,
        memory_mb,
    } = resources;
    let super::Placement {
        region,
        zone,
        node_labels,
        spread,
    } = placement;
    let health = health.as_ref().map_or_else(
        || "null".to_string(),
        |check| {
            let super::HealthCheck {
                kind,
                port,
                path,
                interval_ms,
                timeout_ms,
                retries,
            } = check;
            object(&[
                ("kind", json(kind)),
                ("port", json(port)),
                ("path", json(path)),
                ("interval_ms", json(interval_ms)),
                ("timeout_ms", json(timeout_ms)),
                ("retries", json(retries)),
            ])
        },
    );
    let super::RestartPolicy {
        initial_backoff_ms,
        max_backoff_ms,
        reset_after_ms,
    } = restart;
    // How a version rolls out or is kept is not what runs: changing it
    // replaces no container.
    let super::UpdateStrategy {
        max_parallel,
        on_failure: _,
        history: _,
        min_healthy_ms: _,
        max_surge: _,
        canary: _,
        canary_weight: _,
    } = update;
    let mut fields = vec![
        ("kind", json(kind)),
        ("image", json(image)),
        ("command", json(command)),
        ("env", json(env)),
        ("secret_env", json(secret_env)),
        ("ports", format!("[{}]", ports.join(","))),
        // Not part of the template (scaling replaces nothing); written as
        // 0 because the first fingerprints were computed so.
        ("replicas", "0".to_string()),
        (
            "resources",
            object(&[
                ("cpu_millis", json(cpu_millis)),
                ("memory_mb", json(memory_mb)),
            ]),
        ),
        (
            "placement",
            object(&[
                ("region", json(region)),
                ("zone", json(zone)),
                ("node_labels", json(node_labels)),
                ("spread", json(spread)),
            ]),
        ),
        ("health", health),
        (
            "restart",
            object(&[
                ("initial_backoff_ms", json(initial_backoff_ms)),
                ("max_backoff_ms", json(max_backoff_ms)),
                ("reset_after_ms", json(reset_after_ms)),
            ]),
        ),
        ("update", object(&[("max_parallel", json(max_parallel))])),
        ("addresses", json(addresses)),
        ("hostname", json(hostname)),
    ];
    push_unless_default(&mut fields, "volumes", volumes);
    fields
}

/// Appends `(name, value)` to a template's fields unless `value` is its
/// type's default: how a field added to the spec enters the template
/// without changing the fingerprint of specs that leave it unset.
fn push_unless_default<T: serde::Serialize + Default + PartialEq>(
    fields: &mut Vec<(&'static str, String)>,
    name: &'static str,
    value: &T,
) {
    if *value != T::default() {
        fields.push((name, json(value)));
    }
}

/// JSON of one leaf value (a string, number, list or map of them).
fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// `{"name":value,…}` in the order given.
fn object(fields: &[(&str, String)]) -> String {
    let body: Vec<String> = fields
        .iter()
        .map(|(name, value)| format!("\"{name}\":{value}"))
        .collect();
    format!("{{{}}}", body.join(","))
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
        let previous = service.version;
        service.run_state = run_state;
        service.version = index;
        let service = service.clone();
        self.images.carry_pin(&key, previous, index);
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
        let previous = service.version;
        service.restart_epoch = index;
        service.version = index;
        let service = service.clone();
        self.images.carry_pin(&key, previous, index);
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
        if slot >= svc.spec.replicas + svc.spec.update.max_surge {
            return Outcome::Rejected(format!(
                "slot {slot} is beyond the {} replicas (and {} surge slots) of {namespace}/{service}",
                svc.spec.replicas, svc.spec.update.max_surge
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
        let template = self.template_of(svc);
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
        InstanceState::Pulling => "pulling",
        InstanceState::PullFailed => "pull_failed",
        InstanceState::Waiting => "waiting",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::state::ServiceSpec;

    fn spec(json: serde_json::Value) -> ServiceSpec {
        serde_json::from_value(json).unwrap()
    }

    /// A spec using every field, as `tests/fixtures/format-1` deployed it.
    fn full() -> ServiceSpec {
        spec(serde_json::json!({
            "image": "raftvisor-echo:local",
            "command": ["/echo", "--port", "8080"],
            "env": {"GREETING": "hello"},
            "replicas": 1,
            "resources": {"cpu_millis": 100, "memory_mb": 64},
            "placement": {"zone": "a", "node_labels": {"disk": "ssd"}},
            "ports": [{"name": "http", "container_port": 8080}],
            "health": {"kind": "http", "port": "http", "path": "/health"},
            "restart": {"initial_backoff_ms": 200, "max_backoff_ms": 5000, "reset_after_ms": 10000}
        }))
    }

    fn external() -> ServiceSpec {
        spec(serde_json::json!({
            "kind": "external", "addresses": ["10.0.0.1"], "hostname": "db.example.com",
            "update": {"max_parallel": 2}, "placement": {"region": "r", "spread": "zone"},
            "ports": [{"name": "dns", "container_port": 53, "protocol": "udp", "weight": 5}],
            "health": {"kind": "tcp", "port": "dns", "interval_ms": 7, "timeout_ms": 3, "retries": 1}
        }))
    }

    /// Fingerprints computed by the first implementation (FNV-1a over the
    /// spec's serde JSON) at commit c9d0105: instances placed then must
    /// keep matching, or an upgrade would replace every container.
    #[test]
    fn fingerprints_of_specs_placed_before_are_unchanged() {
        let minimal = spec(serde_json::json!({"image": "a", "replicas": 1}));
        assert_eq!(template_fingerprint(&minimal), "8c7f1706043c0668");
        assert_eq!(template_fingerprint(&full()), "7f4e9e2a06b2f8b4");
        assert_eq!(template_fingerprint(&external()), "27d3589b1767bcf9");
        let mut secret = minimal.clone();
        secret
            .secret_env
            .0
            .insert("PASSWORD".into(), "v1:sealed-text".into());
        assert_eq!(template_fingerprint(&secret), "fe428243753801de");
    }

    #[test]
    fn the_template_text_is_the_spec_in_a_fixed_order_without_replicas() {
        let minimal = spec(serde_json::json!({"image": "a", "replicas": 7}));
        assert_eq!(
            template_text(&minimal),
            r#"{"kind":"container","image":"a","command":[],"env":{},"secret_env":{},"ports":[],"replicas":0,"resources":{"cpu_millis":0,"memory_mb":0},"placement":{"region":null,"zone":null,"node_labels":{},"spread":"node"},"health":null,"restart":{"initial_backoff_ms":100,"max_backoff_ms":30000,"reset_after_ms":10000},"update":{"max_parallel":1},"addresses":[],"hostname":null}"#
        );
    }

    #[test]
    fn a_field_added_at_its_default_leaves_the_fingerprint_unchanged() {
        let mut fields = template_fields(&full());
        let before = object(&fields);
        push_unless_default(&mut fields, "sysctls", &BTreeMap::<String, String>::new());
        push_unless_default(&mut fields, "user", &Option::<String>::None);
        assert_eq!(object(&fields), before);
        push_unless_default(&mut fields, "user", &Some("1000".to_string()));
        assert_ne!(object(&fields), before);
        assert!(object(&fields).ends_with(r#","user":"1000"}"#));
    }
}
