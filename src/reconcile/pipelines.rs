//! The leader's pipeline controller: one key per pipeline, whose oldest
//! running run it drives a stage at a time — build (the leader's image
//! builder, from the run's source archive), test (the pipeline's command in
//! a one-shot container of the built image, on a node that holds it),
//! deploy (the built image written into the target namespace's service,
//! then its rollout followed) — and reports each step through Raft
//! ([`crate::state::pipelines`]), fenced by stage and attempt. A new
//! leader repeats a build or test that was running and goes on following a
//! deploy. It never approves: `release approve` does, by a state command.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::controller::{Action, Limits, OnStop, Reason, Reconciler};
use super::engines::Engines;
use crate::replica::builds::BuildRequest;
use crate::replica::{now_ms, Replica};
use crate::runtime::{CommandRequest, ContainerSpec, StdoutTo};
use crate::state::pipelines::{Pipeline, Run, StageKind, StageState, StageStep};
use crate::state::rollouts::Standing;
use crate::state::{Command, Outcome};

/// How often a deploy's rollout is looked at.
const DEPLOY_POLL: Duration = Duration::from_secs(1);
/// Lines of a build's output kept for its stage.
const BUILD_LINES: usize = 40;
/// Longest a build may take (the builder's own bound, plus a margin).
const BUILD_WAIT: Duration = Duration::from_secs(31 * 60);

/// Why a step of a stage could not be reported.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PipelineError(String);

/// The pipeline runs of one term.
pub struct Pipelines {
    replica: Arc<Replica>,
    engines: Engines,
}

impl Pipelines {
    pub fn new(replica: Arc<Replica>, engines: Engines) -> Pipelines {
        Pipelines { replica, engines }
    }

    async fn report(
        &self,
        pipeline: &str,
        run: u64,
        stage: StageKind,
        attempt: u32,
        step: StageStep,
    ) -> Result<(), PipelineError> {
        let applied = self
            .replica
            .write_as_leader(Command::RecordStage {
                pipeline: pipeline.to_string(),
                run,
                stage,
                attempt,
                step,
            })
            .await
            .map_err(|e| PipelineError(e.to_string()))?;
        match applied.outcome {
            Outcome::Done => Ok(()),
            other => Err(PipelineError(format!(
                "run {run} of {pipeline}: the {} stage's report was refused: {other:?}",
                stage.name()
            ))),
        }
    }

    /// Builds the run's source with the leader's builder: the image's tag,
    /// or why not, with the end of the build's output.
    async fn build(&self, pipeline: &Pipeline, run: &Run) -> Result<(String, String), String> {
        let context = self
            .replica
            .archive_from(&run.source, &run.keepers)
            .await
            .map_err(|e| format!("the source archive: {e}"))?;
        let tag = run.tag(&pipeline.spec.image);
        let (log, mut lines) = tokio::sync::mpsc::unbounded_channel();
        let (done, result) = tokio::sync::oneshot::channel();
        let request = BuildRequest {
            context,
            tag: tag.clone(),
            log,
            done,
        };
        if self.replica.builds.submit(request).is_err() {
            return Err("too many builds are waiting".into());
        }
        let collect = async {
            let mut kept = VecDeque::new();
            while let Some(line) = lines.recv().await {
                if kept.len() == BUILD_LINES {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
            kept.into_iter().collect::<Vec<_>>().join("\n")
        };
        let (output, result) = tokio::join!(collect, async {
            tokio::time::timeout(BUILD_WAIT, result).await
        });
        match result {
            Ok(Ok(Ok(_))) => Ok((tag, output)),
            Ok(Ok(Err(reason))) => Err(format!("{output}\n{reason}")),
            Ok(Err(_)) => Err(format!("{output}\nthe builder stopped")),
            Err(_) => Err(format!(
                "{output}\nthe build took longer than {BUILD_WAIT:?}"
            )),
        }
    }

    /// Runs the pipeline's test in a one-shot container of the built
    /// image on a node that holds it: its output, or why it failed.
    async fn test(&self, pipeline: &Pipeline, run: &Run) -> Result<String, String> {
        let tag = run.image.clone().ok_or("the run built no image")?;
        let (node, cluster) = self.replica.sm.read(|s| {
            let holders = s
                .images
                .stored
                .get(&tag)
                .map(|i| i.holders.clone())
                .unwrap_or_default();
            let node = s
                .nodes
                .values()
                .filter(|n| n.state == crate::state::NodeState::Ready)
                .find(|n| holders.contains(&n.name))
                .or_else(|| {
                    s.nodes
                        .values()
                        .find(|n| n.state == crate::state::NodeState::Ready)
                })
                .cloned();
            (node, s.owner().cloned().unwrap_or_default())
        });
        let node = node.ok_or("no node is ready to test on")?;
        let engine = self.engines.for_node(&node).map_err(|e| e.to_string())?;
        let spec = ContainerSpec {
            name: format!(
                "rv-{cluster}-pipeline-{}-{}-test",
                pipeline.name, run.number
            ),
            image: tag,
            labels: [
                (super::labels::HOOK.to_string(), "pipeline-test".to_string()),
                (
                    super::labels::HOOK_OF.to_string(),
                    format!("pipeline:{}/{}", pipeline.name, run.number),
                ),
            ]
            .into(),
            ..ContainerSpec::default()
        };
        let request = CommandRequest {
            command: pipeline.spec.test.clone(),
            stdin: None,
            stdout: StdoutTo::Tail,
            timeout: Duration::from_secs(u64::from(pipeline.spec.test_timeout_secs)),
        };
        let output = engine
            .run_once(&spec, request)
            .await
            .map_err(|e| format!("the test could not run on {}: {e}", node.name))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout_tail),
            String::from_utf8_lossy(&output.stderr_tail)
        );
        if output.exit_code == 0 {
            Ok(text)
        } else {
            Err(format!("{text}\nthe test exited {}", output.exit_code))
        }
    }

