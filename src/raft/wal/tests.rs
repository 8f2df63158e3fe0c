//! Tests of the log store and its WAL: openraft's storage suite against the
//! real files (with default and tiny segments), and the crash and damage
//! scenarios recovery must repair or refuse. They build damaged directories
//! by hand from the real format; they must never reach into a running
//! store's memory.

use std::fs;
use std::fs::OpenOptions;
use std::io::Cursor;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;

use openraft::storage::RaftLogStorage;
use openraft::storage::RaftLogStorageExt;
use openraft::storage::RaftStateMachine;
use openraft::testing::StoreBuilder;
use openraft::testing::Suite;
use openraft::BasicNode;
use openraft::CommittedLeaderId;
use openraft::Entry;
use openraft::EntryPayload;
use openraft::LogId;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use openraft::RaftSnapshotBuilder;
use openraft::Snapshot;
use openraft::SnapshotMeta;
use openraft::StorageError;
use openraft::StoredMembership;
use openraft::Vote;
use serde::Deserialize;
use serde::Serialize;
use tempfile::TempDir;

use super::meta::META_FILE;
use super::meta::META_HEADER;
use super::meta::META_SLOT_BYTES;
use super::segment::list_segments;
use super::segment::read_record;
use super::segment::Record;
use super::LogStoreError;
use super::LogStoreOptions;
use super::DEFAULT_SEGMENT_BYTES;
use crate::codec;
use crate::raft::log_store::LogStore;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cmd {
    key: String,
    value: u64,
}

openraft::declare_raft_types!(
    pub TestConfig:
        D = Cmd,
        R = (),
        SnapshotData = Cursor<Vec<u8>>,
);

type Store = LogStore<TestConfig>;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SmData {
    last_applied: Option<LogId<u64>>,
    last_membership: StoredMembership<u64, BasicNode>,
    cmds: Vec<Cmd>,
}

#[derive(Default)]
struct SmInner {
    data: SmData,
    snapshot: Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)>,
    built: u64,
}

/// In-memory state machine, just enough for openraft's storage suite.
#[derive(Clone, Default)]
struct TestSm {
    inner: Arc<Mutex<SmInner>>,
}

impl RaftSnapshotBuilder<TestConfig> for TestSm {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TestConfig>, StorageError<u64>> {
        let mut inner = self.inner.lock().unwrap();
        inner.built += 1;
        let bytes = codec::encode(&inner.data).unwrap();
        let meta = SnapshotMeta {
            last_log_id: inner.data.last_applied,
            last_membership: inner.data.last_membership.clone(),
            snapshot_id: format!("snapshot-{}", inner.built),
        };
        inner.snapshot = Some((meta.clone(), bytes.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TestConfig> for TestSm {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        let inner = self.inner.lock().unwrap();
        Ok((inner.data.last_applied, inner.data.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TestConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.inner.lock().unwrap();
        let mut replies = Vec::new();
        for entry in entries {
            inner.data.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(cmd) => inner.data.cmds.push(cmd),
                EntryPayload::Membership(m) => {
                    inner.data.last_membership = StoredMembership::new(Some(entry.log_id), m)
                }
            }
            replies.push(());
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let bytes = snapshot.into_inner();
        let mut inner = self.inner.lock().unwrap();
        inner.data = codec::decode(&bytes).unwrap();
        inner.snapshot = Some((meta.clone(), bytes));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TestConfig>>, StorageError<u64>> {
        let inner = self.inner.lock().unwrap();
        Ok(inner.snapshot.as_ref().map(|(meta, bytes)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(bytes.clone())),
        }))
    }
}

struct Builder {
    segment_bytes: u64,
}

impl StoreBuilder<TestConfig, Store, TestSm, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, Store, TestSm), StorageError<u64>> {
        let tmp = TempDir::new().unwrap();
        let options = LogStoreOptions {
            segment_bytes: self.segment_bytes,
        };
        let store = LogStore::open_with_options(&tmp.path().join("log"), options).unwrap();
        Ok((tmp, store, TestSm::default()))
    }
}

#[test]
fn openraft_suite_default_segments() {
    Suite::test_all(Builder {
        segment_bytes: DEFAULT_SEGMENT_BYTES,
    })
    .unwrap();
}

#[test]
fn openraft_suite_tiny_segments() {
    // Nearly every record gets its own segment, so the suite also covers
    // rotation, whole-segment purge and cross-segment truncation.
    Suite::test_all(Builder { segment_bytes: 64 }).unwrap();
}

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 0), index)
}

