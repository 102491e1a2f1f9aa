//! The netns environment: each node a process in a network namespace of its
//! own with its own address, all joined by a bridge that lives in another
//! namespace, plus a control link from the namespace the harness runs in.
//! Partitions and packet loss are iptables rules inside the node
//! namespaces, so this works for any database binary. Needs root on Linux.
//!
//! Layout for cluster `c` (a short tag) with nodes n1..nN:
//! - namespace `sb-c-br` holds bridge `br0`;
//! - namespace `sb-c-nI` holds `eth0` = 10.X.Y.I/24, its peer `vI` on `br0`;
//! - the caller's namespace holds `sb-c-ctl` = 10.X.Y.254/24, its peer on `br0`,
//!   so clients reach every node and the nemesis never cuts them off.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use splitbrain_nemesis::shape::{cut_links, Grudge, Node};
use splitbrain_nemesis::{Ability, Target};

use super::local::{exec_here, Processes};
use super::{Addresses, EnvError, EnvOptions, Environment, NodeCommand, NodeImage};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespaces need root (this process runs as uid {0})")]
    NotRoot(u32),
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error(
        "cluster tag '{0}' must be 1-6 lowercase letters or digits (interface names are short)"
    )]
    BadTag(String),
    #[error("{0} nodes do not fit one /24 (at most 250)")]
    TooManyNodes(usize),
    #[error("no node named {0}")]
    UnknownNode(String),
    #[error("the fault did not take effect: {0}")]
    NotInEffect(String),
}

/// A cluster of namespaces. Dropping it does not tear it down: call
/// [`NetnsCluster::destroy`] once every process inside has been stopped.
#[derive(Debug, Clone)]
pub struct NetnsCluster {
    tag: String,
    nodes: Vec<Node>,
    subnet: [u8; 3],
}

