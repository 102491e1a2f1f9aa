//! Prints the linearizability checker's figures (run with
//! `cargo bench -p splitbrain-linearizable`). Corpus figures need
//! SPLITBRAIN_CORPUS; the generated 100,000-op history needs nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use splitbrain_history::{Budget, CheckOptions, CheckOutcome, History, Op, OpType, Process, Value};
use splitbrain_linearizable::{check, LinearizabilityResult};

fn corpus_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("SPLITBRAIN_CORPUS")?);
    Some(if dir.is_relative() {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(dir)
    } else {
        dir
    })
}

fn options(model: &str, timeout: Duration, memory_bytes: usize) -> CheckOptions {
    CheckOptions {
        model: Some(model.into()),
        budget: Budget {
            deadline: Some(Instant::now() + timeout),
            memory_bytes,
        },
        ..CheckOptions::default()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Peak resident memory of this process, from /proc/self/status.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn timed(history: &History, opts: &CheckOptions) -> (LinearizabilityResult, Duration) {
    let start = Instant::now();
    let r = check(history, opts).expect("check");
    (r, start.elapsed())
}

/// Best of `runs` wall times (the machine is shared; the minimum is the least disturbed).
fn best_of(
    runs: usize,
    history: &History,
    opts: impl Fn() -> CheckOptions,
) -> (LinearizabilityResult, Duration) {
    let mut best: Option<(LinearizabilityResult, Duration)> = None;
    for _ in 0..runs {
        let (r, t) = timed(history, &opts());
        if best.as_ref().is_none_or(|(_, b)| t < *b) {
            best = Some((r, t));
        }
    }
    best.expect("at least one run")
}

fn etcd(dir: &Path) {
    let dir = dir.join("linearizability/porcupine/jepsen");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("etcd dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    let parse_start = Instant::now();
    let histories: Vec<(PathBuf, History)> = files
        .iter()
        .map(|p| (p.clone(), History::read(p, None).expect("parse")))
        .filter(|(_, h)| !h.is_empty())
        .collect();
    let parse = parse_start.elapsed();
    let mut best_total = Duration::MAX;
    let mut slowest = (Duration::ZERO, String::new(), 0u64);
    let (mut valid, mut invalid) = (0, 0);
    for round in 0..5 {
        let mut total = Duration::ZERO;
        for (path, h) in &histories {
            let (r, t) = timed(h, &options("etcd", Duration::from_secs(60), 2 << 30));
            total += t;
            if round == 0 {
                match r.verdict {
                    splitbrain_history::Verdict::Valid => valid += 1,
                    splitbrain_history::Verdict::Invalid => invalid += 1,
                    v => panic!("{}: {}", path.display(), v.as_str()),
                }
                if t > slowest.0 {
                    slowest = (
                        t,
                        path.file_name().unwrap().to_string_lossy().into(),
                        r.configurations,
                    );
                }
            }
        }
        best_total = best_total.min(total);
    }
    println!(
        "etcd: {} histories ({valid} valid, {invalid} invalid) checked in {:.1} ms total (best of 5; target < 110 ms); parsing {:.1} ms; slowest {} {:.2} ms ({} configurations)",
        histories.len(),
        ms(best_total),
        ms(parse),
        slowest.1,
        ms(slowest.0),
        slowest.2
    );
}

fn kv(dir: &Path, file: &str, model: &str, timeout: Duration, memory_bytes: usize, target: &str) {
    let path = dir.join("linearizability/porcupine/kv").join(file);
    let parse_start = Instant::now();
    let h = History::read(&path, None).expect("parse");
    let parse = parse_start.elapsed();
    let runs = if model == "kv-nopart" && file.starts_with("c50") {
        1
    } else {
        3
    };
    let (r, t) = best_of(runs, &h, || options(model, timeout, memory_bytes));
    println!(
        "{file} as {model}: {} in {:.1} ms ({} configurations, search state peak {:.0} MB, parse {:.1} ms; target {target}){}",
        r.verdict.as_str(),
        ms(t),
        r.configurations,
        r.memory_bytes_peak as f64 / 1e6,
        ms(parse),
        match r.undecided.first() {
            Some(u) if u.reason == "time" || u.reason == "memory" => {
                format!("; undecided: out of {}", u.reason)
            }
            Some(_) => format!(
                "; {} other partition(s) stopped once one failed",
                r.undecided.len()
            ),
            None => String::new(),
        }
    );
}

/// A deterministic xorshift generator, so the history is the same every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A linearizable register history over `keys` keys from `workers` concurrent
/// clients: each op takes effect atomically at a random moment between its
/// invocation and completion; about 1 in 200 ends in `info` (the process is
/// then replaced by a fresh one, as Jepsen does).
fn generate(ops: usize, keys: u64, workers: u64, info_per_mille: u64) -> History {
    struct Pending {
        f: &'static str,
        key: i64,
        value: Value,
        applied: Option<Value>,
    }
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut store = vec![Value::Nil; keys as usize];
    let mut process: Vec<u64> = (0..workers).collect();
    let mut pending: Vec<Option<Pending>> = (0..workers).map(|_| None).collect();
    let mut out = Vec::with_capacity(ops + workers as usize);
    let mut next_value = 0i64;
    let op = |p: u64, kind, f: &str, key: i64, value: Value| {
        let mut o = Op::new(Process::Client(p), kind, f, value);
        o.key = Some(Value::Int(key));
        o
    };
    while out.len() < ops {
        let w = rng.below(workers) as usize;
        match &mut pending[w] {
            None => {
                let key = rng.below(keys) as i64;
                let (f, value) = match rng.below(10) {
                    0..=4 => ("read", Value::Nil),
                    5..=7 => {
                        next_value += 1;
                        ("write", Value::Int(next_value))
                    }
                    _ => {
                        next_value += 1;
                        let from = store[key as usize].clone();
                        ("cas", Value::list(vec![from, Value::Int(next_value)]))
                    }
                };
                out.push(op(process[w], OpType::Invoke, f, key, value.clone()));
                pending[w] = Some(Pending {
                    f,
                    key,
                    value,
                    applied: None,
                });
            }
            Some(p) if p.applied.is_none() => {
                let slot = &mut store[p.key as usize];
                p.applied = Some(match p.f {
                    "read" => slot.clone(),
                    "write" => {
                        *slot = p.value.clone();
                        Value::Nil
                    }
                    _ => {
                        let l = p.value.as_list().expect("cas pair");
                        if *slot == l[0] {
                            *slot = l[1].clone();
                            Value::Bool(true)
                        } else {
                            Value::Bool(false)
                        }
                    }
                });
            }
            Some(_) => {
                let p = pending[w].take().expect("pending");
                let result = p.applied.expect("applied");
                let crashed = rng.below(1000) < info_per_mille;
                let (kind, value) = if crashed {
                    (OpType::Info, p.value)
                } else {
                    match p.f {
                        "read" => (OpType::Ok, result),
                        "cas" if result == Value::Bool(false) => (OpType::Fail, p.value),
                        _ => (OpType::Ok, p.value),
                    }
                };
                out.push(op(process[w], kind, p.f, p.key, value));
                if crashed {
                    process[w] += workers;
                }
            }
        }
    }
    History::from_ops(out).expect("generated history pairs")
}

fn generated(ops: usize, keys: u64, info_per_mille: u64) {
    let gen_start = Instant::now();
    let h = generate(ops, keys, 20, info_per_mille);
    let gen = gen_start.elapsed();
    let stats = h.stats();
    let (r, t) = best_of(3, &h, || CheckOptions {
        model: Some("cas-register".into()),
        ..options("cas-register", Duration::from_secs(60), 2 << 30)
    });
    println!(
        "generated: {} ops ({} info) over {keys} key(s), 20 processes, as cas-register: {} in {:.1} ms ({} partitions, {} configurations; generation {:.0} ms; target < 2000 ms for 1000 keys)",
        stats.ops,
        stats.info,
        r.verdict.as_str(),
        ms(t),
        r.partitions,
        r.configurations,
        ms(gen)
    );
    assert_eq!(
        r.verdict,
        splitbrain_history::Verdict::Valid,
        "{}",
        r.explain()
    );
}

/// `BENCH_ONLY=NAME` runs one section: generated, etcd, c10-nopart, c50-kv, c50-nopart.
/// `C50_NOPART_TIMEOUT_S` sets the time budget for c50 as kv-nopart (default 30 s).
fn wanted(section: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |only| only == section)
}

/// Shrinking a 1,000-op one-key history made invalid by one stale read in
/// its middle (target: under 1 s). The minimal proof is the stale write,
/// a write that completed after it and before the read, and the read.
fn shrinking() {
    let mut h = generate(2_200, 1, 20, 5);
    let read = (h.ops.len() / 2..h.ops.len())
        .find(|&i| {
            let op = &h.ops[i];
            op.is_client()
                && op.is_ok()
                && op.f == "read"
                && op.value.as_int().is_some_and(|v| v > 10)
        })
        .expect("an ok read in the second half");
    // The value of an ok write five writes back: a stale read, not an unwritten value.
    let stale = (0..read)
        .rev()
        .filter(|&i| {
            let op = &h.ops[i];
            op.is_client() && op.is_ok() && op.f == "write"
        })
        .nth(5)
        .map(|i| h.ops[i].value.clone())
        .expect("five ok writes before the read");
    h.ops[read].value = stale;
    let opts = || options("cas-register", Duration::from_secs(60), 2 << 30);
    let start = Instant::now();
    let s = splitbrain_linearizable::shrink(&h, &opts())
        .expect("shrink")
        .expect("the stale read makes it invalid");
    let t = start.elapsed();
    println!(
        "shrink: {} ops (one key) to {} in {:.1} ms, {} checks ({} undecided), minimal: {} (target < 1000 ms)",
        s.object_ops,
        s.kept.len(),
        ms(t),
        s.checks,
        s.checks_unknown,
        s.minimal
    );
}

fn main() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("machine: {cpus} cpus, load average {}", load.trim());
    if wanted("shrink") {
        shrinking();
    }
    if wanted("generated") {
        generated(100_000, 1_000, 5);
        // The same load on one register: one long partition, no splitting.
        let var = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        generated(
            var("GEN_OPS", 100_000) as usize,
            var("GEN_KEYS", 1),
            var("GEN_INFO_PER_MILLE", 5),
        );
    }
    let Some(dir) = corpus_dir() else {
        println!("SKIPPED: corpus figures: SPLITBRAIN_CORPUS is not set");
        return;
    };
    if wanted("etcd") {
        etcd(&dir);
    }
    let minute = Duration::from_secs(60);
    for file in ["c10-ok.txt", "c10-bad.txt"]
        .into_iter()
        .filter(|_| wanted("c10-nopart"))
    {
        kv(&dir, file, "kv-nopart", minute, 2 << 30, "< 500 ms");
    }
    for file in ["c50-ok.txt", "c50-bad.txt"]
        .into_iter()
        .filter(|_| wanted("c50-kv"))
    {
        kv(&dir, file, "kv", minute, 2 << 30, "< 50 ms");
    }
    let budget_s = std::env::var("C50_NOPART_TIMEOUT_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    for file in ["c50-ok.txt", "c50-bad.txt"]
        .into_iter()
        .filter(|_| wanted("c50-nopart"))
    {
        kv(
            &dir,
            file,
            "kv-nopart",
            Duration::from_secs(budget_s),
            Budget::default().memory_bytes,
            "decided, or unknown within the budget under 2 GB",
        );
    }
    if let Some(mb) = peak_rss_mb() {
        println!("peak RSS of this whole benchmark process (VmHWM): {mb:.0} MB (target < 2048 MB)");
    }
}
