//! The state-machine store: the replicated [`State`] held in memory behind a
//! lock, fed by openraft's `apply`, and made durable by snapshots. After
//! each apply it publishes which objects the entries changed
//! ([`Touched`], computed by the model itself) to whoever subscribed
//! ([`StateMachineStore::subscribe_changes`]); it knows nothing of who
//! listens.
//!
//! The state machine is not written on every apply: the Raft log is the
//! durable record, and at start openraft replays the committed entries after
//! the last snapshot. Snapshots are files `snapshot-<index>.bin` under the
//! snapshot directory, written to a temporary name, fsynced and renamed, so
//! a crash leaves either the old or the new one. A snapshot file carries a
//! magic, a checksum and the codec's format version; a snapshot that fails
//! its checksum makes the replica refuse to start, because the log behind it
//! has been purged and it could only serve wrong data. Only that file holds
//! the encoded snapshot: it stays open (so the clean-up after a newer one
//! cannot take it from a reader) and is read back when a follower needs it,
//! so memory holds the state once, not a second time as bytes.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Cursor, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftSnapshotBuilder, Snapshot, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use super::{
    Entry, LogId, NodeId, PeerNode, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::codec;
use crate::state::touched::{touched, Touched};
use crate::state::{BatchResponse, State, StateImage};

const SNAPSHOT_MAGIC: &[u8; 8] = b"RVSNAP01";

/// Why the state-machine store could not open.
#[derive(Debug, thiserror::Error)]
pub enum SmStoreError {
    #[error("cannot use snapshot directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("snapshot {path} is corrupt ({reason}); the log behind it is purged, so this replica refuses to start — wipe its data directory and re-add it to the cluster to restore it from a peer")]
    Corrupt { path: PathBuf, reason: String },
}

/// What a snapshot file holds.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotBody {
    meta: SnapshotMeta,
    #[serde(with = "crate::state::image::written")]
    image: StateImage,
}

struct Applied {
    state: State,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

struct Shared {
    applied: RwLock<Applied>,
    snapshot_dir: PathBuf,
    /// The newest snapshot's meta and its file, open.
    current_snapshot: RwLock<Option<(SnapshotMeta, Arc<File>)>>,
    applied_index: watch::Sender<u64>,
    changes: broadcast::Sender<Arc<Vec<Touched>>>,
}

/// How many applied batches of changes a slow subscriber may fall behind
/// before it is told it lagged (and must look at everything again).
const CHANGES_BACKLOG: usize = 4_096;

/// Cheap to clone: every clone shares one state machine.
#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<Shared>,
}

impl StateMachineStore {
    /// Opens the store, loading the newest snapshot under `snapshot_dir`.
    pub fn open(snapshot_dir: &Path) -> Result<StateMachineStore, SmStoreError> {
        let io = |source| SmStoreError::Io {
            path: snapshot_dir.to_path_buf(),
            source,
        };
        crate::file_modes::create_dir_all(snapshot_dir).map_err(io)?;
        let mut newest: Option<(u64, PathBuf)> = None;
        for entry in std::fs::read_dir(snapshot_dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let Some(index) = name
                .strip_prefix("snapshot-")
                .and_then(|rest| rest.strip_suffix(".bin"))
                .and_then(|digits| digits.parse::<u64>().ok())
            else {
                continue;
            };
            if newest.as_ref().is_none_or(|(best, _)| index > *best) {
                newest = Some((index, path));
            }
        }
        let mut applied = Applied {
            state: State::default(),
            last_applied: None,
            membership: StoredMembership::default(),
        };
        let mut current_snapshot = None;
        if let Some((_, path)) = newest {
            let file = File::open(&path).map_err(|source| SmStoreError::Io {
                path: path.clone(),
                source,
            })?;
            let bytes = read_whole(&file).map_err(|source| SmStoreError::Io {
                path: path.clone(),
                source,
            })?;
            let body = decode_snapshot(&bytes).map_err(|reason| SmStoreError::Corrupt {
                path: path.clone(),
                reason,
            })?;
            applied.last_applied = body.meta.last_log_id;
            applied.membership = body.meta.last_membership.clone();
            applied.state = State::from_image(body.image);
            current_snapshot = Some((body.meta, Arc::new(file)));
        }
        let index = applied.last_applied.map_or(0, |l| l.index);
        Ok(StateMachineStore {
            shared: Arc::new(Shared {
                applied: RwLock::new(applied),
                snapshot_dir: snapshot_dir.to_path_buf(),
                current_snapshot: RwLock::new(current_snapshot),
                applied_index: watch::channel(index).0,
                changes: broadcast::channel(CHANGES_BACKLOG).0,
            }),
        })
    }

