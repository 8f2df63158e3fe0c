//! Group commit on the leader: concurrent writes are gathered into one
//! [`Batch`] per Raft entry, so they share one append and one fsync on every
//! replica (openraft 0.9 writes one entry per `client_write`).
//!
//! A bounded number of batches is in flight at once; while the pipeline is
//! full, new writes wait in the queue and the next batch takes all of them
//! — up to [`MAX_BATCH_BYTES`], so every entry fits in one append far
//! below the peer server's body limit. Writes queued or in flight are
//! bounded in bytes too: beyond [`MAX_QUEUED_BYTES`] a write is refused as
//! overloaded (HTTP 429) at once instead of waiting for a timeout.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::messages::LeaderError;
use crate::raft::Raft;
use crate::state::{Applied, Batch, Request};

/// Most requests in one entry.
const MAX_BATCH: usize = 512;
/// Most bytes of requests in one entry (one request larger than this
/// makes an entry of its own).
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Most bytes of writes queued or in flight on the leader.
pub const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;
/// Batches appended but not yet committed.
const MAX_IN_FLIGHT: usize = 4;

struct Pending {
    request: Request,
    bytes: usize,
    answer: oneshot::Sender<Result<Applied, LeaderError>>,
}

/// Handle to the batching task.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Pending>,
    /// Bytes of the writes accepted and not yet answered.
    queued: Arc<AtomicUsize>,
}

impl Writer {
    /// Starts the batching task for `raft`.
    pub fn start(raft: Raft) -> Writer {
        let (queue, receiver) = mpsc::channel(8 * MAX_BATCH);
        let queued = Arc::new(AtomicUsize::new(0));
        tokio::spawn(run(raft, receiver, queued.clone()));
        Writer { queue, queued }
    }

    /// Proposes `request` and waits for its outcome.
    pub async fn write(&self, request: Request) -> Result<Applied, LeaderError> {
        let bytes = crate::codec::encoded_len(&request).unwrap_or(0);
        let before = self.queued.fetch_add(bytes, Ordering::AcqRel);
        // One write alone always gets in, however large.
        if before > 0 && before + bytes > MAX_QUEUED_BYTES {
            self.queued.fetch_sub(bytes, Ordering::AcqRel);
            metrics::counter!("raftvisor_writes_refused_overloaded_total").increment(1);
            return Err(LeaderError::Overloaded(format!(
                "the leader has {} MiB of writes queued (limit {} MiB): retry later",
                before / (1024 * 1024),
                MAX_QUEUED_BYTES / (1024 * 1024)
            )));
        }
        let (answer, rx) = oneshot::channel();
        let sent = self
            .queue
            .send(Pending {
                request,
                bytes,
                answer,
            })
            .await;
        if sent.is_err() {
            self.queued.fetch_sub(bytes, Ordering::AcqRel);
            return Err(LeaderError::Unavailable(
                "the replica is shutting down".into(),
            ));
        }
        rx.await.map_err(|_| {
            LeaderError::Unavailable("the write was dropped while the replica shut down".into())
        })?
    }
}

/// The next batch: `first` and whatever else is queued, up to
/// [`MAX_BATCH`] requests and [`MAX_BATCH_BYTES`]; the request that would
/// overflow it is left in `carry` for the next one.
fn gather(
    first: Pending,
    receiver: &mut mpsc::Receiver<Pending>,
    carry: &mut Option<Pending>,
) -> Vec<Pending> {
    let mut bytes = first.bytes;
    let mut pending = vec![first];
    while pending.len() < MAX_BATCH {
        match receiver.try_recv() {
            Ok(next) if bytes + next.bytes > MAX_BATCH_BYTES => {
                *carry = Some(next);
                break;
            }
            Ok(next) => {
                bytes += next.bytes;
                pending.push(next);
            }
            Err(_) => break,
        }
    }
    pending
}

async fn run(raft: Raft, mut receiver: mpsc::Receiver<Pending>, queued: Arc<AtomicUsize>) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut carry: Option<Pending> = None;
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let first = match carry.take() {
            Some(first) => first,
            None => match receiver.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let pending = gather(first, &mut receiver, &mut carry);
        let bytes: usize = pending.iter().map(|p| p.bytes).sum();
        let (requests, waiters): (Vec<Request>, Vec<_>) =
            pending.into_iter().map(|p| (p.request, p.answer)).unzip();
        metrics::histogram!("raftvisor_write_batch_size").record(requests.len() as f64);
        let proposed = std::time::Instant::now();
        let proposal = raft.client_write_ff(Batch { requests }).await;
        let queued = queued.clone();
        tokio::spawn(async move {
            let outcome = match proposal {
                Ok(receiver) => match receiver.await {
                    Ok(Ok(response)) => {
                        // Proposed, replicated to a quorum, fsynced, applied.
                        metrics::histogram!("raftvisor_raft_commit_seconds")
                            .record(proposed.elapsed().as_secs_f64());
                        Ok(response.data.results)
                    }
                    Ok(Err(error)) => Err(map_write_error(error)),
                    Err(_) => Err(LeaderError::Unavailable("raft dropped the proposal".into())),
                },
                Err(fatal) => Err(LeaderError::Unavailable(format!("raft stopped: {fatal}"))),
            };
            match outcome {
                Ok(results) => {
                    for (waiter, applied) in waiters.into_iter().zip(results) {
                        let _ = waiter.send(Ok(applied));
                    }
                }
                Err(error) => {
                    for waiter in waiters {
                        let _ = waiter.send(Err(error.clone()));
                    }
                }
            }
            queued.fetch_sub(bytes, Ordering::AcqRel);
            drop(permit);
        });
    }
}

/// Maps openraft's write errors to the forwarding protocol's.
pub fn map_write_error(error: ClientWriteError<u64, crate::raft::PeerNode>) -> LeaderError {
    match error {
        ClientWriteError::ForwardToLeader(forward) => LeaderError::NotLeader {
            leader: forward.leader_id,
        },
        ClientWriteError::ChangeMembershipError(e) => LeaderError::Rejected(e.to_string()),
    }
}

/// Maps a full `RaftError` around a write error.
pub fn map_raft_write_error(
    error: RaftError<u64, ClientWriteError<u64, crate::raft::PeerNode>>,
) -> LeaderError {
    match error {
        RaftError::APIError(e) => map_write_error(e),
        RaftError::Fatal(f) => LeaderError::Unavailable(format!("raft stopped: {f}")),
    }
}
