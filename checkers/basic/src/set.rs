//! Sets: `set` judges one final read; `set-full` follows every element through
//! every read. Ops: `add` with the element as value; `read` returning a set or
//! list. Ops carrying a `key` form independent sets, one per key.

use serde::Serialize;
use splitbrain_history::{CheckError, CheckOptions, CheckOutcome, History, Value, Verdict};

use crate::common::{elements_at, ms, Elements, FxMap, Quantiles};
use crate::DETAIL_LIMIT;

const NONE: u32 = u32::MAX;

/// How an add ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddEnd {
    Ok,
    Fail,
    /// Info, or never completed: it may have happened.
    Maybe,
}

struct Add {
    element: Value,
    invoke: usize,
    complete: Option<usize>,
    end: AddEnd,
}

#[derive(Default)]
struct Group {
    key: Option<Value>,
    adds: Vec<Add>,
    index: FxMap<Value, u32>,
    /// Ok reads in invocation order: (invocation, completion).
    reads: Vec<(usize, usize)>,
}

/// Split adds and ok reads by key; an element added twice under one key is bad input.
fn collect_groups(h: &History) -> Result<Vec<Group>, CheckError> {
    let mut groups: Vec<Group> = Vec::new();
    let mut by_key: FxMap<Option<Value>, usize> = FxMap::default();
    for (inv, comp) in h.client_pairs() {
        let op = &h.ops[inv];
        let is_add = op.f == "add";
        if !is_add && op.f != "read" {
            continue;
        }
        let g = match by_key.get(&op.key) {
            Some(&g) => g,
            None => {
                by_key.insert(op.key.clone(), groups.len());
                groups.push(Group {
                    key: op.key.clone(),
                    ..Group::default()
                });
                groups.len() - 1
            }
        };
        let group = &mut groups[g];
        if is_add {
            let id = group.adds.len() as u32;
            if let Some(&prev) = group.index.get(&op.value) {
                return Err(CheckError::bad_op(
                    inv,
                    format!(
                        "element {} is added twice (first at op {}); set checkers need unique adds",
                        op.value, group.adds[prev as usize].invoke
                    ),
                ));
            }
            group.index.insert(op.value.clone(), id);
            let end = match comp.map(|c| h.ops[c].kind) {
                Some(splitbrain_history::OpType::Ok) => AddEnd::Ok,
                Some(splitbrain_history::OpType::Fail) => AddEnd::Fail,
                _ => AddEnd::Maybe,
            };
            group.adds.push(Add {
                element: op.value.clone(),
                invoke: inv,
                complete: comp,
                end,
            });
        } else if let Some(c) = comp.filter(|&c| h.ops[c].is_ok()) {
            group.reads.push((inv, c));
        }
    }
    Ok(groups)
}

/// One key's set as judged from its final read.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SetGroup {
    pub key: Option<Value>,
    /// Position of the read judged (the last ok read to complete).
    pub final_read: Option<usize>,
    pub attempt_count: usize,
    pub acknowledged_count: usize,
    /// Attempted elements the final read returned.
    pub ok: Elements,
    /// Acknowledged adds the final read lacks.
    pub lost: Elements,
    /// Elements read that were never added, or whose add failed.
    pub unexpected: Elements,
    /// Adds that ended in info (or never completed) yet were read.
    pub recovered: Elements,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SetResult {
    pub verdict: Verdict,
    pub attempt_count: usize,
    pub acknowledged_count: usize,
    pub ok_count: usize,
    pub lost_count: usize,
    pub unexpected_count: usize,
    pub recovered_count: usize,
    pub groups: Vec<SetGroup>,
}

