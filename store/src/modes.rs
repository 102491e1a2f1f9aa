//! The replication modes of this build, and the only place that names them:
//! a mode is a file implementing [`crate::protocol::Protocol`] plus a row here.

use crate::chain::Chain;
use crate::config::Mode;
use crate::core::ModeEntry;
use crate::leaderless::Leaderless;
use crate::multi_leader::MultiLeader;
use crate::raft::Raft;
use crate::single_leader::SingleLeader;

/// Each mode with the tag that marks its records in the write-ahead log:
/// unique, below 251, and never reused, since a log names its mode by it.
pub static MODES: &[ModeEntry] = &[
    ModeEntry::of::<SingleLeader>(Mode::SingleLeader, 0),
    ModeEntry::of::<Leaderless>(Mode::Leaderless, 1),
    ModeEntry::of::<MultiLeader>(Mode::MultiLeader, 2),
    ModeEntry::of::<Raft>(Mode::Raft, 3),
    ModeEntry::of::<Chain>(Mode::Chain, 4),
];

/// The row of `cfg`'s mode (every mode has one).
pub fn entry(mode: Mode) -> Option<&'static ModeEntry> {
    MODES.iter().find(|m| m.mode == mode)
}

/// Whether `cfg`'s cluster has a leader once it is up.
pub fn has_leader(cfg: &crate::config::ClusterConfig) -> bool {
    entry(cfg.mode).is_some_and(|m| (m.has_leader)(cfg))
}

/// Why a cluster of `mode` cannot have `nodes` nodes, if it cannot.
pub fn refuse_node_count(mode: Mode, nodes: usize) -> Option<String> {
    entry(mode).and_then(|m| (m.refuse_node_count)(nodes))
}

/// Whether `cfg`'s mode changes its membership through the admin port.
pub fn has_membership(cfg: &crate::config::ClusterConfig) -> bool {
    entry(cfg.mode).is_some_and(|m| (m.has_membership)(cfg))
}

/// Where `cfg`'s cluster serves reads, if its mode says.
pub fn read_from(cfg: &crate::config::ClusterConfig) -> Option<crate::msg::ReadFrom> {
    entry(cfg.mode).and_then(|m| (m.read_from)(cfg))
}

/// `cfg`'s mode and options in a few words.
pub fn describe(cfg: &crate::config::ClusterConfig) -> String {
    entry(cfg.mode).map_or_else(|| cfg.mode.name().to_string(), |m| (m.describe)(cfg))
}
