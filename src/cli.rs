//! Command-line parsing and the offline subcommands.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use splitbrain_history::{
    Budget, CheckError, CheckOptions, Format, History, HistoryError, OpWriter, Value, Verdict,
};

/// `println!` that cannot panic: a reader that went away (`| head`) must not
/// turn a verdict into an internal error, nor stop a run before it heals.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

use crate::exit;

mod simulate;
mod store_mode;
use splitbrain::env::docker::DockerError;
use splitbrain::error::RunError;
use splitbrain::{controller, registry, report, run_store};
use splitbrain_workloads::{self as workloads, WorkloadKind, WorkloadOptions};

#[derive(Parser)]
#[command(
    name = "splitbrain",
    version,
    about = "A Jepsen-style consistency testing harness"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a stored history (JSON Lines, Jepsen EDN or Jepsen log lines).
    Check(CheckArgs),
    /// Convert a history between formats (the output format follows OUT's extension or --to).
    Convert(ConvertArgs),
    /// Re-check a stored run with the current checkers (rewrites results.json and the report).
    Analyze(RunDirArgs),
    /// (Re)build a stored run's report.html.
    Report(RunDirArgs),
    /// Serve an index of stored runs and their reports.
    Serve(ServeArgs),
    /// Build the Docker images the docker environment runs (no registry needed).
    Image(ImageArgs),
    /// Run a test: start a cluster, drive the workload and the nemesis, check, store.
    Test(Box<TestArgs>),
    /// Run one node of the reference store.
    StoreNode(StoreNodeArgs),
    /// Write a simulated transactional history (an in-memory database at a chosen isolation).
    GenHistory(GenHistoryArgs),
    /// Run a scenario of the reference store in deterministic simulation over
    /// many seeds (or replay one seed), checked by the real checkers.
    Sim(Box<simulate::SimArgs>),
    /// Run every row of the store's claims table and write matrix.html.
    Matrix(simulate::MatrixArgs),
    /// Remove what runs whose harness is gone left behind: network
    /// namespaces and Docker containers and networks.
    Clean,
}

#[derive(Args)]
struct StoreNodeArgs {
    /// The cluster file.
    #[arg(long)]
    config: PathBuf,
    /// This node's id in the cluster file.
    #[arg(long)]
    id: String,
}

#[derive(Args)]
struct GenHistoryArgs {
    /// list-append or rw-register.
    #[arg(long, default_value = "list-append")]
    workload: String,
    /// strict-serializable, serializable, si, read-committed, read-uncommitted,
    /// or a deliberately broken mode: lost-update, aborted-read, intermediate-read.
    #[arg(long, default_value = "strict-serializable")]
    isolation: String,
    #[arg(long, default_value_t = 1000)]
    txns: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 10)]
    processes: usize,
    /// Keys in use at once.
    #[arg(long, default_value_t = 10)]
    keys: usize,
    /// How txns pick among the keys in use: exponential (each key half as
    /// likely as the one before, as Elle's generator) or uniform.
    #[arg(long, default_value = "exponential")]
    key_dist: String,
    /// Writes a key takes before a fresh key replaces it.
    #[arg(long, default_value_t = 32)]
    max_writes_per_key: usize,
    /// Micro-ops per txn, at least and at most.
    #[arg(long, default_value_t = 1)]
    min_txn_length: usize,
    #[arg(long, default_value_t = 4)]
    max_txn_length: usize,
    /// The share of txns whose client crashes (recorded as info; half commit).
    #[arg(long, default_value_t = 0.02)]
    info_rate: f64,
    /// Where to write the history (.jsonl or .edn).
    out: PathBuf,
}

