//! Manager replacement, run by the leader when the cluster has a manager
//! plan (the cluster file `raftvisor bootstrap` recorded). A voter the
//! leader has not heard from for `replace_after` whose container the
//! machine's engine reports gone or stopped is replaced: a new manager with
//! a never-used id is started (on another machine when there is one),
//! added as a learner until it has caught up, promoted, and only then is
//! the dead voter removed — one membership change at a time, never below
//! quorum. Each step is recorded in the plan first, so a new leader
//! finishes a replacement its predecessor started. A voter that is only cut
//! off (its container still runs) is reported, not replaced. A planned
//! manager missing from the membership (after `cluster recover`) whose
//! container is gone is replaced the same way, which brings the cluster
//! back to the plan's count. With `spares` in the plan, a replacement goes
//! to a machine hosting no other manager; when the plan has none free, the
//! spares' provider makes one (a listed spare host, or a new VM), which is
//! recorded in the plan, or deleted again when its engine never answers.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::bootstrap::cluster_file::{ClusterFile, ManagerPlacement, Replacement};
use crate::bootstrap::{engine_of, ensure_certificate, ensure_manager, ManagerStepError};
use crate::raft::PeerNode;
use crate::replica::{OpError, Replica};
use crate::runtime::{ContainerRuntime, ContainerState, RuntimeError};
use crate::state::manager_template::{Machine, Spares};
use crate::state::Command;

use super::controller::{Action, Limits, OnStop, Reason, Reconciler};

