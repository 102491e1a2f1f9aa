//! Third-party databases in Docker, end to end through `splitbrain test`:
//! etcd (register, with partitions and kills, and through membership
//! changes by its cluster API) is valid; PostgreSQL's
//! repeatable read shows write skew (G2-item) while serializable is valid;
//! Redis with Sentinel runs the set workload through partitions and pauses of
//! its nodes. Every run leaves no container or network behind. Skipped with a
//! clear message where there is no Docker engine. Images are built on first
//! use (debootstrap) and cached by recipe.

use std::path::Path;
use std::process::Command;

fn docker_available() -> Option<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(splitbrain::env::docker::connect())
        .err()
        .map(|e| e.to_string())
}

/// Containers and networks the harness labelled, of any run.
fn leftovers() -> usize {
    let count = |args: &[&str]| {
        Command::new("docker")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
            .unwrap_or(0)
    };
    count(&["ps", "-aq", "--filter", "label=splitbrain.run"])
        + count(&["network", "ls", "-q", "--filter", "label=splitbrain.run"])
}

mod common;
use common::{checker, splitbrain_test, TestRun};

fn run(store: &Path, args: &[&str]) -> TestRun {
    let mut all = vec!["--env", "docker"];
    all.extend_from_slice(args);
    splitbrain_test(store, &all)
}

fn nemesis_ops(dir: &Path, f: &str) -> usize {
    std::fs::read_to_string(dir.join("history.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| {
            l.contains("\"process\":\"nemesis\"")
                && l.contains("\"type\":\"info\"")
                && l.contains(&format!("\"f\":\"{f}\""))
        })
        .count()
}

/// One database at a time: two cores, and the leftover checks see only this test's runs.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

macro_rules! need_docker {
    ($name:literal) => {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(why) = docker_available() {
            eprintln!("SKIPPED: {}: {why}", $name);
            return;
        }
    };
}

#[test]
fn etcd_register_with_partitions_and_kills_is_valid() {
    need_docker!("etcd_register_with_partitions_and_kills_is_valid");
    let store = tempfile::tempdir().unwrap();
    let r = run(
        store.path(),
        &[
            "--db",
            "etcd",
            "--nodes",
            "3",
            "--workload",
            "register",
            "--nemesis",
            "partition,kill",
            "--nemesis-interval",
            "4",
            "--time-limit",
            "15",
            "--rate",
            "200",
            "--seed",
            "1",
        ],
    );
    assert_eq!(r.results["verdict"], "valid", "{:#}", r.results);
    assert_eq!(r.exit_code, 0);
    assert_eq!(checker(&r.results, "linearizable")["verdict"], "valid");
    assert!(
        nemesis_ops(&r.dir, "start-partition") + nemesis_ops(&r.dir, "kill") > 0,
        "no fault was applied"
    );
    assert_eq!(leftovers(), 0, "containers or networks left behind");
}

