//! Every row of the store's claims table, in simulation: an anomaly the
//! textbook says appears must appear in one of the row's seeds, and a row
//! that promises none must show none in any.

use splitbrain::simulation::claims::run_claim;
use splitbrain_store::claims::CLAIMS;

#[test]
fn every_claim_holds_in_simulation() {
    let mut broken = Vec::new();
    for claim in CLAIMS {
        let r = run_claim(claim, 1..=claim.test_seeds, true, |_, _, _| {});
        eprintln!(
            "{:<62} {:<5} seeds {:>2} ops {:>6} witness {:?} anomalies {:?} {:.1} s{}",
            claim.id,
            if r.holds { "holds" } else { "BROKEN" },
            r.seeds.len(),
            r.ops,
            r.witness,
            r.anomalies_seen(),
            r.elapsed_s,
            r.problem
                .as_deref()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default()
        );
        if !r.holds {
            broken.push(claim.id);
        }
    }
    assert!(broken.is_empty(), "claims that do not hold: {broken:?}");
}

#[test]
fn a_seed_replays_byte_for_byte_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let run = |out: &str| {
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_splitbrain"))
            .args([
                "sim",
                "--claim",
                "no-leases-deposed-leader-serves-stale-reads",
            ])
            .args(["--seed", "3", "--out"])
            .arg(dir.path().join(out))
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(matches!(status.code(), Some(0 | 1)), "{status:?}");
        std::fs::read(
            dir.path()
                .join(out)
                .join("no-leases-deposed-leader-serves-stale-reads/seed-3.jsonl"),
        )
        .unwrap()
    };
    let (a, b) = (run("a"), run("b"));
    assert!(a.len() > 10_000);
    assert_eq!(a, b);
}

#[test]
fn other_seeds_give_other_histories() {
    use splitbrain::simulation::{history_jsonl, run};
    let claim =
        splitbrain_store::claims::find("leaderless-r-plus-w-at-most-n-serves-stale-reads").unwrap();
    let s = splitbrain::simulation::claims::scenario(claim).unwrap();
    let a = history_jsonl(&run(&s, 1).unwrap().history);
    assert_eq!(a, history_jsonl(&run(&s, 1).unwrap().history));
    assert_ne!(a, history_jsonl(&run(&s, 2).unwrap().history));
}

/// Regression: single-leader runs with `read_from = followers` sent every
/// read to the leader (the requests did not say where reads may go), so
/// follower reads were never stale on real processes.
#[test]
fn follower_reads_are_sent_to_followers() {
    let mut cfg: splitbrain_store::ClusterConfig = toml::from_str("nodes = []").unwrap();
    cfg.single_leader.read_from = splitbrain_store::ReadFrom::Followers;
    assert_eq!(
        splitbrain::dbs::refstore_client::request_options(&cfg).read_from,
        Some(splitbrain_store::ReadFrom::Followers)
    );
}
