//! What the peer network knows of the replicas' certificates: the header
//! by which a peer request names its sender (checked against the sender's
//! certificate by `crate::replica::peer_identity`), and when each member's
//! certificate expires, as presented to this replica's peer server or
//! peer client — for `GET /v1/cluster` and `/metrics`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::NodeId;
use crate::tls::certs::{not_after_of, raft_id_of};

/// The header naming the Raft id of the replica sending a peer request.
pub const SENDER_HEADER: &str = "x-raftvisor-sender";

/// When each member's certificate expires (seconds since the Unix epoch),
/// by the Raft id the certificate names.
#[derive(Debug, Clone, Default)]
pub struct CertExpiries(Arc<Mutex<Expiries>>);

#[derive(Debug, Default)]
struct Expiries {
    by_id: BTreeMap<NodeId, i64>,
    /// Checksums of the certificates recorded, so the peer client parses
    /// each server certificate once, not on every heartbeat.
    seen: std::collections::HashSet<u32>,
}

impl CertExpiries {
    /// Records the certificate `der` under the id it names.
    pub fn saw(&self, der: &[u8]) {
        let sum = crc32fast::hash(der);
        if self.lock().seen.contains(&sum) {
            return;
        }
        if let Ok(id) = raft_id_of(der) {
            self.record(id, der);
        }
        self.lock().seen.insert(sum);
    }

    /// Records the certificate `der` of member `id`.
    pub fn record(&self, id: NodeId, der: &[u8]) {
        if let Some(expires) = not_after_of(der) {
            self.lock().by_id.insert(id, expires);
        }
    }

    /// Expiry of every member's certificate seen so far.
    pub fn all(&self) -> BTreeMap<NodeId, i64> {
        self.lock().by_id.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Expiries> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
