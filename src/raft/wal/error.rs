//! Why the log could not be opened or written: one typed error for every
//! file of the WAL, each variant carrying the path and position a person
//! needs to repair the replica. It owns the wording of those messages and
//! must never decide anything itself (no I/O, no recovery policy).

use std::io;
use std::path::Path;
use std::path::PathBuf;

use crate::codec::CodecError;

pub(super) const RESTORE_ADVICE: &str =
    "restore this replica from a peer (wipe its data dir and re-add it)";

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
        "log segment file name {} is not a {digits}-digit index followed by {suffix}; move it \
         out of the log directory",
        path.display()
    )]
    BadSegmentName {
        path: PathBuf,
        digits: usize,
        suffix: &'static str,
    },

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

    #[error(
        "log store stopped accepting writes after an earlier failure (a previous log write \
         panicked); restart the process so the log is recovered from disk"
    )]
    Poisoned,

    #[error("log store I/O task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}

fn describe_end(last: Option<u64>) -> String {
    match last {
        Some(i) => format!("ends at index {i}"),
        None => "is empty".to_string(),
    }
}

pub(super) fn io_error<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> LogStoreError + 'a {
    move |source| LogStoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}