#[derive(Args)]
struct TestArgs {
    /// The database: refstore (the reference store), or in --env docker also etcd, redis, postgres.
    #[arg(long, default_value = "refstore")]
    db: String,
    /// Where the nodes run: local (child processes on 127.0.0.1), netns
    /// (one network namespace per node; root) or docker (containers).
    #[arg(long, default_value = "local")]
    env: String,
    /// Transaction isolation for databases that have levels (postgres:
    /// read-committed, repeatable-read, serializable).
    #[arg(long)]
    isolation: Option<String>,
    /// The consistency model the transactional checkers hold the history to
    /// (default: strict-serializable, or what --isolation promises).
    #[arg(long)]
    consistency_model: Option<String>,
    /// docker: run this image instead of building one.
    #[arg(long)]
    image: Option<String>,
    #[command(flatten)]
    mode: store_mode::StoreModeArgs,
    /// register, list-append, rw-register, set, counter, bank, session
    /// (default: register; set for redis; list-append for postgres).
    #[arg(long)]
    workload: Option<String>,
    /// none, or faults separated by commas: partition, kill, pause, clock, loss, membership.
    #[arg(long, default_value = "none")]
    nemesis: String,
    /// Seconds between a fault's start and stop, and between faults.
    #[arg(long, default_value_t = 5.0)]
    nemesis_interval: f64,
    /// Partition shapes to draw from: one, primaries, majority, majorities-ring, bridge, random-halves
    /// (default: primaries,majority for leader-based databases (single-leader refstore, etcd,
    /// redis); one,majority,majorities-ring,bridge otherwise).
    #[arg(long, value_delimiter = ',')]
    partitions: Option<Vec<String>>,
    /// Whom kill and pause hit, drawn from: one, minority, majority, primaries, all
    /// (default: primaries,one for leader-based databases; one,minority otherwise).
    #[arg(long, value_delimiter = ',')]
    nemesis_targets: Option<Vec<String>>,
    /// Largest clock bump, in ms, either direction.
    #[arg(long, default_value_t = 60_000)]
    max_clock_skew_ms: i64,
    /// Fraction of packets dropped between nodes by the loss fault.
    #[arg(long, default_value_t = 0.2)]
    loss: f64,
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// Seconds of workload (the heal and final reads come after).
    #[arg(long, default_value_t = 60.0)]
    time_limit: f64,
    /// Client ops per second across all clients (0: as fast as they go).
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// The seed of everything random; printed, so a run can be replayed.
    #[arg(long)]
    seed: Option<u64>,
    /// Run this many tests (seed, seed+1, ...); the worst verdict wins.
    #[arg(long, default_value_t = 1)]
    test_count: u32,
    /// A client op still running after this many ms is recorded as info.
    #[arg(long, default_value_t = 1000)]
    op_timeout_ms: u64,
    /// Seconds of quiet after the heal, before final reads.
    #[arg(long, default_value_t = 2.0)]
    quiesce: f64,
    #[arg(long, default_value = "store")]
    store_dir: PathBuf,
    /// The test's name (default: built from db, replication and workload).
    #[arg(long)]
    name: Option<String>,
    /// Leave the database running after the test.
    #[arg(long)]
    leave_db_running: bool,
}

#[derive(Args)]
struct ImageArgs {
    #[command(subcommand)]
    action: ImageAction,
}

#[derive(Subcommand)]
enum ImageAction {
    /// Make Debian root filesystems with debootstrap and import them; images
    /// already built from the same recipe are reused.
    Build {
        /// Which images (default: all): base, etcd, redis, postgres.
        names: Vec<String>,
        /// Rebuild even when the engine has the image.
        #[arg(long)]
        force: bool,
        /// Where to build root filesystems.
        #[arg(long, default_value = "/var/tmp/splitbrain-images")]
        work_dir: PathBuf,
        /// The Debian mirror to fetch packages from (default: the first
        /// Debian archive in this machine's apt sources).
        #[arg(long, value_name = "URL")]
        mirror: Option<String>,
    },
}

#[derive(Args)]
struct RunDirArgs {
    /// A run directory, e.g. store/register/20261122T034501.123Z (or store/latest).
    run_dir: PathBuf,
    /// Print one machine-readable JSON object instead of text (analyze).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ServeArgs {
    /// The store of runs.
    #[arg(default_value = "store")]
    store_dir: PathBuf,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: String,
}

#[derive(Args)]
struct CheckArgs {
    /// The checker to run (default: guessed from the history's functions).
    #[arg(long)]
    checker: Option<String>,
    /// The model, for the linearizability checker.
    #[arg(long)]
    model: Option<String>,
    /// The consistency model, for transactional checkers.
    #[arg(long = "consistency-model")]
    consistency_model: Option<String>,
    /// The initial value of registers (EDN, e.g. 0 or nil).
    #[arg(long)]
    initial: Option<String>,
    /// Stale reads are violations, not just measurements (set-full).
    #[arg(long)]
    linearizable: bool,
    /// rw-register: a txn's write follows the version it read of the same
    /// key (Elle's :wfr-keys?). Default: true for models at or above read
    /// committed, where the other order would be a G1c cycle; false below.
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    wfr_keys: Option<bool>,
    /// rw-register: trust that each key is sequentially consistent, so a
    /// process's later txn sees no older version (Elle's :sequential-keys?).
    #[arg(long)]
    sequential_keys: bool,
    /// rw-register: trust that each key is linearizable, so versions follow
    /// real time across processes (Elle's :linearizable-keys?).
    #[arg(long)]
    linearizable_keys: bool,
    /// Checker-specific settings, e.g. --param total=100.
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// The input format.
    #[arg(long, default_value = "auto")]
    format: String,
    /// Print one machine-readable JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Give up with `unknown` after this many seconds.
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
    /// Memory the checker may use for its search, in MB.
    #[arg(long, value_name = "MB", default_value_t = 2048)]
    memory_limit_mb: usize,
    /// Write each transactional cycle as a DOT file into this directory.
    #[arg(long, value_name = "DIR")]
    dot: Option<PathBuf>,
    /// Linearizability: shrink a failure to a minimal set of ops that still
    /// proves it, the key's other writes left indeterminate.
    #[arg(long)]
    shrink: bool,
    /// The history file.
    file: PathBuf,
}

