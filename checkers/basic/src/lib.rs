//! The smaller checkers: sets, counters, bank, queues, unique ids, sessions, staleness, convergence, stats. Nothing here yet.
