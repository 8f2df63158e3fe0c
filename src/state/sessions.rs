//! Consul's sessions and the locks they hold on KV keys, part of the
//! replicated model: which sessions exist (name, node, TTL, lock-delay,
//! behaviour), which key is locked by which session and how often it was
//! acquired (`LockIndex`), and until when a key stays unlockable after its
//! session was invalidated (lock-delay). Pure: times come from the
//! request's `time_ms` (the proposing leader's clock), so every replica
//! applies the same outcome. When a session's TTL runs out is decided by
//! the leader ([`crate::reconcile::session_ttl`]), which then writes its
//! invalidation; nothing here reads a clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Shortest and longest session TTL, as Consul allows.
pub const MIN_TTL_MS: u64 = 10_000;
pub const MAX_TTL_MS: u64 = 86_400_000;
/// Consul's default lock-delay.
pub const DEFAULT_LOCK_DELAY_MS: u64 = 15_000;
/// Longest lock-delay, as in Consul.
pub const MAX_LOCK_DELAY_MS: u64 = 60_000;
/// Most sessions at once: a client that leaks sessions is refused before
/// it grows the state without bound.
pub const MAX_SESSIONS: usize = 10_000;

/// What happens to the keys a session holds when it is invalidated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Behavior {
    /// The keys stay, unlocked.
    #[default]
    Release,
    /// The keys are deleted.
    Delete,
}

/// One session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub name: String,
    pub node: String,
    pub lock_delay_ms: u64,
    pub behavior: Behavior,
    /// `None`: the session lives until destroyed.
    pub ttl_ms: Option<u64>,
    /// Health checks named at creation (kept and shown; raftvisor binds a
    /// session's life to its TTL and to explicit destruction).
    pub checks: Vec<String>,
    pub create_index: u64,
    pub modify_index: u64,
    /// Renewals applied so far: the leader's invalidation names the count
    /// it saw, so a renewal that raced it wins.
    pub renewals: u64,
}

/// The lock state of one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct KeyLock {
    /// The session holding the key, if any.
    pub session: Option<String>,
    /// How many times the key was acquired (Consul's `LockIndex`).
    pub lock_index: u64,
}

/// Every session, every key's lock, every lock-delay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SessionBook {
    pub sessions: BTreeMap<String, Session>,
    pub locks: BTreeMap<String, KeyLock>,
    /// Key → time (ms) before which it cannot be acquired.
    pub delayed_until_ms: BTreeMap<String, u64>,
    /// Raft index of the last change to the sessions (Consul's index of
    /// session reads).
    pub index: u64,
}

impl super::migrate::FirstVersion for SessionBook {
    const VERSION_MARKER: &'static [u8] = b"SB01";
}

/// What a new session asks for (validated by [`SessionRequest::check`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRequest {
    pub id: String,
    pub name: String,
    pub node: String,
    pub lock_delay_ms: u64,
    pub behavior: Behavior,
    pub ttl_ms: Option<u64>,
    pub checks: Vec<String>,
}

impl SessionRequest {
    /// Consul's rules for a session's settings.
    pub fn check(&self) -> Result<(), String> {
        if self.id.is_empty() || self.id.len() > 64 {
            return Err("a session id is 1 to 64 characters".into());
        }
        if self.name.len() > 256 || self.node.len() > 256 {
            return Err("a session's name and node are at most 256 characters".into());
        }
        if let Some(ttl) = self.ttl_ms {
            if !(MIN_TTL_MS..=MAX_TTL_MS).contains(&ttl) {
                return Err(format!(
                    "Invalid Session TTL '{ttl}ms', must be between [10s=24h0m0s]"
                ));
            }
        }
        if self.lock_delay_ms > MAX_LOCK_DELAY_MS {
            return Err("lock-delay is at most 60s".into());
        }
        if self.checks.len() > 32 {
            return Err("at most 32 checks per session".into());
        }
        Ok(())
    }
}

/// A key a session held when it was invalidated, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freed {
    pub key: String,
    pub behavior: Behavior,
}

impl SessionBook {
    pub fn create(&mut self, index: u64, request: &SessionRequest) -> Result<(), String> {
        request.check()?;
        if self.sessions.contains_key(&request.id) {
            return Err(format!("session {} exists", request.id));
        }
        if self.sessions.len() >= MAX_SESSIONS {
            return Err(format!(
                "too many sessions ({MAX_SESSIONS}): destroy unused ones or let their TTLs run out"
            ));
        }
        self.sessions.insert(
            request.id.clone(),
            Session {
                id: request.id.clone(),
                name: request.name.clone(),
                node: request.node.clone(),
                lock_delay_ms: request.lock_delay_ms,
                behavior: request.behavior,
                ttl_ms: request.ttl_ms,
                checks: request.checks.clone(),
                create_index: index,
                modify_index: index,
                renewals: 0,
            },
        );
        Ok(())
    }

    /// Counts a renewal; `false` for an unknown session.
    pub fn renew(&mut self, id: &str) -> bool {
        match self.sessions.get_mut(id) {
            Some(session) => {
                session.renewals += 1;
                true
            }
            None => false,
        }
    }

