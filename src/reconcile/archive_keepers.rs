//! Keeps every image archive the cluster keeps on two managers (one in a
//! one-manager cluster): a controller with one key (the cluster), run
//! every [`PERIOD`] and when the kept images or the managers change. When
//! a manager that kept an archive is no longer a member, the leader takes
//! a copy itself (from a keeper that is left) and, if that is not enough,
//! sends one to another member, then records the new keepers through Raft.
//! It never deletes an archive (each manager sweeps what no image names).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::controller::{Action, Limits, OnStop, Reason, Reconciler};
use crate::replica::Replica;
use crate::state::Command;

/// How often the keepers are looked at when nothing wakes the controller.
const PERIOD: Duration = Duration::from_secs(30);

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
        let short: Vec<_> = self.replica.sm.read(|s| {
            s.images
                .stored
                .values()
                .filter(|image| {
                    image.keepers.intersection(&members).count() < wanted
                        || !image.keepers.is_subset(&members)
                })
                .map(|image| {
                    (
                        image.name.clone(),
                        image.id.clone(),
                        image.archive.clone(),
                        image.keepers.clone(),
                    )
                })
                .collect()
        });
        for (name, id, archive, keepers) in short {
            let live: BTreeSet<u64> = keepers.intersection(&members).copied().collect();
            let keepers = if live.len() < wanted {
                match self.restore(&archive, &live, &members, wanted).await {
                    Ok(keepers) => keepers,
                    Err(reason) => {
                        tracing::warn!(image = %name, %reason, "cannot restore the keepers of an image archive");
                        continue;
                    }
                }
            } else {
                live
            };
            tracing::info!(image = %name, ?keepers, "image archive keepers restored");
            let _ = self
                .replica
                .write_as_leader(Command::SetImageKeepers { name, id, keepers })
                .await;
        }
        Ok(Action::RequeueAfter(PERIOD))
    }
}
