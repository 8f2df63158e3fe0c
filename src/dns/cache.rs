//! Recent answers, already turned into wire records, for one version of the
//! zone: the replica's applied index and its leader. A repeated question
//! costs a map lookup instead of a zone lookup and record building. Every
//! apply and every leader change starts a new version and empties the
//! cache, so it never answers from an older state than the state machine's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hickory_server::proto::rr::{Record, RecordType};

/// What the zone looked like when an answer was built.
pub type ZoneVersion = (u64, Option<u64>);

/// An in-zone answer as wire records.
#[derive(Debug, Default)]
pub struct Built {
    pub nxdomain: bool,
    pub answers: Vec<Record>,
    pub additionals: Vec<Record>,
    pub soa: Vec<Record>,
}

/// The cache; `capacity` bounds the number of distinct questions kept.
pub struct AnswerCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    version: ZoneVersion,
    entries: HashMap<(String, RecordType), Arc<Built>>,
}

impl AnswerCache {
    pub fn new(capacity: usize) -> AnswerCache {
        AnswerCache {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The answer to (`name`, `record_type`) built at `version`, if any;
    /// `name` is lowercase.
    pub fn get(
        &self,
        version: ZoneVersion,
        name: &str,
        record_type: RecordType,
    ) -> Option<Arc<Built>> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.version != version {
            return None;
        }
        inner.entries.get(&(name.to_string(), record_type)).cloned()
    }

    /// Keeps `built`, the answer at `version`; a newer version replaces
    /// everything kept, an older one is not kept.
    pub fn insert(
        &self,
        version: ZoneVersion,
        name: String,
        record_type: RecordType,
        built: Arc<Built>,
    ) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.version != version {
            if version.0 < inner.version.0 {
                return;
            }
            inner.version = version;
            inner.entries.clear();
        }
        if inner.entries.len() >= self.capacity {
            // Questions are few in practice; one that floods the cache
            // with distinct names only costs a rebuild.
            inner.entries.clear();
        }
        inner.entries.insert((name, record_type), built);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_live_for_one_version_only() {
        let cache = AnswerCache::new(2);
        let built = Arc::new(Built::default());
        cache.insert((5, Some(1)), "a.".into(), RecordType::A, built.clone());
        assert!(cache.get((5, Some(1)), "a.", RecordType::A).is_some());
        assert!(cache.get((5, Some(1)), "a.", RecordType::SRV).is_none());
        assert!(cache.get((6, Some(1)), "a.", RecordType::A).is_none());
        assert!(cache.get((5, Some(2)), "a.", RecordType::A).is_none());
        // A newer version empties it; an older one is not kept.
        cache.insert((6, Some(1)), "b.".into(), RecordType::A, built.clone());
        assert!(cache.get((5, Some(1)), "a.", RecordType::A).is_none());
        cache.insert((5, Some(1)), "a.".into(), RecordType::A, built.clone());
        assert!(cache.get((6, Some(1)), "a.", RecordType::A).is_none());
        assert!(cache.get((6, Some(1)), "b.", RecordType::A).is_some());
        // Bounded.
        for name in ["c.", "d.", "e."] {
            cache.insert((6, Some(1)), name.into(), RecordType::A, built.clone());
        }
        assert!(cache.get((6, Some(1)), "e.", RecordType::A).is_some());
    }
}
