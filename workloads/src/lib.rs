//! Workloads: each a generator of client operations plus the checkers that fit
//! it (register, list-append, rw-register, set, counter, bank, session).
//! They arrive with the controller; this crate holds nothing yet.
