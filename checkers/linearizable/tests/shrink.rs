//! Shrinking every invalid history of the external corpus (set
//! SPLITBRAIN_CORPUS): the kept ops are not linearizable alone, nor with the
//! object's other ops left indeterminate (so they prove the verdict), and
//! when the shrink says the set is minimal, dropping any one of them makes
//! that proof linearizable.

use std::path::{Path, PathBuf};

use splitbrain_history::{Budget, CheckOptions, History, Value, Verdict};
use splitbrain_linearizable::{check, shrink};

fn corpus_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("SPLITBRAIN_CORPUS")?);
    Some(if dir.is_relative() {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(dir)
    } else {
        dir
    })
}

fn options(model: &str, timeout_s: u64) -> CheckOptions {
    CheckOptions {
        model: Some(model.to_string()),
        initial: matches!(model, "cas-register" | "multi-register").then_some(Value::Int(0)),
        budget: Budget::with_timeout(Some(std::time::Duration::from_secs(timeout_s))),
        ..CheckOptions::default()
    }
}

#[test]
fn every_invalid_corpus_history_shrinks_to_a_minimal_proof() {
    let Some(dir) = corpus_dir() else {
        eprintln!("SKIPPED: every_invalid_corpus_history_shrinks_to_a_minimal_proof: SPLITBRAIN_CORPUS is not set");
        return;
    };
    let dir = dir.join("linearizability");
    let table = std::fs::read_to_string(dir.join("expected.tsv")).expect("expected.tsv");
    let mut shrunk_count = 0;
    let (mut valid_drops, mut unknown_drops, mut not_minimal) = (0, 0, 0);
    for line in table.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split('\t').collect();
        let [file, model, "invalid"] = fields[..] else {
            continue;
        };
        // Unpartitioned key-value histories are undecided as a whole.
        if model == "kv-nopart" {
            continue;
        }
        let h = History::read(&dir.join(file), None).unwrap();
        let s = shrink(&h, &options(model, 20))
            .unwrap()
            .unwrap_or_else(|| panic!("{file}: invalid but nothing to shrink"));
        let verdict = |h: &History| check(h, &options(model, 5)).unwrap().verdict;
        assert_eq!(
            verdict(&s.alone(&h).unwrap()),
            Verdict::Invalid,
            "{file}: alone"
        );
        assert_eq!(
            verdict(&s.proof(&h, None).unwrap()),
            Verdict::Invalid,
            "{file}: proof"
        );
        shrunk_count += 1;
        if !s.minimal {
            not_minimal += 1;
            eprintln!(
                "{file}: {} of {} ops kept, not shown minimal",
                s.kept.len(),
                s.object_ops
            );
            continue;
        }
        for j in 0..s.kept.len() {
            match verdict(&s.proof(&h, Some(j)).unwrap()) {
                Verdict::Valid => valid_drops += 1,
                Verdict::Unknown => unknown_drops += 1,
                Verdict::Invalid => panic!(
                    "{file}: said minimal, but still invalid without kept op {j} of {}",
                    s.kept.len()
                ),
            }
        }
        eprintln!(
            "{file}: {} of {} ops kept, {} checks, {} ms",
            s.kept.len(),
            s.object_ops,
            s.checks,
            s.elapsed_ms
        );
    }
    eprintln!("dropping one more kept op: {valid_drops} valid, {unknown_drops} undecided");
    eprintln!("{not_minimal} of {shrunk_count} shrunk histories not shown minimal");
    assert!(shrunk_count > 50, "only {shrunk_count} invalid rows shrunk");
    assert!(
        not_minimal * 10 <= shrunk_count,
        "{not_minimal} not shown minimal"
    );
    assert!(
        unknown_drops * 20 <= valid_drops,
        "{unknown_drops} undecided of {} minimality checks",
        valid_drops + unknown_drops
    );
}
