//! The store of runs: `STORE/<test-name>/<timestamp>/` holding `test.json`
//! (every option, the seed, versions), `history.jsonl`, `results.json`,
//! node logs and the report; `STORE/latest` and `STORE/<test-name>/latest`
//! point at the newest run.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use splitbrain_history::{CheckReport, Verdict};

pub const TEST_FILE: &str = "test.json";
pub const HISTORY_FILE: &str = "history.jsonl";
pub const RESULTS_FILE: &str = "results.json";

/// `20261122T034501.123Z`: sortable, and safe in a path on every system.
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// A test name is one path component of plain characters.
pub fn check_test_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name != "latest"
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "test name '{name}' must be letters, digits, '-', '_' or '.', and not 'latest'"
        ))
    }
}

/// Create a fresh run directory and point the `latest` links at it.
pub fn create_run_dir(store: &Path, test_name: &str, started: SystemTime) -> io::Result<PathBuf> {
    check_test_name(test_name).map_err(io::Error::other)?;
    let test_dir = store.join(test_name);
    std::fs::create_dir_all(&test_dir)?;
    let base = timestamp(started);
    // Two runs in the same millisecond get distinct directories.
    let mut dir = test_dir.join(&base);
    let mut n = 1;
    while dir.exists() {
        dir = test_dir.join(format!("{base}-{n}"));
        n += 1;
    }
    std::fs::create_dir(&dir)?;
    let leaf = dir.file_name().map(PathBuf::from).unwrap_or_default();
    relink(&test_dir.join("latest"), &leaf)?;
    relink(&store.join("latest"), &Path::new(test_name).join(&leaf))?;
    Ok(dir)
}

fn relink(link: &Path, target: &Path) -> io::Result<()> {
    let tmp = link.with_extension("tmp-link");
    let _ = std::fs::remove_file(&tmp);
    #[cfg(unix)]
    std::os::unix::fs::symlink(target, &tmp)?;
    #[cfg(not(unix))]
    std::fs::write(&tmp, target.to_string_lossy().as_bytes())?;
    // Rename over the old link so readers never see it missing.
    std::fs::rename(&tmp, link)
}

/// What `results.json` holds: the overall verdict and each checker's report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResults {
    pub verdict: Verdict,
    pub checkers: Vec<CheckReport>,
    /// Set when the run itself went wrong (a fault that did not take effect, an interrupted run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// From the first op to the last, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// Each fault that took effect: when, and what it did.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<AppliedFault>,
}

/// A fault the nemesis applied, as its completion records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppliedFault {
    pub package: String,
    pub at_s: f64,
    /// In words: the package's own summary where it gives one (a
    /// rebalance names what moved where), else what the completion holds.
    pub what: String,
}

impl RunResults {
    pub fn anomaly_types(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .checkers
            .iter()
            .flat_map(|c| c.anomaly_types.iter().cloned())
            .collect();
        all.sort();
        all.dedup();
        all
    }
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(value).map_err(io::Error::other)?,
    )?;
    std::fs::rename(&tmp, path)
}

pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<T> {
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| io::Error::other(format!("{}: {e}", path.display())))
}

/// One stored run, for indexes.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub test_name: String,
    pub run: String,
    pub dir: PathBuf,
    pub verdict: Option<Verdict>,
    pub anomaly_types: Vec<String>,
    pub duration_s: Option<f64>,
}

/// Every run under `store`, newest first.
pub fn list_runs(store: &Path) -> io::Result<Vec<RunSummary>> {
    let mut runs = Vec::new();
    for test in std::fs::read_dir(store)? {
        let test = test?;
        if !test.file_type()?.is_dir() {
            continue;
        }
        let test_name = test.file_name().to_string_lossy().into_owned();
        for run in std::fs::read_dir(test.path())? {
            let run = run?;
            // `latest` is a link; real runs are directories holding a test.json.
            if !run.file_type()?.is_dir() || !run.path().join(TEST_FILE).exists() {
                continue;
            }
            let results: Option<RunResults> = read_json(&run.path().join(RESULTS_FILE)).ok();
            runs.push(RunSummary {
                test_name: test_name.clone(),
                run: run.file_name().to_string_lossy().into_owned(),
                dir: run.path(),
                verdict: results.as_ref().map(|r| r.verdict),
                duration_s: results.as_ref().and_then(|r| r.duration_s),
                anomaly_types: results.map(|r| r.anomaly_types()).unwrap_or_default(),
            });
        }
    }
    runs.sort_by(|a, b| b.run.cmp(&a.run).then(a.test_name.cmp(&b.test_name)));
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_civil_utc() {
        assert_eq!(timestamp(UNIX_EPOCH), "19700101T000000.000Z");
        // 2026-11-22T03:45:01.123Z
        let t = UNIX_EPOCH + Duration::from_millis(1_795_319_101_123);
        assert_eq!(timestamp(t), "20261122T034501.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(timestamp(leap), "20000229T000000.000Z");
    }

    #[test]
    fn run_dirs_and_latest_links() {
        let store = tempfile::tempdir().unwrap();
        let t = UNIX_EPOCH + Duration::from_secs(1_795_319_101);
        let a = create_run_dir(store.path(), "register", t).unwrap();
        let b = create_run_dir(store.path(), "register", t).unwrap();
        assert_ne!(a, b);
        std::fs::write(a.join(TEST_FILE), "{}").unwrap();
        std::fs::write(b.join(TEST_FILE), "{}").unwrap();
        let latest = std::fs::canonicalize(store.path().join("latest")).unwrap();
        assert_eq!(latest, std::fs::canonicalize(&b).unwrap());
        let results = RunResults {
            verdict: Verdict::Invalid,
            checkers: Vec::new(),
            problem: None,
            duration_s: Some(1.5),
            faults: Vec::new(),
        };
        write_json(&b.join(RESULTS_FILE), &results).unwrap();
        let runs = list_runs(store.path()).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].dir, b);
        assert_eq!(runs[0].verdict, Some(Verdict::Invalid));
        assert_eq!(runs[0].duration_s, Some(1.5));
        assert_eq!(runs[1].verdict, None);
        assert!(create_run_dir(store.path(), "../escape", t).is_err());
        assert!(create_run_dir(store.path(), "latest", t).is_err());
    }
}
