//! The write-ahead log behind the Raft log store: every entry this replica
//! accepts, its vote, and the bookkeeping needed to prove after a crash that
//! nothing it acknowledged was lost. It owns the files in the log directory
//! and the rules for writing and recovering them; it must never speak to
//! openraft's storage traits or to async code (that is
//! [`crate::raft::log_store`]'s job) and never keeps a copy of the entries
//! for readers.
//!
//! Files by responsibility:
//! * [`segment`]: the segment files and their record format;
//! * [`meta`]: the two-slot meta file (vote, committed, purge point, watermark);
//! * [`dir`]: durable directory operations (fsync, delete);
//! * [`disk`]: append, truncate and purge against segments and meta;
//! * [`recovery`]: opening the directory after a crash, repair or refusal;
//! * [`error`]: why the log could not be opened or written.
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
//! * append: records, one fsync of the segment, then report the entries
//!   flushed (this is what acknowledges them), then raise the watermark in
//!   `meta` (fsync) before the next write. The acknowledgement waits for one
//!   fsync; the watermark's is off its path. Entries are acknowledged only
//!   after their fsync, so a crash leaves every acknowledged record intact
//!   and the first damaged record of the newest segment after all of them.
//!   Past the stored watermark nothing is known to be acknowledged, so a
//!   damaged record followed by intact ones there is taken for an unsynced
//!   batch whose pages reached the disk out of order (they do) and cut;
//!   within it, that is damage a crash cannot explain and recovery refuses.
//!   The one batch a crash can leave acknowledged but past the stored
//!   watermark is the last, in the time of one meta fsync: if the disk also
//!   damaged that very batch, it is cut like a torn write. Acknowledging
//!   only after both fsyncs would close that window at the price of a
//!   second fsync on every write's path.
//! * the commit point rides along with the next meta write: openraft needs
//!   it only to apply committed entries sooner after a restart, and a
//!   lower one is learned again from the leader. A leader cannot learn it
//!   from anyone, so the log store never lets a restarted replica resume
//!   leading its old term (it reads its vote back as not committed).
//! * truncate: lower the stored watermark first if it covers the cut, then
//!   delete segments newest-first, then `ftruncate`; a crash at any point
//!   leaves a contiguous log.
//! * purge: record `last_purged` first, then delete segments oldest-first.
//!
//! # Crash points
//!
//! Builds with the `failpoints` feature kill the process (SIGKILL, as a
//! power cut or `kill -9` would stop it) at each step of the write path when
//! the fail point is set to `return`: `log-crash-before-write`,
//! `log-crash-before-sync`, `log-crash-after-sync`,
//! `log-crash-before-rotate`, `log-crash-after-create`,
//! `log-crash-meta-before-sync`, `log-crash-before-truncate` and
//! `log-crash-during-purge`.

/// Kills the process where it stands; see "Crash points".
macro_rules! crash_point {
    ($name:literal) => {
        fail::fail_point!($name, |_| $crate::raft::wal::crash($name))
    };
}

mod dir;
mod disk;
mod error;
mod meta;
mod recovery;
mod segment;
#[cfg(test)]
mod tests;

pub(crate) use disk::Disk;
pub use disk::SyncCounts;
pub use error::LogStoreError;
pub(crate) use meta::MetaState;
pub(crate) use recovery::recover;
pub(crate) use recovery::Recovered;

/// Ends the process at once, as SIGKILL does: no destructor, no flush.
#[cfg(feature = "failpoints")]
pub(crate) fn crash(point: &str) -> ! {
    eprintln!("fail point {point}: killing the process");
    // SAFETY: getpid and kill have no preconditions.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    std::process::abort()
}

/// Size at which a segment is closed and a new one started.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Tunables for [`crate::raft::log_store::LogStore::open_with_options`].
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
