//! What the clients do while the nemesis works: KV registers for the
//! linearizability checker, a grow-only set, supervised services whose
//! containers are watched from the engine's side, and churn (services
//! scaled, redeployed and moved between nodes during the faults).

pub mod churn;
pub mod pulse;
pub mod register;
pub mod set;
pub mod supervisor;

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Runs `count` clients to their end, each with its own generator drawn
/// from the run's `seed` and the workload's `salt`.
pub async fn run_clients<F, Fut>(count: u64, seed: u64, salt: u64, client: F)
where
    F: Fn(StdRng) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..count {
        workers.spawn(client(StdRng::seed_from_u64(
            seed ^ salt.wrapping_add(worker),
        )));
    }
    while workers.join_next().await.is_some() {}
}

/// Pauses one client between its operations for a random time in `range`.
pub async fn think(rng: &mut StdRng, (low, high): (Duration, Duration)) {
    if high > Duration::ZERO {
        let pause =
            rng.gen_range(low.as_micros() as u64..=high.as_micros().max(low.as_micros()) as u64);
        tokio::time::sleep(Duration::from_micros(pause)).await;
    }
}
