//! What this replica knows about its contact with the rest of the cluster,
//! for the two guarantees openraft 0.9 does not give by itself:
//!
//! * **The leader's lease.** openraft keeps a leader leading while it is cut
//!   off from every follower. [`Lease::acked`] records, per peer, the send
//!   time of the latest append-entries request that peer accepted in the
//!   leader's term; [`Lease::quorum_acked_at`] is the moment by which a
//!   quorum (of every configuration of a joint membership) had accepted
//!   this leader. Each of those followers refuses to vote for anyone else
//!   until at least a full election timeout after it heard that request (see
//!   [`Lease::refuses_vote`] and openraft's own lease), so while the quorum
//!   ack is younger than the lease [`Lease::duration`] no other leader can
//!   exist, and engine actions taken now cannot undo a newer leader's work.
//!   The send time (not the answer's arrival) keeps the lease safe however
//!   long the answer took.
//! * **Leader stickiness** (Raft thesis §4.2.3). [`Lease::heard_leader`]
//!   marks every accepted request of a current leader; a replica that heard
//!   one within the longest election timeout refuses votes and pre-votes without
//!   adopting the candidate's term, and a leader whose quorum contact is
//!   fresh refuses them too.
//!
//! Pure bookkeeping over `Instant`s handed in by callers: no I/O, no Raft
//! calls, no clock of its own, so every rule is unit-tested with made-up
//! times.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::NodeId;

/// Contact times of one replica; shared by its peer client and server.
#[derive(Debug)]
pub struct Lease {
    /// The longest election timeout: how long a follower that heard a
    /// leader stays loyal to it (as long as openraft's own lease, so a
    /// pre-vote this replica grants is never followed by a vote openraft
    /// refuses), and the bound on how long quorum contact is trusted.
    window: Duration,
    inner: Mutex<Contacts>,
}

#[derive(Debug)]
struct Contacts {
    /// Per peer: the term and send time of the latest append it accepted.
    acks: HashMap<NodeId, (u64, Instant)>,
    /// The last accepted request of a leader (or this replica's start: a
    /// restarted replica does not know whom it followed a moment ago).
    heard_leader: Instant,
}

/// Why a vote or pre-vote is refused without looking at the candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sticky {
    /// This replica heard a current leader this long ago.
    FollowingLeader(Duration),
    /// This replica leads and a quorum accepted it this long ago.
    LeadingQuorum(Duration),
}

impl std::fmt::Display for Sticky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sticky::FollowingLeader(age) => {
                write!(f, "heard the current leader {} ms ago", age.as_millis())
            }
            Sticky::LeadingQuorum(age) => write!(
                f,
                "leads with a quorum that answered {} ms ago",
                age.as_millis()
            ),
        }
    }
}

impl Lease {
    /// Contact times with a loyalty window of `window` (the longest
    /// election timeout, at least the minimum the thesis asks for),
    /// counting `now` as the last time a leader was heard.
    pub fn new(window: Duration, now: Instant) -> Lease {
        Lease {
            window,
            inner: Mutex::new(Contacts {
                acks: HashMap::new(),
                heard_leader: now,
            }),
        }
    }

    fn contacts(&self) -> std::sync::MutexGuard<'_, Contacts> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long quorum contact is trusted for engine actions: nine tenths
    /// of the window, leaving a tenth for clock-rate differences between
    /// machines (the followers' loyalty runs on their own clocks).
    pub fn duration(&self) -> Duration {
        self.window * 9 / 10
    }

    /// The loyalty window (the longest election timeout).
    pub fn window(&self) -> Duration {
        self.window
    }

    /// `peer` accepted an append of `term` this replica sent at `sent`.
    pub fn acked(&self, peer: NodeId, term: u64, sent: Instant) {
        let mut contacts = self.contacts();
        let entry = contacts.acks.entry(peer).or_insert((term, sent));
        if (term, sent) > *entry {
            *entry = (term, sent);
        }
    }

    /// A current leader's request was accepted at `at`.
    pub fn heard_leader(&self, at: Instant) {
        let mut contacts = self.contacts();
        if at > contacts.heard_leader {
            contacts.heard_leader = at;
        }
    }

