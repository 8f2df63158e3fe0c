//! What the services' hooks are asked to do and left in the replicated
//! model: backups (`service backup`: one artifact per slot, kept as
//! archives on the managers, outside the log), restores (`service restore
//! --from`), and the verdict of each version's `test` hook, which holds a
//! rollout until it passed. Pure: a request is recorded here, the leader's
//! hooks controller runs it and records how it ended; this module only
//! keeps the book and refuses what cannot be run.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::Outcome;

/// The refusal code of a backup or restore asked for while another of the
/// same service runs.
pub const JOB_RUNNING: &str = "job_running";
/// The refusal code of a restore from a backup that did not finish.
pub const BACKUP_UNUSABLE: &str = "backup_unusable";

/// One slot's part of a backup: the archive holding what the slot's
/// `backup` hook wrote to its stdout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SlotBackup {
    pub slot: u32,
    /// The SHA-256 of the archive on the managers.
    pub archive: String,
    pub bytes: u64,
}

/// Where a backup or a restore stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    /// Asked for; the leader runs it (again, after a change of leader).
    Running,
    Done,
    Failed(String),
}

impl JobState {
    /// `running`, `done` or `failed`, and why it failed.
    pub fn describe(&self) -> (&'static str, Option<&str>) {
        match self {
            JobState::Running => ("running", None),
            JobState::Done => ("done", None),
            JobState::Failed(reason) => ("failed", Some(reason)),
        }
    }
}

/// One `service backup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    /// Chosen by the API (unique, sortable by time).
    pub id: String,
    pub namespace: String,
    pub service: String,
    /// The version of the service's spec when it was asked for.
    pub version: u64,
    /// When it was asked for (ms since the Unix epoch).
    pub created_ms: u64,
    pub state: JobState,
    /// When it ended (0 while running).
    pub finished_ms: u64,
    pub slots: Vec<SlotBackup>,
    /// The managers that keep its archives.
    pub keepers: BTreeSet<u64>,
}

/// One `service restore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreRecord {
    pub id: String,
    pub namespace: String,
    pub service: String,
    /// The backup whose slot artifacts are fed to the same slots.
    pub backup: String,
    pub created_ms: u64,
    pub state: JobState,
    pub finished_ms: u64,
}

/// The verdict of a version's `test` hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestVerdict {
    /// The version of the spec that was tested.
    pub version: u64,
    pub passed: bool,
    /// The instance it ran against.
    pub instance: String,
    /// The exit code, the duration and the tail of the output.
    pub summary: String,
    pub at_ms: u64,
}

/// The backups and test verdicts of every service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookBook {
    pub backups: BTreeMap<String, BackupRecord>,
    pub restores: BTreeMap<String, RestoreRecord>,
    /// The last verdict per service (namespace, name).
    pub verdicts: BTreeMap<(String, String), TestVerdict>,
    /// The generation of each instance whose start hook last succeeded.
    pub started: BTreeMap<String, u64>,
}

impl super::migrate::FirstVersion for HookBook {
    const VERSION_MARKER: &'static [u8] = b"HB01";
}

impl HookBook {
    /// Why a new job `id` of the service cannot be recorded: its id is
    /// taken, or a backup or restore of the service is running.
    fn refusal(&self, id: &str, namespace: &str, service: &str) -> Option<Outcome> {
        if self.backups.contains_key(id) || self.restores.contains_key(id) {
            return Some(Outcome::Rejected(format!("id {id} is taken")));
        }
        let of_service = |state: &JobState, ns: &str, name: &str| {
            *state == JobState::Running && ns == namespace && name == service
        };
        let backups = self
            .backups
            .values()
            .filter(|b| of_service(&b.state, &b.namespace, &b.service))
            .map(|b| format!("backup {}", b.id));
        let restores = self
            .restores
            .values()
            .filter(|r| of_service(&r.state, &r.namespace, &r.service))
            .map(|r| format!("restore {}", r.id));
        let running = backups.chain(restores).next()?;
        Some(Outcome::Refused {
            code: JOB_RUNNING.into(),
            message: format!("{running} of {namespace}/{service} is running; wait for it to end"),
        })
    }

    /// Records a backup asked for; refused while another backup or restore
    /// of the service runs, or when its id is taken.
    pub fn request_backup(&mut self, backup: BackupRecord) -> Outcome {
        if let Some(refusal) = self.refusal(&backup.id, &backup.namespace, &backup.service) {
            return refusal;
        }
        self.backups.insert(backup.id.clone(), backup);
        Outcome::Done
    }

