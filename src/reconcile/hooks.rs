//! The hooks controller: runs the backups and restores asked for
//! ([`crate::state::hooks`]), the start hook of each new container and
//! each version's `test` hook. Keyed by job id or by service. A backup runs the backup hook in every slot, keeps
//! each slot's stdout as an archive on two managers and records the
//! backup; a restore feeds each slot's archive to the restore hook of the
//! same slot. A test runs once per version of a spec with a test hook,
//! against its first running instance of that version, and records the
//! verdict the rollout waits for. A start hook runs once per instance
//! generation: inside its container once it runs, or (`oneshot`) before
//! the container is made, which the service controller waits for; a
//! failed one is tried again with a backoff. A job cut short (a new
//! leader) runs again from its start. It never changes a service or its
//! instances (the stop hook is run by the service controller, within the
//! stop grace period).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;

use super::controller::{Action, KeyName, Limits, OnStop, Reason, Reconciler};
use super::engines::Engines;
use super::hook_run::{run_hook, HookCall};
use crate::replica::archives::MAX_ARCHIVE_BYTES;
use crate::replica::Replica;
use crate::runtime::{RuntimeError, StdoutTo};
use crate::state::hooks::{JobState, SlotBackup, TestVerdict};
use crate::state::{Command, HookKind, HookRun, Instance, InstanceState, Service};

/// Chunks of a backup's artifact in flight between the hook and the store.
const ARTIFACT_CHUNKS: usize = 16;

/// How soon a test that could not run (no running instance of the version
/// yet, an engine error) is tried again.
const TEST_RETRY: Duration = Duration::from_secs(3);

/// What the controller looks at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HookKey {
    /// A backup or restore by id.
    Job(String),
    /// The start hooks of a service's instances and the test of its
    /// current version.
    Service(String, String),
}

impl KeyName for HookKey {
    fn key_name(&self) -> String {
        match self {
            HookKey::Job(id) => format!("job {id}"),
            HookKey::Service(namespace, name) => format!("{namespace}/{name}"),
        }
    }
}

/// The hook runs of one term.
pub struct Hooks {
    replica: Arc<Replica>,
    engines: Engines,
    /// Start hooks that failed, by instance and generation: how often, and
    /// when they are tried again.
    start_failures: Mutex<HashMap<(String, u64), (u32, Instant)>>,
}

/// A job as read from the state.
enum Job {
    Backup {
        service: Service,
        instances: Vec<Instance>,
    },
    Restore {
        service: Service,
        instances: Vec<Instance>,
        slots: Vec<SlotBackup>,
        keepers: BTreeSet<u64>,
    },
}

impl Hooks {
    pub fn new(replica: Arc<Replica>, engines: Engines) -> Hooks {
        Hooks {
            replica,
            engines,
            start_failures: Mutex::default(),
        }
    }

    /// The running job `id`, or why it cannot run (it then fails).
    fn job(&self, id: &str) -> Option<Result<Job, String>> {
        self.replica.sm.read(|s| {
            let service_of = |namespace: &str, name: &str| {
                let service = s
                    .services
                    .get(&(namespace.to_string(), name.to_string()))
                    .cloned()
                    .ok_or_else(|| format!("service {namespace}/{name} is gone"))?;
                let instances = s
                    .service_instances(namespace, name)
                    .into_iter()
                    .cloned()
                    .collect::<Vec<_>>();
                Ok::<_, String>((service, instances))
            };
            if let Some(backup) = s.hooks.backups.get(id) {
                if backup.state != JobState::Running {
                    return None;
                }
                return Some(
                    service_of(&backup.namespace, &backup.service)
                        .map(|(service, instances)| Job::Backup { service, instances }),
                );
            }
            let restore = s.hooks.restores.get(id)?;
            if restore.state != JobState::Running {
                return None;
            }
            Some(service_of(&restore.namespace, &restore.service).and_then(
                |(service, instances)| {
                    let backup = s
                        .hooks
                        .backups
                        .get(&restore.backup)
                        .ok_or_else(|| format!("backup {} is gone", restore.backup))?;
                    Ok(Job::Restore {
                        service,
                        instances,
                        slots: backup.slots.clone(),
                        keepers: backup.keepers.clone(),
                    })
                },
            ))
        })
    }

