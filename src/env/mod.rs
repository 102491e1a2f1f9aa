//! Environments: where a database's nodes run. Each one places nodes (gives
//! them addresses), starts a node's command and starts it again after a
//! kill, runs commands on a node, copies files in and out, and carries out
//! the faults it can as a [`Target`] (signals, links, clocks), proving each
//! took effect. A database knows nothing of the environment it runs in; a
//! [`crate::deploy::Deployment`] joins the two.

pub mod docker;
pub mod local;
pub mod netns;
pub mod run_lock;
pub mod supervisor;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use splitbrain_nemesis::shape::Node;
use splitbrain_nemesis::Target;

/// Why no environment changes a cluster's membership: only the database can.
pub const MEMBERSHIP_IS_THE_DATABASES: &str =
    "membership changes go through the database's own admin interface, not the environment";
pub const REBALANCING_IS_THE_DATABASES: &str =
    "moving partitions goes through the database's own admin interface, not the environment";

/// Where every node listens: its address and, in the order the database
/// asked for them, its ports (on loopback each node has ports of its own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Addresses {
    pub ips: BTreeMap<Node, Ipv4Addr>,
    pub ports: BTreeMap<Node, Vec<u16>>,
}

impl Addresses {
    /// `ip:port` of the node's `i`-th port.
    pub fn socket(&self, node: &str, i: usize) -> String {
        let ip = self.ips.get(node).copied().unwrap_or(Ipv4Addr::UNSPECIFIED);
        let port = self
            .ports
            .get(node)
            .and_then(|p| p.get(i))
            .copied()
            .unwrap_or(0);
        format!("{ip}:{port}")
    }

    pub fn nodes(&self) -> Vec<Node> {
        self.ips.keys().cloned().collect()
    }
}

/// What a node runs: a program and its arguments, started in the node's
/// working directory after `files` (name, contents) are written there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeCommand {
    pub program: String,
    pub args: Vec<String>,
    pub files: Vec<(String, Vec<u8>)>,
}

impl NodeCommand {
    /// A shell script, run at every start, restarts after a kill included.
    pub fn shell(script: String) -> NodeCommand {
        NodeCommand {
            program: "sh".into(),
            args: vec!["-c".into(), script],
            files: Vec::new(),
        }
    }
}

/// What a database's nodes need of an environment that runs images (Docker):
/// the image's name and the Debian packages it adds to the base image's,
/// whether this splitbrain binary must be added to it (at
/// [`docker::HARNESS_PROGRAM`]), and the environment of every node's
/// process (libfaketime, for databases it fools).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeImage {
    pub recipe: &'static str,
    pub packages: &'static [&'static str],
    pub with_harness: bool,
    pub process_env: &'static [&'static str],
}

#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error(transparent)]
    Docker(#[from] docker::DockerError),
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    #[error(transparent)]
    Supervisor(#[from] supervisor::SupervisorError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// One environment: the hosts a database's nodes run on.
#[async_trait]
pub trait Environment: Target + Send + Sync {
    /// How its nodes run, for the test record (`local processes`).
    fn describe(&self) -> String;
    /// This splitbrain binary as a node runs it (the reference store's nodes do).
    fn harness_program(&self) -> String;
    /// Give each node an address and its ports; `ports` are what the
    /// database listens on where each node has an address of its own.
    async fn place(
        &mut self,
        nodes: &[Node],
        ports: &[u16],
        image: &NodeImage,
        run_dir: &Path,
    ) -> Result<Addresses, EnvError>;
    /// Start `node` running `command`; a restart after a kill runs it again.
    async fn start(&mut self, node: &Node, command: NodeCommand) -> Result<(), EnvError>;
    /// `Err` with the reason when a started node has died (while it restarts, say).
    async fn check_alive(&mut self, _node: &Node) -> Result<(), EnvError> {
        Ok(())
    }
    /// Run a command on a node: its exit code and output.
    async fn exec(&self, node: &Node, argv: &[&str]) -> Result<(i64, String), EnvError>;
    /// Write a file on a node (an absolute path, or one in its working directory).
    async fn put_file(&self, node: &Node, path: &str, contents: &[u8]) -> Result<(), EnvError>;
    async fn get_file(&self, node: &Node, path: &str) -> Result<Vec<u8>, EnvError>;
    /// Stop every node and remove what `place` made, unless asked to leave
    /// them running; the node logs either way.
    async fn teardown(&mut self, leave_running: bool) -> Result<Vec<PathBuf>, EnvError>;
}

/// Options every environment may take.
#[derive(Debug, Clone, Default)]
pub struct EnvOptions {
    /// Docker: run this image instead of building one.
    pub image: Option<String>,
    /// Local processes: the splitbrain binary nodes run (tests use the one cargo built).
    pub harness_program: Option<PathBuf>,
    /// The nodes outlive the harness (`--leave-db-running`); else local
    /// processes die with it, even when it is killed.
    pub leave_running: bool,
}

/// One environment of the catalog.
pub struct EnvEntry {
    pub name: &'static str,
    pub about: &'static str,
    /// The environment, or why this machine cannot give it.
    pub make: fn(&EnvOptions) -> Result<Box<dyn Environment>, String>,
}

pub static ENVIRONMENTS: &[EnvEntry] = &[
    EnvEntry {
        name: "local",
        about: "processes on this machine's loopback interface",
        make: |o| Ok(Box::new(local::LocalEnv::new(o)?)),
    },
    EnvEntry {
        name: "netns",
        about: "processes in network namespaces of their own (root)",
        make: |o| Ok(Box::new(netns::NetnsEnv::new(o)?)),
    },
    EnvEntry {
        name: "docker",
        about: "containers on a Docker network of their own",
        make: |o| Ok(Box::new(docker::DockerEnv::new(o))),
    },
];

/// The catalog's entry for `--env NAME`, or why there is none.
pub fn find(name: &str) -> Result<&'static EnvEntry, String> {
    ENVIRONMENTS.iter().find(|e| e.name == name).ok_or_else(|| {
        let names: Vec<&str> = ENVIRONMENTS.iter().map(|e| e.name).collect();
        format!("--env {name}: expected {}", names.join(", "))
    })
}