    /// Removes the session (unless `if_renewals` is given and no longer
    /// matches) and frees its keys, putting them under its lock-delay.
    /// Returns the freed keys, or `None` when nothing was invalidated.
    pub fn invalidate(
        &mut self,
        time_ms: u64,
        id: &str,
        if_renewals: Option<u64>,
    ) -> Option<Vec<Freed>> {
        let session = self.sessions.get(id)?;
        if if_renewals.is_some_and(|n| n != session.renewals) {
            return None;
        }
        let session = self.sessions.remove(id)?;
        let held: Vec<String> = self
            .locks
            .iter()
            .filter(|(_, lock)| lock.session.as_deref() == Some(id))
            .map(|(key, _)| key.clone())
            .collect();
        let mut freed = Vec::with_capacity(held.len());
        for key in held {
            match session.behavior {
                Behavior::Release => {
                    if let Some(lock) = self.locks.get_mut(&key) {
                        lock.session = None;
                    }
                }
                Behavior::Delete => {
                    self.locks.remove(&key);
                }
            }
            if session.lock_delay_ms > 0 {
                self.delayed_until_ms
                    .insert(key.clone(), time_ms + session.lock_delay_ms);
            }
            freed.push(Freed {
                key,
                behavior: session.behavior,
            });
        }
        // Expired delays are only bookkeeping: drop them as time passes.
        self.delayed_until_ms.retain(|_, until| *until > time_ms);
        Some(freed)
    }

    /// Whether `session` may acquire `key` at `time_ms`: the session
    /// exists (else `Err`), and the key is free (or already its) and not
    /// under a lock-delay.
    pub fn may_acquire(&self, time_ms: u64, key: &str, session: &str) -> Result<bool, String> {
        if !self.sessions.contains_key(session) {
            return Err(format!("invalid session \"{session}\""));
        }
        let holder = self.locks.get(key).and_then(|l| l.session.as_deref());
        match holder {
            Some(holder) => Ok(holder == session),
            None => Ok(self
                .delayed_until_ms
                .get(key)
                .is_none_or(|until| *until <= time_ms)),
        }
    }

    /// Records that `session` holds `key` (the caller checked
    /// [`SessionBook::may_acquire`]); a fresh acquisition counts.
    pub fn acquire(&mut self, key: &str, session: &str) {
        let lock = self.locks.entry(key.to_string()).or_default();
        if lock.session.as_deref() != Some(session) {
            lock.session = Some(session.to_string());
            lock.lock_index += 1;
        }
    }

    /// Whether `session` holds `key` (so may release it).
    pub fn holds(&self, key: &str, session: &str) -> bool {
        self.locks
            .get(key)
            .is_some_and(|l| l.session.as_deref() == Some(session))
    }

    pub fn release(&mut self, key: &str) {
        if let Some(lock) = self.locks.get_mut(key) {
            lock.session = None;
        }
    }

    /// Forgets the lock of a deleted key.
    pub fn forget_key(&mut self, key: &str) {
        self.locks.remove(key);
    }

    pub fn lock_of(&self, key: &str) -> Option<&KeyLock> {
        self.locks.get(key)
    }

    /// Sessions that hold at least one key, with the number held.
    pub fn held_by(&self, session: &str) -> usize {
        self.locks
            .values()
            .filter(|l| l.session.as_deref() == Some(session))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: &str, behavior: Behavior, lock_delay_ms: u64) -> SessionRequest {
        SessionRequest {
            id: id.into(),
            name: "test".into(),
            node: "manager-1".into(),
            lock_delay_ms,
            behavior,
            ttl_ms: Some(15_000),
            checks: Vec::new(),
        }
    }

    #[test]
    fn a_key_is_held_by_one_session_and_counts_acquisitions() {
        let mut book = SessionBook::default();
        book.create(1, &request("a", Behavior::Release, 0)).unwrap();
        book.create(2, &request("b", Behavior::Release, 0)).unwrap();
        assert_eq!(book.may_acquire(0, "k", "a"), Ok(true));
        book.acquire("k", "a");
        assert_eq!(book.may_acquire(0, "k", "b"), Ok(false));
        assert_eq!(
            book.may_acquire(0, "k", "a"),
            Ok(true),
            "its holder re-acquires"
        );
        book.acquire("k", "a");
        assert_eq!(
            book.lock_of("k").unwrap().lock_index,
            1,
            "re-acquiring is not a new lock"
        );
        book.release("k");
        book.acquire("k", "b");
        assert_eq!(book.lock_of("k").unwrap().lock_index, 2);
        assert!(book.may_acquire(0, "k", "nope").is_err());
    }

    #[test]
    fn invalidation_frees_keys_under_the_lock_delay_and_loses_to_a_renewal() {
        let mut book = SessionBook::default();
        book.create(1, &request("a", Behavior::Delete, 5_000))
            .unwrap();
        book.create(2, &request("b", Behavior::Release, 0)).unwrap();
        book.acquire("k", "a");
        assert!(book.renew("a"));
        assert!(
            book.invalidate(1_000, "a", Some(0)).is_none(),
            "a renewal raced the expiry"
        );
        let freed = book.invalidate(1_000, "a", Some(1)).unwrap();
        assert_eq!(
            freed,
            [Freed {
                key: "k".into(),
                behavior: Behavior::Delete
            }]
        );
        assert!(book.lock_of("k").is_none());
        assert_eq!(book.may_acquire(5_999, "k", "b"), Ok(false), "lock-delay");
        assert_eq!(book.may_acquire(6_000, "k", "b"), Ok(true));
        assert!(!book.renew("a"));
    }

    #[test]
    fn ttls_follow_consuls_bounds() {
        let mut short = request("a", Behavior::Release, 0);
        short.ttl_ms = Some(9_999);
        assert!(short
            .check()
            .unwrap_err()
            .starts_with("Invalid Session TTL"));
        short.ttl_ms = None;
        assert!(short.check().is_ok());
    }
}
