//! Every history in the external corpus parses and pairs. The corpus is not
//! part of the project: set SPLITBRAIN_CORPUS to its folder to run this.

use std::path::{Path, PathBuf};

use splitbrain_history::History;

fn corpus_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("SPLITBRAIN_CORPUS")?);
    // Relative paths are taken from the workspace root, where .ci/run sets them.
    let dir = if dir.is_relative() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir)
    } else {
        dir
    };
    Some(dir)
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
fn every_corpus_file_parses() {
    let Some(dir) = corpus_dir() else {
        eprintln!("SKIPPED: every_corpus_file_parses: SPLITBRAIN_CORPUS is not set");
        return;
    };
    let mut all = Vec::new();
    files(&dir, &mut all);
    assert!(
        all.len() >= 230,
        "expected the corpus at {}, found {} files",
        dir.display(),
        all.len()
    );
    let mut ops = 0;
    for path in &all {
        let h = History::read(path, None).unwrap_or_else(|e| panic!("{e}"));
        ops += h.len();
    }
    eprintln!("parsed {} corpus files, {ops} ops", all.len());
}
