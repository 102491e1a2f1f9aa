//! The replication modes of this build, and the only place that names them:
//! a mode is a file implementing [`crate::protocol::Protocol`] plus a row here.

use crate::config::Mode;
use crate::core::ModeEntry;
use crate::leaderless::Leaderless;
use crate::single_leader::SingleLeader;

/// Each mode with the tag that marks its records in the write-ahead log:
/// unique, below 251, and never reused, since a log names its mode by it.
pub static MODES: &[ModeEntry] = &[
    ModeEntry::of::<SingleLeader>(Mode::SingleLeader, 0),
    ModeEntry::of::<Leaderless>(Mode::Leaderless, 1),
];