#[derive(Args)]
struct ConvertArgs {
    /// The input format.
    #[arg(long, default_value = "auto")]
    from: String,
    /// The output format (default: from OUT's extension).
    #[arg(long)]
    to: Option<String>,
    /// The history to read.
    input: PathBuf,
    /// Where to write it (.jsonl, .edn or .log).
    output: PathBuf,
}

/// An error with the exit code it deserves.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn bad_input(message: impl Into<String>) -> Self {
        Failure {
            code: exit::BAD_INPUT,
            message: message.into(),
        }
    }
}

impl From<HistoryError> for Failure {
    fn from(e: HistoryError) -> Self {
        Failure::bad_input(e.to_string())
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure {
            code: RunError::exit_code_of(&e),
            message: format!("{e:#}"),
        }
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::BAD_INPUT
            } else {
                exit::VALID
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let outcome = match cli.command {
        Command::Check(args) => check(args),
        Command::Convert(args) => convert(args),
        Command::Clean => clean(),
        Command::Sim(args) => simulate::sim(*args),
        Command::Matrix(args) => simulate::matrix(args),
        Command::Analyze(args) => analyze(args),
        Command::Report(args) => report(args),
        Command::Serve(args) => serve(args),
        Command::Image(args) => image(args),
        Command::Test(args) => test(*args),
        Command::StoreNode(args) => store_node(args),
        Command::GenHistory(args) => gen_history(args),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("splitbrain: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn parse_format(s: &str) -> Result<Option<Format>, Failure> {
    if s == "auto" {
        return Ok(None);
    }
    s.parse::<Format>().map(Some).map_err(Failure::bad_input)
}

fn check(args: CheckArgs) -> Result<u8, Failure> {
    let format = parse_format(&args.format)?;
    let initial = args
        .initial
        .as_deref()
        .map(|s| {
            Value::from_edn(s)
                .map_err(|e| Failure::bad_input(format!("--initial '{s}': {}", e.problem)))
        })
        .transpose()?;
    let mut params = std::collections::BTreeMap::new();
    for p in &args.params {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| Failure::bad_input(format!("--param '{p}' is not KEY=VALUE")))?;
        params.insert(k.to_string(), v.to_string());
    }
    if let Some(wfr) = args.wfr_keys {
        params.insert("wfr-keys".into(), wfr.to_string());
    }
    if args.sequential_keys {
        params.insert("sequential-keys".into(), "true".into());
    }
    if args.linearizable_keys {
        params.insert("linearizable-keys".into(), "true".into());
    }
    if let Some(t) = args.timeout {
        if !(t > 0.0 && t.is_finite()) {
            return Err(Failure::bad_input(format!(
                "--timeout {t} must be a positive number of seconds"
            )));
        }
    }
    // Name problems before reading a possibly large file.
    if let Some(name) = &args.checker {
        if registry::find(name).is_none() {
            return Err(Failure::bad_input(format!(
                "unknown checker '{name}' (available: {})",
                registry::names()
            )));
        }
    }
    // The budget covers reading the file as well as checking it.
    let parse_start = Instant::now();
    let deadline = args
        .timeout
        .map(|t| parse_start + Duration::from_secs_f64(t));
    let out_of_time = |what: &str| {
        say!(
            "{}: unknown ({what} did not finish within --timeout {} s)",
            args.file.display(),
            args.timeout.unwrap_or_default()
        );
        Ok(exit::UNKNOWN)
    };
    let file = args.file.clone();
    let Some(history) = registry::within(deadline, move || History::read(&file, format)) else {
        return out_of_time("reading the history");
    };
    let history = std::sync::Arc::new(history?);
    let parse_ms = parse_start.elapsed().as_secs_f64() * 1000.0;
    let name = match &args.checker {
        Some(n) => n.clone(),
        None => registry::guess(&history)
            .ok_or_else(|| {
                Failure::bad_input(format!(
                    "{}: cannot guess a checker for this history; pass --checker",
                    args.file.display()
                ))
            })?
            .to_string(),
    };
    let entry = registry::find(&name).ok_or_else(|| {
        Failure::bad_input(format!(
            "unknown checker '{name}' (available: {})",
            registry::names()
        ))
    })?;
    let opts = CheckOptions {
        model: args.model.clone(),
        consistency_model: args.consistency_model.clone(),
        initial,
        linearizable: args.linearizable,
        params,
        budget: Budget {
            memory_bytes: args.memory_limit_mb.saturating_mul(1 << 20),
            deadline,
        },
    };
    if args.shrink && name != "linearizable" {
        return Err(Failure::bad_input(format!(
            "--shrink works with the linearizable checker, not {name}"
        )));
    }
    let shrink_opts = opts.clone();
    let start = Instant::now();
    let (h, run) = (history.clone(), entry.run);
    let Some(outcome) = registry::within(registry::give_up_at(deadline), move || run(&h, &opts))
    else {
        return out_of_time(&format!("the {name} checker"));
    };
    let report = outcome
        .map_err(|e| match e {
            CheckError::BadOp { position, problem } => {
                Failure::bad_input(history.error_at(position, problem).to_string())
            }
            CheckError::Unsupported(m) => Failure::bad_input(m),
        })?
        .nothing_checked_if_empty(&history);
    let elapsed_ms = start.elapsed().as_secs_f64() * 1000.0;
    let stats = history.stats();
    if let Some(dir) = &args.dot {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, dot) in splitbrain_elle::cycle_dots_from_json(&report.result) {
            std::fs::write(dir.join(&name), dot)
                .with_context(|| format!("writing {}", dir.join(&name).display()))?;
        }
    }
    let shrunk = if args.shrink && report.verdict == Verdict::Invalid {
        let h = history.clone();
        registry::within(registry::give_up_at(deadline), move || {
            splitbrain_linearizable::shrink(&h, &shrink_opts)
        })
        .and_then(|r| r.ok().flatten())
    } else {
        None
    };
    if args.json {
        let out = serde_json::json!({
            "file": args.file.display().to_string(),
            "checker": report.checker,
            "verdict": report.verdict,
            "anomalies": report.anomaly_types,
            "elapsed_ms": elapsed_ms,
            "parse_ms": parse_ms,
            "history": stats,
            "result": report.result,
            "shrunk": shrunk,
        });
        say!("{out}");
    } else {
        say!(
            "{}: {} ({} checker, {} ops, checked in {:.1} ms, parsed in {:.1} ms)",
            args.file.display(),
            report.verdict.as_str(),
            report.checker,
            stats.ops,
            elapsed_ms,
            parse_ms
        );
        if !report.explanation.is_empty() {
            say!("{}", report.explanation.trim_end());
        }
        if let Some(s) = &shrunk {
            say!("{}", describe_shrunk(&history, s));
        } else if args.shrink && report.verdict == Verdict::Invalid {
            say!("shrinking did not finish within the budget");
        }
    }
    Ok(report.verdict.exit_code() as u8)
}

fn describe_shrunk(h: &History, s: &splitbrain_linearizable::Shrunk) -> String {
    let key = s
        .key
        .as_ref()
        .map_or(String::new(), |k| format!(" of key {k}"));
    let mut out = format!(
        "shrunk to {} of {} ops{key} ({}; {} checks in {} ms); with the key's other writes indeterminate, these are not linearizable:",
        s.kept.len(),
        s.object_ops,
        if s.minimal { "dropping any one of them makes the rest linearizable" } else { "not shown minimal: some checks ran out of time" },
        s.checks,
        s.elapsed_ms
    );
    for &(inv, done) in &s.kept {
        let op = &h.ops[inv];
        let end = done.map(|d| &h.ops[d]);
        out += &format!(
            "\n  op {}: process {} {} {}",
            op.index, op.process, op.f, op.value
        );
        match end {
            Some(e) => out += &format!(" -> {} {} (op {})", e.kind.as_str(), e.value, e.index),
            None => out += " (never completed)",
        }
    }
    out
}

fn convert(args: ConvertArgs) -> Result<u8, Failure> {
    let from = parse_format(&args.from)?;
    let to = match &args.to {
        Some(t) => t.parse::<Format>().map_err(Failure::bad_input)?,
        None => Format::from_extension(&args.output).ok_or_else(|| {
            Failure::bad_input(format!(
                "{}: cannot tell the output format from the name; pass --to jsonl|edn|jepsen-log",
                args.output.display()
            ))
        })?,
    };
    if same_file(&args.input, &args.output) {
        return Err(Failure::bad_input("the output would overwrite the input"));
    }
    // Validate the whole input before creating the output, so a bad input leaves nothing behind.
    let history = History::read(&args.input, from)?;
    let tmp = args.output.with_extension("partial");
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut w = OpWriter::new(BufWriter::new(file), to);
    for op in &history.ops {
        w.write(op)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
    }
    w.flush()
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    w.into_inner()
        .into_inner()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .sync_all()
        .context("fsync")?;
    std::fs::rename(&tmp, &args.output)
        .with_context(|| format!("cannot move into {}", args.output.display()))?;
    let _ = writeln!(
        std::io::stderr(),
        "wrote {} ops to {}",
        history.len(),
        args.output.display()
    );
    Ok(exit::VALID)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn run_dir(path: &Path) -> Result<PathBuf, Failure> {
    let dir = path
        .canonicalize()
        .map_err(|e| Failure::bad_input(format!("{}: {e}", path.display())))?;
    if !dir.join(run_store::HISTORY_FILE).exists() {
        return Err(Failure::bad_input(format!(
            "{}: not a run directory (no {})",
            path.display(),
            run_store::HISTORY_FILE
        )));
    }
    Ok(dir)
}

fn analyze(args: RunDirArgs) -> Result<u8, Failure> {
    let dir = run_dir(&args.run_dir)?;
    let o = controller::TestOptions::read(&dir.join(run_store::TEST_FILE))
        .map_err(Failure::bad_input)?;
    let history = History::read(&dir.join(run_store::HISTORY_FILE), Some(Format::Jsonl))?;
    let mut results = controller::check_all_with(
        &history,
        &workloads::build(o.workload, &o.workload_options).checkers,
        None,
        o.consistency_model.as_deref(),
    );
    if let Some(p) = controller::failed_faults(&history) {
        results.verdict = results.verdict.worst(splitbrain_history::Verdict::Unknown);
        results.problem = Some(p);
    }
    run_store::write_json(&dir.join(run_store::RESULTS_FILE), &results)
        .context("writing results.json")?;
    let report = report::render_run(&dir)?;
    if args.json {
        say!(
            "{}",
            serde_json::json!({ "run": dir, "verdict": results.verdict, "anomalies": results.anomaly_types(), "report": report })
        );
    } else {
        say!(
            "{}: {} ({})",
            dir.display(),
            results.verdict.as_str(),
            report.display()
        );
        for c in &results.checkers {
            say!(
                "  {}: {}{}",
                c.checker,
                c.verdict.as_str(),
                if c.anomaly_types.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", c.anomaly_types.join(", "))
                }
            );
        }
    }
    Ok(results.verdict.exit_code() as u8)
}

fn report(args: RunDirArgs) -> Result<u8, Failure> {
    let dir = run_dir(&args.run_dir)?;
    let test = dir.join(run_store::TEST_FILE);
    if test.exists() {
        controller::TestOptions::read(&test).map_err(Failure::bad_input)?;
    }
    let path = report::render_run(&dir)?;
    say!("{}", path.display());
    Ok(exit::VALID)
}

fn serve(args: ServeArgs) -> Result<u8, Failure> {
    if !args.store_dir.is_dir() {
        return Err(Failure::bad_input(format!(
            "{}: no such store directory",
            args.store_dir.display()
        )));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind((args.bind.as_str(), args.port))
            .await
            .map_err(|e| {
                Failure::bad_input(format!("cannot listen on {}:{}: {e}", args.bind, args.port))
            })?;
        eprintln!(
            "serving {} on http://{}",
            args.store_dir.display(),
            listener.local_addr().map_err(anyhow::Error::from)?
        );
        splitbrain::serve::serve(args.store_dir.clone(), listener)
            .await
            .map_err(|e| Failure::from(anyhow::Error::from(e)))
    })?;
    Ok(exit::VALID)
}

