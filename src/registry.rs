//! Checkers by name. Each checker crate exports a table of pure functions from
//! a history to a typed result; this is the only place that gathers them.

use splitbrain_history::{CheckerDef, History};

/// Every checker crate's table, in the order they are listed.
const TABLES: &[&[CheckerDef]] = &[
    splitbrain_linearizable::CHECKERS,
    splitbrain_elle::CHECKERS,
    splitbrain_basic::CHECKERS,
];

pub fn all() -> impl Iterator<Item = &'static CheckerDef> {
    TABLES.iter().flat_map(|t| t.iter())
}

pub fn find(name: &str) -> Option<&'static CheckerDef> {
    all().find(|c| c.name == name)
}

pub fn names() -> String {
    let names: Vec<_> = all().map(|c| c.name).collect();
    if names.is_empty() {
        return "none in this build yet".to_string();
    }
    names.join(", ")
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
