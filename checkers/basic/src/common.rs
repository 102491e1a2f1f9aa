//! Pieces every checker here shares: a fast hasher, quantiles, compressed
//! element ranges, option parsing and fault windows.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::str::FromStr;

use serde::Serialize;
use splitbrain_history::{CheckError, CheckOptions, History, Value};

/// The Fx hash (as in rustc): histories hash millions of small integers and
/// SipHash's DoS resistance buys nothing for a checker.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        // The multiply leaves its entropy in the high bits; tables index by the low ones.
        self.0.rotate_left(26)
    }
}

pub type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;
pub type FxSet<K> = HashSet<K, BuildHasherDefault<FxHasher>>;

/// Nanoseconds to milliseconds.
pub fn ms(ns: i64) -> f64 {
    ns as f64 / 1e6
}

/// A distribution summary. The unit is named by the field holding it
/// (`latency_ms`, `versions_behind`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Quantiles {
    pub count: usize,
    pub min: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Quantiles {
    /// Quantile q is the element at rank round(q * (n - 1)) of the sorted values.
    pub fn of(values: &mut [f64]) -> Option<Quantiles> {
        if values.is_empty() {
            return None;
        }
        values.sort_unstable_by(f64::total_cmp);
        let n = values.len();
        let at = |q: f64| values[(q * (n - 1) as f64).round() as usize];
        Some(Quantiles {
            count: n,
            min: values[0],
            p50: at(0.5),
            p95: at(0.95),
            p99: at(0.99),
            max: values[n - 1],
        })
    }
}

impl fmt::Display for Quantiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Three significant decimals: enough for ms latencies, readable in a report.
        let r = |v: f64| (v * 1000.0).round() / 1000.0;
        write!(
            f,
            "n={} min={} p50={} p95={} p99={} max={}",
            self.count,
            r(self.min),
            r(self.p50),
            r(self.p95),
            r(self.p99),
            r(self.max)
        )
    }
}

/// A set of elements, integers compressed into inclusive ranges.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Elements {
    pub count: usize,
    /// Inclusive `[low, high]` runs of integer elements, ascending.
    pub ranges: Vec<(i64, i64)>,
    /// Elements that are not integers, sorted.
    pub other: Vec<Value>,
}

impl Elements {
    pub fn from_values<'a>(values: impl IntoIterator<Item = &'a Value>) -> Elements {
        let mut ints = Vec::new();
        let mut other = Vec::new();
        for v in values {
            match v.as_int() {
                Some(i) => ints.push(i),
                None => other.push(v.clone()),
            }
        }
        ints.sort_unstable();
        ints.dedup();
        other.sort();
        other.dedup();
        let mut ranges: Vec<(i64, i64)> = Vec::new();
        for i in &ints {
            match ranges.last_mut() {
                Some((_, hi)) if hi.checked_add(1) == Some(*i) => *hi = *i,
                _ => ranges.push((*i, *i)),
            }
        }
        Elements {
            count: ints.len() + other.len(),
            ranges,
            other,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

impl fmt::Display for Elements {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self
            .ranges
            .iter()
            .map(|&(lo, hi)| {
                if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}..{hi}")
                }
            })
            .collect();
        parts.extend(self.other.iter().map(Value::to_string));
        write!(f, "#{{{}}}", parts.join(" "))
    }
}

/// A checker parameter (`name=value`), parsed; a malformed value is an unsupported option.
pub fn param<T: FromStr>(opts: &CheckOptions, name: &str) -> Result<Option<T>, CheckError> {
    match opts.params.get(name) {
        None => Ok(None),
        Some(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| CheckError::Unsupported(format!("cannot parse option {name}={text}"))),
    }
}

/// A value from the text of an option: an integer when it reads as one, else a string.
pub fn value_of_text(text: &str) -> Value {
    let t = text.trim().trim_start_matches(':');
    t.parse::<i64>().map_or_else(|_| Value::from(t), Value::Int)
}

