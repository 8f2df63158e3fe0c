//! From the objects a commit changed ([`Touched`]) to the keys of the
//! controllers that must look at them, read against the state just
//! applied (pure): a service change wakes that service and its instances'
//! probes; an instance change wakes its service and its probe; a node
//! change wakes that node and the services it matters to — those with
//! instances there and those with slots still to place. KV writes, tokens
//! and events wake nothing.

use std::collections::BTreeSet;

use crate::state::touched::Touched;
use crate::state::{NodeState, State};

use super::observed::ServiceKey;

/// The keys one batch of changes wakes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Wakes {
    /// Every key of every controller.
    pub everything: bool,
    pub services: BTreeSet<ServiceKey>,
    pub nodes: BTreeSet<String>,
    /// Instances whose health probing may change.
    pub instances: BTreeSet<String>,
    pub managers: bool,
    /// The images the cluster keeps, or the nodes that may hold them.
    pub images: bool,
    /// Volumes to remove.
    pub volumes: bool,
    /// Backups and restores asked for.
    pub hook_jobs: BTreeSet<String>,
    /// Pipelines whose runs may have work.
    pub pipelines: BTreeSet<String>,
}

impl Wakes {
    pub fn is_empty(&self) -> bool {
        *self == Wakes::default()
    }
}

/// The keys `changes` wake, given `state` after they were applied.
pub fn wakes(changes: &[Touched], state: &State) -> Wakes {
    let mut wakes = Wakes::default();
    let mut nodes_changed = BTreeSet::new();
    for change in changes {
        match change {
            Touched::Everything => wakes.everything = true,
            Touched::Service { namespace, name } => {
                let key = (namespace.clone(), name.clone());
                wakes.instances.extend(
                    state
                        .service_instances(namespace, name)
                        .into_iter()
                        .map(|i| i.id.clone()),
                );
                wakes.services.insert(key);
            }
            Touched::Instance { id, service } => {
                let service = service.clone().or_else(|| {
                    state
                        .instances
                        .get(id)
                        .map(|i| (i.namespace.clone(), i.service.clone()))
                });
                wakes.services.extend(service);
                wakes.instances.insert(id.clone());
            }
            Touched::Node(name) => {
                nodes_changed.insert(name.as_str());
                wakes.nodes.insert(name.clone());
            }
            Touched::Managers => wakes.managers = true,
            Touched::Images => wakes.images = true,
            Touched::Volumes => wakes.volumes = true,
            Touched::HookJob(id) => {
                wakes.hook_jobs.insert(id.clone());
            }
            Touched::Pipeline(name) => {
                wakes.pipelines.insert(name.clone());
            }
        }
    }
    if !nodes_changed.is_empty() {
        for instance in state.instances.values() {
            if instance
                .node
                .as_deref()
                .is_some_and(|n| nodes_changed.contains(n))
            {
                wakes
                    .services
                    .insert((instance.namespace.clone(), instance.service.clone()));
            }
        }
        wakes.services.extend(unplaced_services(state));
    }
    wakes
}

/// The services with instances on `nodes` (engines whose containers just
/// became known): they may have containers to create or restart.
pub fn placed_on(nodes: &BTreeSet<String>, state: &State) -> Wakes {
    let mut wakes = Wakes::default();
    for instance in state.instances.values() {
        if instance.node.as_ref().is_some_and(|n| nodes.contains(n)) {
            wakes
                .services
                .insert((instance.namespace.clone(), instance.service.clone()));
        }
    }
    wakes
}

