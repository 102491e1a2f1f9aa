//! The local environment: each node a child process of the harness on this
//! machine, listening on loopback ports of its own, with its output in
//! `RUN_DIR/NODE.log`. Processes are killed, paused and resumed by signal.
//! Nodes share the loopback interface and the machine's clock, so links and
//! clocks are faults only a database that does them itself can take.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use splitbrain_nemesis::shape::Node;
use splitbrain_nemesis::{Ability, Target};

use super::run_lock::{self, RunLock};
use super::supervisor::{proc_state, ProcessSpec, Supervisor};
use super::{
    Addresses, EnvError, EnvOptions, Environment, NodeCommand, NodeImage,
    MEMBERSHIP_IS_THE_DATABASES,
};

/// Free loopback ports below the kernel's ephemeral range. A port from that
/// range can be taken, while its node is killed, as the local end of some
/// outgoing connection (a peer link redialling, a client), and then the node
/// cannot listen on it again when it restarts.
pub fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u32, ephemeral_low.clamp(10_001, 65_536));
    let span = high - low;
    // Start somewhere different per process, so concurrent runs rarely probe the same ports.
    let mut next = low
        + (std::process::id().wrapping_mul(2_654_435_761).wrapping_add(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos()),
        ) % span);
    let mut ports = Vec::with_capacity(n);
    // Hold each port while choosing the rest, so none is picked twice.
    let mut held = Vec::with_capacity(n);
    for _ in 0..span {
        if ports.len() == n {
            break;
        }
        if let Ok(l) = TcpListener::bind(("127.0.0.1", next as u16)) {
            ports.push(next as u16);
            held.push(l);
        }
        next = if next + 1 >= high { low } else { next + 1 };
    }
    if ports.len() < n {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!("only {} free loopback ports below {high}", ports.len()),
        ));
    }
    Ok(ports)
}

/// Node processes on this machine, shared by the local and netns
/// environments: `prefix` runs before each node's program (`ip netns exec NS`).
pub struct Processes {
    pub program: PathBuf,
    run_dir: PathBuf,
    supervisor: Supervisor,
    env: &'static str,
    lock: Option<RunLock>,
}

impl Processes {
    pub fn new(o: &EnvOptions, env: &'static str) -> Result<Processes, String> {
        let program = match &o.harness_program {
            Some(p) => p.clone(),
            None => std::env::current_exe()
                .map_err(|e| format!("locating the splitbrain binary: {e}"))?,
        };
        let mut supervisor = Supervisor::new();
        supervisor.die_with_harness(!o.leave_running);
        Ok(Processes {
            program,
            run_dir: PathBuf::new(),
            supervisor,
            env,
            lock: None,
        })
    }

    /// The nodes' working directory.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Nodes run with the run directory as their working directory; the
    /// run's lock file records them, after what earlier runs whose harness
    /// was killed left behind is removed.
    pub async fn place(&mut self, run_dir: &Path) -> Result<(), EnvError> {
        self.run_dir = run_dir.canonicalize()?;
        let cleaned = run_lock::clean(false, false).await;
        if cleaned.processes > 0 || !cleaned.namespaces.is_empty() {
            eprintln!(
                "removed what killed runs left: {} node process(es), {} namespace(s)",
                cleaned.processes,
                cleaned.namespaces.len()
            );
        }
        self.lock = Some(
            RunLock::create(self.env, &self.run_dir)
                .map_err(|e| EnvError::Other(format!("writing the run's lock file: {e}")))?,
        );
        Ok(())
    }

    /// Record namespaces and links before making them.
    pub fn record_network(&mut self, namespaces: &[String], links: &[String]) {
        if let Some(lock) = &mut self.lock {
            lock.add_network(namespaces, links);
        }
    }

