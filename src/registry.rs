//! Checkers by name. Each checker crate exports a table of pure functions from
//! a history to a typed result; this is the only place that gathers them.

use std::sync::Arc;
use std::time::Instant;

use splitbrain_history::{CheckOptions, CheckReport, CheckerDef, History};

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

/// Runs `work` on a thread of its own and waits for it until `deadline`
/// (for ever without one). `None` when the deadline came first: the work is
/// left to finish on its thread, its result unread. Checkers get a large
/// stack, as deep histories make deep searches.
pub fn within<T: Send + 'static>(
    deadline: Option<Instant>,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let Some(deadline) = deadline else {
        return Some(work());
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("checker".into())
        .stack_size(256 << 20)
        .spawn(move || {
            let _ = tx.send(work());
        });
    if spawned.is_err() {
        return None;
    }
    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(done) => Some(done),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
        // The thread's panic hook has said why; the caller's turn to stop.
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("a checker thread panicked"),
    }
}

/// [`splitbrain_basic::run_guarded`] that stops waiting at `deadline`: a
/// checker still running then is unknown, whatever it would have found.
pub fn run_until(
    def: &'static CheckerDef,
    history: &Arc<History>,
    opts: &CheckOptions,
    deadline: Option<Instant>,
) -> CheckReport {
    let (h, o) = (history.clone(), opts.clone());
    within(deadline, move || splitbrain_basic::run_guarded(def, &h, &o)).unwrap_or_else(|| {
        splitbrain_basic::unknown_report(
            def.name,
            "the checker did not finish within the time budget".to_string(),
        )
    })
}
