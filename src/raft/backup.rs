//! Cluster backups and seeded data directories. A backup file holds the
//! replicated state at one applied index, with the cluster id and a SHA-256
//! of everything after the header; [`seed`] starts an empty data directory
//! from such a state (`cluster restore`), and [`local_state`] reads a
//! stopped replica's own log and snapshot into one (`cluster recover`).
//!
//! It reads and writes files only: it never talks to peers, never runs
//! Raft, and never writes into a data directory that already holds a log
//! or a snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use openraft::storage::{RaftLogReader, RaftLogStorage, RaftStateMachine};
use openraft::{CommittedLeaderId, Membership};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::log_store::LogStore;
use super::sm_store::StateMachineStore;
use super::{LogId, NodeId, PeerNode, SnapshotMeta, StoredMembership, TypeConfig, Vote};
use crate::codec;
use crate::state::StateImage;

const BACKUP_MAGIC: &[u8; 8] = b"RVBACKUP";
const HEADER_LEN: usize = 8 + 32 + 8;

/// Why a backup could not be read, written or used.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("not a raftvisor backup ({0})")]
    NotABackup(String),
    #[error("the backup is damaged: its SHA-256 is {found}, the file says {expected}")]
    Checksum { expected: String, found: String },
    #[error("the backup cannot be decoded: {0}")]
    Decode(String),
    #[error("the backup cannot be encoded: {0}")]
    Encode(String),
    #[error("{path} already holds a raft log or snapshot: seed only an empty data directory (move it away first)")]
    NotEmpty { path: PathBuf },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the seeded cluster must have at least one member")]
    NoMembers,
    #[error("cannot read the data directory's raft store: {0}")]
    Store(String),
}

/// What a backup says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    /// The cluster the state belongs to.
    pub cluster_id: Option<String>,
    /// The applied log index the state is at.
    pub index: u64,
    /// The term of the entry at `index`.
    pub term: u64,
    /// When the backup was taken (Unix ms).
    pub taken_ms: u64,
    /// The replica that took it.
    pub taken_by: NodeId,
}

/// A backup: the header and the state image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Backup {
    pub header: BackupHeader,
    #[serde(with = "crate::state::image::written")]
    pub image: StateImage,
}

