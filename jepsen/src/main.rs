//! `raftvisor-jepsen`: run one seeded scenario (`run`), a suite of them
//! (`suite --smoke | --full`), or re-check a recorded history (`check`).
//! Exit codes: 0 every run as expected, 1 a run found a violation (or a
//! canary was not caught), 2 the harness itself failed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use raftvisor_jepsen::nemesis::{FaultKind, Pace};
use raftvisor_jepsen::run::{self, RunOptions, Workloads};
use raftvisor_jepsen::suite::{self, Scenario};

#[derive(Parser, Debug)]
#[command(
    name = "raftvisor-jepsen",
    about = "Failure-injection harness for raftvisor"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Debug, Clone)]
struct Setup {
    /// Where runs write their outputs (one directory per run).
    #[arg(long, default_value = "target/jepsen")]
    out: PathBuf,
    /// The managers' image.
    #[arg(long, default_value = "raftvisor:local")]
    image: String,
    /// The managers' image for runs with fail points (a build with the
    /// `failpoints` feature).
    #[arg(long, default_value = "raftvisor:failpoints")]
    failpoints_image: String,
    /// The workload image.
    #[arg(long, default_value = "raftvisor-echo:local")]
    echo_image: String,
    /// The raftvisor binary on this machine (`certs init|issue`).
    #[arg(
        long,
        default_value = "target/x86_64-unknown-linux-gnu/release/raftvisor"
    )]
    raftvisor_bin: PathBuf,
    #[arg(long, default_value_t = 5)]
    managers: u64,
    /// Concurrent register clients.
    #[arg(long, default_value_t = 8)]
    clients: u64,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// One run.
    Run {
        #[arg(long, default_value = "run")]
        name: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Faults, comma-separated: kinds or groups (partition, kill, pause,
        /// network, membership, disk, workload, all, none).
        #[arg(long, default_value = "all")]
        nemesis: String,
        /// register, set, supervisor, churn, or all (= register, set,
        /// supervisor).
        #[arg(long, default_value = "all")]
        workload: String,
        /// Seconds of operations under faults.
        #[arg(long, default_value_t = 30)]
        duration: u64,
        /// `FAILPOINTS` for the managers (uses the fail-point image).
        #[arg(long)]
        failpoints: Option<String>,
        /// The run is expected to be found invalid.
        #[arg(long)]
        expect_invalid: bool,
        /// `default` (quiet 1–3 s, faults 2–6 s) or `smoke` (0.5–1.5 s, 1.5–3 s).
        #[arg(long, default_value = "default")]
        pace: String,
        #[command(flatten)]
        setup: Setup,
    },
    /// A named suite.
    Suite {
        #[arg(long, conflicts_with = "full")]
        smoke: bool,
        #[arg(long)]
        full: bool,
        /// Added to every scenario's seed.
        #[arg(long, default_value_t = 0)]
        base_seed: u64,
        /// `FAILPOINTS` for every run (e.g. `read-index-local=return`):
        /// with the local-reads bug, the suite must fail.
        #[arg(long)]
        failpoints: Option<String>,
        /// Only the scenarios whose name contains this.
        #[arg(long)]
        only: Option<String>,
        #[command(flatten)]
        setup: Setup,
    },
    /// Re-check a run's history.jsonl (register and set checkers; with
    /// the run's observer.jsonl and engine.jsonl beside it, leader-actions
    /// and one-way too).
    Check { history: PathBuf },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("JEPSEN_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match dispatch(Cli::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::Run {
            name,
            seed,
            nemesis,
            workload,
            duration,
            failpoints,
            expect_invalid,
            pace,
            setup,
        } => {
            let pace = match pace.as_str() {
                "default" => Pace::default(),
                "smoke" => suite::smoke_pace(),
                other => anyhow::bail!("unknown pace {other:?}: use default or smoke"),
            };
            let scenario = Scenario {
                name,
                seed,
                nemeses: FaultKind::parse_list(&nemesis).map_err(anyhow::Error::msg)?,
                workloads: Workloads::parse(&workload).map_err(anyhow::Error::msg)?,
                duration: Duration::from_secs(duration),
                failpoints,
                expect_invalid,
                pace,
            };
            let passed = run_scenarios(&[scenario], &setup, None).await?;
            Ok(passed)
        }
        Command::Suite {
            smoke,
            full,
            base_seed,
            failpoints,
            only,
            setup,
        } => {
            if !smoke && !full {
                anyhow::bail!("say which suite: --smoke or --full");
            }
            let mut scenarios = if full {
                suite::full(base_seed)
            } else {
                suite::smoke(base_seed)
            };
            if let Some(only) = &only {
                scenarios.retain(|s| s.name.contains(only.as_str()));
            }
            run_scenarios(&scenarios, &setup, failpoints).await
        }
        Command::Check { history } => {
            let events = raftvisor_jepsen::history::load(&history)?;
            let mut verdicts = vec![
                raftvisor_jepsen::checker::register::check(&events),
                raftvisor_jepsen::checker::set::check(&events),
            ];
            let dir = history.parent().unwrap_or(std::path::Path::new("."));
            let (observer, engine) = (dir.join("observer.jsonl"), dir.join("engine.jsonl"));
            if observer.exists() && engine.exists() {
                let observations = load_lines(&observer)?;
                let calls = load_lines(&engine)?;
                verdicts.push(raftvisor_jepsen::checker::leader_actions::check(
                    &observations,
                    &calls,
                    run::LEADER_ACTION_SLACK,
                ));
                verdicts.push(raftvisor_jepsen::checker::one_way::check(
                    &events,
                    &observations,
                    run::ONE_WAY_SETTLE,
                    Duration::from_secs(1),
                    1,
                ));
            }
            for verdict in &verdicts {
                println!(
                    "{:<13} {:<9} {}",
                    verdict.checker,
                    verdict.label(),
                    verdict.summary
                );
            }
            Ok(verdicts.iter().all(|v| v.passed()))
        }
    }
}