/// Services with a slot that has no instance on a ready node: a node that
/// appeared or came back may take it.
fn unplaced_services(state: &State) -> BTreeSet<ServiceKey> {
    let mut placed: std::collections::BTreeMap<&ServiceKey, u32> = Default::default();
    let keys: Vec<(&ServiceKey, u32)> = state
        .services
        .iter()
        .map(|(key, s)| (key, s.spec.replicas))
        .collect();
    for instance in state.instances.values() {
        let on_ready = instance
            .node
            .as_deref()
            .and_then(|n| state.nodes.get(n))
            .is_some_and(|n| n.state == NodeState::Ready);
        if on_ready {
            let key = (instance.namespace.clone(), instance.service.clone());
            if let Some((k, _)) = state.services.get_key_value(&key) {
                *placed.entry(k).or_default() += 1;
            }
        }
    }
    keys.into_iter()
        .filter(|(key, replicas)| placed.get(key).copied().unwrap_or(0) < *replicas)
        .map(|(key, _)| key.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Command, Request, RequestId};

    fn apply(state: &mut State, command: Command) -> Vec<Touched> {
        let index = state.applied_index + 1;
        let applied = state.apply(
            index,
            &Request {
                id: RequestId::random(),
                time_ms: 0,
                command: command.clone(),
            },
        );
        crate::state::touched::touched(&command, &applied.outcome)
    }

    fn node(name: &str) -> Command {
        Command::PutNode {
            name: name.into(),
            spec: serde_json::from_value(serde_json::json!({
                "provider": "static",
                "docker_endpoint": "tcp://127.0.0.1:1"
            }))
            .unwrap(),
            expected_version: None,
        }
    }

    fn service(name: &str, replicas: u32) -> Command {
        Command::PutService {
            namespace: "ns".into(),
            name: name.into(),
            spec: serde_json::from_value(
                serde_json::json!({"image": "echo", "replicas": replicas}),
            )
            .unwrap(),
            expected_version: None,
        }
    }

    fn key(name: &str) -> ServiceKey {
        ("ns".into(), name.into())
    }

    fn world() -> State {
        let mut state = State::default();
        apply(
            &mut state,
            Command::InitCluster {
                cluster_id: "c".into(),
            },
        );
        apply(&mut state, node("n1"));
        apply(&mut state, node("n2"));
        apply(&mut state, service("web", 1));
        apply(&mut state, service("db", 1));
        for (svc, n) in [("web", "n1"), ("db", "n2")] {
            let touched = apply(
                &mut state,
                Command::PlaceSlot {
                    namespace: "ns".into(),
                    service: svc.into(),
                    slot: 0,
                    node: n.into(),
                },
            );
            assert_eq!(wakes(&touched, &state).services, BTreeSet::from([key(svc)]));
        }
        state
    }

    #[test]
    fn a_kv_write_wakes_no_controller() {
        let mut state = world();
        let touched = apply(
            &mut state,
            Command::KvPut {
                key: "k".into(),
                value: b"v".to_vec(),
                flags: 0,
                cas: None,
            },
        );
        assert!(wakes(&touched, &state).is_empty());
    }

    #[test]
    fn a_service_change_wakes_that_service_only() {
        let mut state = world();
        let touched = apply(
            &mut state,
            Command::ScaleService {
                namespace: "ns".into(),
                name: "web".into(),
                replicas: 2,
            },
        );
        let woken = wakes(&touched, &state);
        assert_eq!(woken.services, BTreeSet::from([key("web")]));
        assert_eq!(woken.instances, BTreeSet::from(["ns.web.0".to_string()]));
        assert!(woken.nodes.is_empty() && !woken.managers && !woken.everything);
    }

    #[test]
    fn a_node_transition_wakes_the_services_with_instances_there() {
        let mut state = world();
        let touched = apply(
            &mut state,
            Command::SetNodeState {
                name: "n1".into(),
                state: NodeState::Down,
                reason: "gone".into(),
            },
        );
        let woken = wakes(&touched, &state);
        assert_eq!(woken.nodes, BTreeSet::from(["n1".to_string()]));
        assert_eq!(woken.services, BTreeSet::from([key("web")]));
        // A new node: the services still short of placed slots look again.
        let touched = apply(&mut state, node("n3"));
        let woken = wakes(&touched, &state);
        assert_eq!(woken.services, BTreeSet::from([key("web")]));
        assert_eq!(woken.nodes, BTreeSet::from(["n3".to_string()]));
    }

    #[test]
    fn engines_that_became_known_wake_the_services_placed_there() {
        let state = world();
        let on = |nodes: &[&str]| {
            let nodes = nodes.iter().map(|n| n.to_string()).collect();
            placed_on(&nodes, &state)
        };
        assert_eq!(on(&["n1"]).services, BTreeSet::from([key("web")]));
        assert_eq!(
            on(&["n1", "n2"]).services,
            BTreeSet::from([key("web"), key("db")])
        );
        let woken = on(&["n1", "n2"]);
        assert!(woken.nodes.is_empty() && woken.instances.is_empty() && !woken.everything);
        assert!(on(&["n9"]).is_empty());
    }
}
