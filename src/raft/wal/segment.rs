//! Segment files: their names (the index of the first entry, 20 digits,
//! `.wal`), their record format `[len u32 LE][crc32 u32 LE][payload]`, and
//! listing them. It owns reading and encoding single records; it must never
//! decide what a damaged record means (that is [`super::recovery`]'s job)
//! nor write files itself (that is [`super::disk`]'s job).

use std::fs;
use std::path::Path;
use std::path::PathBuf;

use serde::de::DeserializeOwned;

use super::error::io_error;
use super::error::LogStoreError;
use crate::codec;

const SEGMENT_SUFFIX: &str = ".wal";
const SEGMENT_NAME_DIGITS: usize = 20;
pub(super) const RECORD_HEADER: usize = 8;

pub(super) enum Record<'a> {
    Valid { payload: &'a [u8], end: usize },
    Invalid(&'static str),
}

pub(super) fn read_record(data: &[u8], at: usize) -> Record<'_> {
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

pub(super) fn encode_record(payload: &[u8], out: &mut Vec<u8>) -> Result<(), LogStoreError> {
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
pub(super) fn valid_record_after<E: DeserializeOwned>(data: &[u8], from: usize) -> bool {
    (from..data.len()).any(|at| match read_record(data, at) {
        Record::Valid { payload, .. } => codec::decode::<E>(payload).is_ok(),
        Record::Invalid(_) => false,
    })
}

pub(super) fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!(
        "{first:0width$}{SEGMENT_SUFFIX}",
        width = SEGMENT_NAME_DIGITS
    ))
}

fn bad_segment_name(path: PathBuf) -> LogStoreError {
    LogStoreError::BadSegmentName {
        path,
        digits: SEGMENT_NAME_DIGITS,
        suffix: SEGMENT_SUFFIX,
    }
}

/// Segment files in `dir`, oldest first; other files are not ours and are left alone.
pub(super) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogStoreError> {
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
            return Err(bad_segment_name(path));
        }
        let first = stem
            .parse::<u64>()
            .map_err(|_| bad_segment_name(path.clone()))?;
        found.push((first, path));
    }
    found.sort();
    Ok(found)
}

pub(super) struct Segment {
    pub(super) path: PathBuf,
    pub(super) len: u64,
    /// Index of the last record; every tracked segment holds at least one.
    pub(super) last: u64,
}
