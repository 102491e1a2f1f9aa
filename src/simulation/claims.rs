//! Runs the store's claims table ([`splitbrain_store::claims::CLAIMS`]) in
//! simulation: each row becomes a [`Scenario`], each seed a checked history,
//! and the row holds or not by what the checkers found.

use std::time::Instant;

use splitbrain_history::Verdict;
use splitbrain_store::claims::{Claim, Expect};
use splitbrain_store::config::ClusterConfig;

use super::{check, run, Scenario, SimFault, SimRun, SimStats};
use crate::run_store::RunResults;

/// The scenario a row describes.
pub fn scenario(claim: &Claim) -> Result<Scenario, String> {
    // A table header in the row's settings would swallow `nodes`: it goes first.
    let cluster: ClusterConfig = toml::from_str(&format!("nodes = []\n{}", claim.cluster))
        .map_err(|e| format!("claim {}: cluster settings: {e}", claim.id))?;
    let workload = claim
        .workload
        .parse()
        .map_err(|e| format!("claim {}: {e}", claim.id))?;
    let mut s = Scenario::new(cluster, claim.nodes, workload);
    s.faults = claim
        .faults
        .iter()
        .map(|f| SimFault::parse_step(f))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("claim {}: {e}", claim.id))?;
    s.final_reads_per_node = claim.reads_every_replica;
    Ok(s)
}

/// One seed of a row.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SeedResult {
    pub seed: u64,
    pub verdict: Verdict,
    pub anomalies: Vec<String>,
    pub stats: SimStats,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ClaimResult {
    pub id: &'static str,
    pub holds: bool,
    /// The seed that shows it: the first with the expected anomaly, or the
    /// first that broke a `Never` row.
    pub witness: Option<u64>,
    pub seeds: Vec<SeedResult>,
    pub ops: u64,
    pub elapsed_s: f64,
    /// Why the row could not run, when it could not.
    pub problem: Option<String>,
}

impl ClaimResult {
    /// Every anomaly type any seed showed, once each.
    pub fn anomalies_seen(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .seeds
            .iter()
            .flat_map(|s| s.anomalies.iter().cloned())
            .collect();
        all.sort();
        all.dedup();
        all
    }
}

/// Whether one seed's results decide the row: the expected anomaly shown,
/// or a `Never` row broken.
fn decides(expect: Expect, r: &SeedResult) -> bool {
    match expect {
        Expect::Appears(a) => r.anomalies.iter().any(|x| x == a),
        Expect::Never => r.verdict != Verdict::Valid,
    }
}

/// Runs `claim` for `seeds`, calling `keep` with each seed's run and results
/// (to store histories); with `stop_early`, stops at the first seed that
/// decides the row.
pub fn run_claim(
    claim: &'static Claim,
    seeds: impl IntoIterator<Item = u64>,
    stop_early: bool,
    mut keep: impl FnMut(&SimRun, &RunResults, bool),
) -> ClaimResult {
    let started = Instant::now();
    let mut result = ClaimResult {
        id: claim.id,
        holds: false,
        witness: None,
        seeds: Vec::new(),
        ops: 0,
        elapsed_s: 0.0,
        problem: None,
    };
    let s = match scenario(claim) {
        Ok(s) => s,
        Err(e) => {
            result.problem = Some(e);
            return result;
        }
    };
    for seed in seeds {
        let sim_run = match run(&s, seed) {
            Ok(r) => r,
            Err(e) => {
                result.problem = Some(e.to_string());
                return result;
            }
        };
        let checked = check(&s, &sim_run);
        let mut anomalies: Vec<String> = checked
            .checkers
            .iter()
            .flat_map(|c| c.anomaly_types.iter().cloned())
            .collect();
        anomalies.sort();
        anomalies.dedup();
        let r = SeedResult {
            seed,
            verdict: checked.verdict,
            anomalies,
            stats: sim_run.stats.clone(),
        };
        result.ops += r.stats.client_ops;
        let decided = decides(claim.expect, &r);
        keep(&sim_run, &checked, decided);
        if decided && result.witness.is_none() {
            result.witness = Some(seed);
        }
        result.seeds.push(r);
        if decided && stop_early {
            break;
        }
    }
    result.holds = match claim.expect {
        Expect::Appears(_) => result.witness.is_some(),
        Expect::Never => result.witness.is_none() && !result.seeds.is_empty(),
    };
    result.elapsed_s = started.elapsed().as_secs_f64();
    result
}
