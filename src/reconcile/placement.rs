//! Placement: which node runs a slot. Pure and deterministic — it reads
//! the inventory and what every node carries and returns a node name, so
//! it is unit-tested without engines and repeated identically by a new
//! leader.
//!
//! A node qualifies when it is ready, matches the service's region, zone
//! and node labels, and has capacity left (instances, CPU, memory). Among
//! qualifying nodes it prefers the one that spreads the service best (fewest
//! instances of this service on the node, or in its zone with
//! `spread = "zone"`), then the least loaded node, then the name.
//!
//! [`Loads`] keeps the nodes ordered by load, so a slot of a service
//! spread by node (the default) or not spread is placed by walking the
//! lightest nodes first and stopping at the first that qualifies and holds
//! none of the service's instances: a placement costs what it skips, not
//! the size of the inventory.

use std::collections::{BTreeMap, BTreeSet};

use crate::state::{Node, NodeState, Resources, ServiceSpec, Spread};

/// What is already placed on a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeLoad {
    pub instances: u32,
    pub cpu_millis: u64,
    pub memory_mb: u64,
}

impl NodeLoad {
    /// Counts one more instance reserving `resources`.
    fn carry(&mut self, resources: &Resources) {
        self.instances += 1;
        self.cpu_millis += u64::from(resources.cpu_millis);
        self.memory_mb += resources.memory_mb;
    }

    /// Counts one instance fewer ([`NodeLoad::carry`] undone).
    fn drop_one(&mut self, resources: &Resources) {
        self.instances = self.instances.saturating_sub(1);
        self.cpu_millis = self
            .cpu_millis
            .saturating_sub(u64::from(resources.cpu_millis));
        self.memory_mb = self.memory_mb.saturating_sub(resources.memory_mb);
    }
}

/// What every node carries, with the nodes ordered by instance count.
///
/// A *complete* book ([`Loads::for_nodes`]) holds every node of the
/// inventory it was built from, the idle ones too, and may only be used
/// with that inventory; then [`choose_node`] walks it lightest first.
/// Any other book (possibly missing nodes) makes [`choose_node`] score
/// every node.
#[derive(Debug, Clone, Default)]
pub struct Loads {
    by_node: BTreeMap<String, NodeLoad>,
    /// `(instances, node)` of every node in `by_node`.
    lightest: BTreeSet<(u32, String)>,
    complete: bool,
}

impl Loads {
    /// The complete book of `nodes`, given where instances are placed
    /// (`placed`: the node and the resources of each instance).
    pub fn for_nodes<'a>(
        nodes: &BTreeMap<String, Node>,
        placed: impl IntoIterator<Item = (&'a str, &'a Resources)>,
    ) -> Loads {
        let mut by_node: BTreeMap<String, NodeLoad> = nodes
            .keys()
            .map(|name| (name.clone(), NodeLoad::default()))
            .collect();
        for (node, resources) in placed {
            // An instance on a node that left the inventory loads nothing.
            if let Some(load) = by_node.get_mut(node) {
                load.carry(resources);
            }
        }
        Loads::of(by_node, true)
    }

    fn of(by_node: BTreeMap<String, NodeLoad>, complete: bool) -> Loads {
        let lightest = by_node
            .iter()
            .map(|(name, load)| (load.instances, name.clone()))
            .collect();
        Loads {
            by_node,
            lightest,
            complete,
        }
    }

    /// What `node` carries (nothing if unknown).
    pub fn get(&self, node: &str) -> Option<&NodeLoad> {
        self.by_node.get(node)
    }

    /// Counts one more instance with `resources` on `node`.
    pub fn add(&mut self, node: &str, resources: &Resources) {
        let load = match self.by_node.get_mut(node) {
            Some(load) => {
                self.lightest.remove(&(load.instances, node.to_string()));
                load
            }
            None => self.by_node.entry(node.to_string()).or_default(),
        };
        load.carry(resources);
        self.lightest.insert((load.instances, node.to_string()));
    }

    /// Takes back an [`Loads::add`] whose placement was not made after all
    /// (it waits for its image), so it does not count against the node.
    pub fn take_back(&mut self, node: &str, resources: &Resources) {
        let Some(load) = self.by_node.get_mut(node) else {
            return;
        };
        self.lightest.remove(&(load.instances, node.to_string()));
        load.drop_one(resources);
        self.lightest.insert((load.instances, node.to_string()));
    }
}

