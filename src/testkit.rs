//! Test doubles for the seams, shared by the tests: an environment that
//! records what it was asked and does nothing ([`FakeEnv`]), and a database
//! that is one in-memory register per key ([`MemDb`]), linearizable by
//! construction. `Deployment::new(MemDb, NodeImage::default(), FakeEnv, ..)`
//! is a whole cluster.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use splitbrain_generators::Invocation;
use splitbrain_history::Value;
use splitbrain_nemesis::shape::{Grudge, Node};
use splitbrain_nemesis::{Ability, Target};
use splitbrain_workloads::WorkloadOptions;

use crate::dbs::Db;
use crate::env::{Addresses, EnvError, Environment, NodeCommand, NodeImage};
use crate::interpreter::{Client, ClientFactory, Completion};

/// What a [`FakeEnv`] was asked, one line per call (`kill n1,n2`).
pub type CallLog = Arc<Mutex<Vec<String>>>;

/// An environment of `nodes` that records every call in its log and lacks
/// the abilities it is told to.
pub struct FakeEnv {
    pub log: CallLog,
    nodes: Vec<Node>,
    lacking: BTreeMap<Ability, String>,
    torn_down: Arc<Mutex<bool>>,
}

impl FakeEnv {
    pub fn new(log: CallLog) -> FakeEnv {
        FakeEnv {
            log,
            nodes: Vec::new(),
            lacking: BTreeMap::new(),
            torn_down: Arc::new(Mutex::new(false)),
        }
    }

    /// Lacks `ability`, saying `why`.
    pub fn lacking(mut self, ability: Ability, why: &str) -> FakeEnv {
        self.lacking.insert(ability, why.to_string());
        self
    }

    /// Becomes true once torn down.
    pub fn torn_down(&self) -> Arc<Mutex<bool>> {
        self.torn_down.clone()
    }

    fn record(&self, line: String) {
        if let Ok(mut l) = self.log.lock() {
            l.push(line);
        }
    }
}

#[async_trait]
impl Target for FakeEnv {
    fn nodes(&self) -> Vec<Node> {
        self.nodes.clone()
    }
    fn lacks(&self, ability: Ability) -> Option<String> {
        self.lacking.get(&ability).cloned()
    }
    async fn partition(&mut self, grudge: &Grudge) -> Result<(), String> {
        let cut: Vec<String> = grudge
            .iter()
            .filter(|(_, f)| !f.is_empty())
            .map(|(n, _)| n.clone())
            .collect();
        self.record(format!("partition {}", cut.join(",")));
        Ok(())
    }
    async fn heal(&mut self) -> Result<(), String> {
        self.record("heal".into());
        Ok(())
    }
    async fn kill(&mut self, nodes: &[Node]) -> Result<(), String> {
        self.record(format!("kill {}", nodes.join(",")));
        Ok(())
    }
    async fn restart(&mut self, nodes: &[Node]) -> Result<(), String> {
        self.record(format!("restart {}", nodes.join(",")));
        Ok(())
    }
    async fn pause(&mut self, nodes: &[Node]) -> Result<(), String> {
        self.record(format!("pause {}", nodes.join(",")));
        Ok(())
    }
    async fn resume(&mut self, nodes: &[Node]) -> Result<(), String> {
        self.record(format!("resume {}", nodes.join(",")));
        Ok(())
    }
    async fn set_clock_offset(&mut self, node: &Node, delta_ms: i64) -> Result<(), String> {
        self.record(format!("clock {node} {delta_ms}"));
        Ok(())
    }
    async fn loss(&mut self, fraction: f64) -> Result<(), String> {
        self.record(format!("loss {fraction}"));
        Ok(())
    }
    async fn stop_loss(&mut self) -> Result<(), String> {
        self.record("stop-loss".into());
        Ok(())
    }
}

