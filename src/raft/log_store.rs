//! The durable Raft log: every entry this replica accepts, its vote, and the
//! bookkeeping needed to prove after a crash that nothing it acknowledged was
//! lost.
//!
//! # Why a hand-rolled segmented WAL and not an embedded database
//!
//! Raft's safety argument rests on two promises a replica makes to its peers:
//! an entry acknowledged to a leader is on disk, and a vote cast is on disk.
//! Breaking either silently (for example by coming back after a power cut with
//! a shorter log and voting on it) can elect a leader that lacks committed
//! entries. An embedded key-value store would hide exactly the decisions that
//! matter here: where the fsync happens, and what "recovery" means when the
//! tail of the file is damaged. With our own format we decide both:
//!
//! * A damaged record at the very end of the newest segment is the normal
//!   result of a crash during a write. It is cut off and the replica starts.
//! * A damaged record anywhere else, a missing segment, or a log that ends
//!   before the point this replica had already acknowledged is not something
//!   a crash can produce. The store refuses to open and says how to repair the
//!   replica, instead of quietly serving a log with a hole in it.
//!
//! An append-only log also suits the workload: Raft only appends, cuts the
//! tail on conflict, and drops the head after snapshots, which map to a
//! `write`, an `ftruncate` and an `unlink`.
//!
//! # On-disk layout
//!
//! * `NNNNNNNNNNNNNNNNNNNN.wal` segments, named after the index of their first
//!   entry (20 digits so lexical and numeric order agree). A segment is closed
//!   once it would exceed the configured size; rotation fsyncs the old segment
//!   before the new file exists, so only the newest segment can ever hold
//!   unsynced bytes. Each record is `[len u32 LE][crc32 u32 LE][payload]`, the
//!   payload being the entry encoded with [`crate::codec`].
//! * `meta`: vote, committed log id, last purged log id and the *durable
//!   watermark*, the highest index this replica fsynced and may therefore have
//!   acknowledged. It is kept in two fixed 4 KiB slots, each
//!   `[seq u64][len u32][crc32][payload]`; a write always overwrites the slot
//!   that does *not* hold the newest state, so a write torn by a crash leaves
//!   the previous state readable. The crc covers `seq` and `len` as well.
//!
//! # Ordering rules that make recovery decidable
//!
//! * append: records, fsync segment, raise watermark in `meta` (fsync), then
//!   report the entries flushed. Anything past the watermark was therefore
//!   never acknowledged and may be discarded after a crash, even when a damaged
//!   record is followed by intact ones (unsynced pages reach the disk in any
//!   order).
//! * truncate: lower the watermark first, then delete segments newest-first,
//!   then `ftruncate`; a crash at any point leaves a contiguous log.
//! * purge: record `last_purged` first, then delete segments oldest-first.
//!
//! Non-purged entries are also kept in memory; reads never touch the disk.
//! Blocking file I/O runs on tokio's blocking pool, so the store works on both
//! the current-thread and the multi-thread runtime.

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Debug;
use std::fs;
use std::fs::File;
use std::fs::OpenOptions;
use std::io;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::os::unix::fs::FileExt;
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
use serde::Deserialize;
use serde::Serialize;

use crate::codec;
use crate::codec::CodecError;

/// Size at which a segment is closed and a new one started.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

const SEGMENT_SUFFIX: &str = ".wal";
const SEGMENT_NAME_DIGITS: usize = 20;
const RECORD_HEADER: usize = 8;

const META_FILE: &str = "meta";
// One page per slot, so a torn page write can damage at most one copy.
const META_SLOT_BYTES: usize = 4096;
const META_HEADER: usize = 16;

const RESTORE_ADVICE: &str = "restore this replica from a peer (wipe its data dir and re-add it)";

