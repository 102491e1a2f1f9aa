//! Shared by the tests that drive `splitbrain test` through the real binary.
// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct TestRun {
    pub exit_code: i32,
    pub stdout: String,
    /// The run's directory, named on the first line of stdout.
    pub dir: PathBuf,
    pub results: serde_json::Value,
}

/// `splitbrain test --store-dir STORE ARGS...`; panics with the output when
/// no run directory was stored.
pub fn splitbrain_test(store: &Path, args: &[&str]) -> TestRun {
    let out = Command::new(env!("CARGO_BIN_EXE_splitbrain"))
        .arg("test")
        .arg("--store-dir")
        .arg(store)
        .args(args)
        .output()
        .expect("running splitbrain test");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The first line of stdout is "<run dir>: <verdict> (<n> ops)".
    let dir = stdout
        .lines()
        .find_map(|l| l.split_once(": ").map(|(d, _)| PathBuf::from(d)))
        .filter(|d| d.join("results.json").exists())
        .unwrap_or_else(|| {
            panic!("no run directory in the output\nstdout:\n{stdout}\nstderr:\n{stderr}")
        });
    let results = serde_json::from_str(
        &std::fs::read_to_string(dir.join("results.json")).expect("results.json"),
    )
    .expect("results.json parses");
    TestRun {
        exit_code: out.status.code().unwrap_or(-1),
        stdout,
        dir,
        results,
    }
}

/// One checker's entry in a run's results.
pub fn checker<'a>(results: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    results["checkers"]
        .as_array()
        .expect("a checkers list")
        .iter()
        .find(|c| c["checker"] == name)
        .unwrap_or_else(|| panic!("no {name} checker in {results:#}"))
}

/// The reference store in `env` (local or netns), its nodes run by the
/// splitbrain binary cargo built.
pub fn refstore_cluster(
    base: splitbrain_store::config::ClusterConfig,
    env: &str,
    nodes: usize,
) -> Box<dyn splitbrain::controller::Cluster> {
    splitbrain::deploy::cluster(
        &splitbrain::dbs::DbOptions {
            db: "refstore".into(),
            env: env.into(),
            nodes,
            workload: splitbrain_workloads::WorkloadKind::Register,
            isolation: None,
            op_timeout: std::time::Duration::from_secs(1),
            refstore: Some(base),
        },
        &splitbrain::env::EnvOptions {
            image: None,
            harness_program: Some(env!("CARGO_BIN_EXE_splitbrain").into()),
            leave_running: false,
        },
    )
    .expect("the reference store runs here")
}

/// Why this machine cannot run the netns environment (not root, no ping), if it cannot.
pub fn netns_unavailable() -> Option<String> {
    if let Err(e) = splitbrain::env::netns::available() {
        return Some(e.to_string());
    }
    if Command::new("ping").arg("-V").output().is_err() {
        return Some("no ping (apt-get install iputils-ping)".into());
    }
    None
}
