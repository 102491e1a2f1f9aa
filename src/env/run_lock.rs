//! What a run made on this machine, in a lock file of its own: the harness
//! process, its node processes, network namespaces, links and Docker
//! containers and networks. Written before each thing is made, so a harness
//! killed at any point leaves a record of everything it may have left;
//! removed once its teardown has removed them. `splitbrain clean`, and the
//! next run, read the records of harnesses that are gone and remove what
//! they list. Processes are named by pid and start time, so a pid the
//! kernel has since given to another process is never signalled.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A process as the kernel knows it: its pid and when it started (clock
/// ticks since boot), which together never name two processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: u32,
    pub start_ticks: u64,
}

impl ProcessId {
    /// The process `pid`, if it is running.
    pub fn of(pid: u32) -> Option<ProcessId> {
        start_ticks(pid).map(|start_ticks| ProcessId { pid, start_ticks })
    }

    pub fn is_running(&self) -> bool {
        start_ticks(self.pid) == Some(self.start_ticks)
    }
}

/// Field 22 of `/proc/PID/stat`, read after the command name (which may hold
/// spaces and parentheses).
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// One node process a run started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeProcess {
    pub node: String,
    #[serde(flatten)]
    pub id: ProcessId,
}

/// Everything one run made that outlives a killed harness.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// `local`, `netns`, `docker`.
    pub env: String,
    pub harness: Option<ProcessId>,
    pub run_dir: PathBuf,
    /// The nodes were left running on purpose (`--leave-db-running`): only
    /// `splitbrain clean` stops them, never the next run.
    #[serde(default)]
    pub left_running: bool,
    #[serde(default)]
    pub processes: Vec<NodeProcess>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Links in the harness's own namespace.
    #[serde(default)]
    pub links: Vec<String>,
    /// The Docker run label every container and network of the run carries.
    #[serde(default)]
    pub docker_run: Option<String>,
}

impl RunRecord {
    /// The harness that wrote it has exited.
    pub fn harness_gone(&self) -> bool {
        !self.harness.is_some_and(|h| h.is_running())
    }
}

/// The directory of lock files: private to this user, so no one else can
/// plant a record that makes `clean` signal their choice of process.
pub fn lock_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SPLITBRAIN_LOCK_DIR") {
        return PathBuf::from(dir);
    }
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if uid != 0 => PathBuf::from(d).join("splitbrain"),
        _ => std::env::temp_dir().join(format!("splitbrain-{uid}")),
    }
}

fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != uid {
        return Err(std::io::Error::other(format!(
            "{} must be a directory of uid {uid}, not a link",
            dir.display()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// The lock file of one run, kept up to date as the run makes things.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
    record: RunRecord,
}

impl RunLock {
    /// A lock file for a run of `env` whose nodes work in `run_dir`.
    pub fn create(env: &str, run_dir: &Path) -> std::io::Result<RunLock> {
        let dir = lock_dir();
        private_dir(&dir)?;
        let harness = ProcessId::of(std::process::id());
        static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!(
            "run-{}-{}-{n}.json",
            std::process::id(),
            harness.map_or(0, |h| h.start_ticks)
        ));
        let lock = RunLock {
            path,
            record: RunRecord {
                env: env.to_string(),
                harness,
                run_dir: run_dir.to_path_buf(),
                ..RunRecord::default()
            },
        };
        lock.save()?;
        Ok(lock)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn record(&self) -> &RunRecord {
        &self.record
    }

    /// Replace the file whole, so a reader never sees half a record.
    fn save(&self) -> std::io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        let json = serde_json::to_vec_pretty(&self.record).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, &self.path)
    }

    /// Record a change; a record that cannot be written is said once on
    /// stderr and the run goes on (its teardown still removes everything).
    fn update(&mut self, change: impl FnOnce(&mut RunRecord)) {
        change(&mut self.record);
        if let Err(e) = self.save() {
            eprintln!(
                "cannot update the run's lock file {}: {e}",
                self.path.display()
            );
        }
    }

    pub fn add_process(&mut self, node: &str, pid: u32) {
        let Some(id) = ProcessId::of(pid) else {
            return;
        };
        self.update(|r| {
            r.processes.retain(|p| p.node != node);
            r.processes.push(NodeProcess {
                node: node.to_string(),
                id,
            });
        });
    }

    pub fn add_network(&mut self, namespaces: &[String], links: &[String]) {
        self.update(|r| {
            r.namespaces.extend(namespaces.iter().cloned());
            r.links.extend(links.iter().cloned());
        });
    }

    pub fn set_docker_run(&mut self, run: &str) {
        self.update(|r| r.docker_run = Some(run.to_string()));
    }

    /// The nodes stay up after the harness: keep the record for `clean`.
    pub fn leave_running(mut self) -> PathBuf {
        self.update(|r| r.left_running = true);
        self.path
    }

    /// Everything is gone: remove the file.
    pub fn release(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The records of runs whose harness is gone, with their files; records
/// of nodes left running on purpose only when `with_left_running`.
pub fn orphaned(with_left_running: bool) -> Vec<(PathBuf, RunRecord)> {
    records()
        .into_iter()
        .filter(|(_, r)| r.harness_gone() && (with_left_running || !r.left_running))
        .collect()
}

/// Every record in the lock directory that this user wrote.
pub fn records() -> Vec<(PathBuf, RunRecord)> {
    use std::os::unix::fs::MetadataExt;
    let dir = lock_dir();
    if private_dir(&dir).is_err() {
        return Vec::new();
    }
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file() && m.uid() == uid))
        .filter_map(|p| {
            let record = serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?;
            Some((p, record))
        })
        .collect()
}

/// Kill the record's node processes that are still the ones it started;
/// returns how many it killed.
pub fn kill_processes(record: &RunRecord) -> usize {
    record
        .processes
        .iter()
        .filter(|p| p.id.is_running())
        .filter(|p| {
            // SAFETY: kill(2) of a process this user's run started, named by
            // pid and start time; no memory is touched.
            unsafe { libc::kill(p.id.pid as libc::pid_t, libc::SIGKILL) == 0 }
        })
        .count()
}

/// Namespaces left by runs whose harness is gone and whose nodes were not
/// left running on purpose: none of these may be swept as an orphan.
pub fn kept_namespaces() -> Vec<String> {
    records()
        .into_iter()
        .filter(|(_, r)| !r.harness_gone() || r.left_running)
        .flat_map(|(_, r)| r.namespaces)
        .collect()
}

/// Docker run labels of runs that are alive or were left running on purpose.
pub fn kept_docker_runs() -> Vec<String> {
    records()
        .into_iter()
        .filter(|(_, r)| !r.harness_gone() || r.left_running)
        .filter_map(|(_, r)| r.docker_run)
        .collect()
}

/// What [`clean`] removed.
#[derive(Debug, Default)]
pub struct Cleaned {
    /// Lock files of gone harnesses whose leftovers are all removed.
    pub runs: usize,
    pub processes: usize,
    pub namespaces: Vec<String>,
    pub docker_things: usize,
    /// What could not be removed or checked, one line each.
    pub problems: Vec<String>,
}

/// Remove what runs whose harness is gone left on this machine: first what
/// their lock files list, then anything else that carries a gone harness's
/// name (namespaces by tag; Docker things by label, when `sweep_docker`),
/// which catches a harness killed between making a thing and recording it.
/// Nodes left running on purpose go only when `with_left_running`.
pub async fn clean(with_left_running: bool, sweep_docker: bool) -> Cleaned {
    let mut cleaned =
        tokio::task::spawn_blocking(move || clean_processes_and_namespaces(with_left_running))
            .await
            .unwrap_or_default();
    let docker_runs: Vec<(PathBuf, String)> = orphaned(with_left_running)
        .into_iter()
        .filter_map(|(path, r)| Some((path, r.docker_run?)))
        .collect();
    if docker_runs.is_empty() && !sweep_docker {
        return cleaned;
    }
    let docker = match super::docker::connect().await {
        Ok(d) => d,
        Err(e) => {
            if !docker_runs.is_empty() {
                cleaned.problems.push(format!("Docker: {e}"));
            }
            return cleaned;
        }
    };
    for (path, run) in docker_runs {
        match super::docker::remove_run(&docker, &run).await {
            Ok(n) => {
                cleaned.docker_things += n;
                cleaned.runs += 1;
                let _ = std::fs::remove_file(path);
            }
            Err(e) => cleaned.problems.push(format!("Docker run {run}: {e}")),
        }
    }
    if sweep_docker {
        let kept = kept_docker_runs();
        match super::docker::remove_leftovers(&docker, &kept).await {
            Ok(n) => cleaned.docker_things += n,
            Err(e) => cleaned.problems.push(format!("Docker: {e}")),
        }
    }
    cleaned
}

fn clean_processes_and_namespaces(with_left_running: bool) -> Cleaned {
    let mut cleaned = Cleaned::default();
    for (path, record) in orphaned(with_left_running) {
        cleaned.processes += kill_processes(&record);
        // A namespace with a process in it outlives its deletion: wait for the kill.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while record.processes.iter().any(|p| p.id.is_running())
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let mut whole = true;
        if !record.namespaces.is_empty() || !record.links.is_empty() {
            match super::netns::remove_named(&record.namespaces, &record.links) {
                Ok(removed) => cleaned.namespaces.extend(removed),
                Err(e) => {
                    cleaned
                        .problems
                        .push(format!("namespaces of {}: {e}", path.display()));
                    whole = false;
                }
            }
        }
        // Docker things are removed by the caller, which has the runtime.
        if whole && record.docker_run.is_none() {
            cleaned.runs += 1;
            let _ = std::fs::remove_file(&path);
        }
    }
    if super::netns::available().is_ok() {
        match super::netns::remove_orphans(&kept_namespaces()) {
            Ok(removed) => cleaned.namespaces.extend(removed),
            Err(e) => cleaned.problems.push(format!("namespaces: {e}")),
        }
    }
    cleaned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_running_and_a_changed_start_time_is_not() {
        let me = ProcessId::of(std::process::id()).unwrap();
        assert!(me.is_running());
        let reused = ProcessId {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        assert!(!reused.is_running());
        assert!(ProcessId::of(u32::MAX).is_none());
    }

    #[test]
    fn a_record_round_trips_and_a_dead_harness_is_gone() {
        let record = RunRecord {
            env: "netns".into(),
            harness: Some(ProcessId {
                pid: std::process::id(),
                start_ticks: 0,
            }),
            run_dir: "/x".into(),
            left_running: false,
            processes: vec![NodeProcess {
                node: "n1".into(),
                id: ProcessId {
                    pid: 7,
                    start_ticks: 9,
                },
            }],
            namespaces: vec!["sb-abc-n1".into()],
            links: vec!["sbabcctl".into()],
            docker_run: None,
        };
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(serde_json::from_str::<RunRecord>(&json).unwrap(), record);
        assert!(record.harness_gone(), "start time 0 is not this process");
    }
}
