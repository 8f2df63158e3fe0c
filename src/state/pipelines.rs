//! Pipelines, source to release: what a pipeline builds and where it
//! deploys, and its runs — each a fixed list of stages (build, test,
//! deploy, approve) with their state, times and the tail of their output.
//! Pure: it records what the leader's pipeline controller reports, fenced
//! by the stage and attempt it reports on, and decides what a run does
//! next; the controller does the work. A run lives in the replicated state,
//! so a new leader picks it up where the last one left it (it repeats the
//! stage that was running).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::Actor;

/// Runs kept per pipeline, newest last (finished ones are dropped first).
pub const RUNS_KEPT: usize = 20;
/// Most characters of a stage's output kept.
pub const LOG_TAIL_CHARS: usize = 2000;
/// The refusal of `release approve` with no run waiting (409).
pub const NOTHING_TO_APPROVE: &str = "nothing_to_approve";

/// Where a pipeline's runs deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// The repository built images are called by: `IMAGE:run-N`.
    pub image: String,
    /// The service the built image is deployed as.
    pub service: String,
    /// Blue-green: the release whose idle environment a run deploys to;
    /// `release approve` then switches it.
    #[serde(default)]
    pub release: Option<String>,
    /// Development: the namespace whose service a run updates in place
    /// (a rolling update, no approval).
    #[serde(default)]
    pub namespace: Option<String>,
    /// The test: a command run in a one-shot container of the built image;
    /// none, no test stage.
    #[serde(default)]
    pub test: Vec<String>,
    /// Longest the test may run.
    #[serde(default = "default_test_timeout")]
    pub test_timeout_secs: u32,
    /// Longest the deploy's rollout may take.
    #[serde(default = "default_deploy_timeout")]
    pub deploy_timeout_secs: u32,
}

fn default_test_timeout() -> u32 {
    300
}

fn default_deploy_timeout() -> u32 {
    600
}

impl PipelineSpec {
    pub fn check(&self) -> Result<(), String> {
        super::image_catalog::Reference::parse(&format!("{}:run-1", self.image))
            .map_err(|e| format!("image: {e}"))?;
        super::validate::dns_label("service", &self.service).map_err(|e| e.to_string())?;
        match (&self.release, &self.namespace) {
            (Some(release), None) => {
                super::validate::dns_label("release", release).map_err(|e| e.to_string())?
            }
            (None, Some(namespace)) => {
                super::validate::dns_label("namespace", namespace).map_err(|e| e.to_string())?
            }
            _ => {
                return Err("say where runs deploy: a release or a namespace (one of them)".into())
            }
        }
        if self.test.iter().any(String::is_empty) {
            return Err("the test command has an empty argument".into());
        }
        for (what, secs, most) in [
            ("test_timeout_secs", self.test_timeout_secs, 3600),
            ("deploy_timeout_secs", self.deploy_timeout_secs, 3600),
        ] {
            if secs == 0 || secs > most {
                return Err(format!("{what} must be 1 to {most}"));
            }
        }
        Ok(())
    }

    fn stages(&self) -> Vec<StageKind> {
        let mut stages = vec![StageKind::Build];
        if !self.test.is_empty() {
            stages.push(StageKind::Test);
        }
        stages.push(StageKind::Deploy);
        if self.release.is_some() {
            stages.push(StageKind::Approve);
        }
        stages
    }
}

/// One stage of a run.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum StageKind {
    Build,
    Test,
    Deploy,
    Approve,
    // Variants are only ever appended: the log encodes them by position.
}

impl StageKind {
    pub fn name(self) -> &'static str {
        match self {
            StageKind::Build => "build",
            StageKind::Test => "test",
            StageKind::Deploy => "deploy",
            StageKind::Approve => "approve",
        }
    }
}

/// Where a stage is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StageState {
    Pending,
    Running,
    Passed,
    Failed,
    /// Never ran: an earlier stage failed, or a newer run replaced this one.
    Skipped,
    // Variants are only ever appended: the log encodes them by position.
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Stage {
    pub kind: StageKind,
    pub state: StageState,
    /// How many times it was started (a new leader starts it again).
    pub attempts: u32,
    #[serde(default)]
    pub started_ms: Option<u64>,
    #[serde(default)]
    pub finished_ms: Option<u64>,
    /// The end of its output, or why it failed.
    #[serde(default)]
    pub log_tail: String,
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    /// Deployed to the idle environment; waits for `release approve`.
    Waiting,
    Succeeded,
    Failed,
    /// A newer run deployed over it before it was approved.
    Superseded,
    // Variants are only ever appended: the log encodes them by position.
}

