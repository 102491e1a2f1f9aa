//! The `splitbrain` binary's offline commands: convert, check errors, exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use splitbrain_history::History;

fn splitbrain(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_splitbrain"))
        .args(args)
        .output()
        .expect("run splitbrain")
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn version_and_help() {
    let o = splitbrain(&["--version"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("splitbrain "));
    for sub in ["check", "convert"] {
        let o = splitbrain(&[sub, "--help"]);
        assert_eq!(o.status.code(), Some(0), "{sub} --help");
        assert!(String::from_utf8_lossy(&o.stdout).contains("Usage: splitbrain"));
    }
}

#[test]
fn convert_round_trips_edn_jsonl_edn() {
    let dir = tempfile::tempdir().unwrap();
    let edn = example("cas-register-bad.edn");
    let jsonl = dir.path().join("h.jsonl");
    let back = dir.path().join("h.edn");
    let log = dir.path().join("h.log");
    for (a, b) in [(&edn, &jsonl), (&jsonl, &back), (&back, &log)] {
        let o = splitbrain(&["convert", a.to_str().unwrap(), b.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let original = History::read(&edn, None).unwrap();
    for path in [&jsonl, &back, &log] {
        let h = History::read(path, None).unwrap();
        assert_eq!(h.ops.len(), original.ops.len());
        for (a, b) in original.ops.iter().zip(&h.ops) {
            assert_eq!(
                (&a.process, a.kind, &a.f, &a.value, a.index),
                (&b.process, b.kind, &b.f, &b.value, b.index),
                "{}",
                path.display()
            );
        }
    }
    // The EDN written back keeps keywords as keywords.
    assert!(std::fs::read_to_string(&back)
        .unwrap()
        .contains(":type :invoke, :process 0, :f :write"));
}

#[test]
fn convert_leaves_nothing_behind_on_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"process\":0,\"type\":\"invoke\",\"f\":\"read\"}\n{oops\n",
    )
    .unwrap();
    let out = dir.path().join("out.edn");
    let o = splitbrain(&["convert", bad.to_str().unwrap(), out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(254));
    assert!(
        stderr(&o).contains("bad.jsonl:2: not a valid op"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
}

#[test]
fn bad_input_exits_254_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "unpaired.jsonl",
            "{\"process\":0,\"type\":\"invoke\",\"f\":\"read\"}\n{\"process\":0,\"type\":\"ok\",\"f\":\"read\",\"value\":1}\n{\"process\":1,\"type\":\"ok\",\"f\":\"read\",\"value\":1}\n",
            ":3: ok of read by process 1 has no invocation",
        ),
        (
            "twice.jsonl",
            "{\"process\":0,\"type\":\"invoke\",\"f\":\"read\"}\n{\"process\":0,\"type\":\"invoke\",\"f\":\"read\"}\n",
            ":2: process 0 invokes read while its read from line 1 has not completed",
        ),
        ("malformed.edn", "[{:process 0 :type :invoke :f :read}\n{:process 0 :type :ok :f :read :value [1 2}]\n", ":2: "),
        ("garbage.txt", "hello world\n", "cannot tell the format"),
    ];
    for (name, text, want) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let o = splitbrain(&[
            "check",
            "--checker",
            "linearizable",
            "--model",
            "register",
            path.to_str().unwrap(),
        ]);
        // Until a checker exists, an unknown-checker error is also a 254; the history is read first when it does.
        assert_eq!(o.status.code(), Some(254), "{name}: {}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "one-line error: {err}");
        if !err.contains("unknown checker") {
            assert!(err.contains(name) && err.contains(want), "{name}: {err}");
        }
    }
}

#[test]
fn bad_arguments_exit_254() {
    let o = splitbrain(&["check", "--format", "xml", "x"]);
    assert_eq!(o.status.code(), Some(254));
    assert!(stderr(&o).contains("unknown format 'xml'"));
    let o = splitbrain(&["check", "--no-such-flag", "x"]);
    assert_eq!(o.status.code(), Some(254));
    let o = splitbrain(&["check", "--checker", "no-such-checker", "x"]);
    assert_eq!(o.status.code(), Some(254));
    assert!(stderr(&o).contains("unknown checker 'no-such-checker'"));
    let o = splitbrain(&["check", "/no/such/file.jsonl"]);
    assert_eq!(o.status.code(), Some(254));
    assert!(stderr(&o).contains("/no/such/file.jsonl: cannot read"));
}

#[test]
fn analyze_and_report_read_test_json_typed_and_name_a_bad_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("history.jsonl"), "").unwrap();
    for (text, field) in [
        (
            r#"{"name":"t","workload":"nope"}"#,
            "field workload: unknown variant `nope`",
        ),
        (
            r#"{"name":"t","workload":"register","workload_options":7}"#,
            "field workload_options:",
        ),
        (r#"{"name":"t""#, "EOF while parsing"),
    ] {
        std::fs::write(dir.path().join("test.json"), text).unwrap();
        for command in ["analyze", "report"] {
            let o = splitbrain(&[command, dir.path().to_str().unwrap()]);
            assert_eq!(
                o.status.code(),
                Some(254),
                "{command} {text}: {}",
                stderr(&o)
            );
            let err = stderr(&o);
            assert_eq!(err.lines().count(), 1, "one-line error: {err}");
            assert!(
                err.contains("test.json") && err.contains(field),
                "{command} {text}: {err}"
            );
        }
    }
}

#[test]
fn deeply_nested_input_is_an_error_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep.edn");
    let deep = format!(
        "{{:process 0 :type :invoke :f :read :value {}1{}}}\n",
        "[".repeat(20_000),
        "]".repeat(20_000)
    );
    std::fs::write(&path, deep).unwrap();
    let o = splitbrain(&["check", "--checker", "linearizable", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(254), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("deep.edn:1") && err.contains("nested more than"),
        "{err}"
    );
    let o = splitbrain(&[
        "check",
        "--initial",
        &"[".repeat(20_000),
        path.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(254), "{}", stderr(&o));
}

#[test]
fn a_closed_stdout_keeps_the_verdict_as_the_exit_code() {
    // `| true` closes the pipe at once: the write fails, the verdict stands.
    let script = format!(
        "{} check --model cas-register {} | true; exit ${{PIPESTATUS[0]}}",
        env!("CARGO_BIN_EXE_splitbrain"),
        example("cas-register-bad.edn").display()
    );
    let o = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!stderr(&o).contains("internal error"), "{}", stderr(&o));
}

#[test]
fn an_empty_history_is_unknown_whatever_the_checker() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.jsonl");
    std::fs::write(&path, "").unwrap();
    for checker in [
        "linearizable",
        "set",
        "counter",
        "bank",
        "list-append",
        "stats",
    ] {
        let o = splitbrain(&[
            "check",
            path.to_str().unwrap(),
            "--checker",
            checker,
            "--model",
            "register",
        ]);
        assert_eq!(o.status.code(), Some(2), "{checker}: {}", stderr(&o));
    }
}

/// Regression: `--timeout` bound only the linearizability checker, and
/// parsing was outside it; the Elle and basic checkers overran it up to 82x.
/// Now reading and checking stop at the deadline with `unknown` (exit 2).
#[test]
fn the_timeout_covers_reading_and_every_checker() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.jsonl");
    let out = splitbrain(&["gen-history", "--txns", "300000", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = file.to_str().unwrap();
    let started = std::time::Instant::now();
    let full = splitbrain(&["check", path, "--checker", "list-append"]);
    let full_time = started.elapsed();
    assert_eq!(full.status.code(), Some(0));
    for checker in ["list-append", "set", "counter", "session"] {
        let started = std::time::Instant::now();
        let out = splitbrain(&["check", path, "--checker", checker, "--timeout", "0.05"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "{checker}: {stdout}");
        assert!(
            stdout.contains("unknown") && stdout.contains("--timeout"),
            "{stdout}"
        );
        assert!(
            started.elapsed() < full_time / 2,
            "{checker} took {:?}; a whole check takes {full_time:?}",
            started.elapsed()
        );
    }
}

#[test]
fn check_shrink_prints_the_ops_that_prove_a_failure() {
    let bad = example("cas-register-bad.edn");
    let o = splitbrain(&[
        "check",
        "--model",
        "cas-register",
        "--shrink",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("shrunk to 3 of 3 ops (dropping any one of them makes the rest linearizable"),
        "{out}"
    );
    assert!(
        out.contains("op 4: process 0 read nil -> ok 0 (op 5)"),
        "{out}"
    );
    let json = splitbrain(&[
        "check",
        "--model",
        "cas-register",
        "--shrink",
        "--json",
        bad.to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["shrunk"]["kept"].as_array().map(Vec::len), Some(3), "{v}");
    assert_eq!(v["shrunk"]["minimal"], serde_json::Value::Bool(true));
    let wrong = splitbrain(&[
        "check",
        "--checker",
        "set",
        "--shrink",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(wrong.status.code(), Some(254));
    assert!(stderr(&wrong).contains("--shrink works with the linearizable checker, not set"));
}
