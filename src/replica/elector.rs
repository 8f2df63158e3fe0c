//! When this replica campaigns. openraft's own election timer is off
//! (`enable_elect = false`): it would raise the term of a replica that
//! merely cannot hear the leader, and that higher term, answered to the
//! leader's next append, deposes a healthy leader. Instead this loop waits
//! until no leader has been heard (and this replica's vote has not moved)
//! for the loyalty window (`election_max_ms`) plus a random part of up to
//! `election_max_ms - election_min_ms`, then runs a pre-vote round
//! ([`crate::raft::prevote`]) and triggers openraft's election only when a
//! quorum would grant it. The loyalty window is what detects a dead
//! leader: until it has passed, every voter refuses anyway. The random
//! part only keeps two survivors from campaigning at the same moment, so it
//! is a spread after the window, not a second timeout (openraft's own timer
//! waits lease + a whole election timeout). A lost pre-vote is retried
//! after another random part, not after another window, and so is this
//! replica's own candidacy when no leader came of it (a split vote: both
//! survivors campaigned at once): no leader was heard since, so there is no
//! loyalty to wait out.
//!
//! It never campaigns while leading, as a learner, or after this replica
//! was removed from the cluster.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use openraft::ServerState;
use rand::Rng;

use super::Replica;
use crate::raft::network::{paths, PeerCallError};
use crate::raft::prevote::{is_quorum, PreVoteRequest, PreVoteResponse};
use crate::raft::{NodeId, Vote};

/// Runs until the replica's Raft stops.
pub async fn run(replica: Arc<Replica>) {
    let raft = &replica.config.raft;
    let (min, max) = (raft.election_min_ms, raft.election_max_ms);
    let heartbeat = Duration::from_millis(raft.heartbeat_ms.max(1));
    let mut tick = tokio::time::interval(TICK.min(heartbeat));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_vote: Option<Vote> = None;
    let mut quiet_since = Instant::now();
    let mut spread = random_spread(min, max);
    // After a lost round: no new one before this, and the rounds lost in a
    // row (each doubles the wait, up to 8 heartbeats).
    let mut not_before = Instant::now();
    let mut lost_rounds: u32 = 0;
    loop {
        tick.tick().await;
        if replica.removed().is_some() {
            return;
        }
        let metrics = replica.metrics();
        if metrics.running_state.is_err() {
            return;
        }
        let now = Instant::now();
        if last_vote.as_ref() != Some(&metrics.vote) {
            // A granted vote or a new term restarts the timer, as in Raft.
            last_vote = Some(metrics.vote);
            quiet_since = now;
        }
        // Campaigning and not (yet) leader: retry after a heartbeat (the
        // vote round's time) and a random part, not after a window.
        let own_candidacy = !metrics.vote.is_committed()
            && metrics.vote.leader_id().voted_for() == Some(replica.id);
        let membership = metrics.membership_config.membership();
        let voter = membership.voter_ids().any(|id| id == replica.id);
        if metrics.state == ServerState::Leader || !voter {
            quiet_since = now;
            continue;
        }
        let lease = replica.peers.lease();
        let quiet = now
            .saturating_duration_since(quiet_since)
            .min(lease.since_heard_leader(now));
        let wait = if own_candidacy {
            heartbeat
        } else {
            lease.window()
        };
        if quiet < wait + spread {
            lost_rounds = 0;
            continue;
        }
        if now < not_before {
            continue;
        }
        let configs: Vec<BTreeSet<NodeId>> = membership.get_joint_config().clone();
        let request = PreVoteRequest {
            candidate: replica.id,
            term: metrics.current_term,
            last_log_id: replica.raft.data_metrics().borrow().last_log,
        };
        let peers: Vec<(NodeId, String)> = configs
            .iter()
            .flatten()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|id| **id != replica.id)
            .filter_map(|id| Some((*id, membership.get_node(id)?.peer_addr.clone())))
            .collect();
        let ask = Duration::from_millis(min);
        let asked_at = Instant::now();
        let answers = join_all(peers.iter().map(|(id, addr)| {
            let network = replica.peers.clone();
            let request = request.clone();
            async move {
                let answer: Result<PreVoteResponse, _> =
                    network.call(addr, paths::PREVOTE, &request, ask).await;
                (*id, answer)
            }
        }))
        .await;
        let mut granted = BTreeSet::from([replica.id]);
        let mut refusals = Vec::new();
        for (id, answer) in answers {
            match answer {
                Ok(a) if a.granted => {
                    granted.insert(id);
                }
                Ok(a) => refusals.push(format!("{id}: {}", a.reason)),
                Err(e) => {
                    if matches!(e, PeerCallError::NotMember { .. }) {
                        // Counts towards finding out this replica was removed.
                        replica.peers.refused(id);
                    }
                    refusals.push(format!("{id}: {e}"));
                }
            }
        }
        // The round took a while (an unreachable voter times out): a leader
        // elected meanwhile, or a vote granted meanwhile, makes its yeses
        // stale — campaigning now would depose that leader.
        let moved_on = replica.metrics().vote != metrics.vote
            || lease.since_heard_leader(Instant::now()) < asked_at.elapsed();
        if moved_on {
            tracing::debug!("pre-vote overtaken by a new vote or leader: not campaigning");
        } else if is_quorum(&granted, &configs) {
            tracing::info!(
                term = metrics.current_term,
                granted = ?granted,
                "pre-vote won: campaigning"
            );
            if let Err(e) = replica.raft.trigger().elect().await {
                tracing::warn!(error = %e, "cannot start an election");
                return;
            }
        } else {
            tracing::info!(
                term = metrics.current_term,
                refusals = ?refusals,
                "pre-vote lost: keeping the term"
            );
        }
        // A won round changed the vote, which restarts the silence; a lost
        // one is retried after a heartbeat or more and a new random part.
        spread = random_spread(min, max);
        not_before = Instant::now() + heartbeat * (1 << lost_rounds.min(3)) + spread;
        lost_rounds += 1;
    }
}

/// How often the elector looks at the clock: fine enough that campaigning
/// does not also wait for the next heartbeat tick.
const TICK: Duration = Duration::from_millis(5);

/// The random part added to the loyalty window, in `[0, max - min]`.
fn random_spread(min: u64, max: u64) -> Duration {
    Duration::from_millis(rand::thread_rng().gen_range(0..=max.saturating_sub(min)))
}
