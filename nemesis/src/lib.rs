//! The nemesis: fault shapes (partitions, kill and pause targets) as pure
//! functions, the [`Target`] a fault acts on (abilities an environment and a
//! database give a cluster), and the fault packages, one file each, with
//! their schedules and the runner that carries them out. It knows no
//! environment: those implement [`Target`].

pub mod fault;
pub mod shape;
pub mod target;

pub use fault::{Fault, FaultPackage, NemesisOptions, Runner, PACKAGES};
pub use shape::{grudge, targets, Grudge, PartitionShape, ShapeError, TargetSpec};
pub use target::{Ability, Change, Members, PlacedPartition, Placement, Rebalanced, Target};
