//! The churn workload: the control plane kept busy *while* the nemesis
//! works, not only before it. Two services (`jepsen/churn-a`,
//! `jepsen/churn-b`) live on two nodes of their own, `local-a` and
//! `local-b` (both the local engine, labelled `pool=churn`; the fixed echo
//! services stay on `local`, `pool=main`). Throughout the run one client
//! scales them (1–3 replicas), redeploys them (a changed environment: a
//! rolling replacement) and moves them between the two nodes (drain one,
//! return the other), through random managers. Every step creates and
//! removes containers, so a deposed leader that still acts meets
//! containers the new leader just made. After healing the workload
//! settles: it writes the final specs again and returns both nodes, so
//! the supervisor checker knows each service's desired count.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::json;
use tokio::time::Instant;

use super::register::Processes;
use super::supervisor::{Desired, NAMESPACE};
use crate::history::{Entry, EventType, Process};
use crate::nemesis::Context;

/// The churned services.
pub const SERVICES: [&str; 2] = ["churn-a", "churn-b"];
/// The two nodes they move between.
pub const NODES: [&str; 2] = ["local-a", "local-b"];
/// Whether a `namespace/service#slot` belongs to a churned service (its
/// containers come and go on purpose).
pub fn churned(slot: &str) -> bool {
    SERVICES
        .iter()
        .any(|s| slot.starts_with(&format!("{NAMESPACE}/{s}#")))
}

/// The spec of a churned service.
pub fn spec(image: &str, replicas: u32, generation: u64) -> serde_json::Value {
    json!({
        "image": image,
        "replicas": replicas,
        "ports": [{ "name": "http", "container_port": 8080 }],
        "env": { "CHURN_GENERATION": generation.to_string() },
        "placement": { "node_labels": { "pool": "churn" } },
        "restart": { "initial_backoff_ms": 100, "max_backoff_ms": 2000, "reset_after_ms": 10000 },
    })
}

/// What the workload last asked of each service: replicas, generation.
#[derive(Debug, Clone)]
pub struct Churn {
    image: String,
    replicas: [u32; 2],
    generation: [u64; 2],
    /// Index into [`NODES`] of the drained node, if any.
    drained: Option<usize>,
}

impl Churn {
    pub fn new(image: &str) -> Churn {
        Churn {
            image: image.to_string(),
            replicas: [2, 1],
            generation: [1, 1],
            drained: None,
        }
    }

    /// The desired counts for the supervisor checker.
    pub fn desired(&self) -> Vec<Desired> {
        SERVICES
            .iter()
            .zip(self.replicas)
            .map(|(name, replicas)| Desired {
                name: name.to_string(),
                replicas,
            })
            .collect()
    }
}

fn any_member(ctx: &Context, rng: &mut StdRng) -> Option<(u64, String)> {
    let members = ctx.members();
    let id = *members.choose(rng)?;
    Some((id, ctx.cluster.manager(id)?.api()))
}

async fn send(
    ctx: &Context,
    base: &str,
    method: Method,
    path: &str,
    body: serde_json::Value,
) -> Result<(), crate::api::CallError> {
    ctx.cluster
        .api
        .send_json(method, base, path, Some(&body), Duration::from_secs(3))
        .await
        .map(|_| ())
}

