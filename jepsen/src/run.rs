//! One run, start to end: the cluster is created, the observer started
//! (every manager's term and leader, all run long), the workload nodes
//! registered and the services deployed; clients, the churn workload and
//! the nemesis run side by side for the run's duration while the engine is
//! watched (and every manager's engine calls recorded by its proxy); then
//! everything is healed, the post-healing checks ask the cluster, the
//! history checkers decide, the outputs are written (history, verdict,
//! summary, timeline) and the run's containers and network are removed —
//! also when a step failed.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use rand::rngs::StdRng;
use rand::SeedableRng;
use reqwest::Method;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::checker::{self, Verdict};
use crate::cluster::{Cluster, ClusterOptions};
use crate::history::Recorder;
use crate::nemesis::{self, Context, FaultKind, Membership, Pace};
use crate::observer;
use crate::report;
use crate::workloads::register::{self, Processes, RegisterOptions};
use crate::workloads::set::{self, SetOptions};
use crate::workloads::{churn, pulse, supervisor};

/// Which workloads a run drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workloads {
    pub register: bool,
    pub set: bool,
    pub supervisor: bool,
    /// Services scaled, redeployed and moved during the faults.
    pub churn: bool,
}

impl Workloads {
    pub fn parse(text: &str) -> Result<Workloads, String> {
        let mut w = Workloads {
            register: false,
            set: false,
            supervisor: false,
            churn: false,
        };
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "register" => w.register = true,
                "set" => w.set = true,
                "supervisor" => w.supervisor = true,
                "churn" => w.churn = true,
                // `all` is the three that every suite run drives; churn
                // is asked for by name.
                "all" => {
                    w.register = true;
                    w.set = true;
                    w.supervisor = true;
                }
                other => {
                    return Err(format!(
                        "unknown workload {other:?}: use register, set, supervisor, churn or all"
                    ))
                }
            }
        }
        Ok(w)
    }

    pub fn names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.register {
            names.push("register");
        }
        if self.set {
            names.push("set");
        }
        if self.supervisor {
            names.push("supervisor");
        }
        if self.churn {
            names.push("churn");
        }
        names
    }
}

/// Everything that defines a run; with the same seed, the same schedule of
/// faults and operations is drawn.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub name: String,
    pub seed: u64,
    pub nemeses: Vec<FaultKind>,
    pub workloads: Workloads,
    pub duration: Duration,
    pub managers: u64,
    pub image: String,
    pub echo_image: String,
    pub raftvisor_bin: PathBuf,
    /// The run's outputs go to `<out>/<name>/`.
    pub out: PathBuf,
    pub failpoints: Option<String>,
    pub pace: Pace,
    pub client_processes: u64,
}

/// What a run concluded.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub dir: PathBuf,
    pub valid: bool,
    pub verdicts: Vec<Verdict>,
}

pub async fn run(options: RunOptions) -> anyhow::Result<RunOutcome> {
    // Absolute: the managers' directories are bind-mounted.
    let dir = std::path::absolute(options.out.join(&options.name))?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let recorder = Recorder::create(&dir.join("history.jsonl"))?;
    let run_id = format!("{}-{:04x}", options.seed, rand::random::<u16>());
    tracing::info!(run = %options.name, seed = options.seed, dir = %dir.display(), "creating the cluster");
    let cluster = Cluster::create(ClusterOptions {
        run: run_id,
        image: options.image.clone(),
        managers: options.managers,
        raftvisor_bin: options.raftvisor_bin.clone(),
        dir: dir.join("cluster"),
        failpoints: options.failpoints.clone(),
        seed: options.seed,
        clock: recorder.started(),
    })
    .await;
    // A setup that fails removes what it made itself.
    let cluster = Arc::new(cluster.context("setting up the cluster under test")?);
    let cluster_id = match cluster.agreed_view(&[1]).await {
        Ok(view) => view.cluster_id.unwrap_or_default(),
        Err(e) => {
            let _ = cluster.teardown(None).await;
            return Err(e.context("reading the cluster id"));
        }
    };
    let ctx = Arc::new(Context {
        cluster: cluster.clone(),
        recorder: recorder.clone(),
        membership: Mutex::new(Membership {
            voters: (1..=options.managers).collect(),
            ..Membership::default()
        }),
        killed_workloads: Mutex::new(Vec::new()),
        cluster_id: cluster_id.clone(),
        ineffective: Mutex::new(Vec::new()),
        delay: tokio::sync::Mutex::new(None),
        one_way_cut: Mutex::new(None),
    });
    let result = drive(&options, &ctx, &dir).await;
    let teardown = cluster.teardown(Some(&cluster_id)).await;
    let verdicts = result?;
    teardown.context("tearing the cluster down")?;
    let valid = verdicts.iter().all(Verdict::passed);
    Ok(RunOutcome {
        dir,
        valid,
        verdicts,
    })
}

