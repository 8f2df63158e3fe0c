//! Linearizability checking for histories of a key-value store of registers.
//!
//! This module owns one question: could the reads, writes and compare-and-sets recorded
//! against the store have taken effect one at a time, in an order that respects real time
//! (an operation that completed before another was invoked comes first) and the semantics
//! of a register? Every key is an independent register that starts absent, so each key's
//! history is checked on its own (P-compositionality), which keeps every search small.
//!
//! The search is Wing & Gong's, with Lowe's memoization as in Knossos and Porcupine: a
//! depth-first search, on an explicit stack, over partial linearizations that remembers
//! every configuration (set of linearized operations, register value) it has explored so
//! that none is explored twice.
//!
//! Indeterminate operations (timed out, or their answer lost: Jepsen's `:info`) are treated
//! as in Knossos: they never returned, so they may take effect at any point after their
//! invocation, or never. A read among them says nothing and is ignored; a write or cas may
//! be linearized wherever the search needs it, and a cas that fails is indistinguishable
//! from one that has not happened (yet). Since such an operation can always be put off to
//! the very end, where it constrains nothing, a configuration that has linearized fewer of
//! them is at least as promising as one that agrees on everything else but has linearized
//! more. The memo uses that dominance to prune, which keeps histories full of timeouts from
//! multiplying the search by every subset of their indeterminate operations. Likewise a read
//! (or failed cas) that fits the current value is linearized at once without branching, so
//! concurrent reads do not multiply it by their interleavings either.

