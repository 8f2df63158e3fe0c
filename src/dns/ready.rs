//! Whole UDP answers, ready to send, for one version of the zone. A query's
//! bytes after its id map to the complete response the handler sent for
//! them; a repeated query then costs one map lookup, a copy and the id
//! written in: no decoding, no record building, no encoding. It owns only
//! that table and never touches a socket or the state machine.
//!
//! Only authoritative answers are kept — a forwarded, refused or malformed
//! query always takes the full path — and only under the version of the
//! zone read *before* the answer was built: the state machine only moves
//! forward, so a kept answer is never older than its version. A new version
//! (any applied entry, another term or leader) empties the table.

use std::collections::HashMap;
use std::sync::RwLock;

/// What the zone was when an answer was kept: the term, the applied index
/// and the leader this replica knew. Terms and applied indexes only grow,
/// so a version once left never comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ZoneVersion {
    pub term: u64,
    pub applied: u64,
    pub leader: Option<u64>,
}

/// Bytes of the DNS message id, the only part of a kept answer that
/// differs between two identical queries.
const ID_LEN: usize = 2;

/// Queries longer than this take the full path every time: questions are
/// short, and a long datagram is an unusual (or hostile) one.
pub const MAX_KEPT_QUERY: usize = 512;

/// One kept answer and the query counter it counts under.
struct Ready {
    response: Box<[u8]>,
    counted: metrics::Counter,
}

#[derive(Default)]
struct Table {
    version: ZoneVersion,
    answers: HashMap<Box<[u8]>, Ready>,
}

/// The table; `capacity` bounds the distinct queries kept per version.
pub struct ReadyAnswers {
    capacity: usize,
    table: RwLock<Table>,
}

impl ReadyAnswers {
    pub fn new(capacity: usize) -> ReadyAnswers {
        ReadyAnswers {
            capacity,
            table: RwLock::new(Table::default()),
        }
    }

    /// Writes into `out` the answer kept at `version` for `query` (a whole
    /// datagram), with `query`'s id, and counts it; `false` when there is
    /// none.
    pub fn answer(&self, version: ZoneVersion, query: &[u8], out: &mut Vec<u8>) -> bool {
        let Some(key) = key(query) else {
            return false;
        };
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        if table.version != version {
            return false;
        }
        let Some(ready) = table.answers.get(key) else {
            return false;
        };
        out.clear();
        out.extend_from_slice(&query[..ID_LEN]);
        out.extend_from_slice(&ready.response[ID_LEN..]);
        ready.counted.increment(1);
        true
    }

    /// Keeps `response`, the answer sent to `query` as built from a zone at
    /// `version` or later, counted under `counted`. Only authoritative
    /// responses are kept; an older version is not kept, a newer one
    /// replaces everything.
    pub fn keep(
        &self,
        version: ZoneVersion,
        query: &[u8],
        response: &[u8],
        counted: metrics::Counter,
    ) {
        let Some(key) = key(query) else {
            return;
        };
        if !is_authoritative_answer(response) {
            return;
        }
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        if table.version != version {
            if is_older(version, table.version) {
                return;
            }
            table.version = version;
            table.answers.clear();
        }
        if table.answers.len() >= self.capacity {
            // Distinct questions are few in practice; a flood of random
            // names only costs the full path again.
            table.answers.clear();
        }
        table.answers.insert(
            key.into(),
            Ready {
                response: response.into(),
                counted,
            },
        );
    }
}

/// `version` was left behind by `current`.
fn is_older(version: ZoneVersion, current: ZoneVersion) -> bool {
    (version.term, version.applied) < (current.term, current.applied)
}

/// The part of a query its answer depends on: everything but the id.
fn key(query: &[u8]) -> Option<&[u8]> {
    (query.len() > ID_LEN && query.len() <= MAX_KEPT_QUERY).then(|| &query[ID_LEN..])
}

