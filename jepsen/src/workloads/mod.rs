//! What the clients do while the nemesis works: KV registers for the
//! linearizability checker, a grow-only set, and supervised services whose
//! containers are watched from the engine's side.

pub mod register;
pub mod set;
pub mod supervisor;
