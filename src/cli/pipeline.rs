//! `raftvisor pipeline create | ls | show | run | rm`: pipelines from
//! source to release. A run builds the source's Dockerfile, runs the test
//! in a one-shot container of the image, deploys it to the release's idle
//! environment (or updates a namespace in place) and, for a release, waits
//! for `raftvisor release approve`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Subcommand;

use super::output::{print, print_line, Format, Table};
use crate::client::Client;
use crate::state::pipelines::{PipelineSpec, Run, RunStatus};
use crate::wire::{PipelineBody, PipelineView};

#[derive(Subcommand, Debug)]
pub enum PipelineCommand {
    /// Create (or replace) a pipeline; its runs are kept.
    Create {
        name: String,
        /// The repository built images are called by (IMAGE:run-N).
        #[arg(long)]
        image: String,
        /// The service the image is deployed as.
        #[arg(long)]
        service: String,
        /// Deploy to this release's idle environment; approve to switch.
        #[arg(
            long,
            required_unless_present = "namespace",
            conflicts_with = "namespace"
        )]
        release: Option<String>,
        /// Update this namespace's service in place (development).
        #[arg(long)]
        namespace: Option<String>,
        /// The test command, run in a one-shot container of the image
        /// (words split at spaces, e.g. "sh /test.sh").
        #[arg(long)]
        test: Option<String>,
        /// A file holding the webhook's HMAC key (X-Hub-Signature-256).
        #[arg(long)]
        secret_file: Option<PathBuf>,
        /// Longest the test may run.
        #[arg(long, default_value = "5m", value_parser = super::parse_cli_duration)]
        test_timeout: Duration,
        /// Longest the deploy's rollout may take.
        #[arg(long, default_value = "10m", value_parser = super::parse_cli_duration)]
        deploy_timeout: Duration,
    },
    /// List the pipelines and their latest run.
    Ls,
    /// Show a pipeline's runs; with a run number, that run's stages and
    /// the end of each stage's output.
    Show { name: String, run: Option<u64> },
    /// Start a run with a source: a directory with a Dockerfile, or a tar.
    Run {
        name: String,
        source: PathBuf,
        /// The commit the source is of.
        #[arg(long)]
        commit: Option<String>,
        /// Follow the run until it waits for approval or ends (exit 1 if it failed).
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, default_value = "30m", value_parser = super::parse_cli_duration)]
        timeout: Duration,
    },
    /// Remove a pipeline and its runs (what they deployed keeps running).
    Rm { name: String },
}

fn status_name(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Running => "running",
        RunStatus::Waiting => "waiting for approval",
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::Superseded => "superseded",
    }
}