/// Why the log store could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "log segment {} is corrupt at offset {offset} (record for index {index}): {reason}; \
         refusing to start — {RESTORE_ADVICE}",
        path.display()
    )]
    CorruptSegment {
        path: PathBuf,
        offset: u64,
        index: u64,
        reason: String,
    },

    #[error(
        "log segment {} starts at index {found} where index {expected} was expected: a segment \
         is missing or out of place; refusing to start — {RESTORE_ADVICE}",
        path.display()
    )]
    MissingEntries {
        path: PathBuf,
        expected: u64,
        found: u64,
    },

    #[error(
        "log segment file name {} is not a {SEGMENT_NAME_DIGITS}-digit index followed by \
         {SEGMENT_SUFFIX}; move it out of the log directory",
        path.display()
    )]
    BadSegmentName { path: PathBuf },

    #[error(
        "log meta file {} is unreadable: {reason}; refusing to start because the vote and the \
         acknowledged log position are unknown — {RESTORE_ADVICE}",
        path.display()
    )]
    CorruptMeta { path: PathBuf, reason: String },

    #[error(
        "log directory {} holds log segments but no usable meta file ({}); refusing to start \
         because the vote and the acknowledged log position are unknown — {RESTORE_ADVICE}",
        dir.display(),
        reason
    )]
    MissingMeta { dir: PathBuf, reason: &'static str },

    #[error(
        "log in {} {} but this replica had acknowledged up to {watermark}: entries were lost; \
         refusing to vote with a shortened log — {RESTORE_ADVICE}",
        dir.display(),
        describe_end(*.last)
    )]
    LostEntries {
        dir: PathBuf,
        last: Option<u64>,
        watermark: u64,
    },

    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: CodecError,
    },

    #[error("encoded {what} is {len} bytes, more than the {max} bytes it may take")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },

    #[error(
        "cannot append entry {found}: the log can only continue at index {expected} (an append \
         must neither leave a gap nor overwrite entries that were not truncated first)"
    )]
    NonContiguousAppend { expected: u64, found: u64 },

    #[error(
        "log store stopped accepting writes after an earlier failure ({0}); restart the process \
         so the log is recovered from disk"
    )]
    Failed(String),

    #[error("log store I/O task failed: {0}")]
    Task(String),
}

fn describe_end(last: Option<u64>) -> String {
    match last {
        Some(i) => format!("ends at index {i}"),
        None => "is empty".to_string(),
    }
}

fn io_error<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> LogStoreError + 'a {
    move |source| LogStoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Tunables for [`LogStore::open_with_options`].
#[derive(Debug, Clone)]
pub struct LogStoreOptions {
    /// A segment is closed before it would grow past this many bytes (a
    /// single larger record still gets a segment of its own).
    pub segment_bytes: u64,
}

impl Default for LogStoreOptions {
    fn default() -> Self {
        Self {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "")]
struct MetaState<NID: NodeId> {
    vote: Option<Vote<NID>>,
    committed: Option<LogId<NID>>,
    last_purged: Option<LogId<NID>>,
    /// `None` until the first entry is fsynced; index 0 is a real entry.
    watermark: Option<u64>,
}

impl<NID: NodeId> Default for MetaState<NID> {
    fn default() -> Self {
        Self {
            vote: None,
            committed: None,
            last_purged: None,
            watermark: None,
        }
    }
}

enum Slot<NID: NodeId> {
    Blank,
    Torn(&'static str),
    Valid { seq: u64, state: MetaState<NID> },
}

struct MetaFile<NID: NodeId> {
    path: PathBuf,
    file: File,
    seq: u64,
    /// Slot holding `seq`; the next write goes to the other one.
    slot: usize,
    state: MetaState<NID>,
}

impl<NID: NodeId> MetaFile<NID> {
    fn open(dir: &Path, have_segments: bool) -> Result<Self, LogStoreError> {
        let path = dir.join(META_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_error("read", &path)(e)),
        };
        if bytes.is_empty() {
            if have_segments {
                return Err(LogStoreError::MissingMeta {
                    dir: dir.to_path_buf(),
                    reason: "meta file is missing or empty",
                });
            }
            let file = crate::file_modes::options()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_error("create", &path))?;
            let mut meta = MetaFile {
                path,
                file,
                seq: 0,
                slot: 1,
                state: MetaState::default(),
            };
            meta.store(MetaState::default())?;
            sync_dir(dir)?;
            return Ok(meta);
        }

