//! raftvisor: a self-healing supervisor for containers and the machines they
//! run on, replicated with Raft. This crate root only wires the modules; the
//! binary in `main.rs` parses the command line and dispatches.

pub mod agent;
pub mod api;
pub mod auth;
pub mod bootstrap;
pub mod cli;
pub mod client;
pub mod codec;
pub mod config;
pub mod dates;
pub mod dns;
pub mod error_chain;
pub mod file_modes;
pub mod image_archive;
pub mod logging;
pub mod provider;
pub mod raft;
pub mod reconcile;
pub mod replica;
pub mod runtime;
pub mod secrets;
pub mod state;
pub mod tls;
pub mod wire;