/// `build passed 12.3s, test running, …`.
fn stages_line(run: &Run) -> String {
    run.stages
        .iter()
        .map(|s| {
            let took = match (s.started_ms, s.finished_ms) {
                (Some(a), Some(b)) => format!(" {:.1}s", b.saturating_sub(a) as f64 / 1000.0),
                _ => String::new(),
            };
            format!(
                "{} {}{took}",
                s.kind.name(),
                format!("{:?}", s.state).to_lowercase()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn run_details(pipeline: &str, run: &Run) -> String {
    let mut lines = vec![format!(
        "run {} of {pipeline}: {}{}{}{}",
        run.number,
        status_name(run.status),
        run.commit
            .as_deref()
            .map(|c| format!(", commit {c}"))
            .unwrap_or_default(),
        run.image
            .as_deref()
            .map(|i| format!(", image {i}"))
            .unwrap_or_default(),
        run.target
            .as_deref()
            .map(|t| format!(", deployed to {t}"))
            .unwrap_or_default(),
    )];
    for stage in &run.stages {
        let took = match (stage.started_ms, stage.finished_ms) {
            (Some(a), Some(b)) => format!(" in {:.1} s", b.saturating_sub(a) as f64 / 1000.0),
            _ => String::new(),
        };
        lines.push(format!(
            "  {}: {}{took}{}",
            stage.kind.name(),
            format!("{:?}", stage.state).to_lowercase(),
            if stage.attempts > 1 {
                format!(" (attempt {})", stage.attempts)
            } else {
                String::new()
            }
        ));
        for line in stage
            .log_tail
            .trim()
            .lines()
            .rev()
            .take(10)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            lines.push(format!("    | {line}"));
        }
    }
    lines.join("\n")
}

fn runs_table(pipeline: &PipelineView) -> Table {
    let mut table = Table::new(&["RUN", "STATUS", "COMMIT", "STARTED", "STAGES"]);
    for run in pipeline.runs.iter().rev() {
        table.row(vec![
            run.number.to_string(),
            status_name(run.status).to_string(),
            run.commit.clone().unwrap_or_else(|| "-".into()),
            crate::dates::short_utc_ms(run.created_ms),
            stages_line(run),
        ]);
    }
    table
}

/// Follows run `number` until it waits for approval or ends.
async fn follow(
    client: &Client,
    name: &str,
    number: u64,
    timeout: Duration,
) -> anyhow::Result<Run> {
    let started = Instant::now();
    loop {
        match client.pipeline_run(name, number).await {
            Ok(run) if run.status != RunStatus::Running => return Ok(run),
            // A leader change in between is not a failed run.
            Ok(_) => {}
            Err(error) if error.status().is_none() || error.status() == Some(503) => {}
            Err(error) => return Err(error.into()),
        }
        if started.elapsed() > timeout {
            bail!("run {number} of {name} still runs after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn run(client: &Client, format: Format, command: PipelineCommand) -> anyhow::Result<()> {
    match command {
        PipelineCommand::Create {
            name,
            image,
            service,
            release,
            namespace,
            test,
            secret_file,
            test_timeout,
            deploy_timeout,
        } => {
            let secret = match secret_file {
                Some(file) => Some(
                    std::fs::read_to_string(&file)
                        .with_context(|| format!("cannot read {}", file.display()))?
                        .trim()
                        .to_string(),
                ),
                None => None,
            };
            let body = PipelineBody {
                spec: PipelineSpec {
                    image,
                    service,
                    release,
                    namespace,
                    test: test
                        .map(|t| t.split_whitespace().map(str::to_string).collect())
                        .unwrap_or_default(),
                    test_timeout_secs: test_timeout.as_secs().try_into().unwrap_or(u32::MAX),
                    deploy_timeout_secs: deploy_timeout.as_secs().try_into().unwrap_or(u32::MAX),
                },
                secret,
            };
            let saved = client.pipeline_put(&name, &body).await?;
            print_line(format, &saved, || {
                format!(
                    "pipeline {} saved (version {}){}",
                    saved.name,
                    saved.version,
                    if saved.signed {
                        "; its webhook takes signed calls"
                    } else {
                        ""
                    }
                )
            });
        }
        PipelineCommand::Ls => {
            let pipelines = client.pipeline_list().await?;
            print(format, &pipelines, || {
                let mut table = Table::new(&["NAME", "IMAGE", "SERVICE", "DEPLOYS TO", "LAST RUN"]);
                for p in &pipelines {
                    table.row(vec![
                        p.name.clone(),
                        p.spec.image.clone(),
                        p.spec.service.clone(),
                        match (&p.spec.release, &p.spec.namespace) {
                            (Some(r), _) => format!("release {r}"),
                            (_, Some(n)) => format!("namespace {n}"),
                            _ => "-".into(),
                        },
                        p.runs
                            .last()
                            .map(|r| format!("{} {}", r.number, status_name(r.status)))
                            .unwrap_or_else(|| "-".into()),
                    ]);
                }
                table
            });
        }
        PipelineCommand::Show { name, run: None } => {
            let pipeline = client.pipeline(&name).await?;
            print(format, &pipeline, || runs_table(&pipeline));
        }
        PipelineCommand::Show {
            name,
            run: Some(number),
        } => {
            let run = client.pipeline_run(&name, number).await?;
            print_line(format, &run, || run_details(&name, &run));
        }
        PipelineCommand::Run {
            name,
            source,
            commit,
            wait,
            timeout,
        } => {
            let archive = super::image::ContextArchive::of(&source)?;
            let bytes = std::fs::read(archive.path())
                .with_context(|| format!("cannot read {}", archive.path().display()))?;
            let started = client
                .pipeline_start_run(&name, bytes, commit.as_deref())
                .await?;
            if !wait {
                print_line(format, &started, || {
                    format!("run {} of {} started", started.run, started.pipeline)
                });
                return Ok(());
            }
            let run = follow(client, &name, started.run, timeout).await?;
            print_line(format, &run, || run_details(&name, &run));
            if run.status == RunStatus::Failed {
                bail!("run {} of {name} failed", run.number);
            }
        }
        PipelineCommand::Rm { name } => {
            client.pipeline_remove(&name).await?;
            match format {
                Format::Json => println!("true"),
                Format::Human => println!("removed pipeline {name}"),
            }
        }
    }
    Ok(())
}
