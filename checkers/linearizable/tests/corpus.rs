//! Every row of the external corpus's linearizability/expected.tsv agrees.
//! The corpus is not part of the project: set SPLITBRAIN_CORPUS to its folder.

use std::path::{Path, PathBuf};

use splitbrain_history::{Budget, CheckOptions, History, Value, Verdict};

fn corpus_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("SPLITBRAIN_CORPUS")?);
    // Relative paths are taken from the workspace root, where .ci/run sets them.
    Some(if dir.is_relative() {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(dir)
    } else {
        dir
    })
}

/// Options for a corpus row: Knossos's registers start at 0 (its own tests say so).
fn options(model: &str) -> CheckOptions {
    CheckOptions {
        model: Some(model.to_string()),
        initial: matches!(model, "cas-register" | "multi-register").then_some(Value::Int(0)),
        budget: Budget::with_timeout(Some(std::time::Duration::from_secs(60))),
        ..CheckOptions::default()
    }
}

#[test]
fn every_corpus_row_agrees() {
    let Some(dir) = corpus_dir() else {
        eprintln!("SKIPPED: every_corpus_row_agrees: SPLITBRAIN_CORPUS is not set");
        return;
    };
    let dir = dir.join("linearizability");
    let table = std::fs::read_to_string(dir.join("expected.tsv"))
        .unwrap_or_else(|e| panic!("cannot read {}/expected.tsv: {e}", dir.display()));
    let mut rows = 0;
    let mut lost_write_found = 0;
    let mut wrong = Vec::new();
    for line in table.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split('\t').collect();
        let [file, model, expected] = fields[..] else {
            panic!("bad row in expected.tsv: {line}");
        };
        let want = match expected {
            "valid" => Verdict::Valid,
            "invalid" => Verdict::Invalid,
            other => panic!("bad expectation {other} in row {line}"),
        };
        let history =
            History::read(&dir.join(file), None).unwrap_or_else(|e| panic!("{file}: {e}"));
        let result = splitbrain_linearizable::check(&history, &options(model))
            .unwrap_or_else(|e| panic!("{file} as {model}: {e}"));
        rows += 1;
        // The lost-write checker's Invalid is a proof of non-linearizability.
        let lost = splitbrain_basic::check_lost_writes(&history, &CheckOptions::default())
            .unwrap_or_else(|e| panic!("{file}: lost-write: {e}"));
        if lost.verdict == Verdict::Invalid {
            lost_write_found += 1;
            if want == Verdict::Valid {
                wrong.push(format!(
                    "{file}: linearizable, but lost-write says {lost:?}"
                ));
            }
        }
        if result.verdict != want {
            wrong.push(format!(
                "{file} as {model}: expected {expected}, got {} ({} configurations)",
                result.verdict.as_str(),
                result.configurations
            ));
        }
    }
    assert_eq!(rows, 234, "expected 234 rows in expected.tsv");
    eprintln!("lost-write found a missed write in {lost_write_found} of the invalid rows");
    assert!(
        lost_write_found > 0,
        "lost-write found nothing in the corpus"
    );
    assert!(
        wrong.is_empty(),
        "{} disagreements:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
