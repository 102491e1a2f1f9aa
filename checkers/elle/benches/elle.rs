//! Throughput and memory of the list-append checker on simulated histories:
//! 100,000 and 1,000,000 txns (10 processes, 1-5 micro-ops, 1,000 active
//! keys), checked for strict-serializable. Generation, pairing and parsing a
//! JSONL file are timed separately from the check. Peak RSS is the process's
//! VmHWM, reset before each check so it covers the check (the history it
//! reads is resident throughout and included).
//! Run: `cargo bench -p splitbrain-elle`. `SIZES=1000,20000` overrides sizes.

use std::alloc::{GlobalAlloc, Layout};
use std::io::BufWriter;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use splitbrain_elle::check_list_append;
use splitbrain_elle::sim::{generate, Isolation, KeyDistribution, SimOptions, SimWorkload};
use splitbrain_history::{CheckOptions, Format, History, OpWriter, Verdict};

/// Counts live heap bytes and their peak, so the checker's own memory can be
/// told apart from the history it reads.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// The allocator the `splitbrain` binary uses.
static INNER: mimalloc::MiMalloc = mimalloc::MiMalloc;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = INNER.alloc(layout);
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        INNER.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn status_kb(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn reset_peak() {
    // "5" resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn run(txns: usize, parse: bool, isolation: Isolation, keys: usize) {
    let opts = SimOptions {
        workload: SimWorkload::ListAppend,
        isolation,
        txns,
        seed: 7,
        processes: 10,
        keys,
        min_ops: 1,
        max_ops: 5,
        max_writes_per_key: 32,
        key_distribution: KeyDistribution::Uniform,
        info_rate: 0.0,
    };
    eprintln!(
        "sizes: Op {} B, Value {} B",
        std::mem::size_of::<splitbrain_history::Op>(),
        std::mem::size_of::<splitbrain_history::Value>()
    );
    let t = Instant::now();
    let ops = generate(&opts);
    let gen_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let history = History::from_ops(ops).expect("simulated history pairs");
    let pair_s = t.elapsed().as_secs_f64();
    println!(
        "list-append {txns} txns ({isolation}, {keys} keys): generate {gen_s:.2} s, pair {pair_s:.2} s, {} ops",
        history.len()
    );
    let check_opts = CheckOptions {
        consistency_model: Some("strict-serializable".into()),
        ..CheckOptions::default()
    };
    reset_peak();
    let rss_before = status_kb("VmRSS:");
    let heap_before = LIVE.load(Ordering::Relaxed);
    PEAK.store(heap_before, Ordering::Relaxed);
    let t = Instant::now();
    let r = check_list_append(&history, &check_opts).expect("check");
    let check_s = t.elapsed().as_secs_f64();
    let peak = status_kb("VmHWM:");
    let heap_peak = PEAK.load(Ordering::Relaxed) - heap_before;
    if isolation == Isolation::StrictSerializable {
        assert_eq!(
            r.verdict,
            Verdict::Valid,
            "strict-serializable simulation must check valid"
        );
    } else {
        println!(
            "  {isolation}: {} ({} cyclic components, largest {} txns; {} cycles reported){}",
            r.anomaly_types.join(", "),
            r.graph.components,
            r.graph.largest_component,
            r.cycles.len(),
            r.cut_short
                .as_deref()
                .map(|c| format!("; {c}"))
                .unwrap_or_default()
        );
    }
    println!(
        "  check strict-serializable: {check_s:.3} s ({:.0} txns/s), {} edges; checker heap peak {:.0} MB; process RSS {:.0} MB before (the history), VmHWM {:.0} MB during (+{:.0} MB)",
        txns as f64 / check_s,
        r.graph.edges,
        heap_peak as f64 / (1 << 20) as f64,
        mb(rss_before),
        mb(peak),
        mb(peak.saturating_sub(rss_before))
    );
    if parse {
        let path = std::env::temp_dir().join(format!(
            "splitbrain-elle-bench-{}.jsonl",
            std::process::id()
        ));
        {
            let f = std::fs::File::create(&path).expect("temp file");
            let mut w = OpWriter::new(BufWriter::new(f), Format::Jsonl);
            for op in &history.ops {
                w.write(op).expect("write");
            }
            w.flush().expect("flush");
        }
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        drop(history);
        let t = Instant::now();
        let parsed = History::read(&path, Some(Format::Jsonl)).expect("read back");
        println!(
            "  parse JSONL ({:.0} MB): {:.2} s, {} ops, process RSS after {:.0} MB",
            size as f64 / 1e6,
            t.elapsed().as_secs_f64(),
            parsed.len(),
            mb(status_kb("VmRSS:"))
        );
        let _ = std::fs::remove_file(&path);
    }
}

/// rw-register under read-uncommitted over 10 keys that never rotate: the
/// dependency graph becomes one giant component, the worst case for the
/// per-class cycle search.
fn stress(txns: usize) {
    let opts = SimOptions {
        workload: SimWorkload::RwRegister,
        isolation: Isolation::ReadUncommitted,
        txns,
        seed: 7,
        processes: 10,
        keys: 10,
        min_ops: 1,
        max_ops: 5,
        max_writes_per_key: usize::MAX,
        key_distribution: KeyDistribution::Uniform,
        info_rate: 0.0,
    };
    let history = History::from_ops(generate(&opts)).expect("pairs");
    let t = Instant::now();
    let r = splitbrain_elle::check_rw_register(&history, &CheckOptions::default()).expect("check");
    println!(
        "rw-register {txns} txns (read-uncommitted, 10 fixed keys): check {:.3} s; {} cyclic components, largest {} txns; {} cycles; {}{}",
        t.elapsed().as_secs_f64(),
        r.graph.components,
        r.graph.largest_component,
        r.cycles.len(),
        r.anomaly_types.join(", "),
        r.cut_short.as_deref().map(|c| format!("; {c}")).unwrap_or_default()
    );
}

/// One key whose version order reverses real time: a single component of
/// `txns` txns closed only by real-time edges.
fn reverse_chain(txns: usize) {
    let ops = splitbrain_elle::sim::reverse_chain(txns);
    let history = History::from_ops(ops).expect("pairs");
    let t = Instant::now();
    let r = check_list_append(&history, &CheckOptions::default()).expect("check");
    println!(
        "list-append reverse chain of {txns} txns: check {:.3} s; largest component {} txns; {}{}",
        t.elapsed().as_secs_f64(),
        r.graph.largest_component,
        r.anomaly_types.join(", "),
        r.cut_short
            .as_deref()
            .map(|c| format!("; {c}"))
            .unwrap_or_default()
    );
}

fn main() {
    let parse = std::env::var("PARSE").map_or(true, |v| v != "0");
    let sizes: Vec<usize> = std::env::var("SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100_000, 1_000_000]);
    println!(
        "history model: size_of Op {} B, Value {} B",
        std::mem::size_of::<splitbrain_history::Op>(),
        std::mem::size_of::<splitbrain_history::Value>()
    );
    // Broken histories over few keys: cycle search inside large components.
    let broken: usize = std::env::var("BROKEN_TXNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    if broken > 0 {
        stress(broken);
        reverse_chain(broken);
        for iso in [
            Isolation::ReadCommitted,
            Isolation::ReadUncommitted,
            Isolation::Serializable,
        ] {
            run(broken, false, iso, 10);
        }
    }
    for (i, &n) in sizes.iter().enumerate() {
        run(
            n,
            parse && i + 1 == sizes.len(),
            Isolation::StrictSerializable,
            1000,
        );
    }
}
