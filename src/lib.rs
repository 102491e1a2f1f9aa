//! The splitbrain harness: the interpreter that runs generators against
//! clients and the nemesis, the controller, the environments and databases
//! it runs clusters in, and the reports.

pub mod controller;
pub mod dbs;
pub mod deploy;
pub mod env;
pub mod error;
pub mod interpreter;
pub mod registry;
pub mod report;
pub mod run_store;
pub mod serve;
pub mod simulation;
pub mod testkit;