fn entry(term: u64, index: u64) -> Entry<TestConfig> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Cmd {
            key: format!("key-{index}"),
            value: index * 10,
        }),
    }
}

fn entries(term: u64, indexes: impl IntoIterator<Item = u64>) -> Vec<Entry<TestConfig>> {
    indexes.into_iter().map(|i| entry(term, i)).collect()
}

const SMALL: u64 = 256;

fn open(dir: &Path) -> Store {
    LogStore::open(dir).unwrap()
}

fn open_small(dir: &Path) -> Store {
    LogStore::open_with_options(
        dir,
        LogStoreOptions {
            segment_bytes: SMALL,
        },
    )
    .unwrap()
}

/// Stops using `store` as a crash would: nothing it holds back is written.
fn crash(store: Store) {
    std::mem::forget(store);
}

fn open_err(dir: &Path) -> LogStoreError {
    LogStore::<TestConfig>::open(dir).unwrap_err()
}

async fn ids(store: &mut Store) -> Vec<(u64, u64)> {
    store
        .try_get_log_entries(..)
        .await
        .unwrap()
        .iter()
        .map(|e| (e.log_id.leader_id.term, e.log_id.index))
        .collect()
}

fn expect_ids(term: u64, indexes: impl IntoIterator<Item = u64>) -> Vec<(u64, u64)> {
    indexes.into_iter().map(|i| (term, i)).collect()
}

fn segment_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    list_segments(dir).unwrap()
}

/// `(start, end)` of every intact record in a segment file.
fn records_in(path: &Path) -> Vec<(usize, usize)> {
    let data = fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        match read_record(&data, at) {
            Record::Valid { end, .. } => {
                out.push((at, end));
                at = end;
            }
            Record::Invalid(_) => break,
        }
    }
    out
}

fn flip_byte(path: &Path, offset: usize) {
    let mut data = fs::read(path).unwrap();
    data[offset] ^= 0x5a;
    fs::write(path, data).unwrap();
}

fn only_segment(dir: &Path) -> PathBuf {
    let segs = segment_files(dir);
    assert_eq!(segs.len(), 1, "test expects a single segment");
    segs[0].1.clone()
}

fn scratch() -> (TempDir, PathBuf) {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("log");
    (tmp, dir)
}

/// Appends `batch` to the log in `dir` and closes it, as a replica that
/// stopped cleanly.
async fn write_and_close(
    open_store: fn(&Path) -> Store,
    dir: &Path,
    batch: Vec<Entry<TestConfig>>,
) {
    let mut store = open_store(dir);
    store.blocking_append(batch).await.unwrap();
}

/// Appends `acknowledged`, then `unacknowledged`, then puts the meta file
/// back as it was in between: a crash after the second batch's records
/// reached the disk but before the watermark covered them.
async fn crash_before_watermark(
    dir: &Path,
    acknowledged: Vec<Entry<TestConfig>>,
    unacknowledged: Vec<Entry<TestConfig>>,
) {
    let old_meta;
    {
        let mut store = open(dir);
        store.blocking_append(acknowledged).await.unwrap();
        old_meta = fs::read(dir.join(META_FILE)).unwrap();
        store.blocking_append(unacknowledged).await.unwrap();
    }
    fs::write(dir.join(META_FILE), &old_meta).unwrap();
}

