//! Opening the log directory: reads and checks every segment and the meta
//! file, cuts off the torn tail a crash leaves, finishes an interrupted
//! purge, and refuses (with advice) any damage a crash cannot explain. It
//! owns that policy; it must never repair anything before every check has
//! passed, so a refusal leaves the evidence intact.

use std::collections::BTreeMap;
use std::fs;
use std::fs::OpenOptions;
use std::path::Path;
use std::path::PathBuf;

use openraft::RaftLogId;
use openraft::RaftTypeConfig;
use serde::de::DeserializeOwned;

use super::dir::remove_file;
use super::dir::sync_dir;
use super::disk::Disk;
use super::error::io_error;
use super::error::LogStoreError;
use super::meta::MetaFile;
use super::segment::list_segments;
use super::segment::read_record;
use super::segment::valid_record_after;
use super::segment::Record;
use super::segment::Segment;
use super::LogStoreOptions;
use crate::codec;

pub(crate) struct Recovered<C: RaftTypeConfig> {
    pub(crate) disk: Disk<C::NodeId>,
    /// Non-purged entries, by index.
    pub(crate) entries: BTreeMap<u64, C::Entry>,
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
pub(crate) fn recover<C>(
    dir: &Path,
    options: &LogStoreOptions,
) -> Result<Recovered<C>, LogStoreError>
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

    // Everything kept is durable now (older segments were synced when they
    // were closed, the newest just above), so the watermark covers it.
    let mut current = meta.state.clone();
    current.watermark = last.or(watermark);
    let disk = Disk {
        dir: dir.to_path_buf(),
        segment_bytes: options.segment_bytes.max(1),
        segments: kept,
        offsets,
        active,
        meta,
        current,
        syncs: Default::default(),
        failed: None,
    };
    Ok(Recovered { disk, entries })
}
