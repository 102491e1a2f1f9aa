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

/// How long past its deadline a checker's result is still waited for.
/// Checkers that watch the deadline (Elle's cycle search, the
/// linearizability search) stop at it and then report what they found so
/// far (anomalies found make the history invalid even so); this is their
/// time to say it. A checker that does not watch it is left behind then.
pub const REPORT_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// The moment a checker given `deadline` is given up on.
pub fn give_up_at(deadline: Option<Instant>) -> Option<Instant> {
    deadline.map(|d| d + REPORT_GRACE)
}

/// [`splitbrain_basic::run_guarded`] that stops waiting [`REPORT_GRACE`]
/// after `deadline`: a checker still running then is unknown, whatever it
/// would have found.
pub fn run_until(
    def: &'static CheckerDef,
    history: &Arc<History>,
    opts: &CheckOptions,
    deadline: Option<Instant>,
) -> CheckReport {
    let (h, o) = (history.clone(), opts.clone());
    within(give_up_at(deadline), move || {
        splitbrain_basic::run_guarded(def, &h, &o)
    })
    .unwrap_or_else(|| {
        splitbrain_basic::unknown_report(
            def.name,
            "the checker did not finish within the time budget".to_string(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use splitbrain_history::{Budget, Format, Verdict};

    fn list_append(lines: &[&str]) -> Arc<History> {
        let text = lines.join("\n");
        Arc::new(History::parse("test", text.as_bytes(), Some(Format::Jsonl)).unwrap())
    }

    fn past_deadline() -> CheckOptions {
        CheckOptions {
            budget: Budget {
                deadline: Some(Instant::now()),
                ..Budget::default()
            },
            ..CheckOptions::default()
        }
    }

    /// Regression: at the deadline a checker's partial findings were thrown
    /// away with it. An aborted read found before the cycle search ran out
    /// of time proves the history invalid; a cycle the search had no time
    /// for leaves it unknown, saying the search was cut short.
    #[test]
    fn at_the_deadline_a_checker_reports_what_it_found_so_far() {
        let def = find("list-append").unwrap();
        let aborted_read = list_append(&[
            r#"{"process":0,"type":"invoke","f":"txn","value":[["append",1,1]]}"#,
            r#"{"process":0,"type":"fail","f":"txn","value":[["append",1,1]]}"#,
            r#"{"process":1,"type":"invoke","f":"txn","value":[["r",1,null]]}"#,
            r#"{"process":1,"type":"ok","f":"txn","value":[["r",1,[1]]]}"#,
        ]);
        let opts = past_deadline();
        let report = run_until(def, &aborted_read, &opts, opts.budget.deadline);
        assert_eq!(report.verdict, Verdict::Invalid, "{}", report.explanation);
        assert!(report.anomaly_types.contains(&"G1a".to_string()));

        // Write skew's cousin G1c: each txn reads the other's append.
        let cycle = list_append(&[
            r#"{"process":0,"type":"invoke","f":"txn","value":[["append",1,1],["r",2,null]]}"#,
            r#"{"process":1,"type":"invoke","f":"txn","value":[["append",2,1],["r",1,null]]}"#,
            r#"{"process":0,"type":"ok","f":"txn","value":[["append",1,1],["r",2,[1]]]}"#,
            r#"{"process":1,"type":"ok","f":"txn","value":[["append",2,1],["r",1,[1]]]}"#,
        ]);
        let unbounded = run_until(def, &cycle, &CheckOptions::default(), None);
        assert_eq!(
            unbounded.verdict,
            Verdict::Invalid,
            "{}",
            unbounded.explanation
        );
        let opts = past_deadline();
        let cut = run_until(def, &cycle, &opts, opts.budget.deadline);
        assert_ne!(cut.verdict, Verdict::Valid, "{}", cut.explanation);
        if cut.verdict == Verdict::Unknown {
            assert!(
                cut.anomaly_types
                    .contains(&"cycle-search-timeout".to_string()),
                "{:?}",
                cut.anomaly_types
            );
        }
    }
}