#[tokio::test]
async fn fresh_directory_is_created_and_empty() {
    let (_tmp, dir) = scratch();
    let nested = dir.join("a").join("b");
    let mut store = open(&nested);
    assert!(nested.join(META_FILE).exists());
    assert_eq!(store.dir(), nested.as_path());
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, None);
    assert_eq!(state.last_purged_log_id, None);
    assert_eq!(store.read_vote().await.unwrap(), None);
    assert_eq!(store.durable_watermark(), None);
    drop(store);
    // A second open of the still-empty log must not trip any recovery check.
    let mut store = open(&nested);
    assert!(ids(&mut store).await.is_empty());
}

#[tokio::test]
async fn reopen_returns_same_entries_vote_and_committed() {
    let (_tmp, dir) = scratch();
    {
        let mut store = open_small(&dir);
        store.blocking_append(entries(1, 0..=20)).await.unwrap();
        store.save_vote(&Vote::new(3, 1)).await.unwrap();
        store.save_committed(Some(log_id(1, 12))).await.unwrap();
        store.purge(log_id(1, 5)).await.unwrap();
        store.truncate(log_id(1, 16)).await.unwrap();
        assert_eq!(store.durable_watermark(), Some(15));
        store.blocking_append(entries(2, 16..=18)).await.unwrap();
    }
    let mut store = open_small(&dir);
    let mut want = expect_ids(1, 6..=15);
    want.extend(expect_ids(2, 16..=18));
    assert_eq!(ids(&mut store).await, want);
    let first = store.try_get_log_entries(6..7).await.unwrap();
    assert_eq!(
        first[0].payload,
        EntryPayload::Normal(Cmd {
            key: "key-6".into(),
            value: 60
        })
    );
    assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 12)));
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 5)));
    assert_eq!(state.last_log_id, Some(log_id(2, 18)));
    assert_eq!(store.durable_watermark(), Some(18));
}

#[tokio::test]
async fn a_committed_vote_is_read_back_not_committed_so_a_restarted_leader_campaigns() {
    let (_tmp, dir) = scratch();
    {
        let mut store = open(&dir);
        store.blocking_append(entries(3, 0..=9)).await.unwrap();
        store.save_vote(&Vote::new_committed(3, 1)).await.unwrap();
        // The commit point of the last entries is not written before a crash.
        store.save_committed(Some(log_id(3, 9))).await.unwrap();
        crash(store);
    }
    let mut store = open(&dir);
    let vote = store.read_vote().await.unwrap().unwrap();
    assert_eq!(
        vote,
        Vote::new(3, 1),
        "same term and candidate, not committed"
    );
    assert!(!vote.is_committed());
    assert_eq!(ids(&mut store).await, expect_ids(3, 0..=9));
}

#[tokio::test]
async fn reader_is_a_live_view() {
    let (_tmp, dir) = scratch();
    let mut store = open(&dir);
    let mut reader = store.get_log_reader().await;
    let mut other = reader.clone();
    store.blocking_append(entries(1, 0..=3)).await.unwrap();
    assert_eq!(reader.try_get_log_entries(1..3).await.unwrap().len(), 2);
    store.truncate(log_id(1, 2)).await.unwrap();
    assert_eq!(other.try_get_log_entries(..).await.unwrap().len(), 2);
    // Inverted and empty ranges are answered, not panicked on.
    #[allow(clippy::reversed_empty_ranges)]
    let inverted = reader.try_get_log_entries(3..1).await.unwrap();
    assert!(inverted.is_empty());
    assert!(reader.try_get_log_entries(1..1).await.unwrap().is_empty());
}