impl RunStatus {
    pub fn finished(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Superseded
        )
    }
}

/// One run of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Run {
    /// 1, 2, … per pipeline.
    pub number: u64,
    /// The Raft index of the write that started it.
    pub index: u64,
    /// The commit it was started for, as the caller said.
    #[serde(default)]
    pub commit: Option<String>,
    /// The source archive (sha256 in the managers' archive stores).
    pub source: String,
    /// The managers that keep the source archive.
    #[schema(value_type = Vec<u64>)]
    pub keepers: BTreeSet<u64>,
    pub created_ms: u64,
    pub status: RunStatus,
    pub stages: Vec<Stage>,
    /// The image it built (`IMAGE:run-N`), once it did.
    #[serde(default)]
    pub image: Option<String>,
    /// The namespace it deploys to, once its deploy started.
    #[serde(default)]
    pub target: Option<String>,
    /// The service version its deploy wrote.
    #[serde(default)]
    pub deployed_version: Option<u64>,
    /// Who started it: a token, or none for a signed webhook.
    #[serde(default)]
    pub actor: Option<Actor>,
}

impl Run {
    /// The stage to work on: the first not passed, while the run runs.
    pub fn current(&self) -> Option<&Stage> {
        if self.status != RunStatus::Running {
            return None;
        }
        self.stages.iter().find(|s| s.state != StageState::Passed)
    }

    fn stage_mut(&mut self, kind: StageKind) -> Option<&mut Stage> {
        self.stages.iter_mut().find(|s| s.kind == kind)
    }

    /// The tag of the image this run builds.
    pub fn tag(&self, image: &str) -> String {
        format!("{image}:run-{}", self.number)
    }
}

/// A pipeline and its latest runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pipeline {
    pub name: String,
    pub spec: PipelineSpec,
    /// The webhook's HMAC key, sealed with the cluster's secrets key under
    /// [`secret_name`]; none: runs start with a token only.
    pub secret: Option<String>,
    /// The Raft index of its last change.
    pub version: u64,
    pub created_ms: u64,
    /// The number the next run gets.
    pub next_run: u64,
    /// Oldest first.
    pub runs: Vec<Run>,
}

impl Pipeline {
    pub fn run(&self, number: u64) -> Option<&Run> {
        self.runs.iter().find(|r| r.number == number)
    }

    fn run_mut(&mut self, number: u64) -> Option<&mut Run> {
        self.runs.iter_mut().find(|r| r.number == number)
    }
}

/// The name a pipeline's webhook key is sealed under.
pub fn secret_name(pipeline: &str) -> String {
    format!("pipeline:{pipeline}")
}

/// What the controller reports on a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StageStep {
    /// It starts (again): the attempt is the next one.
    Started {
        /// The deploy's namespace, chosen when it starts.
        target: Option<String>,
    },
    Passed {
        log_tail: String,
        /// The build's image.
        image: Option<String>,
        /// The deploy's service version.
        deployed_version: Option<u64>,
    },
    Failed {
        log_tail: String,
    },
    // Variants are only ever appended: the log encodes them by position.
}

/// What a new run starts with.
pub struct NewRun {
    /// The Raft index of the write.
    pub index: u64,
    /// The source archive's sha256.
    pub source: String,
    pub keepers: BTreeSet<u64>,
    pub commit: Option<String>,
    pub at_ms: u64,
    pub actor: Option<Actor>,
}

/// Every pipeline, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineBook {
    pub pipelines: BTreeMap<String, Pipeline>,
}

impl super::migrate::FirstVersion for PipelineBook {
    const VERSION_MARKER: &'static [u8] = b"SP01";
}

/// The last `LOG_TAIL_CHARS` characters of `text`.
pub fn tail(text: &str) -> String {
    let skip = text.chars().count().saturating_sub(LOG_TAIL_CHARS);
    text.chars().skip(skip).collect()
}

