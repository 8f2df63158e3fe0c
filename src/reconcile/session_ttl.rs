//! Session expiry, a controller with one key (the cluster): a session with
//! a TTL that is not renewed for twice its TTL (Consul's grace: clients
//! such as Patroni ask for half the time they mean) is invalidated by a
//! Raft write that names the renewals the leader saw, so a renewal that
//! races the expiry wins. Deadlines live in the leader's memory and run on
//! its clock: a new leader arms every session afresh, so a change of
//! leader only ever lengthens a session's life. It never touches an engine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::controller::{self, Action, Limits, OnStop, Reason, Reconciler};
use crate::replica::Replica;
use crate::state::Command;

/// How often sessions are looked at when none is about to expire: new
/// sessions are armed within this (TTLs are at least 10 s).
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// The expiry of one term.
pub struct SessionTtl {
    replica: Arc<Replica>,
    /// Session id → (renewals seen, when it expires).
    deadlines: Mutex<HashMap<String, (u64, Instant)>>,
}

impl SessionTtl {
    pub fn new(replica: Arc<Replica>) -> SessionTtl {
        SessionTtl {
            replica,
            deadlines: Mutex::new(HashMap::new()),
        }
    }
}

/// How long a session lives without a renewal: twice its TTL, as Consul.
pub fn grace(ttl_ms: u64) -> Duration {
    Duration::from_millis(ttl_ms.saturating_mul(2))
}

/// Arms new and renewed sessions, forgets gone ones, and returns the
/// sessions past their deadline (with the renewals seen) and the next
/// deadline. Pure apart from the map it updates.
fn due(
    deadlines: &mut HashMap<String, (u64, Instant)>,
    sessions: &[(String, u64, u64)],
    now: Instant,
) -> (Vec<(String, u64)>, Option<Instant>) {
    let alive: std::collections::HashSet<&str> =
        sessions.iter().map(|(id, _, _)| id.as_str()).collect();
    deadlines.retain(|id, _| alive.contains(id.as_str()));
    let mut expired = Vec::new();
    let mut next: Option<Instant> = None;
    for (id, renewals, ttl_ms) in sessions {
        let entry = deadlines
            .entry(id.clone())
            .or_insert((*renewals, now + grace(*ttl_ms)));
        if entry.0 != *renewals {
            *entry = (*renewals, now + grace(*ttl_ms));
        }
        if entry.1 <= now {
            expired.push((id.clone(), *renewals));
        } else {
            next = Some(next.map_or(entry.1, |n| n.min(entry.1)));
        }
    }
    (expired, next)
}

#[async_trait::async_trait]
impl Reconciler for SessionTtl {
    type Key = ();
    type Error = std::convert::Infallible;

    fn name(&self) -> &'static str {
        "session-ttl"
    }

    fn limits(&self) -> Limits {
        Limits {
            timeout: Duration::from_secs(30),
            concurrency: 1,
            resync: None,
            on_stop: OnStop::Abort,
        }
    }

    fn keys(&self) -> Vec<()> {
        vec![()]
    }

    async fn reconcile(&self, _: &(), _: Reason) -> Result<Action, Self::Error> {
        let now = controller::now();
        let sessions: Vec<(String, u64, u64)> = self.replica.sm.read(|s| {
            s.sessions
                .sessions
                .values()
                .filter_map(|session| {
                    session
                        .ttl_ms
                        .map(|ttl| (session.id.clone(), session.renewals, ttl))
                })
                .collect()
        });
        let (expired, next) = {
            let mut deadlines = self.deadlines.lock().unwrap_or_else(|e| e.into_inner());
            due(&mut deadlines, &sessions, now)
        };
        for (id, renewals) in expired {
            let written = self
                .replica
                .write_as_leader(Command::DestroySession {
                    id: id.clone(),
                    if_renewals: Some(renewals),
                    reason: "its TTL ran out".into(),
                })
                .await;
            if let Err(error) = written {
                tracing::warn!(session = %id, %error, "cannot invalidate an expired session");
            }
        }
        let wait = next.map_or(LOOK_EVERY, |at| {
            at.saturating_duration_since(now).min(LOOK_EVERY)
        });
        Ok(Action::RequeueAfter(wait))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_expires_after_twice_its_ttl_unless_renewed() {
        let start = Instant::now();
        let mut deadlines = HashMap::new();
        let sessions = vec![("a".to_string(), 0, 10_000)];
        let (expired, next) = due(&mut deadlines, &sessions, start);
        assert!(expired.is_empty());
        assert_eq!(next, Some(start + Duration::from_secs(20)));
        let later = start + Duration::from_secs(15);
        // Renewed at 15 s: armed again from then.
        let renewed = vec![("a".to_string(), 1, 10_000)];
        assert!(due(&mut deadlines, &renewed, later).0.is_empty());
        let (expired, _) = due(&mut deadlines, &renewed, later + Duration::from_secs(20));
        assert_eq!(expired, [("a".to_string(), 1)]);
        // A destroyed session is forgotten.
        due(&mut deadlines, &[], later);
        assert!(deadlines.is_empty());
    }
}