        let slots = [
            parse_slot::<NID>(&path, &bytes, 0)?,
            parse_slot::<NID>(&path, &bytes, 1)?,
        ];
        let newest = slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Slot::Valid { seq, .. } => Some((i, *seq)),
                _ => None,
            })
            .max_by_key(|(_, seq)| *seq);
        let Some((slot, seq)) = newest else {
            let reason = match (&slots[0], &slots[1]) {
                (Slot::Torn(a), Slot::Torn(b)) => {
                    format!("both copies are damaged (slot A: {a}; slot B: {b})")
                }
                (Slot::Torn(a), _) => {
                    format!("slot A is damaged ({a}) and slot B was never written")
                }
                (_, Slot::Torn(b)) => {
                    format!("slot B is damaged ({b}) and slot A was never written")
                }
                _ => "the file holds no state, only zeros".to_string(),
            };
            return Err(LogStoreError::CorruptMeta { path, reason });
        };
        if let Slot::Torn(why) = &slots[1 - slot] {
            tracing::warn!(
                path = %path.display(),
                damaged_slot = 1 - slot,
                reason = why,
                "log meta: one copy is damaged (an interrupted write); using the other copy"
            );
        }
        let Slot::Valid { state, .. } = slots_into(slots, slot) else {
            unreachable!("slot was selected because it is valid")
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_error("open", &path))?;
        Ok(MetaFile {
            path,
            file,
            seq,
            slot,
            state,
        })
    }

    /// Durably replaces the stored state. Never touches the slot holding the
    /// newest state, so a crash mid-write falls back to it.
    fn store(&mut self, state: MetaState<NID>) -> Result<(), LogStoreError> {
        let payload = codec::encode(&state).map_err(|source| LogStoreError::Encode {
            what: "log meta state",
            source,
        })?;
        if payload.len() > META_SLOT_BYTES - META_HEADER {
            return Err(LogStoreError::TooLarge {
                what: "log meta state",
                len: payload.len(),
                max: META_SLOT_BYTES - META_HEADER,
            });
        }
        let seq = self.seq + 1;
        let slot = 1 - self.slot;
        let mut buf = vec![0u8; META_SLOT_BYTES];
        buf[0..8].copy_from_slice(&seq.to_le_bytes());
        buf[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        buf[META_HEADER..META_HEADER + payload.len()].copy_from_slice(&payload);
        let crc = meta_crc(&buf[0..12], &payload);
        buf[12..16].copy_from_slice(&crc.to_le_bytes());
        self.file
            .write_all_at(&buf, (slot * META_SLOT_BYTES) as u64)
            .map_err(io_error("write", &self.path))?;
        self.file
            .sync_data()
            .map_err(io_error("fsync", &self.path))?;
        self.seq = seq;
        self.slot = slot;
        self.state = state;
        Ok(())
    }
}

fn slots_into<NID: NodeId>(slots: [Slot<NID>; 2], pick: usize) -> Slot<NID> {
    let [a, b] = slots;
    if pick == 0 {
        a
    } else {
        b
    }
}

fn meta_crc(header: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(header);
    hasher.update(payload);
    hasher.finalize()
}