/// Why a look at the managers, or a step of a replacement, failed.
#[derive(Debug, thiserror::Error)]
pub enum ManagersError {
    #[error("this leader has no fresh quorum contact: not replacing managers now")]
    NoLease,
    #[error("the plan replaces {dead} by {new} but does not place {new}")]
    NotPlaced { dead: u64, new: u64 },
    #[error("recording the manager plan: {0}")]
    Save(OpError),
    #[error("adding manager {id}: {source}")]
    Add { id: u64, source: OpError },
    #[error("removing manager {id}: {source}")]
    Remove { id: u64, source: OpError },
    #[error(transparent)]
    Step(#[from] ManagerStepError),
    #[error(transparent)]
    Engine(#[from] RuntimeError),
    #[error("a new machine for a manager: {0}")]
    NewMachine(String),
}

/// The manager controller of one term: a single key (the cluster's
/// managers), looked at once a second and whenever the managers, their
/// plan or the membership change; failures back off.
pub struct Managers {
    replica: Arc<Replica>,
    replace_after: Duration,
    leading_since: Instant,
    /// Voters already reported as cut off (reported once).
    reported: Mutex<BTreeSet<u64>>,
}

impl Managers {
    pub fn new(replica: Arc<Replica>) -> Managers {
        let replace_after = Duration::from_millis(replica.config.supervisor.replace_after_ms);
        Managers {
            replica,
            replace_after,
            leading_since: Instant::now(),
            reported: Mutex::new(BTreeSet::new()),
        }
    }
}

#[async_trait::async_trait]
impl Reconciler for Managers {
    type Key = ();
    type Error = ManagersError;

    fn name(&self) -> &'static str {
        "managers"
    }

    fn limits(&self) -> Limits {
        Limits {
            // Adding a member waits for the learner to catch up.
            timeout: Duration::from_secs(300),
            concurrency: 1,
            resync: None,
            // A replacement half done (a learner added, not yet promoted)
            // must not be cut off by a lease that lapsed meanwhile.
            on_stop: OnStop::Finish,
        }
    }

    fn keys(&self) -> Vec<()> {
        vec![()]
    }

    async fn reconcile(&self, _: &(), _: Reason) -> Result<Action, ManagersError> {
        // One key never runs twice at once: the set is this run's alone.
        let mut reported =
            std::mem::take(&mut *self.reported.lock().unwrap_or_else(|e| e.into_inner()));
        let result = round(
            &self.replica,
            self.replace_after,
            self.leading_since,
            &mut reported,
        )
        .await;
        *self.reported.lock().unwrap_or_else(|e| e.into_inner()) = reported;
        result.map(|()| Action::RequeueAfter(Duration::from_secs(1)))
    }
}

fn plan_of(replica: &Replica) -> Option<ClusterFile> {
    replica
        .sm
        .read(|s| s.manager_template.clone())
        .map(ClusterFile::from)
}

async fn save(replica: &Replica, plan: &ClusterFile) -> Result<(), ManagersError> {
    replica
        .write_as_leader(Command::PutManagerTemplate {
            template: plan.template().clone(),
        })
        .await
        .map_err(ManagersError::Save)?;
    // The state directory is mounted in manager containers: the next
    // `raftvisor bootstrap` reads who the managers are now.
    if let Err(e) = plan.save_plan_file() {
        tracing::warn!(error = %e, "cannot update the plan file in the state directory");
    }
    Ok(())
}

async fn event(replica: &Replica, subject: String, message: String) {
    let _ = replica
        .write_as_leader(Command::RecordEvent {
            kind: "manager".into(),
            subject,
            message,
        })
        .await;
}

async fn round(
    replica: &Replica,
    replace_after: Duration,
    leading_since: Instant,
    reported: &mut BTreeSet<u64>,
) -> Result<(), ManagersError> {
    let Some(mut plan) = plan_of(replica) else {
        return Ok(());
    };
    if let Some(replacement) = plan.replacing {
        return replace(replica, &mut plan, replacement).await;
    }
    // A new leader gives every voter one full period before judging it.
    if leading_since.elapsed() < replace_after {
        return Ok(());
    }
    let contacts = replica.peers.last_contact();
    // A planned manager outside the membership (the cluster was recovered
    // from one survivor, or the manager never joined) is looked at like a
    // silent voter: replaced only when its container is gone.
    let members: BTreeSet<u64> = replica
        .metrics()
        .membership_config
        .membership()
        .nodes()
        .map(|(id, _)| *id)
        .collect();
    let absent: Vec<u64> = plan
        .managers
        .iter()
        .map(|m| m.id)
        .filter(|id| !members.contains(id))
        .collect();
    for voter in replica.voters().into_iter().chain(absent) {
        if voter == replica.id {
            continue;
        }
        let silent = !members.contains(&voter)
            || contacts.get(&voter).is_none_or(|ago| *ago >= replace_after);
        if !silent {
            reported.remove(&voter);
            continue;
        }
        let Some(placement) = plan.managers.iter().find(|m| m.id == voter).cloned() else {
            if reported.insert(voter) {
                event(
                    replica,
                    format!("manager {voter}"),
                    "unreachable, but the manager plan does not place it: not replaced".into(),
                )
                .await;
            }
            continue;
        };
        let machine = plan.machine(&placement.machine);
        let engine = engine_of(machine)?;
        let gone = match engine.inspect(&plan.container_name(voter)).await {
            Ok(None) => true,
            Ok(Some(container)) => container.state != ContainerState::Running,
            // The engine does not answer: only the machine's provider can
            // tell a dead machine from one that is merely cut off.
            Err(e) if e.is_unreachable() => machine_gone(machine).await,
            Err(e) => return Err(e.into()),
        };
        if !gone {
            if reported.insert(voter) {
                tracing::warn!(
                    voter,
                    "manager unreachable but its container runs: cut off, not replaced"
                );
                event(
                    replica,
                    format!("manager {voter}"),
                    format!(
                        "unreachable for over {} s but its container runs: cut off, not replaced",
                        replace_after.as_secs()
                    ),
                )
                .await;
            }
            continue;
        }
        let new = next_id(replica, &plan);
        let replacement = Replacement { dead: voter, new };
        let machine = match &plan.spares {
            None => pick_machine(&plan, &placement.machine).await,
            Some(spares) => match free_machine(&plan, voter).await {
                Some(machine) => machine,
                None => {
                    let machine = new_machine(replica, &plan, spares, new).await?;
                    let name = machine.name.clone();
                    plan.machines.push(machine);
                    name
                }
            },
        };
        let mut new_placement = ManagerPlacement {
            id: new,
            machine,
            ..placement.clone()
        };
        free_ports(&plan, &mut new_placement, voter);
        plan.managers.push(new_placement);
        plan.replacing = Some(replacement);
        save(replica, &plan).await?;
        event(
            replica,
            format!("manager {voter}"),
            format!(
                "unreachable and its container is gone or stopped: replacing it with manager {new}"
            ),
        )
        .await;
        return replace(replica, &mut plan, replacement).await;
    }
    Ok(())
}

/// Whether the provider of `machine` reports it gone or stopped. A static
/// machine has no provider to ask: silence alone never condemns it.
async fn machine_gone(machine: &crate::bootstrap::cluster_file::Machine) -> bool {
    use crate::provider::{MachineStatus, ProviderConfig};
    let Some(path) = machine
        .provider_file
        .as_ref()
        .filter(|_| machine.is_provisioned())
    else {
        return false;
    };
    let provider = std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|text| ProviderConfig::parse(&text).map_err(|e| e.to_string()))
        .and_then(|config| crate::provider::from_config(&config).map_err(|e| e.to_string()));
    match provider {
        Ok(provider) => matches!(
            provider.status(&machine.name).await,
            Ok(MachineStatus::Missing | MachineStatus::Stopped | MachineStatus::Deallocated)
        ),
        Err(e) => {
            tracing::warn!(machine = %machine.name, error = %e, "cannot ask the machine's provider");
            false
        }
    }
}

