//! DNS service discovery served by every replica from its local state:
//! [`records`] computes the zone (pure), [`server`] speaks the protocol
//! (hickory-server; UDP through [`udp`]'s workers); [`forward`] asks the
//! upstream resolvers, for allowed clients only. DNS never waits for Raft.

mod cache;
pub mod client;
pub mod forward;
pub mod records;
pub mod server;
mod udp;
