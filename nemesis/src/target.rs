//! What a fault acts on: a running cluster, through the abilities its
//! environment and database give it (Jepsen's `db` protocols). Each method
//! applies one thing and checks that it took effect; an error says what did
//! not. A target that lacks an ability says why, and a run that asks for a
//! fault needing it is refused before anything starts.

use std::fmt;

use async_trait::async_trait;

use crate::shape::{Grudge, Node};

/// One thing a fault may need its target to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ability {
    /// Cut and heal links between nodes.
    Partition,
    /// Kill a node's process and start it again.
    Kill,
    /// Stop a node's process and let it go on.
    Pause,
    /// Move a node's clock away from true time.
    Clock,
    /// Drop a share of the packets between nodes.
    Loss,
    /// Say which nodes lead now.
    Primaries,
    /// Remove nodes from the configuration and add them back, through the
    /// database's own admin interface.
    Membership,
    /// Move, split and merge a sharded database's partitions.
    Rebalance,
}

/// A sharded database's partitions as it reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// The map's epoch: raised by every change.
    pub epoch: u64,
    pub groups: u32,
    pub partitions: Vec<PlacedPartition>,
    /// Whether partitions can be split and merged (ranges, rings), not only moved.
    pub splits: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedPartition {
    pub id: u32,
    pub group: u32,
    pub epoch: u64,
    /// Its keys in words ("[\"3\", \"5\")", "hash 2 of 8").
    pub span: String,
    /// The partition it merges into, if it can.
    pub merges_into: Option<u32>,
}

/// A change to a sharded database's partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Move { partition: u32, to: u32 },
    Split { partition: u32 },
    Merge { partition: u32 },
}

/// What a change did, as the database reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rebalanced {
    pub summary: String,
    pub partitions: Vec<u32>,
    pub map_epoch: u64,
    pub keys_copied: u64,
    /// How long the partitions were served by nobody.
    pub frozen_ms: u64,
}

/// A configuration as the database reports it: the nodes that take part
/// (in order, where it has one) and those still catching up to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members {
    pub members: Vec<Node>,
    pub joining: Vec<Node>,
}

impl Ability {
    pub const ALL: [Ability; 8] = [
        Ability::Partition,
        Ability::Kill,
        Ability::Pause,
        Ability::Clock,
        Ability::Loss,
        Ability::Primaries,
        Ability::Membership,
        Ability::Rebalance,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Ability::Partition => "partition",
            Ability::Kill => "kill",
            Ability::Pause => "pause",
            Ability::Clock => "clock",
            Ability::Loss => "loss",
            Ability::Primaries => "primaries",
            Ability::Membership => "membership",
            Ability::Rebalance => "rebalance",
        }
    }
}

impl fmt::Display for Ability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn missing(a: Ability) -> String {
    format!("this target cannot {a}")
}

/// A cluster the nemesis can act on. Every ability defaults to "cannot";
/// an environment implements the ones it has and names in [`Target::lacks`]
/// why it has no other.
#[async_trait]
pub trait Target: Send {
    fn nodes(&self) -> Vec<Node>;
    /// Why the target cannot do `ability`, or `None` when it can.
    fn lacks(&self, ability: Ability) -> Option<String>;
    /// The current leaders; empty when unknown.
    async fn primaries(&mut self) -> Vec<Node> {
        Vec::new()
    }
    /// Cut every link the grudge names, replacing any earlier partition.
    async fn partition(&mut self, _grudge: &Grudge) -> Result<(), String> {
        Err(missing(Ability::Partition))
    }
    /// Undo the partition; every link carries traffic again.
    async fn heal(&mut self) -> Result<(), String> {
        Err(missing(Ability::Partition))
    }
    async fn kill(&mut self, _nodes: &[Node]) -> Result<(), String> {
        Err(missing(Ability::Kill))
    }
    async fn restart(&mut self, _nodes: &[Node]) -> Result<(), String> {
        Err(missing(Ability::Kill))
    }
    async fn pause(&mut self, _nodes: &[Node]) -> Result<(), String> {
        Err(missing(Ability::Pause))
    }
    async fn resume(&mut self, _nodes: &[Node]) -> Result<(), String> {
        Err(missing(Ability::Pause))
    }
    /// Shift a node's clock by `delta_ms` from true time (absolute, not cumulative).
    async fn set_clock_offset(&mut self, _node: &Node, _delta_ms: i64) -> Result<(), String> {
        Err(missing(Ability::Clock))
    }
    async fn loss(&mut self, _fraction: f64) -> Result<(), String> {
        Err(missing(Ability::Loss))
    }
    /// Stop dropping packets, leaving any partition as it is.
    async fn stop_loss(&mut self) -> Result<(), String> {
        Err(missing(Ability::Loss))
    }
    /// The configuration now, as the node that decides it reports it.
    async fn members(&mut self) -> Result<Members, String> {
        Err(missing(Ability::Membership))
    }
    /// Take `node` out of the configuration; the configuration after.
    async fn remove_member(&mut self, _node: &Node) -> Result<Members, String> {
        Err(missing(Ability::Membership))
    }
    /// Bring `node` back in, once it has caught up; the configuration after.
    async fn add_member(&mut self, _node: &Node) -> Result<Members, String> {
        Err(missing(Ability::Membership))
    }
    /// The partitions and where they are.
    async fn placement(&mut self) -> Result<Placement, String> {
        Err(missing(Ability::Rebalance))
    }
    /// Carries out `change`, once it has taken effect.
    async fn rebalance(&mut self, _change: Change) -> Result<Rebalanced, String> {
        Err(missing(Ability::Rebalance))
    }
}

/// A boxed target is a target, so environments can hand one out.
#[async_trait]
impl Target for Box<dyn Target> {
    fn nodes(&self) -> Vec<Node> {
        (**self).nodes()
    }
    fn lacks(&self, ability: Ability) -> Option<String> {
        (**self).lacks(ability)
    }
    async fn primaries(&mut self) -> Vec<Node> {
        (**self).primaries().await
    }
    async fn partition(&mut self, g: &Grudge) -> Result<(), String> {
        (**self).partition(g).await
    }
    async fn heal(&mut self) -> Result<(), String> {
        (**self).heal().await
    }
    async fn kill(&mut self, nodes: &[Node]) -> Result<(), String> {
        (**self).kill(nodes).await
    }
    async fn restart(&mut self, nodes: &[Node]) -> Result<(), String> {
        (**self).restart(nodes).await
    }
    async fn pause(&mut self, nodes: &[Node]) -> Result<(), String> {
        (**self).pause(nodes).await
    }
    async fn resume(&mut self, nodes: &[Node]) -> Result<(), String> {
        (**self).resume(nodes).await
    }
    async fn set_clock_offset(&mut self, node: &Node, delta_ms: i64) -> Result<(), String> {
        (**self).set_clock_offset(node, delta_ms).await
    }
    async fn loss(&mut self, fraction: f64) -> Result<(), String> {
        (**self).loss(fraction).await
    }
    async fn stop_loss(&mut self) -> Result<(), String> {
        (**self).stop_loss().await
    }
    async fn members(&mut self) -> Result<Members, String> {
        (**self).members().await
    }
    async fn remove_member(&mut self, node: &Node) -> Result<Members, String> {
        (**self).remove_member(node).await
    }
    async fn add_member(&mut self, node: &Node) -> Result<Members, String> {
        (**self).add_member(node).await
    }
    async fn placement(&mut self) -> Result<Placement, String> {
        (**self).placement().await
    }
    async fn rebalance(&mut self, change: Change) -> Result<Rebalanced, String> {
        (**self).rebalance(change).await
    }
}