/// Never reuses a Raft id: one above every id the plan, the membership or
/// the retired list has seen.
fn next_id(replica: &Replica, plan: &ClusterFile) -> u64 {
    let metrics = replica.metrics();
    let members = metrics
        .membership_config
        .membership()
        .nodes()
        .map(|(id, _)| *id)
        .collect::<Vec<_>>();
    plan.managers
        .iter()
        .map(|m| m.id)
        .chain(plan.retired.iter().copied())
        .chain(members)
        .max()
        .unwrap_or(0)
        + 1
}

/// A machine other than `dead_machine` whose engine answers, when the
/// plan has one; else the dead manager's own machine.
async fn pick_machine(plan: &ClusterFile, dead_machine: &str) -> String {
    for machine in plan.machines.iter().filter(|m| m.name != dead_machine) {
        let Ok(engine) = engine_of(machine) else {
            continue;
        };
        let answered = tokio::time::timeout(Duration::from_secs(2), engine.ping()).await;
        if matches!(answered, Ok(Ok(()))) {
            return machine.name.clone();
        }
    }
    dead_machine.to_string()
}

/// A machine of the plan whose engine answers and that hosts no manager
/// but `dead`, when there is one: managers on machines of their own, so
/// one lost machine costs one manager.
async fn free_machine(plan: &ClusterFile, dead: u64) -> Option<String> {
    let busy: BTreeSet<&str> = plan
        .managers
        .iter()
        .filter(|m| m.id != dead)
        .map(|m| m.machine.as_str())
        .collect();
    let dead_machine = plan
        .managers
        .iter()
        .find(|m| m.id == dead)
        .map(|m| m.machine.as_str());
    for machine in &plan.machines {
        if busy.contains(machine.name.as_str()) || Some(machine.name.as_str()) == dead_machine {
            continue;
        }
        let Ok(engine) = engine_of(machine) else {
            continue;
        };
        let answered = tokio::time::timeout(Duration::from_secs(2), engine.ping()).await;
        if matches!(answered, Ok(Ok(()))) {
            return Some(machine.name.clone());
        }
    }
    None
}

/// Default of [`crate::state::manager_template::Spares::engine_wait_ms`]:
/// a new VM installs its engine on first boot.
const ENGINE_WAIT: Duration = Duration::from_secs(300);