/// An integer operand, or a `BadOp` naming what was expected.
pub fn int_at(position: usize, value: &Value, what: &str) -> Result<i64, CheckError> {
    value.as_int().ok_or_else(|| {
        CheckError::bad_op(position, format!("{what} must be an integer, not {value}"))
    })
}

/// The elements a read returned: a set or list; nil reads as empty.
pub fn elements_at<'a>(
    position: usize,
    value: &'a Value,
    f: &str,
) -> Result<&'a [Value], CheckError> {
    match value {
        Value::Nil => Ok(&[]),
        v => v.as_list().ok_or_else(|| {
            CheckError::bad_op(position, format!("{f} must return a set or list, not {v}"))
        }),
    }
}

/// A time in ms, when the op has one.
pub fn time_ms(h: &History, position: usize) -> Option<f64> {
    h.ops[position].time.map(ms)
}

/// A period in which the nemesis had a fault in effect.
///
/// splitbrain's nemesis records on each completion the fault package that
/// acted and the phase (`{:fault :kill, :phase :start, :nodes [...]}`): its
/// window opens at the completion of the start, when the fault took effect,
/// is named by the package and what was done, and closes at the completion
/// of the package's stop. A nemesis op that failed changed nothing.
///
/// Histories from other tools follow a naming rule instead, for any nemesis
/// (non-client) op that is an invocation or a
/// completion logged alone: an `f` beginning with `start`, `kill`, `pause`,
/// `bump`, `strobe` or `partition` opens a window labelled by `f` and its value;
/// one beginning with `stop`, `heal`, `restart`, `resume` or `reset` closes the
/// open windows whose `f` has the same suffix after the first `-`
/// (`stop-partition` closes `start-partition`), or every open window when none
/// matches or it has no suffix (`stop`, `heal`). A bare `start` while a `kill`
/// window is open closes the kill windows instead (Jepsen's kill/start node
/// nemesis restarts with `start`). An opener identical to an open window
/// (same f and value) is the same fault logged twice. A window runs from its
/// opening op to the completion of its closing op; one never closed runs to
/// the end.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FaultWindow {
    pub label: String,
    /// The `f` of the op that opened it.
    pub f: String,
    pub opened_at: usize,
    /// Position of the closing op's completion; `None` when never closed.
    pub closed_at: Option<usize>,
    pub start_ms: Option<f64>,
    pub end_ms: Option<f64>,
}

impl FaultWindow {
    /// The last position inside the window (exclusive bound for a never-closed one).
    pub fn end_position(&self, history_len: usize) -> usize {
        self.closed_at.unwrap_or(history_len)
    }
}

const OPENERS: &[&str] = &["start", "kill", "pause", "bump", "strobe", "partition"];
const CLOSERS: &[&str] = &["stop", "heal", "restart", "resume", "reset"];

fn suffix(f: &str) -> Option<&str> {
    f.split_once('-').map(|(_, s)| s)
}

/// A nemesis completion that names its fault package and phase (what
/// splitbrain's own nemesis records): `(package, starts, what was done)`.
fn recorded_fault(v: &Value) -> Option<(&str, bool, String)> {
    let kw = |k: &str| Value::Keyword(k.into());
    let fault = v.map_get(&kw("fault"))?.as_str()?;
    let starts = match v.map_get(&kw("phase"))?.as_str()? {
        "start" => true,
        "stop" => false,
        _ => return None,
    };
    let details: Vec<String> = match v {
        Value::Map(m) => m
            .iter()
            // Maps (a grudge) are detail for the op, not for a label.
            .filter(|(k, v)| *k != kw("fault") && *k != kw("phase") && !matches!(v, Value::Map(_)))
            .map(|(_, v)| match v {
                Value::Keyword(s) | Value::Str(s) => s.to_string(),
                other => other.to_string(),
            })
            .collect(),
        _ => Vec::new(),
    };
    Some((fault, starts, details.join(" ")))
}

