//! Node processes the harness starts, kills, pauses and restarts by PID,
//! each with its output in a log file of its own under the run directory.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to start one node: a program, its arguments and working directory.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub dir: PathBuf,
    pub log: PathBuf,
}

#[derive(Debug)]
struct NodeProcess {
    command: ProcessSpec,
    child: Option<Child>,
    paused: bool,
}

/// The processes of a cluster, by node name.
#[derive(Debug, Default)]
pub struct Supervisor {
    nodes: BTreeMap<String, NodeProcess>,
    /// Set in each child: killed when the thread that started it ends, so
    /// only for a harness that runs its nodes from the thread that lives
    /// as long as it (the controller's), and never for nodes left running.
    die_with_harness: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("no node named {0}")]
    UnknownNode(String),
    #[error("cannot start {node} ({program}): {source}")]
    Start {
        node: String,
        program: String,
        source: std::io::Error,
    },
    #[error("cannot signal {node} (pid {pid}): {source}")]
    Signal {
        node: String,
        pid: u32,
        source: std::io::Error,
    },
    #[error("{node} (pid {pid}) exited on its own with {status}; see {log}")]
    Exited {
        node: String,
        pid: u32,
        status: String,
        log: String,
    },
}

fn signal(pid: u32, sig: libc::c_int) -> std::io::Result<()> {
    // SAFETY: kill(2) with a pid we started; no memory is touched.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl Supervisor {
    pub fn new() -> Self {
        Supervisor::default()
    }

    /// Nodes started from now on are killed by the kernel when the harness dies.
    pub fn die_with_harness(&mut self, yes: bool) {
        self.die_with_harness = yes;
    }

    pub fn add(&mut self, node: &str, command: ProcessSpec) {
        self.nodes.insert(
            node.to_string(),
            NodeProcess {
                command,
                child: None,
                paused: false,
            },
        );
    }

    pub fn node_names(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    pub fn log_files(&self) -> Vec<PathBuf> {
        self.nodes.values().map(|n| n.command.log.clone()).collect()
    }

    fn get(&mut self, node: &str) -> Result<&mut NodeProcess, SupervisorError> {
        self.nodes
            .get_mut(node)
            .ok_or_else(|| SupervisorError::UnknownNode(node.to_string()))
    }

    /// Start a node that is not running (appending to its log).
    pub fn start(&mut self, node: &str) -> Result<u32, SupervisorError> {
        let die_with_harness = self.die_with_harness;
        let p = self.get(node)?;
        if let Some(child) = &mut p.child {
            if matches!(child.try_wait(), Ok(None)) {
                return Ok(child.id());
            }
        }
        let c = &p.command;
        let start_err = |source| SupervisorError::Start {
            node: node.to_string(),
            program: c.program.display().to_string(),
            source,
        };
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&c.log)
            .map_err(start_err)?;
        let log2 = log.try_clone().map_err(start_err)?;
        let mut command = Command::new(&c.program);
        if die_with_harness {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl only, between fork and exec; it allocates nothing.
            unsafe {
                command.pre_exec(|| {
                    // The node dies with the harness, even when the harness is SIGKILLed.
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command
            .args(&c.args)
            .current_dir(&c.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(start_err)?;
        let pid = child.id();
        p.child = Some(child);
        p.paused = false;
        Ok(pid)
    }

    pub fn pid(&self, node: &str) -> Option<u32> {
        self.nodes
            .get(node)
            .and_then(|p| p.child.as_ref())
            .map(Child::id)
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self, node: &str) -> Result<(), SupervisorError> {
        let p = self.get(node)?;
        if let Some(mut child) = p.child.take() {
            let pid = child.id();
            if matches!(child.try_wait(), Ok(None)) {
                signal(pid, libc::SIGKILL).map_err(|source| SupervisorError::Signal {
                    node: node.to_string(),
                    pid,
                    source,
                })?;
            }
            let _ = child.wait();
        }
        p.paused = false;
        Ok(())
    }

    /// SIGSTOP.
    pub fn pause(&mut self, node: &str) -> Result<(), SupervisorError> {
        let p = self.get(node)?;
        if let Some(child) = &p.child {
            let pid = child.id();
            signal(pid, libc::SIGSTOP).map_err(|source| SupervisorError::Signal {
                node: node.to_string(),
                pid,
                source,
            })?;
            p.paused = true;
        }
        Ok(())
    }

    /// SIGCONT.
    pub fn resume(&mut self, node: &str) -> Result<(), SupervisorError> {
        let p = self.get(node)?;
        if let Some(child) = &p.child {
            let pid = child.id();
            signal(pid, libc::SIGCONT).map_err(|source| SupervisorError::Signal {
                node: node.to_string(),
                pid,
                source,
            })?;
        }
        p.paused = false;
        Ok(())
    }

    /// A node that should be running but exited by itself (a crash of the database).
    pub fn check_alive(&mut self, node: &str) -> Result<(), SupervisorError> {
        let p = self.get(node)?;
        if let Some(child) = &mut p.child {
            if let Ok(Some(status)) = child.try_wait() {
                let pid = child.id();
                p.child = None;
                return Err(SupervisorError::Exited {
                    node: node.to_string(),
                    pid,
                    status: status.to_string(),
                    log: p.command.log.display().to_string(),
                });
            }
        }
        Ok(())
    }

    /// Stop every node: resume the paused, SIGTERM, then SIGKILL after `grace`.
    pub fn stop_all(&mut self, grace: Duration) {
        for p in self.nodes.values_mut() {
            if let Some(child) = &p.child {
                let _ = signal(child.id(), libc::SIGCONT);
                let _ = signal(child.id(), libc::SIGTERM);
            }
            p.paused = false;
        }
        let deadline = Instant::now() + grace;
        for p in self.nodes.values_mut() {
            if let Some(mut child) = p.child.take() {
                loop {
                    match child.try_wait() {
                        Ok(Some(_)) | Err(_) => break,
                        Ok(None) if Instant::now() >= deadline => {
                            let _ = signal(child.id(), libc::SIGKILL);
                            let _ = child.wait();
                            break;
                        }
                        Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            }
        }
    }
}

impl Supervisor {
    /// Forget every process without stopping it: the cluster is left running.
    pub fn release(&mut self) -> Vec<u32> {
        let pids = self
            .nodes
            .values_mut()
            .filter_map(|p| p.child.take().map(|c| c.id()))
            .collect();
        self.nodes.clear();
        pids
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // Never leave node processes behind, even when a run fails.
        self.stop_all(Duration::from_secs(2));
    }
}

/// A process's state letter from /proc (`T` when stopped), for checks that a pause took effect.
pub fn proc_state(pid: u32) -> Option<char> {
    let stat =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    // The state follows the command name, which is in parentheses and may hold spaces.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_pause_resume_kill_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Supervisor::new();
        let cmd = |log: &str| ProcessSpec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "echo started; exec sleep 30".into()],
            dir: dir.path().to_path_buf(),
            log: dir.path().join(log),
        };
        s.add("n1", cmd("n1.log"));
        s.add("n2", cmd("n2.log"));
        let pid = s.start("n1").unwrap();
        s.start("n2").unwrap();
        s.pause("n1").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(proc_state(pid), Some('T'));
        s.resume("n1").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_ne!(proc_state(pid), Some('T'));
        s.kill("n1").unwrap();
        assert_eq!(proc_state(pid), None, "killed and reaped");
        let pid2 = s.start("n1").unwrap();
        assert_ne!(pid, pid2);
        s.check_alive("n1").unwrap();
        // Let the restarted shell write its line before it is stopped.
        let log_path = dir.path().join("n1.log");
        let t0 = Instant::now();
        while std::fs::read_to_string(&log_path)
            .unwrap()
            .matches("started")
            .count()
            < 2
            && t0.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let n2 = s.pid("n2").unwrap();
        drop(s);
        assert_eq!(proc_state(pid2), None);
        assert_eq!(proc_state(n2), None);
        let log = std::fs::read_to_string(dir.path().join("n1.log")).unwrap();
        assert_eq!(
            log.matches("started").count(),
            2,
            "restarts append to the log"
        );
        assert!(matches!(
            Supervisor::new().start("nope"),
            Err(SupervisorError::UnknownNode(_))
        ));
    }
}
