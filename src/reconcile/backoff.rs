//! Backoff arithmetic, pure: the restart delay of a crashing instance
//! (per-service policy: initial, max, jitter, reset after a healthy run)
//! and the retry delay of a reconcile that keeps failing.

use std::time::Duration;

use crate::state::RestartPolicy;

/// Consecutive crashes after which an instance is shown as crash-looping.
pub const CRASH_LOOP_AFTER: u32 = 3;

/// Delay before restarting an instance that crashed after
/// `consecutive_failures` earlier consecutive crashes. The first restart is
/// immediate; then `initial`, doubling up to `max`. `jitter` in [0, 1) spreads
/// restarts by up to ±10 %.
pub fn restart_delay(policy: &RestartPolicy, consecutive_failures: u32, jitter: f64) -> Duration {
    if consecutive_failures == 0 {
        return Duration::ZERO;
    }
    let exponent = (consecutive_failures - 1).min(30);
    let base = policy
        .initial_backoff_ms
        .saturating_mul(1u64 << exponent)
        .min(policy.max_backoff_ms);
    let spread = (base as f64 * 0.1 * (jitter.clamp(0.0, 1.0) * 2.0 - 1.0)) as i64;
    Duration::from_millis((base as i64 + spread).max(0) as u64)
}

/// Whether a container that ran for `ran_for` before dying counts as a
/// fresh start (the failure streak resets).
pub fn resets_streak(policy: &RestartPolicy, ran_for: Duration) -> bool {
    ran_for >= Duration::from_millis(policy.reset_after_ms)
}

/// Retry delay of a reconcile that failed `consecutive_errors` times in a row.
pub fn error_delay(consecutive_errors: u32) -> Duration {
    let exponent = consecutive_errors.saturating_sub(1).min(8);
    Duration::from_millis((100u64 << exponent).min(10_000))
}

/// How long a failed pull (or copy) of an image waits before the next
/// attempt: 2 s doubling up to a minute, so that a registry that is down
/// or refuses the credentials is asked a few times a minute per node, not
/// in a loop.
pub fn pull_delay(consecutive_failures: u32) -> Duration {
    let exponent = consecutive_failures.saturating_sub(1).min(5);
    Duration::from_secs((2u64 << exponent).min(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_delays_grow_to_a_minute() {
        assert_eq!(pull_delay(1), Duration::from_secs(2));
        assert_eq!(pull_delay(2), Duration::from_secs(4));
        assert_eq!(pull_delay(6), Duration::from_secs(60));
        assert_eq!(pull_delay(60), Duration::from_secs(60));
    }

    #[test]
    fn restart_delays_grow_and_cap() {
        let policy = RestartPolicy {
            initial_backoff_ms: 100,
            max_backoff_ms: 1_000,
            reset_after_ms: 10_000,
        };
        let delays: Vec<u64> = (0..7)
            .map(|n| restart_delay(&policy, n, 0.5).as_millis() as u64)
            .collect();
        assert_eq!(delays, vec![0, 100, 200, 400, 800, 1000, 1000]);
        let low = restart_delay(&policy, 3, 0.0).as_millis();
        let high = restart_delay(&policy, 3, 0.999).as_millis();
        assert!(
            (360..=400).contains(&low) && (400..=440).contains(&high),
            "{low} {high}"
        );
        assert!(resets_streak(&policy, Duration::from_secs(10)));
        assert!(!resets_streak(&policy, Duration::from_secs(9)));
    }

    #[test]
    fn error_delays_grow_and_cap() {
        assert_eq!(error_delay(1), Duration::from_millis(100));
        assert_eq!(error_delay(2), Duration::from_millis(200));
        assert_eq!(error_delay(50), Duration::from_millis(10_000));
    }
}
