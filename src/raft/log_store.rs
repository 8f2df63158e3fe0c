//! The durable Raft log store: openraft's [`RaftLogStorage`] over the
//! write-ahead log in [`super::wal`] (see there for the format, the ordering
//! rules and why a crash can always be told from damage).
//!
//! It owns the in-memory copy of every non-purged entry, so reads never
//! touch the disk, and moves blocking file I/O onto tokio's blocking pool, so
//! the store works on both the current-thread and the multi-thread runtime.
//! It must never write or read log files itself, nor decide what recovery
//! does: that is the WAL's.

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Debug;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::RwLock;

use openraft::storage::LogFlushed;
use openraft::storage::LogState;
use openraft::storage::RaftLogStorage;
use openraft::AnyError;
use openraft::ErrorSubject;
use openraft::ErrorVerb;
use openraft::LogId;
use openraft::NodeId;
use openraft::OptionalSend;
use openraft::RaftLogId;
use openraft::RaftLogReader;
use openraft::RaftTypeConfig;
use openraft::StorageError;
use openraft::StorageIOError;
use openraft::Vote;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::wal::recover;
use super::wal::Disk;
pub use super::wal::LogStoreError;
pub use super::wal::LogStoreOptions;
use super::wal::MetaState;
use super::wal::Recovered;
pub use super::wal::SyncCounts;
pub use super::wal::DEFAULT_SEGMENT_BYTES;

/// What readers see; updated only after the matching disk write succeeded.
struct Mem<C: RaftTypeConfig> {
    entries: BTreeMap<u64, C::Entry>,
    meta: MetaState<C::NodeId>,
}

struct Shared<C: RaftTypeConfig> {
    mem: RwLock<Mem<C>>,
    disk: Mutex<Disk<C::NodeId>>,
}

impl<C: RaftTypeConfig> Shared<C> {
    fn disk(&self) -> Result<MutexGuard<'_, Disk<C::NodeId>>, LogStoreError> {
        self.disk.lock().map_err(|_| LogStoreError::Poisoned)
    }

    fn with_mem<T>(&self, f: impl FnOnce(&Mem<C>) -> T) -> Result<T, LogStoreError> {
        let mem = self.mem.read().map_err(|_| LogStoreError::Poisoned)?;
        Ok(f(&mem))
    }

    fn update_mem(
        &self,
        disk: &Disk<C::NodeId>,
        f: impl FnOnce(&mut Mem<C>),
    ) -> Result<(), LogStoreError> {
        let mut mem = self.mem.write().map_err(|_| LogStoreError::Poisoned)?;
        mem.meta = disk.meta().clone();
        f(&mut mem);
        Ok(())
    }
}

/// The durable Raft log store; see the module documentation for the format.
pub struct LogStore<C: RaftTypeConfig> {
    shared: Arc<Shared<C>>,
    dir: PathBuf,
}

/// A cheap, cloneable read handle onto a [`LogStore`]'s entries.
pub struct LogReader<C: RaftTypeConfig> {
    shared: Arc<Shared<C>>,
}

impl<C: RaftTypeConfig> Clone for LogReader<C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C: RaftTypeConfig> Debug for LogStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl<C: RaftTypeConfig> Debug for LogReader<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogReader").finish_non_exhaustive()
    }
}

impl<C> LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Clone + Serialize + DeserializeOwned,
{
    /// Opens (or creates) the log in `dir`, recovering from a crash if needed.
    ///
    /// Blocking; call it before the async runtime is busy, or from
    /// `spawn_blocking`. Fails with a descriptive [`LogStoreError`] when the
    /// log is damaged in a way a crash cannot explain.
    pub fn open(dir: &Path) -> Result<Self, LogStoreError> {
        Self::open_with_options(dir, LogStoreOptions::default())
    }

    /// [`LogStore::open`] with explicit [`LogStoreOptions`].
    pub fn open_with_options(dir: &Path, options: LogStoreOptions) -> Result<Self, LogStoreError> {
        let Recovered { mut disk, entries } = recover::<C>(dir, &options)?;
        // A leader whose vote was committed would resume its old term at
        // once, and openraft reads linearizably from there at the commit
        // point read back plus the first entry of the term. That commit
        // point rides along lazily (see the WAL's ordering rules), so it may
        // be lower than what was acknowledged before the crash, and a read
        // could miss acknowledged writes. Not committed, the vote makes the
        // replica campaign for a new term, whose first entry follows every
        // entry of the old one. The vote itself is kept: it still refuses
        // every other candidate of its term.
        disk.update_meta_lazily(|m| {
            if let Some(vote) = m.vote.as_mut() {
                vote.committed = false;
            }
        });
        let mem = Mem {
            entries,
            meta: disk.meta().clone(),
        };
        Ok(Self {
            shared: Arc::new(Shared {
                mem: RwLock::new(mem),
                disk: Mutex::new(disk),
            }),
            dir: dir.to_path_buf(),
        })
    }

    /// Directory holding the segments and the meta file.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Highest log index fsynced (and so possibly acknowledged) by this
    /// replica; `None` before the first entry. The copy in the meta file may
    /// lag behind it (see the WAL's ordering rules). Index 0 is a real entry, hence
    /// the `Option`.
    pub fn durable_watermark(&self) -> Option<u64> {
        self.shared
            .with_mem(|m| m.meta.watermark)
            .unwrap_or_default()
    }

