//! A 100,000-op history (20 processes, some crashes, fault windows) renders
//! to a report: print the time and the file size.
//! Run: `cargo bench -p splitbrain --bench report`.

use std::time::Instant;

use splitbrain::report::{render, ReportInput};
use splitbrain_history::{History, Op, OpType, Process, Value};

fn main() {
    let invocations: usize = std::env::var("OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50_000);
    let mut ops = Vec::with_capacity(invocations * 2 + 40);
    let mut procs: Vec<u64> = (0..20).collect();
    let mut x = 7u64;
    let mut t = 0i64;
    // Each process runs its ops back to back.
    let mut cursor = [0i64; 20];
    for i in 0..invocations {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        if i % 5000 == 2500 {
            let mut n = Op::new(
                Process::Nemesis,
                OpType::Invoke,
                if (i / 5000) % 2 == 0 {
                    "start-partition"
                } else {
                    "stop-partition"
                },
                Value::Keyword("majority".into()),
            );
            n.time = Some(t);
            ops.push(n.clone());
            n.kind = OpType::Info;
            ops.push(n);
        }
        let slot = i % 20;
        let f = ["read", "write", "cas"][(x >> 40) as usize % 3];
        let mut inv = Op::new(
            Process::Client(procs[slot]),
            OpType::Invoke,
            f,
            Value::Int((x >> 20) as i64 % 5),
        );
        inv.key = Some(Value::Int((x >> 10) as i64 % 1000));
        t += 50_000;
        let start = cursor[slot].max(t - 2_000_000) + 10_000;
        inv.time = Some(start);
        let mut done = inv.clone();
        done.kind = match (x >> 50) % 100 {
            0 => OpType::Info,
            1..=8 => OpType::Fail,
            _ => OpType::Ok,
        };
        done.time = Some(start + 200_000 + ((x >> 30) % 5_000_000) as i64);
        cursor[slot] = done.time.unwrap_or(start);
        ops.push(inv);
        ops.push(done.clone());
        if done.kind == OpType::Info {
            procs[slot] += 20;
        }
    }
    // Completions in time order, as a recorder writes them.
    ops.sort_by_key(|o| o.time);
    let h = History::from_ops(ops).expect("a valid history");
    let t0 = Instant::now();
    let html = render(&ReportInput {
        test: None,
        history: &h,
        results: None,
        files: vec!["history.jsonl".into()],
    })
    .unwrap();
    let elapsed = t0.elapsed();
    if let Some(out) = std::env::var_os("REPORT_OUT") {
        std::fs::write(out, &html).unwrap();
    }
    println!(
        "report: {} ops ({} invocations) rendered in {:.0} ms, {:.1} MB",
        h.len(),
        h.stats().invocations,
        elapsed.as_secs_f64() * 1000.0,
        html.len() as f64 / 1e6
    );
}