#[tokio::test]
async fn torn_half_record_past_the_watermark_is_cut_off() {
    let (_tmp, dir) = scratch();
    let old_meta;
    {
        let mut store = open(&dir);
        for i in 1..=4 {
            store.blocking_append([entry(1, i)]).await.unwrap();
        }
        old_meta = fs::read(dir.join(META_FILE)).unwrap();
        store.blocking_append([entry(1, 5)]).await.unwrap();
    }
    // Crash after record 5 started reaching the disk but before the
    // watermark covered it: old meta, record 5 cut in half.
    fs::write(dir.join(META_FILE), &old_meta).unwrap();
    let seg = only_segment(&dir);
    let (start, end) = records_in(&seg)[4];
    let file = OpenOptions::new().write(true).open(&seg).unwrap();
    file.set_len(((start + end) / 2) as u64).unwrap();
    drop(file);

    let mut store = open(&dir);
    assert_eq!(ids(&mut store).await, expect_ids(1, 1..=4));
    assert_eq!(fs::metadata(&seg).unwrap().len(), start as u64);
    assert_eq!(store.durable_watermark(), Some(4));
    store.blocking_append([entry(2, 5)]).await.unwrap();
    drop(store);
    let mut store = open(&dir);
    let mut want = expect_ids(1, 1..=4);
    want.push((2, 5));
    assert_eq!(ids(&mut store).await, want);
}

#[tokio::test]
async fn garbage_half_record_and_zero_fill_at_the_end_are_cut_off() {
    let (_tmp, dir) = scratch();
    write_and_close(open, &dir, entries(1, 1..=5)).await;
    let seg = only_segment(&dir);
    let clean_len = fs::metadata(&seg).unwrap().len();

    let mut data = fs::read(&seg).unwrap();
    data.extend_from_slice(&100u32.to_le_bytes());
    data.extend_from_slice(&0xdead_beefu32.to_le_bytes());
    data.extend_from_slice(b"half a record");
    fs::write(&seg, &data).unwrap();
    {
        let mut store = open(&dir);
        assert_eq!(ids(&mut store).await, expect_ids(1, 1..=5));
    }
    assert_eq!(fs::metadata(&seg).unwrap().len(), clean_len);

    let mut data = fs::read(&seg).unwrap();
    data.extend_from_slice(&[0u8; 4096]);
    fs::write(&seg, &data).unwrap();
    {
        let mut store = open(&dir);
        assert_eq!(ids(&mut store).await, expect_ids(1, 1..=5));
        store.blocking_append([entry(1, 6)]).await.unwrap();
    }
    let mut store = open(&dir);
    assert_eq!(ids(&mut store).await, expect_ids(1, 1..=6));
}

