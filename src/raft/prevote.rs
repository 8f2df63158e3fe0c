//! Pre-vote (Raft thesis §9.6), which openraft 0.9 lacks: before a replica
//! raises its term to campaign it asks the voters whether they would vote
//! for it, and campaigns only when a quorum of every configuration says
//! yes. A replica that cannot hear the leader (a one-way partition, a
//! flapping link) therefore keeps its term instead of climbing, and when
//! it hears the leader again it simply follows — no vote request and no
//! answer carrying a higher term ever deposes a healthy leader.
//!
//! This module holds the messages and the two pure decisions (how a voter
//! answers, whether the answers make a quorum). Sending the round is the
//! elector's ([`crate::replica::elector`]); answering is the peer
//! server's. Nothing here does I/O or touches openraft's state.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::lease::Sticky;
use super::{LogId, NodeId};

/// "Would you vote for me if I campaigned now?"
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreVoteRequest {
    pub candidate: NodeId,
    /// The candidate's current term (it would campaign in the next).
    pub term: u64,
    pub last_log_id: Option<LogId>,
}

/// A voter's answer; a refusal says why, for the candidate's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreVoteResponse {
    pub granted: bool,
    pub reason: String,
    /// The voter's term, for the record.
    pub term: u64,
}

/// How a voter at `my_term` with `my_last_log` answers `request`, given
/// why it must stay loyal (`sticky`, from [`super::lease::Lease::refuses_vote`]).
pub fn answer(
    request: &PreVoteRequest,
    my_term: u64,
    my_last_log: Option<LogId>,
    sticky: Option<Sticky>,
) -> PreVoteResponse {
    let refuse = |reason: String| PreVoteResponse {
        granted: false,
        reason,
        term: my_term,
    };
    if let Some(sticky) = sticky {
        return refuse(sticky.to_string());
    }
    if request.last_log_id < my_last_log {
        return refuse(format!(
            "the candidate's log ends at {:?}, this voter's at {:?}",
            request.last_log_id, my_last_log
        ));
    }
    PreVoteResponse {
        granted: true,
        reason: String::new(),
        term: my_term,
    }
}

/// Whether the voters in `granted` (the candidate included) form a quorum
/// of every configuration in `configs` (two during a joint membership).
pub fn is_quorum(granted: &BTreeSet<NodeId>, configs: &[BTreeSet<NodeId>]) -> bool {
    !configs.is_empty()
        && configs
            .iter()
            .all(|config| config.intersection(granted).count() > config.len() / 2)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use openraft::CommittedLeaderId;

    fn log(term: u64, index: u64) -> Option<LogId> {
        Some(LogId::new(CommittedLeaderId::new(term, 1), index))
    }

    fn request(last_log_id: Option<LogId>) -> PreVoteRequest {
        PreVoteRequest {
            candidate: 3,
            term: 7,
            last_log_id,
        }
    }

    #[test]
    fn a_voter_that_heard_the_leader_refuses() {
        let answer = answer(
            &request(log(7, 10)),
            7,
            log(7, 10),
            Some(Sticky::FollowingLeader(Duration::from_millis(20))),
        );
        assert!(!answer.granted);
        assert!(answer.reason.contains("heard the current leader"));
    }

    #[test]
    fn a_candidate_with_a_shorter_log_is_refused() {
        assert!(!answer(&request(log(7, 9)), 7, log(7, 10), None).granted);
        assert!(!answer(&request(log(6, 12)), 7, log(7, 10), None).granted);
        assert!(answer(&request(log(7, 10)), 7, log(7, 10), None).granted);
        assert!(answer(&request(log(8, 1)), 7, log(7, 10), None).granted);
    }

    #[test]
    fn a_quorum_is_needed_in_every_configuration() {
        let set = |ids: &[NodeId]| ids.iter().copied().collect::<BTreeSet<_>>();
        let old = set(&[1, 2, 3]);
        let new = set(&[3, 4, 5]);
        assert!(is_quorum(&set(&[1, 2]), std::slice::from_ref(&old)));
        assert!(!is_quorum(&set(&[1]), std::slice::from_ref(&old)));
        assert!(!is_quorum(&set(&[1, 2]), &[old.clone(), new.clone()]));
        assert!(is_quorum(&set(&[1, 3, 4]), &[old, new]));
        assert!(!is_quorum(&set(&[1]), &[]));
    }
}
