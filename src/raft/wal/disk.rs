//! The write side of the WAL: appends records to segments (rotating them),
//! truncates the tail, purges the head, and updates the meta file, each in
//! the order that keeps a crash recoverable (see [`super`]). It owns the open
//! files of a running log and decides which meta changes are written at once
//! and which ride along later; it must never read entries back, never decode
//! them, and never continue after a write failed half-way.

use std::collections::BTreeMap;
use std::fs::File;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Instant;

use openraft::LogId;
use openraft::NodeId;
use openraft::RaftLogId;
use serde::Serialize;

use super::dir::remove_file;
use super::dir::sync_dir;
use super::error::io_error;
use super::error::LogStoreError;
use super::meta::MetaFile;
use super::meta::MetaState;
use super::segment::encode_record;
use super::segment::segment_path;
use super::segment::Segment;
use super::segment::RECORD_HEADER;
use crate::codec;

/// Everything on disk, owned by whichever write is in progress.
pub(crate) struct Disk<NID: NodeId> {
    pub(super) dir: PathBuf,
    pub(super) segment_bytes: u64,
    /// Keyed by the index of the segment's first record.
    pub(super) segments: BTreeMap<u64, Segment>,
    /// Byte offset of each non-purged record inside its segment, for `ftruncate`.
    pub(super) offsets: BTreeMap<u64, u64>,
    /// Open handle of the newest segment, if it has been opened for writing.
    pub(super) active: Option<File>,
    /// The meta state as last written to disk.
    pub(super) meta: MetaFile<NID>,
    /// The meta state readers see: what `meta` holds, with the commit point
    /// and the watermark as they are now. The watermark is written after
    /// each append has been acknowledged ([`Disk::store_watermark`]), the
    /// commit point rides along; `current.watermark` is always the highest
    /// fsynced index.
    pub(super) current: MetaState<NID>,
    /// fsyncs issued so far, by file.
    pub(super) syncs: SyncCounts,
    /// Set when a write failed half-way: memory and disk may disagree, so
    /// only a restart (which re-reads the disk) may continue.
    pub(super) failed: Option<String>,
}

/// Constraint on the first index of an append.
#[derive(Debug, Clone, Copy)]
enum NextIndex {
    /// The log has records: continue right after the last one.
    Exactly(u64),
    /// Nothing on disk but a purge point: anything that leaves no gap after
    /// it. Starting at or below it is harmless (such entries count as purged)
    /// and openraft's storage suite does it.
    AtMost(u64),
    /// Empty, never purged: a follower's log may start anywhere.
    Any,
}

impl NextIndex {
    fn check(self, index: u64) -> Result<(), LogStoreError> {
        let expected = match self {
            NextIndex::Exactly(want) if index != want => want,
            NextIndex::AtMost(limit) if index > limit => limit,
            _ => return Ok(()),
        };
        Err(LogStoreError::NonContiguousAppend {
            expected,
            found: index,
        })
    }
}

/// A log closed cleanly leaves its commit point and watermark in `meta`;
/// one that crashes leaves them as last written, which recovery allows for.
impl<NID: NodeId> Drop for Disk<NID> {
    fn drop(&mut self) {
        if self.failed.is_none() && self.current != self.meta.state {
            if let Err(e) = self.store_meta() {
                tracing::warn!(error = %e, "log: cannot write the meta file on close");
            }
        }
    }
}

/// How many fsyncs a log issued, by what they made durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncCounts {
    /// Segment data: one per append, one per rotation.
    pub segment: u64,
    /// The meta file: the watermark after each append (the commit point
    /// rides along), votes, purges and truncations.
    pub meta: u64,
    /// The directory, after a segment appeared or disappeared.
    pub directory: u64,
}

struct Chunk {
    /// `Some(first index)` when the chunk starts a new segment.
    new_segment: Option<u64>,
    start: u64,
    bytes: Vec<u8>,
    last: u64,
    offsets: Vec<(u64, u64)>,
}

impl<NID: NodeId> Disk<NID> {
    /// The vote, commit, purge point and watermark as they are now: vote and
    /// purge point durable, commit point and watermark possibly ahead of
    /// what `meta` holds (see `current`).
    pub(crate) fn meta(&self) -> &MetaState<NID> {
        &self.current
    }

    /// fsyncs issued since the log was opened.
    pub(crate) fn syncs(&self) -> SyncCounts {
        SyncCounts {
            meta: self.meta.syncs,
            ..self.syncs
        }
    }

    /// Refuses once a write failed half-way: memory and disk may disagree.
    fn check_usable(&self) -> Result<(), LogStoreError> {
        match &self.failed {
            Some(why) => Err(LogStoreError::Failed(why.clone())),
            None => Ok(()),
        }
    }

    /// Runs a write; if it fails, every later one is refused (see `failed`).
    pub(crate) fn guarded<T>(
        &mut self,
        op: impl FnOnce(&mut Self) -> Result<T, LogStoreError>,
    ) -> Result<T, LogStoreError> {
        self.check_usable()?;
        let result = op(self);
        if let Err(e) = &result {
            self.failed = Some(e.to_string());
        }
        result
    }