impl PipelineBook {
    /// Keeps a new run of `pipeline`; its number, or why not.
    pub(super) fn start_run(&mut self, pipeline: &str, new: NewRun) -> Result<u64, String> {
        let NewRun {
            index,
            source,
            keepers,
            commit,
            at_ms,
            actor,
        } = new;
        let pipeline = self
            .pipelines
            .get_mut(pipeline)
            .ok_or_else(|| format!("pipeline {pipeline} does not exist"))?;
        let number = pipeline.next_run;
        pipeline.next_run += 1;
        pipeline.runs.push(Run {
            number,
            index,
            commit,
            source,
            keepers,
            created_ms: at_ms,
            status: RunStatus::Running,
            stages: pipeline
                .spec
                .stages()
                .into_iter()
                .map(|kind| Stage {
                    kind,
                    state: StageState::Pending,
                    attempts: 0,
                    started_ms: None,
                    finished_ms: None,
                    log_tail: String::new(),
                })
                .collect(),
            image: None,
            target: None,
            deployed_version: None,
            actor,
        });
        // Finished runs go first; runs in progress are never dropped.
        while pipeline.runs.len() > RUNS_KEPT {
            match pipeline.runs.iter().position(|r| r.status.finished()) {
                Some(oldest) => {
                    pipeline.runs.remove(oldest);
                }
                None => break,
            }
        }
        Ok(number)
    }

    /// Records `step` of stage `kind` of run `number`, reported for attempt
    /// `attempt` (the one it starts, for `Started`): anything else (a
    /// stage that is not the run's current one, an older attempt, a run
    /// that finished) is refused, so a deposed leader's late report
    /// changes nothing.
    pub(super) fn record(
        &mut self,
        name: &str,
        number: u64,
        kind: StageKind,
        attempt: u32,
        step: StageStep,
        at_ms: u64,
    ) -> Result<(), String> {
        let pipeline = self
            .pipelines
            .get_mut(name)
            .ok_or_else(|| format!("pipeline {name} does not exist"))?;
        let run = pipeline
            .run_mut(number)
            .ok_or_else(|| format!("run {number} of {name} is not kept"))?;
        let current = run.current().map(|s| (s.kind, s.attempts));
        match (current, &step) {
            (Some((k, attempts)), StageStep::Started { .. })
                if k == kind && attempt == attempts + 1 => {}
            (Some((k, attempts)), _) if k == kind && attempt == attempts => {}
            _ => {
                return Err(format!(
                    "run {number} of {name} is not at attempt {attempt} of its {} stage",
                    kind.name()
                ))
            }
        }
        let superseding = matches!(
            (&step, kind),
            (StageStep::Started { .. }, StageKind::Deploy)
        );
        let stage = run.stage_mut(kind).expect("the current stage is the run's");
        match step {
            StageStep::Started { target } => {
                stage.state = StageState::Running;
                stage.attempts = attempt;
                stage.started_ms = Some(at_ms);
                stage.finished_ms = None;
                if target.is_some() {
                    run.target = target;
                }
            }
            StageStep::Passed {
                log_tail,
                image,
                deployed_version,
            } => {
                stage.state = StageState::Passed;
                stage.finished_ms = Some(at_ms);
                stage.log_tail = tail(&log_tail);
                if image.is_some() {
                    run.image = image;
                }
                if deployed_version.is_some() {
                    run.deployed_version = deployed_version;
                }
                match run.stages.iter().find(|s| s.state != StageState::Passed) {
                    None => run.status = RunStatus::Succeeded,
                    Some(next) if next.kind == StageKind::Approve => {
                        run.status = RunStatus::Waiting
                    }
                    Some(_) => {}
                }
            }
            StageStep::Failed { log_tail } => {
                stage.state = StageState::Failed;
                stage.finished_ms = Some(at_ms);
                stage.log_tail = tail(&log_tail);
                run.status = RunStatus::Failed;
                for later in run
                    .stages
                    .iter_mut()
                    .filter(|s| s.state == StageState::Pending)
                {
                    later.state = StageState::Skipped;
                }
            }
        }
        // A deploy to the idle environment replaces what an earlier run
        // left there waiting for approval.
        if superseding {
            for earlier in pipeline
                .runs
                .iter_mut()
                .filter(|r| r.number < number && r.status == RunStatus::Waiting)
            {
                earlier.status = RunStatus::Superseded;
                for stage in earlier
                    .stages
                    .iter_mut()
                    .filter(|s| s.state == StageState::Pending)
                {
                    stage.state = StageState::Skipped;
                }
            }
        }
        Ok(())
    }