    /// Records a restore asked for: its backup must have finished, and no
    /// other backup or restore of the service may be running.
    pub fn request_restore(&mut self, restore: RestoreRecord) -> Outcome {
        match self.backups.get(&restore.backup).map(|b| &b.state) {
            None => return Outcome::NotFound,
            Some(JobState::Done) => {}
            Some(_) => {
                return Outcome::Refused {
                    code: BACKUP_UNUSABLE.into(),
                    message: format!(
                        "backup {} did not finish; it cannot be restored",
                        restore.backup
                    ),
                }
            }
        }
        if let Some(refusal) = self.refusal(&restore.id, &restore.namespace, &restore.service) {
            return refusal;
        }
        self.restores.insert(restore.id.clone(), restore);
        Outcome::Done
    }

    /// Ends a running backup: its artifacts and keepers, or why it failed.
    pub fn finish_backup(
        &mut self,
        id: &str,
        result: &Result<(Vec<SlotBackup>, BTreeSet<u64>), String>,
        time_ms: u64,
    ) -> Outcome {
        let Some(backup) = self.backups.get_mut(id) else {
            return Outcome::NotFound;
        };
        if backup.state != JobState::Running {
            return Outcome::Rejected(format!("backup {id} already ended"));
        }
        backup.finished_ms = time_ms;
        match result {
            Ok((slots, keepers)) => {
                backup.state = JobState::Done;
                backup.slots = slots.clone();
                backup.keepers = keepers.clone();
            }
            Err(reason) => backup.state = JobState::Failed(reason.clone()),
        }
        Outcome::Done
    }

    /// Ends a running restore.
    pub fn finish_restore(
        &mut self,
        id: &str,
        result: &Result<(), String>,
        time_ms: u64,
    ) -> Outcome {
        let Some(restore) = self.restores.get_mut(id) else {
            return Outcome::NotFound;
        };
        if restore.state != JobState::Running {
            return Outcome::Rejected(format!("restore {id} already ended"));
        }
        restore.finished_ms = time_ms;
        restore.state = match result {
            Ok(()) => JobState::Done,
            Err(reason) => JobState::Failed(reason.clone()),
        };
        Outcome::Done
    }

    /// The ids of the backups and restores still to run.
    pub fn running(&self) -> impl Iterator<Item = &String> {
        let backups = self
            .backups
            .values()
            .filter(|b| b.state == JobState::Running)
            .map(|b| &b.id);
        let restores = self
            .restores
            .values()
            .filter(|r| r.state == JobState::Running)
            .map(|r| &r.id);
        backups.chain(restores)
    }

    /// Forgets a backup, unless it is running or a running restore reads it.
    pub fn remove_backup(&mut self, id: &str) -> Outcome {
        let Some(backup) = self.backups.get(id) else {
            return Outcome::NotFound;
        };
        let reading = self
            .restores
            .values()
            .find(|r| r.backup == id && r.state == JobState::Running);
        if backup.state == JobState::Running || reading.is_some() {
            return Outcome::Refused {
                code: JOB_RUNNING.into(),
                message: format!("backup {id} is in use by a running backup or restore"),
            };
        }
        self.backups.remove(id);
        Outcome::Deleted
    }

    pub fn set_backup_keepers(&mut self, id: &str, keepers: &BTreeSet<u64>) -> Outcome {
        match self.backups.get_mut(id) {
            Some(backup) => {
                backup.keepers = keepers.clone();
                Outcome::Done
            }
            None => Outcome::NotFound,
        }
    }

    /// Records the verdict of `version`'s test. A verdict of an older
    /// version than the one recorded is late and dropped.
    pub fn record_verdict(&mut self, namespace: &str, service: &str, verdict: &TestVerdict) {
        let key = (namespace.to_string(), service.to_string());
        if self
            .verdicts
            .get(&key)
            .is_some_and(|known| known.version > verdict.version)
        {
            return;
        }
        self.verdicts.insert(key, verdict.clone());
    }

    /// The verdict of `version`'s test, if it ran.
    pub fn verdict(&self, namespace: &str, service: &str, version: u64) -> Option<&TestVerdict> {
        self.verdicts
            .get(&(namespace.to_string(), service.to_string()))
            .filter(|v| v.version == version)
    }

