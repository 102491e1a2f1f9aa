//! Staleness: for every ok read of a register/kv history (unique writes), how
//! many versions and how many milliseconds it was behind.
//!
//! A write is definitely newer than the value `x` a read `r` returned when it
//! began after x's write was acknowledged and was itself acknowledged before
//! `r` began. `versions_behind` counts those writes; `stale_ms` is how long the
//! first of them had been acknowledged when `r` began. Reads of the initial
//! value are behind every write acknowledged before they began.
//!
//! Staleness is a measurement: the verdict is invalid only for reads of values
//! never written, with `--linearizable` (any stale read), or past the bounds
//! `max-versions-behind=N` / `max-stale-ms=N`.

use std::collections::BTreeMap;

use serde::Serialize;
use splitbrain_history::{CheckError, CheckOptions, CheckOutcome, History, Value, Verdict};

use crate::common::{fault_windows, ms, param, FxMap, Phase, Phases, Quantiles};
use crate::DETAIL_LIMIT;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StaleRead {
    /// The read's completion position.
    pub read: usize,
    pub key: Option<Value>,
    pub value: Value,
    /// The first definitely newer write (its completion position).
    pub newer_write: usize,
    pub versions_behind: usize,
    pub stale_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StalenessGroup {
    pub read_count: usize,
    pub stale_count: usize,
    pub versions_behind: Option<Quantiles>,
    pub stale_ms: Option<Quantiles>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StalenessResult {
    pub verdict: Verdict,
    pub read_count: usize,
    pub stale_count: usize,
    /// Reads of values never written (or whose write failed): positions, first few.
    pub unwritten_count: usize,
    pub unwritten_reads: Vec<usize>,
    pub overall: StalenessGroup,
    /// Keyed by the node the reading client talked to (`?` when unknown).
    pub per_node: BTreeMap<String, StalenessGroup>,
    pub per_phase: BTreeMap<Phase, StalenessGroup>,
    pub worst: Option<StaleRead>,
    /// Reads past the configured bounds (or any stale read with `--linearizable`).
    pub over_bound_count: usize,
    /// The first stale reads (the counts are exact).
    pub stale_reads: Vec<StaleRead>,
}

struct Write {
    /// Completion position (ok writes only are recorded as completed).
    complete: usize,
    /// Index among its key's acknowledged writes, in completion order.
    rank: u32,
    /// Writes to the key open when this one completed: a slice of `open_arena`.
    open_start: u32,
    open_len: u32,
}

#[derive(Default)]
struct Samples {
    versions: Vec<f64>,
    stale_ms: Vec<f64>,
    reads: usize,
    stale: usize,
}

impl Samples {
    fn add(&mut self, versions: usize, stale_ms: Option<f64>) {
        self.reads += 1;
        if versions > 0 {
            self.stale += 1;
        }
        self.versions.push(versions as f64);
        if let Some(m) = stale_ms {
            self.stale_ms.push(m);
        }
    }
    fn summary(mut self) -> StalenessGroup {
        StalenessGroup {
            read_count: self.reads,
            stale_count: self.stale,
            versions_behind: Quantiles::of(&mut self.versions),
            stale_ms: Quantiles::of(&mut self.stale_ms),
        }
    }
}

pub fn check_staleness(h: &History, opts: &CheckOptions) -> Result<StalenessResult, CheckError> {
    let initial = opts.initial.clone().unwrap_or(Value::Nil);
    let max_versions = param::<usize>(opts, "max-versions-behind")?;
    let max_ms = param::<f64>(opts, "max-stale-ms")?;
    let phases = Phases::new(h, &fault_windows(h));
    let mut key_ids: FxMap<Option<Value>, u32> = FxMap::default();
    let mut keys: Vec<Option<Value>> = Vec::new();
    // Per key: acknowledged writes in completion order (global ids), and open writes.
    let mut acked: Vec<Vec<u32>> = Vec::new();
    let mut open: Vec<Vec<u32>> = Vec::new();
    let mut writes: Vec<Write> = Vec::new();
    let mut open_arena: Vec<u32> = Vec::new();
    // (key, value) -> write id for writes that will be acknowledged, else
    // UNCERTAIN (info or never completed) or FAILED.
    let mut by_value: FxMap<(u32, Value), u32> = FxMap::default();
    // Invocation position -> write id, to find a write at its completion.
    let mut pending: FxMap<usize, u32> = FxMap::default();
    let mut all = Samples::default();
    let mut per_node: BTreeMap<String, Samples> = BTreeMap::new();
    let mut per_phase: BTreeMap<Phase, Samples> = BTreeMap::new();
    let mut r = StalenessResult {
        verdict: Verdict::Valid,
        read_count: 0,
        stale_count: 0,
        unwritten_count: 0,
        unwritten_reads: Vec::new(),
        overall: Samples::default().summary(),
        per_node: BTreeMap::new(),
        per_phase: BTreeMap::new(),
        worst: None,
        over_bound_count: 0,
        stale_reads: Vec::new(),
    };
    const UNCERTAIN: u32 = u32::MAX;
    const FAILED: u32 = u32::MAX - 1;
    for (i, op) in h.ops.iter().enumerate() {
        if !op.is_client() || (op.f != "read" && op.f != "write") {
            continue;
        }
        let inv = if op.is_invoke() {
            i
        } else {
            match h.invocation(i) {
                Some(inv) => inv,
                None => continue,
            }
        };
        let key = &h.ops[inv].key;
        let k = match key_ids.get(key) {
            Some(&k) => k,
            None => {
                key_ids.insert(key.clone(), keys.len() as u32);
                keys.push(key.clone());
                acked.push(Vec::new());
                open.push(Vec::new());
                keys.len() as u32 - 1
            }
        };
        if op.f == "write" {
            if op.is_invoke() {
                if op.value == initial {
                    return Err(CheckError::bad_op(
                        i,
                        format!("write of {} equals the initial value; staleness needs every write unique", op.value),
                    ));
                }
                let comp = h.completion(i);
                let id = match comp.map(|c| &h.ops[c]) {
                    Some(c) if c.is_ok() => {
                        let id = writes.len() as u32;
                        writes.push(Write {
                            complete: usize::MAX,
                            rank: u32::MAX,
                            open_start: 0,
                            open_len: 0,
                        });
                        open[k as usize].push(id);
                        pending.insert(i, id);
                        id
                    }
                    Some(c) if c.is_fail() => FAILED,
                    _ => UNCERTAIN,
                };
                if by_value.insert((k, op.value.clone()), id).is_some() {
                    return Err(CheckError::bad_op(
                        i,
                        format!(
                            "{} is written twice to one key; staleness needs every write unique",
                            op.value
                        ),
                    ));
                }
            } else if op.is_ok() {
                let Some(id) = pending.remove(&inv) else {
                    continue;
                };
                let o = &mut open[k as usize];
                o.retain(|&w| w != id);
                let w = &mut writes[id as usize];
                w.complete = i;
                w.rank = acked[k as usize].len() as u32;
                w.open_start = open_arena.len() as u32;
                w.open_len = o.len() as u32;
                open_arena.extend_from_slice(o);
                acked[k as usize].push(id);
            }
            continue;
        }
        if !op.is_ok() {
            continue;
        }
        // An ok read.
        r.read_count += 1;
        let list = &acked[k as usize];
        let n_before = list.partition_point(|&w| writes[w as usize].complete < inv);
        let x = &op.value;
        let (versions, newer) = if *x == initial {
            (n_before, (n_before > 0).then(|| list[0]))
        } else {
            match by_value.get(&(k, x.clone())) {
                None | Some(&FAILED) => {
                    r.unwritten_count += 1;
                    if r.unwritten_reads.len() < DETAIL_LIMIT {
                        r.unwritten_reads.push(i);
                    }
                    continue;
                }
                Some(&UNCERTAIN) => (0, None),
                Some(&id) => {
                    let w = &writes[id as usize];
                    if w.complete > inv || (w.rank as usize) >= n_before {
                        // Acknowledged only after the read began: not stale.
                        (0, None)
                    } else {
                        let concurrent = &open_arena
                            [w.open_start as usize..(w.open_start + w.open_len) as usize];
                        let overlapping = concurrent
                            .iter()
                            .filter(|&&o| (writes[o as usize].rank as usize) < n_before)
                            .count();
                        let versions = n_before - w.rank as usize - 1 - overlapping;
                        let newer = list[w.rank as usize + 1..n_before]
                            .iter()
                            .copied()
                            .find(|o| !concurrent.contains(o));
                        (versions, newer)
                    }
                }
            }
        };
        let stale_ms = match (newer, h.ops[inv].time) {
            (Some(n), Some(t)) => h.ops[writes[n as usize].complete]
                .time
                .map(|c| (ms(t) - ms(c)).max(0.0)),
            (None, Some(_)) => Some(0.0),
            _ => None,
        };
        let node = op
            .node
            .as_ref()
            .or(h.ops[inv].node.as_ref())
            .map_or("?".to_string(), |n| n.to_string());
        all.add(versions, stale_ms);
        per_node.entry(node).or_default().add(versions, stale_ms);
        per_phase
            .entry(phases.phase(inv))
            .or_default()
            .add(versions, stale_ms);
        if versions == 0 {
            continue;
        }
        r.stale_count += 1;
        let over = opts.linearizable
            || max_versions.is_some_and(|m| versions > m)
            || max_ms.is_some_and(|m| stale_ms.is_some_and(|s| s > m));
        if over {
            r.over_bound_count += 1;
        }
        let stale = StaleRead {
            read: i,
            key: key.clone(),
            value: x.clone(),
            newer_write: newer.map_or(i, |n| writes[n as usize].complete),
            versions_behind: versions,
            stale_ms,
        };
        if r.worst.as_ref().is_none_or(|w| {
            (versions, stale_ms.unwrap_or(0.0)) > (w.versions_behind, w.stale_ms.unwrap_or(0.0))
        }) {
            r.worst = Some(stale.clone());
        }
        if r.stale_reads.len() < DETAIL_LIMIT {
            r.stale_reads.push(stale);
        }
    }
    r.overall = all.summary();
    r.per_node = per_node
        .into_iter()
        .map(|(n, s)| (n, s.summary()))
        .collect();
    r.per_phase = per_phase
        .into_iter()
        .map(|(p, s)| (p, s.summary()))
        .collect();
    r.verdict = if r.unwritten_count > 0 || r.over_bound_count > 0 {
        Verdict::Invalid
    } else {
        Verdict::Valid
    };
    Ok(r)
}

impl CheckOutcome for StalenessResult {
    fn verdict(&self) -> Verdict {
        self.verdict
    }
    fn anomaly_types(&self) -> Vec<String> {
        let mut a = Vec::new();
        if self.unwritten_count > 0 {
            a.push("unwritten-value".to_string());
        }
        if self.over_bound_count > 0 {
            a.push("stale-read".to_string());
        }
        a
    }
    fn explain(&self) -> String {
        let mut s = format!(
            "{} reads, {} stale, {} of values never written, {} past bounds\n",
            self.read_count, self.stale_count, self.unwritten_count, self.over_bound_count
        );
        let mut group = |label: &str, g: &StalenessGroup| {
            s += &format!("{label}: {} reads, {} stale", g.read_count, g.stale_count);
            if let Some(q) = &g.versions_behind {
                s += &format!("; versions behind {q}");
            }
            if let Some(q) = &g.stale_ms {
                s += &format!("; ms behind {q}");
            }
            s.push('\n');
        };
        group("all", &self.overall);
        for (n, g) in &self.per_node {
            group(&format!("node {n}"), g);
        }
        for (p, g) in &self.per_phase {
            let label = match p {
                Phase::InsideFault => "inside faults",
                Phase::OutsideFault => "outside faults",
            };
            group(label, g);
        }
        if let Some(w) = &self.worst {
            s += &format!(
                "worst: read at op {} returned {}, {} versions behind (first newer write acknowledged at op {})\n",
                w.read, w.value, w.versions_behind, w.newer_write
            );
        }
        if !self.unwritten_reads.is_empty() {
            let ops: Vec<String> = self
                .unwritten_reads
                .iter()
                .map(|p| format!("op {p}"))
                .collect();
            s += &format!("reads of values never written: {}\n", ops.join(", "));
        }
        s
    }
}
