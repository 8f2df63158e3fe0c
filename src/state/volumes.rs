//! The slots' Docker volumes in the replicated model: which volume belongs
//! to which slot, on which nodes' engines it was made, and which were asked
//! to be removed. Pure: the service controller records a volume before the
//! first container that mounts it is created, the volume controller removes
//! the ones marked and reports each removal; this module only keeps the
//! book and decides what may be removed.
//!
//! A volume outlives its service (`service rm` keeps the data, as does
//! scaling a slot away); it goes only when asked (`volume rm`, `service rm
//! --purge`), and never while a slot of an existing service would mount it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::Outcome;

/// The refusal code of a removal of a volume a slot still uses.
pub const VOLUME_IN_USE: &str = "volume_in_use";

/// One slot's copy of one of its service's volumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VolumeRecord {
    pub namespace: String,
    pub service: String,
    pub slot: u32,
    /// The name of the volume in the service's spec.
    pub volume: String,
    pub driver: String,
    /// The nodes whose engine has made this volume (one for node-local
    /// data; every node the slot ran on for shared storage).
    pub nodes: BTreeSet<String>,
    /// When it was first recorded (ms since the Unix epoch).
    pub created_ms: u64,
    /// Asked to be removed: the volume controller removes it from every
    /// node, and no container may mount it meanwhile.
    pub removing: bool,
}

impl VolumeRecord {
    /// Whether a slot of an existing service mounts it: its service still
    /// exists and still has its slot.
    pub fn in_use(&self, services: &BTreeMap<(String, String), super::Service>) -> bool {
        services
            .get(&(self.namespace.clone(), self.service.clone()))
            .is_some_and(|service| self.slot < service.spec.replicas)
    }
}

/// The volumes of every slot, by Docker volume name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeBook {
    pub volumes: BTreeMap<String, VolumeRecord>,
}

impl super::migrate::FirstVersion for VolumeBook {
    const VERSION_MARKER: &'static [u8] = b"VB01";
}

/// What the service controller records about a volume it is about to
/// make on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMade {
    pub name: String,
    pub node: String,
    pub namespace: String,
    pub service: String,
    pub slot: u32,
    pub volume: String,
    pub driver: String,
}

impl VolumeBook {
    /// Records that `made.node` holds (or is about to hold) the volume. A
    /// volume being removed is not made again: the slot waits until its
    /// removal is over and starts with an empty one.
    pub fn record(&mut self, made: &VolumeMade, time_ms: u64) -> Outcome {
        match self.volumes.get_mut(&made.name) {
            Some(record) if record.removing => Outcome::Rejected(format!(
                "volume {} is being removed; its slot waits until it is gone",
                made.name
            )),
            Some(record) => {
                record.nodes.insert(made.node.clone());
                Outcome::Done
            }
            None => {
                self.volumes.insert(
                    made.name.clone(),
                    VolumeRecord {
                        namespace: made.namespace.clone(),
                        service: made.service.clone(),
                        slot: made.slot,
                        volume: made.volume.clone(),
                        driver: made.driver.clone(),
                        nodes: BTreeSet::from([made.node.clone()]),
                        created_ms: time_ms,
                        removing: false,
                    },
                );
                Outcome::Done
            }
        }
    }

    /// Whether `node` holds the volume `name` as far as the book knows.
    pub fn holds(&self, name: &str, node: &str) -> bool {
        self.volumes
            .get(name)
            .is_some_and(|r| r.nodes.contains(node) && !r.removing)
    }

    /// Marks `name` for removal; `in_use` says whether a slot of an
    /// existing service would mount it (then it is refused).
    pub fn remove(&mut self, name: &str, in_use: impl Fn(&VolumeRecord) -> bool) -> Outcome {
        let Some(record) = self.volumes.get_mut(name) else {
            return Outcome::NotFound;
        };
        if in_use(record) {
            return Outcome::Refused {
                code: VOLUME_IN_USE.to_string(),
                message: format!(
                    "volume {name} is slot {} of {}/{}, which still runs it: scale the slot away or delete the service first",
                    record.slot, record.namespace, record.service
                ),
            };
        }
        if record.nodes.is_empty() {
            self.volumes.remove(name);
            return Outcome::Deleted;
        }
        record.removing = true;
        Outcome::Done
    }

