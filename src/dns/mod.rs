//! DNS service discovery served by every replica from its local state:
//! [`records`] computes the zone (pure), [`handler`] answers queries from
//! it, [`server`] serves them (hickory-server for TCP, [`udp`]'s workers, which send
//! repeated questions [`ready`]-made answers); [`forward`] asks the
//! upstream resolvers, for allowed clients only. DNS never waits for Raft.

mod cache;
pub mod client;
pub mod forward;
mod handler;
mod ready;
pub mod records;
pub mod server;
mod udp;