    /// fsyncs this store issued since it was opened, by file.
    pub fn sync_counts(&self) -> Result<SyncCounts, LogStoreError> {
        Ok(self.shared.disk()?.syncs())
    }

    /// Runs `op` on the blocking pool; the disk lock is held only there.
    async fn blocking<T, F>(&self, op: F) -> Result<T, LogStoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Shared<C>) -> Result<T, LogStoreError> + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || op(&shared))
            .await
            .map_err(LogStoreError::Task)?
    }
}

fn storage_error<NID: NodeId>(
    subject: ErrorSubject<NID>,
    verb: ErrorVerb,
    e: LogStoreError,
) -> StorageError<NID> {
    StorageError::IO {
        source: StorageIOError::new(subject, verb, AnyError::new(&e)),
    }
}

fn read_range<C, RB>(shared: &Shared<C>, range: RB) -> Result<Vec<C::Entry>, LogStoreError>
where
    C: RaftTypeConfig,
    C::Entry: Clone,
    RB: RangeBounds<u64>,
{
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => match s.checked_add(1) {
            Some(s) => s,
            None => return Ok(Vec::new()),
        },
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.checked_add(1),
        Bound::Excluded(&e) => Some(e),
        Bound::Unbounded => None,
    };
    // BTreeMap::range panics on inverted ranges; callers may legitimately ask for one.
    if end.is_some_and(|e| e <= start) {
        return Ok(Vec::new());
    }
    shared.with_mem(|m| {
        let iter = match end {
            Some(e) => m.entries.range(start..e),
            None => m.entries.range(start..),
        };
        iter.map(|(_, e)| e.clone()).collect()
    })
}

impl<C> RaftLogReader<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Clone + Serialize + DeserializeOwned,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<C::NodeId>> {
        self.get_log_reader().await.try_get_log_entries(range).await
    }
}

impl<C> RaftLogReader<C> for LogReader<C>
where
    C: RaftTypeConfig,
    C::Entry: Clone,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<C::NodeId>> {
        read_range(&self.shared, range)
            .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Read, e))
    }
}

impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Clone + Serialize + DeserializeOwned,
{
    type LogReader = LogReader<C>;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<C::NodeId>> {
        self.shared
            .with_mem(|m| {
                let last_purged_log_id = m.meta.last_purged.clone();
                let last_log_id = m
                    .entries
                    .values()
                    .next_back()
                    .map(|e| e.get_log_id().clone())
                    .or_else(|| last_purged_log_id.clone());
                LogState {
                    last_purged_log_id,
                    last_log_id,
                }
            })
            .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Read, e))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            shared: Arc::clone(&self.shared),
        }
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let vote = vote.clone();
        self.blocking(move |shared| {
            let mut disk = shared.disk()?;
            disk.guarded(|d| d.update_meta(|m| m.vote = Some(vote)))?;
            shared.update_mem(&disk, |_| ())
        })
        .await
        .map_err(|e| storage_error(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C::NodeId>>, StorageError<C::NodeId>> {
        self.shared
            .with_mem(|m| m.meta.vote.clone())
            .map_err(|e| storage_error(ErrorSubject::Vote, ErrorVerb::Read, e))
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<C::NodeId>>,
    ) -> Result<(), StorageError<C::NodeId>> {
        self.blocking(move |shared| {
            let mut disk = shared.disk()?;
            // Rides along with the next meta write: see `Disk::update_meta_lazily`.
            disk.guarded(|d| {
                d.update_meta_lazily(|m| m.committed = committed);
                Ok(())
            })?;
            shared.update_mem(&disk, |_| ())
        })
        .await
        .map_err(|e| storage_error(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    async fn read_committed(
        &mut self,
    ) -> Result<Option<LogId<C::NodeId>>, StorageError<C::NodeId>> {
        self.shared
            .with_mem(|m| m.meta.committed.clone())
            .map_err(|e| storage_error(ErrorSubject::Store, ErrorVerb::Read, e))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<C::NodeId>>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<C::Entry> = entries.into_iter().collect();
        self.blocking(move |shared| {
            let mut disk = shared.disk()?;
            disk.append_entries(&entries)?;
            shared.update_mem(&disk, |m| {
                for entry in entries {
                    m.entries.insert(entry.get_log_id().index, entry);
                }
            })?;
            // The entries are fsynced, so they may be acknowledged now, before
            // the watermark's own fsync (see the WAL's ordering rules). On
            // error the callback is dropped: the returned error stops Raft.
            callback.log_io_completed(Ok(()));
            fail::fail_point!("log-crash-after-ack", |_| super::wal::crash(
                "log-crash-after-ack"
            ));
            disk.guarded(|d| d.store_watermark())
        })
        .await
        .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Write, e))
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let since = log_id.index;
        self.blocking(move |shared| {
            let mut disk = shared.disk()?;
            disk.guarded(|d| d.truncate(since))?;
            shared.update_mem(&disk, |m| {
                m.entries.split_off(&since);
            })
        })
        .await
        .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        self.blocking(move |shared| {
            let index = log_id.index;
            let mut disk = shared.disk()?;
            disk.guarded(|d| d.purge(log_id))?;
            shared.update_mem(&disk, |m| {
                m.entries = m.entries.split_off(&index.saturating_add(1));
            })
        })
        .await
        .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}
