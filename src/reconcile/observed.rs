//! What the engines run, as the leader knows it (pure bookkeeping): each
//! usable node's containers of this cluster, kept from the node's event
//! stream — listed once when the stream connects, then updated container
//! by container — so a reconcile reads its service's containers here
//! instead of listing every node. A node whose stream broke (a gap: lag,
//! disconnect) is *unsynced*: its containers are unknown, none are shown,
//! and its instances are left alone until it is listed again. Every change
//! answers which services it concerns, so exactly those are reconciled.
//! No I/O here: [`super::watcher`] feeds it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::labels;
use crate::runtime::ContainerInfo;

/// `(namespace, service)` of a container, from its labels (empty when
/// missing: such a container belongs to no service and is removed).
pub type ServiceKey = (String, String);

pub fn service_of(container_labels: &BTreeMap<String, String>) -> ServiceKey {
    let get = |name| container_labels.get(name).cloned().unwrap_or_default();
    (get(labels::NAMESPACE), get(labels::SERVICE))
}

#[derive(Debug, Default)]
struct NodeView {
    synced: bool,
    /// Shared with the reconciles that read them: a look costs no copy.
    containers: BTreeMap<String, Arc<ContainerInfo>>,
}

/// The containers of every watched node.
#[derive(Debug, Default)]
pub struct Observed {
    nodes: HashMap<String, NodeView>,
    /// Which nodes hold containers of each service.
    by_service: BTreeMap<ServiceKey, BTreeMap<String, BTreeSet<String>>>,
}

impl Observed {
    /// `node` was listed: its containers are exactly `listed` now. The
    /// services whose containers there changed (or were there).
    pub fn relisted(&mut self, node: &str, listed: Vec<ContainerInfo>) -> BTreeSet<ServiceKey> {
        let mut touched = self.unsynced(node);
        let view = self.nodes.entry(node.to_string()).or_default();
        view.synced = true;
        for container in listed {
            let key = service_of(&container.labels);
            self.by_service
                .entry(key.clone())
                .or_default()
                .entry(node.to_string())
                .or_default()
                .insert(container.id.clone());
            view.containers
                .insert(container.id.clone(), Arc::new(container));
            touched.insert(key);
        }
        touched
    }

    /// The container's latest state on `node`; the services it concerns
    /// (two when its labels changed, which engines do not do). Ignored
    /// while the node is unsynced: the next listing brings it.
    pub fn updated(&mut self, node: &str, container: ContainerInfo) -> BTreeSet<ServiceKey> {
        let Some(view) = self.nodes.get_mut(node).filter(|v| v.synced) else {
            return BTreeSet::new();
        };
        let key = service_of(&container.labels);
        let mut touched = BTreeSet::from([key.clone()]);
        if let Some(old) = view
            .containers
            .insert(container.id.clone(), Arc::new(container.clone()))
        {
            let old_key = service_of(&old.labels);
            if old_key != key {
                remove_index(&mut self.by_service, &old_key, node, &old.id);
                touched.insert(old_key);
            }
        }
        self.by_service
            .entry(key)
            .or_default()
            .entry(node.to_string())
            .or_default()
            .insert(container.id);
        touched
    }

    /// The container `id` is gone from `node`.
    pub fn removed(&mut self, node: &str, id: &str) -> BTreeSet<ServiceKey> {
        let Some(view) = self.nodes.get_mut(node) else {
            return BTreeSet::new();
        };
        let Some(old) = view.containers.remove(id) else {
            return BTreeSet::new();
        };
        let key = service_of(&old.labels);
        remove_index(&mut self.by_service, &key, node, id);
        BTreeSet::from([key])
    }

    /// The node's stream broke: what it runs is unknown until it is listed
    /// again. The services that had containers there.
    pub fn unsynced(&mut self, node: &str) -> BTreeSet<ServiceKey> {
        let Some(view) = self.nodes.get_mut(node) else {
            return BTreeSet::new();
        };
        view.synced = false;
        let mut touched = BTreeSet::new();
        for (id, container) in std::mem::take(&mut view.containers) {
            let key = service_of(&container.labels);
            remove_index(&mut self.by_service, &key, node, &id);
            touched.insert(key);
        }
        touched
    }

    /// The node is no longer watched at all.
    pub fn forget(&mut self, node: &str) -> BTreeSet<ServiceKey> {
        let touched = self.unsynced(node);
        self.nodes.remove(node);
        touched
    }

    /// Whether `node`'s containers are known (listed, stream unbroken).
    pub fn is_synced(&self, node: &str) -> bool {
        self.nodes.get(node).is_some_and(|v| v.synced)
    }