fn run(args: &[&str]) -> Result<Output, NetnsError> {
    let command = args.join(" ");
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NetnsError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(NetnsError::Command {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

fn uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(u32::MAX)
}

/// Whether this machine lets us make namespaces (root, and `ip netns` works).
pub fn available() -> Result<(), NetnsError> {
    let u = uid();
    if u != 0 {
        return Err(NetnsError::NotRoot(u));
    }
    run(&["ip", "netns", "list"]).map(|_| ())
}

impl NetnsCluster {
    /// Build the namespaces, bridge and links for `nodes`.
    pub fn create(tag: &str, nodes: &[Node]) -> Result<NetnsCluster, NetnsError> {
        if tag.is_empty()
            || tag.len() > 6
            || !tag
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(NetnsError::BadTag(tag.to_string()));
        }
        if nodes.len() > 250 {
            return Err(NetnsError::TooManyNodes(nodes.len()));
        }
        available()?;
        // A subnet from the tag, so clusters with different tags do not clash.
        let h = tag
            .bytes()
            .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
        let c = NetnsCluster {
            tag: tag.to_string(),
            nodes: nodes.to_vec(),
            subnet: [10, 200 + (h % 50) as u8, (h / 50 % 250) as u8],
        };
        // Leftovers from an earlier run with this tag would make every step below fail.
        c.destroy_quietly();
        if let Err(e) = c.build() {
            c.destroy_quietly();
            return Err(e);
        }
        Ok(c)
    }

    fn build(&self) -> Result<(), NetnsError> {
        let br = self.bridge_ns();
        run(&["ip", "netns", "add", &br])?;
        run(&["ip", "-n", &br, "link", "add", "br0", "type", "bridge"])?;
        run(&["ip", "-n", &br, "link", "set", "br0", "up"])?;
        run(&["ip", "-n", &br, "link", "set", "lo", "up"])?;
        for (i, node) in self.nodes.iter().enumerate() {
            let ns = self.node_ns(i);
            let peer = format!("v{}", i + 1);
            let tmp = format!("sb{}t{}", self.tag, i + 1);
            run(&["ip", "netns", "add", &ns])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            // Make the pair in the node's namespace, then move one end to the bridge.
            run(&[
                "ip", "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &tmp,
            ])?;
            run(&["ip", "-n", &ns, "link", "set", &tmp, "netns", &br])?;
            run(&["ip", "-n", &br, "link", "set", &tmp, "name", &peer])?;
            run(&["ip", "-n", &br, "link", "set", &peer, "master", "br0"])?;
            run(&["ip", "-n", &br, "link", "set", &peer, "up"])?;
            let addr = format!("{}/24", self.addr_of_index(i));
            run(&["ip", "-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            let _ = node;
        }
        let ctl = self.control_link();
        let ctl_peer = format!("sb{}cp", self.tag);
        run(&[
            "ip", "link", "add", &ctl, "type", "veth", "peer", "name", &ctl_peer,
        ])?;
        run(&["ip", "link", "set", &ctl_peer, "netns", &br])?;
        run(&["ip", "-n", &br, "link", "set", &ctl_peer, "master", "br0"])?;
        run(&["ip", "-n", &br, "link", "set", &ctl_peer, "up"])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", self.control_addr()),
            "dev",
            &ctl,
        ])?;
        run(&["ip", "link", "set", &ctl, "up"])?;
        Ok(())
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The namespaces and the link (in the caller's namespace) a cluster of
    /// `tag` with `nodes` makes, before it makes them.
    pub fn names(tag: &str, nodes: usize) -> (Vec<String>, Vec<String>) {
        let c = NetnsCluster {
            tag: tag.to_string(),
            nodes: Vec::new(),
            subnet: [0; 3],
        };
        let mut namespaces: Vec<String> = (0..nodes).map(|i| c.node_ns(i)).collect();
        namespaces.push(c.bridge_ns());
        (namespaces, vec![c.control_link()])
    }

    fn bridge_ns(&self) -> String {
        format!("sb-{}-br", self.tag)
    }

    fn node_ns(&self, i: usize) -> String {
        format!("sb-{}-n{}", self.tag, i + 1)
    }

    fn control_link(&self) -> String {
        format!("sb{}ctl", self.tag)
    }

    fn index(&self, node: &str) -> Result<usize, NetnsError> {
        self.nodes
            .iter()
            .position(|n| n == node)
            .ok_or_else(|| NetnsError::UnknownNode(node.to_string()))
    }

    fn addr_of_index(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(
            self.subnet[0],
            self.subnet[1],
            self.subnet[2],
            (i + 1) as u8,
        )
    }

    /// The node's address, reachable from the caller's namespace.
    pub fn addr(&self, node: &str) -> Result<Ipv4Addr, NetnsError> {
        Ok(self.addr_of_index(self.index(node)?))
    }

    /// The caller's address on the cluster network.
    pub fn control_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.subnet[0], self.subnet[1], self.subnet[2], 254)
    }

    /// The namespace a node's processes must run in.
    pub fn namespace(&self, node: &str) -> Result<String, NetnsError> {
        Ok(self.node_ns(self.index(node)?))
    }

    fn iptables(&self, i: usize, args: &[&str]) -> Result<Output, NetnsError> {
        let ns = self.node_ns(i);
        let mut full = vec!["ip", "netns", "exec", &ns, "iptables", "-w"];
        full.extend_from_slice(args);
        run(&full)
    }

    /// Cut every link the grudge names (replacing any earlier partition), then
    /// prove it: cut links drop pings, all others carry them.
    pub fn partition(&self, grudge: &Grudge) -> Result<(), NetnsError> {
        self.flush_partition()?;
        for (to, froms) in grudge {
            let i = self.index(to)?;
            for from in froms {
                let src = self.addr(from)?.to_string();
                self.iptables(i, &["-A", "INPUT", "-s", &src, "-j", "DROP"])?;
            }
        }
        self.verify(&cut_links(grudge))
    }

    fn flush_partition(&self) -> Result<(), NetnsError> {
        for i in 0..self.nodes.len() {
            self.iptables(i, &["-F", "INPUT"])?;
        }
        Ok(())
    }

    /// Drop `fraction` of the packets each node receives from other nodes.
    pub fn loss(&self, fraction: f64) -> Result<(), NetnsError> {
        let p = format!("{:.4}", fraction.clamp(0.0, 1.0));
        let net = format!(
            "{}.{}.{}.0/24",
            self.subnet[0], self.subnet[1], self.subnet[2]
        );
        let ctl = self.control_addr().to_string();
        for i in 0..self.nodes.len() {
            // Packets lost between nodes only: the harness's own link stays clean.
            self.iptables(i, &["-I", "INPUT", "1", "-s", &ctl, "-j", "ACCEPT"])?;
            self.iptables(
                i,
                &[
                    "-A",
                    "INPUT",
                    "-s",
                    &net,
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &p,
                    "-j",
                    "DROP",
                ],
            )?;
            // Loss is random, so no probe can prove it; read the rule back instead.
            let rules =
                String::from_utf8_lossy(&self.iptables(i, &["-S", "INPUT"])?.stdout).into_owned();
            if !rules.contains("statistic") {
                return Err(NetnsError::NotInEffect(format!(
                    "no loss rule on {}",
                    self.nodes[i]
                )));
            }
        }
        Ok(())
    }

    /// Remove the loss rules only: a partition in force stays.
    pub fn stop_loss(&self) -> Result<(), NetnsError> {
        let ctl = format!("-s {}/32 -j ACCEPT", self.control_addr());
        for i in 0..self.nodes.len() {
            let rules =
                String::from_utf8_lossy(&self.iptables(i, &["-S", "INPUT"])?.stdout).into_owned();
            for rule in rules.lines() {
                let Some(spec) = rule.strip_prefix("-A INPUT ") else {
                    continue;
                };
                if spec.contains("statistic") || spec == ctl {
                    let mut args = vec!["-D", "INPUT"];
                    args.extend(spec.split_whitespace());
                    self.iptables(i, &args)?;
                }
            }
        }
        Ok(())
    }

    /// Remove every partition and loss rule, then prove every link works.
    pub fn heal(&self) -> Result<(), NetnsError> {
        self.flush_partition()?;
        self.verify(&BTreeSet::new())
    }

    /// Ping every ordered pair of nodes; links in `cut` must fail and all others succeed.
    pub fn verify(&self, cut: &BTreeSet<(Node, Node)>) -> Result<(), NetnsError> {
        let mut probes = Vec::new();
        for (i, from) in self.nodes.iter().enumerate() {
            for (j, to) in self.nodes.iter().enumerate() {
                if i == j {
                    continue;
                }
                let ns = self.node_ns(i);
                let target = self.addr_of_index(j).to_string();
                // A cut on either direction loses the echo; we only expect success when neither is cut.
                let expect_up = !cut.contains(&(from.clone(), to.clone()))
                    && !cut.contains(&(to.clone(), from.clone()));
                let child = Command::new("ip")
                    .args([
                        "netns", "exec", &ns, "ping", "-c", "1", "-W", "1", "-q", &target,
                    ])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|source| NetnsError::Spawn {
                        command: "ping".into(),
                        source,
                    })?;
                probes.push((from.clone(), to.clone(), expect_up, child));
            }
        }
        let mut wrong = Vec::new();
        for (from, to, expect_up, mut child) in probes {
            let up = child.wait().map(|s| s.success()).unwrap_or(false);
            if up != expect_up {
                wrong.push(format!(
                    "{from} -> {to} is {}",
                    if up {
                        "up but should be cut"
                    } else {
                        "cut but should be up"
                    }
                ));
            }
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(NetnsError::NotInEffect(wrong.join("; ")))
        }
    }

    /// Delete the namespaces and links. Stop the processes inside first: a
    /// namespace with processes in it lingers until they exit.
    pub fn destroy(&self) -> Result<(), NetnsError> {
        let mut first_err = None;
        for i in 0..self.nodes.len() {
            if let Err(e) = run(&["ip", "netns", "del", &self.node_ns(i)]) {
                first_err.get_or_insert(e);
            }
        }
        if let Err(e) = run(&["ip", "netns", "del", &self.bridge_ns()]) {
            first_err.get_or_insert(e);
        }
        // The control link's peer went with the bridge namespace; delete ours if it lingers.
        let _ = run(&["ip", "link", "del", &self.control_link()]);
        first_err.map_or(Ok(()), Err)
    }

    fn destroy_quietly(&self) {
        for i in 0..self.nodes.len().max(1) + 8 {
            let _ = run(&["ip", "netns", "del", &self.node_ns(i)]);
        }
        let _ = run(&["ip", "netns", "del", &self.bridge_ns()]);
        let _ = run(&["ip", "link", "del", &self.control_link()]);
    }
}
const BASE36: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// The harness process a tag of [`unique_tag`]'s names.
fn tag_pid(tag: &str) -> Option<u32> {
    let v = tag.bytes().try_fold(0u64, |v, b| {
        let d = BASE36.iter().position(|&c| c == b)? as u64;
        Some(v * 36 + d)
    })?;
    u32::try_from(v >> 4).ok()
}

