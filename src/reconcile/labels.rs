//! The Docker labels and names raftvisor puts on every container it
//! manages (the contract in ARCHITECTURE.md), and reading them back. A
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

/// Deterministic container name: a second create of the same instance and
/// generation is refused by the engine instead of duplicated.
pub fn container_name(cluster: &str, instance: &Instance) -> String {
    format!(
        "rv-{cluster}-{}-{}-{}-{}",
        instance.namespace, instance.service, instance.slot, instance.generation
    )
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