/// Members removed through etcd's cluster API and added back as learners
/// (restarted from an empty data directory, promoted once in sync) while
/// the register workload runs.
#[test]
fn etcd_register_through_membership_changes_is_valid() {
    need_docker!("etcd_register_through_membership_changes_is_valid");
    let store = tempfile::tempdir().unwrap();
    let r = run(
        store.path(),
        &[
            "--db",
            "etcd",
            "--nodes",
            "3",
            "--workload",
            "register",
            "--nemesis",
            "membership",
            "--nemesis-interval",
            "5",
            "--time-limit",
            "25",
            "--rate",
            "200",
            "--seed",
            "1",
        ],
    );
    assert_eq!(r.results["verdict"], "valid", "{:#}", r.results);
    assert_eq!(checker(&r.results, "linearizable")["verdict"], "valid");
    let history = std::fs::read_to_string(r.dir.join("history.jsonl")).unwrap();
    let changes: Vec<&str> = history
        .lines()
        .filter(|l| l.contains("\"process\":\"nemesis\"") && l.contains("\"type\":\"info\""))
        .filter(|l| l.contains("\"f\":\"remove-member\"") || l.contains("\"f\":\"add-members\""))
        .collect();
    assert!(
        changes.iter().any(|l| l.contains("\"before\"")
            && l.contains("\"after\"")
            && l.contains("remove-member")),
        "no member was removed: {changes:?}"
    );
    let last = changes.last().expect("membership ops");
    assert!(
        last.contains(r#""after":{"members":["n1","n2","n3"],"joining":[]}"#),
        "the final phase did not restore every member: {last}"
    );
    assert_eq!(leftovers(), 0, "containers or networks left behind");
}

#[test]
fn etcd_refuses_clock_faults_up_front() {
    need_docker!("etcd_refuses_clock_faults_up_front");
    let store = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_splitbrain"))
        .args([
            "test",
            "--env",
            "docker",
            "--db",
            "etcd",
            "--nemesis",
            "clock",
        ])
        .args(["--time-limit", "5", "--store-dir"])
        .arg(store.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(254), "{stderr}");
    assert!(stderr.contains("Go"), "{stderr}");
    assert_eq!(leftovers(), 0);
}

#[test]
fn postgres_repeatable_read_shows_write_skew_and_serializable_does_not() {
    need_docker!("postgres_repeatable_read_shows_write_skew_and_serializable_does_not");
    let store = tempfile::tempdir().unwrap();
    let common = [
        "--db",
        "postgres",
        "--nodes",
        "1",
        "--workload",
        "list-append",
        "--time-limit",
        "10",
        "--rate",
        "0",
        "--seed",
        "1",
    ];
    let mut rr = common.to_vec();
    rr.extend(["--isolation", "repeatable-read"]);
    let r = run(store.path(), &rr);
    let elle = checker(&r.results, "list-append");
    assert_eq!(elle["verdict"], "invalid", "{elle:#}");
    let anomalies: Vec<&str> = elle["anomaly_types"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(anomalies.contains(&"G2-item"), "{anomalies:?}");
    assert_eq!(r.exit_code, 1);

    let mut ser = common.to_vec();
    ser.extend(["--isolation", "serializable"]);
    let s = run(store.path(), &ser);
    assert_eq!(s.results["verdict"], "valid", "{:#}", s.results);
    // Serialization failures are recorded as fail, not hidden.
    let history = std::fs::read_to_string(s.dir.join("history.jsonl")).unwrap();
    assert!(history.contains("\"type\":\"fail\""));
    assert_eq!(leftovers(), 0);
}

#[test]
fn redis_with_sentinel_runs_the_set_workload_through_faults() {
    need_docker!("redis_with_sentinel_runs_the_set_workload_through_faults");
    let store = tempfile::tempdir().unwrap();
    let r = run(
        store.path(),
        &[
            "--db",
            "redis",
            "--nodes",
            "3",
            "--workload",
            "set",
            "--nemesis",
            "partition,pause",
            "--nemesis-targets",
            "primaries",
            "--partitions",
            "primaries",
            "--nemesis-interval",
            "5",
            "--time-limit",
            "15",
            "--rate",
            "300",
            "--seed",
            "1",
        ],
    );
    // Checked (valid, or invalid when a failover lost acknowledged adds), not unknown.
    assert!(r.exit_code == 0 || r.exit_code == 1, "{:#}", r.results);
    assert!(r.results["problem"].is_null(), "{}", r.results["problem"]);
    let set = checker(&r.results, "set");
    assert!(
        set["result"]["attempt_count"].as_u64().unwrap_or(0) > 0,
        "{set:#}"
    );
    assert!(
        nemesis_ops(&r.dir, "start-partition") + nemesis_ops(&r.dir, "pause") > 0,
        "no fault was applied"
    );
    assert_eq!(leftovers(), 0);
}

#[test]
fn the_reference_store_runs_in_docker_through_faults() {
    need_docker!("the_reference_store_runs_in_docker_through_faults");
    let store = tempfile::tempdir().unwrap();
    let r = run(
        store.path(),
        &[
            "--db",
            "refstore",
            "--nodes",
            "3",
            "--workload",
            "register",
            "--nemesis",
            "partition,kill",
            "--nemesis-interval",
            "2",
            "--time-limit",
            "8",
            "--rate",
            "200",
            "--seed",
            "2",
        ],
    );
    assert_eq!(r.results["verdict"], "valid", "{:#}", r.results);
    assert!(
        nemesis_ops(&r.dir, "start-partition") + nemesis_ops(&r.dir, "kill") > 0,
        "no fault was applied"
    );
    assert_eq!(leftovers(), 0);
    // The nodes ran an image that holds this binary (one image: older
    // builds' images are removed when a new one is made).
    let images = Command::new("docker")
        .args([
            "images",
            "--filter",
            "reference=splitbrain-base-harness",
            "--format",
            "{{.Repository}}:{{.Tag}}",
        ])
        .output()
        .unwrap();
    let images: Vec<String> = String::from_utf8_lossy(&images.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(images.len(), 1, "{images:?}");
    let help = Command::new("docker")
        .args(["run", "--rm", "--network", "none", &images[0]])
        .args(["/opt/splitbrain/splitbrain", "store-node", "--help"])
        .output()
        .unwrap();
    assert!(
        help.status.success() && String::from_utf8_lossy(&help.stdout).contains("--config"),
        "{}",
        String::from_utf8_lossy(&help.stderr)
    );
}