    /// One look at a deploy: writes the built image into the target's
    /// service unless it is there, then judges its rollout.
    async fn deploy(&self, pipeline: &Pipeline, run: &Run) -> Result<DeployStep, String> {
        let tag = run.image.clone().ok_or("the run built no image")?;
        let target = run.target.clone().ok_or("the deploy has no target")?;
        let service_name = pipeline.spec.service.clone();
        let key = (target.clone(), service_name.clone());
        let (current, live_spec, written_before) = self.replica.sm.read(|s| {
            let live = pipeline
                .spec
                .release
                .as_ref()
                .and_then(|r| s.releases.releases.get(r))
                .and_then(|r| {
                    s.services
                        .get(&(r.live_namespace().to_string(), service_name.clone()))
                })
                .map(|svc| svc.spec.clone());
            let written = s
                .history
                .revisions(&target, &service_name)
                .iter()
                .any(|r| r.spec.image == tag);
            (s.services.get(&key).cloned(), live, written)
        });
        let needs_write = current.as_ref().is_none_or(|c| c.spec.image != tag);
        if needs_write && !written_before {
            let Some(mut spec) = current.as_ref().map(|c| c.spec.clone()).or(live_spec) else {
                return Err(format!(
                    "there is no service {service_name} in {target}{} to deploy as",
                    if pipeline.spec.release.is_some() {
                        " or in the live environment"
                    } else {
                        ""
                    }
                ));
            };
            spec.image = tag.clone();
            let applied = self
                .replica
                .write_as_leader(Command::PutService {
                    namespace: target.clone(),
                    name: service_name.clone(),
                    spec,
                    expected_version: Some(current.as_ref().map_or(0, |c| c.version)),
                })
                .await
                .map_err(|e| e.to_string())?;
            return match applied.outcome {
                // Looked at again once the write's change wakes the key.
                Outcome::Service(_) | Outcome::VersionMismatch { .. } => Ok(DeployStep::Going),
                other => Err(format!("writing {target}/{service_name}: {other:?}")),
            };
        }
        let Some(current) = current else {
            return Err(format!(
                "{target}/{service_name} was deleted during the deploy"
            ));
        };
        if current.spec.image != tag {
            return Err(format!(
                "{target}/{service_name} was deployed over (image {}) during the deploy",
                current.spec.image
            ));
        }
        let standing = self.replica.sm.read(|s| s.rollout_standing(&current));
        Ok(match standing {
            Standing::Finished { .. } | Standing::Settled => DeployStep::Done(current.version),
            Standing::Failed { reason, .. } => return Err(format!("the rollout failed: {reason}")),
            Standing::Going | Standing::Unknown => DeployStep::Going,
        })
    }
}

/// Where one look at a deploy left it.
enum DeployStep {
    Going,
    /// Rolled out: the service version.
    Done(u64),
}

#[async_trait::async_trait]
impl Reconciler for Pipelines {
    type Key = String;
    type Error = PipelineError;

