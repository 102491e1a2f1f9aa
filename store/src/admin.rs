//! The admin port from the caller's side: `status` answers `ok ` and the JSON
//! of a [`NodeStatus`]; [`admin_status`] asks for it and parses it, so callers
//! never read text. The other commands answer `ok ...` or `error ...`
//! (see [`admin_call`]).

use crate::config::ClusterConfig;
use crate::core::{AdminReply, CoreStatus, Membership};
use crate::msg::NodeId;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// What a node reports on its admin port's `status`. Nodes are named as in
/// the cluster file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: String,
    pub mode: String,
    /// `leader`, `follower` or `candidate` (single-leader), `replica` (leaderless).
    pub role: String,
    pub epoch: u64,
    /// The node this one takes for the leader, if any.
    pub leader: Option<String>,
    pub keys: u64,
    pub commit_index: u64,
    pub last_index: u64,
    /// The fault offset added to this node's clock.
    pub clock_offset_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin port {addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("the node closed its admin connection without a reply")]
    NoReply,
    #[error("the node answered: {0}")]
    Refused(String),
    #[error("not the node that decides configurations (ask {})", .0.as_deref().unwrap_or("another node"))]
    NotLeader(Option<String>),
    #[error("the outcome is unknown: {0}")]
    Unknown(String),
    #[error("malformed status reply {reply:?}: {reason}")]
    Malformed { reply: String, reason: String },
}

impl NodeStatus {
    /// The status of node `node` of `cfg` from what its core reports.
    pub fn new(cfg: &ClusterConfig, node: NodeId, core: &CoreStatus, clock_offset_ms: i64) -> Self {
        let name = |n: NodeId| {
            cfg.nodes
                .get(n as usize)
                .map_or_else(|| n.to_string(), |a| a.id.clone())
        };
        NodeStatus {
            node: name(node),
            mode: cfg.mode.name().to_string(),
            role: core.role.clone(),
            epoch: core.epoch,
            leader: core.leader.map(name),
            keys: core.keys,
            commit_index: core.commit_index,
            last_index: core.last_index,
            clock_offset_ms,
        }
    }

    /// Whether this node leads (a sharded node: leads one of its groups).
    pub fn is_leader(&self) -> bool {
        self.role == "leader" || !self.groups_led().is_empty()
    }

    /// A sharded node: the groups it leads (its role reads `g0:leader g2:follower`).
    pub fn groups_led(&self) -> Vec<u32> {
        self.role
            .split(' ')
            .filter_map(|r| r.strip_suffix(":leader"))
            .filter_map(|g| g.strip_prefix('g')?.parse().ok())
            .collect()
    }

    /// The admin port's answer to `status`: one line, `ok {json}`.
    pub fn admin_reply(&self) -> String {
        // A struct of strings and integers always serializes.
        format!("ok {}", serde_json::to_string(self).unwrap_or_default())
    }

    /// Parses the admin port's answer to `status`.
    pub fn parse_admin_reply(reply: &str) -> Result<NodeStatus, AdminError> {
        let reply = reply.trim_end();
        if reply.is_empty() {
            return Err(AdminError::NoReply);
        }
        if let Some(why) = reply.strip_prefix("error") {
            return Err(AdminError::Refused(why.trim_start().to_string()));
        }
        let malformed = |reason: String| AdminError::Malformed {
            reply: reply.to_string(),
            reason,
        };
        let json = reply
            .strip_prefix("ok ")
            .ok_or_else(|| malformed("expected `ok ` and a JSON object".into()))?;
        serde_json::from_str(json).map_err(|e| malformed(e.to_string()))
    }
}

/// A configuration as the admin port reports it, nodes named as in the cluster file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersView {
    pub members: Vec<String>,
    pub joining: Vec<String>,
}

impl MembersView {
    pub fn new(cfg: &ClusterConfig, m: &Membership) -> Self {
        let names = |ids: &[NodeId]| ids.iter().map(|n| node_name(cfg, *n)).collect();
        MembersView {
            members: names(&m.members),
            joining: names(&m.joining),
        }
    }

    /// The admin port's answer to `members`, `member-remove` and
    /// `member-add`: `ok {json}`, `error not-leader NODE`, `error unknown
    /// WHY` or `error WHY` (refused).
    pub fn admin_reply(cfg: &ClusterConfig, reply: &AdminReply) -> String {
        match reply {
            AdminReply::Members(m) => format!(
                "ok {}",
                serde_json::to_string(&MembersView::new(cfg, m)).unwrap_or_default()
            ),
            AdminReply::NotLeader { leader } => format!(
                "error not-leader {}",
                leader.map_or_else(|| "none".to_string(), |l| node_name(cfg, l))
            ),
            AdminReply::Unknown(why) => format!("error unknown {why}"),
            AdminReply::Refused(why) => format!("error {why}"),
            AdminReply::Partitions(map) => {
                format!("ok {}", serde_json::to_string(map).unwrap_or_default())
            }
            AdminReply::Rebalanced(done) => {
                format!("ok {}", serde_json::to_string(done).unwrap_or_default())
            }
        }
    }