    /// The run made nothing more that outlives it: drop its lock file, or,
    /// for nodes left running, keep it for `splitbrain clean` and say so.
    pub fn finish(&mut self, leave_running: bool) {
        let Some(lock) = self.lock.take() else {
            return;
        };
        if leave_running {
            let path = lock.leave_running();
            eprintln!(
                "`splitbrain clean` stops them and removes what the run made (recorded in {})",
                path.display()
            );
        } else {
            lock.release();
        }
    }

    fn record_start(&mut self, node: &Node, pid: u32) {
        if let Some(lock) = &mut self.lock {
            lock.add_process(node, pid);
        }
    }

    pub fn start(
        &mut self,
        node: &Node,
        command: NodeCommand,
        prefix: &[String],
    ) -> Result<(), EnvError> {
        // Nodes share the directory and may be reading a file of the same
        // name already: replace it whole, never truncate it under a reader.
        for (name, contents) in &command.files {
            let path = self.run_dir.join(name);
            if std::fs::read(&path).is_ok_and(|old| old == *contents) {
                continue;
            }
            let tmp = self.run_dir.join(format!(".{name}.{node}.tmp"));
            std::fs::write(&tmp, contents)?;
            std::fs::rename(&tmp, &path)?;
        }
        let (program, args) = match prefix.split_first() {
            None => (PathBuf::from(command.program), command.args),
            Some((first, rest)) => {
                let mut args = rest.to_vec();
                args.push(command.program);
                args.extend(command.args);
                (PathBuf::from(first), args)
            }
        };
        self.supervisor.add(
            node,
            ProcessSpec {
                program,
                args,
                dir: self.run_dir.clone(),
                log: self.run_dir.join(format!("{node}.log")),
            },
        );
        let pid = self.supervisor.start(node)?;
        self.record_start(node, pid);
        Ok(())
    }

    pub fn check_alive(&mut self, node: &Node) -> Result<(), EnvError> {
        Ok(self.supervisor.check_alive(node)?)
    }

    pub fn kill(&mut self, nodes: &[Node]) -> Result<(), String> {
        nodes
            .iter()
            .try_for_each(|n| self.supervisor.kill(n).map_err(|e| e.to_string()))
    }

    pub fn restart(&mut self, nodes: &[Node]) -> Result<(), String> {
        nodes.iter().try_for_each(|n| {
            let pid = self.supervisor.start(n).map_err(|e| e.to_string())?;
            self.record_start(n, pid);
            Ok(())
        })
    }

