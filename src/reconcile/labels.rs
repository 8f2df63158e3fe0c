//! The Docker labels and names raftvisor puts on every container and
//! volume it manages (the contract in ARCHITECTURE.md), and reading them
//! back. A
//! container belongs to an instance only if cluster, instance, generation
//! and node all match; anything else carrying this cluster's and node's
//! labels is an orphan.

use std::collections::BTreeMap;

use crate::state::Instance;

pub const CLUSTER: &str = "raftvisor.cluster";
pub const NAMESPACE: &str = "raftvisor.namespace";
pub const SERVICE: &str = "raftvisor.service";
pub const INSTANCE: &str = "raftvisor.instance";
pub const SLOT: &str = "raftvisor.slot";
pub const GENERATION: &str = "raftvisor.generation";
pub const NODE: &str = "raftvisor.node";
pub const SPEC_VERSION: &str = "raftvisor.spec-version";
/// Fingerprint of the container template (everything but the replica
/// count), so scaling never replaces containers but a new image does.
pub const TEMPLATE: &str = "raftvisor.template";
/// On a volume: the name of the service's volume it is one slot's copy of.
pub const VOLUME: &str = "raftvisor.volume";
/// On a hook's one-shot container: the hook it runs. It carries none of
/// an instance's labels, so no service ever takes it for its own.
pub const HOOK: &str = "raftvisor.hook";
/// On a hook's one-shot container: the instance whose slot it serves.
pub const HOOK_OF: &str = "raftvisor.hook-of";

/// The Docker volume of `namespace/service`'s slot `slot` for the
/// service's volume `volume`: `rv-<cluster>-<ns>.<service>.<slot>-<volume>`,
/// the same for every generation of the slot (its next container finds the
/// data) and unique per cluster, slot and volume (the slot's instance id
/// is unambiguous and volume names are DNS labels).
pub fn volume_name(
    cluster: &str,
    namespace: &str,
    service: &str,
    slot: u32,
    volume: &str,
) -> String {
    let slot_id = crate::state::supervision::instance_id(namespace, service, slot);
    format!("rv-{cluster}-{slot_id}-{volume}")
}

/// The labels of a slot's volume: whose it is and the node it was made on.
pub fn volume_labels(cluster: &str, instance: &Instance, volume: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (CLUSTER.to_string(), cluster.to_string()),
        (NAMESPACE.to_string(), instance.namespace.clone()),
        (SERVICE.to_string(), instance.service.clone()),
        (SLOT.to_string(), instance.slot.to_string()),
        (VOLUME.to_string(), volume.to_string()),
        (NODE.to_string(), instance.node.clone().unwrap_or_default()),
    ])
}

/// Deterministic container name: a second create of the same instance and
/// generation is refused by the engine instead of duplicated.
/// `rv-<cluster>-<instance id>-<generation>`: unique per cluster, instance
/// and generation since the cluster id is fixed-length hex and instance
/// ids are unique (see [`crate::state::supervision::instance_id`]); an
/// instance placed under a legacy id keeps the name it always had.
pub fn container_name(cluster: &str, instance: &Instance) -> String {
    format!("rv-{cluster}-{}-{}", instance.id, instance.generation)
}

/// The labels that make a container the one of an instance's generation on
/// its node: cluster, namespace, service, instance, generation and node.
const OWNERSHIP: [&str; 6] = [CLUSTER, NAMESPACE, SERVICE, INSTANCE, GENERATION, NODE];

/// Whether a container found under the name raftvisor wanted (a create
/// refused with a name conflict) is the very container it meant to create,
/// left by an interrupted create: then it is adopted. Anything else — a
/// container of another cluster, service or instance, or one nobody
/// labelled — is not raftvisor's to take over.
pub fn adoptable(expected: &BTreeMap<String, String>, found: &BTreeMap<String, String>) -> bool {
    OWNERSHIP
        .iter()
        .all(|key| expected.get(*key).is_some() && expected.get(*key) == found.get(*key))
}

/// Labels of the container of `instance` on its node.
pub fn container_labels(
    cluster: &str,
    instance: &Instance,
    template: &str,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        (CLUSTER.to_string(), cluster.to_string()),
        (NAMESPACE.to_string(), instance.namespace.clone()),
        (SERVICE.to_string(), instance.service.clone()),
        (INSTANCE.to_string(), instance.id.clone()),
        (SLOT.to_string(), instance.slot.to_string()),
        (GENERATION.to_string(), instance.generation.to_string()),
        (NODE.to_string(), instance.node.clone().unwrap_or_default()),
        (SPEC_VERSION.to_string(), instance.spec_version.to_string()),
        (TEMPLATE.to_string(), template.to_string()),
    ])
}

