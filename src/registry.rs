//! Checkers by name. Each checker crate exposes a pure function from a
//! history to a typed result; this table is the only place that names them.

use splitbrain_history::{CheckError, CheckOptions, CheckReport, History};

/// One registered checker.
pub struct CheckerEntry {
    pub name: &'static str,
    pub run: fn(&History, &CheckOptions) -> Result<CheckReport, CheckError>,
}

/// Every checker this build has. Checkers arrive with their own issues.
pub const CHECKERS: &[CheckerEntry] = &[];

pub fn find(name: &str) -> Option<&'static CheckerEntry> {
    CHECKERS.iter().find(|c| c.name == name)
}

pub fn names() -> String {
    if CHECKERS.is_empty() {
        return "none in this build yet".to_string();
    }
    CHECKERS
        .iter()
        .map(|c| c.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The checker a history most likely wants when none was named.
pub fn guess(history: &History) -> Option<&'static str> {
    let mut fs = history
        .ops
        .iter()
        .filter(|o| o.is_client())
        .map(|o| o.f.as_str());
    let first = fs.next()?;
    Some(match first {
        "txn" => "list-append",
        "read" | "write" | "cas" | "get" | "put" | "append" | "acquire" | "release" => {
            "linearizable"
        }
        "add" => "set",
        "transfer" => "bank",
        "increment" | "incr" => "counter",
        _ => return None,
    })
}
