//! What the clients do while the nemesis works: KV registers for the
//! linearizability checker, a grow-only set, and supervised services whose
//! containers are watched from the engine's side.

pub mod register;
pub mod set;
pub mod supervisor;

use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;

/// Pauses one client between its operations for a random time in `range`.
pub async fn think(rng: &mut StdRng, (low, high): (Duration, Duration)) {
    if high > Duration::ZERO {
        let pause =
            rng.gen_range(low.as_micros() as u64..=high.as_micros().max(low.as_micros()) as u64);
        tokio::time::sleep(Duration::from_micros(pause)).await;
    }
}
