//! Placement: which node runs a slot. Pure and deterministic — it reads
//! the inventory and the current instances and returns a node name, so it
//! is unit-tested without engines and repeated identically by a new leader.
//!
//! A node qualifies when it is ready, matches the service's region, zone
//! and node labels, and has capacity left (instances, CPU, memory). Among
//! qualifying nodes it prefers the one that spreads the service best (fewest
//! instances of this service on the node, or in its zone with
//! `spread = "zone"`), then the least loaded node, then the name.

use std::collections::BTreeMap;

use crate::state::{Node, NodeState, ServiceSpec, Spread};

/// What is already placed on a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeLoad {
    pub instances: u32,
    pub cpu_millis: u64,
    pub memory_mb: u64,
}

/// Why no node can take a slot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("no ready node in the inventory")]
    NoReadyNode,
    #[error("no ready node matches the placement constraints ({0})")]
    NoMatch(String),
    #[error("every matching node is full ({0})")]
    NoCapacity(String),
}

/// Picks a node for one more instance of a service with `spec`.
///
/// `load` is the load of every node; `service_counts` how many instances
/// of this service each node already has; `exclude` nodes never to use
/// (e.g. the node an instance is moving off).
pub fn choose_node<'a>(
    spec: &ServiceSpec,
    nodes: impl IntoIterator<Item = &'a Node>,
    load: &BTreeMap<String, NodeLoad>,
    service_counts: &BTreeMap<String, u32>,
    exclude: &[&str],
) -> Result<String, PlacementError> {
    let ready: Vec<&Node> = nodes
        .into_iter()
        .filter(|n| n.state == NodeState::Ready && !exclude.contains(&n.name.as_str()))
        .collect();
    if ready.is_empty() {
        return Err(PlacementError::NoReadyNode);
    }
    let placement = &spec.placement;
    let matching: Vec<&Node> = ready
        .into_iter()
        .filter(|n| {
            placement
                .region
                .as_ref()
                .is_none_or(|r| n.spec.region.as_ref() == Some(r))
        })
        .filter(|n| {
            placement
                .zone
                .as_ref()
                .is_none_or(|z| n.spec.zone.as_ref() == Some(z))
        })
        .filter(|n| {
            placement
                .node_labels
                .iter()
                .all(|(k, v)| n.spec.labels.get(k) == Some(v))
        })
        .collect();
    if matching.is_empty() {
        return Err(PlacementError::NoMatch(describe_constraints(spec)));
    }
    let empty = NodeLoad::default();
    let fits: Vec<&Node> = matching
        .into_iter()
        .filter(|n| {
            let used = load.get(&n.name).unwrap_or(&empty);
            let cap = &n.spec.capacity;
            (cap.max_instances == 0 || used.instances < cap.max_instances)
                && (cap.cpu_millis == 0
                    || used.cpu_millis + u64::from(spec.resources.cpu_millis)
                        <= u64::from(cap.cpu_millis))
                && (cap.memory_mb == 0
                    || used.memory_mb + spec.resources.memory_mb <= cap.memory_mb)
        })
        .collect();
    if fits.is_empty() {
        return Err(PlacementError::NoCapacity(format!(
            "needs cpu_millis {} memory_mb {}",
            spec.resources.cpu_millis, spec.resources.memory_mb
        )));
    }
    let mut zone_counts: BTreeMap<Option<&str>, u32> = BTreeMap::new();
    if placement.spread == Spread::Zone {
        for node in &fits {
            let count = service_counts.get(&node.name).copied().unwrap_or(0);
            *zone_counts.entry(node.spec.zone.as_deref()).or_default() += count;
        }
    }
    let best = fits
        .into_iter()
        .min_by_key(|n| {
            let spread_key = match placement.spread {
                Spread::Node => service_counts.get(&n.name).copied().unwrap_or(0),
                Spread::Zone => zone_counts
                    .get(&n.spec.zone.as_deref())
                    .copied()
                    .unwrap_or(0),
                Spread::None => 0,
            };
            let load_key = load.get(&n.name).map_or(0, |l| l.instances);
            (spread_key, load_key, n.name.as_str())
        })
        .expect("fits is not empty");
    Ok(best.name.clone())
}

