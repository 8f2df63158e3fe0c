//! The keyed delay queue of one controller, pure: which keys are due, when,
//! and why. A key is in at most one place — idle, pending once (a second
//! trigger keeps the earlier time), or running — so a key is never
//! reconciled twice at once and bursts of triggers collapse into one
//! reconcile. Triggers that arrive while a key runs are kept and merged
//! with the requeue its reconcile asks for: that requeue replaces whatever
//! was pending before the key ran. It never reads a clock: callers pass
//! `now`, so it is tested without time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;
use std::time::Instant;

/// Why a key is reconciled (a tracing field and a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The controller started (this replica began to lead).
    Start,
    /// A committed command touched the key's object.
    Commit,
    /// An engine reported a change of one of the key's containers.
    Engine,
    /// A health verdict of one of the key's containers changed.
    Probe,
    /// The key's last reconcile asked to be run again later.
    Requeue,
    /// The key's last reconcile failed: retried after its backoff.
    Backoff,
    /// The slow safety-net pass over every key.
    Resync,
    /// The controller resumed after a pause (its leader's lease lapsed and
    /// came back): everything is looked at again.
    Resume,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Start => "start",
            Reason::Commit => "commit",
            Reason::Engine => "engine",
            Reason::Probe => "probe",
            Reason::Requeue => "requeue",
            Reason::Backoff => "backoff",
            Reason::Resync => "resync",
            Reason::Resume => "resume",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Due {
    at: Instant,
    seq: u64,
    reason: Reason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    Pending(Due),
    /// Running; `again` is the earliest trigger that arrived meanwhile.
    Running {
        again: Option<(Instant, Reason)>,
    },
}

/// The queue of one controller's keys.
#[derive(Debug)]
pub struct WorkQueue<K> {
    slots: HashMap<K, Slot>,
    /// Pending keys by due time, then arrival order.
    order: BTreeSet<(Instant, u64, K)>,
    seq: u64,
}

impl<K> Default for WorkQueue<K> {
    fn default() -> Self {
        WorkQueue {
            slots: HashMap::new(),
            order: BTreeSet::new(),
            seq: 0,
        }
    }
}

impl<K: Clone + Eq + Hash + Ord> WorkQueue<K> {
    /// Asks for a reconcile of `key` not later than `at`: pending keys keep
    /// the earlier of their times, running keys remember it for after.
    pub fn schedule(&mut self, key: K, at: Instant, reason: Reason) {
        match self.slots.get_mut(&key) {
            Some(Slot::Running { again }) => {
                if again.is_none_or(|(t, _)| at < t) {
                    *again = Some((at, reason));
                }
            }
            Some(Slot::Pending(due)) => {
                if at < due.at {
                    let old = *due;
                    self.order.remove(&(old.at, old.seq, key.clone()));
                    self.insert_pending(key, at, reason);
                }
            }
            None => self.insert_pending(key, at, reason),
        }
    }

    fn insert_pending(&mut self, key: K, at: Instant, reason: Reason) {
        self.seq += 1;
        let due = Due {
            at,
            seq: self.seq,
            reason,
        };
        self.order.insert((at, due.seq, key.clone()));
        self.slots.insert(key, Slot::Pending(due));
    }

    /// The next key due at `now`, now marked running, and why.
    pub fn pop_due(&mut self, now: Instant) -> Option<(K, Reason)> {
        let first = self.order.first()?;
        if first.0 > now {
            return None;
        }
        let (_, _, key) = self.order.pop_first()?;
        let reason = match self.slots.get(&key) {
            Some(Slot::Pending(due)) => due.reason,
            _ => Reason::Requeue,
        };
        self.slots
            .insert(key.clone(), Slot::Running { again: None });
        Some((key, reason))
    }

    /// The reconcile of `key` ended; `requeue` is when its result asks to
    /// run again. Pending again at the earlier of that and any trigger
    /// that arrived while it ran; idle when neither.
    pub fn finish(&mut self, key: &K, requeue: Option<(Instant, Reason)>) {
        let again = match self.slots.remove(key) {
            Some(Slot::Running { again }) => again,
            Some(pending @ Slot::Pending(_)) => {
                // Not running: nothing to finish.
                self.slots.insert(key.clone(), pending);
                return;
            }
            None => None,
        };
        let next = match (again, requeue) {
            (Some(a), Some(r)) => Some(if r.0 < a.0 { r } else { a }),
            (a, r) => a.or(r),
        };
        if let Some((at, reason)) = next {
            self.insert_pending(key.clone(), at, reason);
        }
    }

    /// When the earliest pending key is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.order.first().map(|(at, ..)| *at)
    }

    pub fn is_running(&self, key: &K) -> bool {
        matches!(self.slots.get(key), Some(Slot::Running { .. }))
    }

    pub fn pending(&self) -> usize {
        self.order.len()
    }

    pub fn running(&self) -> usize {
        self.slots.len() - self.order.len()
    }
}