/// One JSON value a line.
fn load_lines<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> anyhow::Result<Vec<T>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(n, line)| {
            serde_json::from_str(line)
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), n + 1))
        })
        .collect()
}

/// Runs `scenarios` one after another and prints a table; true when each
/// ended as expected (valid, or invalid for a canary).
async fn run_scenarios(
    scenarios: &[Scenario],
    setup: &Setup,
    failpoints: Option<String>,
) -> anyhow::Result<bool> {
    let docker = bollard::Docker::connect_with_local_defaults()?
        .negotiate_version()
        .await?;
    let leftovers = raftvisor_jepsen::cluster::remove_leftovers(&docker).await?;
    if leftovers > 0 {
        eprintln!("removed {leftovers} containers left by interrupted runs");
    }
    let mut rows = Vec::new();
    let mut all_as_expected = true;
    for scenario in scenarios {
        let failpoints = failpoints.clone().or(scenario.failpoints.clone());
        let image = if failpoints.is_some() {
            setup.failpoints_image.clone()
        } else {
            setup.image.clone()
        };
        let options = RunOptions {
            name: scenario.name.clone(),
            seed: scenario.seed,
            nemeses: scenario.nemeses.clone(),
            workloads: scenario.workloads,
            duration: scenario.duration,
            managers: setup.managers,
            image,
            echo_image: setup.echo_image.clone(),
            raftvisor_bin: setup.raftvisor_bin.clone(),
            out: setup.out.clone(),
            failpoints,
            pace: scenario.pace,
            client_processes: setup.clients,
        };
        eprintln!("==> {} (seed {})", scenario.name, scenario.seed);
        eprintln!("    replay: {}", scenario.replay_command());
        let started = std::time::Instant::now();
        let (result, expected) = match run::run(options).await {
            Ok(outcome) => {
                let summary =
                    std::fs::read_to_string(outcome.dir.join("summary.txt")).unwrap_or_default();
                eprintln!("{summary}");
                let expected = outcome.valid != scenario.expect_invalid;
                let result = match (outcome.valid, scenario.expect_invalid) {
                    (true, false) => "valid".to_string(),
                    (false, true) => "invalid, as expected (caught)".to_string(),
                    (true, true) => "VALID: the known bug was NOT caught".to_string(),
                    (false, false) => format!(
                        "INVALID: {}",
                        outcome
                            .verdicts
                            .iter()
                            .filter(|v| !v.passed())
                            .map(|v| v.checker.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                (format!("{result} ({})", outcome.dir.display()), expected)
            }
            Err(e) => (format!("HARNESS ERROR: {e:#}"), false),
        };
        all_as_expected &= expected;
        rows.push((scenario.name.clone(), started.elapsed(), result));
    }
    println!("\n{:<32} {:>7}  result", "scenario", "time");
    for (name, took, result) in &rows {
        println!("{name:<32} {:>6.0}s  {result}", took.as_secs_f64());
    }
    Ok(all_as_expected)
}