    /// The backups of one service, oldest first.
    pub fn backups_of<'a>(
        &'a self,
        namespace: &'a str,
        service: &'a str,
    ) -> impl Iterator<Item = &'a BackupRecord> + 'a {
        self.backups
            .values()
            .filter(move |b| b.namespace == namespace && b.service == service)
    }

    /// The archives every backup names.
    pub fn archives(&self) -> impl Iterator<Item = &str> {
        self.backups
            .values()
            .flat_map(|b| b.slots.iter().map(|s| s.archive.as_str()))
    }

    /// Records that the start hook of `instance`'s `generation` succeeded.
    pub fn start_hook_ran(&mut self, instance: &str, generation: u64) {
        let known = self.started.entry(instance.to_string()).or_default();
        *known = (*known).max(generation);
    }

    /// Whether the start hook of `instance`'s `generation` succeeded.
    pub fn started(&self, instance: &str, generation: u64) -> bool {
        self.started.get(instance) == Some(&generation)
    }

    /// A deleted service takes its verdict with it; its backups stay until
    /// removed (they are how its data comes back).
    pub fn service_deleted(&mut self, namespace: &str, service: &str) {
        self.verdicts
            .remove(&(namespace.to_string(), service.to_string()));
    }

    /// An instance forgotten takes its start record with it.
    pub fn instance_removed(&mut self, instance: &str) {
        self.started.remove(instance);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(version: u64, passed: bool) -> TestVerdict {
        TestVerdict {
            version,
            passed,
            instance: "a.b.0".into(),
            summary: String::new(),
            at_ms: 1,
        }
    }

    #[test]
    fn a_late_verdict_of_an_older_version_is_dropped() {
        let mut book = HookBook::default();
        book.record_verdict("a", "b", &verdict(3, false));
        book.record_verdict("a", "b", &verdict(2, true));
        assert_eq!(book.verdict("a", "b", 3).map(|v| v.passed), Some(false));
        assert!(book.verdict("a", "b", 2).is_none());
        book.record_verdict("a", "b", &verdict(4, true));
        assert!(
            book.verdict("a", "b", 3).is_none(),
            "a new version has no verdict of the old"
        );
        book.service_deleted("a", "b");
        assert!(book.verdict("a", "b", 4).is_none());
    }

    #[test]
    fn a_start_hook_is_recorded_per_generation() {
        let mut book = HookBook::default();
        book.start_hook_ran("a.b.0", 2);
        assert!(book.started("a.b.0", 2));
        assert!(!book.started("a.b.0", 3), "a new generation starts again");
        book.start_hook_ran("a.b.0", 1);
        assert!(
            book.started("a.b.0", 2),
            "a late record of an older generation is dropped"
        );
        book.instance_removed("a.b.0");
        assert!(!book.started("a.b.0", 2));
    }

    fn backup(id: &str) -> BackupRecord {
        BackupRecord {
            id: id.into(),
            namespace: "a".into(),
            service: "b".into(),
            version: 1,
            created_ms: 5,
            state: JobState::Running,
            finished_ms: 0,
            slots: Vec::new(),
            keepers: BTreeSet::new(),
        }
    }

    fn restore(id: &str, from: &str) -> RestoreRecord {
        RestoreRecord {
            id: id.into(),
            namespace: "a".into(),
            service: "b".into(),
            backup: from.into(),
            created_ms: 6,
            state: JobState::Running,
            finished_ms: 0,
        }
    }

    fn slot(slot: u32, archive: &str) -> SlotBackup {
        SlotBackup {
            slot,
            archive: archive.into(),
            bytes: 1,
        }
    }

    #[test]
    fn one_backup_or_restore_of_a_service_runs_at_a_time() {
        let mut book = HookBook::default();
        assert_eq!(book.request_backup(backup("k1")), Outcome::Done);
        assert!(matches!(
            book.request_backup(backup("k1")),
            Outcome::Rejected(_)
        ));
        assert!(
            matches!(book.request_backup(backup("k2")), Outcome::Refused { ref code, .. } if code == JOB_RUNNING)
        );
        assert_eq!(book.running().collect::<Vec<_>>(), ["k1"]);
        // Not restorable before it ended, nor a backup that is not there.
        assert!(matches!(
            book.request_restore(restore("r1", "k1")),
            Outcome::Refused { ref code, .. } if code == BACKUP_UNUSABLE
        ));
        assert_eq!(book.request_restore(restore("r1", "zz")), Outcome::NotFound);
        let done = Ok((vec![slot(0, "x"), slot(1, "y")], BTreeSet::from([1, 2])));
        assert_eq!(book.finish_backup("k1", &done, 9), Outcome::Done);
        assert!(matches!(
            book.finish_backup("k1", &done, 9),
            Outcome::Rejected(_)
        ));
        assert_eq!(book.archives().collect::<Vec<_>>(), ["x", "y"]);
        assert_eq!(book.backups["k1"].finished_ms, 9);
        // A restore reads it: it is neither removed nor joined by another job.
        assert_eq!(book.request_restore(restore("r1", "k1")), Outcome::Done);
        assert!(matches!(book.remove_backup("k1"), Outcome::Refused { .. }));
        assert!(matches!(
            book.request_backup(backup("k3")),
            Outcome::Refused { .. }
        ));
        assert_eq!(
            book.finish_restore("r1", &Err("exit 1".into()), 10),
            Outcome::Done
        );
        assert_eq!(book.restores["r1"].state, JobState::Failed("exit 1".into()));
        assert_eq!(book.running().count(), 0);
        assert_eq!(book.backups_of("a", "b").count(), 1);
        assert_eq!(
            book.set_backup_keepers("k1", &BTreeSet::from([2, 3])),
            Outcome::Done
        );
        assert_eq!(book.remove_backup("k1"), Outcome::Deleted);
        assert_eq!(book.remove_backup("k1"), Outcome::NotFound);
    }
}