/// Everything between setup and teardown.
async fn drive(
    options: &RunOptions,
    ctx: &Arc<Context>,
    dir: &std::path::Path,
) -> anyhow::Result<Vec<Verdict>> {
    let prefix = format!("jepsen/{}", options.name.replace('/', "-"));
    let (stop_watching, watching) = watch::channel(false);
    // Who leads which term, from the start: the engine calls of every
    // manager (its proxy records them from its first start) are judged
    // against it.
    let observer = tokio::spawn(observer::observe(ctx.clone(), watching.clone()));
    register_node(ctx).await?;
    let mut desired = Vec::new();
    if options.workloads.supervisor {
        supervisor::deploy(ctx, &options.echo_image).await?;
        desired.extend(supervisor::services());
    }
    let churn_start = churn::Churn::new(&options.echo_image);
    if options.workloads.churn {
        churn::prepare(ctx, &churn_start).await?;
        desired.extend(churn_start.desired());
    }
    if !desired.is_empty() {
        supervisor::wait_converged(ctx, &desired, Duration::from_secs(60))
            .await
            .map_err(|e| anyhow::anyhow!("the services did not start: {e}"))?;
    }
    let sampler = tokio::spawn(supervisor::sample(ctx.clone(), watching.clone()));
    let deaths = tokio::spawn(supervisor::watch_deaths(ctx.clone(), watching));

    tracing::info!(duration = ?options.duration, nemeses = ?options.nemeses, "running");
    let until = Instant::now() + options.duration;
    let processes = Arc::new(Processes::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let nemesis_rng = StdRng::seed_from_u64(options.seed);
    tasks.spawn(nemesis::run(
        ctx.clone(),
        options.nemeses.clone(),
        nemesis_rng,
        options.pace,
        until.into_std(),
    ));
    let think = (Duration::from_millis(2), Duration::from_millis(20));
    if options.workloads.register {
        let register = RegisterOptions {
            processes: options.client_processes,
            ops_per_key: 100,
            prefix: format!("{prefix}/register"),
            timeout: Duration::from_secs(3),
            max_ops: 200_000,
            think,
        };
        let (ctx, processes, seed) = (ctx.clone(), processes.clone(), options.seed);
        tasks.spawn(async move {
            register::run(ctx, register, seed, processes, until).await;
            Ok(())
        });
    }
    let set_prefix = format!("{prefix}/set");
    if options.workloads.set {
        let set_options = SetOptions {
            processes: 2,
            prefix: set_prefix.clone(),
            timeout: Duration::from_secs(3),
            max_ops: 50_000,
            think,
        };
        let (ctx, processes, seed) = (ctx.clone(), processes.clone(), options.seed);
        tasks.spawn(async move {
            set::run(ctx, set_options, seed, processes, until).await;
            Ok(())
        });
    }
    // Writes that never wait on a one-way fault's cut-off manager, on
    // until that fault's heal has settled.
    let one_way = options.nemeses.contains(&FaultKind::PartitionOneWay);
    let (stop_pulse, pulse_stop) = watch::channel(false);
    let pulse = one_way.then(|| {
        tokio::spawn(pulse::run(
            ctx.clone(),
            format!("{prefix}/pulse"),
            options.seed,
            processes.clone(),
            pulse_stop,
        ))
    });
    let churning = options.workloads.churn.then(|| {
        tokio::spawn(churn::run(
            ctx.clone(),
            churn_start.clone(),
            options.seed,
            processes.clone(),
            until,
        ))
    });
    let mut task_errors = Vec::new();
    let churn_end = match churning {
        Some(task) => match task.await {
            Ok(end) => Some(end),
            Err(e) => {
                task_errors.push(format!("the churn workload panicked: {e}"));
                None
            }
        },
        None => None,
    };
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => task_errors.push(format!("{e:#}")),
            Err(e) => task_errors.push(format!("a task panicked: {e}")),
        }
    }

    tracing::info!("healing");
    let healed = nemesis::heal_everything(ctx).await;
    ctx.recorder.record(
        crate::history::Process::NEMESIS,
        crate::history::EventType::Info,
        crate::history::Entry::new("heal-everything").value(match &healed {
            Ok(proof) => proof.clone(),
            Err(e) => json!({ "error": format!("{e:#}") }),
        }),
    );
    if let Some(pulse) = pulse {
        tokio::time::sleep(ONE_WAY_SETTLE).await;
        let _ = stop_pulse.send(true);
        let _ = pulse.await;
    }
    let mut verdicts = Vec::new();
    verdicts.push(checker::liveness::liveness(ctx, &prefix, Duration::from_secs(30)).await);
    if options.workloads.set {
        set::final_read(ctx, &set_prefix, &processes, Duration::from_secs(30)).await;
    }
    let mut desired = Vec::new();
    let mut settled = Ok(());
    if options.workloads.supervisor {
        desired.extend(supervisor::services());
    }
    if let Some(churn) = &churn_end {
        settled = churn::settle(ctx, churn, Duration::from_secs(30)).await;
        desired.extend(churn.desired());
    }
    let convergence = if desired.is_empty() {
        Ok(Duration::ZERO)
    } else {
        let converged = match settled {
            Ok(()) => supervisor::wait_converged(ctx, &desired, Duration::from_secs(30)).await,
            Err(e) => Err(format!("the churned services could not be settled: {e}")),
        };
        if options.workloads.supervisor {
            verdicts.push(checker::dns::check(ctx, Duration::from_secs(10)).await);
        }
        converged
    };
    verdicts.push(checker::liveness::replicas(ctx, &prefix, Duration::from_secs(15)).await);
    let _ = stop_watching.send(true);
    let samples = sampler.await.unwrap_or_default();
    let deaths = deaths.await.unwrap_or_default();
    let observations = observer.await.unwrap_or_default();
    let calls = ctx.cluster.engine_log.calls();
    ctx.recorder.flush().context("writing the history")?;

    tracing::info!("checking the history");
    let events = ctx.recorder.events();
    if options.workloads.register {
        let events = events.clone();
        let verdict = tokio::task::spawn_blocking(move || checker::register::check(&events))
            .await
            .context("the linearizability checker panicked")?;
        verdicts.push(verdict);
    }
    if options.workloads.set {
        verdicts.push(checker::set::check(&events));
    }
    let killed = ctx.killed_workloads.lock().expect("killed").clone();
    verdicts.push(checker::supervisor::check(checker::supervisor::Observed {
        samples: &samples,
        deaths: &deaths,
        killed: &killed,
        convergence,
        duplicate_grace: Duration::from_secs(5),
        deployed: options.workloads.supervisor || options.workloads.churn,
    }));
    verdicts.push(checker::leader_actions::check(
        &observations,
        &calls,
        LEADER_ACTION_SLACK,
    ));
    if one_way {
        verdicts.push(checker::one_way::check(
            &events,
            &observations,
            ONE_WAY_SETTLE,
            Duration::from_secs(1),
            1,
        ));
    }
    let ineffective = ctx.ineffective.lock().expect("ineffective").clone();
    let mut problems = ineffective.clone();
    problems.extend(task_errors.iter().cloned());
    if let Err(e) = &healed {
        problems.push(format!("healing: {e:#}"));
    }
    verdicts.push(Verdict::new(
        "faults",
        Some(problems.is_empty()),
        if problems.is_empty() {
            "every fault proved it took effect and everything healed".to_string()
        } else {
            format!(
                "{} problems with the faults themselves: {}",
                problems.len(),
                problems.join("; ")
            )
        },
        json!({ "ineffective": ineffective, "errors": task_errors }),
    ));
    report::write(dir, options, &events, &verdicts, &samples, &deaths)?;
    report::write_records(dir, &observations, &calls)?;
    Ok(verdicts)
}

