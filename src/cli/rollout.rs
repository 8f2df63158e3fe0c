//! `service deploy --wait` and `--watch`: following a service's report
//! until its rollout converges or fails, with a progress bar for people
//! and the final report for scripts. The judgement of a report
//! ([`judge`]) and of a run of reports ([`Settling`]) is pure; this module
//! only ever reads from the cluster.

use std::time::{Duration, Instant};

use anyhow::bail;

use crate::client::Client;
use crate::state::RunState;
use crate::wire::ServiceReport;

/// How often a waiting or watching CLI asks for the report.
pub const POLL: Duration = Duration::from_millis(500);

/// How long a converged rollout must stay converged, on the same
/// containers and without a restart, before a wait believes it: an
/// instance that crashes right after it started looks running for a
/// moment, and a poll can land in that moment.
pub const SETTLE: Duration = Duration::from_secs(1);

/// What must not change while a rollout settles: each instance's id,
/// container and restart count.
type Containers = Vec<(String, Option<String>, u32)>;

/// Follows converged reports until one has held for [`SETTLE`].
#[derive(Debug, Default)]
pub struct Settling {
    /// When the current run of unchanged converged reports began, and what
    /// did not change.
    since: Option<(Instant, Containers)>,
}

impl Settling {
    /// Takes a report judged converged, seen at `at`; true once converged
    /// reports with the same containers and restart counts span [`SETTLE`].
    pub fn settled(&mut self, report: &ServiceReport, at: Instant) -> bool {
        let containers: Containers = report
            .instances
            .iter()
            .map(|i| (i.id.clone(), i.container_id.clone(), i.restarts))
            .collect();
        match &self.since {
            Some((since, seen)) if *seen == containers => at.duration_since(*since) >= SETTLE,
            _ => {
                self.since = Some((at, containers));
                false
            }
        }
    }

    /// A report that was not converged ends the run.
    pub fn interrupted(&mut self) {
        self.since = None;
    }
}

/// Where a rollout stands, judged from one report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Every wanted instance runs the current version and passes.
    Converged,
    /// It stopped progressing, for this reason.
    Failed(String),
    /// `done` of `total` instances run the current version; `doing` says
    /// what is under way.
    Rolling {
        done: u64,
        total: u64,
        doing: String,
    },
}

/// Judges `report` for a deploy that produced `version`.
pub fn judge(report: &ServiceReport, version: u64) -> Progress {
    if report.version < version {
        return Progress::Rolling {
            done: 0,
            total: u64::from(report.desired),
            doing: format!("waiting for version {version} to be read"),
        };
    }
    // The service went back by itself from this version (or a later one
    // that followed it): this version did not roll out.
    if let Some(reverted) = report.reverted.as_ref().filter(|r| r.from >= version) {
        return Progress::Failed(format!(
            "rollout failed and was reverted: {}; the service is back at version {}'s spec as version {}",
            reverted.reason, reverted.to, report.version
        ));
    }
    let last_exit = |state: &str| {
        report
            .last_exits
            .first()
            .map(|(id, exit)| format!("{state}: {id} exited with {} ({})", exit.code, exit.reason))
            .unwrap_or_else(|| state.to_string())
    };
    let failure = if let Some(reason) = &report.rollout_paused {
        Some(reason.clone())
    } else if report.crash_looping > 0 {
        Some(last_exit(&format!(
            "{} instance(s) crash-looping",
            report.crash_looping
        )))
    } else if report.pull_failed > 0 {
        Some(last_exit(&format!(
            "{} instance(s) cannot fetch their image",
            report.pull_failed
        )))
    } else {
        None
    };
    if let Some(failure) = failure {
        // The service goes back by itself: what it does is the answer.
        if report.revert_armed {
            return Progress::Rolling {
                done: 0,
                total: u64::from(report.desired),
                doing: format!("{failure}; reverting"),
            };
        }
        return Progress::Failed(failure);
    }
    let wanted = match report.run_state {
        RunState::Running => report.desired,
        RunState::Stopped => 0,
    };
    let current = report.running.saturating_sub(report.outdated);
    // A canary deploy has done its part once its canaries run: the rest
    // waits for `service promote`.
    if let Some(canary) = &report.canary {
        if canary.running >= canary.wanted && report.pending == 0 && report.pulling == 0 {
            return Progress::Converged;
        }
    }
    // A version with a test hook has rolled out once its test passed.
    let tested = report.test != "pending" || wanted == 0;
    let settled = report.pending == 0
        && report.pulling == 0
        && report.unhealthy == 0
        && report.outdated == 0
        && report.running == wanted
        && tested;
    if settled {
        return Progress::Converged;
    }
    let mut doing = Vec::new();
    if report.pulling > 0 {
        doing.push(format!("{} fetching images", report.pulling));
    }
    if report.pending > 0 {
        doing.push(format!("{} pending", report.pending));
    }
    if report.outdated > 0 {
        doing.push(format!("{} on the previous version", report.outdated));
    }
    if report.unhealthy > 0 {
        doing.push(format!("{} unhealthy", report.unhealthy));
    }
    if !tested {
        doing.push("testing".to_string());
    }
    if doing.is_empty() {
        doing.push(format!("{} of {wanted} running", report.running));
    }
    Progress::Rolling {
        done: u64::from(current.min(wanted)),
        total: u64::from(wanted),
        doing: doing.join(", "),
    }
}

