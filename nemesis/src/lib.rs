//! The nemesis: fault shapes (partitions, kill and pause targets) as pure
//! functions; fault packages, schedules and executors build on them.

pub mod shape;

pub use shape::{grudge, targets, Grudge, PartitionShape, ShapeError, TargetSpec};
pub mod netns;
pub mod package;

pub use package::{Executor, Fault, NemesisOptions, Runner};