pub fn check_set(h: &History, _opts: &CheckOptions) -> Result<SetResult, CheckError> {
    let groups = collect_groups(h)?;
    let mut out = Vec::with_capacity(groups.len());
    let mut verdict = Verdict::Valid;
    for g in groups {
        let attempt_count = g.adds.iter().filter(|a| a.end != AddEnd::Fail).count();
        let acknowledged_count = g.adds.iter().filter(|a| a.end == AddEnd::Ok).count();
        let final_read = g.reads.iter().map(|&(_, c)| c).max();
        let Some(fr) = final_read else {
            if !g.adds.is_empty() {
                verdict = verdict.worst(Verdict::Unknown);
            }
            out.push(SetGroup {
                key: g.key,
                final_read: None,
                attempt_count,
                acknowledged_count,
                ok: Elements::default(),
                lost: Elements::default(),
                unexpected: Elements::default(),
                recovered: Elements::default(),
            });
            continue;
        };
        let read = elements_at(fr, &h.ops[fr].value, "read")?;
        let mut seen = vec![false; g.adds.len()];
        let (mut ok, mut unexpected, mut recovered) = (Vec::new(), Vec::new(), Vec::new());
        for v in read {
            match g.index.get(v).map(|&i| &g.adds[i as usize]) {
                Some(a) if a.end != AddEnd::Fail => {
                    seen[g.index[v] as usize] = true;
                    ok.push(v);
                    if a.end == AddEnd::Maybe {
                        recovered.push(v);
                    }
                }
                _ => unexpected.push(v),
            }
        }
        let lost: Vec<&Value> = g
            .adds
            .iter()
            .zip(&seen)
            .filter(|(a, &s)| a.end == AddEnd::Ok && !s)
            .map(|(a, _)| &a.element)
            .collect();
        let group = SetGroup {
            key: g.key,
            final_read: Some(fr),
            attempt_count,
            acknowledged_count,
            ok: Elements::from_values(ok),
            lost: Elements::from_values(lost),
            unexpected: Elements::from_values(unexpected),
            recovered: Elements::from_values(recovered),
        };
        if !group.lost.is_empty() || !group.unexpected.is_empty() {
            verdict = Verdict::Invalid;
        }
        out.push(group);
    }
    let sum = |f: fn(&SetGroup) -> usize| out.iter().map(f).sum();
    Ok(SetResult {
        verdict,
        attempt_count: sum(|g| g.attempt_count),
        acknowledged_count: sum(|g| g.acknowledged_count),
        ok_count: sum(|g| g.ok.count),
        lost_count: sum(|g| g.lost.count),
        unexpected_count: sum(|g| g.unexpected.count),
        recovered_count: sum(|g| g.recovered.count),
        groups: out,
    })
}

fn key_prefix(key: &Option<Value>) -> String {
    key.as_ref().map_or(String::new(), |k| format!("key {k}: "))
}

impl CheckOutcome for SetResult {
    fn verdict(&self) -> Verdict {
        self.verdict
    }
    fn anomaly_types(&self) -> Vec<String> {
        let mut a = Vec::new();
        if self.lost_count > 0 {
            a.push("lost".to_string());
        }
        if self.unexpected_count > 0 {
            a.push("unexpected".to_string());
        }
        a
    }
    fn explain(&self) -> String {
        let mut s = format!(
            "{} attempted, {} acknowledged, {} read, {} lost, {} unexpected, {} recovered\n",
            self.attempt_count,
            self.acknowledged_count,
            self.ok_count,
            self.lost_count,
            self.unexpected_count,
            self.recovered_count
        );
        for g in &self.groups {
            let p = key_prefix(&g.key);
            match g.final_read {
                None if g.attempt_count > 0 => s += &format!("{p}no ok read, cannot judge\n"),
                None => {}
                Some(r) => {
                    if !g.lost.is_empty() {
                        s += &format!(
                            "{p}lost (acknowledged, absent from read at op {r}): {}\n",
                            g.lost
                        );
                    }
                    if !g.unexpected.is_empty() {
                        s += &format!(
                            "{p}unexpected (never successfully added): {}\n",
                            g.unexpected
                        );
                    }
                }
            }
        }
        s
    }
}