fn image(args: ImageArgs) -> Result<u8, Failure> {
    let ImageAction::Build {
        names,
        force,
        work_dir,
        mirror,
    } = args.action;
    if let Some(m) = &mirror {
        splitbrain::env::docker::image::check_mirror(m)
            .map_err(|e| Failure::bad_input(e.to_string()))?;
    }
    // One image per database of the catalog, by its recipe's name.
    let catalog: Vec<&splitbrain::env::NodeImage> = splitbrain::dbs::catalog::DATABASES
        .iter()
        .filter(|d| d.envs.contains(&"docker"))
        .map(|d| d.image)
        .collect();
    let known: Vec<&str> = catalog.iter().map(|i| i.recipe).collect();
    let names = if names.is_empty() {
        known.iter().map(|n| n.to_string()).collect()
    } else {
        names
    };
    let mut recipes = Vec::new();
    for n in &names {
        let image = catalog.iter().find(|i| i.recipe == n).ok_or_else(|| {
            Failure::bad_input(format!(
                "unknown image '{n}' (expected {})",
                known.join(", ")
            ))
        })?;
        recipes.push(
            splitbrain::env::docker::image::Recipe::new(image.recipe, image.packages)
                .with_mirror(mirror.clone()),
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async {
        let docker = splitbrain::env::docker::connect()
            .await
            .map_err(|e| Failure::bad_input(e.to_string()))?;
        for r in &recipes {
            eprintln!("image {}: {}", r.name, r.tag());
            let (tag, built) = splitbrain::env::docker::image::ensure(&docker, r, &work_dir, force)
                .await
                .map_err(|e| match e {
                    // Nothing to build from: the operator's to give.
                    DockerError::NoMirror | DockerError::BadMirror(_) => {
                        Failure::bad_input(e.to_string())
                    }
                    e => Failure::from(anyhow::anyhow!("building {}: {e}", r.name)),
                })?;
            say!("{tag} {}", if built { "built" } else { "reused" });
        }
        Ok::<(), Failure>(())
    })?;
    Ok(exit::VALID)
}

fn store_node(args: StoreNodeArgs) -> Result<u8, Failure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(splitbrain_store::node::run_node(&args.config, &args.id))
        .map_err(|e| Failure::bad_input(format!("store node {}: {e}", args.id)))?;
    Ok(exit::VALID)
}

