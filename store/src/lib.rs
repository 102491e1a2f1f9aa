//! The reference store: a replicated key-value store with every replication
//! mode the textbooks describe, as sans-IO state machines with a tokio driver.
//! It knows nothing of the harness. This crate holds nothing yet.
