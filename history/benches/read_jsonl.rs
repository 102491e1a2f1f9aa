//! Reads a generated 1,000,000-op JSON Lines history and prints the time and
//! the peak resident memory (VmHWM). Run: `cargo bench -p splitbrain-history`.

use std::io::BufWriter;
use std::time::Instant;

use splitbrain_history::{Format, History, Op, OpType, OpWriter, Process, Value};

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    let n_ops: usize = std::env::var("OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("history.jsonl");
    {
        // A register workload over independent keys, 20 processes, some crashes.
        let mut w = OpWriter::new(
            BufWriter::new(std::fs::File::create(&path).unwrap()),
            Format::Jsonl,
        );
        let mut next_process = 20u64;
        let mut procs: Vec<u64> = (0..20).collect();
        let mut i = 0usize;
        let mut x = 12345u64;
        while i < n_ops {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let slot = (x >> 33) as usize % 20;
            let p = procs[slot];
            let f = ["read", "write", "cas"][(x >> 40) as usize % 3];
            let value = match f {
                "read" => Value::Nil,
                "write" => Value::Int((x >> 20) as i64 % 5),
                _ => Value::list(vec![
                    Value::Int((x >> 21) as i64 % 5),
                    Value::Int((x >> 22) as i64 % 5),
                ]),
            };
            let mut inv = Op::new(Process::Client(p), OpType::Invoke, f, value.clone());
            inv.index = i as u64;
            inv.time = Some(i as i64 * 1000);
            inv.key = Some(Value::Int((x >> 10) as i64 % 1000));
            w.write(&inv).unwrap();
            let mut done = inv.clone();
            done.index = i as u64 + 1;
            done.time = Some(i as i64 * 1000 + 500);
            done.kind = match (x >> 50) % 100 {
                0 => OpType::Info,
                1..=10 => OpType::Fail,
                _ => OpType::Ok,
            };
            if f == "read" && done.kind == OpType::Ok {
                done.value = Value::Int((x >> 23) as i64 % 5);
            }
            w.write(&done).unwrap();
            if done.kind == OpType::Info {
                procs[slot] = next_process;
                next_process += 1;
            }
            i += 2;
        }
        w.flush().unwrap();
    }
    let bytes = std::fs::metadata(&path).unwrap().len();
    let rss_before = peak_rss_mb();
    let t = Instant::now();
    let h = History::read(&path, None).expect("read");
    let elapsed = t.elapsed();
    println!(
        "read_jsonl: {} ops, {:.1} MB file, {:.0} ms, {:.2} M ops/s, peak RSS {:.0} MB (before reading {:.0} MB)",
        h.len(),
        bytes as f64 / 1e6,
        elapsed.as_secs_f64() * 1000.0,
        h.len() as f64 / elapsed.as_secs_f64() / 1e6,
        peak_rss_mb(),
        rss_before
    );
    drop(h);
    println!("breakdown, in the same process (memory now warm):");
    let t = Instant::now();
    let mut n = 0usize;
    splitbrain_history::read_ops(&path, None, |_, _| {
        n += 1;
        Ok(())
    })
    .expect("read");
    println!(
        "parse only (ops dropped): {n} ops in {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    let t = Instant::now();
    let mut kept = Vec::with_capacity(n);
    splitbrain_history::read_ops(&path, None, |op, _| {
        kept.push(op);
        Ok(())
    })
    .expect("read");
    println!(
        "parse into a vector: {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    let t = Instant::now();
    let h = History::from_ops(kept).expect("pair");
    println!(
        "pair and validate: {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    let t = Instant::now();
    drop(h);
    println!("drop: {:.0} ms", t.elapsed().as_secs_f64() * 1000.0);
}
