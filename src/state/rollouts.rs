//! How the rollout of a service's newest version stands, read from the
//! state alone: going on, finished (every slot runs it, healthy, its test
//! passed), failed (a new instance crash-loops, turned unhealthy or cannot
//! fetch its image, or its test failed), or settled long ago. Pure: the
//! service controller settles or reverts by it; it never writes.

use super::history::Cause;
use super::{InstanceState, RunState, Service, ServiceKind, State};

/// Where the rollout of a service's newest version is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// No version recorded, or the service is stopped: nothing to judge.
    Unknown,
    Going,
    /// Every slot runs the newest version; not yet recorded as such.
    Finished {
        version: u64,
    },
    Failed {
        version: u64,
        reason: String,
    },
    /// Recorded as finished.
    Settled,
}

impl State {
    /// How the rollout of `service`'s newest version stands.
    pub fn rollout_standing(&self, service: &Service) -> Standing {
        let (namespace, name) = (&service.namespace, &service.name);
        let Some(newest) = self.history.newest(namespace, name) else {
            return Standing::Unknown;
        };
        if newest.settled_ms.is_some() {
            return Standing::Settled;
        }
        let version = newest.version;
        if service.spec.kind == ServiceKind::External {
            return Standing::Finished { version };
        }
        if service.run_state != RunState::Running {
            return Standing::Unknown;
        }
        let verdict = self.hooks.verdict(namespace, name, service.version);
        if let Some(verdict) = verdict.filter(|v| !v.passed) {
            return Standing::Failed {
                version,
                reason: format!("its test hook {} on {}", verdict.summary, verdict.instance),
            };
        }
        let template = self.template_of(service);
        let instances = self.service_instances(namespace, name);
        let failing = instances.iter().find(|i| {
            i.template == template
                && matches!(
                    i.state,
                    InstanceState::CrashLoop | InstanceState::Unhealthy | InstanceState::PullFailed
                )
        });
        if let Some(instance) = failing {
            return Standing::Failed {
                version,
                reason: format!(
                    "new instance {} is {}{}",
                    instance.id,
                    super::supervision::state_name(instance.state),
                    instance
                        .last_exit
                        .as_ref()
                        .map(|e| format!(" ({})", e.reason))
                        .unwrap_or_default()
                ),
            };
        }
        let running_new = instances
            .iter()
            .filter(|i| {
                i.slot < service.spec.replicas
                    && i.template == template
                    && i.state == InstanceState::Running
            })
            .count();
        let outdated = instances.iter().any(|i| i.template != template);
        let tested = service.spec.hooks.test.is_none() || verdict.is_some_and(|v| v.passed);
        if running_new == service.spec.replicas as usize && !outdated && tested {
            Standing::Finished { version }
        } else {
            Standing::Going
        }
    }

    /// The revert of the newest version, if it failed, says revert, and
    /// has an earlier version that rolled out completely to go back to:
    /// `(version to go back to, why)`. A revert is never reverted (two
    /// bad versions would take turns): it pauses.
    pub fn revert_due(&self, service: &Service) -> Option<(u64, String)> {
        if service.spec.update.on_failure != super::OnFailure::Revert {
            return None;
        }
        let Standing::Failed { version, reason } = self.rollout_standing(service) else {
            return None;
        };
        let newest = self.history.newest(&service.namespace, &service.name)?;
        if matches!(newest.cause, Cause::Revert { .. }) {
            return None;
        }
        let target = self
            .history
            .revert_target(&service.namespace, &service.name)?;
        Some((target.version, format!("version {version}: {reason}")))
    }
}