#[tokio::test]
async fn flipped_byte_in_a_middle_record_refuses_and_leaves_files_alone() {
    let (_tmp, dir) = scratch();
    write_and_close(open, &dir, entries(1, 1..=5)).await;
    let seg = only_segment(&dir);
    let (start, end) = records_in(&seg)[2];
    flip_byte(&seg, (start + end) / 2);
    let before = fs::read(&seg).unwrap();

    let err = open_err(&dir);
    match &err {
        LogStoreError::CorruptSegment {
            path,
            offset,
            index,
            ..
        } => {
            assert_eq!(path, &seg);
            assert_eq!(*offset, start as u64);
            assert_eq!(*index, 3);
        }
        other => panic!("unexpected error: {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("checksum mismatch with valid records after it"),
        "{msg}"
    );
    assert!(msg.contains("refusing to start"), "{msg}");
    assert!(msg.contains("00000000000000000001.wal"), "{msg}");
    assert_eq!(
        fs::read(&seg).unwrap(),
        before,
        "a refused open must not repair anything"
    );
}

#[tokio::test]
async fn flipped_byte_in_an_acknowledged_last_record_refuses() {
    let (_tmp, dir) = scratch();
    write_and_close(open, &dir, entries(1, 1..=5)).await;
    let seg = only_segment(&dir);
    let (start, end) = records_in(&seg)[4];
    flip_byte(&seg, end - 1);
    let before = fs::read(&seg).unwrap();

    let err = open_err(&dir);
    assert!(
        matches!(
            err,
            LogStoreError::LostEntries {
                last: Some(4),
                watermark: 5,
                ..
            }
        ),
        "unexpected error: {err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("ends at index 4 but this replica had acknowledged up to 5"),
        "{msg}"
    );
    assert!(start < end);
    assert_eq!(fs::read(&seg).unwrap(), before);
}

#[tokio::test]
async fn damaged_unacknowledged_batch_is_dropped_even_with_intact_records_after_it() {
    let (_tmp, dir) = scratch();
    // The batch 4..=6 never got its fsync: pages of 5 and 6 landed, 4 did not.
    crash_before_watermark(&dir, entries(1, 1..=3), entries(1, 4..=6)).await;
    let seg = only_segment(&dir);
    let (start, end) = records_in(&seg)[3];
    flip_byte(&seg, end - 2);

    let mut store = open(&dir);
    assert_eq!(ids(&mut store).await, expect_ids(1, 1..=3));
    assert_eq!(fs::metadata(&seg).unwrap().len(), start as u64);
}

#[tokio::test]
async fn intact_records_past_the_watermark_are_kept() {
    let (_tmp, dir) = scratch();
    crash_before_watermark(&dir, entries(1, 1..=3), entries(1, 4..=6)).await;
    let mut store = open(&dir);
    assert_eq!(ids(&mut store).await, expect_ids(1, 1..=6));
    // Recovery made them durable, so the watermark covers them now.
    assert_eq!(store.durable_watermark(), Some(6));
}

#[tokio::test]
async fn damage_in_an_older_segment_refuses() {
    let (_tmp, dir) = scratch();
    {
        let mut store = open_small(&dir);
        for i in 0..=30 {
            store.blocking_append([entry(1, i)]).await.unwrap();
        }
    }
    let segs = segment_files(&dir);
    assert!(segs.len() >= 3, "{} segments", segs.len());
    let first = &segs[0].1;
    let (start, end) = *records_in(first).last().unwrap();
    flip_byte(first, end - 1);
    let err = open_err(&dir);
    match &err {
        LogStoreError::CorruptSegment { path, offset, .. } => {
            assert_eq!(path, first);
            assert_eq!(*offset, start as u64);
        }
        other => panic!("unexpected error: {other}"),
    }
    assert!(err.to_string().contains("newer segments follow"), "{err}");
}

#[tokio::test]
async fn missing_segment_refuses() {
    let (_tmp, dir) = scratch();
    write_and_close(open_small, &dir, entries(1, 0..=30)).await;
    let segs = segment_files(&dir);
    assert!(segs.len() >= 3);
    fs::remove_file(&segs[1].1).unwrap();
    let err = open_err(&dir);
    match err {
        LogStoreError::MissingEntries { path, found, .. } => {
            assert_eq!(path, segs[2].1);
            assert_eq!(found, segs[2].0);
        }
        other => panic!("unexpected error: {other}"),
    }
}

#[tokio::test]
async fn meta_with_one_torn_slot_opens_with_the_other() {
    let (_tmp, dir) = scratch();
    {
        let mut store = open(&dir);
        store.save_vote(&Vote::new(1, 7)).await.unwrap();
        store.save_vote(&Vote::new(2, 7)).await.unwrap();
    }
    let meta = dir.join(META_FILE);
    let bytes = fs::read(&meta).unwrap();
    let seq = |slot: usize| {
        let at = slot * META_SLOT_BYTES;
        u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
    };
    let newest = if seq(0) > seq(1) { 0 } else { 1 };
    flip_byte(&meta, newest * META_SLOT_BYTES + META_HEADER + 2);
    {
        let mut store = open(&dir);
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(1, 7)));
    }
    // And the store keeps working from the surviving copy.
    {
        let mut store = open(&dir);
        store.save_vote(&Vote::new(3, 7)).await.unwrap();
    }
    let mut store = open(&dir);
    assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(3, 7)));
    drop(store);

    flip_byte(&meta, META_HEADER + 2);
    flip_byte(&meta, META_SLOT_BYTES + META_HEADER + 2);
    let err = open_err(&dir);
    assert!(matches!(err, LogStoreError::CorruptMeta { .. }), "{err}");
    assert!(err.to_string().contains("both copies are damaged"), "{err}");
}