/// Remove the namespaces (and control links) of runs whose harness is
/// gone, killed before it could tear down, except those in `kept` (a run
/// left running on purpose); returns the namespaces removed.
pub fn remove_orphans(kept: &[String]) -> Result<Vec<String>, NetnsError> {
    let mut removed = Vec::new();
    let mut tags = BTreeSet::new();
    for name in namespaces()? {
        let Some(rest) = name.strip_prefix("sb-") else {
            continue;
        };
        let Some((tag, _)) = rest.split_once('-') else {
            continue;
        };
        let alive =
            tag_pid(tag).is_some_and(|pid| Path::new("/proc").join(pid.to_string()).exists());
        if !alive && !kept.contains(&name) {
            if run(&["ip", "netns", "del", &name]).is_ok() {
                removed.push(name.clone());
            }
            tags.insert(tag.to_string());
        }
    }
    for tag in tags {
        let _ = run(&["ip", "link", "del", &format!("sb{tag}ctl")]);
    }
    Ok(removed)
}

fn namespaces() -> Result<Vec<String>, NetnsError> {
    available()?;
    let out = run(&["ip", "netns", "list"])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect())
}

/// Remove these namespaces and links where they still exist (a run's lock
/// file lists them); returns the namespaces removed.
pub fn remove_named(names: &[String], links: &[String]) -> Result<Vec<String>, NetnsError> {
    let present = namespaces()?;
    let mut removed = Vec::new();
    for name in names.iter().filter(|n| present.contains(n)) {
        run(&["ip", "netns", "del", name])?;
        removed.push(name.clone());
    }
    for link in links {
        if run(&["ip", "link", "show", link]).is_ok() {
            run(&["ip", "link", "del", link])?;
        }
    }
    Ok(removed)
}