    /// Checks that `entries` continue the log, encodes them with
    /// [`crate::codec`] and appends them durably. Checked and encoded before
    /// any byte is written, so a bad batch is rejected without disabling the
    /// store.
    pub(crate) fn append_entries<E>(&mut self, entries: &[E]) -> Result<(), LogStoreError>
    where
        E: Serialize + RaftLogId<NID>,
    {
        self.check_usable()?;
        let mut next = self.next_index();
        let mut records = Vec::with_capacity(entries.len());
        for entry in entries {
            let index = entry.get_log_id().index;
            next.check(index)?;
            let payload = codec::encode(entry).map_err(|source| LogStoreError::Encode {
                what: "log entry",
                source,
            })?;
            records.push((index, payload));
            next = NextIndex::Exactly(index + 1);
        }
        self.guarded(|d| d.append(&records))
    }

    /// Which index the next appended entry may have.
    fn next_index(&self) -> NextIndex {
        if let Some(seg) = self.segments.values().next_back() {
            return NextIndex::Exactly(seg.last + 1);
        }
        match &self.meta.state.last_purged {
            Some(p) => NextIndex::AtMost(p.index + 1),
            None => NextIndex::Any,
        }
    }

    /// Applies `change` and writes the meta file before returning when the
    /// change must survive a crash: a new vote or purge point, or a
    /// watermark lower than the one on disk. Anything else rides along.
    pub(crate) fn update_meta(
        &mut self,
        change: impl FnOnce(&mut MetaState<NID>),
    ) -> Result<(), LogStoreError> {
        change(&mut self.current);
        let stored = &self.meta.state;
        let must_store = self.current.vote != stored.vote
            || self.current.last_purged != stored.last_purged
            || self.current.watermark < stored.watermark;
        if must_store {
            self.store_meta()?;
        }
        Ok(())
    }

    /// Applies `change` (the commit point moving up) without writing: it
    /// rides along with the next meta write. A commit point read back lower
    /// after a crash is learned again from the leader.
    pub(crate) fn update_meta_lazily(&mut self, change: impl FnOnce(&mut MetaState<NID>)) {
        change(&mut self.current);
    }

    /// Writes the watermark of the entries appended so far (and the commit
    /// point with it) to `meta`: after an append was acknowledged, so its
    /// fsync is not on the acknowledgement's path, and before the next one.
    pub(crate) fn store_watermark(&mut self) -> Result<(), LogStoreError> {
        if self.current != self.meta.state {
            self.store_meta()?;
        }
        Ok(())
    }

    fn store_meta(&mut self) -> Result<(), LogStoreError> {
        self.meta.store(self.current.clone())
    }

    fn active_file(&mut self) -> Result<&File, LogStoreError> {
        if self.active.is_none() {
            let seg = self
                .segments
                .values()
                .next_back()
                .expect("active_file is only used when a segment exists");
            let file = OpenOptions::new()
                .write(true)
                .open(&seg.path)
                .map_err(io_error("open", &seg.path))?;
            self.active = Some(file);
        }
        Ok(self.active.as_ref().expect("just set"))
    }

    fn sync_active(&mut self) -> Result<(), LogStoreError> {
        if let Some(file) = &self.active {
            let path = &self
                .segments
                .values()
                .next_back()
                .expect("active segment")
                .path;
            let started = Instant::now();
            file.sync_data().map_err(io_error("fsync", path))?;
            metrics::histogram!("raftvisor_raft_fsync_seconds", "file" => "segment")
                .record(started.elapsed().as_secs_f64());
            self.syncs.segment += 1;
        }
        Ok(())
    }

    fn sync_dir(&mut self) -> Result<(), LogStoreError> {
        sync_dir(&self.dir)?;
        self.syncs.directory += 1;
        Ok(())
    }