    fn name(&self) -> &'static str {
        "pipelines"
    }

    fn limits(&self) -> Limits {
        Limits {
            timeout: BUILD_WAIT + Duration::from_secs(60),
            concurrency: 2,
            resync: Some(Duration::from_secs(30)),
            on_stop: OnStop::Abort,
        }
    }

    fn keys(&self) -> Vec<String> {
        self.replica.sm.read(|s| {
            let mut keys: Vec<String> = s.pipelines.running().into_iter().map(|(p, _)| p).collect();
            keys.dedup();
            keys
        })
    }

    async fn reconcile(&self, key: &String, _: Reason) -> Result<Action, PipelineError> {
        let found = self.replica.sm.read(|s| {
            let pipeline = s.pipelines.pipelines.get(key)?;
            let run = pipeline
                .runs
                .iter()
                .find(|r| r.status == crate::state::pipelines::RunStatus::Running)?
                .clone();
            // The deploy's target is chosen when it starts: the idle
            // environment of the release then, or the pipeline's namespace.
            let target = match (&pipeline.spec.release, &pipeline.spec.namespace) {
                (Some(release), _) => s
                    .releases
                    .releases
                    .get(release)
                    .map(|r| r.namespace(r.idle()).to_string()),
                (None, Some(namespace)) => Some(namespace.clone()),
                (None, None) => None,
            };
            Some((pipeline.clone(), run, target))
        });
        let Some((pipeline, run, idle_target)) = found else {
            return Ok(Action::AwaitChange);
        };
        let Some(stage) = run.current().cloned() else {
            return Ok(Action::AwaitChange);
        };
        let (name, number) = (pipeline.name.as_str(), run.number);
        let fail = |log_tail: String| StageStep::Failed { log_tail };
        match (stage.kind, stage.state) {
            (StageKind::Build | StageKind::Test, _) => {
                let attempt = stage.attempts + 1;
                self.report(
                    name,
                    number,
                    stage.kind,
                    attempt,
                    StageStep::Started { target: None },
                )
                .await?;
                let done = if stage.kind == StageKind::Build {
                    self.build(&pipeline, &run)
                        .await
                        .map(|(tag, output)| (output, Some(tag)))
                } else {
                    self.test(&pipeline, &run)
                        .await
                        .map(|output| (output, None))
                };
                let step = match done {
                    Ok((log_tail, image)) => StageStep::Passed {
                        log_tail,
                        image,
                        deployed_version: None,
                    },
                    Err(reason) => fail(reason),
                };
                self.report(name, number, stage.kind, attempt, step).await?;
            }
            (StageKind::Deploy, StageState::Pending) => {
                let Some(target) = idle_target else {
                    self.report(
                        name,
                        number,
                        stage.kind,
                        1,
                        StageStep::Started { target: None },
                    )
                    .await?;
                    let reason = format!(
                        "release {} does not exist",
                        pipeline.spec.release.as_deref().unwrap_or("")
                    );
                    self.report(name, number, stage.kind, 1, fail(reason))
                        .await?;
                    return Ok(Action::AwaitChange);
                };
                self.report(
                    name,
                    number,
                    stage.kind,
                    stage.attempts + 1,
                    StageStep::Started {
                        target: Some(target),
                    },
                )
                .await?;
            }
            (StageKind::Deploy, _) => {
                let started = stage.started_ms.unwrap_or(0);
                let limit = u64::from(pipeline.spec.deploy_timeout_secs) * 1000;
                let step = match self.deploy(&pipeline, &run).await {
                    Ok(DeployStep::Done(version)) => StageStep::Passed {
                        log_tail: format!(
                            "{}/{} version {version} runs {} in every slot",
                            run.target.as_deref().unwrap_or(""),
                            pipeline.spec.service,
                            run.image.as_deref().unwrap_or("")
                        ),
                        image: None,
                        deployed_version: Some(version),
                    },
                    Ok(DeployStep::Going) if now_ms().saturating_sub(started) > limit => {
                        fail(format!(
                            "the rollout did not finish within {} s",
                            pipeline.spec.deploy_timeout_secs
                        ))
                    }
                    Ok(DeployStep::Going) => return Ok(Action::RequeueAfter(DEPLOY_POLL)),
                    Err(reason) => fail(reason),
                };
                self.report(name, number, stage.kind, stage.attempts, step)
                    .await?;
            }
            // Approved by a state command, never here.
            (StageKind::Approve, _) => return Ok(Action::AwaitChange),
        }
        Ok(Action::RequeueAfter(Duration::from_secs(5)))
    }
}