#[tokio::test]
async fn a_wal_file_with_a_foreign_name_refuses() {
    let (_tmp, dir) = scratch();
    write_and_close(open, &dir, entries(1, 0..=2)).await;
    fs::write(dir.join("7.wal"), b"").unwrap();
    let err = open_err(&dir);
    assert!(
        matches!(&err, LogStoreError::BadSegmentName { path, .. } if path == &dir.join("7.wal")),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("7.wal is not a 20-digit index followed by .wal; move it out"),
        "{err}"
    );
}

#[tokio::test]
async fn segments_without_meta_refuse() {
    let (_tmp, dir) = scratch();
    write_and_close(open, &dir, entries(1, 0..=2)).await;
    fs::remove_file(dir.join(META_FILE)).unwrap();
    let err = open_err(&dir);
    assert!(matches!(err, LogStoreError::MissingMeta { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_purge_and_truncate_across_segments() {
    let (_tmp, dir) = scratch();
    {
        let mut store = open_small(&dir);
        for i in 0..=40 {
            store.blocking_append([entry(1, i)]).await.unwrap();
        }
        // A batch that has to rotate part-way through.
        store.blocking_append(entries(1, 41..=60)).await.unwrap();
    }
    let segs = segment_files(&dir);
    assert!(segs.len() > 5, "{} segments", segs.len());
    for (first, path) in &segs {
        let data = fs::read(path).unwrap();
        assert!(
            data.len() as u64 <= SMALL,
            "{} is {} bytes",
            path.display(),
            data.len()
        );
        let Record::Valid { payload, .. } = read_record(&data, 0) else {
            panic!("{} does not start with a record", path.display());
        };
        let e: Entry<TestConfig> = codec::decode(payload).unwrap();
        assert_eq!(
            e.log_id.index, *first,
            "segment is named after its first index"
        );
    }

    {
        let mut store = open_small(&dir);
        assert_eq!(ids(&mut store).await, expect_ids(1, 0..=60));
        store.purge(log_id(1, 30)).await.unwrap();
        assert_eq!(ids(&mut store).await, expect_ids(1, 31..=60));
    }
    let after_purge = segment_files(&dir);
    assert!(after_purge.len() < segs.len());
    assert!(after_purge[0].0 <= 31, "segment holding 31 was kept");
    assert!(
        after_purge.len() == 1 || after_purge[1].0 > 31,
        "segments fully below the purge point were deleted"
    );

    {
        let mut store = open_small(&dir);
        assert_eq!(ids(&mut store).await, expect_ids(1, 31..=60));
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 30)));
        assert_eq!(state.last_log_id, Some(log_id(1, 60)));
        store.truncate(log_id(1, 45)).await.unwrap();
        store.blocking_append(entries(2, 45..=47)).await.unwrap();
    }
    assert!(segment_files(&dir).iter().all(|(first, _)| *first <= 47));
    let mut store = open_small(&dir);
    let mut want = expect_ids(1, 31..=44);
    want.extend(expect_ids(2, 45..=47));
    assert_eq!(ids(&mut store).await, want);
}

#[tokio::test]
async fn purge_past_the_end_then_append_continues_after_it() {
    let (_tmp, dir) = scratch();
    {
        let mut store = open_small(&dir);
        store.blocking_append(entries(1, 0..=5)).await.unwrap();
        store.purge(log_id(1, 9)).await.unwrap();
        assert!(segment_files(&dir).is_empty());
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 9)));
        assert_eq!(state.last_log_id, Some(log_id(1, 9)));

        // A hole is rejected without disabling the store.
        assert!(store.blocking_append([entry(1, 11)]).await.is_err());
        store.blocking_append([entry(1, 10)]).await.unwrap();
    }
    let mut store = open_small(&dir);
    assert_eq!(ids(&mut store).await, expect_ids(1, [10]));
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 9)));
}