/// An element known to exist that later reads stopped returning.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LostElement {
    pub key: Option<Value>,
    pub element: Value,
    pub add: usize,
    /// The last read (completion position) that returned it, if any.
    pub last_present_read: Option<usize>,
    /// The final read of its set, which lacks it.
    pub final_read: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DuplicatedElement {
    pub key: Option<Value>,
    pub element: Value,
    /// The read (completion position) returning it more than once.
    pub read: usize,
    pub copies: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UnexpectedElement {
    pub key: Option<Value>,
    pub element: Value,
    pub read: usize,
}

/// An element some reads missed after it was known to exist, though later reads had it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StaleElement {
    pub key: Option<Value>,
    pub element: Value,
    pub add: usize,
    pub stale_read_count: usize,
    /// The last read (completion position) that missed it.
    pub last_stale_read: usize,
    /// From the add's acknowledgement to the start of the last read that missed it.
    pub stale_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SetFullGroup {
    pub key: Option<Value>,
    pub read_count: usize,
    pub stable: Elements,
    pub lost: Elements,
    pub never_read: Elements,
    pub stale: Elements,
    pub duplicated: Elements,
    pub unexpected: Elements,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SetFullResult {
    pub verdict: Verdict,
    /// Whether stale reads count as violations.
    pub linearizable: bool,
    pub attempt_count: usize,
    pub stable_count: usize,
    pub lost_count: usize,
    pub never_read_count: usize,
    pub stale_count: usize,
    pub duplicated_count: usize,
    pub unexpected_count: usize,
    /// Details, the first few of each kind (the counts are exact).
    pub lost: Vec<LostElement>,
    pub duplicated: Vec<DuplicatedElement>,
    pub unexpected: Vec<UnexpectedElement>,
    pub worst_stale: Option<StaleElement>,
    /// From an add's invocation until it was visible in every later read
    /// (the start of the last read that missed it), over stable elements.
    pub visible_latency_ms: Option<Quantiles>,
    pub groups: Vec<SetFullGroup>,
}

#[derive(Clone, Copy)]
struct Track {
    /// First read (ordinal) that must contain the element: the first invoked
    /// after the add was acknowledged or (info add) after a read showing it completed.
    start: u32,
    /// First read invoked after the add was invoked.
    after_invoke: u32,
    first_present: u32,
    last_present: u32,
    run_start: u32,
    present_from_start: u32,
    last_read_seen: u32,
}

pub fn check_set_full(h: &History, opts: &CheckOptions) -> Result<SetFullResult, CheckError> {
    let groups = collect_groups(h)?;
    let mut r = SetFullResult {
        verdict: Verdict::Valid,
        linearizable: opts.linearizable,
        attempt_count: 0,
        stable_count: 0,
        lost_count: 0,
        never_read_count: 0,
        stale_count: 0,
        duplicated_count: 0,
        unexpected_count: 0,
        lost: Vec::new(),
        duplicated: Vec::new(),
        unexpected: Vec::new(),
        worst_stale: None,
        visible_latency_ms: None,
        groups: Vec::with_capacity(groups.len()),
    };
    let mut latencies: Vec<f64> = Vec::new();
    let mut any_unjudged = false;
    for g in &groups {
        let n_reads = g.reads.len() as u32;
        let read_after = |pos: usize| g.reads.partition_point(|&(inv, _)| inv <= pos) as u32;
        let mut tracks: Vec<Track> = g
            .adds
            .iter()
            .map(|a| Track {
                start: match (a.end, a.complete) {
                    (AddEnd::Ok, Some(c)) if read_after(c) < n_reads => read_after(c),
                    _ => NONE,
                },
                after_invoke: read_after(a.invoke),
                first_present: NONE,
                last_present: NONE,
                run_start: NONE,
                present_from_start: 0,
                last_read_seen: NONE,
            })
            .collect();
        // Reads showing each uncertain add: it is known to exist from the first
        // of them to complete, which need not be the first invoked.
        let mut maybe_present: FxMap<u32, Vec<u32>> = FxMap::default();
        let mut dup_elems: Vec<&Value> = Vec::new();
        let mut unexpected_elems: Vec<&Value> = Vec::new();
        for (k, &(_, c)) in g.reads.iter().enumerate() {
            let k = k as u32;
            let mut copies: FxMap<u32, usize> = FxMap::default();
            for v in elements_at(c, &h.ops[c].value, "read")? {
                let id = match g.index.get(v) {
                    Some(&id) if g.adds[id as usize].end != AddEnd::Fail => id,
                    _ => {
                        r.unexpected_count += 1;
                        unexpected_elems.push(v);
                        if r.unexpected.len() < DETAIL_LIMIT {
                            r.unexpected.push(UnexpectedElement {
                                key: g.key.clone(),
                                element: v.clone(),
                                read: c,
                            });
                        }
                        continue;
                    }
                };
                let t = &mut tracks[id as usize];
                if t.last_read_seen == k {
                    *copies.entry(id).or_insert(1) += 1;
                    continue;
                }
                t.last_read_seen = k;
                if t.first_present == NONE {
                    t.first_present = k;
                }
                if g.adds[id as usize].end == AddEnd::Maybe {
                    maybe_present.entry(id).or_default().push(k);
                }
                if t.last_present == NONE || t.last_present + 1 != k {
                    t.run_start = k;
                }
                t.last_present = k;
                if t.start != NONE && k >= t.start {
                    t.present_from_start += 1;
                }
            }
            let mut copies: Vec<(u32, usize)> = copies.into_iter().collect();
            copies.sort_unstable();
            for (id, n) in copies {
                let element = &g.adds[id as usize].element;
                r.duplicated_count += 1;
                dup_elems.push(element);
                if r.duplicated.len() < DETAIL_LIMIT {
                    r.duplicated.push(DuplicatedElement {
                        key: g.key.clone(),
                        element: element.clone(),
                        read: c,
                        copies: n,
                    });
                }
            }
        }
        for (id, present) in &maybe_present {
            let known = present
                .iter()
                .map(|&k| g.reads[k as usize].1)
                .min()
                .unwrap_or(0);
            let t = &mut tracks[*id as usize];
            t.start = read_after(known);
            t.present_from_start = present.iter().filter(|&&k| k >= t.start).count() as u32;
            if t.start >= n_reads {
                t.start = NONE;
            }
        }
        let (mut stable, mut lost, mut never_read, mut stale) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let read_inv_ms = |ordinal: u32| h.ops[g.reads[ordinal as usize].0].time.map(ms);
        for (id, (a, t)) in g.adds.iter().zip(&tracks).enumerate() {
            if a.end == AddEnd::Fail {
                continue;
            }
            r.attempt_count += 1;
            let present_last = n_reads > 0 && t.last_present == n_reads - 1;
            if a.end == AddEnd::Maybe && t.first_present == NONE {
                continue;
            }
            if present_last {
                stable.push(&a.element);
                let last_absent = t.run_start.checked_sub(1);
                if let Some(la) = last_absent.filter(|&la| la >= t.after_invoke) {
                    if let (Some(end), Some(begin)) = (read_inv_ms(la), h.ops[a.invoke].time) {
                        latencies.push((end - ms(begin)).max(0.0));
                    }
                } else if let Some(_t0) = h.ops[a.invoke].time {
                    latencies.push(0.0);
                }
                if t.start != NONE {
                    let stale_reads = (n_reads - t.start - t.present_from_start) as usize;
                    if stale_reads > 0 {
                        stale.push(&a.element);
                        let la = t.run_start - 1;
                        let known = match a.end {
                            AddEnd::Ok => a.complete,
                            _ => maybe_present
                                .get(&(id as u32))
                                .and_then(|p| p.iter().map(|&k| g.reads[k as usize].1).min()),
                        };
                        let stale_ms = match (read_inv_ms(la), known.and_then(|k| h.ops[k].time)) {
                            (Some(end), Some(begin)) => Some((end - ms(begin)).max(0.0)),
                            _ => None,
                        };
                        let candidate = StaleElement {
                            key: g.key.clone(),
                            element: a.element.clone(),
                            add: a.invoke,
                            stale_read_count: stale_reads,
                            last_stale_read: g.reads[la as usize].1,
                            stale_ms,
                        };
                        let worse = r.worst_stale.as_ref().is_none_or(|w| {
                            (
                                candidate.stale_ms.unwrap_or(0.0),
                                candidate.stale_read_count,
                            ) > (w.stale_ms.unwrap_or(0.0), w.stale_read_count)
                        });
                        if worse {
                            r.worst_stale = Some(candidate);
                        }
                    }
                }
            } else if t.start == NONE {
                never_read.push(&a.element);
            } else {
                lost.push(&a.element);
                if r.lost.len() < DETAIL_LIMIT {
                    r.lost.push(LostElement {
                        key: g.key.clone(),
                        element: a.element.clone(),
                        add: a.invoke,
                        last_present_read: (t.last_present != NONE)
                            .then(|| g.reads[t.last_present as usize].1),
                        final_read: g.reads[n_reads as usize - 1].1,
                    });
                }
            }
        }
        if n_reads == 0 && g.adds.iter().any(|a| a.end == AddEnd::Ok) {
            any_unjudged = true;
        }
        let group = SetFullGroup {
            key: g.key.clone(),
            read_count: g.reads.len(),
            stable: Elements::from_values(stable),
            lost: Elements::from_values(lost),
            never_read: Elements::from_values(never_read),
            stale: Elements::from_values(stale),
            duplicated: Elements::from_values(dup_elems),
            unexpected: Elements::from_values(unexpected_elems),
        };
        r.stable_count += group.stable.count;
        r.lost_count += group.lost.count;
        r.never_read_count += group.never_read.count;
        r.stale_count += group.stale.count;
        r.groups.push(group);
    }
    r.visible_latency_ms = Quantiles::of(&mut latencies);
    r.verdict = if r.lost_count > 0
        || r.duplicated_count > 0
        || r.unexpected_count > 0
        || (r.linearizable && r.stale_count > 0)
    {
        Verdict::Invalid
    } else if any_unjudged {
        Verdict::Unknown
    } else {
        Verdict::Valid
    };
    Ok(r)
}

impl CheckOutcome for SetFullResult {
    fn verdict(&self) -> Verdict {
        self.verdict
    }
    fn anomaly_types(&self) -> Vec<String> {
        let mut a = Vec::new();
        for (n, name) in [
            (self.lost_count, "lost"),
            (self.duplicated_count, "duplicated"),
            (self.unexpected_count, "unexpected"),
            (self.stale_count, "stale"),
        ] {
            if n > 0 {
                a.push(name.to_string());
            }
        }
        a
    }
    fn explain(&self) -> String {
        let mut s = format!(
            "{} attempted: {} stable, {} lost, {} never read, {} stale{}, {} duplicated, {} unexpected\n",
            self.attempt_count,
            self.stable_count,
            self.lost_count,
            self.never_read_count,
            self.stale_count,
            if self.linearizable { " (violations: linearizable)" } else { "" },
            self.duplicated_count,
            self.unexpected_count
        );
        for l in &self.lost {
            s += &format!(
                "{}lost {}: added at op {}, {}, absent from final read at op {}\n",
                key_prefix(&l.key),
                l.element,
                l.add,
                l.last_present_read
                    .map_or("never read".to_string(), |p| format!("last read at op {p}")),
                l.final_read
            );
        }
        for d in &self.duplicated {
            s += &format!(
                "{}{} appears {} times in read at op {}\n",
                key_prefix(&d.key),
                d.element,
                d.copies,
                d.read
            );
        }
        for u in &self.unexpected {
            s += &format!(
                "{}{} read at op {} was never successfully added\n",
                key_prefix(&u.key),
                u.element,
                u.read
            );
        }
        if let Some(w) = &self.worst_stale {
            s +=
                &format!(
                "worst staleness: {}{} missed by {} reads after its add (op {}), last at op {}{}\n",
                key_prefix(&w.key),
                w.element,
                w.stale_read_count,
                w.add,
                w.last_stale_read,
                w.stale_ms.map_or(String::new(), |m| format!(", {m} ms after it was acknowledged"))
            );
        }
        if let Some(q) = &self.visible_latency_ms {
            s += &format!("latency until visible (ms): {q}\n");
        }
        s
    }
}
