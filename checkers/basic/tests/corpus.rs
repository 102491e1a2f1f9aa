//! Every checker here runs over every history of the external corpus (register
//! histories recorded against real databases) without panicking, and the
//! counting checkers agree with the history's own counts. The corpus is not
//! part of the project: set SPLITBRAIN_CORPUS to its folder to run this.

use std::path::{Path, PathBuf};

use splitbrain_basic::{check_perf, check_stats, compose, CHECKERS};
use splitbrain_history::{CheckOptions, History};

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

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("edn" | "log" | "txt")
        ) {
            out.push(path);
        }
    }
}

#[test]
fn every_checker_survives_the_corpus() {
    let Some(dir) = corpus_dir() else {
        eprintln!("SKIPPED: every_checker_survives_the_corpus: SPLITBRAIN_CORPUS is not set");
        return;
    };
    let mut all = Vec::new();
    files(&dir, &mut all);
    assert!(!all.is_empty(), "no histories under {}", dir.display());
    let names: Vec<&str> = CHECKERS.iter().map(|d| d.name).collect();
    let opts = CheckOptions::default();
    for path in &all {
        let h = History::read(path, None).unwrap_or_else(|e| panic!("{e}"));
        let c = compose(&h, &opts, &names);
        for r in &c.reports {
            assert!(
                !r.explanation.contains("checker panicked"),
                "{}: {}: {}",
                path.display(),
                r.checker,
                r.explanation
            );
        }
        let counts = h.stats();
        let stats = check_stats(&h, &opts).unwrap();
        assert_eq!(stats.total.count, counts.invocations, "{}", path.display());
        assert_eq!(stats.total.ok, counts.ok, "{}", path.display());
        let perf = check_perf(&h, &opts).unwrap();
        assert_eq!(
            perf.overall.counts.count,
            counts.invocations,
            "{}",
            path.display()
        );
    }
    eprintln!(
        "ran {} checkers over {} corpus files",
        names.len(),
        all.len()
    );
}
