//! `splitbrain sim`: one scenario over many seeds in simulation, or one seed
//! replayed; `splitbrain matrix`: every row of the claims table, in
//! simulation and (`--real`) on real processes, on one page.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use splitbrain::run_store::{self, RunResults};
use splitbrain::simulation::claims::{run_claim, scenario, ClaimResult};
use splitbrain::simulation::page::{self, RealRun};
use splitbrain::simulation::{check, history_jsonl, run, Scenario, SimFault};
use splitbrain_history::Verdict;
use splitbrain_store::claims::{self, Claim, Expect};

use super::store_mode::StoreModeArgs;
use super::Failure;
use crate::exit;

#[derive(Args)]
pub struct SimArgs {
    #[command(flatten)]
    mode: StoreModeArgs,
    /// Run this row of the store's claims table (`splitbrain matrix --list`)
    /// instead of the scenario the other flags describe.
    #[arg(long)]
    claim: Option<String>,
    /// Any workload but bank: register, list-append, rw-register, set,
    /// counter, session, crdt-counter, or-set, siblings, ...
    #[arg(long, default_value = "register")]
    workload: String,
    /// none, or fault steps separated by commas, one drawn per fault window:
    /// partition, partition-leader, partition-majority, kill, kill-leader,
    /// kill-past-the-heal, clock, clock-leader, loss; `a+b` applies both at once.
    #[arg(long, default_value = "none")]
    faults: String,
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    #[arg(long, default_value_t = 5)]
    concurrency: usize,
    /// Client ops per seed, before the heal and the final reads.
    #[arg(long, default_value_t = 2000)]
    ops: u64,
    /// Leaderless and multi-leader: bound (each client process to one node)
    /// or per-request; the same as `--store client_routing=...` [default: bound].
    #[arg(long)]
    coordinators: Option<String>,
    /// Seeds to run: N, or A..B (both included).
    #[arg(long, default_value = "1..100")]
    seeds: String,
    /// Run just this seed and write its history (a replay of a stored seed).
    #[arg(long)]
    seed: Option<u64>,
    /// Where histories go: OUT/NAME/seed-N.jsonl.
    #[arg(long, default_value = "store/sim")]
    out: PathBuf,
}

fn parse_seeds(text: &str) -> Result<std::ops::RangeInclusive<u64>, String> {
    let bad = || format!("--seeds {text}: expected N or A..B with A <= B");
    match text.split_once("..") {
        Some((a, b)) => {
            let (a, b): (u64, u64) = (
                a.trim().parse().map_err(|_| bad())?,
                b.trim()
                    .trim_start_matches('=')
                    .parse()
                    .map_err(|_| bad())?,
            );
            if a > b {
                return Err(bad());
            }
            Ok(a..=b)
        }
        None => {
            let n: u64 = text.trim().parse().map_err(|_| bad())?;
            Ok(n..=n)
        }
    }
}

fn sim_scenario(args: &SimArgs) -> Result<(String, Scenario, Option<&'static Claim>), String> {
    if let Some(id) = &args.claim {
        let claim = claims::find(id).ok_or_else(|| {
            let ids: Vec<&str> = claims::CLAIMS.iter().map(|c| c.id).collect();
            format!("--claim {id}: no such row (rows: {})", ids.join(", "))
        })?;
        return Ok((claim.id.to_string(), scenario(claim)?, Some(claim)));
    }
    let workload = args
        .workload
        .parse()
        .map_err(|e| format!("--workload: {e}"))?;
    let cfg = args.mode.config_for(args.nodes, workload)?;
    if args.nodes == 0 || args.concurrency == 0 || args.ops == 0 {
        return Err("--nodes, --concurrency and --ops must be at least 1".into());
    }
    let mut s = Scenario::new(cfg, args.nodes, workload);
    s.concurrency = args.concurrency;
    s.ops = args.ops;
    if let Some(routing) = &args.coordinators {
        s.cluster.client_routing = routing.parse().map_err(|e| format!("--coordinators {e}"))?;
    }
    if args.faults != "none" {
        s.faults = args
            .faults
            .split(',')
            .map(|f| SimFault::parse_step(f.trim()).map_err(|e| format!("--faults: {e}")))
            .collect::<Result<_, _>>()?;
    }
    let name = format!("{}-{}", args.mode.replication, args.workload);
    run_store::check_test_name(&name)?;
    Ok((name, s, None))
}

