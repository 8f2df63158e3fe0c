//! DNS service discovery served by every replica from its local state:
//! [`records`] computes the zone (pure), [`server`] speaks the protocol
//! (hickory-server; UDP through [`udp`]'s workers). DNS never waits for Raft.

mod cache;
pub mod client;
pub mod records;
pub mod server;
mod udp;
