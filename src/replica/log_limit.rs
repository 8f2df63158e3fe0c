//! Warnings about refusals that repeat (a removed replica that keeps
//! calling, a peer with a wrong certificate) are logged at most once per
//! key every [`LOG_EVERY`], so a misbehaving peer cannot flood the log.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The shortest time between two warnings about the same key.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// When each key was last logged.
pub struct LogLimit<K>(Mutex<Option<HashMap<K, Instant>>>);

impl<K: Hash + Eq> LogLimit<K> {
    pub const fn new() -> LogLimit<K> {
        LogLimit(Mutex::new(None))
    }

    /// Whether a warning about `key` may be logged at `now` (and, if so,
    /// records that it was).
    pub fn due(&self, key: K, now: Instant) -> bool {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let last = last.get_or_insert_with(HashMap::new);
        let due = last
            .get(&key)
            .is_none_or(|at| now.saturating_duration_since(*at) >= LOG_EVERY);
        if due {
            last.insert(key, now);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_logged_once_per_period_and_keys_are_apart() {
        let limit = LogLimit::new();
        let start = Instant::now();
        assert!(limit.due(1, start));
        assert!(!limit.due(1, start + Duration::from_secs(9)));
        assert!(limit.due(2, start + Duration::from_secs(9)));
        assert!(limit.due(1, start + LOG_EVERY));
    }
}
