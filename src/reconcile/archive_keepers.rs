//! Keeps every archive the cluster keeps (images imported or built, and
//! backups' artifacts) on two managers (one in a one-manager cluster): a controller with one key (the cluster), run
//! every [`PERIOD`] and when the kept images or the managers change. When
//! a manager that kept an archive is no longer a member, the leader takes
//! a copy itself (from a keeper that is left) and, if that is not enough,
//! sends one to another member, then records the new keepers through Raft.
//! It never deletes an archive (each manager sweeps what nothing names).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::controller::{Action, Limits, OnStop, Reason, Reconciler};
use crate::replica::Replica;
use crate::state::Command;

/// How often the keepers are looked at when nothing wakes the controller.
const PERIOD: Duration = Duration::from_secs(30);

/// What keeps archives on the managers.
enum Owner {
    Image { name: String, id: String },
    Backup(String),
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::Image { name, .. } => write!(f, "image {name}"),
            Owner::Backup(id) => write!(f, "backup {id}"),
        }
    }
}

/// The archives of one image or backup and the managers that keep them.
struct Kept {
    owner: Owner,
    archives: Vec<String>,
    keepers: BTreeSet<u64>,
}

/// The archive keeping of one term.
pub struct ArchiveKeepers {
    replica: Arc<Replica>,
}

impl ArchiveKeepers {
    pub fn new(replica: Arc<Replica>) -> ArchiveKeepers {
        ArchiveKeepers { replica }
    }

    /// Brings the keepers of one image back to `wanted` members; the
    /// keepers it has then.
    async fn restore(
        &self,
        archive: &str,
        live: &BTreeSet<u64>,
        members: &BTreeSet<u64>,
        wanted: usize,
    ) -> Result<BTreeSet<u64>, String> {
        let mut keepers = live.clone();
        let path = self.replica.archive_from(archive, live).await?;
        keepers.insert(self.replica.id);
        if keepers.len() < wanted {
            let others: Vec<u64> = members.difference(&keepers).copied().collect();
            let stored = crate::replica::archives::Stored {
                sha256: archive.to_string(),
                size: 0,
                path,
            };
            if let Some(id) = self.replica.keep_archive_on(&stored, &others).await? {
                keepers.insert(id);
            }
        }
        Ok(keepers)
    }
}

#[async_trait::async_trait]
impl Reconciler for ArchiveKeepers {
    type Key = ();
    type Error = std::convert::Infallible;

    fn name(&self) -> &'static str {
        "archive-keepers"
    }

    fn limits(&self) -> Limits {
        Limits {
            timeout: crate::replica::ARCHIVE_TRANSFER_TIMEOUT + Duration::from_secs(30),
            concurrency: 1,
            resync: None,
            on_stop: OnStop::Abort,
        }
    }

    fn keys(&self) -> Vec<()> {
        vec![()]
    }

    async fn reconcile(&self, _: &(), _: Reason) -> Result<Action, Self::Error> {
        let members: BTreeSet<u64> = self
            .replica
            .metrics()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect();
        let wanted = members.len().min(2);
        let short: Vec<Kept> = self.replica.sm.read(|s| {
            let images = s.images.stored.values().map(|image| Kept {
                owner: Owner::Image {
                    name: image.name.clone(),
                    id: image.id.clone(),
                },
                archives: vec![image.archive.clone()],
                keepers: image.keepers.clone(),
            });
            let backups = s
                .hooks
                .backups
                .values()
                .filter(|b| b.state == crate::state::hooks::JobState::Done)
                .map(|backup| Kept {
                    owner: Owner::Backup(backup.id.clone()),
                    archives: backup.slots.iter().map(|s| s.archive.clone()).collect(),
                    keepers: backup.keepers.clone(),
                });
            images
                .chain(backups)
                .filter(|kept| {
                    kept.keepers.intersection(&members).count() < wanted
                        || !kept.keepers.is_subset(&members)
                })
                .collect()
        });
        for kept in short {
            let live: BTreeSet<u64> = kept.keepers.intersection(&members).copied().collect();
            let keepers = if live.len() < wanted {
                let mut restored: Option<BTreeSet<u64>> = None;
                let mut failed = None;
                for archive in &kept.archives {
                    match self.restore(archive, &live, &members, wanted).await {
                        // Every archive of a backup is kept by the keepers
                        // of all of them.
                        Ok(keepers) => {
                            restored = Some(match restored {
                                Some(so_far) => so_far.intersection(&keepers).copied().collect(),
                                None => keepers,
                            })
                        }
                        Err(reason) => {
                            failed = Some(reason);
                            break;
                        }
                    }
                }
                match (failed, restored) {
                    (None, Some(keepers)) => keepers,
                    (None, None) => live,
                    (Some(reason), _) => {
                        tracing::warn!(archive_of = %kept.owner, %reason, "cannot restore the keepers of an archive");
                        continue;
                    }
                }
            } else {
                live
            };
            tracing::info!(archive_of = %kept.owner, ?keepers, "archive keepers restored");
            let command = match kept.owner {
                Owner::Image { name, id } => Command::SetImageKeepers { name, id, keepers },
                Owner::Backup(id) => Command::SetBackupKeepers { id, keepers },
            };
            let _ = self.replica.write_as_leader(command).await;
        }
        Ok(Action::RequeueAfter(PERIOD))
    }
}
