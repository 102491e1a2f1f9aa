//! Workloads: pure, seeded generators of client operations, each paired with
//! the checkers that fit it. Only the interpreter (in the `splitbrain`
//! binary) owns threads and clocks.

pub mod workload;

pub use workload::{build, CheckerUse, Workload, WorkloadKind, WorkloadOptions};
