//! The meta file: vote, committed log id, last purged log id and the durable
//! watermark, kept in two checksummed 4 KiB slots so that a write torn by a
//! crash leaves the previous state readable. It owns that file's format and
//! its atomic replacement; it must never touch segments nor decide whether
//! the log as a whole is intact (that is [`super::recovery`]'s job).

use std::fs;
use std::fs::File;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::path::PathBuf;

use openraft::LogId;
use openraft::NodeId;
use openraft::Vote;
use serde::Deserialize;
use serde::Serialize;

use super::dir::sync_dir;
use super::error::io_error;
use super::error::LogStoreError;
use crate::codec;

pub(super) const META_FILE: &str = "meta";
// One page per slot, so a torn page write can damage at most one copy.
pub(super) const META_SLOT_BYTES: usize = 4096;
pub(super) const META_HEADER: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) struct MetaState<NID: NodeId> {
    pub(crate) vote: Option<Vote<NID>>,
    pub(crate) committed: Option<LogId<NID>>,
    pub(crate) last_purged: Option<LogId<NID>>,
    /// `None` until the first entry is fsynced; index 0 is a real entry.
    pub(crate) watermark: Option<u64>,
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

pub(crate) struct MetaFile<NID: NodeId> {
    path: PathBuf,
    file: File,
    seq: u64,
    /// Slot holding `seq`; the next write goes to the other one.
    slot: usize,
    pub(super) state: MetaState<NID>,
    /// fsyncs of this file since it was opened.
    pub(super) syncs: u64,
}

impl<NID: NodeId> MetaFile<NID> {
    pub(super) fn open(dir: &Path, have_segments: bool) -> Result<Self, LogStoreError> {
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
                syncs: 0,
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
            syncs: 0,
        })
    }

    /// Durably replaces the stored state. Never touches the slot holding the
    /// newest state, so a crash mid-write falls back to it.
    pub(super) fn store(&mut self, state: MetaState<NID>) -> Result<(), LogStoreError> {
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
        crash_point!("log-crash-meta-before-sync");
        let started = std::time::Instant::now();
        self.file
            .sync_data()
            .map_err(io_error("fsync", &self.path))?;
        metrics::histogram!("raftvisor_raft_fsync_seconds", "file" => "meta")
            .record(started.elapsed().as_secs_f64());
        self.syncs += 1;
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
