//! The supervisor workload: echo services deployed through the API at the
//! start of the run, then watched from the Docker Engine's side for the
//! whole run — the labelled containers sampled every 250 ms, and every
//! container death from the engine's event stream — so the supervisor
//! checker can tell whether a slot ever ran twice, whether services came
//! back to their desired count after healing, and whether a control-plane
//! fault alone ever stopped a workload.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bollard::query_parameters::EventsOptionsBuilder;
use futures::StreamExt;
use raftvisor::state::supervision::state_name;
use raftvisor::state::{Instance, InstanceState};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::containers::{self, Workload};
use crate::nemesis::Context;

/// The namespace of the run's services.
pub const NAMESPACE: &str = "jepsen";

/// A service the workload deploys and its desired replica count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Desired {
    pub name: String,
    pub replicas: u32,
}

pub fn services() -> Vec<Desired> {
    vec![
        Desired {
            name: "echo-a".into(),
            replicas: 3,
        },
        Desired {
            name: "echo-b".into(),
            replicas: 2,
        },
    ]
}

/// Deploys the services (echo image, one `http` port, HTTP health check).
pub async fn deploy(ctx: &Context, image: &str) -> anyhow::Result<()> {
    let members = ctx.members();
    let manager = ctx
        .cluster
        .manager(members[0])
        .context("no manager to deploy through")?;
    for service in services() {
        let spec = json!({
            "image": image,
            "replicas": service.replicas,
            "ports": [{ "name": "http", "container_port": 8080 }],
            "health": { "kind": "http", "port": "http", "path": "/health",
                        "interval_ms": 1000, "timeout_ms": 500, "retries": 3 },
            "restart": { "initial_backoff_ms": 100, "max_backoff_ms": 5000, "reset_after_ms": 10000 },
            // On node `local` only: the churn workload's nodes come and go.
            "placement": { "node_labels": { "pool": "main" } },
        });
        ctx.cluster
            .api
            .send_json(
                Method::PUT,
                &manager.api(),
                &format!("/v1/services/{NAMESPACE}/{}", service.name),
                Some(&spec),
                Duration::from_secs(10),
            )
            .await
            .with_context(|| format!("cannot deploy {NAMESPACE}/{}", service.name))?;
    }
    Ok(())
}

/// The containers as one sample saw them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    pub time_us: u64,
    pub containers: Vec<Workload>,
}

/// A container death the engine reported.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Death {
    pub time_us: u64,
    pub container: String,
    pub slot: Option<String>,
    pub exit_code: Option<i64>,
}

/// Samples the cluster's containers every 250 ms until `stop` turns true.
pub async fn sample(ctx: Arc<Context>, mut stop: watch::Receiver<bool>) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = stop.changed() => return samples,
            _ = tick.tick() => {}
        }
        if let Ok(containers) = containers::list(&ctx.cluster.docker, &ctx.cluster_id).await {
            samples.push(Sample {
                time_us: ctx.recorder.now_us(),
                containers,
            });
        }
    }
}

/// Collects the deaths of the cluster's containers until `stop`.
pub async fn watch_deaths(ctx: Arc<Context>, mut stop: watch::Receiver<bool>) -> Vec<Death> {
    let label = format!("raftvisor.cluster={}", ctx.cluster_id);
    let filters: HashMap<&str, Vec<&str>> = HashMap::from([
        ("type", vec!["container"]),
        ("event", vec!["die"]),
        ("label", vec![label.as_str()]),
    ]);
    let options = EventsOptionsBuilder::new().filters(&filters).build();
    let mut events = ctx.cluster.docker.events(Some(options));
    let mut deaths = Vec::new();
    loop {
        let event = tokio::select! {
            _ = stop.changed() => return deaths,
            event = events.next() => event,
        };
        let Some(Ok(event)) = event else {
            // The stream ended or failed: say so in the result rather than
            // pretend nothing died.
            deaths.push(Death {
                time_us: ctx.recorder.now_us(),
                container: "<the engine's event stream ended>".into(),
                slot: None,
                exit_code: None,
            });
            let _ = stop.changed().await;
            return deaths;
        };
        let actor = event.actor.unwrap_or_default();
        let attributes = actor.attributes.unwrap_or_default();
        let slot = match (
            attributes.get("raftvisor.namespace"),
            attributes.get("raftvisor.service"),
            attributes.get("raftvisor.slot"),
        ) {
            (Some(ns), Some(service), Some(slot)) => Some(format!("{ns}/{service}#{slot}")),
            _ => None,
        };
        deaths.push(Death {
            time_us: ctx.recorder.now_us(),
            container: actor.id.unwrap_or_default(),
            slot,
            exit_code: attributes.get("exitCode").and_then(|c| c.parse().ok()),
        });
    }
}

/// Waits until every service of `desired` runs exactly its desired
/// containers, one per slot, and the API reports every instance running;
/// returns how long that took, or what was still wrong after `within`.
pub async fn wait_converged(
    ctx: &Context,
    desired: &[Desired],
    within: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    let mut last = String::from("not checked");
    while started.elapsed() < within {
        match converged(ctx, desired).await {
            Ok(()) => return Ok(started.elapsed()),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(last)
}

async fn converged(ctx: &Context, desired: &[Desired]) -> Result<(), String> {
    let containers = containers::list(&ctx.cluster.docker, &ctx.cluster_id)
        .await
        .map_err(|e| e.to_string())?;
    for service in desired {
        for slot in 0..service.replicas {
            let running = containers
                .iter()
                .filter(|w| w.service == service.name && w.slot == slot && w.state == "running")
                .count();
            if running != 1 {
                return Err(format!(
                    "{}#{slot}: {running} running containers",
                    service.name
                ));
            }
        }
        let extra = containers
            .iter()
            .filter(|w| {
                w.service == service.name && w.slot >= service.replicas && w.state == "running"
            })
            .count();
        if extra > 0 {
            return Err(format!(
                "{}: {extra} containers beyond its replicas",
                service.name
            ));
        }
        let instances = instances(ctx, &service.name)
            .await
            .map_err(|e| e.to_string())?;
        let running = instances
            .iter()
            .filter(|i| i.state == InstanceState::Running)
            .count();
        if running != service.replicas as usize || instances.len() != service.replicas as usize {
            let states: Vec<&str> = instances.iter().map(|i| state_name(i.state)).collect();
            return Err(format!(
                "{}: the API reports {running} running of {} instances ({}), want {}",
                service.name,
                instances.len(),
                states.join(", "),
                service.replicas
            ));
        }
    }
    Ok(())
}

/// The instances of `jepsen/<service>` as the first member that answers
/// reports them (a linearizable read).
pub async fn instances(ctx: &Context, service: &str) -> anyhow::Result<Vec<Instance>> {
    let mut last = anyhow::anyhow!("no member answered the instances of {service}");
    for id in ctx.members() {
        let Some(manager) = ctx.cluster.manager(id) else {
            continue;
        };
        match ctx
            .cluster
            .api
            .instances(&manager.api(), NAMESPACE, service, Duration::from_secs(2))
            .await
        {
            Ok(instances) => return Ok(instances),
            Err(e) => last = anyhow::anyhow!("m{id}: {e}"),
        }
    }
    Err(last)
}