    /// SIGSTOP, proven by the kernel reporting the process stopped; waited
    /// for on the runtime, not by blocking it, so clients go on meanwhile.
    pub async fn pause(&mut self, nodes: &[Node]) -> Result<(), String> {
        for n in nodes {
            self.supervisor.pause(n).map_err(|e| e.to_string())?;
            let pid = self
                .supervisor
                .pid(n)
                .ok_or(format!("{n} is not running"))?;
            let deadline = Instant::now() + Duration::from_secs(2);
            while proc_state(pid) != Some('T') {
                if Instant::now() > deadline {
                    return Err(format!("{n} (pid {pid}) did not stop"));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        Ok(())
    }

    pub fn resume(&mut self, nodes: &[Node]) -> Result<(), String> {
        nodes
            .iter()
            .try_for_each(|n| self.supervisor.resume(n).map_err(|e| e.to_string()))
    }

    /// Stop the processes, or leave them running and say how to stop them.
    pub fn teardown(&mut self, leave_running: bool) -> Vec<PathBuf> {
        let logs = self.supervisor.log_files();
        if leave_running {
            let pids = self.supervisor.release();
            if !pids.is_empty() {
                let list: Vec<String> = pids.iter().map(u32::to_string).collect();
                eprintln!(
                    "left the nodes running: stop them with `kill {}`",
                    list.join(" ")
                );
            }
        } else {
            self.supervisor.stop_all(Duration::from_secs(3));
        }
        logs
    }
}

pub struct LocalEnv {
    processes: Processes,
    nodes: Vec<Node>,
}

impl LocalEnv {
    pub fn new(o: &EnvOptions) -> Result<LocalEnv, String> {
        Ok(LocalEnv {
            processes: Processes::new(o, "local")?,
            nodes: Vec::new(),
        })
    }
}

#[async_trait]
impl Target for LocalEnv {
    fn nodes(&self) -> Vec<Node> {
        self.nodes.clone()
    }
    fn lacks(&self, ability: Ability) -> Option<String> {
        match ability {
            Ability::Partition => Some("local nodes share the loopback interface; use --env netns or docker to cut links".into()),
            Ability::Loss => Some("local nodes share the loopback interface; use --env netns or docker for packet loss".into()),
            Ability::Clock => Some("local nodes share this machine's clock".into()),
            Ability::Primaries => Some("processes alone do not know who leads; the database does".into()),
            Ability::Membership => Some(MEMBERSHIP_IS_THE_DATABASES.into()),
            Ability::Rebalance => Some(super::REBALANCING_IS_THE_DATABASES.into()),
            Ability::Kill | Ability::Pause => None,
        }
    }
    async fn kill(&mut self, nodes: &[Node]) -> Result<(), String> {
        self.processes.kill(nodes)
    }
    async fn restart(&mut self, nodes: &[Node]) -> Result<(), String> {
        self.processes.restart(nodes)
    }
    async fn pause(&mut self, nodes: &[Node]) -> Result<(), String> {
        self.processes.pause(nodes).await
    }
    async fn resume(&mut self, nodes: &[Node]) -> Result<(), String> {
        self.processes.resume(nodes)
    }
}

#[async_trait]
impl Environment for LocalEnv {
    fn describe(&self) -> String {
        "local processes".into()
    }
    fn harness_program(&self) -> String {
        self.processes.program.display().to_string()
    }
    async fn place(
        &mut self,
        nodes: &[Node],
        ports: &[u16],
        _image: &NodeImage,
        run_dir: &Path,
    ) -> Result<Addresses, EnvError> {
        self.processes.place(run_dir).await?;
        self.nodes = nodes.to_vec();
        let mut free = free_ports(nodes.len() * ports.len())?.into_iter();
        let mut addrs = Addresses::default();
        for n in nodes {
            addrs.ips.insert(n.clone(), Ipv4Addr::LOCALHOST);
            addrs
                .ports
                .insert(n.clone(), free.by_ref().take(ports.len()).collect());
        }
        Ok(addrs)
    }
    async fn start(&mut self, node: &Node, command: NodeCommand) -> Result<(), EnvError> {
        self.processes.start(node, command, &[])
    }
    async fn check_alive(&mut self, node: &Node) -> Result<(), EnvError> {
        self.processes.check_alive(node)
    }
    async fn exec(&self, _node: &Node, argv: &[&str]) -> Result<(i64, String), EnvError> {
        exec_here(&[], argv).await
    }
    async fn put_file(&self, _node: &Node, path: &str, contents: &[u8]) -> Result<(), EnvError> {
        Ok(tokio::fs::write(self.processes.run_dir.join(path), contents).await?)
    }
    async fn get_file(&self, _node: &Node, path: &str) -> Result<Vec<u8>, EnvError> {
        Ok(tokio::fs::read(self.processes.run_dir.join(path)).await?)
    }
    async fn teardown(&mut self, leave_running: bool) -> Result<Vec<PathBuf>, EnvError> {
        let logs = self.processes.teardown(leave_running);
        self.processes.finish(leave_running);
        Ok(logs)
    }
}

/// Run `prefix` + `argv` on this machine: exit code and combined output.
pub async fn exec_here(prefix: &[String], argv: &[&str]) -> Result<(i64, String), EnvError> {
    let mut full: Vec<String> = prefix.to_vec();
    full.extend(argv.iter().map(|s| s.to_string()));
    let (program, args) = full
        .split_first()
        .ok_or_else(|| EnvError::Other("an empty command".into()))?;
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await?;
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((i64::from(out.status.code().unwrap_or(-1)), text))
}
