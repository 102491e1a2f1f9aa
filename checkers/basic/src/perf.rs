//! `stats` (ok/fail/info counts per f) and `perf` (latency, throughput and
//! availability over time and per fault window): the data a report plots.
//! An invocation that never completed counts as info.

use std::collections::BTreeMap;

use serde::Serialize;
use splitbrain_history::Text;
use splitbrain_history::{CheckError, CheckOptions, CheckOutcome, History, OpType, Verdict};

use crate::common::{fault_windows, ms, param, FaultWindow, Phase, Phases, Quantiles};

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Counts {
    pub count: usize,
    pub ok: usize,
    pub fail: usize,
    pub info: usize,
}

impl Counts {
    fn add(&mut self, end: OpType) {
        self.count += 1;
        match end {
            OpType::Ok => self.ok += 1,
            OpType::Fail => self.fail += 1,
            _ => self.info += 1,
        }
    }
    /// Fraction of ops that succeeded.
    pub fn availability(&self) -> Option<f64> {
        (self.count > 0).then(|| self.ok as f64 / self.count as f64)
    }
}

fn end_of(h: &History, comp: Option<usize>) -> OpType {
    comp.map_or(OpType::Info, |c| h.ops[c].kind)
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatsResult {
    pub verdict: Verdict,
    pub total: Counts,
    pub by_f: BTreeMap<Text, Counts>,
    /// Functions with no ok at all.
    pub never_ok: Vec<Text>,
}

pub fn check_stats(h: &History, _opts: &CheckOptions) -> Result<StatsResult, CheckError> {
    let mut total = Counts::default();
    let mut by_f: BTreeMap<Text, Counts> = BTreeMap::new();
    for (inv, comp) in h.client_pairs() {
        let end = end_of(h, comp);
        total.add(end);
        match by_f.get_mut(&h.ops[inv].f) {
            Some(c) => c.add(end),
            None => {
                let mut c = Counts::default();
                c.add(end);
                by_f.insert(h.ops[inv].f.clone(), c);
            }
        }
    }
    let never_ok: Vec<Text> = by_f
        .iter()
        .filter(|(_, c)| c.ok == 0)
        .map(|(f, _)| f.clone())
        .collect();
    Ok(StatsResult {
        verdict: if never_ok.is_empty() {
            Verdict::Valid
        } else {
            Verdict::Invalid
        },
        total,
        by_f,
        never_ok,
    })
}

impl CheckOutcome for StatsResult {
    fn verdict(&self) -> Verdict {
        self.verdict
    }
    fn anomaly_types(&self) -> Vec<String> {
        if self.never_ok.is_empty() {
            Vec::new()
        } else {
            vec!["never-ok".to_string()]
        }
    }
    fn explain(&self) -> String {
        let mut s = String::new();
        let line = |label: &str, c: &Counts| {
            format!(
                "{label}: {} ops, {} ok, {} fail, {} info\n",
                c.count, c.ok, c.fail, c.info
            )
        };
        s += &line("all", &self.total);
        for (f, c) in &self.by_f {
            s += &line(f, c);
        }
        if !self.never_ok.is_empty() {
            let fs: Vec<&str> = self.never_ok.iter().map(Text::as_str).collect();
            s += &format!("never succeeded: {}\n", fs.join(", "));
        }
        s
    }
}

/// Ops and their latencies, as one group of a perf result.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PerfGroup {
    pub counts: Counts,
    pub availability: Option<f64>,
    /// Latency of completed ops (ok, fail or info with a time).
    pub latency_ms: Option<Quantiles>,
    pub ok_latency_ms: Option<Quantiles>,
}

#[derive(Default)]
struct Acc {
    counts: Counts,
    latency: Vec<f64>,
    ok_latency: Vec<f64>,
}