/// A tag no other environment alive has: this process's id and a count of
/// the environments it made, in base 36 (at most 6 characters).
fn unique_tag() -> String {
    static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 16;
    let mut v = ((u64::from(std::process::id()) << 4) | n) % 36u64.pow(6);
    let mut tag = Vec::new();
    loop {
        tag.push(BASE36[(v % 36) as usize]);
        v /= 36;
        if v == 0 {
            break;
        }
    }
    tag.reverse();
    String::from_utf8(tag).unwrap_or_default()
}

/// Nodes as processes in namespaces of their own.
pub struct NetnsEnv {
    processes: Processes,
    /// Short and ours alone: concurrent runs must not share namespaces.
    tag: String,
    net: Option<Arc<NetnsCluster>>,
    nodes: Vec<Node>,
}

impl NetnsEnv {
    pub fn new(o: &EnvOptions) -> Result<NetnsEnv, String> {
        available().map_err(|e| format!("--env netns: {e}"))?;
        // Partitions are proven with pings between the namespaces.
        if Command::new("ping").arg("-V").output().is_err() {
            return Err("--env netns proves partitions with ping, which is not installed (apt-get install iputils-ping)".into());
        }
        Ok(NetnsEnv {
            processes: Processes::new(o, "netns")?,
            tag: unique_tag(),
            net: None,
            nodes: Vec::new(),
        })
    }

    fn prefix(&self, node: &str) -> Result<Vec<String>, EnvError> {
        let net = self.net()?;
        // `ip netns exec` execs in place: the pid is the node's, for signals.
        Ok(vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            net.namespace(node)?,
        ])
    }

    fn net(&self) -> Result<Arc<NetnsCluster>, EnvError> {
        self.net
            .clone()
            .ok_or_else(|| EnvError::Other("the network namespaces are not set up".into()))
    }

    /// Runs a blocking namespace operation off the runtime's thread, so
    /// client ops keep flowing while pings wait out their timeouts.
    async fn on_net(
        &self,
        f: impl FnOnce(&NetnsCluster) -> Result<(), NetnsError> + Send + 'static,
    ) -> Result<(), String> {
        let net = self.net().map_err(|e| e.to_string())?;
        tokio::task::spawn_blocking(move || f(&net))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }
}