fn gen_history(args: GenHistoryArgs) -> Result<u8, Failure> {
    use splitbrain_elle::sim::{generate, Isolation, KeyDistribution, SimOptions, SimWorkload};
    let workload: SimWorkload = args
        .workload
        .parse()
        .map_err(|e| Failure::bad_input(format!("--workload: {e}")))?;
    let isolation: Isolation = args
        .isolation
        .parse()
        .map_err(|e| Failure::bad_input(format!("--isolation: {e}")))?;
    let to = Format::from_extension(&args.out).ok_or_else(|| {
        Failure::bad_input(format!(
            "{}: name the output .jsonl or .edn",
            args.out.display()
        ))
    })?;
    let key_distribution = match args.key_dist.as_str() {
        "exponential" => KeyDistribution::Exponential,
        "uniform" => KeyDistribution::Uniform,
        other => {
            return Err(Failure::bad_input(format!(
                "--key-dist {other}: expected exponential or uniform"
            )))
        }
    };
    if !(0.0..=1.0).contains(&args.info_rate) {
        return Err(Failure::bad_input(format!(
            "--info-rate {} must be between 0 and 1",
            args.info_rate
        )));
    }
    if args.min_txn_length == 0 || args.min_txn_length > args.max_txn_length {
        return Err(Failure::bad_input(format!(
            "--min-txn-length {} and --max-txn-length {}: need 1 <= min <= max",
            args.min_txn_length, args.max_txn_length
        )));
    }
    let opts = SimOptions {
        workload,
        isolation,
        txns: args.txns,
        seed: args.seed,
        processes: args.processes.max(1),
        keys: args.keys.max(1),
        min_ops: args.min_txn_length,
        max_ops: args.max_txn_length,
        max_writes_per_key: args.max_writes_per_key.max(1),
        key_distribution,
        info_rate: args.info_rate,
    };
    let ops = generate(&opts);
    let file = std::fs::File::create(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut w = OpWriter::new(BufWriter::new(file), to);
    for op in &ops {
        w.write(op)
            .with_context(|| format!("writing {}", args.out.display()))?;
    }
    w.flush().context("writing")?;
    eprintln!(
        "wrote {} ops ({} transactions, {} isolation, seed {}) to {}",
        ops.len(),
        args.txns,
        args.isolation,
        args.seed,
        args.out.display()
    );
    Ok(exit::VALID)
}

fn test(args: TestArgs) -> Result<u8, Failure> {
    use splitbrain::controller::{run_test, TestOptions};
    use splitbrain_nemesis::fault::{parse_faults, NemesisOptions};
    use splitbrain_store::config::ClusterConfig;

    let bad = |m: String| Failure::bad_input(m);
    let db = splitbrain::dbs::catalog::find_in(&args.db, &args.env).map_err(bad)?;
    if args.image.is_some() && args.env != "docker" {
        return Err(bad("--image is for --env docker".into()));
    }
    if db.isolation_levels.is_empty() && args.isolation.is_some() {
        return Err(bad(format!("--isolation is for databases with isolation levels; {} has none to choose (its transactions are shaped by its own options)", args.db)));
    }
    let workload_name = args
        .workload
        .clone()
        .unwrap_or_else(|| db.default_workload.name().to_string());
    let workload: WorkloadKind = workload_name.parse().map_err(bad)?;
    let faults = parse_faults(&args.nemesis).map_err(bad)?;
    // Faults aim at a leader by default where there is one; the other
    // shapes stay a flag away.
    let mode_has_leader = splitbrain_store::modes::MODES
        .iter()
        .find(|m| m.mode.name() == args.mode.replication)
        .is_some_and(|m| {
            toml::from_str::<ClusterConfig>("nodes = []").is_ok_and(|mut cfg| {
                cfg.mode = m.mode;
                (m.has_leader)(&cfg)
            })
        });
    let leader_based = db.leader_based(mode_has_leader);
    let default_list = |list: &str| list.split(',').map(str::to_string).collect::<Vec<_>>();
    let partition_names = args.partitions.clone().unwrap_or_else(|| {
        default_list(if leader_based {
            "primaries,majority"
        } else {
            // Without a leader there are no primaries to aim at.
            "one,majority,majorities-ring,bridge"
        })
    });
    let target_names = args.nemesis_targets.clone().unwrap_or_else(|| {
        default_list(if leader_based {
            "primaries,one"
        } else {
            "one,minority"
        })
    });
    let partitions = partition_names
        .iter()
        .map(|p| p.parse::<splitbrain_nemesis::PartitionShape>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("--partitions: {e}")))?;
    let targets = target_names
        .iter()
        .map(|t| t.parse::<splitbrain_nemesis::shape::TargetSpec>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("--nemesis-targets: {e}")))?;
    if partitions.is_empty() || targets.is_empty() {
        return Err(bad(
            "--partitions and --nemesis-targets need at least one entry".into(),
        ));
    }
    if !(0.0..=1.0).contains(&args.loss) || args.max_clock_skew_ms <= 0 {
        return Err(bad(
            "--loss is a fraction between 0 and 1; --max-clock-skew-ms must be positive".into(),
        ));
    }
    if args.nodes == 0 || args.concurrency == 0 {
        return Err(bad("--nodes and --concurrency must be at least 1".into()));
    }
    if !(args.time_limit > 0.0 && args.time_limit.is_finite())
        || args.rate < 0.0
        || args.nemesis_interval <= 0.0
        || args.quiesce < 0.0
    {
        return Err(bad("--time-limit and --nemesis-interval must be positive, --rate and --quiesce not negative".into()));
    }
    if args.db != "refstore" && !args.mode.is_default() {
        return Err(bad(format!(
            "--replication and its options describe the reference store; {} replicates its own way",
            args.db
        )));
    }
    let cfg = args.mode.config_for(args.nodes, workload).map_err(bad)?;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64 ^ u64::from(std::process::id()))
    });
    let name = args.name.clone().unwrap_or_else(|| match args.db.as_str() {
        "refstore" => format!("{}-{}-{}", args.db, args.mode.replication, workload_name),
        db => match &args.isolation {
            Some(i) => format!("{db}-{i}-{workload_name}"),
            None => format!("{db}-{workload_name}"),
        },
    });
    // Asking for an isolation level asks whether the database is serializable at it.
    let consistency_model = args
        .consistency_model
        .clone()
        .or_else(|| args.isolation.as_ref().map(|_| "serializable".to_string()));
    let op_timeout = std::time::Duration::from_millis(args.op_timeout_ms);
    // The run's seed reaches the store nodes too (their election jitter).
    let make_cluster = |seed: u64| -> Result<Box<dyn controller::Cluster>, Failure> {
        let cfg = ClusterConfig {
            seed,
            ..cfg.clone()
        };
        splitbrain::deploy::cluster(
            &splitbrain::dbs::DbOptions {
                db: args.db.clone(),
                env: args.env.clone(),
                nodes: args.nodes,
                workload,
                isolation: args.isolation.clone(),
                op_timeout,
                refstore: (args.db == "refstore").then(|| cfg.clone()),
            },
            &splitbrain::env::EnvOptions {
                image: args.image.clone(),
                harness_program: None,
                leave_running: args.leave_db_running,
            },
        )
        .map_err(bad)
    };
    // Refuse impossible combinations before anything starts.
    drop(make_cluster(seed)?);
    run_store::check_test_name(&name).map_err(bad)?;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let mut worst = splitbrain_history::Verdict::Valid;
    for i in 0..args.test_count.max(1) {
        let seed = seed.wrapping_add(i as u64);
        let command = if command.contains("--seed") {
            command.clone()
        } else {
            format!("{command} --seed {seed}")
        };
        let o = TestOptions {
            name: name.clone(),
            workload,
            workload_options: WorkloadOptions::default(),
            nemesis: NemesisOptions {
                faults: faults.clone(),
                interval_s: args.nemesis_interval,
                partitions: partitions.clone(),
                targets: targets.clone(),
                max_clock_skew_ms: args.max_clock_skew_ms,
                loss_fraction: args.loss,
                seed,
            },
            concurrency: args.concurrency,
            time_limit_s: args.time_limit,
            rate: args.rate,
            seed,
            op_timeout_ms: args.op_timeout_ms,
            quiesce_s: args.quiesce,
            store_dir: args.store_dir.clone(),
            leave_db_running: args.leave_db_running,
            consistency_model: consistency_model.clone(),
            extra: [
                ("db", args.db.clone()),
                ("env", args.env.clone()),
                ("nodes", args.nodes.to_string()),
            ]
            .into_iter()
            .chain(args.isolation.clone().map(|i| ("isolation", i)))
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            command,
            database: String::new(),
            version: String::new(),
        };
        eprintln!(
            "test {} (seed {seed}): {} with {} nodes, {} clients, {} s, nemesis {}",
            name, workload_name, args.nodes, args.concurrency, args.time_limit, args.nemesis
        );
        let mut cluster = make_cluster(seed)?;
        let mut progress = Progress::new();
        let report = rt
            .block_on(run_test(&o, cluster.as_mut(), |op| progress.on_op(op)))
            .map_err(Failure::from)?;
        progress.finish();
        let page = report::render_run(&report.dir)
            .map_err(|e| Failure::from(e.context("rendering the report")))?;
        say!(
            "{}: {} ({} ops)",
            report.dir.display(),
            report.results.verdict.as_str(),
            report.ops
        );
        for c in &report.results.checkers {
            let mut notes = c.anomaly_types.clone();
            // How long the replicas took to agree is the figure a
            // convergence test is run for.
            if let Some(ms) = c.result.get("converged_ms").and_then(|v| v.as_f64()) {
                notes.push(format!("converged {ms:.0} ms after the heal"));
            }
            say!(
                "  {}: {}{}",
                c.checker,
                c.verdict.as_str(),
                if notes.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", notes.join(", "))
                }
            );
        }
        const FAULT_LINES: usize = 12;
        for f in report.results.faults.iter().take(FAULT_LINES) {
            say!("  fault at {:.1} s: {}: {}", f.at_s, f.package, f.what);
        }
        if report.results.faults.len() > FAULT_LINES {
            say!(
                "  ... and {} more faults (results.json)",
                report.results.faults.len() - FAULT_LINES
            );
        }
        if let Some(p) = &report.results.problem {
            say!("  problem: {p}");
        }
        say!("  report: {}", page.display());
        worst = worst.worst(report.results.verdict);
    }
    Ok(worst.exit_code() as u8)
}