    /// The run of a pipeline deploying to `release` that waits for
    /// approval: `(pipeline, run number, its target namespace)`.
    pub fn waiting_for(&self, release: &str) -> Option<(&str, u64, &str)> {
        self.pipelines
            .values()
            .filter(|p| p.spec.release.as_deref() == Some(release))
            .flat_map(|p| p.runs.iter().map(move |r| (p, r)))
            .filter(|(_, r)| r.status == RunStatus::Waiting)
            .max_by_key(|(_, r)| r.number)
            .and_then(|(p, r)| Some((p.name.as_str(), r.number, r.target.as_deref()?)))
    }

    /// Marks the approval of run `number` passed: the run succeeded.
    pub(super) fn approved(&mut self, name: &str, number: u64, at_ms: u64, actor: Option<&Actor>) {
        let Some(run) = self.pipelines.get_mut(name).and_then(|p| p.run_mut(number)) else {
            return;
        };
        if let Some(stage) = run.stage_mut(StageKind::Approve) {
            stage.state = StageState::Passed;
            stage.attempts = 1;
            stage.started_ms.get_or_insert(at_ms);
            stage.finished_ms = Some(at_ms);
            stage.log_tail = match actor {
                Some(actor) => format!("approved by {}", actor.token_name),
                None => "approved".into(),
            };
        }
        run.status = RunStatus::Succeeded;
    }

    /// The runs the controller works on: `(pipeline, number)` of every run
    /// still running.
    pub fn running(&self) -> Vec<(String, u64)> {
        self.pipelines
            .values()
            .flat_map(|p| {
                p.runs
                    .iter()
                    .filter(|r| r.status == RunStatus::Running)
                    .map(|r| (p.name.clone(), r.number))
            })
            .collect()
    }