#[async_trait]
impl Target for NetnsEnv {
    fn nodes(&self) -> Vec<Node> {
        self.nodes.clone()
    }
    fn lacks(&self, ability: Ability) -> Option<String> {
        match ability {
            Ability::Clock => Some("nodes in namespaces share this machine's clock".into()),
            Ability::Membership => Some(super::MEMBERSHIP_IS_THE_DATABASES.into()),
            Ability::Rebalance => Some(super::REBALANCING_IS_THE_DATABASES.into()),
            Ability::Primaries => {
                Some("processes alone do not know who leads; the database does".into())
            }
            _ => None,
        }
    }
    async fn partition(&mut self, grudge: &Grudge) -> Result<(), String> {
        let g = grudge.clone();
        self.on_net(move |n| n.partition(&g)).await
    }
    async fn heal(&mut self) -> Result<(), String> {
        self.on_net(|n| n.heal()).await
    }
    async fn loss(&mut self, fraction: f64) -> Result<(), String> {
        self.on_net(move |n| n.loss(fraction)).await
    }
    async fn stop_loss(&mut self) -> Result<(), String> {
        self.on_net(|n| n.stop_loss()).await
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
impl Environment for NetnsEnv {
    fn describe(&self) -> String {
        "processes in network namespaces".into()
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
        if nodes.len() > 250 {
            return Err(NetnsError::TooManyNodes(nodes.len()).into());
        }
        self.processes.place(run_dir).await?;
        let (tag, names) = (self.tag.clone(), nodes.to_vec());
        let (namespaces, links) = NetnsCluster::names(&tag, names.len());
        self.processes.record_network(&namespaces, &links);
        let net = tokio::task::spawn_blocking(move || NetnsCluster::create(&tag, &names))
            .await
            .map_err(|e| EnvError::Other(e.to_string()))??;
        let mut addrs = Addresses::default();
        for n in nodes {
            addrs.ips.insert(n.clone(), net.addr(n)?);
            addrs.ports.insert(n.clone(), ports.to_vec());
        }
        self.net = Some(Arc::new(net));
        self.nodes = nodes.to_vec();
        Ok(addrs)
    }
    async fn start(&mut self, node: &Node, command: NodeCommand) -> Result<(), EnvError> {
        let prefix = self.prefix(node)?;
        self.processes.start(node, command, &prefix)
    }
    async fn check_alive(&mut self, node: &Node) -> Result<(), EnvError> {
        self.processes.check_alive(node)
    }
    async fn exec(&self, node: &Node, argv: &[&str]) -> Result<(i64, String), EnvError> {
        exec_here(&self.prefix(node)?, argv).await
    }
    async fn put_file(&self, _node: &Node, path: &str, contents: &[u8]) -> Result<(), EnvError> {
        Ok(tokio::fs::write(self.processes.run_dir().join(path), contents).await?)
    }
    async fn get_file(&self, _node: &Node, path: &str) -> Result<Vec<u8>, EnvError> {
        Ok(tokio::fs::read(self.processes.run_dir().join(path)).await?)
    }
    async fn teardown(&mut self, leave_running: bool) -> Result<Vec<PathBuf>, EnvError> {
        let logs = self.processes.teardown(leave_running);
        if !leave_running {
            // Processes first: a namespace with processes in it lingers.
            if let Some(net) = self.net.take() {
                tokio::task::spawn_blocking(move || net.destroy())
                    .await
                    .map_err(|e| EnvError::Other(e.to_string()))??;
            }
        } else if let Some(net) = &self.net {
            eprintln!(
                "left the network namespaces sb-{}-* in place: `ip netns list` names them",
                net.tag
            );
        }
        // Only once everything is gone: a failed destroy keeps the record for `clean`.
        self.processes.finish(leave_running);
        Ok(logs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_names_the_harness_that_made_it() {
        let tag = unique_tag();
        assert!(tag.len() <= 6, "{tag}");
        assert_eq!(tag_pid(&tag), Some(std::process::id()));
        assert_eq!(tag_pid("r-x"), None);
    }
}
