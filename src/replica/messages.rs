//! Messages a replica sends to the leader over the peer port: forwarded
//! writes, read-index requests and membership changes, and their answers.

use serde::{Deserialize, Serialize};

use crate::raft::PeerNode;
use crate::state::{Applied, Request};

/// An operation only the leader can perform.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LeaderRequest {
    Write(Box<Request>),
    /// The leader's commit index, confirmed by a quorum, for a follower's
    /// linearizable read.
    ReadIndex,
    /// Adds a learner, then (with `voter`) promotes it once caught up.
    AddMember {
        id: u64,
        node: PeerNode,
        voter: bool,
    },
    RemoveMember {
        id: u64,
    },
}

/// The leader's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LeaderReply {
    Applied(Applied),
    ReadIndex(u64),
    MembershipChanged { index: u64 },
}

/// Why the leader could not perform an operation.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum LeaderError {
    #[error("this replica is not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Rejected(String),
    /// The leader's write queue is full: retry later (HTTP 429).
    #[error("{0}")]
    Overloaded(String),
}