fn write_history(
    dir: &Path,
    seed: u64,
    ops: &[splitbrain_history::Op],
) -> Result<PathBuf, Failure> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::bad_input(format!("cannot create {}: {e}", dir.display())))?;
    let path = dir.join(format!("seed-{seed}.jsonl"));
    std::fs::write(&path, history_jsonl(ops))
        .map_err(|e| Failure::bad_input(format!("cannot write {}: {e}", path.display())))?;
    Ok(path)
}

fn verdict_code(v: Verdict) -> u8 {
    match v {
        Verdict::Valid => exit::VALID,
        Verdict::Invalid => exit::INVALID,
        Verdict::Unknown => exit::UNKNOWN,
    }
}

pub fn sim(args: SimArgs) -> Result<u8, Failure> {
    let (name, s, claim) = sim_scenario(&args).map_err(Failure::bad_input)?;
    let dir = args.out.join(&name);
    if let Some(seed) = args.seed {
        let r = run(&s, seed).map_err(|e| Failure::bad_input(e.to_string()))?;
        let checked = check(&s, &r);
        let path = write_history(&dir, seed, &r.history)?;
        say!(
            "seed {seed}: {} ({} client ops, {} ms simulated) anomalies {:?}; history {}",
            checked.verdict.as_str(),
            r.stats.client_ops,
            r.stats.simulated_ms,
            checked.anomaly_types(),
            path.display()
        );
        for c in checked
            .checkers
            .iter()
            .filter(|c| c.verdict != Verdict::Valid)
        {
            say!(
                "  {}: {}",
                c.checker,
                c.explanation.lines().next().unwrap_or("")
            );
        }
        return Ok(verdict_code(checked.verdict));
    }
    let seeds = parse_seeds(&args.seeds).map_err(Failure::bad_input)?;
    let started = Instant::now();
    let (mut ops, mut runs) = (0u64, 0u64);
    let mut verdicts: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut anomalies: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut worst = Verdict::Valid;
    let mut stored = Vec::new();
    for seed in seeds {
        let r = run(&s, seed).map_err(|e| Failure::bad_input(e.to_string()))?;
        let checked = check(&s, &r);
        ops += r.stats.client_ops;
        runs += 1;
        *verdicts.entry(checked.verdict.as_str()).or_default() += 1;
        for a in checked.anomaly_types() {
            anomalies.entry(a).or_insert((0, seed)).0 += 1;
        }
        worst = worst.worst(checked.verdict);
        if checked.verdict != Verdict::Valid {
            stored.push(write_history(&dir, seed, &r.history)?);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    say!(
        "{name}: {runs} seeds, {ops} client ops in {elapsed:.1} s ({:.0} ops/s simulated, recorded and checked)",
        ops as f64 / elapsed.max(1e-9)
    );
    say!(
        "verdicts: {}",
        verdicts
            .iter()
            .map(|(v, n)| format!("{v} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (a, (n, first)) in &anomalies {
        say!("  {a}: {n} of {runs} seeds (first: seed {first})");
    }
    if let Some(first) = stored.first() {
        say!(
            "{} failing seeds' histories in {} (first: {}); replay one with the same flags and --seed N",
            stored.len(),
            dir.display(),
            first.display()
        );
    }
    match claim {
        Some(c) => {
            let holds = match c.expect {
                Expect::Appears(a) => anomalies.contains_key(a),
                Expect::Never => worst == Verdict::Valid,
            };
            say!(
                "claim {}: {} ({})",
                c.id,
                if holds { "holds" } else { "DOES NOT HOLD" },
                expectation(c.expect)
            );
            Ok(if holds { exit::VALID } else { exit::INVALID })
        }
        None => Ok(verdict_code(worst)),
    }
}

fn expectation(e: Expect) -> String {
    match e {
        Expect::Appears(a) => format!("{a} must appear in some seed"),
        Expect::Never => "no anomaly in any seed".into(),
    }
}

#[derive(Args)]
pub struct MatrixArgs {
    /// Seeds per row in simulation.
    #[arg(long, default_value_t = 50)]
    seeds: u64,
    /// Also run every row on real processes (store nodes on this machine;
    /// rows with packet loss in network namespaces, as root) for --real-seeds seeds.
    #[arg(long)]
    real: bool,
    #[arg(long, default_value_t = 2)]
    real_seeds: u64,
    /// Seconds of workload per real run.
    #[arg(long, default_value_t = 15.0)]
    real_time_limit: f64,
    /// Only the rows whose id contains this.
    #[arg(long)]
    only: Option<String>,
    /// List the rows and stop.
    #[arg(long)]
    list: bool,
    /// Where the page (matrix.html), its data and the seeds' histories go.
    #[arg(long, default_value = "store/matrix")]
    out: PathBuf,
}

pub fn matrix(args: MatrixArgs) -> Result<u8, Failure> {
    let rows: Vec<&'static Claim> = claims::CLAIMS
        .iter()
        .filter(|c| args.only.as_ref().is_none_or(|o| c.id.contains(o.as_str())))
        .collect();
    if args.list {
        for c in &rows {
            say!("{:<64} {}", c.id, expectation(c.expect));
        }
        return Ok(exit::VALID);
    }
    if rows.is_empty() {
        return Err(Failure::bad_input(
            "--only matches no row of the claims table",
        ));
    }
    if args.seeds == 0 || (args.real && args.real_seeds == 0) {
        return Err(Failure::bad_input(
            "--seeds and --real-seeds must be at least 1",
        ));
    }
    let seeds_dir = args.out.join("seeds");
    let started = Instant::now();
    let mut results: Vec<(&'static Claim, ClaimResult, Vec<RealRun>)> = Vec::new();
    for claim in rows {
        let mut write_error = None;
        let r = run_claim(claim, 1..=args.seeds, false, |sim_run, _, decided| {
            // The seeds that decide a row are kept, so the page links to them.
            if decided && write_error.is_none() {
                if let Err(e) =
                    write_history(&seeds_dir.join(claim.id), sim_run.seed, &sim_run.history)
                {
                    write_error = Some(e);
                }
            }
        });
        if let Some(e) = write_error {
            return Err(e);
        }
        say!(
            "{:<64} {} ({} seeds, {} ops, {:.1} s)",
            claim.id,
            if r.holds { "holds" } else { "DOES NOT HOLD" },
            r.seeds.len(),
            r.ops,
            r.elapsed_s
        );
        let real = if args.real {
            real_runs(claim, &args)?
        } else {
            Vec::new()
        };
        results.push((claim, r, real));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let html = page::render(&results, elapsed, &args.out);
    std::fs::create_dir_all(&args.out)
        .map_err(|e| Failure::bad_input(format!("cannot create {}: {e}", args.out.display())))?;
    let path = args.out.join("matrix.html");
    std::fs::write(&path, html)
        .map_err(|e| Failure::bad_input(format!("cannot write {}: {e}", path.display())))?;
    let data: Vec<_> = results.iter().map(|(_, r, real)| (r, real)).collect();
    run_store::write_json(&args.out.join("matrix.json"), &data)
        .map_err(|e| Failure::bad_input(format!("cannot write matrix.json: {e}")))?;
    let broken = results
        .iter()
        .filter(|(_, r, real)| !r.holds || real.iter().any(|x| x.contradicts))
        .count();
    say!(
        "{} rows in {elapsed:.1} s; {broken} do not hold; page: {}",
        results.len(),
        path.display()
    );
    Ok(if broken == 0 {
        exit::VALID
    } else {
        exit::INVALID
    })
}

/// The `splitbrain test` flags that run a row's scenario on real processes;
/// none for a row whose faults only the simulator has.
fn test_flags(claim: &Claim) -> Result<Option<Vec<String>>, String> {
    let table: toml::Table = toml::from_str(claim.cluster).map_err(|e| e.to_string())?;
    // Packet loss needs links of their own: network namespaces.
    let env = if claim.faults.iter().any(|f| f.contains("loss")) {
        "netns"
    } else {
        "local"
    };
    let mut flags = vec!["--db".into(), "refstore".into(), "--env".into(), env.into()];
    for (key, value) in &table {
        match (key.as_str(), value) {
            ("mode", toml::Value::String(m)) => {
                flags.extend(["--replication".into(), m.clone()]);
            }
            ("sharding", toml::Value::Table(t)) => {
                // The section exists once --sharding names the scheme.
                let scheme = t.get("scheme").and_then(|v| v.as_str()).unwrap_or("hash");
                flags.extend(["--sharding".into(), scheme.to_string()]);
                for (k, v) in t.iter().filter(|(k, _)| *k != "scheme") {
                    let v = match v {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    flags.extend(["--store".into(), format!("sharding.{k}={v}")]);
                }
            }
            (section, toml::Value::Table(t)) => {
                for (k, v) in t {
                    let v = match v {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    flags.extend(["--store".into(), format!("{section}.{k}={v}")]);
                }
            }
            (k, v) => flags.extend(["--store".into(), format!("{k}={v}")]),
        }
    }
    let mut kinds: Vec<&str> = Vec::new();
    let mut partitions: Vec<&str> = Vec::new();
    let mut targets: Vec<&str> = Vec::new();
    for step in claim.faults {
        for f in SimFault::parse_step(step)? {
            let (kind, shape, target) = match f {
                SimFault::Partition => ("partition", Some("one"), None),
                SimFault::PartitionLeader => ("partition", Some("primaries"), None),
                SimFault::PartitionMajority => ("partition", Some("majority"), None),
                SimFault::Kill => ("kill", None, Some("one")),
                SimFault::KillPastTheHeal => return Ok(None),
                SimFault::KillLeader => ("kill", None, Some("primaries")),
                SimFault::Clock | SimFault::ClockLeader => ("clock", None, None),
                SimFault::Loss => ("loss", None, None),
                SimFault::Membership => ("membership", None, Some("one")),
                SimFault::MembershipLeader => ("membership", None, Some("primaries")),
                SimFault::Rebalance => ("rebalance", None, None),
            };
            for (list, item) in [
                (&mut kinds, Some(kind)),
                (&mut partitions, shape),
                (&mut targets, target),
            ] {
                if let Some(item) = item {
                    if !list.contains(&item) {
                        list.push(item);
                    }
                }
            }
        }
    }
    flags.extend([
        "--workload".into(),
        claim.workload.into(),
        "--nodes".into(),
        claim.nodes.to_string(),
        "--nemesis".into(),
        if kinds.is_empty() {
            "none".into()
        } else {
            kinds.join(",")
        },
    ]);
    if !partitions.is_empty() {
        flags.extend(["--partitions".into(), partitions.join(",")]);
    }
    if !targets.is_empty() {
        flags.extend(["--nemesis-targets".into(), targets.join(",")]);
    }
    Ok(Some(flags))
}

/// Runs a row with `splitbrain test` on store nodes on this machine
/// (processes on loopback, or in namespaces for packet loss), one run per seed.
fn real_runs(claim: &'static Claim, args: &MatrixArgs) -> Result<Vec<RealRun>, Failure> {
    let Some(flags) = test_flags(claim).map_err(Failure::bad_input)? else {
        say!("  real runs: none, a fault of this row outlasts the heal (simulation only)");
        return Ok(Vec::new());
    };
    let exe = std::env::current_exe()
        .map_err(|e| Failure::bad_input(format!("cannot find this program: {e}")))?;
    let store = args.out.join("real");
    let mut runs = Vec::new();
    for seed in 1..=args.real_seeds {
        let name = format!("{}-{seed}", claim.id);
        let status = std::process::Command::new(&exe)
            .arg("test")
            .args(&flags)
            .args(["--time-limit", &args.real_time_limit.to_string()])
            .args(["--nemesis-interval", "3"])
            .args(["--seed", &seed.to_string()])
            .args(["--name", &name])
            .arg("--store-dir")
            .arg(&store)
            .stdout(std::process::Stdio::null())
            .status()
            .map_err(|e| Failure::bad_input(format!("cannot run {}: {e}", exe.display())))?;
        let dir = store.join(&name).join("latest");
        let results: Option<RunResults> = run_store::read_json(&dir.join("results.json")).ok();
        let anomalies = results
            .as_ref()
            .map(|r| r.anomaly_types())
            .unwrap_or_default();
        let verdict = results.as_ref().map(|r| r.verdict);
        let shows = match claim.expect {
            Expect::Appears(a) => anomalies.iter().any(|x| x == a),
            Expect::Never => verdict != Some(Verdict::Valid),
        };
        say!(
            "  real seed {seed}: {} anomalies {anomalies:?} (exit {})",
            verdict.map_or("no result", Verdict::as_str),
            status.code().unwrap_or(-1)
        );
        runs.push(RealRun {
            seed,
            verdict,
            anomalies,
            report: std::fs::canonicalize(dir.join("report.html")).ok(),
            // A "never" row broken on real processes contradicts the
            // textbook; a "must appear" row may need more seeds than a few.
            contradicts: matches!(claim.expect, Expect::Never) && shows,
            shows,
        });
    }
    Ok(runs)
}
