//! Convergence: after the final heal, with writes quiet, every replica must
//! return the same value for every key.
//!
//! Final reads are ok ops with f `final-read`; when there are none, ok `read`s
//! invoked after the last fault window closed (see `common::FaultWindow`) and
//! after every other client op (writes, adds, ...) completed.
//! Each read names its replica by `node` (else by process). Per key, the last
//! read of each replica gives its final value; all must agree. A replica
//! converged at the start of its trailing run of reads returning the agreed
//! value; `converged_ms` is the latest such time after the heal (an upper
//! bound, as fine as the replicas were read).
//!
//! Options: `nodes=n1,n2,..` (replicas that must be read, else unknown);
//! `unordered=true` compares list values as sets.

use std::collections::BTreeMap;

use serde::Serialize;
use splitbrain_history::{CheckError, CheckOptions, CheckOutcome, History, Value, Verdict};

use crate::common::{fault_windows, ms, param, FxMap};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReplicaValue {
    pub node: String,
    pub value: Value,
    /// The replica's last final read (completion position).
    pub read: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DivergedKey {
    pub key: Option<Value>,
    /// Replicas grouped by the value they ended with, largest group first.
    pub groups: Vec<Vec<ReplicaValue>>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConvergenceResult {
    pub verdict: Verdict,
    /// Position of the last heal (the closing of the last fault window).
    pub heal: Option<usize>,
    pub heal_ms: Option<f64>,
    pub final_read_count: usize,
    pub nodes: Vec<String>,
    pub nodes_missing: Vec<String>,
    pub key_count: usize,
    pub diverged: Vec<DivergedKey>,
    /// Per replica: ms after the heal at which its last key converged.
    pub converged_ms_per_node: BTreeMap<String, f64>,
    /// The latest replica's convergence, ms after the heal.
    pub converged_ms: Option<f64>,
}

/// Maps compare regardless of entry order; lists as sets when `unordered`.
fn normalize(v: &Value, unordered: bool) -> Value {
    match v {
        Value::List(items) if unordered => Value::set(items.clone()),
        Value::Map(entries) => {
            let mut e: Vec<(Value, Value)> = entries
                .iter()
                .map(|(k, v)| (k.clone(), normalize(v, unordered)))
                .collect();
            e.sort();
            Value::map(e)
        }
        v => v.clone(),
    }
}

/// Replicas grouped by equal value, largest group first.
fn group_by_value(replicas: Vec<ReplicaValue>) -> Vec<Vec<ReplicaValue>> {
    let mut groups: Vec<Vec<ReplicaValue>> = Vec::new();
    for rv in replicas {
        match groups.iter_mut().find(|g| g[0].value == rv.value) {
            Some(g) => g.push(rv),
            None => groups.push(vec![rv]),
        }
    }
    groups.sort_by_key(|g| std::cmp::Reverse(g.len()));
    groups
}

/// When every replica returned a whole map (a kv read without a key), the
/// divergence is reported per map key; an absent entry reads as nil.
fn split_maps(replicas: &[ReplicaValue]) -> Option<Vec<DivergedKey>> {
    let maps: Vec<&[(Value, Value)]> = replicas
        .iter()
        .map(|rv| match &rv.value {
            Value::Map(e) => Some(e.as_slice()),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let mut keys: Vec<&Value> = maps.iter().flat_map(|m| m.iter().map(|(k, _)| k)).collect();
    keys.sort();
    keys.dedup();
    let mut out = Vec::new();
    for k in keys {
        let per_node: Vec<ReplicaValue> = replicas
            .iter()
            .zip(&maps)
            .map(|(rv, m)| ReplicaValue {
                node: rv.node.clone(),
                value: m
                    .iter()
                    .find(|(mk, _)| mk == k)
                    .map_or(Value::Nil, |(_, v)| v.clone()),
                read: rv.read,
            })
            .collect();
        let groups = group_by_value(per_node);
        if groups.len() > 1 {
            out.push(DivergedKey {
                key: Some(k.clone()),
                groups,
            });
        }
    }
    Some(out)
}

pub fn check_convergence(
    h: &History,
    opts: &CheckOptions,
) -> Result<ConvergenceResult, CheckError> {
    let unordered = param::<bool>(opts, "unordered")?.unwrap_or(false);
    let expected_nodes: Vec<String> = opts.params.get("nodes").map_or(Vec::new(), |t| {
        t.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    });
    let windows = fault_windows(h);
    let never_healed = windows.iter().any(|w| w.closed_at.is_none());
    let heal = windows.iter().filter_map(|w| w.closed_at).max();
    let heal_ms = heal.and_then(|p| h.ops[p].time.map(ms));
    let explicit = h
        .ops
        .iter()
        .any(|o| o.is_client() && o.is_ok() && o.f == "final-read");
    // Quiescence: reads count only once the last heal and every update are over.
    let last_update = h
        .client_pairs()
        .filter(|&(inv, _)| !matches!(h.ops[inv].f.as_str(), "read" | "final-read"))
        .map(|(inv, comp)| comp.unwrap_or(inv))
        .max();
    let quiet_from = heal.max(last_update);
    // Per key: per node: (invocation, completion, value) in order.
    type Reads = Vec<(usize, usize, Value)>;
    let mut by_key: FxMap<Option<Value>, BTreeMap<String, Reads>> = FxMap::default();
    let mut key_order: Vec<Option<Value>> = Vec::new();
    let mut count = 0;
    for (inv, comp) in h.client_pairs() {
        let Some(c) = comp.filter(|&c| h.ops[c].is_ok()) else {
            continue;
        };
        let op = &h.ops[inv];
        let wanted = if explicit {
            op.f == "final-read"
        } else {
            op.f == "read" && quiet_from.is_none_or(|p| inv > p)
        };
        if !wanted {
            continue;
        }
        count += 1;
        let node = h.ops[c]
            .node
            .as_ref()
            .or(op.node.as_ref())
            .map_or_else(|| format!("process {}", op.process), |n| n.to_string());
        let nodes = by_key.entry(op.key.clone()).or_insert_with(|| {
            key_order.push(op.key.clone());
            BTreeMap::new()
        });
        nodes
            .entry(node)
            .or_default()
            .push((inv, c, normalize(&h.ops[c].value, unordered)));
    }
    let mut all_nodes: Vec<String> = by_key.values().flat_map(|m| m.keys().cloned()).collect();
    all_nodes.sort();
    all_nodes.dedup();
    let nodes_missing: Vec<String> = expected_nodes
        .iter()
        .filter(|n| !all_nodes.contains(n))
        .cloned()
        .collect();
    let mut r = ConvergenceResult {
        verdict: Verdict::Valid,
        heal,
        heal_ms,
        final_read_count: count,
        nodes: all_nodes,
        nodes_missing,
        key_count: key_order.len(),
        diverged: Vec::new(),
        converged_ms_per_node: BTreeMap::new(),
        converged_ms: None,
    };
    for key in &key_order {
        let nodes = &by_key[key];
        let replicas: Vec<ReplicaValue> = nodes
            .iter()
            .filter_map(|(node, reads)| {
                reads.last().map(|(_, c, v)| ReplicaValue {
                    node: node.clone(),
                    value: v.clone(),
                    read: *c,
                })
            })
            .collect();
        let whole = group_by_value(replicas.clone());
        if whole.len() > 1 {
            match split_maps(&replicas).filter(|_| key.is_none()) {
                Some(per_key) => r.diverged.extend(per_key),
                None => r.diverged.push(DivergedKey {
                    key: key.clone(),
                    groups: whole,
                }),
            }
            continue;
        }
        for (node, reads) in nodes {
            let Some((_, _, last)) = reads.last() else {
                continue;
            };
            let run_start = reads
                .iter()
                .rposition(|(_, _, v)| v != last)
                .map_or(0, |p| p + 1);
            let t = h.ops[reads[run_start].0].time.map(ms);
            if let Some(t) = t {
                let after = (t - heal_ms.unwrap_or(0.0)).max(0.0);
                let e = r.converged_ms_per_node.entry(node.clone()).or_insert(after);
                *e = e.max(after);
            }
        }
    }
    r.converged_ms = r.converged_ms_per_node.values().copied().reduce(f64::max);
    r.verdict = if !r.diverged.is_empty() {
        Verdict::Invalid
    } else if count == 0 || never_healed || !r.nodes_missing.is_empty() {
        Verdict::Unknown
    } else {
        Verdict::Valid
    };
    Ok(r)
}

impl CheckOutcome for ConvergenceResult {
    fn verdict(&self) -> Verdict {
        self.verdict
    }
    fn anomaly_types(&self) -> Vec<String> {
        if self.diverged.is_empty() {
            Vec::new()
        } else {
            vec!["diverged".to_string()]
        }
    }
    fn explain(&self) -> String {
        let mut s = format!(
            "{} final reads of {} keys from {} replicas ({})\n",
            self.final_read_count,
            self.key_count,
            self.nodes.len(),
            self.nodes.join(", ")
        );
        if self.final_read_count == 0 {
            s += "no final reads, cannot judge\n";
        }
        if !self.nodes_missing.is_empty() {
            s += &format!("replicas never read: {}\n", self.nodes_missing.join(", "));
        }
        for d in &self.diverged {
            let key = d
                .key
                .as_ref()
                .map_or("the register".to_string(), |k| format!("key {k}"));
            let parts: Vec<String> = d
                .groups
                .iter()
                .map(|g| {
                    let nodes: Vec<&str> = g.iter().map(|rv| rv.node.as_str()).collect();
                    format!("{} on {}", g[0].value, nodes.join(", "))
                })
                .collect();
            s += &format!("{key} diverged: {}\n", parts.join("; "));
        }
        if let Some(c) = self.converged_ms {
            s += &format!("converged {c} ms after the last heal\n");
        }
        s
    }
}