impl Acc {
    fn add(&mut self, end: OpType, latency_ms: Option<f64>) {
        self.counts.add(end);
        if let Some(l) = latency_ms {
            self.latency.push(l);
            if end == OpType::Ok {
                self.ok_latency.push(l);
            }
        }
    }
    fn finish(mut self) -> PerfGroup {
        PerfGroup {
            availability: self.counts.availability(),
            counts: self.counts,
            latency_ms: Quantiles::of(&mut self.latency),
            ok_latency_ms: Quantiles::of(&mut self.ok_latency),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WindowPerf {
    pub window: FaultWindow,
    /// Ops invoked while the window was open.
    pub ops: PerfGroup,
}

/// One time bucket; ops fall in the bucket of their completion time.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Bucket {
    pub start_ms: f64,
    pub counts: Counts,
    pub ok_per_s: f64,
    pub latency_ms: Option<Quantiles>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PerfResult {
    pub verdict: Verdict,
    pub bucket_ms: f64,
    pub overall: PerfGroup,
    pub by_f: BTreeMap<Text, PerfGroup>,
    pub per_phase: BTreeMap<Phase, PerfGroup>,
    pub windows: Vec<WindowPerf>,
    pub timeline: Vec<Bucket>,
    /// Ops without times (counted, but in no latency or timeline figure).
    pub untimed_count: usize,
}

/// Timelines longer than this many buckets get wider buckets.
const MAX_BUCKETS: f64 = 10_000.0;

pub fn check_perf(h: &History, opts: &CheckOptions) -> Result<PerfResult, CheckError> {
    let mut bucket_ms = param::<f64>(opts, "bucket-ms")?.unwrap_or(1000.0);
    // NaN fails this test too.
    if bucket_ms.is_nan() || bucket_ms <= 0.0 {
        return Err(CheckError::Unsupported(
            "bucket-ms must be positive".to_string(),
        ));
    }
    let windows = fault_windows(h);
    let phases = Phases::new(h, &windows);
    let mut overall = Acc::default();
    let mut by_f: BTreeMap<Text, Acc> = BTreeMap::new();
    let mut per_phase: BTreeMap<Phase, Acc> = BTreeMap::new();
    let mut per_window: Vec<Acc> = windows.iter().map(|_| Acc::default()).collect();
    let mut active: Vec<usize> = Vec::new();
    let mut next_window = 0;
    let mut untimed = 0;
    // (completion ms, end, latency ms) for the timeline.
    let mut timed: Vec<(f64, OpType, f64)> = Vec::new();
    for (inv, comp) in h.client_pairs() {
        while next_window < windows.len() && windows[next_window].opened_at <= inv {
            active.push(next_window);
            next_window += 1;
        }
        active.retain(|&w| windows[w].end_position(h.len()) >= inv);
        let end = end_of(h, comp);
        let times = (h.ops[inv].time, comp.and_then(|c| h.ops[c].time));
        let latency = match times {
            (Some(a), Some(b)) => {
                let l = ms(b) - ms(a);
                timed.push((ms(b), end, l));
                Some(l)
            }
            _ => {
                untimed += 1;
                None
            }
        };
        overall.add(end, latency);
        let f = &h.ops[inv].f;
        match by_f.get_mut(f) {
            Some(a) => a.add(end, latency),
            None => {
                let mut a = Acc::default();
                a.add(end, latency);
                by_f.insert(f.clone(), a);
            }
        }
        per_phase
            .entry(phases.phase(inv))
            .or_default()
            .add(end, latency);
        for &w in &active {
            per_window[w].add(end, latency);
        }
    }
    let (lo, hi) = timed.iter().fold(
        (f64::INFINITY, f64::NEG_INFINITY),
        |(lo, hi), &(t, _, _)| (lo.min(t), hi.max(t)),
    );
    let mut timeline = Vec::new();
    if lo.is_finite() {
        let origin = (lo / bucket_ms).floor() * bucket_ms;
        if (hi - origin) / bucket_ms > MAX_BUCKETS {
            bucket_ms = ((hi - origin) / MAX_BUCKETS).ceil();
        }
        let origin = (lo / bucket_ms).floor() * bucket_ms;
        let n = ((hi - origin) / bucket_ms).floor() as usize + 1;
        let mut accs: Vec<Acc> = (0..n).map(|_| Acc::default()).collect();
        for &(t, end, l) in &timed {
            let b = (((t - origin) / bucket_ms).floor() as usize).min(n - 1);
            accs[b].add(end, Some(l));
        }
        timeline = accs
            .into_iter()
            .enumerate()
            .map(|(b, mut a)| Bucket {
                start_ms: origin + b as f64 * bucket_ms,
                ok_per_s: a.counts.ok as f64 * 1000.0 / bucket_ms,
                counts: std::mem::take(&mut a.counts),
                latency_ms: Quantiles::of(&mut a.latency),
            })
            .collect();
    }
    Ok(PerfResult {
        verdict: Verdict::Valid,
        bucket_ms,
        overall: overall.finish(),
        by_f: by_f.into_iter().map(|(f, a)| (f, a.finish())).collect(),
        per_phase: per_phase
            .into_iter()
            .map(|(p, a)| (p, a.finish()))
            .collect(),
        windows: windows
            .into_iter()
            .zip(per_window)
            .map(|(window, a)| WindowPerf {
                window,
                ops: a.finish(),
            })
            .collect(),
        timeline,
        untimed_count: untimed,
    })
}

impl CheckOutcome for PerfResult {
    fn verdict(&self) -> Verdict {
        self.verdict
    }
    fn anomaly_types(&self) -> Vec<String> {
        Vec::new()
    }
    fn explain(&self) -> String {
        let mut s = String::new();
        let line = |label: &str, g: &PerfGroup| {
            let mut l = format!("{label}: {} ops, {} ok", g.counts.count, g.counts.ok);
            if let Some(a) = g.availability {
                l += &format!(", availability {:.3}", a);
            }
            if let Some(q) = &g.latency_ms {
                l += &format!(", latency ms {q}");
            }
            l.push('\n');
            l
        };
        s += &line("all", &self.overall);
        for (f, g) in &self.by_f {
            s += &line(f, g);
        }
        for (p, g) in &self.per_phase {
            let label = match p {
                Phase::InsideFault => "inside faults",
                Phase::OutsideFault => "outside faults",
            };
            s += &line(label, g);
        }
        for w in &self.windows {
            s += &line(
                &format!("window {} (op {})", w.window.label, w.window.opened_at),
                &w.ops,
            );
        }
        s += &format!(
            "{} time buckets of {} ms; {} ops without times\n",
            self.timeline.len(),
            self.bucket_ms,
            self.untimed_count
        );
        s
    }
}