    /// Marks every volume of the service `namespace/service` for removal
    /// (the service is gone: none is in use); one no node holds is
    /// forgotten at once.
    pub fn purge_service(&mut self, namespace: &str, service: &str) {
        self.volumes.retain(|_, record| {
            let of_service = record.namespace == namespace && record.service == service;
            record.removing |= of_service;
            !(of_service && record.nodes.is_empty())
        });
    }

    /// The volume `name` is gone from `node` (the controller removed it,
    /// or the node left the inventory); a volume being removed that no
    /// node holds any more is forgotten.
    pub fn removed_from(&mut self, name: &str, node: &str) -> Outcome {
        let Some(record) = self.volumes.get_mut(name) else {
            return Outcome::NotFound;
        };
        record.nodes.remove(node);
        if record.removing && record.nodes.is_empty() {
            self.volumes.remove(name);
            return Outcome::Deleted;
        }
        Outcome::Done
    }

    /// The volumes marked for removal, with the nodes still holding them.
    pub fn removing(&self) -> impl Iterator<Item = (&String, &VolumeRecord)> {
        self.volumes.iter().filter(|(_, r)| r.removing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn made(name: &str, node: &str, slot: u32) -> VolumeMade {
        VolumeMade {
            name: name.into(),
            node: node.into(),
            namespace: "ns".into(),
            service: "db".into(),
            slot,
            volume: "data".into(),
            driver: "local".into(),
        }
    }

    #[test]
    fn a_volume_is_recorded_once_and_gathers_the_nodes_that_made_it() {
        let mut book = VolumeBook::default();
        assert_eq!(book.record(&made("v0", "a", 0), 10), Outcome::Done);
        assert_eq!(book.record(&made("v0", "b", 0), 20), Outcome::Done);
        let record = &book.volumes["v0"];
        assert_eq!(record.created_ms, 10);
        assert_eq!(
            record.nodes,
            BTreeSet::from(["a".to_string(), "b".to_string()])
        );
        assert!(book.holds("v0", "a") && !book.holds("v0", "c") && !book.holds("v1", "a"));
    }

    #[test]
    fn a_volume_in_use_is_not_removed_and_one_being_removed_is_not_made_again() {
        let mut book = VolumeBook::default();
        book.record(&made("v0", "a", 0), 10);
        assert!(matches!(
            book.remove("v0", |_| true),
            Outcome::Refused { code, .. } if code == VOLUME_IN_USE
        ));
        assert!(!book.volumes["v0"].removing);
        assert_eq!(book.remove("nope", |_| false), Outcome::NotFound);
        assert_eq!(book.remove("v0", |_| false), Outcome::Done);
        assert!(
            !book.holds("v0", "a"),
            "a volume being removed is held by no one"
        );
        assert!(matches!(
            book.record(&made("v0", "a", 0), 30),
            Outcome::Rejected(_)
        ));
        assert_eq!(book.removing().count(), 1);
    }

    #[test]
    fn a_removed_volume_is_forgotten_once_no_node_holds_it() {
        let mut book = VolumeBook::default();
        book.record(&made("v0", "a", 0), 10);
        book.record(&made("v0", "b", 0), 10);
        book.record(&made("v1", "a", 1), 10);
        // Not being removed: a node that lost it is crossed out, no more.
        assert_eq!(book.removed_from("v1", "a"), Outcome::Done);
        assert!(book.volumes.contains_key("v1"));
        book.purge_service("ns", "db");
        assert_eq!(book.removed_from("v0", "a"), Outcome::Done);
        assert_eq!(book.removed_from("v0", "b"), Outcome::Deleted);
        assert!(!book.volumes.contains_key("v0"));
        assert!(
            !book.volumes.contains_key("v1"),
            "no node left to ask: forgotten at once"
        );
        assert_eq!(book.removed_from("v0", "a"), Outcome::NotFound);
        book.record(&made("v2", "a", 2), 10);
        book.removed_from("v2", "a");
        assert_eq!(book.remove("v2", |_| false), Outcome::Deleted);
    }
}
