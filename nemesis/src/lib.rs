//! The nemesis: fault packages (partitions, kills, pauses, clock skew, packet
//! loss), their schedules and final heals, and the executors that apply them
//! in each environment. This crate holds nothing yet.
