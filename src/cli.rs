//! Command-line parsing and the offline subcommands.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use splitbrain_history::{
    Budget, CheckError, CheckOptions, Format, History, HistoryError, OpWriter, Value,
};

use crate::exit;
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
            code: exit::INTERNAL,
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
        Command::Analyze(args) => analyze(args),
        Command::Report(args) => report(args),
        Command::Serve(args) => serve(args),
        Command::Image(args) => image(args),
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
    let parse_start = Instant::now();
    let history = History::read(&args.file, format)?;
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
            ..Budget::with_timeout(args.timeout.map(Duration::from_secs_f64))
        },
    };
    let start = Instant::now();
    let report = (entry.run)(&history, &opts).map_err(|e| match e {
        CheckError::BadOp { position, problem } => {
            Failure::bad_input(history.error_at(position, problem).to_string())
        }
        CheckError::Unsupported(m) => Failure::bad_input(m),
    })?;
    let elapsed_ms = start.elapsed().as_secs_f64() * 1000.0;
    let stats = history.stats();
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
        });
        println!("{out}");
    } else {
        println!(
            "{}: {} ({} checker, {} ops, checked in {:.1} ms, parsed in {:.1} ms)",
            args.file.display(),
            report.verdict.as_str(),
            report.checker,
            stats.ops,
            elapsed_ms,
            parse_ms
        );
        if !report.explanation.is_empty() {
            println!("{}", report.explanation.trim_end());
        }
    }
    Ok(report.verdict.exit_code() as u8)
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
    let test: serde_json::Value =
        run_store::read_json(&dir.join(run_store::TEST_FILE)).map_err(|e| {
            Failure::bad_input(format!("{}: {e}", dir.join(run_store::TEST_FILE).display()))
        })?;
    let kind: WorkloadKind = serde_json::from_value(test["workload"].clone())
        .map_err(|e| Failure::bad_input(format!("test.json names no known workload: {e}")))?;
    let wopts: WorkloadOptions =
        serde_json::from_value(test["workload_options"].clone()).unwrap_or_default();
    let history = History::read(&dir.join(run_store::HISTORY_FILE), Some(Format::Jsonl))?;
    let results = controller::check_all(&history, &workloads::build(kind, &wopts).checkers, None);
    run_store::write_json(&dir.join(run_store::RESULTS_FILE), &results)
        .context("writing results.json")?;
    let report = report::render_run(&dir)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "run": dir, "verdict": results.verdict, "anomalies": results.anomaly_types(), "report": report })
        );
    } else {
        println!(
            "{}: {} ({})",
            dir.display(),
            results.verdict.as_str(),
            report.display()
        );
        for c in &results.checkers {
            println!(
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
    let path = report::render_run(&dir)?;
    println!("{}", path.display());
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
    } = args.action;
    let names = if names.is_empty() {
        vec![
            "base".to_string(),
            "etcd".into(),
            "redis".into(),
            "postgres".into(),
        ]
    } else {
        names
    };
    let mut recipes = Vec::new();
    for n in &names {
        recipes.push(splitbrain::docker::image::Recipe::named(n).ok_or_else(|| {
            Failure::bad_input(format!(
                "unknown image '{n}' (expected base, etcd, redis or postgres)"
            ))
        })?);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async {
        let docker = splitbrain::docker::connect()
            .await
            .map_err(|e| Failure::bad_input(e.to_string()))?;
        for r in &recipes {
            eprintln!("image {}: {}", r.name, r.tag());
            let (tag, built) = splitbrain::docker::image::ensure(&docker, r, &work_dir, force)
                .await
                .map_err(|e| Failure::from(anyhow::anyhow!("building {}: {e}", r.name)))?;
            println!("{tag} {}", if built { "built" } else { "reused" });
        }
        Ok::<(), Failure>(())
    })?;
    Ok(exit::VALID)
}
