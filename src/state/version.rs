//! Versions of the peer protocol, and the cluster version that gates what
//! the replicas write. Pure: no I/O; the peer network announces and reads
//! the protocols, the leader's housekeeping raises the cluster version.
//!
//! Every replica announces the peer protocol it speaks ([`PROTOCOL`]) in
//! the [`PROTOCOL_HEADER`] of each peer request and answer; a replica that
//! announces nothing is of protocol 1 (raftvisor 0.1.0, before the header).
//! The *cluster version*, replicated in the state, is the protocol every
//! replica of the cluster may rely on. The leader raises it
//! ([`raise_to`]) once every member — voters and learners — has recently
//! announced a protocol at least as high, so a rolling upgrade runs with
//! mixed versions: until the last member speaks the new protocol, nothing
//! an older one cannot read is written. It never goes down: a replica
//! announcing a protocol below the cluster version is refused by its peers.
//!
//! What each version lets the cluster write:
//!
//! | version | written                                                        |
//! |---------|----------------------------------------------------------------|
//! | 1       | codec format 2, snapshot image `SI11`, commands of 0.1.0       |
//! | 2       | the cluster version command, snapshot image `SI12`             |
//!
//! The log and snapshot encoding itself is versioned by the codec's format
//! byte ([`crate::codec::FORMAT_VERSION`]) and the records' markers
//! ([`crate::state::migrate`]); a later format or record version is written
//! only from the cluster version that introduces it, as `SI12` is here.

use std::time::Duration;

/// The header carrying the sender's peer protocol.
pub const PROTOCOL_HEADER: &str = "x-raftvisor-protocol";

/// The peer protocol this build speaks.
pub const PROTOCOL: u32 = 2;

/// The protocol of a replica that announces none: raftvisor 0.1.0.
pub const UNANNOUNCED: u32 = 1;

/// The cluster version of a cluster that never recorded one.
pub const INITIAL_CLUSTER_VERSION: u32 = 1;

/// The first cluster version that writes snapshot image `SI12` (with the
/// cluster version in it); below it, images are written as `SI11`.
pub const SNAPSHOT_IMAGE_12: u32 = 2;

/// An announcement older than this no longer counts: the member may have
/// been replaced by an older build since.
pub const ANNOUNCEMENT_FRESH_FOR: Duration = Duration::from_secs(5);

/// The protocol a [`PROTOCOL_HEADER`] value announces (absent:
/// [`UNANNOUNCED`]); `None` when the value is not a protocol number.
pub fn parse(header: Option<&str>) -> Option<u32> {
    match header {
        None => Some(UNANNOUNCED),
        Some(value) => value.trim().parse::<u32>().ok().filter(|p| *p >= 1),
    }
}

/// What the leader knows of one member: the protocol it last announced and
/// how long ago (`None`: nothing heard from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announced {
    pub protocol: u32,
    pub age: Duration,
}

/// The cluster version the leader should record, when it is above
/// `current`: the lowest protocol among the leader (`own`) and every other
/// member, when each announced one within [`ANNOUNCEMENT_FRESH_FOR`].
/// `None` while a member is silent or stale, or nothing would change.
pub fn raise_to(current: u32, own: u32, members: &[(u64, Option<Announced>)]) -> Option<u32> {
    let mut lowest = own;
    for (_, announced) in members {
        let announced = (*announced).filter(|a| a.age <= ANNOUNCEMENT_FRESH_FOR)?;
        lowest = lowest.min(announced.protocol);
    }
    (lowest > current).then_some(lowest)
}

/// Why a peer request is refused for its protocol, if it is.
pub fn refusal(announced: u32, cluster_version: u32) -> Option<String> {
    (announced < cluster_version).then(|| {
        format!(
            "peer protocol {announced} is below the cluster version {cluster_version}: \
             this replica runs a raftvisor older than the rest of the cluster; upgrade it \
             (raftvisor cluster upgrade) — a cluster never goes back to an older version"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heard(protocol: u32, ms: u64) -> Option<Announced> {
        Some(Announced {
            protocol,
            age: Duration::from_millis(ms),
        })
    }

    #[test]
    fn the_cluster_version_rises_only_when_every_member_speaks_the_new_protocol() {
        // Mid-upgrade: one member still on 0.1.0.
        let mixed = [(2, heard(2, 10)), (3, heard(1, 10))];
        assert_eq!(raise_to(1, 2, &mixed), None);
        // The last one upgraded.
        let all = [(2, heard(2, 10)), (3, heard(2, 10))];
        assert_eq!(raise_to(1, 2, &all), Some(2));
        // Already there: nothing to write.
        assert_eq!(raise_to(2, 2, &all), None);
        // The leader itself is the oldest.
        assert_eq!(raise_to(1, 1, &all), None);
        // A member not heard from, or heard long ago, holds it back.
        assert_eq!(raise_to(1, 2, &[(2, heard(2, 10)), (3, None)]), None);
        assert_eq!(
            raise_to(1, 2, &[(2, heard(2, 10)), (3, heard(2, 6_000))]),
            None
        );
        // A one-member cluster follows its only member.
        assert_eq!(raise_to(1, 2, &[]), Some(2));
    }

    #[test]
    fn a_missing_header_is_protocol_1_and_a_bad_one_is_refused() {
        assert_eq!(parse(None), Some(1));
        assert_eq!(parse(Some("2")), Some(2));
        assert_eq!(parse(Some(" 7 ")), Some(7));
        assert_eq!(parse(Some("0")), None);
        assert_eq!(parse(Some("two")), None);
        assert!(refusal(1, 2).is_some_and(|why| why.contains("below the cluster version 2")));
        assert_eq!(refusal(2, 2), None);
        assert_eq!(refusal(3, 2), None);
    }
}
