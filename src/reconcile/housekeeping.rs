//! Housekeeping, a controller on the [`super::controller`] runtime with
//! one key (the cluster), run by every replica whether or not it
//! supervises engines: while this replica leads, the cluster has its id
//! and its first admin token, and every member of the Raft membership is
//! recorded as a manager with its current addresses
//! ([`Replica`]'s `ensure_identity_and_managers`), and the cluster version
//! is raised once every member speaks a newer peer protocol
//! ([`ensure_cluster_version`]). It runs when a term starts and whenever
//! the membership changes, and every [`VERSION_LOOK_EVERY`] while the
//! cluster version is below this build's protocol (members announce theirs
//! as they are upgraded, without a membership change); a failed attempt
//! (a write that did not commit) is retried shortly. It never touches an
//! engine.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::ServerState;
use tokio_util::sync::CancellationToken;

use super::controller::{self, Action, Counts, Limits, OnStop, Reason, ReconcileError, Reconciler};
use super::watchdog::Loop;
use crate::replica::first_token::Pending;
use crate::replica::{ensure_cluster_version, ensure_identity_and_managers, OpError, Replica};

/// Pause before a failed attempt is made again.
const RETRY_AFTER: Duration = Duration::from_millis(200);

/// How often the members' protocols are looked at while the cluster
/// version is below this build's.
pub const VERSION_LOOK_EVERY: Duration = Duration::from_secs(1);

/// The housekeeping of one replica, kept across its terms.
pub struct Housekeeping {
    replica: Arc<Replica>,
    /// A first token proposed in an earlier attempt whose fate is unknown.
    pending_token: Mutex<Option<Pending>>,
}

#[async_trait::async_trait]
impl Reconciler for Housekeeping {
    type Key = ();
    type Error = OpError;

    fn name(&self) -> &'static str {
        "housekeeping"
    }

    fn limits(&self) -> Limits {
        Limits {
            // A read barrier and a few writes.
            timeout: self.replica.request_timeout() * 4,
            concurrency: 1,
            resync: None,
            on_stop: OnStop::Abort,
        }
    }

    fn keys(&self) -> Vec<()> {
        vec![()]
    }

    async fn reconcile(&self, _: &(), _: Reason) -> Result<Action, OpError> {
        // One key never runs twice at once: the token is this run's alone.
        let mut pending = self
            .pending_token
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let result = ensure_identity_and_managers(&self.replica, &mut pending).await;
        *self.pending_token.lock().unwrap_or_else(|e| e.into_inner()) = pending;
        result?;
        if ensure_cluster_version(&self.replica).await? {
            Ok(Action::AwaitChange)
        } else {
            Ok(Action::RequeueAfter(VERSION_LOOK_EVERY))
        }
    }

    fn error_policy(&self, _: &(), error: &ReconcileError<OpError>, _: u32) -> Action {
        tracing::debug!(%error, "housekeeping write failed; retrying");
        Action::RequeueAfter(RETRY_AFTER)
    }
}

/// Runs housekeeping whenever this replica leads, until `shutdown`.
pub async fn run(replica: Arc<Replica>, shutdown: CancellationToken) {
    let housekeeping = Arc::new(Housekeeping {
        replica: replica.clone(),
        pending_token: Mutex::new(None),
    });
    let mut terms = super::LeadingTerms::new(&replica);
    while let Some(term) = terms.next(&shutdown).await {
        lead(&housekeeping, term, &mut terms.metrics, &shutdown).await;
    }
}

/// Housekeeping for one term: once at its start, then on every change of
/// the membership.
async fn lead(
    housekeeping: &Arc<Housekeeping>,
    term: u64,
    metrics: &mut tokio::sync::watch::Receiver<crate::raft::RaftMetrics>,
    shutdown: &CancellationToken,
) {
    let replica = &housekeeping.replica;
    let token = shutdown.child_token();
    let (trigger, triggers) = controller::channel();
    // Writes need a quorum anyway: housekeeping is never paused.
    let (_active, active) = tokio::sync::watch::channel(true);
    let task = tokio::spawn(controller::run(
        housekeeping.clone(),
        triggers,
        active,
        replica.watchdog.reporter(Loop::Housekeeping, term),
        Counts::default(),
        token.clone(),
    ));
    let membership = |m: &crate::raft::RaftMetrics| m.membership_config.log_id().map(|l| l.index);
    let mut seen = membership(&metrics.borrow());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = metrics.changed() => {
                if changed.is_err() {
                    break;
                }
                let m = metrics.borrow_and_update();
                if m.state != ServerState::Leader || m.current_term != term {
                    break;
                }
                let now = membership(&m);
                if now != seen {
                    seen = now;
                    trigger.wake((), Reason::Commit);
                }
            }
        }
    }
    token.cancel();
    let _ = task.await;
}
