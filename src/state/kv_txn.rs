//! Consul's KV transactions (`/v1/txn`) applied to the model: up to 64
//! operations (set, cas, lock, unlock, get, get-tree, check-index,
//! check-session, check-not-exists, delete, delete-tree, delete-cas), all
//! or nothing. Operations run in order, each seeing the ones before it; the
//! first that fails undoes everything the transaction changed and the
//! answer names it. Pure, like the rest of the model.

use serde::{Deserialize, Serialize};

use super::sessions::KeyLock;
use super::{validate, KvEntry, State};

/// Most operations in one transaction, as in Consul.
pub const MAX_OPS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verb {
    Set,
    Cas,
    Lock,
    Unlock,
    Get,
    GetTree,
    CheckIndex,
    CheckSession,
    CheckNotExists,
    Delete,
    DeleteTree,
    DeleteCas,
}

impl Verb {
    /// Consul's spelling (`delete-cas`, …).
    pub fn parse(text: &str) -> Option<Verb> {
        Some(match text {
            "set" => Verb::Set,
            "cas" => Verb::Cas,
            "lock" => Verb::Lock,
            "unlock" => Verb::Unlock,
            "get" => Verb::Get,
            "get-tree" => Verb::GetTree,
            "check-index" => Verb::CheckIndex,
            "check-session" => Verb::CheckSession,
            "check-not-exists" => Verb::CheckNotExists,
            "delete" => Verb::Delete,
            "delete-tree" => Verb::DeleteTree,
            "delete-cas" => Verb::DeleteCas,
            _ => return None,
        })
    }

    pub fn writes(self) -> bool {
        !matches!(
            self,
            Verb::Get
                | Verb::GetTree
                | Verb::CheckIndex
                | Verb::CheckSession
                | Verb::CheckNotExists
        )
    }
}

/// One KV operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub verb: Verb,
    pub key: String,
    pub value: Vec<u8>,
    pub flags: u64,
    pub index: u64,
    pub session: Option<String>,
}

/// An entry a transaction returns (Consul returns the written entries
/// without their value, and read entries with it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnEntry {
    pub key: String,
    pub entry: KvEntry,
    pub lock: KeyLock,
    pub with_value: bool,
}

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnError {
    pub op_index: usize,
    pub what: String,
}

/// The outcome of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOutcome {
    Committed(Vec<TxnEntry>),
    RolledBack(Vec<TxnError>),
}

/// What to put back when a transaction fails.
#[derive(Default)]
struct Undo {
    keys: Vec<(String, Option<KvEntry>, Option<KeyLock>)>,
    scalars: Option<(u64, u64, u64)>,
}

impl Undo {
    fn save(&mut self, state: &State, key: &str) {
        if self.scalars.is_none() {
            self.scalars = Some((state.kv_index, state.kv_delete_index, state.kv_bytes));
        }
        self.keys.push((
            key.to_string(),
            state.kv.get(key).cloned(),
            state.sessions.lock_of(key).cloned(),
        ));
    }

    fn restore(self, state: &mut State) {
        for (key, entry, lock) in self.keys.into_iter().rev() {
            match entry {
                Some(entry) => state.kv.insert(key.clone(), entry),
                None => state.kv.remove(&key),
            };
            match lock {
                Some(lock) => state.sessions.locks.insert(key, lock),
                None => state.sessions.locks.remove(&key),
            };
        }
        if let Some((kv_index, kv_delete_index, kv_bytes)) = self.scalars {
            state.kv_index = kv_index;
            state.kv_delete_index = kv_delete_index;
            state.kv_bytes = kv_bytes;
        }
    }
}

impl State {
    fn txn_entry(&self, key: &str, with_value: bool) -> Option<TxnEntry> {
        let entry = self.kv.get(key)?;
        Some(TxnEntry {
            key: key.to_string(),
            entry: KvEntry {
                value: if with_value {
                    entry.value.clone()
                } else {
                    Vec::new()
                },
                ..entry.clone()
            },
            lock: self.sessions.lock_of(key).cloned().unwrap_or_default(),
            with_value,
        })
    }

    /// Applies `ops` at `index`, all or nothing.
    pub(super) fn apply_txn(&mut self, index: u64, time_ms: u64, ops: &[Op]) -> TxnOutcome {
        if ops.len() > MAX_OPS {
            return TxnOutcome::RolledBack(vec![TxnError {
                op_index: MAX_OPS,
                what: format!(
                    "a transaction holds at most {MAX_OPS} operations, not {}",
                    ops.len()
                ),
            }]);
        }
        let mut undo = Undo::default();
        let mut results = Vec::new();
        for (op_index, op) in ops.iter().enumerate() {
            if let Err(what) = self.apply_op(index, time_ms, op, &mut undo, &mut results) {
                undo.restore(self);
                return TxnOutcome::RolledBack(vec![TxnError { op_index, what }]);
            }
        }
        TxnOutcome::Committed(results)
    }

