//! Raft plumbing: the openraft type configuration, the durable log store,
//! the state-machine store with its snapshots, and the peer network client.
//! Nothing here knows about HTTP API shapes, containers or the replica
//! that drives it: the peer server's handlers live with the replica
//! ([`crate::replica::peer_server`]), as openraft's examples keep them with
//! the app.

pub mod backup;
pub mod fatal;
pub mod lease;
pub mod log_store;
pub mod network;
pub mod peer_certs;
pub mod prevote;
pub mod sm_store;
mod wal;

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::state::{Batch, BatchResponse};

/// What membership records about each replica: where its peers and clients
/// reach it. Kept in the Raft membership itself so every replica can route
/// forwarded requests without a separate directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNode {
    pub peer_addr: String,
    pub api_addr: String,
}

impl PeerNode {
    /// An initial member as the agent config names it.
    pub fn of_member(member: &crate::config::MemberConfig) -> PeerNode {
        PeerNode {
            peer_addr: member.peer_addr.to_string(),
            api_addr: member.api_addr.to_string(),
        }
    }
}

impl std::fmt::Display for PeerNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "peer {} api {}", self.peer_addr, self.api_addr)
    }
}

openraft::declare_raft_types!(
    /// raftvisor's openraft type configuration.
    pub TypeConfig:
        D = Batch,
        R = BatchResponse,
        NodeId = u64,
        Node = PeerNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type Vote = openraft::Vote<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, PeerNode>;
pub type StoredMembership = openraft::StoredMembership<NodeId, PeerNode>;
pub type RaftMetrics = openraft::RaftMetrics<NodeId, PeerNode>;