/// A one-line progress display on stderr: elapsed time, ops/s and outcomes.
struct Progress {
    start: Instant,
    last: Instant,
    counts: [u64; 4],
    tty: bool,
}

impl Progress {
    fn new() -> Self {
        use std::io::IsTerminal;
        Progress {
            start: Instant::now(),
            last: Instant::now(),
            counts: [0; 4],
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn on_op(&mut self, op: &splitbrain_history::Op) {
        if !op.is_client() {
            return;
        }
        self.counts[op.kind as usize] += 1;
        let every = if self.tty {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(10)
        };
        if self.last.elapsed() >= every {
            self.last = Instant::now();
            self.print();
        }
    }

    fn print(&self) {
        let secs = self.start.elapsed().as_secs_f64();
        let [inv, ok, fail, info] = self.counts;
        let line = format!(
            "{secs:6.1} s  {:7.0} ops/s  ok {ok}  fail {fail}  info {info}",
            inv as f64 / secs.max(1e-9)
        );
        if self.tty {
            eprint!("\r{line}   ");
        } else {
            eprintln!("{line}");
        }
    }

    fn finish(&self) {
        self.print();
        if self.tty {
            eprintln!();
        }
    }
}

/// `splitbrain clean`: leftovers of runs whose harness died before its
/// teardown, and clusters left running on purpose.
fn clean() -> Result<u8, Failure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let cleaned = rt.block_on(splitbrain::env::run_lock::clean(true, true));
    say!("runs cleaned up: {}", cleaned.runs);
    say!("node processes killed: {}", cleaned.processes);
    say!("network namespaces removed: {}", cleaned.namespaces.len());
    say!(
        "Docker containers and networks removed: {}",
        cleaned.docker_things
    );
    for p in &cleaned.problems {
        say!("not removed: {p}");
    }
    Ok(exit::VALID)
}
