//! How a replica whose Raft core stopped ends: a core stopped by a storage
//! error or a panic can never write again, so the agent exits with a code
//! of its own (for the restart policy to act) and `/v1/health` answers 503
//! until it has; an orderly stop (shutdown, a removed replica) is no
//! failure.

use super::NodeId;

/// Exit code of a replica whose Raft storage failed (sysexits EX_IOERR):
/// its log can take no more writes, so it ends for its restart policy to
/// bring it back (recovery then checks the log on disk).
pub const EXIT_STORAGE: i32 = 74;
/// Exit code of a replica whose Raft core panicked (EX_SOFTWARE).
pub const EXIT_RAFT_PANICKED: i32 = 70;

/// The exit code for a Raft core that stopped with `fatal`; `None` for an
/// orderly stop (shutdown, a removed replica).
pub fn exit_code_of(fatal: &openraft::error::Fatal<NodeId>) -> Option<i32> {
    use openraft::error::Fatal;
    match fatal {
        Fatal::StorageError(_) => Some(EXIT_STORAGE),
        Fatal::Panicked => Some(EXIT_RAFT_PANICKED),
        Fatal::Stopped => None,
    }
}