fn parse_slot<NID: NodeId>(
    path: &Path,
    bytes: &[u8],
    slot: usize,
) -> Result<Slot<NID>, LogStoreError> {
    let start = slot * META_SLOT_BYTES;
    if bytes.len() <= start {
        return Ok(Slot::Blank);
    }
    let raw = &bytes[start..bytes.len().min(start + META_SLOT_BYTES)];
    if raw.iter().all(|b| *b == 0) {
        return Ok(Slot::Blank);
    }
    if raw.len() < META_HEADER {
        return Ok(Slot::Torn("incomplete header"));
    }
    let seq = u64::from_le_bytes(raw[0..8].try_into().expect("8 bytes"));
    let len = u32::from_le_bytes(raw[8..12].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(raw[12..16].try_into().expect("4 bytes"));
    if len > META_SLOT_BYTES - META_HEADER || META_HEADER + len > raw.len() {
        return Ok(Slot::Torn("length out of range"));
    }
    let payload = &raw[META_HEADER..META_HEADER + len];
    if meta_crc(&raw[0..12], payload) != crc {
        return Ok(Slot::Torn("checksum mismatch"));
    }
    // A copy that passes its checksum but does not decode was not torn; it
    // was written by a build we cannot read. Falling back to the older copy
    // would silently roll back the vote, so refuse instead.
    let state = codec::decode(payload).map_err(|e| LogStoreError::CorruptMeta {
        path: path.to_path_buf(),
        reason: format!(
            "slot {} passes its checksum but cannot be decoded ({e}); was it written by a newer \
             raftvisor?",
            if slot == 0 { "A" } else { "B" }
        ),
    })?;
    Ok(Slot::Valid { seq, state })
}

enum Record<'a> {
    Valid { payload: &'a [u8], end: usize },
    Invalid(&'static str),
}

fn read_record(data: &[u8], at: usize) -> Record<'_> {
    let rest = &data[at..];
    if rest.len() < RECORD_HEADER {
        return Record::Invalid("incomplete record header");
    }
    let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    if len == 0 {
        return Record::Invalid("zero record length");
    }
    if rest.len() - RECORD_HEADER < len {
        return Record::Invalid("record is cut short by the end of the file");
    }
    let payload = &rest[RECORD_HEADER..RECORD_HEADER + len];
    if crc32fast::hash(payload) != crc {
        return Record::Invalid("checksum mismatch");
    }
    Record::Valid {
        payload,
        end: at + RECORD_HEADER + len,
    }
}

fn encode_record(payload: &[u8], out: &mut Vec<u8>) -> Result<(), LogStoreError> {
    let len = u32::try_from(payload.len()).map_err(|_| LogStoreError::TooLarge {
        what: "log entry",
        len: payload.len(),
        max: u32::MAX as usize,
    })?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Whether any intact record of type `E` starts somewhere in `data[from..]`.
/// Only used on the failure path, so a byte-by-byte probe is affordable.
fn valid_record_after<E: DeserializeOwned>(data: &[u8], from: usize) -> bool {
    (from..data.len()).any(|at| match read_record(data, at) {
        Record::Valid { payload, .. } => codec::decode::<E>(payload).is_ok(),
        Record::Invalid(_) => false,
    })
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!(
        "{first:0width$}{SEGMENT_SUFFIX}",
        width = SEGMENT_NAME_DIGITS
    ))
}

/// Segment files in `dir`, oldest first; other files are not ours and are left alone.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogStoreError> {
    let mut found = Vec::new();
    for item in fs::read_dir(dir).map_err(io_error("list", dir))? {
        let item = item.map_err(io_error("list", dir))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) else {
            continue;
        };
        let path = item.path();
        if stem.len() != SEGMENT_NAME_DIGITS || !stem.bytes().all(|b| b.is_ascii_digit()) {
            return Err(LogStoreError::BadSegmentName { path });
        }
        let first = stem
            .parse::<u64>()
            .map_err(|_| LogStoreError::BadSegmentName { path: path.clone() })?;
        found.push((first, path));
    }
    found.sort();
    Ok(found)
}

fn sync_dir(dir: &Path) -> Result<(), LogStoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("fsync directory", dir))
}

fn remove_file(path: &Path) -> Result<(), LogStoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("delete", path)(e)),
    }
}

