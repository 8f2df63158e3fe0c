//! Checkers: each turns what a run recorded into a [`Verdict`] — valid,
//! invalid, or undecided, which fails the run like an invalid one (a
//! checker that cannot decide has proven nothing). The register checker
//! reads the history (linearizability, [`linearizable`]); the set checker
//! the adds and the final read; the supervisor checker the engine's samples
//! and deaths; `leader-actions` the managers' own engine calls against who
//! led a quorum; `one-way` write gaps and term raises around one-way
//! faults; DNS and liveness ask the healed cluster.

pub mod dns;
pub mod leader_actions;
pub mod linearizable;
pub mod liveness;
pub mod one_way;
pub mod register;
pub mod set;
pub mod supervisor;

use serde::Serialize;

/// One checker's finding.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub checker: String,
    /// `None`: the checker could not decide (counts as a failure).
    pub valid: Option<bool>,
    /// One line for humans.
    pub summary: String,
    pub details: serde_json::Value,
}

impl Verdict {
    pub fn new(
        checker: &str,
        valid: Option<bool>,
        summary: impl Into<String>,
        details: serde_json::Value,
    ) -> Verdict {
        Verdict {
            checker: checker.to_string(),
            valid,
            summary: summary.into(),
            details,
        }
    }

    pub fn passed(&self) -> bool {
        self.valid == Some(true)
    }

    pub fn label(&self) -> &'static str {
        match self.valid {
            Some(true) => "valid",
            Some(false) => "INVALID",
            None => "UNDECIDED",
        }
    }
}
