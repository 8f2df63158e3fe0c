//! `raftvisor cluster upgrade FILE --image IMAGE`: runs the managers of a
//! bootstrapped cluster on another image, one at a time — followers first,
//! the leader last — each back as a caught-up voter before the next is
//! touched, so a quorum serves throughout and writes pause only while a
//! new leader is elected once. The image is recorded in the plan first, so
//! a replacement started meanwhile uses it too.
//!
//! It starts only on a healthy cluster (a leader, every planned manager a
//! voter), never has more than one manager down, and stops at the first
//! manager that does not come back, naming it.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::cluster_file::ClusterFile;
use super::{client_of, engine_of, ensure_manager};
use crate::cli::output::{print, Format, Table};
use crate::client::{Client, ClientOptions};
use crate::runtime::{ContainerRuntime, RuntimeError};

/// How long one manager may take to come back as a caught-up voter.
const REJOIN_TIMEOUT: Duration = Duration::from_secs(120);

/// What happened to one manager.
#[derive(Debug, Serialize)]
struct Upgraded {
    id: u64,
    was_leader: bool,
    from_image: String,
    outcome: String,
    took_ms: u64,
}

/// Runs the upgrade of the cluster `path` describes to `image`.
pub async fn run(path: &Path, image: &str, format: Format) -> anyhow::Result<()> {
    crate::tls::install_default_provider();
    let file = ClusterFile::load(path)?;
    let client = client_of(&file)?;
    let mut plan = client.cluster_plan().await?;
    let status = client.cluster_status().await?;
    let Some(leader) = status.leader_id else {
        anyhow::bail!("the cluster has no leader: upgrade only a healthy cluster");
    };
    let voters: Vec<u64> = status.voter_ids();
    if let Some(missing) = plan.managers.iter().find(|m| !voters.contains(&m.id)) {
        anyhow::bail!(
            "manager {} of the plan is not a voter: repair the cluster (raftvisor bootstrap) before upgrading",
            missing.id
        );
    }
    plan.image = image.to_string();
    client.put_cluster_plan(&plan).await?;
    if let Err(e) = plan.save_plan_file() {
        tracing::warn!(error = %e, "cannot update the plan file in the state directory");
    }
    // Followers first: the leader is stopped once, last.
    let mut order: Vec<u64> = plan.managers.iter().map(|m| m.id).collect();
    order.sort_by_key(|id| *id == leader);
    let mut done = Vec::new();
    let mut failure = None;
    for id in order {
        let started = Instant::now();
        let result = upgrade_one(&client, &plan, &file, id, image).await;
        let (from_image, outcome) = match result {
            Ok((from, true)) => (from, "replaced".to_string()),
            Ok((from, false)) => (from, "unchanged".to_string()),
            Err(e) => {
                failure = Some(format!("manager {id}: {e:#}"));
                (String::new(), format!("FAILED: {e:#}"))
            }
        };
        done.push(Upgraded {
            id,
            was_leader: id == leader,
            from_image,
            outcome,
            took_ms: started.elapsed().as_millis() as u64,
        });
        if failure.is_some() {
            break;
        }
    }
    print(format, &done, || {
        let mut table = Table::new(&["MANAGER", "FROM", "RESULT", "TOOK_MS"]);
        for u in &done {
            table.row(vec![
                format!("{}{}", u.id, if u.was_leader { " (leader)" } else { "" }),
                u.from_image.clone(),
                u.outcome.clone(),
                u.took_ms.to_string(),
            ]);
        }
        table
    });
    match failure {
        Some(reason) => anyhow::bail!("upgrade stopped: {reason}"),
        None => Ok(()),
    }
}

/// Replaces manager `id`'s container by one of `image` and waits until it
/// is a caught-up voter again: (the image it ran, whether it was replaced).
async fn upgrade_one(
    cluster: &Client,
    plan: &ClusterFile,
    file: &ClusterFile,
    id: u64,
    image: &str,
) -> anyhow::Result<(String, bool)> {
    let placement = plan
        .managers
        .iter()
        .find(|m| m.id == id)
        .expect("ordered from the plan's managers");
    let engine = engine_of(plan.machine(&placement.machine))?;
    let name = plan.container_name(id);
    let current = engine.inspect(&name).await?;
    let from = current
        .as_ref()
        .map(|c| c.image.clone())
        .unwrap_or_default();
    if current
        .as_ref()
        .is_some_and(|c| c.image == image && c.state == crate::runtime::ContainerState::Running)
    {
        return Ok((from, false));
    }
    // What the cluster had applied before this manager stops: it must
    // have it again before the next one is touched.
    let target = cluster.cluster_status().await?.applied_index;
    if current.is_some() {
        match engine.stop(&name, Duration::from_secs(10)).await {
            Ok(()) | Err(RuntimeError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        match engine.remove(&name).await {
            Ok(()) | Err(RuntimeError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    ensure_manager(plan, placement, &engine, false).await?;
    let mut options = ClientOptions::new([plan.api_addr(placement)]);
    options.ca_cert = Some(file.certs_dir().join(crate::tls::certs::CA_CERT));
    options.token =
        crate::auth::first_token::read_file(&file.token_file())?.map(|t| t.reveal().to_string());
    options.timeout = Duration::from_secs(3);
    let manager = Client::new(options)?;
    wait_caught_up(&manager, id, target).await?;
    Ok((from, true))
}

/// Waits until manager `id` answers as a voter that knows a leader and
/// has applied at least `target`.
async fn wait_caught_up(manager: &Client, id: u64, target: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + REJOIN_TIMEOUT;
    loop {
        let last = match manager.cluster_status().await {
            Ok(status) => {
                let voter = status.members.iter().any(|m| m.id == id && m.voter);
                if voter && status.leader_id.is_some() && status.applied_index >= target {
                    return Ok(());
                }
                format!(
                    "voter {voter}, leader {:?}, applied {} of {target}",
                    status.leader_id, status.applied_index
                )
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            anyhow::bail!(
                "did not come back as a caught-up voter within {} s ({last})",
                REJOIN_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