impl FromIterator<(String, NodeLoad)> for Loads {
    /// An incomplete book of the given loads (tests, partial views).
    fn from_iter<I: IntoIterator<Item = (String, NodeLoad)>>(loads: I) -> Loads {
        Loads::of(loads.into_iter().collect(), false)
    }
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
/// `loads` is what every node carries; `service_counts` how many
/// instances of this service each node already has; `exclude` nodes never
/// to use (e.g. the node an instance is moving off).
pub fn choose_node(
    spec: &ServiceSpec,
    nodes: &BTreeMap<String, Node>,
    loads: &Loads,
    service_counts: &BTreeMap<String, u32>,
    exclude: &[&str],
) -> Result<String, PlacementError> {
    let mut seen = Seen::default();
    let spread_of = |name: &str| service_counts.get(name).copied().unwrap_or(0);
    if loads.complete && spec.placement.spread != Spread::Zone {
        // Lightest first: the first qualifying node without an instance
        // of this service is the best there is.
        let mut best: Option<(u32, u32, &str)> = None;
        for (instances, name) in &loads.lightest {
            let Some(node) = nodes.get(name) else {
                continue;
            };
            if !seen.qualifies(spec, node, loads, exclude) {
                continue;
            }
            let spread = match spec.placement.spread {
                Spread::Node => spread_of(name),
                _ => 0,
            };
            if spread == 0 {
                return Ok(name.clone());
            }
            if best.is_none_or(|b| (spread, *instances, name.as_str()) < b) {
                best = Some((spread, *instances, name.as_str()));
            }
        }
        return match best {
            Some((_, _, name)) => Ok(name.to_string()),
            None => Err(seen.error(spec)),
        };
    }
    let fits: Vec<&Node> = nodes
        .values()
        .filter(|n| seen.qualifies(spec, n, loads, exclude))
        .collect();
    if fits.is_empty() {
        return Err(seen.error(spec));
    }
    let mut zone_counts: BTreeMap<Option<&str>, u32> = BTreeMap::new();
    if spec.placement.spread == Spread::Zone {
        for node in &fits {
            *zone_counts.entry(node.spec.zone.as_deref()).or_default() += spread_of(&node.name);
        }
    }
    let best = fits
        .into_iter()
        .min_by_key(|n| {
            let spread_key = match spec.placement.spread {
                Spread::Node => spread_of(&n.name),
                Spread::Zone => zone_counts
                    .get(&n.spec.zone.as_deref())
                    .copied()
                    .unwrap_or(0),
                Spread::None => 0,
            };
            let load_key = loads.get(&n.name).map_or(0, |l| l.instances);
            (spread_key, load_key, n.name.as_str())
        })
        .expect("fits is not empty");
    Ok(best.name.clone())
}

/// How far the nodes looked at got, for the error when none qualifies.
#[derive(Debug, Default)]
struct Seen {
    ready: bool,
    matching: bool,
}

impl Seen {
    /// Whether `node` can take one more instance of `spec`.
    fn qualifies(
        &mut self,
        spec: &ServiceSpec,
        node: &Node,
        loads: &Loads,
        exclude: &[&str],
    ) -> bool {
        if node.state != NodeState::Ready || exclude.contains(&node.name.as_str()) {
            return false;
        }
        self.ready = true;
        let placement = &spec.placement;
        let matches = placement
            .region
            .as_ref()
            .is_none_or(|r| node.spec.region.as_ref() == Some(r))
            && placement
                .zone
                .as_ref()
                .is_none_or(|z| node.spec.zone.as_ref() == Some(z))
            && placement
                .node_labels
                .iter()
                .all(|(k, v)| node.spec.labels.get(k) == Some(v));
        if !matches {
            return false;
        }
        self.matching = true;
        let empty = NodeLoad::default();
        let used = loads.get(&node.name).unwrap_or(&empty);
        let cap = &node.spec.capacity;
        (cap.max_instances == 0 || used.instances < cap.max_instances)
            && (cap.cpu_millis == 0
                || used.cpu_millis + u64::from(spec.resources.cpu_millis)
                    <= u64::from(cap.cpu_millis))
            && (cap.memory_mb == 0 || used.memory_mb + spec.resources.memory_mb <= cap.memory_mb)
    }

    fn error(&self, spec: &ServiceSpec) -> PlacementError {
        if !self.ready {
            PlacementError::NoReadyNode
        } else if !self.matching {
            PlacementError::NoMatch(describe_constraints(spec))
        } else {
            PlacementError::NoCapacity(format!(
                "needs cpu_millis {} memory_mb {}",
                spec.resources.cpu_millis, spec.resources.memory_mb
            ))
        }
    }
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