/// Registers the two nodes and deploys the services (before the faults).
pub async fn prepare(ctx: &Context, churn: &Churn) -> anyhow::Result<()> {
    let manager = ctx
        .cluster
        .manager(ctx.members()[0])
        .ok_or_else(|| anyhow::anyhow!("no manager to deploy through"))?;
    for (i, node) in NODES.iter().enumerate() {
        send(
            ctx,
            &manager.api(),
            Method::PUT,
            &format!("/v1/nodes/{node}"),
            json!({
                "docker_endpoint": "unix:///var/run/docker.sock",
                "address": ctx.cluster.gateway.to_string(),
                "labels": { "pool": "churn", "site": NODES[i] },
            }),
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot register node {node}: {e}"))?;
    }
    for (i, service) in SERVICES.iter().enumerate() {
        send(
            ctx,
            &manager.api(),
            Method::PUT,
            &format!("/v1/services/{NAMESPACE}/{service}"),
            spec(&churn.image, churn.replicas[i], churn.generation[i]),
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot deploy {NAMESPACE}/{service}: {e}"))?;
    }
    Ok(())
}

/// One client churning until `until`; returns what it last asked for.
pub async fn run(
    ctx: Arc<Context>,
    mut churn: Churn,
    seed: u64,
    processes: Arc<Processes>,
    until: Instant,
) -> Churn {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6368_7572);
    let mut process = processes.fresh();
    while Instant::now() < until {
        super::think(
            &mut rng,
            (Duration::from_millis(200), Duration::from_millis(600)),
        )
        .await;
        let Some((id, base)) = any_member(&ctx, &mut rng) else {
            continue;
        };
        let node = format!("m{id}");
        let service = rng.gen_range(0..SERVICES.len());
        let name = SERVICES[service];
        let path = format!("/v1/services/{NAMESPACE}/{name}");
        let roll = rng.gen_range(0..10);
        let (entry, result) = if roll < 4 {
            let replicas = rng.gen_range(1..=3);
            churn.replicas[service] = replicas;
            let entry = Entry::new("scale")
                .node(&node)
                .value(json!({ "service": name, "replicas": replicas }));
            ctx.recorder
                .record(Process::Client(process), EventType::Invoke, entry.clone());
            let result = send(
                &ctx,
                &base,
                Method::POST,
                &format!("{path}/scale"),
                json!({ "replicas": replicas }),
            )
            .await;
            (entry, result)
        } else if roll < 7 {
            churn.generation[service] += 1;
            let body = spec(
                &churn.image,
                churn.replicas[service],
                churn.generation[service],
            );
            let entry = Entry::new("deploy").node(&node).value(json!({
                "service": name,
                "replicas": churn.replicas[service],
                "generation": churn.generation[service],
            }));
            ctx.recorder
                .record(Process::Client(process), EventType::Invoke, entry.clone());
            (entry, send(&ctx, &base, Method::PUT, &path, body).await)
        } else {
            // Return the drained node (if any), then drain the other.
            let to = churn.drained.unwrap_or(rng.gen_range(0..NODES.len()));
            let from = 1 - to;
            churn.drained = Some(from);
            let entry = Entry::new("move")
                .node(&node)
                .value(json!({ "from": NODES[from], "to": NODES[to] }));
            ctx.recorder
                .record(Process::Client(process), EventType::Invoke, entry.clone());
            let mut result = send(
                &ctx,
                &base,
                Method::POST,
                &format!("/v1/nodes/{}/drain", NODES[to]),
                json!({ "cancel": true }),
            )
            .await;
            if result.is_ok() {
                result = send(
                    &ctx,
                    &base,
                    Method::POST,
                    &format!("/v1/nodes/{}/drain", NODES[from]),
                    json!({}),
                )
                .await;
            }
            (entry, result)
        };
        let (kind, entry) = match result {
            Ok(()) => (EventType::Ok, entry),
            Err(e) if e.is_definite() => (EventType::Fail, entry.error(e.to_string())),
            Err(e) => (EventType::Info, entry.error(e.to_string())),
        };
        ctx.recorder.record(Process::Client(process), kind, entry);
        if kind == EventType::Info {
            process = processes.fresh();
        }
    }
    churn
}

/// After healing: both nodes returned and the final specs written again
/// (through whichever member answers), so the desired counts are known.
pub async fn settle(ctx: &Context, churn: &Churn, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    let mut steps: Vec<(Method, String, serde_json::Value)> = NODES
        .iter()
        .map(|node| {
            (
                Method::POST,
                format!("/v1/nodes/{node}/drain"),
                json!({ "cancel": true }),
            )
        })
        .collect();
    for (i, service) in SERVICES.iter().enumerate() {
        steps.push((
            Method::PUT,
            format!("/v1/services/{NAMESPACE}/{service}"),
            spec(&churn.image, churn.replicas[i], churn.generation[i]),
        ));
    }
    for (method, path, body) in steps {
        let mut last = String::from("not tried");
        let mut done = false;
        while !done && Instant::now() < deadline {
            for id in ctx.members() {
                let Some(manager) = ctx.cluster.manager(id) else {
                    continue;
                };
                match send(ctx, &manager.api(), method.clone(), &path, body.clone()).await {
                    Ok(()) => {
                        done = true;
                        break;
                    }
                    Err(e) => last = format!("m{id}: {e}"),
                }
            }
            if !done {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        if !done {
            return Err(format!("{method} {path}: {last}"));
        }
    }
    Ok(())
}