    /// How long ago a leader was last heard.
    pub fn since_heard_leader(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.contacts().heard_leader)
    }

    /// When a quorum of every configuration in `configs` had accepted
    /// `leader` (this replica) in `term`; `leader`'s own ack is `now`.
    /// `None` while some configuration has no quorum of acks in `term`.
    pub fn quorum_acked_at(
        &self,
        leader: NodeId,
        term: u64,
        configs: &[BTreeSet<NodeId>],
        now: Instant,
    ) -> Option<Instant> {
        let contacts = self.contacts();
        let mut oldest: Option<Instant> = None;
        for config in configs {
            if config.is_empty() {
                continue;
            }
            let mut times: Vec<Instant> = config
                .iter()
                .filter_map(|id| {
                    if *id == leader {
                        return Some(now);
                    }
                    match contacts.acks.get(id) {
                        Some((t, sent)) if *t == term => Some(*sent),
                        _ => None,
                    }
                })
                .collect();
            let majority = config.len() / 2 + 1;
            if times.len() < majority {
                return None;
            }
            // The majority-th most recent ack: a majority acked at or after it.
            times.sort_unstable_by(|a, b| b.cmp(a));
            let at = times[majority - 1];
            oldest = Some(oldest.map_or(at, |o| o.min(at)));
        }
        oldest
    }

    /// Why a vote (or pre-vote) must be refused at `now`, if it must:
    /// `leading` is `Some(quorum age)` while this replica leads (`None`
    /// inside when it has no quorum contact in its term), `None` when it
    /// follows.
    pub fn refuses_vote(&self, leading: Option<Option<Duration>>, now: Instant) -> Option<Sticky> {
        match leading {
            Some(Some(age)) if age < self.window => Some(Sticky::LeadingQuorum(age)),
            Some(_) => None,
            None => {
                let age = self.since_heard_leader(now);
                (age < self.window).then_some(Sticky::FollowingLeader(age))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_quorum_ack_is_the_majority_th_latest_send_time() {
        let t0 = Instant::now();
        let lease = Lease::new(ms(100), t0);
        lease.acked(2, 5, t0 + ms(10));
        lease.acked(3, 5, t0 + ms(40));
        let now = t0 + ms(50);
        // Leader 1 counts itself as now; with 3 the majority is 2: now and 40.
        assert_eq!(
            lease.quorum_acked_at(1, 5, &[set(&[1, 2, 3])], now),
            Some(t0 + ms(40))
        );
        // Five voters need three: now, 40, 10.
        assert_eq!(
            lease.quorum_acked_at(1, 5, &[set(&[1, 2, 3, 4, 5])], now),
            Some(t0 + ms(10))
        );
    }

    #[test]
    fn acks_of_another_term_do_not_count() {
        let t0 = Instant::now();
        let lease = Lease::new(ms(100), t0);
        lease.acked(2, 4, t0 + ms(10));
        assert_eq!(lease.quorum_acked_at(1, 5, &[set(&[1, 2, 3])], t0), None);
        lease.acked(2, 5, t0 + ms(20));
        assert_eq!(
            lease.quorum_acked_at(1, 5, &[set(&[1, 2, 3])], t0 + ms(30)),
            Some(t0 + ms(20))
        );
    }

    #[test]
    fn an_older_ack_never_replaces_a_newer_one() {
        let t0 = Instant::now();
        let lease = Lease::new(ms(100), t0);
        lease.acked(2, 5, t0 + ms(30));
        lease.acked(2, 5, t0 + ms(10));
        assert_eq!(
            lease.quorum_acked_at(1, 5, &[set(&[1, 2, 3])], t0 + ms(40)),
            Some(t0 + ms(30))
        );
    }

    #[test]
    fn a_joint_membership_needs_a_quorum_of_each_configuration() {
        let t0 = Instant::now();
        let lease = Lease::new(ms(100), t0);
        lease.acked(2, 5, t0 + ms(30));
        let old = set(&[1, 2, 3]);
        let new = set(&[3, 4, 5]);
        assert_eq!(
            lease.quorum_acked_at(1, 5, &[old.clone(), new.clone()], t0 + ms(40)),
            None
        );
        lease.acked(4, 5, t0 + ms(20));
        lease.acked(5, 5, t0 + ms(25));
        assert_eq!(
            lease.quorum_acked_at(1, 5, &[old, new], t0 + ms(40)),
            Some(t0 + ms(20))
        );
    }

    #[test]
    fn a_follower_that_heard_the_leader_recently_refuses_votes() {
        let t0 = Instant::now();
        let lease = Lease::new(ms(100), t0);
        // Start counts as heard.
        assert_eq!(
            lease.refuses_vote(None, t0 + ms(50)),
            Some(Sticky::FollowingLeader(ms(50)))
        );
        assert_eq!(lease.refuses_vote(None, t0 + ms(150)), None);
        lease.heard_leader(t0 + ms(140));
        assert!(lease.refuses_vote(None, t0 + ms(150)).is_some());
        assert_eq!(lease.refuses_vote(None, t0 + ms(240)), None);
    }

    #[test]
    fn a_leader_refuses_votes_only_while_its_quorum_is_fresh() {
        let t0 = Instant::now();
        let lease = Lease::new(ms(100), t0);
        assert_eq!(
            lease.refuses_vote(Some(Some(ms(20))), t0 + ms(500)),
            Some(Sticky::LeadingQuorum(ms(20)))
        );
        assert_eq!(lease.refuses_vote(Some(Some(ms(120))), t0 + ms(500)), None);
        assert_eq!(lease.refuses_vote(Some(None), t0 + ms(500)), None);
    }

    #[test]
    fn the_lease_is_shorter_than_the_loyalty_window() {
        let lease = Lease::new(ms(100), Instant::now());
        assert_eq!(lease.duration(), ms(90));
    }
}