impl Backup {
    /// The file's bytes: magic, SHA-256 of the payload, payload length,
    /// payload.
    pub fn encode(&self) -> Result<Vec<u8>, BackupError> {
        let payload = codec::encode(self).map_err(|e| BackupError::Encode(e.to_string()))?;
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
        out.extend_from_slice(BACKUP_MAGIC);
        out.extend_from_slice(&Sha256::digest(&payload));
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&payload);
        Ok(out)
    }

    /// Reads a backup file's bytes, checking its magic, length and
    /// SHA-256 before decoding anything.
    pub fn decode(bytes: &[u8]) -> Result<Backup, BackupError> {
        if bytes.len() < HEADER_LEN || &bytes[..8] != BACKUP_MAGIC {
            return Err(BackupError::NotABackup("no RVBACKUP header".into()));
        }
        let expected = hex(&bytes[8..40]);
        let len = u64::from_le_bytes(bytes[40..48].try_into().expect("8 bytes"));
        let payload = &bytes[HEADER_LEN..];
        if payload.len() as u64 != len {
            return Err(BackupError::NotABackup(format!(
                "{} bytes of state where the header says {len}: the file is cut short or padded",
                payload.len()
            )));
        }
        let found = hex(&Sha256::digest(payload));
        if found != expected {
            return Err(BackupError::Checksum { expected, found });
        }
        codec::decode(payload).map_err(|e| BackupError::Decode(e.to_string()))
    }

    /// The SHA-256 the file carries (hex), as `cluster backup` reports it.
    pub fn checksum_of(bytes: &[u8]) -> Option<String> {
        (bytes.len() >= HEADER_LEN && &bytes[..8] == BACKUP_MAGIC).then(|| hex(&bytes[8..40]))
    }

    /// Reads and checks the backup file at `path`.
    pub fn read(path: &Path) -> Result<Backup, BackupError> {
        let bytes = std::fs::read(path).map_err(|source| BackupError::Io {
            what: "cannot read",
            path: path.to_path_buf(),
            source,
        })?;
        Backup::decode(&bytes)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The state a seeded data directory starts from.
pub struct Seed {
    pub image: StateImage,
    /// The log index the state is at; the cluster's next entry follows it,
    /// so indexes (KV modify indexes among them) keep growing.
    pub index: u64,
    /// The voters of the seeded cluster, with their addresses.
    pub members: BTreeMap<NodeId, PeerNode>,
    /// The term the seeded replica has seen (the backup's, or the
    /// survivor's vote): its first election is in a later one, so a member
    /// of the old cluster that still runs cannot outrank it.
    pub term: u64,
    /// The replica being seeded (the vote is its own).
    pub this: NodeId,
}

/// Writes `seed` as the snapshot of the empty data directory `data_dir`,
/// with the seeded members as its membership: a replica started on it
/// begins at `seed.index` and elects among those members. Every member of a
/// restored cluster is seeded from the same state, so they start equal.
/// Returns the snapshot file written.
pub async fn seed(data_dir: &Path, seed: Seed) -> Result<PathBuf, BackupError> {
    if seed.members.is_empty() {
        return Err(BackupError::NoMembers);
    }
    for store in ["log", "snapshots"] {
        let dir = data_dir.join(store);
        if holds_files(&dir)? {
            return Err(BackupError::NotEmpty { path: dir });
        }
    }
    // Term 0 was never led: every election after the seed is in a later
    // term, and the members' equal seeds compare equal.
    let log_id = LogId::new(CommittedLeaderId::new(0, 0), seed.index);
    let mut image = seed.image;
    image.applied_index = seed.index;
    // Housekeeping records the members' current addresses; managers of
    // the old membership would linger as stale records.
    image
        .managers
        .retain(|m| seed.members.contains_key(&m.raft_id));
    let voters: BTreeSet<NodeId> = seed.members.keys().copied().collect();
    let membership = Membership::new(vec![voters], seed.members);
    let meta = SnapshotMeta {
        last_log_id: Some(log_id),
        last_membership: StoredMembership::new(Some(log_id), membership),
        snapshot_id: format!("seed-{}", seed.index),
    };
    let written =
        StateMachineStore::seed(&data_dir.join("snapshots"), meta, image).map_err(|source| {
            BackupError::Io {
                what: "cannot write the seed snapshot under",
                path: data_dir.to_path_buf(),
                source,
            }
        })?;
    if seed.term > 0 {
        let log_dir = data_dir.join("log");
        let mut log = tokio::task::block_in_place(|| LogStore::<TypeConfig>::open(&log_dir))
            .map_err(|e| BackupError::Store(e.to_string()))?;
        log.save_vote(&Vote::new(seed.term, seed.this))
            .await
            .map_err(|e| BackupError::Store(e.to_string()))?;
    }
    Ok(written)
}

fn holds_files(dir: &Path) -> Result<bool, BackupError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(BackupError::Io {
            what: "cannot list",
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// What a stopped replica's data directory holds: its state with every
/// entry of its log applied (committed or not), and what it knew.
pub struct LocalState {
    pub image: StateImage,
    /// The last entry of its log (or of its snapshot).
    pub last_log: Option<LogId>,
    /// The last entry it knew to be committed.
    pub committed: Option<LogId>,
    pub vote: Option<Vote>,
    /// The membership its log ends with.
    pub membership: StoredMembership,
}

/// Reads the data directory of a stopped replica: its snapshot, then every
/// entry of its log after it, applied in memory. Nothing is written.
pub async fn local_state(data_dir: &Path) -> Result<LocalState, BackupError> {
    let store = |e: &dyn std::fmt::Display| BackupError::Store(e.to_string());
    let log_dir = data_dir.join("log");
    if !log_dir.exists() && !data_dir.join("snapshots").exists() {
        return Err(BackupError::Store(format!(
            "{} holds no raft log and no snapshot",
            data_dir.display()
        )));
    }
    let mut sm = StateMachineStore::open(&data_dir.join("snapshots")).map_err(|e| store(&e))?;
    let (applied, _) = sm.applied_state().await.map_err(|e| store(&e))?;
    let (mut last_log, mut committed, mut vote) = (applied, None, None);
    if log_dir.exists() {
        let mut log = tokio::task::block_in_place(|| LogStore::<TypeConfig>::open(&log_dir))
            .map_err(|e| store(&e))?;
        let log_state = log.get_log_state().await.map_err(|e| store(&e))?;
        vote = log.read_vote().await.map_err(|e| store(&e))?;
        committed = log.read_committed().await.map_err(|e| store(&e))?;
        let from = applied.map_or(0, |l| l.index + 1);
        if let Some(last) = log_state.last_log_id.filter(|l| l.index >= from) {
            let entries = log
                .try_get_log_entries(from..=last.index)
                .await
                .map_err(|e| store(&e))?;
            sm.apply(entries).await.map_err(|e| store(&e))?;
            last_log = Some(last);
        }
    }
    let (_, membership) = sm.applied_state().await.map_err(|e| store(&e))?;
    Ok(LocalState {
        image: sm.read(crate::state::State::to_image),
        last_log,
        committed,
        vote,
        membership,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::State;

    fn backup() -> Backup {
        let mut image = State::default().to_image();
        image.cluster_id = Some("c1".into());
        Backup {
            header: BackupHeader {
                cluster_id: Some("c1".into()),
                index: 42,
                term: 3,
                taken_ms: 1,
                taken_by: 2,
            },
            image,
        }
    }

    #[test]
    fn a_backup_reads_back_and_any_damage_is_refused() {
        let bytes = backup().encode().unwrap();
        let read = Backup::decode(&bytes).unwrap();
        assert_eq!(read.header, backup().header);
        assert_eq!(read.image.cluster_id.as_deref(), Some("c1"));

        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            Backup::decode(&flipped),
            Err(BackupError::Checksum { .. })
        ));
        assert!(matches!(
            Backup::decode(&bytes[..bytes.len() - 3]),
            Err(BackupError::NotABackup(_))
        ));
        assert!(matches!(
            Backup::decode(b"{\"not\": \"a backup\"}"),
            Err(BackupError::NotABackup(_))
        ));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_seed_goes_only_into_an_empty_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let members = BTreeMap::from([(1, PeerNode::default())]);
        let make = || Seed {
            image: backup().image,
            index: 42,
            members: members.clone(),
            term: 0,
            this: 1,
        };
        seed(dir.path(), make()).await.unwrap();
        assert!(matches!(
            seed(dir.path(), make()).await,
            Err(BackupError::NotEmpty { .. })
        ));
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            seed(
                empty.path(),
                Seed {
                    members: BTreeMap::new(),
                    ..make()
                }
            )
            .await,
            Err(BackupError::NoMembers)
        ));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_seeded_directory_opens_at_the_seed_index_with_its_members() {
        let dir = tempfile::tempdir().unwrap();
        let members = BTreeMap::from([
            (1, PeerNode::default()),
            (
                4,
                PeerNode {
                    peer_addr: "127.0.0.1:9".into(),
                    api_addr: "127.0.0.1:10".into(),
                },
            ),
        ]);
        seed(
            dir.path(),
            Seed {
                image: backup().image,
                index: 42,
                members,
                term: 7,
                this: 1,
            },
        )
        .await
        .unwrap();
        let local = local_state(dir.path()).await.unwrap();
        assert_eq!(local.vote, Some(Vote::new(7, 1)));
        assert_eq!(local.last_log.map(|l| l.index), Some(42));
        assert_eq!(local.image.applied_index, 42);
        assert_eq!(local.image.cluster_id.as_deref(), Some("c1"));
        let voters: Vec<u64> = local.membership.membership().voter_ids().collect();
        assert_eq!(voters, vec![1, 4]);
    }
}
