//! Each service's spec history: the versions it was deployed at, newest
//! last and bounded per service by its `update.history`, each with the
//! image reference its tag resolved to, so a rollback returns to exactly
//! what ran (secret values stay sealed in it, as in the spec). Pure: it
//! records what apply decided and finds a rollback's target; it never
//! decides to roll back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Actor, ServiceSpec};

/// Versions kept per service unless its `update.history` says otherwise.
pub const DEFAULT_HISTORY: u32 = 20;
/// Most versions a service may keep.
pub const MAX_HISTORY: u32 = 100;
/// The refusal of a promote or abort without a canary waiting (409).
pub const NO_CANARY: &str = "no_canary";

/// Why a version was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cause {
    /// Written by a deploy (`service deploy`, `PUT /v1/services/…`).
    Deploy,
    /// `service rollback`: the spec of version `to`, asked for by a user.
    Rollback { to: u64 },
    /// The rollout of version `from` failed and its `update.on_failure`
    /// said revert: the spec of version `to`.
    Revert { from: u64, to: u64, reason: String },
    // Variants are only ever appended: the log encodes them by position.
}

/// One version of a service's spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    /// The service version (the Raft index of the write).
    pub version: u64,
    #[serde(with = "super::migrate::versioned")]
    pub spec: ServiceSpec,
    /// `repository@sha256:…` (or the spec's own reference) the version's
    /// image resolved to, once it did.
    pub pin: Option<String>,
    pub at_ms: u64,
    pub cause: Cause,
    /// Who wrote it (a token), when a user did.
    pub actor: Option<Actor>,
    /// When its rollout finished: every slot ran it (healthy, its test
    /// passed). A version that never got there is no revert's target.
    pub settled_ms: Option<u64>,
    /// When `service promote` let its canary rollout go on.
    pub promoted_ms: Option<u64>,
}

/// The spec histories of every service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryBook {
    /// Per service (`namespace`, `name`), oldest first.
    pub services: BTreeMap<(String, String), Vec<Revision>>,
}

impl super::migrate::FirstVersion for HistoryBook {
    const VERSION_MARKER: &'static [u8] = b"SH01";
}

fn key(namespace: &str, name: &str) -> (String, String) {
    (namespace.to_string(), name.to_string())
}

impl HistoryBook {
    /// A service's versions, oldest first.
    pub fn revisions(&self, namespace: &str, name: &str) -> &[Revision] {
        self.services
            .get(&key(namespace, name))
            .map_or(&[], Vec::as_slice)
    }

    /// Keeps `revision` as the service's newest, dropping the oldest past
    /// `keep`.
    pub(super) fn record(&mut self, namespace: &str, name: &str, revision: Revision, keep: u32) {
        let revisions = self.services.entry(key(namespace, name)).or_default();
        revisions.push(revision);
        let excess = revisions.len().saturating_sub(keep.max(1) as usize);
        revisions.drain(..excess);
    }

    /// The service's newest version (the one deployed now).
    pub fn newest(&self, namespace: &str, name: &str) -> Option<&Revision> {
        self.revisions(namespace, name).last()
    }

    /// The rollout of `version` finished (once: the first time counts).
    pub(super) fn settle(&mut self, namespace: &str, name: &str, version: u64, at_ms: u64) -> bool {
        let Some(revision) = self
            .services
            .get_mut(&key(namespace, name))
            .and_then(|revisions| revisions.last_mut())
            .filter(|r| r.version == version && r.settled_ms.is_none())
        else {
            return false;
        };
        revision.settled_ms = Some(at_ms);
        true
    }

    /// Whether the newest version's rollout stops at its canaries: a
    /// deploy with `update.canary`, neither promoted nor rolled out (a
    /// rollback or revert goes back to a known version: no canary).
    pub fn canary_held(&self, namespace: &str, name: &str) -> bool {
        self.newest(namespace, name).is_some_and(|r| {
            r.cause == Cause::Deploy
                && r.spec.update.canary > 0
                && r.promoted_ms.is_none()
                && r.settled_ms.is_none()
        })
    }

    /// `service promote`: the newest version's canary rollout goes on.
    pub(super) fn promote(
        &mut self,
        namespace: &str,
        name: &str,
        at_ms: u64,
    ) -> Result<u64, String> {
        if !self.canary_held(namespace, name) {
            return Err(format!(
                "{namespace}/{name} has no canary waiting to be promoted"
            ));
        }
        let revision = self
            .services
            .get_mut(&key(namespace, name))
            .and_then(|revisions| revisions.last_mut())
            .expect("a held canary is the newest version");
        revision.promoted_ms = Some(at_ms);
        Ok(revision.version)
    }

    /// The image the newest version resolved to: pins are resolved for
    /// the version deployed now (a scale before it did carries the pin
    /// to its own version, with the same spec).
    pub(super) fn pin_newest(&mut self, namespace: &str, name: &str, reference: &str) {
        if let Some(revision) = self
            .services
            .get_mut(&key(namespace, name))
            .and_then(|revisions| revisions.last_mut())
        {
            revision.pin.get_or_insert_with(|| reference.to_string());
        }
    }