    /// The containers of `service` on synced nodes, with their node.
    pub fn of_service(&self, service: &ServiceKey) -> Vec<(String, Arc<ContainerInfo>)> {
        let Some(nodes) = self.by_service.get(service) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for (node, ids) in nodes {
            let Some(view) = self.nodes.get(node) else {
                continue;
            };
            for id in ids {
                if let Some(container) = view.containers.get(id) {
                    found.push((node.clone(), container.clone()));
                }
            }
        }
        found
    }

    /// Every service that has containers somewhere.
    pub fn services(&self) -> Vec<ServiceKey> {
        self.by_service.keys().cloned().collect()
    }

    /// One container on `node`, if known.
    pub fn container(&self, node: &str, id: &str) -> Option<&ContainerInfo> {
        self.nodes.get(node)?.containers.get(id).map(|c| &**c)
    }
}

fn remove_index(
    index: &mut BTreeMap<ServiceKey, BTreeMap<String, BTreeSet<String>>>,
    key: &ServiceKey,
    node: &str,
    id: &str,
) {
    let Some(nodes) = index.get_mut(key) else {
        return;
    };
    if let Some(ids) = nodes.get_mut(node) {
        ids.remove(id);
        if ids.is_empty() {
            nodes.remove(node);
        }
    }
    if nodes.is_empty() {
        index.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::ContainerState;

    fn container(id: &str, service: &str, state: ContainerState) -> ContainerInfo {
        ContainerInfo {
            id: id.into(),
            name: format!("rv-{id}"),
            image: "echo".into(),
            labels: [
                (labels::NAMESPACE.to_string(), "ns".to_string()),
                (labels::SERVICE.to_string(), service.to_string()),
            ]
            .into(),
            state,
            exit_code: None,
            oom_killed: false,
            started_at: String::new(),
            finished_at: String::new(),
            ports: Vec::new(),
            ip_address: None,
            pid: 0,
        }
    }

    fn key(service: &str) -> ServiceKey {
        ("ns".into(), service.into())
    }

    #[test]
    fn a_listing_then_events_keep_each_services_containers() {
        let mut o = Observed::default();
        let touched = o.relisted(
            "n1",
            vec![
                container("a", "web", ContainerState::Running),
                container("b", "db", ContainerState::Running),
            ],
        );
        assert_eq!(touched, BTreeSet::from([key("web"), key("db")]));
        o.relisted("n2", vec![container("c", "web", ContainerState::Running)]);
        assert_eq!(o.of_service(&key("web")).len(), 2);
        // One container died: only its service is touched.
        let touched = o.updated("n1", container("a", "web", ContainerState::Exited));
        assert_eq!(touched, BTreeSet::from([key("web")]));
        let web = o.of_service(&key("web"));
        assert!(web
            .iter()
            .any(|(n, c)| n == "n1" && c.state == ContainerState::Exited));
        assert_eq!(o.removed("n1", "b"), BTreeSet::from([key("db")]));
        assert!(o.of_service(&key("db")).is_empty());
        assert_eq!(o.services(), vec![key("web")]);
        assert_eq!(o.removed("n1", "b"), BTreeSet::new(), "already gone");
    }

    #[test]
    fn a_broken_stream_hides_the_node_until_it_is_listed_again() {
        let mut o = Observed::default();
        o.relisted("n1", vec![container("a", "web", ContainerState::Running)]);
        o.relisted("n2", vec![container("c", "web", ContainerState::Running)]);
        assert_eq!(o.unsynced("n1"), BTreeSet::from([key("web")]));
        assert!(!o.is_synced("n1"));
        assert!(o.is_synced("n2"));
        let web = o.of_service(&key("web"));
        assert_eq!(web.len(), 1);
        assert_eq!(web[0].0, "n2");
        // Events of an unsynced node wait for the next listing.
        assert!(o
            .updated("n1", container("d", "web", ContainerState::Running))
            .is_empty());
        // The relisting is the truth: a container gone meanwhile is gone.
        let touched = o.relisted("n1", vec![container("e", "db", ContainerState::Running)]);
        assert_eq!(touched, BTreeSet::from([key("db")]));
        assert_eq!(o.of_service(&key("web")).len(), 1);
        assert!(o.container("n1", "e").is_some());
        assert_eq!(o.forget("n1"), BTreeSet::from([key("db")]));
        assert!(o.of_service(&key("db")).is_empty());
    }

    #[test]
    fn a_relisting_reports_services_that_lost_containers() {
        let mut o = Observed::default();
        o.relisted("n1", vec![container("a", "web", ContainerState::Running)]);
        let touched = o.relisted("n1", Vec::new());
        assert_eq!(touched, BTreeSet::from([key("web")]));
        assert!(o.services().is_empty());
    }
}