use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterInput {
    Read,
    Write(u64),
    Cas { from: u64, to: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterOutput {
    Read(Option<u64>),
    Write,
    CasOk,
    CasFail,
    /// The operation timed out or its answer was lost: it may or may not have taken effect (Jepsen's :info).
    Unknown,
}

#[derive(Debug, Clone)]
pub struct RegisterOperation {
    /// Position of the invocation in the whole history (for reporting).
    pub id: u64,
    pub process: u64,
    pub key: String,
    pub input: RegisterInput,
    pub output: RegisterOutput,
    /// Invocation time (any monotonic unit, e.g. microseconds).
    pub call: u64,
    /// Completion time; None for an indeterminate operation (never completed as far as the client knows).
    pub ret: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Most (bitset, state) configurations explored per key before giving up.
    pub max_states_per_key: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            max_states_per_key: 2_000_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum KeyVerdict {
    Linearizable {
        operations: usize,
        states_explored: usize,
    },
    NotLinearizable {
        operations: usize,
        states_explored: usize,
        /// Ids of the operations of the longest linearizable prefix the search found, in linearization order.
        longest_prefix: Vec<u64>,
        /// The operations that could not be linearized next at the deepest point (the likely culprits), one line each.
        stuck_at: Vec<String>,
    },
    /// The search exceeded the budget: the checker cannot decide (the harness counts this as a failure).
    Unknown {
        operations: usize,
        states_explored: usize,
        reason: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `Some(true)`: every key is linearizable; `Some(false)`: some key is not;
    /// `None`: some key could not be decided and none is known to be invalid.
    pub valid: Option<bool>,
    pub keys: BTreeMap<String, KeyVerdict>,
    pub operations: usize,
    pub indeterminate: usize,
}

/// Checks every key of `ops` for linearizability, each key as an independent register.
#[must_use]
pub fn check(ops: &[RegisterOperation], budget: Budget) -> Report {
    let mut ops_by_key: BTreeMap<&str, Vec<&RegisterOperation>> = BTreeMap::new();
    for op in ops {
        ops_by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let keys: BTreeMap<String, KeyVerdict> = ops_by_key
        .into_iter()
        .map(|(key, key_ops)| (key.to_owned(), check_register(&key_ops, budget)))
        .collect();
    Report {
        valid: overall_validity(keys.values()),
        keys,
        operations: ops.len(),
        indeterminate: ops
            .iter()
            .filter(|op| op.output == RegisterOutput::Unknown || op.ret.is_none())
            .count(),
    }
}

/// Checks the history of a single key; `ops` must all belong to that key.
#[must_use]
pub fn check_key(ops: &[RegisterOperation], budget: Budget) -> KeyVerdict {
    let refs: Vec<&RegisterOperation> = ops.iter().collect();
    check_register(&refs, budget)
}

fn overall_validity<'a>(verdicts: impl Iterator<Item = &'a KeyVerdict>) -> Option<bool> {
    let mut undecided = false;
    for verdict in verdicts {
        match verdict {
            KeyVerdict::NotLinearizable { .. } => return Some(false),
            KeyVerdict::Unknown { .. } => undecided = true,
            KeyVerdict::Linearizable { .. } => {}
        }
    }
    (!undecided).then_some(true)
}

/// The value of a register: `None` while the key is absent.
type RegisterState = Option<u64>;

/// Return time of an operation that never returned: it is concurrent with everything after its call.
const NEVER_RETURNED: u64 = u64::MAX;

/// The register state after `op`, if its recorded output is possible from `state`.
fn step_definite(op: &RegisterOperation, state: RegisterState) -> Option<RegisterState> {
    match (&op.input, &op.output) {
        (RegisterInput::Read, RegisterOutput::Read(observed)) => {
            (*observed == state).then_some(state)
        }
        (RegisterInput::Write(value), RegisterOutput::Write) => Some(Some(*value)),
        (RegisterInput::Cas { from, to }, RegisterOutput::CasOk) => {
            (state == Some(*from)).then_some(Some(*to))
        }
        (RegisterInput::Cas { from, .. }, RegisterOutput::CasFail) => {
            (state != Some(*from)).then_some(state)
        }
        // An output that this kind of operation cannot produce is never explained by any order.
        _ => None,
    }
}

/// The register state if an operation of unknown outcome takes effect now. Outcomes that
/// leave the state as it is (a failing cas, rewriting the current value) are not offered:
/// they are indistinguishable from the operation staying pending, which the search covers.
fn step_indeterminate(input: &RegisterInput, state: RegisterState) -> Option<RegisterState> {
    let after = match input {
        RegisterInput::Write(value) => Some(*value),
        RegisterInput::Cas { from, to } if state == Some(*from) => Some(*to),
        RegisterInput::Read | RegisterInput::Cas { .. } => return None,
    };
    (after != state).then_some(after)
}

/// Whether an operation leaves the register as it found it in every state it is possible from.
fn is_pure_observation(input: &RegisterInput, output: &RegisterOutput) -> bool {
    match (input, output) {
        (RegisterInput::Read, _) | (RegisterInput::Cas { .. }, RegisterOutput::CasFail) => true,
        (RegisterInput::Cas { from, to }, RegisterOutput::CasOk) => from == to,
        _ => false,
    }
}

fn describe(op: &RegisterOperation) -> String {
    let input = match op.input {
        RegisterInput::Read => "read".to_owned(),
        RegisterInput::Write(value) => format!("write {value}"),
        RegisterInput::Cas { from, to } => format!("cas {from}->{to}"),
    };
    let output = match op.output {
        RegisterOutput::Read(value) => format!("{value:?}"),
        RegisterOutput::Write | RegisterOutput::CasOk => "ok".to_owned(),
        RegisterOutput::CasFail => "fail".to_owned(),
        RegisterOutput::Unknown => "unknown".to_owned(),
    };
    let ret = op
        .ret
        .map_or_else(|| "none".to_owned(), |ret| ret.to_string());
    format!(
        "op {} p{} {input} -> {output} [call {}, ret {ret}]",
        op.id, op.process, op.call
    )
}

struct Bitset {
    words: Vec<u64>,
}

impl Bitset {
    fn new(bits: usize) -> Self {
        Self {
            words: vec![0; bits.div_ceil(64)],
        }
    }

    fn contains(&self, index: usize) -> bool {
        self.words[index / 64] & (1 << (index % 64)) != 0
    }

    fn insert(&mut self, index: usize) {
        self.words[index / 64] |= 1 << (index % 64);
    }

    fn remove(&mut self, index: usize) {
        self.words[index / 64] &= !(1 << (index % 64));
    }

    fn first_absent(&self) -> usize {
        self.words
            .iter()
            .position(|word| *word != u64::MAX)
            .map_or(self.words.len() * 64, |index| {
                index * 64 + (!self.words[index]).trailing_zeros() as usize
            })
    }
}

fn is_subset(smaller: &[u64], larger: &[u64]) -> bool {
    smaller
        .iter()
        .zip(larger)
        .all(|(small, large)| small & !large == 0)
}

/// An operation with the real-time interval the search uses.
struct TimedOperation<'a> {
    op: &'a RegisterOperation,
    call: u64,
    ret: u64,
}

/// One key's history, split by whether the operation's outcome is known.
struct History<'a> {
    /// Operations with a recorded outcome, sorted by call: all of them must be linearized.
    definite: Vec<TimedOperation<'a>>,
    /// Writes and cas of unknown outcome, sorted by call: linearized only where useful.
    indeterminate: Vec<TimedOperation<'a>>,
}

impl<'a> History<'a> {
    fn new(ops: &[&'a RegisterOperation]) -> Self {
        let mut definite = Vec::new();
        let mut indeterminate = Vec::new();
        for &op in ops {
            let call = op.call;
            match (&op.output, &op.input) {
                (RegisterOutput::Unknown, RegisterInput::Read) => {}
                (RegisterOutput::Unknown, _) => indeterminate.push(TimedOperation {
                    op,
                    call,
                    ret: NEVER_RETURNED,
                }),
                // An answer without a return time must still be explained, at any point after
                // its call. A return stamped before its call would forbid every order; clamping
                // only widens the interval, so it can never produce a false violation.
                _ => definite.push(TimedOperation {
                    op,
                    call,
                    ret: op.ret.map_or(NEVER_RETURNED, |ret| ret.max(call)),
                }),
            }
        }
        definite.sort_by_key(|timed| (timed.call, timed.ret));
        indeterminate.sort_by_key(|timed| timed.call);
        Self {
            definite,
            indeterminate,
        }
    }

    fn operation(&self, linearized: Linearized) -> &'a RegisterOperation {
        match linearized {
            Linearized::Definite(index) => self.definite[index].op,
            Linearized::Indeterminate(index) => self.indeterminate[index].op,
        }
    }

    /// The operations that may be linearized next from `config`, and the moves they allow.
    ///
    /// An operation may go next only if it was invoked no later than the earliest return of
    /// the definite operations still pending: whatever returned before its call must precede
    /// it. Equal times count as concurrent, the choice that can never invent a violation.
    fn expand(&self, config: &Configuration) -> Expansion {
        let mut eligible_definite = Vec::new();
        let mut earliest_pending_return = NEVER_RETURNED;
        // Scanning in call order can stop at the first call past the horizon: every later
        // operation returns after that call, so none of them can lower the horizon.
        let first_pending = config.definite.first_absent();
        for (index, candidate) in self.definite.iter().enumerate().skip(first_pending) {
            if candidate.call > earliest_pending_return {
                break;
            }
            if !config.definite.contains(index) {
                earliest_pending_return = earliest_pending_return.min(candidate.ret);
                eligible_definite.push(index);
            }
        }

        let mut moves = Vec::new();
        for &index in &eligible_definite {
            if let Some(state_after) = step_definite(self.definite[index].op, config.state) {
                let step = Move {
                    linearized: Linearized::Definite(index),
                    state_after,
                };
                // An observation that fits the current value may as well go right now: it
                // leaves the value unchanged wherever it fits, and being eligible nothing
                // pending has to precede it, so any linearization from here can be reordered
                // to start with it. Taking it alone spares the search every interleaving of
                // concurrent reads.
                if is_pure_observation(
                    &self.definite[index].op.input,
                    &self.definite[index].op.output,
                ) {
                    return Expansion {
                        moves: vec![step],
                        eligible_definite,
                    };
                }
                moves.push(step);
            }
        }
        // Tried after the definite ones: a timed-out operation is usually needed only where
        // nothing else explains an observation, so a linearizable history is found sooner.
        for (index, candidate) in self.indeterminate.iter().enumerate() {
            if candidate.call > earliest_pending_return {
                break;
            }
            if config.indeterminate.contains(index) {
                continue;
            }
            if let Some(state_after) = step_indeterminate(&candidate.op.input, config.state) {
                moves.push(Move {
                    linearized: Linearized::Indeterminate(index),
                    state_after,
                });
            }
        }
        Expansion {
            moves,
            eligible_definite,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Linearized {
    Definite(usize),
    Indeterminate(usize),
}

#[derive(Debug, Clone, Copy)]
struct Move {
    linearized: Linearized,
    state_after: RegisterState,
}

struct Expansion {
    moves: Vec<Move>,
    eligible_definite: Vec<usize>,
}

/// A point of the search: which operations are linearized and the value they leave.
struct Configuration {
    definite: Bitset,
    indeterminate: Bitset,
    definite_linearized: usize,
    state: RegisterState,
}

impl Configuration {
    fn initial(history: &History) -> Self {
        Self {
            definite: Bitset::new(history.definite.len()),
            indeterminate: Bitset::new(history.indeterminate.len()),
            definite_linearized: 0,
            state: None,
        }
    }

    fn apply(&mut self, step: Move) {
        match step.linearized {
            Linearized::Definite(index) => {
                self.definite.insert(index);
                self.definite_linearized += 1;
            }
            Linearized::Indeterminate(index) => self.indeterminate.insert(index),
        }
        self.state = step.state_after;
    }

    fn undo(&mut self, linearized: Linearized, state_before: RegisterState) {
        match linearized {
            Linearized::Definite(index) => {
                self.definite.remove(index);
                self.definite_linearized -= 1;
            }
            Linearized::Indeterminate(index) => self.indeterminate.remove(index),
        }
        self.state = state_before;
    }
}

/// The memo of explored configurations.
///
/// It is keyed by the linearized definite operations and the register value; under each key
/// it keeps the minimal sets of linearized indeterminate operations seen. A configuration
/// whose set includes one of those is dominated: the explored one can do everything it can,
/// with more operations still in reserve.
#[derive(Default)]
struct ExploredConfigurations {
    indeterminate_sets: HashMap<Box<[u64]>, Vec<Box<[u64]>>>,
    key_buffer: Vec<u64>,
}

impl ExploredConfigurations {
    /// Records `config`; false if it, or a configuration dominating it, was explored already.
    fn insert(&mut self, config: &Configuration) -> bool {
        self.key_buffer.clear();
        self.key_buffer.extend_from_slice(&config.definite.words);
        match config.state {
            None => self.key_buffer.extend([0, 0]),
            Some(value) => self.key_buffer.extend([1, value]),
        }
        let linearized = config.indeterminate.words.as_slice();
        match self.indeterminate_sets.get_mut(self.key_buffer.as_slice()) {
            Some(minimal_sets) => {
                if minimal_sets
                    .iter()
                    .any(|explored| is_subset(explored, linearized))
                {
                    return false;
                }
                minimal_sets.retain(|explored| !is_subset(linearized, explored));
                minimal_sets.push(linearized.into());
            }
            None => {
                self.indeterminate_sets
                    .insert(self.key_buffer.as_slice().into(), vec![linearized.into()]);
            }
        }
        true
    }
}

/// Where the search got furthest, kept to explain a violation.
struct DeepestPoint {
    definite_linearized: usize,
    prefix: Vec<u64>,
    stuck_at: Vec<usize>,
}

fn check_register(ops: &[&RegisterOperation], budget: Budget) -> KeyVerdict {
    let operations = ops.len();
    let history = History::new(ops);
    let mut config = Configuration::initial(&history);
    let mut explored = ExploredConfigurations::default();
    explored.insert(&config);
    let mut states_explored = 1;
    if history.definite.is_empty() {
        return KeyVerdict::Linearizable {
            operations,
            states_explored,
        };
    }

    let root = history.expand(&config);
    let mut deepest = DeepestPoint {
        definite_linearized: 0,
        prefix: Vec::new(),
        stuck_at: root.eligible_definite,
    };
    // One frame per configuration on the current path, holding the moves still to try from
    // it; `path` holds the move that led into each frame but the root, and what it replaced.
    let mut frames = vec![(root.moves, 0_usize)];
    let mut path: Vec<(Linearized, RegisterState)> = Vec::new();

    while let Some((moves, next)) = frames.last_mut() {
        let Some(&step) = moves.get(*next) else {
            frames.pop();
            if let Some((linearized, state_before)) = path.pop() {
                config.undo(linearized, state_before);
            }
            continue;
        };
        *next += 1;

        let state_before = config.state;
        config.apply(step);
        if !explored.insert(&config) {
            config.undo(step.linearized, state_before);
            continue;
        }
        if states_explored >= budget.max_states_per_key {
            return KeyVerdict::Unknown {
                operations,
                states_explored,
                reason: format!(
                    "gave up after exploring {states_explored} configurations (the budget per key)"
                ),
            };
        }
        states_explored += 1;
        path.push((step.linearized, state_before));
        // Indeterminate operations left over can all go at the end, where nothing observes them.
        if config.definite_linearized == history.definite.len() {
            return KeyVerdict::Linearizable {
                operations,
                states_explored,
            };
        }

        let expansion = history.expand(&config);
        if config.definite_linearized > deepest.definite_linearized {
            deepest = DeepestPoint {
                definite_linearized: config.definite_linearized,
                prefix: path
                    .iter()
                    .map(|(linearized, _)| history.operation(*linearized).id)
                    .collect(),
                stuck_at: expansion.eligible_definite,
            };
        }
        frames.push((expansion.moves, 0));
    }

    KeyVerdict::NotLinearizable {
        operations,
        states_explored,
        longest_prefix: deepest.prefix,
        stuck_at: deepest
            .stuck_at
            .iter()
            .map(|&index| describe(history.definite[index].op))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct HistoryBuilder {
        key: String,
        ops: Vec<RegisterOperation>,
    }

    impl HistoryBuilder {
        fn new() -> Self {
            Self {
                key: "k".to_owned(),
                ops: Vec::new(),
            }
        }

        fn on_key(&mut self, key: &str) -> &mut Self {
            self.key = key.to_owned();
            self
        }

        fn push(
            &mut self,
            process: u64,
            input: RegisterInput,
            output: RegisterOutput,
            call: u64,
            ret: Option<u64>,
        ) -> &mut Self {
            self.ops.push(RegisterOperation {
                id: self.ops.len() as u64,
                process,
                key: self.key.clone(),
                input,
                output,
                call,
                ret,
            });
            self
        }

        fn read(&mut self, process: u64, value: Option<u64>, call: u64, ret: u64) -> &mut Self {
            let output = RegisterOutput::Read(value);
            self.push(process, RegisterInput::Read, output, call, Some(ret))
        }

        fn write(&mut self, process: u64, value: u64, call: u64, ret: u64) -> &mut Self {
            let input = RegisterInput::Write(value);
            self.push(process, input, RegisterOutput::Write, call, Some(ret))
        }

        fn cas(
            &mut self,
            process: u64,
            from: u64,
            to: u64,
            ok: bool,
            call: u64,
            ret: u64,
        ) -> &mut Self {
            let output = if ok {
                RegisterOutput::CasOk
            } else {
                RegisterOutput::CasFail
            };
            self.push(
                process,
                RegisterInput::Cas { from, to },
                output,
                call,
                Some(ret),
            )
        }

        fn write_unknown(&mut self, process: u64, value: u64, call: u64) -> &mut Self {
            let input = RegisterInput::Write(value);
            self.push(process, input, RegisterOutput::Unknown, call, None)
        }

        fn cas_unknown(&mut self, process: u64, from: u64, to: u64, call: u64) -> &mut Self {
            let input = RegisterInput::Cas { from, to };
            self.push(process, input, RegisterOutput::Unknown, call, None)
        }

        fn read_unknown(&mut self, process: u64, call: u64, ret: Option<u64>) -> &mut Self {
            self.push(
                process,
                RegisterInput::Read,
                RegisterOutput::Unknown,
                call,
                ret,
            )
        }
    }

    fn verdict(builder: &HistoryBuilder) -> KeyVerdict {
        check_key(&builder.ops, Budget::default())
    }

    fn is_linearizable(ops: &[RegisterOperation]) -> bool {
        match check_key(ops, Budget::default()) {
            KeyVerdict::Linearizable { .. } => true,
            KeyVerdict::NotLinearizable { .. } => false,
            unknown @ KeyVerdict::Unknown { .. } => panic!("undecided: {unknown:?}"),
        }
    }

    fn assert_linearizable(builder: &HistoryBuilder) {
        assert!(is_linearizable(&builder.ops), "{:#?}", verdict(builder));
    }

    fn assert_not_linearizable(builder: &HistoryBuilder) {
        assert!(!is_linearizable(&builder.ops), "{:#?}", builder.ops);
    }

    #[test]
    fn empty_history_is_linearizable() {
        let report = check(&[], Budget::default());
        assert_eq!(report.valid, Some(true));
        assert!(report.keys.is_empty());
    }

    #[test]
    fn sequential_history_following_register_semantics_is_linearizable() {
        let mut history = HistoryBuilder::new();
        history
            .read(0, None, 0, 1)
            .write(0, 1, 2, 3)
            .read(1, Some(1), 4, 5)
            .cas(1, 1, 2, true, 6, 7)
            .cas(0, 1, 3, false, 8, 9)
            .read(0, Some(2), 10, 11)
            .write(1, 2, 12, 13)
            .read(1, Some(2), 14, 15);
        assert_linearizable(&history);
    }

    #[test]
    fn read_of_a_value_never_written_is_not_linearizable() {
        let mut history = HistoryBuilder::new();
        history.write(0, 1, 0, 1).read(1, Some(5), 2, 3);
        let KeyVerdict::NotLinearizable {
            longest_prefix,
            stuck_at,
            ..
        } = verdict(&history)
        else {
            panic!("expected a violation: {:?}", verdict(&history));
        };
        assert_eq!(longest_prefix, vec![0]);
        assert_eq!(stuck_at, vec!["op 1 p1 read -> Some(5) [call 2, ret 3]"]);
    }

    #[test]
    fn stale_read_of_the_initial_value_after_a_completed_write_is_not_linearizable() {
        let mut history = HistoryBuilder::new();
        history.write(0, 1, 0, 1).read(1, None, 2, 3);
        assert_not_linearizable(&history);
    }

    #[test]
    fn successful_cas_from_a_value_the_register_did_not_hold_is_not_linearizable() {
        let mut history = HistoryBuilder::new();
        history.write(0, 1, 0, 1).cas(1, 2, 3, true, 2, 3);
        assert_not_linearizable(&history);

        let mut history = HistoryBuilder::new();
        history.write(0, 1, 0, 1).cas(1, 1, 3, false, 2, 3);
        assert_not_linearizable(&history);
    }

    #[test]
    fn classic_stale_read_after_two_completed_writes_is_not_linearizable() {
        let mut history = HistoryBuilder::new();
        history
            .write(0, 1, 0, 10)
            .write(1, 2, 20, 30)
            .read(2, Some(1), 40, 50);
        let KeyVerdict::NotLinearizable {
            longest_prefix,
            stuck_at,
            ..
        } = verdict(&history)
        else {
            panic!("expected a violation: {:?}", verdict(&history));
        };
        assert_eq!(longest_prefix, vec![0, 1]);
        assert_eq!(stuck_at, vec!["op 2 p2 read -> Some(1) [call 40, ret 50]"]);
    }

    #[test]
    fn concurrent_writes_are_linearizable_in_the_order_the_reads_require() {
        // Only w2 before w1 explains the later read of 1.
        let mut history = HistoryBuilder::new();
        history
            .write(0, 1, 0, 10)
            .write(1, 2, 0, 10)
            .read(2, Some(1), 11, 12);
        assert_linearizable(&history);

        // Once both reads have completed in sequence, no order of the writes fits.
        history.read(2, Some(2), 13, 14);
        assert_not_linearizable(&history);
    }

    #[test]
    fn read_overlapping_a_write_may_see_either_value_but_not_go_back() {
        let mut history = HistoryBuilder::new();
        history
            .write(0, 1, 0, 10)
            .read(1, None, 1, 2)
            .read(1, Some(1), 3, 4);
        assert_linearizable(&history);

        let mut history = HistoryBuilder::new();
        history
            .write(0, 1, 0, 10)
            .read(1, Some(1), 1, 2)
            .read(1, None, 3, 4);
        assert_not_linearizable(&history);
    }

    #[test]
    fn equal_call_and_return_times_count_as_concurrent() {
        let mut history = HistoryBuilder::new();
        history.write(0, 1, 0, 5).read(1, None, 5, 6);
        assert_linearizable(&history);
    }

    #[test]
    fn read_may_see_a_value_only_an_indeterminate_write_wrote() {
        let mut history = HistoryBuilder::new();
        history
            .write(0, 1, 0, 1)
            .write_unknown(1, 2, 5)
            .read(2, Some(2), 10, 11)
            .read(2, Some(2), 12, 13);
        assert_linearizable(&history);
    }

    #[test]
    fn read_cannot_see_an_indeterminate_write_before_its_invocation() {
        let mut history = HistoryBuilder::new();
        history
            .write(0, 1, 0, 1)
            .read(2, Some(2), 2, 3)
            .write_unknown(1, 2, 5);
        assert_not_linearizable(&history);
    }

    #[test]
    fn indeterminate_write_takes_effect_at_most_once() {
        let mut history = HistoryBuilder::new();
        history
            .write(0, 1, 0, 1)
            .write_unknown(1, 2, 2)
            .read(2, Some(2), 3, 4)
            .write(0, 3, 5, 6)
            .read(2, Some(2), 7, 8);
        assert_not_linearizable(&history);
    }

    #[test]
    fn indeterminate_cas_that_must_have_succeeded_explains_a_later_read() {
        let mut history = HistoryBuilder::new();
        history
            .write(0, 1, 0, 1)
            .cas_unknown(1, 1, 2, 2)
            .read(2, Some(2), 10, 11);
        assert_linearizable(&history);
    }

    #[test]
    fn indeterminate_cas_may_also_have_failed() {
        let mut history = HistoryBuilder::new();
        history
            .write(0, 1, 0, 1)
            .cas_unknown(1, 1, 2, 2)
            .read(2, Some(1), 10, 11)
            .write(0, 5, 12, 13)
            .read(2, Some(5), 14, 15);
        assert_linearizable(&history);
    }

    #[test]
    fn indeterminate_cas_cannot_succeed_from_a_value_the_register_never_held() {
        let mut history = HistoryBuilder::new();
        history
            .write(0, 3, 0, 1)
            .cas_unknown(1, 1, 2, 2)
            .read(2, Some(2), 10, 11);
        assert_not_linearizable(&history);
    }

    #[test]
    fn indeterminate_reads_are_ignored() {
        let mut history = HistoryBuilder::new();
        history
            .read_unknown(1, 0, None)
            .write(0, 1, 2, 3)
            .read_unknown(1, 4, Some(5))
            .read(0, Some(1), 6, 7);
        assert_linearizable(&history);
        let report = check(&history.ops, Budget::default());
        assert_eq!(report.operations, 4);
        assert_eq!(report.indeterminate, 2);
        assert_eq!(
            report.keys["k"],
            KeyVerdict::Linearizable {
                operations: 4,
                states_explored: 3
            }
        );
    }

    #[test]
    fn violation_in_one_key_is_reported_against_that_key_only() {
        let mut history = HistoryBuilder::new();
        history
            .on_key("a")
            .write(0, 1, 0, 1)
            .read(0, Some(1), 2, 3)
            .on_key("b")
            .write(1, 1, 0, 1)
            .write(1, 2, 2, 3)
            .read(2, Some(1), 4, 5)
            .on_key("c")
            .write_unknown(3, 7, 0)
            .read(4, Some(7), 1, 2);
        let report = check(&history.ops, Budget::default());
        assert_eq!(report.valid, Some(false));
        assert_eq!(report.operations, 7);
        assert_eq!(report.indeterminate, 1);
        assert!(matches!(report.keys["a"], KeyVerdict::Linearizable { .. }));
        assert!(matches!(report.keys["c"], KeyVerdict::Linearizable { .. }));
        let KeyVerdict::NotLinearizable { longest_prefix, .. } = &report.keys["b"] else {
            panic!("key b should be invalid: {report:#?}");
        };
        assert_eq!(longest_prefix, &[2, 3]);

        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["valid"], false);
        assert_eq!(json["keys"]["a"]["result"], "linearizable");
        assert_eq!(json["keys"]["b"]["result"], "not_linearizable");
        assert_eq!(
            json["keys"]["b"]["longest_prefix"],
            serde_json::json!([2, 3])
        );
    }

    #[test]
    fn exhausted_budget_is_unknown_not_a_verdict() {
        let mut history = HistoryBuilder::new();
        for process in 0..20 {
            history.write(process, process, 0, 100);
        }
        history.read(20, Some(3), 101, 102);
        let tiny = Budget {
            max_states_per_key: 10,
        };
        let KeyVerdict::Unknown {
            states_explored, ..
        } = check_key(&history.ops, tiny)
        else {
            panic!("expected the budget to run out");
        };
        assert_eq!(states_explored, 10);
        assert_linearizable(&history);

        let report = check(&history.ops, tiny);
        assert_eq!(report.valid, None);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["valid"], serde_json::Value::Null);
        assert_eq!(json["keys"]["k"]["result"], "unknown");

        // A definite violation elsewhere outweighs an undecided key.
        history
            .on_key("other")
            .write(0, 1, 0, 1)
            .read(0, Some(2), 2, 3);
        assert_eq!(check(&history.ops, tiny).valid, Some(false));
    }

    /// A tiny deterministic PRNG, so that failures reproduce.
    struct XorShift64(u64);

    impl XorShift64 {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }

        fn one_in(&mut self, odds: u64) -> bool {
            self.below(odds) == 0
        }
    }

    fn random_output(rng: &mut XorShift64, input: &RegisterInput) -> RegisterOutput {
        match input {
            RegisterInput::Read if rng.one_in(4) => RegisterOutput::Read(None),
            RegisterInput::Read => RegisterOutput::Read(Some(1 + rng.below(3))),
            RegisterInput::Write(_) => RegisterOutput::Write,
            RegisterInput::Cas { .. } if rng.one_in(2) => RegisterOutput::CasOk,
            RegisterInput::Cas { .. } => RegisterOutput::CasFail,
        }
    }

    fn random_input(rng: &mut XorShift64, values: u64) -> RegisterInput {
        match rng.below(3) {
            0 => RegisterInput::Read,
            1 => RegisterInput::Write(1 + rng.below(values)),
            _ => RegisterInput::Cas {
                from: 1 + rng.below(values),
                to: 1 + rng.below(values),
            },
        }
    }

    /// Applies `op` to a register at `state`, recording the output it would observe.
    fn execute(op: &mut RegisterOperation, state: &mut RegisterState) {
        op.output = match op.input {
            RegisterInput::Read => RegisterOutput::Read(*state),
            RegisterInput::Write(value) => {
                *state = Some(value);
                RegisterOutput::Write
            }
            RegisterInput::Cas { from, to } if *state == Some(from) => {
                *state = Some(to);
                RegisterOutput::CasOk
            }
            RegisterInput::Cas { .. } => RegisterOutput::CasFail,
        };
    }

    /// A history of up to seven operations: either with arbitrary outputs or produced by a
    /// real register (then sometimes with one output corrupted), so both verdicts are common.
    fn random_small_history(rng: &mut XorShift64) -> Vec<RegisterOperation> {
        let count = 1 + rng.below(7);
        let mut ops: Vec<RegisterOperation> = (0..count)
            .map(|id| {
                let call = rng.below(20);
                RegisterOperation {
                    id,
                    process: id,
                    key: "k".to_owned(),
                    input: random_input(rng, 3),
                    output: RegisterOutput::Unknown,
                    call,
                    ret: Some(call + rng.below(8)),
                }
            })
            .collect();
        let indeterminate: Vec<bool> = ops.iter().map(|_| rng.one_in(5)).collect();

        if rng.one_in(2) {
            for op in &mut ops {
                op.output = random_output(rng, &op.input);
            }
        } else {
            let mut linearization_points: Vec<(u64, usize)> = ops
                .iter()
                .enumerate()
                .map(|(index, op)| (op.call + rng.below(op.ret.unwrap() - op.call + 1), index))
                .collect();
            linearization_points.sort_unstable();
            let mut state = None;
            for (_, index) in linearization_points {
                let took_effect = !indeterminate[index] || rng.one_in(2);
                if took_effect {
                    execute(&mut ops[index], &mut state);
                }
            }
            if rng.one_in(3) {
                let victim = rng.below(count) as usize;
                ops[victim].output = random_output(rng, &ops[victim].input);
            }
        }

        for (op, indeterminate) in ops.iter_mut().zip(indeterminate) {
            if indeterminate {
                op.output = RegisterOutput::Unknown;
                op.ret = None;
            }
        }
        ops
    }

    /// Every outcome an operation allows from any of `states`.
    fn possible_states_after(
        op: &RegisterOperation,
        states: &[RegisterState],
    ) -> Vec<RegisterState> {
        let mut after = Vec::new();
        for &state in states {
            let outcomes = match (&op.input, &op.output) {
                (RegisterInput::Read, RegisterOutput::Read(value)) if *value == state => {
                    vec![state]
                }
                (RegisterInput::Read, RegisterOutput::Unknown) => vec![state],
                (RegisterInput::Write(value), RegisterOutput::Write | RegisterOutput::Unknown) => {
                    vec![Some(*value)]
                }
                (RegisterInput::Cas { from, to }, RegisterOutput::CasOk)
                    if state == Some(*from) =>
                {
                    vec![Some(*to)]
                }
                (RegisterInput::Cas { from, .. }, RegisterOutput::CasFail)
                    if state != Some(*from) =>
                {
                    vec![state]
                }
                (RegisterInput::Cas { from, to }, RegisterOutput::Unknown)
                    if state == Some(*from) =>
                {
                    vec![state, Some(*to)]
                }
                (RegisterInput::Cas { .. }, RegisterOutput::Unknown) => vec![state],
                _ => vec![],
            };
            for outcome in outcomes {
                if !after.contains(&outcome) {
                    after.push(outcome);
                }
            }
        }
        after
    }

    /// Tries every total order of all operations (indeterminate ones included, taking effect
    /// or not) that respects real time.
    fn brute_force_linearizable(ops: &[RegisterOperation]) -> bool {
        fn must_precede(first: &RegisterOperation, second: &RegisterOperation) -> bool {
            first.output != RegisterOutput::Unknown
                && first.ret.is_some_and(|ret| ret < second.call)
        }

        fn extend(
            ops: &[RegisterOperation],
            placed: &mut [bool],
            states: &[RegisterState],
        ) -> bool {
            if placed.iter().all(|&done| done) {
                return true;
            }
            for next in 0..ops.len() {
                let blocked = placed[next]
                    || (0..ops.len()).any(|other| {
                        !placed[other] && other != next && must_precede(&ops[other], &ops[next])
                    });
                if blocked {
                    continue;
                }
                let after = possible_states_after(&ops[next], states);
                if after.is_empty() {
                    continue;
                }
                placed[next] = true;
                let found = extend(ops, placed, &after);
                placed[next] = false;
                if found {
                    return true;
                }
            }
            false
        }

        extend(ops, &mut vec![false; ops.len()], &[None])
    }

    #[test]
    fn agrees_with_brute_force_on_small_random_histories() {
        let mut rng = XorShift64(0x9e37_79b9_7f4a_7c15);
        let (mut valid, mut invalid) = (0, 0);
        for case in 0..6000 {
            let ops = random_small_history(&mut rng);
            let expected = brute_force_linearizable(&ops);
            assert_eq!(
                is_linearizable(&ops),
                expected,
                "case {case}: checker disagrees with brute force on {ops:#?}"
            );
            if expected {
                valid += 1;
            } else {
                invalid += 1;
            }
        }
        assert!(
            valid > 1000 && invalid > 1000,
            "valid {valid}, invalid {invalid}"
        );
    }

    /// A history produced by `processes` clients against a real register, each operation
    /// taking effect between its call and its return; now and then a client times out
    /// before or after its operation took effect and is replaced by a fresh process.
    fn generated_linearizable_history(
        rng: &mut XorShift64,
        key: &str,
        first_id: u64,
        operations: usize,
        processes: u64,
    ) -> Vec<RegisterOperation> {
        #[derive(Clone, Copy)]
        enum Client {
            Idle,
            Invoked(usize),
            TookEffect(usize),
        }
        let mut ops: Vec<RegisterOperation> = Vec::new();
        let mut clients: Vec<(u64, Client)> = (0..processes).map(|p| (p, Client::Idle)).collect();
        let mut next_process = processes;
        let mut register = None;
        let mut time = 0;
        while ops.len() < operations || clients.iter().any(|(_, c)| !matches!(c, Client::Idle)) {
            time += 1 + rng.below(3);
            let slot = rng.below(processes) as usize;
            let (process, client) = clients[slot];
            clients[slot].1 = match client {
                Client::Idle if ops.len() < operations => {
                    ops.push(RegisterOperation {
                        id: first_id + ops.len() as u64,
                        process,
                        key: key.to_owned(),
                        input: random_input(rng, 5),
                        output: RegisterOutput::Unknown,
                        call: time,
                        ret: None,
                    });
                    Client::Invoked(ops.len() - 1)
                }
                Client::Idle => Client::Idle,
                Client::Invoked(index) | Client::TookEffect(index) if rng.one_in(40) => {
                    ops[index].output = RegisterOutput::Unknown;
                    clients[slot].0 = next_process;
                    next_process += 1;
                    Client::Idle
                }
                Client::Invoked(index) => {
                    execute(&mut ops[index], &mut register);
                    Client::TookEffect(index)
                }
                Client::TookEffect(index) => {
                    ops[index].ret = Some(time);
                    Client::Idle
                }
            };
        }
        ops
    }

    #[test]
    fn long_concurrent_history_is_decided_quickly() {
        let mut rng = XorShift64(42);
        let ops = generated_linearizable_history(&mut rng, "k", 0, 300, 10);
        assert!(ops.iter().any(|op| op.output == RegisterOutput::Unknown));
        let verdict = check_key(&ops, Budget::default());
        assert!(
            matches!(verdict, KeyVerdict::Linearizable { .. }),
            "{verdict:?}"
        );
    }

    #[test]
    fn many_keys_with_timeouts_are_decided_quickly() {
        let mut rng = XorShift64(7);
        let mut ops = Vec::new();
        for key in 0..100 {
            let first_id = ops.len() as u64;
            ops.extend(generated_linearizable_history(
                &mut rng,
                &format!("key-{key}"),
                first_id,
                200,
                10,
            ));
        }
        let report = check(&ops, Budget::default());
        assert_eq!(report.valid, Some(true), "{report:#?}");
        assert_eq!(report.keys.len(), 100);
        assert_eq!(report.operations, 20_000);
    }

    #[test]
    fn corrupted_read_in_a_long_history_is_found() {
        let mut rng = XorShift64(1234);
        let mut ops = generated_linearizable_history(&mut rng, "k", 0, 300, 10);
        let victim = ops
            .iter()
            .rposition(|op| matches!(op.output, RegisterOutput::Read(_)))
            .unwrap();
        ops[victim].output = RegisterOutput::Read(Some(1_000));
        let verdict = check_key(&ops, Budget::default());
        let KeyVerdict::NotLinearizable { stuck_at, .. } = &verdict else {
            panic!("expected a violation: {verdict:?}");
        };
        let culprit = format!("op {} ", ops[victim].id);
        assert!(
            stuck_at.iter().any(|line| line.starts_with(&culprit)),
            "{verdict:#?}"
        );
    }
}