    pub fn parse_admin_reply(reply: &str) -> Result<MembersView, AdminError> {
        let reply = reply.trim_end();
        if reply.is_empty() {
            return Err(AdminError::NoReply);
        }
        if let Some(why) = reply.strip_prefix("error ") {
            if let Some(who) = why.strip_prefix("not-leader ") {
                let who = who.trim();
                return Err(AdminError::NotLeader(
                    (who != "none").then(|| who.to_string()),
                ));
            }
            if let Some(why) = why.strip_prefix("unknown ") {
                return Err(AdminError::Unknown(why.to_string()));
            }
            return Err(AdminError::Refused(why.to_string()));
        }
        let json = reply
            .strip_prefix("ok ")
            .ok_or_else(|| AdminError::Malformed {
                reply: reply.to_string(),
                reason: "expected `ok ` and a JSON object".into(),
            })?;
        serde_json::from_str(json).map_err(|e| AdminError::Malformed {
            reply: reply.to_string(),
            reason: e.to_string(),
        })
    }
}

fn node_name(cfg: &ClusterConfig, n: NodeId) -> String {
    cfg.nodes
        .get(n as usize)
        .map_or_else(|| n.to_string(), |a| a.id.clone())
}

/// Sends a membership command (`members`, `member-remove NODE`,
/// `member-add NODE`) to `addr` and parses the answer.
pub async fn admin_members(
    addr: &str,
    secret: &str,
    command: &str,
) -> Result<MembersView, AdminError> {
    let reply = admin_call(addr, secret, command)
        .await
        .map_err(|source| AdminError::Io {
            addr: addr.to_string(),
            source,
        })?;
    MembersView::parse_admin_reply(&reply)
}

/// Sends one admin command to `addr` and returns the reply line (empty if
/// the node closed the connection first).
/// With a `secret` (the cluster file's), the connection authenticates first.
pub async fn admin_call(addr: &str, secret: &str, command: &str) -> std::io::Result<String> {
    let stream = TcpStream::connect(addr).await?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    if !secret.is_empty() {
        write
            .write_all(format!("auth {secret}\n").as_bytes())
            .await?;
        let answer = lines.next_line().await?.unwrap_or_default();
        if answer != "ok" {
            return Ok(answer);
        }
    }
    write.write_all(format!("{command}\n").as_bytes()).await?;
    Ok(lines.next_line().await?.unwrap_or_default())
}

/// Asks the node whose admin port is `addr` for its status.
pub async fn admin_status(addr: &str, secret: &str) -> Result<NodeStatus, AdminError> {
    let reply = admin_call(addr, secret, "status")
        .await
        .map_err(|source| AdminError::Io {
            addr: addr.to_string(),
            source,
        })?;
    NodeStatus::parse_admin_reply(&reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> NodeStatus {
        NodeStatus {
            node: "n1".into(),
            mode: "single-leader".into(),
            role: "leader".into(),
            epoch: 3,
            leader: Some("n1".into()),
            keys: 7,
            commit_index: 12,
            last_index: 13,
            clock_offset_ms: -250,
        }
    }

    #[test]
    fn status_reply_round_trips_as_one_line() {
        let reply = status().admin_reply();
        assert!(reply.starts_with("ok {"), "{reply}");
        assert!(!reply.contains('\n'));
        let parsed = NodeStatus::parse_admin_reply(&format!("{reply}\n")).unwrap();
        assert_eq!(parsed, status());
        assert!(parsed.is_leader());
    }

    #[test]
    fn refusals_and_garbage_are_errors() {
        assert!(matches!(
            NodeStatus::parse_admin_reply("error node stopped"),
            Err(AdminError::Refused(m)) if m == "node stopped"
        ));
        assert!(matches!(
            NodeStatus::parse_admin_reply(""),
            Err(AdminError::NoReply)
        ));
        assert!(matches!(
            NodeStatus::parse_admin_reply("ok node=n1 role=leader"),
            Err(AdminError::Malformed { .. })
        ));
        assert!(matches!(
            NodeStatus::parse_admin_reply("{\"node\":\"n1\"}"),
            Err(AdminError::Malformed { .. })
        ));
    }

    #[test]
    fn leader_and_node_are_named_from_the_cluster_file() {
        let mut cfg = crate::sim::Sim::cluster(3);
        cfg.mode = crate::config::Mode::Leaderless;
        let core = CoreStatus {
            role: "replica".into(),
            epoch: 0,
            leader: Some(2),
            keys: 1,
            commit_index: 0,
            last_index: 0,
        };
        let s = NodeStatus::new(&cfg, 1, &core, 40);
        assert_eq!(s.node, "n2");
        assert_eq!(s.leader.as_deref(), Some("n3"));
        assert_eq!(s.mode, "leaderless");
        assert_eq!(s.clock_offset_ms, 40);
    }
}