struct Segment {
    path: PathBuf,
    len: u64,
    /// Index of the last record; every tracked segment holds at least one.
    last: u64,
}

/// Everything on disk, owned by whichever write is in progress.
struct Disk<NID: NodeId> {
    dir: PathBuf,
    segment_bytes: u64,
    /// Keyed by the index of the segment's first record.
    segments: BTreeMap<u64, Segment>,
    /// Byte offset of each non-purged record inside its segment, for `ftruncate`.
    offsets: BTreeMap<u64, u64>,
    /// Open handle of the newest segment, if it has been opened for writing.
    active: Option<File>,
    meta: MetaFile<NID>,
    /// Set when a write failed half-way: memory and disk may disagree, so
    /// only a restart (which re-reads the disk) may continue.
    failed: Option<String>,
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

struct Chunk {
    /// `Some(first index)` when the chunk starts a new segment.
    new_segment: Option<u64>,
    start: u64,
    bytes: Vec<u8>,
    last: u64,
    offsets: Vec<(u64, u64)>,
}

impl<NID: NodeId> Disk<NID> {
    fn guarded<T>(
        &mut self,
        op: impl FnOnce(&mut Self) -> Result<T, LogStoreError>,
    ) -> Result<T, LogStoreError> {
        if let Some(why) = &self.failed {
            return Err(LogStoreError::Failed(why.clone()));
        }
        let result = op(self);
        if let Err(e) = &result {
            self.failed = Some(e.to_string());
        }
        result
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

    fn update_meta(
        &mut self,
        change: impl FnOnce(&mut MetaState<NID>),
    ) -> Result<(), LogStoreError> {
        let mut state = self.meta.state.clone();
        change(&mut state);
        if state == self.meta.state {
            return Ok(());
        }
        self.meta.store(state)
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
            file.sync_data().map_err(io_error("fsync", path))?;
        }
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
            io::Error::from_raw_os_error(24)
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
                    let path = segment_path(&self.dir, first);
                    let file = crate::file_modes::options()
                        .write(true)
                        .create_new(true)
                        .open(&path)
                        .map_err(io_error("create", &path))?;
                    file.write_all_at(&chunk.bytes, 0)
                        .map_err(io_error("write", &path))?;
                    sync_dir(&self.dir)?;
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
                    file.write_all_at(&chunk.bytes, seg.len)
                        .map_err(io_error("write", &seg.path))?;
                    seg.len += chunk.bytes.len() as u64;
                    seg.last = chunk.last;
                }
            }
            self.offsets.extend(chunk.offsets);
        }
        self.sync_active()?;
        self.update_meta(|m| m.watermark = Some(last_index))
    }

    fn truncate(&mut self, since: u64) -> Result<(), LogStoreError> {
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
            sync_dir(&self.dir)?;
        }
        self.offsets.split_off(&since);
        Ok(())
    }

    fn purge(&mut self, upto: LogId<NID>) -> Result<(), LogStoreError> {
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
        }
        if self.segments.is_empty() {
            self.active = None;
        }
        if deleted {
            sync_dir(&self.dir)?;
        }
        self.offsets = self.offsets.split_off(&index.saturating_add(1));
        Ok(())
    }
}

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
        self.disk
            .lock()
            .map_err(|_| LogStoreError::Failed("a previous log write panicked".to_string()))
    }

    fn with_mem<T>(&self, f: impl FnOnce(&Mem<C>) -> T) -> Result<T, LogStoreError> {
        let mem = self
            .mem
            .read()
            .map_err(|_| LogStoreError::Failed("a previous log write panicked".to_string()))?;
        Ok(f(&mem))
    }

    fn update_mem(
        &self,
        disk: &Disk<C::NodeId>,
        f: impl FnOnce(&mut Mem<C>),
    ) -> Result<(), LogStoreError> {
        let mut mem = self
            .mem
            .write()
            .map_err(|_| LogStoreError::Failed("a previous log write panicked".to_string()))?;
        mem.meta = disk.meta.state.clone();
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
        let Recovered { disk, entries } = recover::<C>(dir, &options)?;
        let mem = Mem {
            entries,
            meta: disk.meta.state.clone(),
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
    /// replica; `None` before the first entry. Index 0 is a real entry, hence
    /// the `Option`.
    pub fn durable_watermark(&self) -> Option<u64> {
        self.shared
            .with_mem(|m| m.meta.watermark)
            .unwrap_or_default()
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
            .map_err(|e| LogStoreError::Task(e.to_string()))?
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
        read_range(&self.shared, range)
            .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Read, e))
    }
}