/// The wait ran out before the rollout converged.
#[derive(Debug, thiserror::Error)]
#[error("{service} did not converge within {waited:?} ({doing})")]
pub struct TimedOut {
    pub service: String,
    pub waited: Duration,
    pub doing: String,
}

/// Follows `namespace/name` until version `version` converges (returns
/// the last report) or fails (an error with the reason); a bar is drawn
/// when `show_bar`.
pub async fn wait(
    client: &Client,
    namespace: &str,
    name: &str,
    version: u64,
    timeout: Duration,
    show_bar: bool,
) -> anyhow::Result<ServiceReport> {
    let started = Instant::now();
    let bar = show_bar.then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{namespace}/{name} v{version}"));
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let mut doing;
    let mut settling = Settling::default();
    loop {
        // A replica that is briefly unreachable (a leader change) is not
        // a failed rollout: keep asking until the wait runs out.
        match client.service_report(namespace, name).await {
            Ok(report) => match judge(&report, version) {
                Progress::Converged if !settling.settled(&report, Instant::now()) => {
                    doing = "converged, settling".to_string();
                }
                Progress::Converged => {
                    if let Some(bar) = &bar {
                        bar.set_length(u64::from(report.desired));
                        bar.set_position(u64::from(report.running));
                        bar.finish_with_message("converged");
                    }
                    return Ok(report);
                }
                Progress::Failed(reason) => {
                    if let Some(bar) = &bar {
                        bar.abandon_with_message("failed");
                    }
                    bail!("rollout of {namespace}/{name} failed: {reason}");
                }
                Progress::Rolling {
                    done,
                    total,
                    doing: now,
                } => {
                    settling.interrupted();
                    if let Some(bar) = &bar {
                        bar.set_length(total);
                        bar.set_position(done);
                        bar.set_message(now.clone());
                    }
                    doing = now;
                }
            },
            Err(error) if error.status().is_none() || error.status() == Some(503) => {
                settling.interrupted();
                doing = error.to_string();
            }
            Err(error) => return Err(error.into()),
        }
        if started.elapsed() >= timeout {
            if let Some(bar) = &bar {
                bar.abandon_with_message("timed out");
            }
            return Err(TimedOut {
                service: format!("{namespace}/{name}"),
                waited: timeout,
                doing,
            }
            .into());
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Instance;

    fn report(desired: u32, running: u32, outdated: u32) -> ServiceReport {
        serde_json::from_value(serde_json::json!({
            "service": "demo/echo", "version": 7, "run_state": "running",
            "desired": desired, "running": running, "unhealthy": 0, "crash_looping": 0,
            "pending": desired.saturating_sub(running), "restarts": 0, "outdated": outdated,
            "rollout_paused": null, "instances": [], "last_exits": [], "recent_events": []
        }))
        .unwrap()
    }

    #[test]
    fn a_rollout_converges_when_every_instance_runs_the_new_version() {
        assert_eq!(judge(&report(3, 3, 0), 7), Progress::Converged);
        assert!(matches!(
            judge(&report(3, 3, 2), 7),
            Progress::Rolling {
                done: 1,
                total: 3,
                ..
            }
        ));
        assert!(
            matches!(judge(&report(3, 3, 0), 8), Progress::Rolling { .. }),
            "an older version is not converged"
        );
    }

    #[test]
    fn a_version_under_test_converges_once_its_test_passed() {
        let mut testing = report(2, 2, 0);
        testing.test = "pending".into();
        assert!(
            matches!(judge(&testing, 7), Progress::Rolling { ref doing, .. } if doing == "testing"),
            "{:?}",
            judge(&testing, 7)
        );
        testing.test = "passed".into();
        assert_eq!(judge(&testing, 7), Progress::Converged);
        assert_eq!(
            report(2, 2, 0).test,
            "none",
            "a report without the field has no test"
        );
    }

    #[test]
    fn a_paused_or_crash_looping_rollout_fails_with_its_reason() {
        let mut paused = report(3, 2, 1);
        paused.rollout_paused =
            Some("rollout paused: new instance demo.echo.0 is crash_loop".into());
        assert_eq!(
            judge(&paused, 7),
            Progress::Failed("rollout paused: new instance demo.echo.0 is crash_loop".into())
        );
        let mut looping = report(3, 2, 0);
        looping.crash_looping = 1;
        assert!(matches!(judge(&looping, 7), Progress::Failed(r) if r.contains("crash-looping")));
    }

    #[test]
    fn a_reverted_version_fails_though_the_revert_converged() {
        // Version 7 was reverted as version 9, which runs everywhere.
        let mut reverted = report(3, 3, 0);
        reverted.version = 9;
        reverted.reverted = Some(crate::wire::Reverted {
            from: 7,
            to: 4,
            reason: "version 7: new instance demo.echo.0 is crash_loop".into(),
        });
        assert!(
            matches!(judge(&reverted, 7), Progress::Failed(ref r) if r.contains("reverted") && r.contains("version 4")),
            "{:?}",
            judge(&reverted, 7)
        );
        assert_eq!(
            judge(&reverted, 9),
            Progress::Converged,
            "the revert itself converged"
        );
        // Before the revert: a failure that makes the service go back is
        // followed, not the end.
        let mut failing = report(3, 3, 2);
        failing.crash_looping = 1;
        failing.revert_armed = true;
        assert!(
            matches!(judge(&failing, 7), Progress::Rolling { ref doing, .. } if doing.ends_with("reverting")),
            "{:?}",
            judge(&failing, 7)
        );
    }

    fn instance(slot: u32, container: &str, restarts: u32) -> Instance {
        serde_json::from_value(serde_json::json!({
            "id": format!("demo.echo.{slot}"), "namespace": "demo", "service": "echo",
            "slot": slot, "generation": 1, "node": "a", "container_id": container,
            "state": "running", "restarts": restarts, "last_exit": null, "address": null,
            "ports": [], "spec_version": 7, "restart_epoch": 0, "template": "t"
        }))
        .unwrap()
    }

    #[test]
    fn a_converged_report_is_believed_only_once_it_held_without_a_restart() {
        let start = Instant::now();
        let mut converged = report(2, 2, 0);
        converged.instances = vec![instance(0, "c0", 0), instance(1, "c1", 0)];
        let mut settling = Settling::default();
        assert!(!settling.settled(&converged, start), "seen once");
        assert!(!settling.settled(&converged, start + SETTLE / 2));
        // One instance crashed and was restarted between two polls: both
        // run again, but the run starts over.
        let mut restarted = converged.clone();
        restarted.instances[1] = instance(1, "c2", 1);
        assert!(!settling.settled(&restarted, start + SETTLE));
        assert!(!settling.settled(&restarted, start + SETTLE + SETTLE / 2));
        assert!(settling.settled(&restarted, start + SETTLE * 2));
        // A report that was not converged ends the run too.
        settling.interrupted();
        assert!(!settling.settled(&restarted, start + SETTLE * 3));
        assert!(settling.settled(&restarted, start + SETTLE * 4));
    }
}
