//! Simulation must make thousands of seeds routine: at least 50,000 client
//! ops per second per core end to end (simulate + record + check), so that
//! 1,000 seeds of a 2,000-op scenario take under a minute. Prints ops/s on
//! one core for the 1,000-seed register scenario, then for every claims
//! row over a few seeds (the set rows are quadratic by nature: each add
//! carries the whole set between replicas).
//! Run: `cargo bench -p splitbrain --bench simulation`.

use std::time::Instant;

use splitbrain::simulation::claims::scenario;
use splitbrain::simulation::{check, run};
use splitbrain_store::claims::{find, CLAIMS};

fn measure(id: &str, seeds: u64) -> (u64, f64) {
    let claim = find(id).expect("a claims row");
    let s = scenario(claim).expect("the row's scenario");
    let started = Instant::now();
    let mut ops = 0;
    for seed in 1..=seeds {
        let r = run(&s, seed).expect("a simulated run");
        let checked = check(&s, &r);
        assert!(!checked.checkers.is_empty());
        ops += r.stats.client_ops;
    }
    (ops, started.elapsed().as_secs_f64())
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let seeds = if quick { 50 } else { 1000 };
    let id = "sync-with-fencing-is-linearizable";
    let (ops, secs) = measure(id, seeds);
    println!(
        "{id}: {seeds} seeds x 2000 ops: {ops} client ops in {secs:.1} s = {:.0} ops/s on one core (target 50000; 1000 seeds in under 60 s)",
        ops as f64 / secs
    );
    println!(
        "{:<64} {:>8} {:>8} {:>10}",
        "claims row (5 seeds)", "ops", "s", "ops/s"
    );
    let mut total = (0u64, 0f64);
    for c in CLAIMS {
        let (ops, secs) = measure(c.id, 5);
        total = (total.0 + ops, total.1 + secs);
        println!(
            "{:<64} {ops:>8} {secs:>8.2} {:>10.0}",
            c.id,
            ops as f64 / secs
        );
    }
    println!(
        "all rows: {} ops in {:.1} s = {:.0} ops/s",
        total.0,
        total.1,
        total.0 as f64 / total.1
    );
}