impl<C> RaftLogReader<C> for LogReader<C>
where
    C: RaftTypeConfig,
    C::Entry: Clone + Serialize + DeserializeOwned,
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
            disk.guarded(|d| d.update_meta(|m| m.committed = committed))?;
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
            if let Some(why) = &disk.failed {
                return Err(LogStoreError::Failed(why.clone()));
            }
            // Checked and encoded before any byte is written, so a bad batch
            // is rejected without disabling the store.
            let mut next = disk.next_index();
            let mut records = Vec::with_capacity(entries.len());
            for entry in &entries {
                let index = entry.get_log_id().index;
                next.check(index)?;
                let payload = codec::encode(entry).map_err(|source| LogStoreError::Encode {
                    what: "log entry",
                    source,
                })?;
                records.push((index, payload));
                next = NextIndex::Exactly(index + 1);
            }
            disk.guarded(|d| d.append(&records))?;
            shared.update_mem(&disk, |m| {
                for entry in entries {
                    m.entries.insert(entry.get_log_id().index, entry);
                }
            })
        })
        .await
        .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        // Entries are fsynced and the watermark covers them, so they may now be
        // acknowledged. On error the callback is dropped: the returned error
        // already stops Raft.
        callback.log_io_completed(Ok(()));
        Ok(())
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

struct Recovered<C: RaftTypeConfig> {
    disk: Disk<C::NodeId>,
    /// Non-purged entries, by index.
    entries: BTreeMap<u64, C::Entry>,
}

/// A damaged end of the newest segment that recovery will cut off.
struct TornTail {
    path: PathBuf,
    offset: u64,
    index: u64,
    reason: &'static str,
    dropped_bytes: u64,
    /// Whether the segment keeps any record once cut.
    keeps_records: bool,
}

