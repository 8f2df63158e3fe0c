//! raftvisor: a self-healing supervisor for containers and the machines they
//! run on, replicated with Raft. This crate root only wires the modules; the
//! binary in `main.rs` parses the command line and dispatches.

pub mod codec;
pub mod state;