    /// Runs `read` against the current state.
    pub fn read<T>(&self, read: impl FnOnce(&State) -> T) -> T {
        let guard = self
            .shared
            .applied
            .read()
            .unwrap_or_else(|e| e.into_inner());
        read(&guard.state)
    }

    /// Index of the last applied log entry.
    pub fn applied_index(&self) -> u64 {
        *self.shared.applied_index.borrow()
    }

    /// A receiver that changes whenever an entry is applied.
    pub fn watch_applied(&self) -> watch::Receiver<u64> {
        self.shared.applied_index.subscribe()
    }

    /// The objects each applied entry changed ([`touched`]), published
    /// after the state holds them. A subscriber that falls behind gets
    /// `Lagged` and must treat everything as changed.
    pub fn subscribe_changes(&self) -> broadcast::Receiver<Arc<Vec<Touched>>> {
        self.shared.changes.subscribe()
    }

    fn publish_changes(&self, changed: Vec<Touched>) {
        if !changed.is_empty() && self.shared.changes.receiver_count() > 0 {
            let _ = self.shared.changes.send(Arc::new(changed));
        }
    }

    /// Waits until the state machine has applied `index`, or `timeout` passes.
    pub async fn wait_applied(&self, index: u64, timeout: std::time::Duration) -> bool {
        let mut rx = self.watch_applied();
        tokio::time::timeout(timeout, rx.wait_for(|applied| *applied >= index))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The state as it is now and the log id it is at, read at once (a
    /// backup's content).
    pub fn image_now(&self) -> (StateImage, Option<LogId>) {
        let guard = self
            .shared
            .applied
            .read()
            .unwrap_or_else(|e| e.into_inner());
        (guard.state.to_image(), guard.last_applied)
    }

    /// Writes a snapshot of `image` at `meta` as the only file of
    /// `snapshot_dir`: the start of a seeded data directory (see
    /// [`super::backup::seed`]). Returns the file written.
    pub fn seed(
        snapshot_dir: &Path,
        meta: SnapshotMeta,
        image: StateImage,
    ) -> Result<PathBuf, std::io::Error> {
        crate::file_modes::create_dir_all(snapshot_dir)?;
        let bytes = encode_snapshot(&SnapshotBody {
            meta: meta.clone(),
            image,
        })
        .map_err(std::io::Error::other)?;
        write_snapshot_file(snapshot_dir, &meta, &bytes).map(|(path, _)| path)
    }

    fn publish_applied(&self, index: u64) {
        self.shared.applied_index.send_if_modified(|current| {
            if index > *current {
                *current = index;
                true
            } else {
                false
            }
        });
    }
}

/// Writes `bytes` as the snapshot at `meta` under `dir` (temporary name,
/// fsync, rename, fsync of the directory) and deletes every other file
/// there. Returns the file written, and that file open for reading.
fn write_snapshot_file(
    dir: &Path,
    meta: &SnapshotMeta,
    bytes: &[u8],
) -> Result<(PathBuf, File), std::io::Error> {
    let index = meta.last_log_id.map_or(0, |l| l.index);
    let final_path = dir.join(format!("snapshot-{index:020}.bin"));
    let tmp_path = dir.join(format!("snapshot-{index:020}.bin.tmp"));
    // Opened once, read and write: the handle kept is the file written,
    // whatever renames and deletions come later.
    let mut file = crate::file_modes::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp_path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp_path, &final_path)?;
    std::fs::File::open(dir)?.sync_all()?;
    metrics::gauge!("raftvisor_raft_snapshot_bytes").set(bytes.len() as f64);
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path != final_path {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok((final_path, file))
}

/// The whole content of a snapshot file.
fn read_whole(file: &File) -> Result<Vec<u8>, std::io::Error> {
    let len = usize::try_from(file.metadata()?.len()).map_err(std::io::Error::other)?;
    let mut bytes = vec![0; len];
    file.read_exact_at(&mut bytes, 0)?;
    Ok(bytes)
}

fn encode_snapshot(body: &SnapshotBody) -> Result<Vec<u8>, codec::CodecError> {
    let payload = codec::encode(body)?;
    let mut out = Vec::with_capacity(payload.len() + 20);
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

fn decode_snapshot(bytes: &[u8]) -> Result<SnapshotBody, String> {
    if bytes.len() < 20 || &bytes[..8] != SNAPSHOT_MAGIC {
        return Err("bad magic or header".into());
    }
    let crc = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let payload = &bytes[20..];
    if payload.len() as u64 != len {
        return Err(format!("length {} != recorded {len}", payload.len()));
    }
    if crc32fast::hash(payload) != crc {
        return Err("checksum mismatch".into());
    }
    codec::decode(payload).map_err(|e| e.to_string())
}

fn io_error(error: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_state_machine(&std::io::Error::other(error.to_string())).into()
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (image, last_applied, membership) = {
            let guard = self
                .shared
                .applied
                .read()
                .unwrap_or_else(|e| e.into_inner());
            (
                guard.state.to_image(),
                guard.last_applied,
                guard.membership.clone(),
            )
        };
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.leader_id.node_id, l.index),
            None => "0-0-0".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        let this = self.clone();
        let meta_for_file = meta.clone();
        let (bytes, file) = tokio::task::spawn_blocking(move || -> Result<_, String> {
            let bytes = encode_snapshot(&SnapshotBody {
                meta: meta_for_file.clone(),
                image,
            })
            .map_err(|e| e.to_string())?;
            let (_, file) = write_snapshot_file(&this.shared.snapshot_dir, &meta_for_file, &bytes)
                .map_err(|e| e.to_string())?;
            Ok((bytes, file))
        })
        .await
        .map_err(io_error)?
        .map_err(io_error)?;
        tracing::info!(
            index = meta.last_log_id.map_or(0, |l| l.index),
            bytes = bytes.len(),
            "snapshot built"
        );
        *self
            .shared
            .current_snapshot
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some((meta.clone(), Arc::new(file)));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let guard = self
            .shared
            .applied
            .read()
            .unwrap_or_else(|e| e.into_inner());
        Ok((guard.last_applied, guard.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let started = std::time::Instant::now();
        let mut responses = Vec::new();
        let mut last = 0;
        let mut changed = Vec::new();
        {
            let mut guard = self
                .shared
                .applied
                .write()
                .unwrap_or_else(|e| e.into_inner());
            for entry in entries {
                let index = entry.log_id.index;
                guard.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => {
                        guard.state.apply_empty(index);
                        responses.push(BatchResponse::default());
                    }
                    EntryPayload::Normal(batch) => {
                        let response = guard.state.apply_batch(index, &batch);
                        for (request, result) in batch.requests.iter().zip(&response.results) {
                            let touched = touched(&request.command, &result.outcome);
                            guard.state.note_catalog_change(index, &touched);
                            changed.extend(touched);
                        }
                        responses.push(response);
                    }
                    EntryPayload::Membership(membership) => {
                        let ids = |m: &openraft::Membership<NodeId, PeerNode>| {
                            m.nodes().map(|(id, _)| *id).collect::<BTreeSet<NodeId>>()
                        };
                        let previous = ids(guard.membership.membership());
                        let current = ids(&membership);
                        guard.membership = StoredMembership::new(Some(entry.log_id), membership);
                        guard.state.apply_membership(index, &previous, &current);
                        guard.state.note_catalog_change(index, &[Touched::Managers]);
                        changed.push(Touched::Managers);
                        responses.push(BatchResponse::default());
                    }
                }
                last = index;
            }
        }
        metrics::histogram!("raftvisor_raft_apply_seconds").record(started.elapsed().as_secs_f64());
        self.publish_applied(last);
        self.publish_changes(changed);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let body = decode_snapshot(&bytes).map_err(|reason| {
            StorageError::from(StorageIOError::read_snapshot(
                Some(meta.signature()),
                &std::io::Error::other(format!("received snapshot is corrupt: {reason}")),
            ))
        })?;
        let this = self.clone();
        let meta_for_file = meta.clone();
        let (_, file) = tokio::task::spawn_blocking(move || {
            write_snapshot_file(&this.shared.snapshot_dir, &meta_for_file, &bytes)
        })
        .await
        .map_err(io_error)?
        .map_err(io_error)?;
        {
            let mut guard = self
                .shared
                .applied
                .write()
                .unwrap_or_else(|e| e.into_inner());
            guard.state = State::from_image(body.image);
            guard.last_applied = meta.last_log_id;
            guard.membership = meta.last_membership.clone();
        }
        *self
            .shared
            .current_snapshot
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some((meta.clone(), Arc::new(file)));
        self.publish_applied(meta.last_log_id.map_or(0, |l| l.index));
        self.publish_changes(vec![Touched::Everything]);
        tracing::info!(
            index = meta.last_log_id.map_or(0, |l| l.index),
            "snapshot installed"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let current = self
            .shared
            .current_snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some((meta, file)) = current else {
            return Ok(None);
        };
        let bytes = tokio::task::spawn_blocking(move || read_whole(&file))
            .await
            .map_err(io_error)?
            .map_err(io_error)?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::{StoreBuilder, Suite};
    use tempfile::TempDir;

    use super::*;
    use crate::raft::log_store::LogStore;

    /// The one file a store keeps in its directory (its snapshot).
    fn the_snapshot_file(dir: &std::path::Path) -> std::path::PathBuf {
        std::fs::read_dir(dir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
    }

    struct RealStores;

    impl StoreBuilder<TypeConfig, LogStore<TypeConfig>, StateMachineStore, TempDir> for RealStores {
        async fn build(
            &self,
        ) -> Result<(TempDir, LogStore<TypeConfig>, StateMachineStore), StorageError> {
            let dir = TempDir::new().expect("temp dir");
            let log = LogStore::open(&dir.path().join("log")).expect("open log");
            let sm =
                StateMachineStore::open(&dir.path().join("snapshots")).expect("open state machine");
            Ok((dir, log, sm))
        }
    }

    #[test]
    fn openraft_suite_passes_against_the_real_stores() {
        Suite::test_all(RealStores).unwrap();
    }

    /// What raftvisor wrote before its records carried versions (codec
    /// format 1): `tests/fixtures/format-1`, see its README.
    fn format1_fixtures() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-1")
    }

    const FORMAT1_SNAPSHOT: &str = "snapshot-00000000000000000006.bin";

    /// The fixture's log entries: `[u32 length][encoded entry]`, repeated.
    fn format1_entries() -> Vec<Entry> {
        let bytes = std::fs::read(format1_fixtures().join("log-entries.bin")).unwrap();
        let mut entries = Vec::new();
        let mut rest = bytes.as_slice();
        while let Some((length, tail)) = rest.split_first_chunk::<4>() {
            let (entry, tail) = tail.split_at(u32::from_le_bytes(*length) as usize);
            assert_eq!(entry[0], 1, "the fixture is of codec format 1");
            entries.push(codec::decode(entry).unwrap());
            rest = tail;
        }
        entries
    }

    /// What the fixture's log leads to, as the API and DNS read it.
    fn assert_serves_the_format1_state(sm: &StateMachineStore) {
        sm.read(|s| {
            assert_eq!(s.cluster_id.as_deref(), Some("format1"));
            let echo = &s.services[&("demo".to_string(), "echo".to_string())];
            assert_eq!(echo.spec.image, "raftvisor-echo:local");
            assert_eq!(echo.spec.replicas, 2);
            assert_eq!(echo.spec.env["GREETING"], "hello");
            assert_eq!(echo.spec.health.as_ref().unwrap().path, "/health");
            let instance = &s.instances["demo.echo.0"];
            assert_eq!(instance.state, crate::state::InstanceState::Running);
            assert_eq!(instance.node.as_deref(), Some("node-a"));
            assert_eq!(instance.ports[0].host_port, 32768);
            assert_eq!(
                instance.template,
                crate::state::supervision::template_fingerprint(&echo.spec),
                "an upgrade replaces no container"
            );
            assert_eq!(s.nodes["node-a"].spec.capacity.max_instances, 20);
            assert_eq!(s.managers[&1].api_addr, "127.0.0.1:7301");
            assert!(!s.kv.contains_key("config/a"));
            assert_eq!(s.kv["config/b"].value, b"beta");
            assert_eq!(s.kv_bytes, 4);
            assert_eq!(s.tokens["ops"].role, crate::state::Role::Operator);
            assert!(s.tokens_bootstrapped);
            assert_eq!(s.applied_index, 8);
            let template = s.manager_template.as_ref().unwrap();
            assert_eq!(template.cluster, "demo");
            assert_eq!(template.managers[0].api_port, 7301);
        });
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_snapshot_and_log_of_format_1_load_and_serve() {
        let entries = format1_entries();
        assert_eq!(entries.len(), 8);
        let dir = TempDir::new().unwrap();
        std::fs::copy(
            format1_fixtures().join(FORMAT1_SNAPSHOT),
            dir.path().join(FORMAT1_SNAPSHOT),
        )
        .unwrap();
        let mut sm = StateMachineStore::open(dir.path()).unwrap();
        assert_eq!(sm.applied_index(), 6);
        sm.apply(entries[6..].to_vec()).await.unwrap();
        assert_serves_the_format1_state(&sm);

        // A retried write of the old log is recognised by its request id.
        let EntryPayload::Normal(batch) = &entries[7].payload else {
            panic!("entry 8 is a batch")
        };
        let again = sm.read(|s| s.clone()).apply(9, &batch.requests[0]);
        assert_eq!(again.index, 8);

        // The same log replayed from the start gives the same state.
        let fresh = TempDir::new().unwrap();
        let mut replayed = StateMachineStore::open(fresh.path()).unwrap();
        replayed.apply(entries).await.unwrap();
        assert_serves_the_format1_state(&replayed);

        // A snapshot written now is of the current format and loads again.
        sm.build_snapshot().await.unwrap();
        let reopened = StateMachineStore::open(dir.path()).unwrap();
        assert_serves_the_format1_state(&reopened);
        let file = the_snapshot_file(dir.path());
        assert_eq!(std::fs::read(file).unwrap()[20], codec::FORMAT_VERSION);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_current_snapshot_is_read_from_its_file_even_after_a_newer_one_replaced_it() {
        let dir = TempDir::new().unwrap();
        let mut sm = StateMachineStore::open(dir.path()).unwrap();
        let first = sm.build_snapshot().await.unwrap();
        let first_bytes = first.snapshot.into_inner();
        // The reader took the first snapshot's handle before a second
        // snapshot deleted its file: the handle still reads it whole.
        let (_, held) = sm.shared.current_snapshot.read().unwrap().clone().unwrap();
        sm.apply([Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), 1),
            payload: EntryPayload::Blank,
        }])
        .await
        .unwrap();
        sm.build_snapshot().await.unwrap();
        assert_eq!(read_whole(&held).unwrap(), first_bytes);
        let served = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(served.meta.last_log_id.map(|l| l.index), Some(1));
        assert_eq!(
            served.snapshot.into_inner(),
            std::fs::read(the_snapshot_file(dir.path())).unwrap()
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn snapshots_survive_reopen_and_corruption_is_refused() {
        use crate::state::{Batch, Command, Request, RequestId};
        let dir = TempDir::new().unwrap();
        let mut sm = StateMachineStore::open(dir.path()).unwrap();
        let entry = Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), 1),
            payload: EntryPayload::Normal(Batch {
                requests: vec![Request {
                    id: RequestId(7),
                    time_ms: 0,
                    command: Command::KvPut {
                        key: "k".into(),
                        value: b"v".to_vec(),
                        flags: 0,
                        cas: None,
                    },
                }],
            }),
        };
        sm.apply([entry]).await.unwrap();
        sm.build_snapshot().await.unwrap();

        let mut reopened = StateMachineStore::open(dir.path()).unwrap();
        assert_eq!(reopened.read(|s| s.kv["k"].value.clone()), b"v");
        assert_eq!(reopened.applied_index(), 1);
        let served = reopened.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(served.meta.last_log_id.map(|l| l.index), Some(1));
        assert_eq!(
            served.snapshot.into_inner(),
            std::fs::read(the_snapshot_file(dir.path())).unwrap(),
            "the snapshot is served from its file"
        );

        let file = the_snapshot_file(dir.path());
        let mut bytes = std::fs::read(&file).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&file, bytes).unwrap();
        let error = StateMachineStore::open(dir.path())
            .err()
            .expect("a corrupt snapshot is refused");
        assert!(error.to_string().contains("corrupt"), "{error}");
    }
}