    /// Where a failed rollout of the newest version goes back to: the
    /// latest earlier version that rolled out completely.
    pub fn revert_target(&self, namespace: &str, name: &str) -> Option<&Revision> {
        let (_, older) = self.revisions(namespace, name).split_last()?;
        older.iter().rev().find(|r| r.settled_ms.is_some())
    }

    pub(super) fn service_deleted(&mut self, namespace: &str, name: &str) {
        self.services.remove(&key(namespace, name));
    }

    /// The version a rollback returns to: `to`, or the one before the
    /// newest. Refused (with the reason) when it is not kept or is the
    /// newest itself.
    pub fn rollback_target(
        &self,
        namespace: &str,
        name: &str,
        to: Option<u64>,
    ) -> Result<&Revision, String> {
        let revisions = self.revisions(namespace, name);
        let Some((newest, older)) = revisions.split_last() else {
            return Err(format!("{namespace}/{name} has no history"));
        };
        match to {
            None => older.last().ok_or_else(|| {
                format!(
                    "{namespace}/{name} has no version before {} to roll back to",
                    newest.version
                )
            }),
            Some(version) if version == newest.version => Err(format!(
                "version {version} is the one {namespace}/{name} is deployed at"
            )),
            Some(version) => older.iter().find(|r| r.version == version).ok_or_else(|| {
                let kept: Vec<String> = revisions.iter().map(|r| r.version.to_string()).collect();
                format!(
                    "version {version} is not in the history of {namespace}/{name} (kept: {})",
                    kept.join(", ")
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revision(version: u64) -> Revision {
        let spec: ServiceSpec =
            serde_json::from_value(serde_json::json!({ "image": format!("echo:{version}") }))
                .unwrap();
        Revision {
            version,
            spec,
            pin: None,
            at_ms: version,
            cause: Cause::Deploy,
            actor: None,
            settled_ms: None,
            promoted_ms: None,
        }
    }

    #[test]
    fn the_oldest_versions_go_past_the_bound() {
        let mut book = HistoryBook::default();
        for version in 1..=5 {
            book.record("ns", "web", revision(version), 3);
        }
        let kept: Vec<u64> = book
            .revisions("ns", "web")
            .iter()
            .map(|r| r.version)
            .collect();
        assert_eq!(kept, [3, 4, 5]);
    }

    #[test]
    fn a_rollback_goes_to_the_version_before_or_the_one_named() {
        let mut book = HistoryBook::default();
        assert!(book.rollback_target("ns", "web", None).is_err());
        book.record("ns", "web", revision(10), 20);
        let alone = book.rollback_target("ns", "web", None).unwrap_err();
        assert!(alone.contains("no version before 10"), "{alone}");
        book.record("ns", "web", revision(20), 20);
        book.record("ns", "web", revision(30), 20);
        assert_eq!(book.rollback_target("ns", "web", None).unwrap().version, 20);
        assert_eq!(
            book.rollback_target("ns", "web", Some(10)).unwrap().version,
            10
        );
        let current = book.rollback_target("ns", "web", Some(30)).unwrap_err();
        assert!(current.contains("is the one"), "{current}");
        let unknown = book.rollback_target("ns", "web", Some(15)).unwrap_err();
        assert!(unknown.contains("kept: 10, 20, 30"), "{unknown}");
    }

    #[test]
    fn a_pin_is_kept_once_and_goes_with_the_service() {
        let mut book = HistoryBook::default();
        book.record("ns", "web", revision(10), 20);
        book.pin_newest("ns", "web", "echo@sha256:aa");
        book.pin_newest("ns", "web", "echo@sha256:bb");
        assert_eq!(
            book.revisions("ns", "web")[0].pin.as_deref(),
            Some("echo@sha256:aa")
        );
        book.service_deleted("ns", "web");
        assert!(book.revisions("ns", "web").is_empty());
    }

    #[test]
    fn a_revert_goes_back_to_the_latest_version_that_settled() {
        let mut book = HistoryBook::default();
        book.record("ns", "web", revision(10), 20);
        assert!(book.settle("ns", "web", 10, 1));
        assert!(!book.settle("ns", "web", 10, 2), "settled once");
        book.record("ns", "web", revision(20), 20);
        assert!(!book.settle("ns", "web", 10, 3), "only the newest settles");
        book.record("ns", "web", revision(30), 20);
        // 20 never settled: 30 goes back past it.
        assert_eq!(book.revert_target("ns", "web").unwrap().version, 10);
        assert_eq!(book.revisions("ns", "web")[0].settled_ms, Some(1));
        let mut alone = HistoryBook::default();
        alone.record("ns", "web", revision(10), 20);
        assert!(alone.revert_target("ns", "web").is_none());
    }
}