    /// Writes pre-encoded `(index, payload)` records, already checked to
    /// continue the log, and makes them durable.
    fn append(&mut self, records: &[(u64, Vec<u8>)]) -> Result<(), LogStoreError> {
        let Some(&(last_index, _)) = records.last() else {
            return Ok(());
        };
        // Failure tests: the disk refuses writes as it does when the process
        // is out of file descriptors (EMFILE).
        fail::fail_point!("log-append-io", |_| Err(io_error("create", &self.dir)(
            std::io::Error::from_raw_os_error(24)
        )));
        let mut chunks: Vec<Chunk> = Vec::new();
        let mut tail_len = self.segments.values().next_back().map(|s| s.len);
        for (index, payload) in records {
            let record_len = (RECORD_HEADER + payload.len()) as u64;
            let rotate = match tail_len {
                None => true,
                Some(len) => len > 0 && len + record_len > self.segment_bytes,
            };
            if rotate || chunks.is_empty() {
                chunks.push(Chunk {
                    new_segment: rotate.then_some(*index),
                    start: if rotate { 0 } else { tail_len.unwrap_or(0) },
                    bytes: Vec::new(),
                    last: *index,
                    offsets: Vec::new(),
                });
                if rotate {
                    tail_len = Some(0);
                }
            }
            let chunk = chunks.last_mut().expect("pushed above");
            chunk
                .offsets
                .push((*index, chunk.start + chunk.bytes.len() as u64));
            encode_record(payload, &mut chunk.bytes)?;
            chunk.last = *index;
            tail_len = tail_len.map(|len| len + record_len);
        }

        for chunk in chunks {
            match chunk.new_segment {
                Some(first) => {
                    // The older segment must be complete on disk before a newer
                    // one exists: recovery only forgives damage in the newest.
                    self.sync_active()?;
                    self.active = None;
                    crash_point!("log-crash-before-rotate");
                    let path = segment_path(&self.dir, first);
                    let file = crate::file_modes::options()
                        .write(true)
                        .create_new(true)
                        .open(&path)
                        .map_err(io_error("create", &path))?;
                    crash_point!("log-crash-after-create");
                    file.write_all_at(&chunk.bytes, 0)
                        .map_err(io_error("write", &path))?;
                    self.sync_dir()?;
                    self.segments.insert(
                        first,
                        Segment {
                            path,
                            len: chunk.bytes.len() as u64,
                            last: chunk.last,
                        },
                    );
                    self.active = Some(file);
                }
                None => {
                    self.active_file()?;
                    let file = self.active.as_ref().expect("opened above");
                    let seg = self
                        .segments
                        .values_mut()
                        .next_back()
                        .expect("appending to an existing segment");
                    crash_point!("log-crash-before-write");
                    file.write_all_at(&chunk.bytes, seg.len)
                        .map_err(io_error("write", &seg.path))?;
                    seg.len += chunk.bytes.len() as u64;
                    seg.last = chunk.last;
                }
            }
            self.offsets.extend(chunk.offsets);
        }
        crash_point!("log-crash-before-sync");
        self.sync_active()?;
        crash_point!("log-crash-after-sync");
        self.current.watermark = Some(last_index);
        Ok(())
    }

    pub(crate) fn truncate(&mut self, since: u64) -> Result<(), LogStoreError> {
        let Some(last) = self.segments.values().next_back().map(|s| s.last) else {
            return Ok(());
        };
        if since > last {
            return Ok(());
        }
        // The leader rejected these entries; after this point a crash must not
        // count them as acknowledged, whatever happens to the files below.
        self.update_meta(|m| {
            if m.watermark.is_some_and(|w| w >= since) {
                m.watermark = since.checked_sub(1);
            }
        })?;
        crash_point!("log-crash-before-truncate");
        self.active = None;

        // Newest first, so an interrupted truncate still leaves a contiguous prefix.
        let doomed: Vec<u64> = self
            .segments
            .range(since..)
            .map(|(k, _)| *k)
            .rev()
            .collect();
        let mut deleted = !doomed.is_empty();
        for first in doomed {
            let seg = self.segments.remove(&first).expect("listed above");
            remove_file(&seg.path)?;
        }
        if let Some(mut entry) = self.segments.last_entry() {
            if entry.get().last >= since {
                match self.offsets.get(&since) {
                    Some(&offset) if offset > 0 => {
                        let seg = entry.get_mut();
                        let file = OpenOptions::new()
                            .write(true)
                            .open(&seg.path)
                            .map_err(io_error("open", &seg.path))?;
                        file.set_len(offset)
                            .map_err(io_error("truncate", &seg.path))?;
                        file.sync_data().map_err(io_error("fsync", &seg.path))?;
                        self.syncs.segment += 1;
                        seg.len = offset;
                        seg.last = since - 1;
                    }
                    // `since` is at or below the purge point: nothing in this
                    // segment survives.
                    _ => {
                        let seg = entry.remove();
                        remove_file(&seg.path)?;
                        deleted = true;
                    }
                }
            }
        }
        if deleted {
            self.sync_dir()?;
        }
        self.offsets.split_off(&since);
        Ok(())
    }

    pub(crate) fn purge(&mut self, upto: LogId<NID>) -> Result<(), LogStoreError> {
        let index = upto.index;
        // Recorded before anything is deleted, so recovery never mistakes a
        // half-finished purge for lost entries. The purge point never moves
        // back, but records below it are still removed (see `NextIndex::AtMost`).
        self.update_meta(|m| {
            if m.last_purged.as_ref().is_none_or(|p| p.index < index) {
                m.last_purged = Some(upto);
            }
        })?;

        // Oldest first, so an interrupted purge leaves a contiguous suffix.
        let doomed: Vec<u64> = self
            .segments
            .iter()
            .take_while(|(_, s)| s.last <= index)
            .map(|(k, _)| *k)
            .collect();
        let deleted = !doomed.is_empty();
        for first in doomed {
            let seg = self.segments.remove(&first).expect("listed above");
            remove_file(&seg.path)?;
            crash_point!("log-crash-during-purge");
        }
        if self.segments.is_empty() {
            self.active = None;
        }
        if deleted {
            self.sync_dir()?;
        }
        self.offsets = self.offsets.split_off(&index.saturating_add(1));
        Ok(())
    }
}