fn describe_constraints(spec: &ServiceSpec) -> String {
    let p = &spec.placement;
    let mut parts = Vec::new();
    if let Some(r) = &p.region {
        parts.push(format!("region={r}"));
    }
    if let Some(z) = &p.zone {
        parts.push(format!("zone={z}"));
    }
    for (k, v) in &p.node_labels {
        parts.push(format!("label {k}={v}"));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Capacity, NodeSpec};

    fn node(name: &str, zone: &str, labels: &[(&str, &str)], capacity: Capacity) -> Node {
        Node {
            name: name.into(),
            spec: NodeSpec {
                provider: "static".into(),
                docker_endpoint: "unix:///var/run/docker.sock".into(),
                address: None,
                region: Some("eu".into()),
                zone: Some(zone.into()),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                capacity,
                docker_tls: None,
            },
            state: NodeState::Ready,
            version: 1,
            create_index: 1,
        }
    }

    fn spec(json: serde_json::Value) -> ServiceSpec {
        let mut base = serde_json::json!({"image": "x"});
        base.as_object_mut()
            .unwrap()
            .extend(json.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn spreads_across_nodes_then_by_load_then_name() {
        let nodes = [
            node("a", "z1", &[], Capacity::default()),
            node("b", "z1", &[], Capacity::default()),
        ];
        let s = spec(serde_json::json!({}));
        let mut counts = BTreeMap::new();
        assert_eq!(
            choose_node(&s, &nodes, &BTreeMap::new(), &counts, &[]).unwrap(),
            "a"
        );
        counts.insert("a".to_string(), 1);
        assert_eq!(
            choose_node(&s, &nodes, &BTreeMap::new(), &counts, &[]).unwrap(),
            "b"
        );
        let load = BTreeMap::from([(
            "a".to_string(),
            NodeLoad {
                instances: 5,
                ..Default::default()
            },
        )]);
        assert_eq!(
            choose_node(&s, &nodes, &load, &BTreeMap::new(), &[]).unwrap(),
            "b"
        );
        assert_eq!(
            choose_node(&s, &nodes, &BTreeMap::new(), &BTreeMap::new(), &["a"]).unwrap(),
            "b"
        );
    }

    #[test]
    fn spreads_across_zones() {
        let nodes = [
            node("a1", "z1", &[], Capacity::default()),
            node("a2", "z1", &[], Capacity::default()),
            node("b1", "z2", &[], Capacity::default()),
        ];
        let s = spec(serde_json::json!({"placement": {"spread": "zone"}}));
        let counts = BTreeMap::from([("a1".to_string(), 1)]);
        assert_eq!(
            choose_node(&s, &nodes, &BTreeMap::new(), &counts, &[]).unwrap(),
            "b1"
        );
    }

    #[test]
    fn honours_affinity_labels_and_capacity() {
        let nodes = [
            node(
                "a",
                "z1",
                &[("disk", "ssd")],
                Capacity {
                    max_instances: 1,
                    ..Default::default()
                },
            ),
            node(
                "b",
                "z2",
                &[],
                Capacity {
                    memory_mb: 512,
                    ..Default::default()
                },
            ),
        ];
        let ssd = spec(serde_json::json!({"placement": {"node_labels": {"disk": "ssd"}}}));
        assert_eq!(
            choose_node(&ssd, &nodes, &BTreeMap::new(), &BTreeMap::new(), &[]).unwrap(),
            "a"
        );
        let full = BTreeMap::from([(
            "a".to_string(),
            NodeLoad {
                instances: 1,
                ..Default::default()
            },
        )]);
        assert!(matches!(
            choose_node(&ssd, &nodes, &full, &BTreeMap::new(), &[]),
            Err(PlacementError::NoCapacity(_))
        ));
        let z2 = spec(
            serde_json::json!({"placement": {"zone": "z2"}, "resources": {"memory_mb": 1024}}),
        );
        assert!(matches!(
            choose_node(&z2, &nodes, &BTreeMap::new(), &BTreeMap::new(), &[]),
            Err(PlacementError::NoCapacity(_))
        ));
        let z3 = spec(serde_json::json!({"placement": {"zone": "z3"}}));
        assert_eq!(
            choose_node(&z3, &nodes, &BTreeMap::new(), &BTreeMap::new(), &[]),
            Err(PlacementError::NoMatch("zone=z3".into()))
        );
        let mut down = nodes.clone();
        for n in &mut down {
            n.state = NodeState::Down;
        }
        assert_eq!(
            choose_node(&ssd, &down, &BTreeMap::new(), &BTreeMap::new(), &[]),
            Err(PlacementError::NoReadyNode)
        );
    }
}