/// Consecutive failed reconciles per key: the count a backoff grows with,
/// cleared by the key's first success.
#[derive(Debug)]
pub struct Failures<K> {
    counts: BTreeMap<K, u32>,
}

impl<K> Default for Failures<K> {
    fn default() -> Self {
        Failures {
            counts: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone> Failures<K> {
    /// One more failure of `key`; the count including it.
    pub fn failed(&mut self, key: &K) -> u32 {
        let count = self.counts.entry(key.clone()).or_default();
        *count = count.saturating_add(1);
        *count
    }

    pub fn succeeded(&mut self, key: &K) {
        self.counts.remove(key);
    }

    pub fn of(&self, key: &K) -> u32 {
        self.counts.get(key).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn bursts_of_triggers_collapse_into_one_reconcile() {
        let t0 = Instant::now();
        let mut q = WorkQueue::default();
        for _ in 0..100 {
            q.schedule("a", t0, Reason::Commit);
        }
        q.schedule("b", t0 + ms(5), Reason::Engine);
        assert_eq!(q.pending(), 2);
        assert_eq!(q.pop_due(t0), Some(("a", Reason::Commit)));
        assert_eq!(q.pop_due(t0), None, "b is not due yet, a runs");
        assert_eq!(q.next_due(), Some(t0 + ms(5)));
        assert_eq!(q.pop_due(t0 + ms(5)), Some(("b", Reason::Engine)));
        assert_eq!(q.running(), 2);
    }

    #[test]
    fn a_pending_key_keeps_the_earlier_time() {
        let t0 = Instant::now();
        let mut q = WorkQueue::default();
        q.schedule("a", t0 + ms(100), Reason::Requeue);
        q.schedule("a", t0 + ms(10), Reason::Commit);
        q.schedule("a", t0 + ms(50), Reason::Resync);
        assert_eq!(q.pending(), 1);
        assert_eq!(q.next_due(), Some(t0 + ms(10)));
        assert_eq!(q.pop_due(t0 + ms(10)), Some(("a", Reason::Commit)));
    }

    #[test]
    fn a_running_key_is_never_handed_out_twice() {
        let t0 = Instant::now();
        let mut q = WorkQueue::default();
        q.schedule("a", t0, Reason::Start);
        assert_eq!(q.pop_due(t0), Some(("a", Reason::Start)));
        assert!(q.is_running(&"a"));
        // Triggers while it runs wait for it to end.
        q.schedule("a", t0, Reason::Commit);
        q.schedule("a", t0, Reason::Engine);
        assert_eq!(q.pop_due(t0 + ms(1_000)), None);
        assert_eq!(q.pending(), 0);
        q.finish(&"a", None);
        assert_eq!(q.pop_due(t0 + ms(1)), Some(("a", Reason::Commit)));
        q.finish(&"a", None);
        assert_eq!(q.pop_due(t0 + ms(1_000)), None, "idle: nothing left");
        assert_eq!((q.pending(), q.running()), (0, 0));
    }

    #[test]
    fn a_requeue_replaces_what_was_pending_before_the_run() {
        let t0 = Instant::now();
        let mut q = WorkQueue::default();
        q.schedule("a", t0, Reason::Commit);
        q.pop_due(t0);
        // The reconcile asks for a run in 30 s: that is the only one left.
        q.finish(&"a", Some((t0 + ms(30_000), Reason::Requeue)));
        assert_eq!(q.next_due(), Some(t0 + ms(30_000)));
        q.pop_due(t0 + ms(30_000));
        // A trigger during the run wins over a later requeue...
        q.schedule("a", t0 + ms(30_001), Reason::Engine);
        q.finish(&"a", Some((t0 + ms(60_000), Reason::Requeue)));
        assert_eq!(q.pending(), 1);
        assert_eq!(q.pop_due(t0 + ms(30_001)), Some(("a", Reason::Engine)));
        // ...and an earlier requeue wins over a later trigger.
        q.schedule("a", t0 + ms(40_000), Reason::Resync);
        q.finish(&"a", Some((t0 + ms(35_000), Reason::Backoff)));
        assert_eq!(q.pop_due(t0 + ms(35_000)), Some(("a", Reason::Backoff)));
    }

    #[test]
    fn failures_count_per_key_until_a_success() {
        let mut f = Failures::default();
        assert_eq!(f.failed(&"a"), 1);
        assert_eq!(f.failed(&"a"), 2);
        assert_eq!(f.failed(&"b"), 1);
        f.succeeded(&"a");
        assert_eq!(f.of(&"a"), 0);
        assert_eq!(f.failed(&"a"), 1);
        assert_eq!(f.of(&"b"), 1);
    }
}