#[tokio::test]
async fn append_must_continue_the_log() {
    let (_tmp, dir) = scratch();
    let mut store = open(&dir);
    store.blocking_append(entries(1, 5..=7)).await.unwrap();
    for bad in [6, 9] {
        let err = store.blocking_append([entry(2, bad)]).await.unwrap_err();
        assert!(
            err.to_string().contains("can only continue at index 8"),
            "{err}"
        );
    }
    store.blocking_append([entry(1, 8)]).await.unwrap();
    drop(store);
    let mut store = open(&dir);
    assert_eq!(ids(&mut store).await, expect_ids(1, 5..=8));
}

#[tokio::test]
async fn interrupted_purge_is_finished_on_open() {
    let (_tmp, dir) = scratch();
    let saved = TempDir::new().unwrap();
    let before;
    {
        let mut store = open_small(&dir);
        store.blocking_append(entries(1, 0..=30)).await.unwrap();
        before = segment_files(&dir);
        for (_, path) in &before {
            fs::copy(path, saved.path().join(path.file_name().unwrap())).unwrap();
        }
        store.purge(log_id(1, 20)).await.unwrap();
    }
    let after = segment_files(&dir);
    assert!(after.len() < before.len());
    // Put the deleted segments back, as if the crash hit after meta
    // recorded the purge but before the unlinks.
    for (_, path) in &before {
        fs::copy(saved.path().join(path.file_name().unwrap()), path).unwrap();
    }
    let mut store = open_small(&dir);
    assert_eq!(ids(&mut store).await, expect_ids(1, 21..=30));
    let reopened: Vec<u64> = segment_files(&dir).iter().map(|(f, _)| *f).collect();
    let expected: Vec<u64> = after.iter().map(|(f, _)| *f).collect();
    assert_eq!(reopened, expected, "leftover purged segments are removed");
}

#[tokio::test]
async fn an_append_costs_a_segment_and_a_watermark_fsync_and_the_commit_point_rides_along() {
    let (_tmp, dir) = scratch();
    let mut store = open(&dir);
    let before = store.sync_counts().unwrap();
    for i in 1..=50 {
        store.blocking_append([entry(1, i)]).await.unwrap();
        store.save_committed(Some(log_id(1, i))).await.unwrap();
    }
    let after = store.sync_counts().unwrap();
    assert_eq!(
        after.segment - before.segment,
        50,
        "one segment fsync per append"
    );
    assert_eq!(
        after.meta - before.meta,
        50,
        "one watermark fsync per append, none for the commit point"
    );
    assert_eq!(store.durable_watermark(), Some(50));
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 50)));
    crash(store);

    let mut store = open(&dir);
    assert_eq!(ids(&mut store).await, expect_ids(1, 1..=50));
    assert_eq!(
        store.read_committed().await.unwrap(),
        Some(log_id(1, 49)),
        "the commit point as the last append's watermark write carried it"
    );
    assert_eq!(store.durable_watermark(), Some(50));
}

#[tokio::test]
async fn after_a_crash_the_commit_point_reads_back_as_last_written() {
    let (_tmp, dir) = scratch();
    {
        let mut store = open(&dir);
        store.blocking_append(entries(1, 1..=5)).await.unwrap();
        store.save_committed(Some(log_id(1, 5))).await.unwrap();
        crash(store);
    }
    let mut store = open(&dir);
    assert_eq!(ids(&mut store).await, expect_ids(1, 1..=5));
    // Never written: Raft learns it again from the leader.
    assert_eq!(store.read_committed().await.unwrap(), None);
    store.save_committed(Some(log_id(1, 4))).await.unwrap();
    drop(store);
    // A clean close writes what was held back.
    let mut store = open(&dir);
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 4)));
}
