//! How long each new instance has been running, in the leader's memory:
//! a rollout counts an instance of the current version as a replacement
//! in flight until it has run `update.min_healthy_ms` in the same
//! container, so a version that dies a few seconds after it started stops
//! the rollout after one replacement. A new leader starts every clock
//! again (it waits longer, never shorter). Takes the time it is given;
//! never reads the clock, writes or acts.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::state::{Instance, InstanceState};

/// When each instance of one service had its container first seen
/// running.
#[derive(Debug, Default)]
pub struct RunningClocks {
    /// Instance id → (container id, first seen running).
    since: HashMap<String, (String, Instant)>,
}

impl RunningClocks {
    /// The instances of `template` running for less than `min_healthy`,
    /// and when the first of them has run long enough. Instances not
    /// running, or no longer the service's, lose their clock.
    pub fn settling(
        &mut self,
        service_instances: &[Instance],
        template: &str,
        min_healthy: Duration,
        now: Instant,
    ) -> (BTreeSet<String>, Option<Instant>) {
        self.since
            .retain(|id, _| service_instances.iter().any(|i| &i.id == id));
        let mut settling = BTreeSet::new();
        let mut next = None::<Instant>;
        for instance in service_instances {
            let running = instance.state == InstanceState::Running;
            let container = instance.container_id.as_deref().filter(|_| running);
            let Some(container) = container else {
                self.since.remove(&instance.id);
                continue;
            };
            let entry = self
                .since
                .entry(instance.id.clone())
                .or_insert_with(|| (container.to_string(), now));
            if entry.0 != container {
                *entry = (container.to_string(), now);
            }
            let settled_at = entry.1 + min_healthy;
            if instance.template == template && settled_at > now {
                settling.insert(instance.id.clone());
                next = Some(next.map_or(settled_at, |n| n.min(settled_at)));
            }
        }
        (settling, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, state: InstanceState, container: &str, template: &str) -> Instance {
        Instance {
            id: id.to_string(),
            namespace: "ns".into(),
            service: "web".into(),
            slot: 0,
            generation: 1,
            node: Some("n1".into()),
            container_id: Some(container.to_string()),
            state,
            restarts: 0,
            last_exit: None,
            address: None,
            ports: Vec::new(),
            spec_version: 1,
            restart_epoch: 0,
            template: template.to_string(),
        }
    }

    #[test]
    fn a_new_instance_settles_after_running_min_healthy_in_one_container() {
        let mut clocks = RunningClocks::default();
        let start = Instant::now();
        let wait = Duration::from_secs(10);
        let running = vec![
            instance("a", InstanceState::Running, "c1", "new"),
            instance("b", InstanceState::Running, "c2", "old"),
        ];
        let (settling, next) = clocks.settling(&running, "new", wait, start);
        assert_eq!(
            settling,
            BTreeSet::from(["a".to_string()]),
            "old ones never settle"
        );
        assert_eq!(next, Some(start + wait));
        let later = start + Duration::from_secs(4);
        assert_eq!(
            clocks.settling(&running, "new", wait, later).1,
            Some(start + wait)
        );
        // Its container restarted as another one: the clock starts again.
        let restarted = vec![instance("a", InstanceState::Running, "c3", "new")];
        let (settling, next) = clocks.settling(&restarted, "new", wait, later);
        assert!(settling.contains("a"));
        assert_eq!(next, Some(later + wait));
        let (settling, next) = clocks.settling(&restarted, "new", wait, later + wait);
        assert!(settling.is_empty());
        assert_eq!(next, None);
        // Exited, it loses its clock; so does one no longer there.
        let exited = vec![instance("a", InstanceState::Exited, "c3", "new")];
        clocks.settling(&running, "new", wait, later + wait);
        assert_eq!(clocks.since.len(), 2);
        clocks.settling(&exited, "new", wait, later + wait);
        assert!(clocks.since.is_empty());
    }

    #[test]
    fn without_a_minimum_nothing_settles() {
        let mut clocks = RunningClocks::default();
        let running = vec![instance("a", InstanceState::Running, "c1", "new")];
        let (settling, next) = clocks.settling(&running, "new", Duration::ZERO, Instant::now());
        assert!(settling.is_empty() && next.is_none());
    }
}