    fn apply_op(
        &mut self,
        index: u64,
        time_ms: u64,
        op: &Op,
        undo: &mut Undo,
        results: &mut Vec<TxnEntry>,
    ) -> Result<(), String> {
        let key = op.key.as_str();
        let tree = matches!(op.verb, Verb::GetTree | Verb::DeleteTree);
        if !tree {
            validate::kv_key(key).map_err(|e| e.to_string())?;
        }
        let current = self.kv.get(key).map_or(0, |e| e.modify_index);
        let missing = || format!("key \"{key}\" doesn't exist");
        match op.verb {
            Verb::Get => {
                results.push(self.txn_entry(key, true).ok_or_else(missing)?);
            }
            Verb::GetTree => {
                let keys: Vec<String> = self.kv_prefix(key).map(|(k, _)| k.clone()).collect();
                results.extend(keys.iter().filter_map(|k| self.txn_entry(k, true)));
            }
            Verb::CheckIndex => {
                if !self.kv.contains_key(key) {
                    return Err(missing());
                }
                if current != op.index {
                    return Err(format!("current modify index {current} != {}", op.index));
                }
            }
            Verb::CheckSession => {
                let wanted = op.session.as_deref().unwrap_or_default();
                if !self.kv.contains_key(key) {
                    return Err(missing());
                }
                if !self.sessions.holds(key, wanted) {
                    return Err(format!(
                        "key \"{key}\" is not locked by session \"{wanted}\""
                    ));
                }
            }
            Verb::CheckNotExists => {
                if self.kv.contains_key(key) {
                    return Err(format!("key \"{key}\" exists"));
                }
            }
            Verb::Set | Verb::Cas | Verb::Lock | Verb::Unlock => {
                validate::kv_value(&op.value).map_err(|e| e.to_string())?;
                match op.verb {
                    Verb::Cas if current != op.index => {
                        return Err(format!("failed to set key \"{key}\", index is stale"));
                    }
                    Verb::Lock => {
                        let session = op.session.as_deref().unwrap_or_default();
                        if !self.sessions.may_acquire(time_ms, key, session)? {
                            return Err(format!(
                                "failed to lock key \"{key}\", lock is already held"
                            ));
                        }
                    }
                    Verb::Unlock => {
                        let session = op.session.as_deref().unwrap_or_default();
                        if !self.sessions.holds(key, session) {
                            return Err(format!("failed to unlock key \"{key}\", lock isn't held, or is held by another session"));
                        }
                    }
                    _ => {}
                }
                undo.save(self, key);
                self.kv_store(index, key, &op.value, op.flags);
                match op.verb {
                    Verb::Lock => self
                        .sessions
                        .acquire(key, op.session.as_deref().unwrap_or_default()),
                    Verb::Unlock => self.sessions.release(key),
                    _ => {}
                }
                results.extend(self.txn_entry(key, false));
            }
            Verb::Delete | Verb::DeleteCas => {
                if op.verb == Verb::DeleteCas && current != op.index {
                    return Err(format!("failed to delete key \"{key}\", index is stale"));
                }
                undo.save(self, key);
                self.kv_remove(index, key);
            }
            Verb::DeleteTree => {
                let keys: Vec<String> = self.kv_prefix(key).map(|(k, _)| k.clone()).collect();
                for k in keys {
                    undo.save(self, &k);
                    self.kv_remove(index, &k);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(verb: Verb, key: &str, value: &str, index: u64) -> Op {
        Op {
            verb,
            key: key.into(),
            value: value.as_bytes().to_vec(),
            flags: 0,
            index,
            session: None,
        }
    }

    #[test]
    fn all_or_nothing() {
        let mut state = State::default();
        let TxnOutcome::Committed(written) = state.apply_txn(
            5,
            0,
            &[op(Verb::Set, "a", "1", 0), op(Verb::Set, "b", "2", 0)],
        ) else {
            panic!("committed")
        };
        assert_eq!(written.len(), 2);
        assert!(written
            .iter()
            .all(|w| !w.with_value && w.entry.value.is_empty()));
        let before = state.kv.clone();
        let (kv_index, kv_bytes) = (state.kv_index, state.kv_bytes);
        let outcome = state.apply_txn(
            6,
            0,
            &[
                op(Verb::Set, "a", "changed", 0),
                op(Verb::Delete, "b", "", 0),
                op(Verb::Cas, "c", "x", 99),
            ],
        );
        let TxnOutcome::RolledBack(errors) = outcome else {
            panic!("rolled back")
        };
        assert_eq!(errors[0].op_index, 2);
        assert_eq!(state.kv, before, "nothing of a failed transaction stays");
        assert_eq!((state.kv_index, state.kv_bytes), (kv_index, kv_bytes));
        let TxnOutcome::Committed(read) = state.apply_txn(
            7,
            0,
            &[
                op(Verb::CheckIndex, "a", "", 5),
                op(Verb::GetTree, "", "", 0),
            ],
        ) else {
            panic!("committed")
        };
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].entry.value, b"1");
    }
}