#[async_trait]
impl Environment for FakeEnv {
    fn describe(&self) -> String {
        "a fake environment".into()
    }
    fn harness_program(&self) -> String {
        "splitbrain".into()
    }
    async fn place(
        &mut self,
        nodes: &[Node],
        ports: &[u16],
        _image: &NodeImage,
        _run_dir: &Path,
    ) -> Result<Addresses, EnvError> {
        self.record(format!("place {}", nodes.join(",")));
        self.nodes = nodes.to_vec();
        let mut addrs = Addresses::default();
        for (i, n) in nodes.iter().enumerate() {
            addrs
                .ips
                .insert(n.clone(), Ipv4Addr::new(127, 0, 0, 1 + i as u8));
            addrs.ports.insert(n.clone(), ports.to_vec());
        }
        Ok(addrs)
    }
    async fn start(&mut self, node: &Node, command: NodeCommand) -> Result<(), EnvError> {
        self.record(format!("start {node} {}", command.program));
        Ok(())
    }
    async fn exec(&self, node: &Node, argv: &[&str]) -> Result<(i64, String), EnvError> {
        self.record(format!("exec {node} {}", argv.join(" ")));
        Ok((0, String::new()))
    }
    async fn put_file(&self, node: &Node, path: &str, _contents: &[u8]) -> Result<(), EnvError> {
        self.record(format!("put {node} {path}"));
        Ok(())
    }
    async fn get_file(&self, node: &Node, path: &str) -> Result<Vec<u8>, EnvError> {
        self.record(format!("get {node} {path}"));
        Ok(Vec::new())
    }
    async fn teardown(&mut self, leave_running: bool) -> Result<Vec<PathBuf>, EnvError> {
        self.record(format!(
            "teardown{}",
            if leave_running { " (left running)" } else { "" }
        ));
        if let Ok(mut t) = self.torn_down.lock() {
            *t = true;
        }
        Ok(Vec::new())
    }
}

type Registers = Arc<Mutex<HashMap<Value, i64>>>;

/// One register per key in memory, on three nodes that share it.
#[derive(Default)]
pub struct MemDb {
    registers: Registers,
}

#[async_trait]
impl Db for MemDb {
    fn describe(&self) -> String {
        "in-memory register".into()
    }
    fn nodes(&self) -> Vec<Node> {
        vec!["n1".into(), "n2".into(), "n3".into()]
    }
    fn ports(&self) -> Vec<u16> {
        vec![1]
    }
    fn node_command(&self, _node: &str, _addrs: &Addresses, harness: &str) -> NodeCommand {
        NodeCommand {
            program: harness.to_string(),
            ..NodeCommand::default()
        }
    }
    async fn ready(&self, _addrs: &Addresses) -> Result<(), String> {
        Ok(())
    }
    async fn primaries(&self, _addrs: &Addresses) -> Vec<Node> {
        vec!["n1".into()]
    }
    fn clients(
        &self,
        _addrs: &Addresses,
        _op_timeout: Duration,
        _workload: &WorkloadOptions,
    ) -> Arc<dyn ClientFactory> {
        Arc::new(MemClients(self.registers.clone()))
    }
    fn lacks(&self, _ability: Ability) -> Option<String> {
        None
    }
}

struct MemClients(Registers);

impl ClientFactory for MemClients {
    fn open(&self, _process: u64) -> Box<dyn Client> {
        Box::new(MemClient(self.0.clone()))
    }
}

struct MemClient(Registers);

#[async_trait]
impl Client for MemClient {
    async fn invoke(&mut self, op: &Invocation) -> Completion {
        let key = op.key.clone().unwrap_or_default();
        let Ok(mut m) = self.0.lock() else {
            return Completion::fail(Value::Nil, "poisoned");
        };
        match op.f.as_str() {
            "read" => Completion::ok(m.get(&key).map_or(Value::Nil, |v| Value::Int(*v))),
            "write" => match op.value.as_int() {
                Some(v) => {
                    m.insert(key, v);
                    Completion::ok(op.value.clone())
                }
                None => Completion::fail(op.value.clone(), "not-an-integer"),
            },
            "cas" => {
                let pair = op
                    .value
                    .as_list()
                    .and_then(|l| Some((l.first()?.as_int()?, l.get(1)?.as_int()?)));
                match pair {
                    Some((from, to)) if m.get(&key) == Some(&from) => {
                        m.insert(key, to);
                        Completion::ok(op.value.clone())
                    }
                    Some(_) => Completion::fail(op.value.clone(), "precondition-failed"),
                    None => Completion::fail(op.value.clone(), "malformed-cas"),
                }
            }
            f => Completion::fail(Value::Nil, &format!("unknown-f-{f}")),
        }
    }
}