/// How far the `leader-actions` checker trusts the clock: a destructive
/// call is judged against the terms a majority held this long before it,
/// and a leadership may have begun up to this long after it (the
/// observer's 100 ms polling, answers in flight, a lease's own margin).
pub const LEADER_ACTION_SLACK: Duration = Duration::from_millis(500);

/// How long after a one-way fault heals its write gaps and term raises are
/// still counted: the damage may come at the heal.
pub const ONE_WAY_SETTLE: Duration = Duration::from_secs(2);

/// Registers the local engine as the cluster's node `local`
/// (`pool=main`), reached from the managers' network at the host's
/// address on it.
async fn register_node(ctx: &Context) -> anyhow::Result<()> {
    let cluster = &ctx.cluster;
    let manager = cluster.manager(1).context("no manager 1")?;
    cluster
        .api
        .send_json(
            Method::PUT,
            &manager.api(),
            "/v1/nodes/local",
            Some(&json!({
                "docker_endpoint": "unix:///var/run/docker.sock",
                "address": cluster.gateway.to_string(),
                "labels": { "pool": "main" },
            })),
            Duration::from_secs(10),
        )
        .await
        .context("cannot register the local engine as a node")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_lists_parse() {
        let w = Workloads::parse("register,supervisor").unwrap();
        assert!(w.register && w.supervisor && !w.set);
        assert_eq!(Workloads::parse("all").unwrap().names().len(), 3);
        assert!(Workloads::parse("bank").is_err());
        let churn = Workloads::parse("register,churn").unwrap();
        assert!(churn.churn && !Workloads::parse("all").unwrap().churn);
        assert_eq!(churn.names(), ["register", "churn"]);
    }
}