    /// Runs the backup hook in every slot; each slot's artifact, kept.
    async fn backup(
        &self,
        service: &Service,
        instances: &[Instance],
    ) -> Result<(Vec<SlotBackup>, BTreeSet<u64>), String> {
        let mut slots = Vec::new();
        let mut keepers = BTreeSet::from([self.replica.id]);
        for slot in 0..service.spec.replicas {
            let instance = slot_instance(service, instances, slot)?;
            // The hook's stdout streams into the archive store as it comes.
            let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(ARTIFACT_CHUNKS);
            let call = HookCall {
                stdout: StdoutTo::Send(sender),
                ..HookCall::on_instance(HookKind::Backup, service, instance)
            };
            let artifact = Box::pin(futures::stream::unfold(receiver, |mut receiver| async {
                let chunk = receiver.recv().await?;
                Some((Ok::<_, std::io::Error>(chunk), receiver))
            }));
            let (ran, stored) = tokio::join!(
                run_hook(&self.replica, &self.engines, call),
                self.replica
                    .archives
                    .store(artifact, MAX_ARCHIVE_BYTES, None),
            );
            // A store that stopped reading (too large, a full disk) is why
            // the hook could not write on: its reason comes first.
            let stored = stored.map_err(|e| format!("slot {slot}: keeping its artifact: {e}"))?;
            ran.map_err(|e| format!("slot {slot}: {e}"))?;
            // Kept on a second manager before the backup is recorded, so
            // losing this one loses no backup.
            if let Some(peer) = self
                .replica
                .keep_archive_elsewhere(&stored)
                .await
                .map_err(|e| format!("slot {slot}: copying its artifact to a manager: {e}"))?
            {
                keepers.insert(peer);
            }
            slots.push(SlotBackup {
                slot,
                archive: stored.sha256,
                bytes: stored.size,
            });
        }
        Ok((slots, keepers))
    }

    /// Feeds each slot's artifact to the restore hook of the same slot.
    async fn restore(
        &self,
        service: &Service,
        instances: &[Instance],
        slots: &[SlotBackup],
        keepers: &BTreeSet<u64>,
    ) -> Result<(), String> {
        for part in slots {
            let instance = slot_instance(service, instances, part.slot)?;
            let path = self
                .replica
                .archive_from(&part.archive, keepers)
                .await
                .map_err(|e| format!("slot {}: the backup's artifact: {e}", part.slot))?;
            let file = tokio::fs::File::open(&path)
                .await
                .map_err(|e| format!("slot {}: reading {}: {e}", part.slot, path.display()))?;
            let artifact = tokio_util::io::ReaderStream::new(file)
                .map(|chunk| {
                    chunk.map_err(|e| RuntimeError::Engine(format!("reading the artifact: {e}")))
                })
                .boxed();
            let call = HookCall {
                stdin: Some(artifact),
                ..HookCall::on_instance(HookKind::Restore, service, instance)
            };
            run_hook(&self.replica, &self.engines, call)
                .await
                .map_err(|e| format!("slot {}: {e}", part.slot))?;
        }
        Ok(())
    }

    async fn run_job(&self, id: &str) -> Action {
        let Some(job) = self.job(id) else {
            return Action::AwaitChange;
        };
        let command = match job {
            Ok(Job::Backup { service, instances }) => Command::FinishBackup {
                id: id.to_string(),
                result: self.backup(&service, &instances).await,
            },
            Ok(Job::Restore {
                service,
                instances,
                slots,
                keepers,
            }) => Command::FinishRestore {
                id: id.to_string(),
                result: self.restore(&service, &instances, &slots, &keepers).await,
            },
            Err(reason) => {
                let backup = self.replica.sm.read(|s| s.hooks.backups.contains_key(id));
                if backup {
                    Command::FinishBackup {
                        id: id.to_string(),
                        result: Err(reason),
                    }
                } else {
                    Command::FinishRestore {
                        id: id.to_string(),
                        result: Err(reason),
                    }
                }
            }
        };
        match self.replica.write_as_leader(command).await {
            Ok(_) => Action::AwaitChange,
            Err(e) => {
                tracing::warn!(job = id, error = %e, "cannot record how a job ended");
                Action::RequeueAfter(TEST_RETRY)
            }
        }
    }