/// Labels selecting everything of `cluster` on `node`.
pub fn node_selector(cluster: &str, node: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (CLUSTER.to_string(), cluster.to_string()),
        (NODE.to_string(), node.to_string()),
    ])
}

pub use crate::state::supervision::template_fingerprint;

/// The version of its service's spec a container was made from.
pub fn spec_version(labels: &BTreeMap<String, String>) -> Option<u64> {
    labels.get(SPEC_VERSION)?.parse().ok()
}

/// `(instance id, generation)` a container's labels claim, if any.
pub fn owner(labels: &BTreeMap<String, String>) -> Option<(String, u64)> {
    let id = labels.get(INSTANCE)?.clone();
    let generation = labels.get(GENERATION)?.parse().ok()?;
    Some((id, generation))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ServiceSpec;

    #[test]
    fn a_slot_s_volume_is_named_for_the_slot_not_the_generation() {
        assert_eq!(
            volume_name("c0ffee", "demo", "db", 2, "data"),
            "rv-c0ffee-demo.db.2-data"
        );
        // x-y/z and x/y-z: different slots, different volumes.
        assert_ne!(
            volume_name("c", "x-y", "z", 0, "v"),
            volume_name("c", "x", "y-z", 0, "v")
        );
        // Slot 1's volume "0-a" and slot 10's volume "a" cannot meet:
        // volume names are DNS labels, the slot is the part before them.
        assert_ne!(
            volume_name("c", "n", "s", 1, "0-a"),
            volume_name("c", "n", "s", 10, "a")
        );
    }

    #[test]
    fn scaling_keeps_the_template_and_an_image_change_does_not() {
        let spec: ServiceSpec =
            serde_json::from_value(serde_json::json!({"image": "a", "replicas": 1})).unwrap();
        let mut scaled = spec.clone();
        scaled.replicas = 9;
        let mut changed = spec.clone();
        changed.image = "b".into();
        assert_eq!(template_fingerprint(&spec), template_fingerprint(&scaled));
        assert_ne!(template_fingerprint(&spec), template_fingerprint(&changed));
    }

    fn instance(namespace: &str, service: &str) -> Instance {
        Instance {
            id: crate::state::supervision::instance_id(namespace, service, 0),
            namespace: namespace.into(),
            service: service.into(),
            slot: 0,
            generation: 1,
            node: Some("n1".into()),
            container_id: None,
            state: Default::default(),
            restarts: 0,
            last_exit: None,
            address: None,
            ports: Vec::new(),
            spec_version: 1,
            restart_epoch: 0,
            template: String::new(),
        }
    }

    #[test]
    fn container_names_of_x_y_z_and_x_y_z_differ() {
        let a = container_name("0123456789ab", &instance("x-y", "z"));
        let b = container_name("0123456789ab", &instance("x", "y-z"));
        assert_ne!(a, b);
        assert_eq!(a, "rv-0123456789ab-x-y.z.0-1");
        // A valid Docker container name: [a-zA-Z0-9][a-zA-Z0-9_.-]+
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-')));
    }

    #[test]
    fn a_name_conflict_adopts_only_a_container_with_matching_labels() {
        let ours = instance("x-y", "z");
        let expected = container_labels("c1", &ours, "t");
        assert!(adoptable(&expected, &expected));
        let mut template_changed = expected.clone();
        template_changed.insert(TEMPLATE.into(), "other".into());
        assert!(adoptable(&expected, &template_changed));
        let other_service = container_labels("c1", &instance("x", "y-z"), "t");
        assert!(!adoptable(&expected, &other_service));
        let other_cluster = container_labels("c2", &ours, "t");
        assert!(!adoptable(&expected, &other_cluster));
        assert!(!adoptable(&expected, &BTreeMap::new()));
        let mut older = ours.clone();
        older.generation = 0;
        assert!(!adoptable(&expected, &container_labels("c1", &older, "t")));
    }

    #[test]
    fn a_changed_secret_changes_the_template() {
        let key = crate::secrets::SecretsKey::from_bytes(&[9; 32]);
        let mut spec: ServiceSpec =
            serde_json::from_value(serde_json::json!({"image": "a"})).unwrap();
        spec.secret_env
            .0
            .insert("PASSWORD".into(), key.seal("PASSWORD", "one"));
        let mut changed = spec.clone();
        changed
            .secret_env
            .0
            .insert("PASSWORD".into(), key.seal("PASSWORD", "two"));
        assert_ne!(template_fingerprint(&spec), template_fingerprint(&changed));
    }
}
