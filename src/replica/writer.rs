//! Group commit on the leader: concurrent writes are gathered into one
//! [`Batch`] per Raft entry, so they share one append and one fsync on every
//! replica (openraft 0.9 writes one entry per `client_write`).
//!
//! A bounded number of batches is in flight at once; while the pipeline is
//! full, new writes wait in the queue and the next batch takes all of them.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::messages::LeaderError;
use crate::raft::Raft;
use crate::state::{Applied, Batch, Request};

/// Most requests in one entry.
const MAX_BATCH: usize = 512;
/// Batches appended but not yet committed.
const MAX_IN_FLIGHT: usize = 4;

type Pending = (Request, oneshot::Sender<Result<Applied, LeaderError>>);

/// Handle to the batching task.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Pending>,
}

impl Writer {
    /// Starts the batching task for `raft`.
    pub fn start(raft: Raft) -> Writer {
        let (queue, receiver) = mpsc::channel(8 * MAX_BATCH);
        tokio::spawn(run(raft, receiver));
        Writer { queue }
    }

    /// Proposes `request` and waits for its outcome.
    pub async fn write(&self, request: Request) -> Result<Applied, LeaderError> {
        let (tx, rx) = oneshot::channel();
        self.queue
            .send((request, tx))
            .await
            .map_err(|_| LeaderError::Unavailable("the replica is shutting down".into()))?;
        rx.await.map_err(|_| {
            LeaderError::Unavailable("the write was dropped while the replica shut down".into())
        })?
    }
}

async fn run(raft: Raft, mut receiver: mpsc::Receiver<Pending>) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = receiver.recv().await else {
            return;
        };
        let mut pending = vec![first];
        while pending.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(next) => pending.push(next),
                Err(_) => break,
            }
        }
        let (requests, waiters): (Vec<Request>, Vec<_>) = pending.into_iter().unzip();
        metrics::histogram!("raftvisor_write_batch_size").record(requests.len() as f64);
        let proposal = raft.client_write_ff(Batch { requests }).await;
        tokio::spawn(async move {
            let outcome = match proposal {
                Ok(receiver) => match receiver.await {
                    Ok(Ok(response)) => Ok(response.data.results),
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