    /// Runs the start hooks due for the service's instances: an `instance`
    /// hook in each running container of a generation it has not run for,
    /// a `oneshot` hook for each instance whose container is not made yet.
    /// The earliest retry of a failed one, if any.
    async fn run_start_hooks(&self, namespace: &str, name: &str) -> Option<Instant> {
        let due = self.replica.sm.read(|s| {
            let service = s.services.get(&(namespace.to_string(), name.to_string()))?;
            let hook = service.spec.hooks.start.as_ref()?;
            let due: Vec<Instance> = s
                .service_instances(namespace, name)
                .into_iter()
                .filter(|i| i.slot < service.spec.replicas && i.node.is_some())
                .filter(|i| !s.hooks.started(&i.id, i.generation))
                .filter(|i| match hook.run {
                    HookRun::Instance => {
                        i.state == InstanceState::Running && i.container_id.is_some()
                    }
                    HookRun::Oneshot => i.container_id.is_none(),
                })
                .cloned()
                .collect();
            Some((service.clone(), due))
        });
        let (service, due) = due?;
        let mut retry: Option<Instant> = None;
        for instance in due {
            let key = (instance.id.clone(), instance.generation);
            let waiting = self
                .start_failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
                .map(|(_, at)| *at)
                .filter(|at| *at > Instant::now());
            if let Some(at) = waiting {
                retry = Some(retry.map_or(at, |r| r.min(at)));
                continue;
            }
            let call = HookCall::on_instance(HookKind::Start, &service, &instance);
            match run_hook(&self.replica, &self.engines, call).await {
                Ok(_) => {
                    self.start_failures
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&key);
                    let command = Command::StartHookRan {
                        instance: instance.id.clone(),
                        generation: instance.generation,
                    };
                    if let Err(e) = self.replica.write_as_leader(command).await {
                        tracing::warn!(error = %e, "cannot record a start hook");
                    }
                }
                Err(failure) => {
                    let mut failures = self
                        .start_failures
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    let entry = failures.entry(key).or_insert((0, Instant::now()));
                    entry.0 += 1;
                    entry.1 = Instant::now() + super::backoff::error_delay(entry.0);
                    tracing::info!(instance = %instance.id, reason = %failure, "start hook failed");
                    retry = Some(retry.map_or(entry.1, |r| r.min(entry.1)));
                }
            }
        }
        retry
    }

    async fn run_test(&self, namespace: &str, name: &str) -> Action {
        let target = self.replica.sm.read(|s| {
            let service = s.services.get(&(namespace.to_string(), name.to_string()))?;
            service.spec.hooks.test.as_ref()?;
            if s.hooks.verdict(namespace, name, service.version).is_some() {
                return None;
            }
            let template = s.template_of(service);
            let instance = s
                .service_instances(namespace, name)
                .into_iter()
                // A surge slot runs the new version first.
                .filter(|i| i.slot < service.spec.replicas + service.spec.update.max_surge)
                .find(|i| i.state == InstanceState::Running && i.template == template)
                .cloned();
            Some((service.clone(), instance))
        });
        let Some((service, instance)) = target else {
            return Action::AwaitChange;
        };
        // No instance of this version runs yet: its start wakes this key.
        let Some(instance) = instance else {
            return Action::AwaitChange;
        };
        let call = HookCall::on_instance(HookKind::Test, &service, &instance);
        let (passed, summary) = match run_hook(&self.replica, &self.engines, call).await {
            Ok(_) => (true, "exited 0".to_string()),
            Err(failure) if failure.exit_code.is_some() => (false, failure.reason),
            Err(failure) => {
                tracing::info!(service = %format!("{namespace}/{name}"), reason = %failure, "the test hook could not run; trying again");
                return Action::RequeueAfter(TEST_RETRY);
            }
        };
        let command = Command::RecordTestVerdict {
            namespace: namespace.to_string(),
            service: name.to_string(),
            verdict: TestVerdict {
                version: service.version,
                passed,
                instance: instance.id.clone(),
                summary,
                at_ms: crate::replica::now_ms(),
            },
        };
        match self.replica.write_as_leader(command).await {
            Ok(_) => Action::AwaitChange,
            Err(e) => {
                tracing::warn!(error = %e, "cannot record a test verdict");
                Action::RequeueAfter(TEST_RETRY)
            }
        }
    }
}

/// The instance of `slot`, placed on a node.
fn slot_instance<'a>(
    service: &Service,
    instances: &'a [Instance],
    slot: u32,
) -> Result<&'a Instance, String> {
    instances
        .iter()
        .find(|i| i.slot == slot && i.node.is_some())
        .ok_or_else(|| {
            format!(
                "slot {slot} of {}/{} has no instance on a node",
                service.namespace, service.name
            )
        })
}

#[async_trait::async_trait]
impl Reconciler for Hooks {
    type Key = HookKey;
    type Error = std::convert::Infallible;

    fn name(&self) -> &'static str {
        "hooks"
    }

    fn limits(&self) -> Limits {
        Limits {
            // A job runs one hook per slot, each within its own timeout.
            timeout: Duration::from_secs(6 * 3600),
            concurrency: 4,
            resync: Some(Duration::from_secs(60)),
            on_stop: OnStop::Abort,
        }
    }

    fn keys(&self) -> Vec<HookKey> {
        self.replica.sm.read(|s| {
            let jobs = s.hooks.running().map(|id| HookKey::Job(id.clone()));
            let tests = s
                .services
                .values()
                .filter(|service| {
                    service.spec.hooks.test.is_some()
                        && s.hooks
                            .verdict(&service.namespace, &service.name, service.version)
                            .is_none()
                })
                .map(|service| HookKey::Service(service.namespace.clone(), service.name.clone()));
            let starts = s
                .services
                .values()
                .filter(|service| service.spec.hooks.start.is_some())
                .map(|service| HookKey::Service(service.namespace.clone(), service.name.clone()));
            let keys: BTreeSet<HookKey> = jobs.chain(tests).chain(starts).collect();
            keys.into_iter().collect()
        })
    }

    async fn reconcile(&self, key: &HookKey, _: Reason) -> Result<Action, Self::Error> {
        Ok(match key {
            HookKey::Job(id) => self.run_job(id).await,
            HookKey::Service(namespace, name) => {
                let retry = self.run_start_hooks(namespace, name).await;
                match (self.run_test(namespace, name).await, retry) {
                    (Action::AwaitChange, Some(at)) => {
                        Action::RequeueAfter(at.saturating_duration_since(Instant::now()))
                    }
                    (Action::RequeueAfter(after), Some(at)) => Action::RequeueAfter(
                        after.min(at.saturating_duration_since(Instant::now())),
                    ),
                    (action, _) => action,
                }
            }
        })
    }
}