    fn inventory(nodes: &[Node]) -> BTreeMap<String, Node> {
        nodes.iter().map(|n| (n.name.clone(), n.clone())).collect()
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
            choose_node(&s, &inventory(&nodes), &Loads::default(), &counts, &[]).unwrap(),
            "a"
        );
        counts.insert("a".to_string(), 1);
        assert_eq!(
            choose_node(&s, &inventory(&nodes), &Loads::default(), &counts, &[]).unwrap(),
            "b"
        );
        let load = Loads::from_iter([(
            "a".to_string(),
            NodeLoad {
                instances: 5,
                ..Default::default()
            },
        )]);
        assert_eq!(
            choose_node(&s, &inventory(&nodes), &load, &BTreeMap::new(), &[]).unwrap(),
            "b"
        );
        assert_eq!(
            choose_node(
                &s,
                &inventory(&nodes),
                &Loads::default(),
                &BTreeMap::new(),
                &["a"]
            )
            .unwrap(),
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
            choose_node(&s, &inventory(&nodes), &Loads::default(), &counts, &[]).unwrap(),
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
            choose_node(
                &ssd,
                &inventory(&nodes),
                &Loads::default(),
                &BTreeMap::new(),
                &[]
            )
            .unwrap(),
            "a"
        );
        let full = Loads::from_iter([(
            "a".to_string(),
            NodeLoad {
                instances: 1,
                ..Default::default()
            },
        )]);
        assert!(matches!(
            choose_node(&ssd, &inventory(&nodes), &full, &BTreeMap::new(), &[]),
            Err(PlacementError::NoCapacity(_))
        ));
        let z2 = spec(
            serde_json::json!({"placement": {"zone": "z2"}, "resources": {"memory_mb": 1024}}),
        );
        assert!(matches!(
            choose_node(
                &z2,
                &inventory(&nodes),
                &Loads::default(),
                &BTreeMap::new(),
                &[]
            ),
            Err(PlacementError::NoCapacity(_))
        ));
        let z3 = spec(serde_json::json!({"placement": {"zone": "z3"}}));
        assert_eq!(
            choose_node(
                &z3,
                &inventory(&nodes),
                &Loads::default(),
                &BTreeMap::new(),
                &[]
            ),
            Err(PlacementError::NoMatch("zone=z3".into()))
        );
        let mut down = nodes.clone();
        for n in &mut down {
            n.state = NodeState::Down;
        }
        assert_eq!(
            choose_node(
                &ssd,
                &inventory(&down),
                &Loads::default(),
                &BTreeMap::new(),
                &[]
            ),
            Err(PlacementError::NoReadyNode)
        );
    }

    /// The lightest-first walk of a complete book picks what scoring every
    /// node picks, across spreads, constraints, capacities and exclusions.
    #[test]
    fn a_complete_book_picks_what_scoring_every_node_picks() {
        let mut nodes = Vec::new();
        for i in 0..24u32 {
            let zone = format!("z{}", i % 3);
            let labels: &[(&str, &str)] = if i % 4 == 0 { &[("disk", "ssd")] } else { &[] };
            let mut n = node(
                &format!("n{i:02}"),
                &zone,
                labels,
                Capacity {
                    max_instances: 3 + i % 5,
                    ..Default::default()
                },
            );
            if i % 7 == 3 {
                n.state = NodeState::Down;
            }
            nodes.push(n);
        }
        let inventory = inventory(&nodes);
        let specs = [
            spec(serde_json::json!({})),
            spec(serde_json::json!({"placement": {"spread": "none"}})),
            spec(serde_json::json!({"placement": {"node_labels": {"disk": "ssd"}}})),
            spec(serde_json::json!({"placement": {"zone": "z1"}})),
        ];
        let resources = Resources::default();
        for (round, s) in specs.iter().enumerate() {
            // Some load already placed, unevenly.
            let placed: Vec<(&str, &Resources)> = nodes
                .iter()
                .enumerate()
                .flat_map(|(i, n)| {
                    std::iter::repeat_n((n.name.as_str(), &resources), (i * 7 + round) % 4)
                })
                .collect();
            let mut complete = Loads::for_nodes(&inventory, placed);
            let mut partial: Loads = complete
                .by_node
                .iter()
                .filter(|(_, l)| l.instances > 0)
                .map(|(n, l)| (n.clone(), l.clone()))
                .collect();
            let mut counts: BTreeMap<String, u32> = BTreeMap::new();
            for slot in 0..40 {
                let exclude: &[&str] = if slot % 5 == 0 { &["n00", "n08"] } else { &[] };
                let fast = choose_node(s, &inventory, &complete, &counts, exclude);
                let scored = choose_node(s, &inventory, &partial, &counts, exclude);
                assert_eq!(fast, scored, "spec {round}, slot {slot}");
                let Ok(chosen) = fast else { break };
                complete.add(&chosen, &resources);
                partial.add(&chosen, &resources);
                *counts.entry(chosen).or_default() += 1;
            }
        }
    }
}