/// Asks the spares' provider for a machine for manager `new` and waits
/// for its engine. A machine whose engine does not answer in time is
/// deleted (where the provider can delete) before the error is returned:
/// the controller retries with backoff, and nothing is left behind.
async fn new_machine(
    replica: &Replica,
    plan: &ClusterFile,
    spares: &Spares,
    new: u64,
) -> Result<Machine, ManagersError> {
    use crate::provider::{MachineRequest, ProviderConfig};
    if !replica.holds_lease() {
        return Err(ManagersError::NoLease);
    }
    let failed = |reason: String| ManagersError::NewMachine(reason);
    let config = std::fs::read_to_string(&spares.provider_file)
        .map_err(|e| {
            failed(format!(
                "cannot read {}: {e}",
                spares.provider_file.display()
            ))
        })
        .and_then(|text| ProviderConfig::parse(&text).map_err(|e| failed(e.to_string())))?;
    let name = match &config {
        // A listed spare that the plan does not use yet.
        ProviderConfig::Static(listed) => listed
            .machines
            .iter()
            .map(|m| m.name.clone())
            .find(|name| !plan.machines.iter().any(|m| &m.name == name))
            .ok_or_else(|| {
                failed(format!(
                    "every spare machine in {} is in use",
                    spares.provider_file.display()
                ))
            })?,
        ProviderConfig::Azure(_) => format!("{}-manager-{new}", plan.cluster),
    };
    let provider = crate::provider::from_config(&config).map_err(|e| failed(e.to_string()))?;
    event(
        replica,
        format!("machine {name}"),
        format!(
            "no free machine for manager {new}: asking the {} provider for one",
            provider.kind()
        ),
    )
    .await;
    let request = MachineRequest {
        name: name.clone(),
        zone: None,
        labels: Default::default(),
        tags: [
            ("raftvisor".to_string(), "manager".to_string()),
            ("raftvisor-cluster".to_string(), plan.cluster.clone()),
        ]
        .into(),
    };
    let made = provider
        .provision(&request)
        .await
        .map_err(|e| failed(format!("provisioning {name}: {e}")))?;
    let machine = Machine {
        name: name.clone(),
        provider: provider.kind().to_string(),
        docker_endpoint: made.node.docker_endpoint.clone(),
        docker_tls: made.node.docker_tls.clone(),
        address: made.node.address.clone().unwrap_or_default(),
        provider_file: Some(spares.provider_file.clone()),
    };
    let wait = spares
        .engine_wait_ms
        .map_or(ENGINE_WAIT, Duration::from_millis);
    let deadline = Instant::now() + wait;
    let answered = loop {
        if let Ok(engine) = engine_of(&machine) {
            if matches!(
                tokio::time::timeout(Duration::from_secs(2), engine.ping()).await,
                Ok(Ok(()))
            ) {
                break true;
            }
        }
        if Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    if answered {
        event(
            replica,
            format!("machine {name}"),
            format!(
                "made by the {} provider for manager {new}; its engine answers",
                provider.kind()
            ),
        )
        .await;
        return Ok(machine);
    }
    let cleanup = match provider.delete(&made.id).await {
        Ok(()) => "deleted".to_string(),
        Err(e) => format!("not deleted ({e})"),
    };
    event(
        replica,
        format!("machine {name}"),
        format!(
            "its engine did not answer within {} s: the machine is {cleanup}; the replacement is retried",
            wait.as_secs()
        ),
    )
    .await;
    Err(failed(format!(
        "machine {name}'s engine did not answer within {} s ({cleanup})",
        wait.as_secs()
    )))
}

/// Keeps the dead manager's ports unless another manager on the new
/// machine holds them; then takes the next ports above every one in use.
fn free_ports(plan: &ClusterFile, placement: &mut ManagerPlacement, dead: u64) {
    let used: BTreeSet<u16> = plan
        .managers
        .iter()
        .filter(|m| m.machine == placement.machine && m.id != dead)
        .flat_map(|m| [m.api_port, m.peer_port, m.dns_port])
        .collect();
    let wanted = [placement.api_port, placement.peer_port, placement.dns_port];
    if wanted.iter().all(|p| !used.contains(p)) {
        return;
    }
    let top = used
        .iter()
        .chain(wanted.iter())
        .max()
        .copied()
        .unwrap_or(7000);
    placement.api_port = top + 1;
    placement.peer_port = top + 2;
    placement.dns_port = top + 3;
}

/// Starts the new manager, adds it, then removes the dead one; every step
/// can be repeated, so a new leader resumes wherever this one stopped.
async fn replace(
    replica: &Replica,
    plan: &mut ClusterFile,
    replacement: Replacement,
) -> Result<(), ManagersError> {
    let Replacement { dead, new } = replacement;
    // Starting and removing manager containers are engine actions: only a
    // leader with a fresh quorum takes them.
    if !replica.holds_lease() {
        return Err(ManagersError::NoLease);
    }
    let placement = plan
        .managers
        .iter()
        .find(|m| m.id == new)
        .cloned()
        .ok_or(ManagersError::NotPlaced { dead, new })?;
    let voters = replica.voters();
    if !voters.contains(&new) {
        ensure_certificate(plan, &placement)?;
        let engine = engine_of(plan.machine(&placement.machine))?;
        // The dead manager's container, if stopped, would hold its name and
        // could be started by mistake; its data stays on the machine.
        if let Some(dead_placement) = plan.managers.iter().find(|m| m.id == dead) {
            if let Ok(dead_engine) = engine_of(plan.machine(&dead_placement.machine)) {
                match dead_engine.remove(&plan.container_name(dead)).await {
                    Ok(()) | Err(RuntimeError::NotFound(_)) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, dead, "cannot remove the dead manager's container")
                    }
                }
            }
        }
        ensure_manager(plan, &placement, &engine, true).await?;
        let node = PeerNode {
            peer_addr: format!(
                "{}:{}",
                plan.machine(&placement.machine).address,
                placement.peer_port
            ),
            api_addr: plan.api_addr(&placement),
        };
        // Blocks until the learner has caught up, then promotes it.
        replica
            .add_member(new, node, true)
            .await
            .map_err(|source| ManagersError::Add { id: new, source })?;
        event(
            replica,
            format!("manager {new}"),
            format!("joined as a voter, replacing manager {dead}"),
        )
        .await;
    }
    if replica.voters().contains(&dead) {
        replica
            .remove_member(dead)
            .await
            .map_err(|source| ManagersError::Remove { id: dead, source })?;
    }
    plan.managers.retain(|m| m.id != dead);
    if !plan.retired.contains(&dead) {
        plan.retired.push(dead);
    }
    plan.replacing = None;
    save(replica, plan).await?;
    event(
        replica,
        format!("manager {dead}"),
        format!("replaced by manager {new} and removed"),
    )
    .await;
    tracing::info!(dead, new, "manager replaced");
    Ok(())
}