    /// The source archives of kept runs (the sweep keeps them).
    pub fn archives(&self) -> impl Iterator<Item = &str> {
        self.pipelines
            .values()
            .flat_map(|p| p.runs.iter().map(|r| r.source.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(release: bool, test: bool) -> PipelineBook {
        let spec = PipelineSpec {
            image: "shop-web".into(),
            service: "web".into(),
            release: release.then(|| "shop".into()),
            namespace: (!release).then(|| "dev".into()),
            test: if test {
                vec!["sh".into(), "/test.sh".into()]
            } else {
                Vec::new()
            },
            test_timeout_secs: 60,
            deploy_timeout_secs: 60,
        };
        spec.check().unwrap();
        let mut book = PipelineBook::default();
        book.pipelines.insert(
            "web".into(),
            Pipeline {
                name: "web".into(),
                spec,
                secret: None,
                version: 1,
                created_ms: 0,
                next_run: 1,
                runs: Vec::new(),
            },
        );
        book
    }

    fn new_run(commit: Option<&str>) -> NewRun {
        NewRun {
            index: 1,
            source: "abc".into(),
            keepers: BTreeSet::from([1]),
            commit: commit.map(str::to_string),
            at_ms: 5,
            actor: None,
        }
    }

    fn started(target: Option<&str>) -> StageStep {
        StageStep::Started {
            target: target.map(str::to_string),
        }
    }

    fn passed() -> StageStep {
        StageStep::Passed {
            log_tail: "ok".into(),
            image: None,
            deployed_version: None,
        }
    }

    #[test]
    fn a_release_run_builds_tests_deploys_and_waits_for_approval() {
        let mut book = book(true, true);
        let n = book.start_run("web", new_run(None)).unwrap();
        assert_eq!(n, 1);
        let kinds: Vec<_> = book.pipelines["web"].runs[0]
            .stages
            .iter()
            .map(|s| s.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                StageKind::Build,
                StageKind::Test,
                StageKind::Deploy,
                StageKind::Approve
            ]
        );
        book.record("web", 1, StageKind::Build, 1, started(None), 6)
            .unwrap();
        // A second leader starts it again; the first one's late report is refused.
        book.record("web", 1, StageKind::Build, 2, started(None), 7)
            .unwrap();
        assert!(book
            .record("web", 1, StageKind::Build, 1, passed(), 8)
            .is_err());
        assert!(book
            .record("web", 1, StageKind::Test, 1, started(None), 8)
            .is_err());
        let built = StageStep::Passed {
            log_tail: "built".into(),
            image: Some("shop-web:run-1".into()),
            deployed_version: None,
        };
        book.record("web", 1, StageKind::Build, 2, built, 9)
            .unwrap();
        book.record("web", 1, StageKind::Test, 1, started(None), 10)
            .unwrap();
        book.record("web", 1, StageKind::Test, 1, passed(), 11)
            .unwrap();
        book.record("web", 1, StageKind::Deploy, 1, started(Some("shop-b")), 12)
            .unwrap();
        book.record("web", 1, StageKind::Deploy, 1, passed(), 13)
            .unwrap();
        let run = &book.pipelines["web"].runs[0];
        assert_eq!(run.status, RunStatus::Waiting);
        assert_eq!(run.image.as_deref(), Some("shop-web:run-1"));
        assert!(run.current().is_none());
        assert_eq!(book.waiting_for("shop"), Some(("web", 1, "shop-b")));
        assert!(book.running().is_empty());
        book.approved("web", 1, 20, None);
        assert_eq!(book.pipelines["web"].runs[0].status, RunStatus::Succeeded);
        assert_eq!(book.waiting_for("shop"), None);
    }

    #[test]
    fn a_failed_stage_skips_the_rest_and_a_newer_deploy_supersedes_a_waiting_run() {
        let mut book = book(true, true);
        for _ in 0..3 {
            book.start_run("web", new_run(Some("c0ffee"))).unwrap();
        }
        book.record("web", 1, StageKind::Build, 1, started(None), 1)
            .unwrap();
        book.record("web", 1, StageKind::Build, 1, passed(), 1)
            .unwrap();
        book.record("web", 1, StageKind::Test, 1, started(None), 1)
            .unwrap();
        book.record(
            "web",
            1,
            StageKind::Test,
            1,
            StageStep::Failed {
                log_tail: "exit 3".into(),
            },
            2,
        )
        .unwrap();
        let run = &book.pipelines["web"].runs[0];
        assert_eq!(run.status, RunStatus::Failed);
        assert_eq!(run.stages[2].state, StageState::Skipped);
        assert_eq!(run.stages[3].state, StageState::Skipped);
        for n in [2, 3] {
            for kind in [StageKind::Build, StageKind::Test, StageKind::Deploy] {
                book.record("web", n, kind, 1, started(Some("shop-b")), 3)
                    .unwrap();
                if n == 3 && kind == StageKind::Deploy {
                    break;
                }
                book.record("web", n, kind, 1, passed(), 4).unwrap();
            }
        }
        let runs = &book.pipelines["web"].runs;
        assert_eq!(runs[1].status, RunStatus::Superseded);
        assert_eq!(runs[2].status, RunStatus::Running);
        assert_eq!(book.running(), vec![("web".to_string(), 3)]);
    }

    #[test]
    fn a_development_run_ends_at_its_deploy_and_old_runs_are_dropped() {
        let mut book = book(false, false);
        for _ in 0..(RUNS_KEPT + 5) {
            let n = book.start_run("web", new_run(None)).unwrap();
            book.record("web", n, StageKind::Build, 1, started(None), 1)
                .unwrap();
            book.record("web", n, StageKind::Build, 1, passed(), 1)
                .unwrap();
            book.record("web", n, StageKind::Deploy, 1, started(Some("dev")), 1)
                .unwrap();
            book.record("web", n, StageKind::Deploy, 1, passed(), 1)
                .unwrap();
            assert_eq!(
                book.pipelines["web"].run(n).unwrap().status,
                RunStatus::Succeeded
            );
        }
        assert_eq!(book.pipelines["web"].runs.len(), RUNS_KEPT);
        assert_eq!(book.pipelines["web"].runs[0].number, 6);
    }

    #[test]
    fn a_spec_deploys_to_a_release_or_a_namespace() {
        let mut spec = book(true, false).pipelines["web"].spec.clone();
        spec.namespace = Some("dev".into());
        assert!(spec.check().unwrap_err().contains("one of them"));
        spec.release = None;
        spec.check().unwrap();
        spec.test_timeout_secs = 0;
        assert!(spec.check().is_err());
    }
}