pub fn fault_windows(h: &History) -> Vec<FaultWindow> {
    let mut windows: Vec<FaultWindow> = Vec::new();
    let mut open: Vec<usize> = Vec::new();
    for (i, op) in h.ops.iter().enumerate() {
        if op.is_client() {
            continue;
        }
        // Our own nemesis says which package acted and what it did: a window
        // opens when the fault took effect (the completion) and is named by
        // its package. Failed nemesis ops changed nothing.
        let completion = if op.is_invoke() {
            h.completion(i)
        } else {
            Some(i)
        };
        if let Some(c) = completion {
            if let Some((fault, starts, details)) = recorded_fault(&h.ops[c].value) {
                if c != i {
                    continue;
                }
                if starts {
                    open.push(windows.len());
                    windows.push(FaultWindow {
                        label: format!("{fault} {details}").trim_end().to_string(),
                        f: fault.to_string(),
                        opened_at: c,
                        closed_at: None,
                        start_ms: time_ms(h, c),
                        end_ms: None,
                    });
                } else {
                    open.retain(|&w| {
                        let same = windows[w].f == fault;
                        if same {
                            windows[w].closed_at = Some(c);
                            windows[w].end_ms = time_ms(h, c);
                        }
                        !same
                    });
                }
                continue;
            }
            if op.is_invoke() && h.ops[c].is_fail() {
                continue;
            }
        }
        if !(op.is_invoke() || h.invocation(i).is_none()) {
            continue;
        }
        let f = op.f.as_str();
        let kill_open = open.iter().any(|&w| windows[w].f.starts_with("kill"));
        // Closers first: "restart" must not read as an opener.
        if CLOSERS.iter().any(|c| f.starts_with(c)) || (f == "start" && kill_open) {
            let end = h.completion(i).unwrap_or(i);
            let matching: Vec<usize> = if f == "start" {
                open.iter()
                    .copied()
                    .filter(|&w| windows[w].f.starts_with("kill"))
                    .collect()
            } else {
                match suffix(f) {
                    Some(s) => open
                        .iter()
                        .copied()
                        .filter(|&w| suffix(&windows[w].f) == Some(s))
                        .collect(),
                    None => Vec::new(),
                }
            };
            let closing = if matching.is_empty() {
                std::mem::take(&mut open)
            } else {
                open.retain(|w| !matching.contains(w));
                matching
            };
            for w in closing {
                windows[w].closed_at = Some(end);
                windows[w].end_ms = time_ms(h, end);
            }
        } else if OPENERS.iter().any(|o| f.starts_with(o)) {
            let label = if op.value.is_nil() {
                f.to_string()
            } else {
                format!("{f} {}", op.value)
            };
            // Some logs record a fault twice (invoke and completion both info).
            if open.iter().any(|&w| windows[w].label == label) {
                continue;
            }
            open.push(windows.len());
            windows.push(FaultWindow {
                label,
                f: f.to_string(),
                opened_at: i,
                closed_at: None,
                start_ms: time_ms(h, i),
                end_ms: None,
            });
        }
    }
    windows
}

/// Which positions lie inside some fault window.
pub struct Phases {
    /// Merged, sorted, inclusive position intervals.
    intervals: Vec<(usize, usize)>,
}

impl Phases {
    pub fn new(h: &History, windows: &[FaultWindow]) -> Phases {
        let mut iv: Vec<(usize, usize)> = windows
            .iter()
            .map(|w| (w.opened_at, w.end_position(h.len())))
            .collect();
        iv.sort_unstable();
        let mut intervals: Vec<(usize, usize)> = Vec::new();
        for (lo, hi) in iv {
            match intervals.last_mut() {
                Some((_, h2)) if lo <= *h2 => *h2 = (*h2).max(hi),
                _ => intervals.push((lo, hi)),
            }
        }
        Phases { intervals }
    }

    pub fn inside(&self, position: usize) -> bool {
        let k = self.intervals.partition_point(|&(lo, _)| lo <= position);
        k > 0 && self.intervals[k - 1].1 >= position
    }
}

/// The phase of an op, for distributions split by fault.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    InsideFault,
    OutsideFault,
}

impl Phases {
    pub fn phase(&self, position: usize) -> Phase {
        if self.inside(position) {
            Phase::InsideFault
        } else {
            Phase::OutsideFault
        }
    }
}
