//! What every checker returns, and the budget it runs under.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A checker's verdict. Exit codes follow Jepsen's so CI gates keep working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Valid,
    Invalid,
    /// The checker could not decide: a time or memory budget ran out, or it failed.
    Unknown,
}

impl Verdict {
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Valid => 0,
            Verdict::Invalid => 1,
            Verdict::Unknown => 2,
        }
    }

    fn severity(self) -> u8 {
        match self {
            Verdict::Valid => 0,
            Verdict::Unknown => 1,
            Verdict::Invalid => 2,
        }
    }

    /// The worse of two verdicts: invalid > unknown > valid.
    pub fn worst(self, other: Verdict) -> Verdict {
        if other.severity() > self.severity() {
            other
        } else {
            self
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Valid => "valid",
            Verdict::Invalid => "invalid",
            Verdict::Unknown => "unknown",
        }
    }
}

/// Why a checker could not look at a history at all.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum CheckError {
    /// An op the checker cannot interpret; `position` is the op's place in the history.
    #[error("{problem}")]
    BadOp { position: usize, problem: String },
    /// An option or combination the checker does not support.
    #[error("{0}")]
    Unsupported(String),
}

impl CheckError {
    pub fn bad_op(position: usize, problem: impl Into<String>) -> Self {
        CheckError::BadOp {
            position,
            problem: problem.into(),
        }
    }
}

/// The common face of every checker's typed result: the result itself is
/// data (serialized into `--json` and handed to the report); rendering text
/// from it is separate.
pub trait CheckOutcome: Serialize {
    fn verdict(&self) -> Verdict;
    /// Names of the anomaly classes found (`G2-item`, `lost`, `nonlinearizable`, ...).
    fn anomaly_types(&self) -> Vec<String>;
    /// A plain-text explanation for a terminal.
    fn explain(&self) -> String;
}

/// Limits a checker must stay within; running out gives `Unknown`, never a hang.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub deadline: Option<Instant>,
    /// Approximate bytes the checker may use for its own search state.
    pub memory_bytes: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            deadline: None,
            memory_bytes: 2 << 30,
        }
    }
}

impl Budget {
    pub fn with_timeout(timeout: Option<Duration>) -> Self {
        Budget {
            deadline: timeout.map(|t| Instant::now() + t),
            ..Budget::default()
        }
    }

    pub fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_verdict_wins() {
        use Verdict::*;
        assert_eq!(Valid.worst(Unknown), Unknown);
        assert_eq!(Unknown.worst(Invalid), Invalid);
        assert_eq!(Invalid.worst(Valid), Invalid);
        assert_eq!([Valid, Invalid, Unknown].map(Verdict::exit_code), [0, 1, 2]);
    }
}

/// Options common to all checkers, as the CLI and workloads pass them.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// The model for linearizability (`register`, `cas-register`, `kv`, ...).
    pub model: Option<String>,
    /// The consistency model a transactional history is checked against.
    pub consistency_model: Option<String>,
    /// The initial value of registers or keys, when the model takes one.
    pub initial: Option<crate::Value>,
    /// Stale reads are violations (set-full) rather than measurements.
    pub linearizable: bool,
    /// Checker-specific settings (`total=100`, `negative-balances=true`, ...).
    pub params: std::collections::BTreeMap<String, String>,
    pub budget: Budget,
}

impl CheckOptions {
    /// The param `nil-read`: `unknown` (a register read of nil is an unknown
    /// value, as in Knossos; the default) or `empty` (the client reads an
    /// absent key as nil, so a nil read after an acknowledged write is a
    /// violation).
    pub fn nil_read_is_empty(&self) -> Result<bool, CheckError> {
        match self.params.get("nil-read").map(String::as_str) {
            None | Some("unknown") => Ok(false),
            Some("empty") => Ok(true),
            Some(other) => Err(CheckError::Unsupported(format!(
                "nil-read={other}: the values are 'unknown' and 'empty'"
            ))),
        }
    }
}

/// Any checker's result in one shape: what `--json` prints and what the run
/// store keeps. `result` is the checker's own typed result, serialized.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckReport {
    pub checker: String,
    pub verdict: Verdict,
    pub anomaly_types: Vec<String>,
    pub result: serde_json::Value,
    /// Plain-text explanation rendered from `result`.
    pub explanation: String,
}

impl CheckReport {
    /// A valid verdict on a history without a single client op claims what
    /// nothing showed: it becomes unknown (`empty-history`).
    pub fn nothing_checked_if_empty(mut self, h: &crate::History) -> CheckReport {
        if self.verdict == Verdict::Valid && !h.ops.iter().any(|o| o.is_client()) {
            self.verdict = Verdict::Unknown;
            self.anomaly_types.push("empty-history".into());
            self.explanation = format!(
                "nothing was checked: the history holds no client ops. {}",
                self.explanation
            );
        }
        self
    }

    pub fn from_outcome<T: CheckOutcome>(checker: &str, outcome: &T) -> CheckReport {
        CheckReport {
            checker: checker.to_string(),
            verdict: outcome.verdict(),
            anomaly_types: outcome.anomaly_types(),
            result: serde_json::to_value(outcome).unwrap_or_else(|e| {
                serde_json::Value::String(format!("unserializable result: {e}"))
            }),
            explanation: outcome.explain(),
        }
    }
}

/// A checker as a crate exports it: a name and a pure function.
#[derive(Clone, Copy)]
pub struct CheckerDef {
    pub name: &'static str,
    pub run: fn(&crate::History, &CheckOptions) -> Result<CheckReport, CheckError>,
}