/// A response (QR) to a standard query (opcode 0) with the AA flag: an
/// answer from the zone, not a forwarded or refused one.
fn is_authoritative_answer(response: &[u8]) -> bool {
    const QR: u8 = 0x80;
    const OPCODE: u8 = 0x78;
    const AA: u8 = 0x04;
    response.len() >= 12 && response[2] & (QR | OPCODE | AA) == QR | AA
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(term: u64, applied: u64, leader: Option<u64>) -> ZoneVersion {
        ZoneVersion {
            term,
            applied,
            leader,
        }
    }

    /// A 12-byte header with `id` and the given flag bytes, then `rest`.
    fn message(id: u16, flags: [u8; 2], rest: &[u8]) -> Vec<u8> {
        let mut bytes = id.to_be_bytes().to_vec();
        bytes.extend_from_slice(&flags);
        bytes.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 0]);
        bytes.extend_from_slice(rest);
        bytes
    }

    fn counter() -> metrics::Counter {
        metrics::Counter::noop()
    }

    #[test]
    fn a_kept_answer_is_sent_with_the_querys_id() {
        let ready = ReadyAnswers::new(8);
        let v = version(2, 10, Some(1));
        let query = message(7, [0x01, 0], b"\x03web\x00\x00\x01\x00\x01");
        let response = message(7, [0x85, 0x80], b"answer");
        ready.keep(v, &query, &response, counter());
        let mut out = Vec::new();
        let again = message(0xBEEF, [0x01, 0], b"\x03web\x00\x00\x01\x00\x01");
        assert!(ready.answer(v, &again, &mut out));
        assert_eq!(out, message(0xBEEF, [0x85, 0x80], b"answer"));
        // Any other byte is another query: flags, case, type, EDNS.
        let other_flags = message(7, [0x00, 0], b"\x03web\x00\x00\x01\x00\x01");
        let other_case = message(7, [0x01, 0], b"\x03WEB\x00\x00\x01\x00\x01");
        for other in [other_flags, other_case] {
            assert!(!ready.answer(v, &other, &mut out));
        }
    }

    #[test]
    fn answers_live_for_one_version_only() {
        let ready = ReadyAnswers::new(8);
        let query = message(1, [1, 0], b"q");
        let response = message(1, [0x84, 0], b"a");
        let mut out = Vec::new();
        ready.keep(version(2, 10, Some(1)), &query, &response, counter());
        for later in [
            version(2, 11, Some(1)),
            version(3, 10, Some(1)),
            version(2, 10, None),
            version(2, 10, Some(2)),
        ] {
            assert!(!ready.answer(later, &query, &mut out), "{later:?}");
        }
        // A newer version empties the table; an older one is not kept.
        ready.keep(version(2, 11, Some(1)), &query, &response, counter());
        ready.keep(version(2, 10, Some(1)), &query, &response, counter());
        assert!(!ready.answer(version(2, 10, Some(1)), &query, &mut out));
        assert!(ready.answer(version(2, 11, Some(1)), &query, &mut out));
    }

    #[test]
    fn only_authoritative_answers_to_short_queries_are_kept() {
        let ready = ReadyAnswers::new(8);
        let v = version(1, 1, Some(1));
        let query = message(1, [1, 0], b"q");
        let mut out = Vec::new();
        // Refused or forwarded (no AA), a query echoed back (no QR),
        // another opcode, a truncated header.
        for response in [
            message(1, [0x80, 0x05], b""),
            message(1, [0x04, 0], b""),
            message(1, [0x84 | 0x10, 0], b""),
            vec![0x00, 0x01, 0x84],
        ] {
            ready.keep(v, &query, &response, counter());
            assert!(!ready.answer(v, &query, &mut out), "{response:?}");
        }
        let long = message(1, [1, 0], &[0u8; MAX_KEPT_QUERY]);
        ready.keep(v, &long, &message(1, [0x84, 0], b""), counter());
        assert!(!ready.answer(v, &long, &mut out));
        assert!(!ready.answer(v, &[0u8; 2], &mut out));
    }

    #[test]
    fn the_table_is_bounded() {
        let ready = ReadyAnswers::new(2);
        let v = version(1, 1, Some(1));
        let response = message(1, [0x84, 0], b"a");
        let mut out = Vec::new();
        for name in [b"a", b"b", b"c"] {
            ready.keep(v, &message(1, [1, 0], name), &response, counter());
        }
        assert!(ready.answer(v, &message(9, [1, 0], b"c"), &mut out));
        assert!(!ready.answer(v, &message(9, [1, 0], b"a"), &mut out));
    }
}