/// Reads and checks everything on disk without modifying it, then applies
/// the repairs a crash explains. Refusing therefore leaves the evidence intact.
fn recover<C>(dir: &Path, options: &LogStoreOptions) -> Result<Recovered<C>, LogStoreError>
where
    C: RaftTypeConfig,
    C::Entry: DeserializeOwned,
{
    if !dir.exists() {
        crate::file_modes::create_dir_all(dir).map_err(io_error("create directory", dir))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    let listed = list_segments(dir)?;
    let meta = MetaFile::<C::NodeId>::open(dir, !listed.is_empty())?;
    let purged = meta.state.last_purged.as_ref().map(|l| l.index);
    let watermark = meta.state.watermark;
    let acknowledged = |index: u64| watermark.is_some_and(|w| index <= w);

    let mut doomed: Vec<PathBuf> = Vec::new();
    let mut kept: BTreeMap<u64, Segment> = BTreeMap::new();
    let mut entries: BTreeMap<u64, C::Entry> = BTreeMap::new();
    let mut offsets: BTreeMap<u64, u64> = BTreeMap::new();
    let mut torn: Option<TornTail> = None;

    for (i, (first, path)) in listed.iter().enumerate() {
        let newest = i + 1 == listed.len();
        // Left behind by a purge interrupted after `meta` recorded it.
        if !newest && purged.is_some_and(|p| listed[i + 1].0 <= p + 1) {
            doomed.push(path.clone());
            continue;
        }
        if let Some(prev) = kept.values().next_back() {
            if *first != prev.last + 1 {
                return Err(LogStoreError::MissingEntries {
                    path: path.clone(),
                    expected: prev.last + 1,
                    found: *first,
                });
            }
        }
        let data = fs::read(path).map_err(io_error("read", path))?;
        let corrupt = |offset: usize, index: u64, reason: String| LogStoreError::CorruptSegment {
            path: path.clone(),
            offset: offset as u64,
            index,
            reason,
        };
        let mut at = 0usize;
        let mut expected = *first;
        while at < data.len() {
            match read_record(&data, at) {
                Record::Valid { payload, end } => {
                    let entry: C::Entry = codec::decode(payload).map_err(|e| {
                        corrupt(
                            at,
                            expected,
                            format!(
                                "the checksum is valid but the entry cannot be decoded ({e}); was \
                                 it written by a newer raftvisor?"
                            ),
                        )
                    })?;
                    let index = entry.get_log_id().index;
                    if index != expected {
                        return Err(corrupt(
                            at,
                            expected,
                            format!("record holds index {index} where index {expected} belongs"),
                        ));
                    }
                    if purged.is_none_or(|p| index > p) {
                        offsets.insert(index, at as u64);
                        entries.insert(index, entry);
                    }
                    expected += 1;
                    at = end;
                }
                Record::Invalid(reason) => {
                    if !newest {
                        return Err(corrupt(
                            at,
                            expected,
                            format!("{reason} in a segment that newer segments follow"),
                        ));
                    }
                    // Past the watermark nothing was acknowledged, and intact
                    // records after a bad one are just unsynced pages that
                    // happened to reach the disk first. Within it, intact
                    // records after a bad one mean the disk damaged data.
                    let zeros = data[at..].iter().all(|b| *b == 0);
                    if acknowledged(expected)
                        && !zeros
                        && valid_record_after::<C::Entry>(&data, at + 1)
                    {
                        return Err(corrupt(
                            at,
                            expected,
                            format!("{reason} with valid records after it"),
                        ));
                    }
                    torn = Some(TornTail {
                        path: path.clone(),
                        offset: at as u64,
                        index: expected,
                        reason,
                        dropped_bytes: (data.len() - at) as u64,
                        keeps_records: at > 0,
                    });
                    break;
                }
            }
        }
        if at == 0 {
            if !newest {
                return Err(corrupt(
                    0,
                    *first,
                    "segment holds no records but newer segments follow it".to_string(),
                ));
            }
            if torn.is_none() {
                doomed.push(path.clone());
            }
            continue;
        }
        kept.insert(
            *first,
            Segment {
                path: path.clone(),
                len: at as u64,
                last: expected - 1,
            },
        );
    }

    // A newest segment whose every record is purged goes, like in `purge`.
    if let Some(p) = purged {
        while let Some(entry) = kept.first_entry() {
            if entry.get().last > p {
                break;
            }
            let seg = entry.remove();
            if torn.as_ref().is_some_and(|t| t.path == seg.path) {
                torn = None;
            }
            doomed.push(seg.path);
        }
        if let Some((first, seg)) = kept.first_key_value() {
            if *first > p + 1 {
                return Err(LogStoreError::MissingEntries {
                    path: seg.path.clone(),
                    expected: p + 1,
                    found: *first,
                });
            }
        }
    }

    let last = entries.keys().next_back().copied().max(purged);
    if let Some(w) = watermark {
        if last.is_none_or(|l| l < w) {
            return Err(LogStoreError::LostEntries {
                dir: dir.to_path_buf(),
                last,
                watermark: w,
            });
        }
    }

    // Every check passed; from here on only repairs.
    let mut dir_changed = false;
    if let Some(t) = &torn {
        tracing::warn!(
            segment = %t.path.display(),
            offset = t.offset,
            index = t.index,
            reason = t.reason,
            dropped_bytes = t.dropped_bytes,
            "log: cutting off a torn write at the end of the log (never acknowledged, safe to drop)"
        );
        if t.keeps_records {
            let file = OpenOptions::new()
                .write(true)
                .open(&t.path)
                .map_err(io_error("open", &t.path))?;
            file.set_len(t.offset)
                .map_err(io_error("truncate", &t.path))?;
            file.sync_data().map_err(io_error("fsync", &t.path))?;
        } else {
            doomed.push(t.path.clone());
        }
    }
    for path in &doomed {
        tracing::info!(segment = %path.display(), "log: removing segment left by an interrupted purge or write");
        remove_file(path)?;
        dir_changed = true;
    }
    if dir_changed {
        sync_dir(dir)?;
    }
    // After a process crash the newest records may still be only in the page
    // cache; make what we are about to serve durable.
    let active = match kept.values().next_back() {
        Some(seg) => {
            let file = OpenOptions::new()
                .write(true)
                .open(&seg.path)
                .map_err(io_error("open", &seg.path))?;
            file.sync_data().map_err(io_error("fsync", &seg.path))?;
            Some(file)
        }
        None => None,
    };

    tracing::info!(
        dir = %dir.display(),
        segments = kept.len(),
        first_index = entries.keys().next().copied(),
        last_index = entries.keys().next_back().copied(),
        last_purged = purged,
        watermark = watermark,
        "log: opened"
    );

    let disk = Disk {
        dir: dir.to_path_buf(),
        segment_bytes: options.segment_bytes.max(1),
        segments: kept,
        offsets,
        active,
        meta,
        failed: None,
    };
    Ok(Recovered { disk, entries })
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use openraft::storage::RaftLogStorageExt;
    use openraft::storage::RaftStateMachine;
    use openraft::testing::StoreBuilder;
    use openraft::testing::Suite;
    use openraft::BasicNode;
    use openraft::CommittedLeaderId;
    use openraft::Entry;
    use openraft::EntryPayload;
    use openraft::RaftSnapshotBuilder;
    use openraft::Snapshot;
    use openraft::SnapshotMeta;
    use openraft::StoredMembership;
    use tempfile::TempDir;

    use super::*;

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
        ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>>
        {
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
        {
            let mut store = open(&dir);
            store.blocking_append(entries(1, 1..=5)).await.unwrap();
        }
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
        {
            let mut store = open(&dir);
            store.blocking_append(entries(1, 1..=5)).await.unwrap();
        }
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
        {
            let mut store = open(&dir);
            store.blocking_append(entries(1, 1..=5)).await.unwrap();
        }
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
        let old_meta;
        {
            let mut store = open(&dir);
            store.blocking_append(entries(1, 1..=3)).await.unwrap();
            old_meta = fs::read(dir.join(META_FILE)).unwrap();
            store.blocking_append(entries(1, 4..=6)).await.unwrap();
        }
        // The batch 4..=6 never got its fsync: pages of 5 and 6 landed, 4 did not.
        fs::write(dir.join(META_FILE), &old_meta).unwrap();
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
        let old_meta;
        {
            let mut store = open(&dir);
            store.blocking_append(entries(1, 1..=3)).await.unwrap();
            old_meta = fs::read(dir.join(META_FILE)).unwrap();
            store.blocking_append(entries(1, 4..=6)).await.unwrap();
        }
        fs::write(dir.join(META_FILE), &old_meta).unwrap();
        let mut store = open(&dir);
        assert_eq!(ids(&mut store).await, expect_ids(1, 1..=6));
        assert_eq!(store.durable_watermark(), Some(3));
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
        {
            let mut store = open_small(&dir);
            store.blocking_append(entries(1, 0..=30)).await.unwrap();
        }
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
    async fn segments_without_meta_refuse() {
        let (_tmp, dir) = scratch();
        {
            let mut store = open(&dir);
            store.blocking_append(entries(1, 0..=2)).await.unwrap();
        }
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
}
