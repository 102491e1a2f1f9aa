//! Read-write register inference (Elle 2020 §5.2): writes are unique per
//! key, so a read names the txn that wrote it. Version orders come only from
//! sound sources: the initial state (nil precedes every write) and
//! writes-follow-reads within a txn (a txn that read v1 and then wrote v2 on
//! the same key installed v2 after v1). Writes-follow-reads assumes a txn's
//! write is installed after the version it read, which a database that lets
//! txns read uncommitted data need not do; the `wfr-keys=false` parameter
//! turns it off, as Elle's `:wfr-keys?` option does.

use splitbrain_history::{CheckError, Value};

use crate::fx::FxMap;
use crate::graph::{EdgeList, Graph, LocalIndex, RW, WR, WW};
use crate::txn::{MopKind, Status, Txns};
use crate::Findings;

pub(crate) struct RwRegister<'h> {
    writer: FxMap<(u32, &'h Value), u32>,
    /// Version order edges (from version, to version); a version is a write
    /// mop, or `nmops + key` for a key's initial nil.
    vedges: Vec<(u32, u32)>,
    nmops: u32,
}

/// Which sources of version order to trust beyond the initial state.
#[derive(Debug, Clone, Copy)]
pub(crate) struct VersionSources {
    /// A txn's write follows the version it read of the same key.
    pub writes_follow_reads: bool,
    /// Each key is sequentially consistent: a process's later txn sees or
    /// writes a version no older than its earlier txn did.
    pub sequential_keys: bool,
    /// Each key is linearizable: the same across processes in real time.
    pub linearizable_keys: bool,
}

impl<'h> RwRegister<'h> {
    pub fn infer(
        tx: &Txns<'h>,
        edges: &mut EdgeList,
        found: &mut Findings,
        sources: VersionSources,
    ) -> Result<RwRegister<'h>, CheckError> {
        let writes_follow_reads = sources.writes_follow_reads;
        let nmops = tx.mops.len() as u32;
        let status = |m: u32| tx.txns[tx.mop_txn[m as usize] as usize].status;
        let mut writer: FxMap<(u32, &'h Value), u32> = FxMap::default();
        for (i, m) in tx.mops.iter().enumerate() {
            if m.kind != MopKind::Write {
                continue;
            }
            if m.value.is_nil() {
                return Err(CheckError::bad_op(
                    crate::txn_position(tx, tx.mop_txn[i]),
                    format!(
                        "write of nil to key {}; nil is the initial state",
                        tx.keys[m.key as usize]
                    ),
                ));
            }
            if let Some(prev) = writer.insert((m.key, m.value), i as u32) {
                return Err(CheckError::bad_op(
                    crate::txn_position(tx, tx.mop_txn[i]),
                    format!(
                        "write of {} to key {} repeats the write at op {}; rw-register needs unique values per key",
                        m.value,
                        tx.keys[m.key as usize],
                        crate::txn_position(tx, tx.mop_txn[prev as usize])
                    ),
                ));
            }
        }
        // Versions each ok txn read externally: (version, reader).
        let mut reads: Vec<(u32, u32)> = Vec::new();
        let mut vedges: Vec<(u32, u32)> = Vec::new();
        let mut lost: FxMap<u32, u32> = FxMap::default();
        for (t, txn) in tx.txns.iter().enumerate() {
            let t = t as u32;
            if txn.status == Status::Fail {
                continue;
            }
            let range = tx.mops_of(t);
            for i in range.clone() {
                let m = &tx.mops[i];
                if m.kind != MopKind::Read || txn.status != Status::Ok {
                    continue;
                }
                let k = m.key as usize;
                let version = if m.value.is_nil() {
                    nmops + m.key
                } else {
                    match writer.get(&(m.key, m.value)) {
                        None => {
                            found.add(
                                "garbage-read",
                                vec![t],
                                Some(m.key),
                                format!(
                                    "read {} from key {}, which nobody wrote",
                                    m.value, tx.keys[k]
                                ),
                            );
                            continue;
                        }
                        Some(&w) => {
                            let wt = tx.mop_txn[w as usize];
                            if status(w) == Status::Fail {
                                found.add(
                                    "G1a",
                                    vec![t, wt],
                                    Some(m.key),
                                    format!(
                                        "read {} from key {}, written by an aborted txn",
                                        m.value, tx.keys[k]
                                    ),
                                );
                            } else if wt == t && w as usize > i {
                                found.add(
                                    "future-read",
                                    vec![t],
                                    Some(m.key),
                                    format!(
                                        "read key {} = {} before writing it",
                                        tx.keys[k], m.value
                                    ),
                                );
                            } else if wt != t && !tx.mops[w as usize].final_write {
                                found.add(
                                    "G1b",
                                    vec![t, wt],
                                    Some(m.key),
                                    format!(
                                        "read key {} = {}, a write its writer later overwrote",
                                        tx.keys[k], m.value
                                    ),
                                );
                            }
                            w
                        }
                    }
                };
                if !m.ext_read {
                    continue;
                }
                if version < nmops {
                    let wt = tx.mop_txn[version as usize];
                    if wt != t && status(version) != Status::Fail {
                        edges.add(wt, t, WR);
                    }
                }
                reads.push((version, t));
                // Writes-follow-reads: this txn's final write to the key follows what it read.
                let later_write =
                    (i + 1..range.end).find(|&j| tx.mops[j].key == m.key && tx.mops[j].final_write);
                if let Some(j) = later_write {
                    if writes_follow_reads {
                        vedges.push((version, j as u32));
                    }
                    let first = *lost.entry(version).or_insert(t);
                    if first != t {
                        found.add(
                            "lost-update",
                            vec![first, t],
                            Some(m.key),
                            format!("both read key {} = {} and wrote it", tx.keys[k], m.value),
                        );
                    }
                }
            }
            if txn.status == Status::Ok {
                internal_check(tx, t, found);
            }
        }
        if sources.sequential_keys || sources.linearizable_keys {
            key_order_vedges(tx, &writer, nmops, sources, &mut vedges);
        }
        // The initial nil precedes every version that has no known predecessor.
        let mut has_pred = vec![false; tx.mops.len()];
        for &(_, to) in &vedges {
            if to < nmops {
                has_pred[to as usize] = true;
            }
        }
        for (i, m) in tx.mops.iter().enumerate() {
            if m.kind == MopKind::Write
                && m.final_write
                && !has_pred[i]
                && status(i as u32) != Status::Fail
            {
                vedges.push((nmops + m.key, i as u32));
            }
        }
        drop(has_pred);
        cyclic_versions(tx, &vedges, nmops, found);
        // ww and rw edges from the version order.
        reads.sort_unstable();
        vedges.sort_unstable();
        vedges.dedup();
        let mut r = 0;
        for &(from, to) in &vedges {
            // Key-order sources may order a version before a read of nil or
            // of an aborted write; those say nothing about committed txns.
            if to >= nmops || status(to) == Status::Fail {
                continue;
            }
            let to_txn = tx.mop_txn[to as usize];
            if from < nmops {
                let from_txn = tx.mop_txn[from as usize];
                if status(from) == Status::Fail {
                    if status(to) == Status::Ok {
                        found.add(
                            "dirty-update",
                            vec![from_txn, to_txn],
                            Some(tx.mops[to as usize].key),
                            format!(
                                "key {}: {} overwrote {}, written by an aborted txn",
                                tx.keys[tx.mops[to as usize].key as usize],
                                tx.mops[to as usize].value,
                                tx.mops[from as usize].value
                            ),
                        );
                    }
                } else {
                    edges.add(from_txn, to_txn, WW);
                }
            }
            while r < reads.len() && reads[r].0 < from {
                r += 1;
            }
            let mut q = r;
            while q < reads.len() && reads[q].0 == from {
                edges.add(reads[q].1, to_txn, RW);
                q += 1;
            }
        }
        Ok(RwRegister {
            writer,
            vedges,
            nmops,
        })
    }

    fn version_text(&self, tx: &Txns, v: u32) -> String {
        if v >= self.nmops {
            "nil".into()
        } else {
            tx.mops[v as usize].value.to_string()
        }
    }

    /// The version an ext read of mop `j` saw.
    fn read_version(&self, tx: &Txns, j: usize) -> Option<u32> {
        let m = &tx.mops[j];
        if m.value.is_nil() {
            Some(self.nmops + m.key)
        } else {
            self.writer.get(&(m.key, m.value)).copied()
        }
    }

    fn has_vedge(&self, from: u32, to: u32) -> bool {
        self.vedges.binary_search(&(from, to)).is_ok()
    }

    pub fn reason(
        &self,
        tx: &Txns,
        a: u32,
        b: u32,
        kind: u8,
        na: &str,
        nb: &str,
    ) -> Option<String> {
        let key = |k: u32| tx.keys[k as usize];
        let ext_reads = |t: u32| {
            tx.mops_of(t)
                .filter(|&j| tx.mops[j].kind == MopKind::Read && tx.mops[j].ext_read)
        };
        match kind {
            WR => ext_reads(b).find_map(|j| {
                let v = self.read_version(tx, j)?;
                (v < self.nmops && tx.mop_txn[v as usize] == a).then(|| {
                    format!("{nb} read {na}'s write of {} to key {}", tx.mops[j].value, key(tx.mops[j].key))
                })
            }),
            WW => ext_reads(b).find_map(|j| {
                let v = self.read_version(tx, j)?;
                if v >= self.nmops || tx.mop_txn[v as usize] != a {
                    return None;
                }
                let w = tx.mops_of(b).find(|&w| {
                    tx.mops[w].key == tx.mops[j].key && tx.mops[w].final_write && self.has_vedge(v, w as u32)
                })?;
                Some(format!(
                    "{nb} read {na}'s write of {} to key {} and then overwrote it with {}",
                    tx.mops[j].value,
                    key(tx.mops[j].key),
                    tx.mops[w].value
                ))
            }),
            RW => ext_reads(a).find_map(|j| {
                let v = self.read_version(tx, j)?;
                let w = tx.mops_of(b).find(|&w| {
                    tx.mops[w].key == tx.mops[j].key && tx.mops[w].final_write && self.has_vedge(v, w as u32)
                })?;
                Some(if v >= self.nmops {
                    format!(
                        "{na} read key {} = nil (the initial state), and {nb} wrote {}, so {na} did not see it",
                        key(tx.mops[j].key),
                        tx.mops[w].value
                    )
                } else {
                    format!(
                        "{na} read key {} = {}, and {nb} installed {} after that version, so {na} did not see it",
                        key(tx.mops[j].key),
                        self.version_text(tx, v),
                        tx.mops[w].value
                    )
                })
            }),
            _ => None,
        }
    }
}

/// Version-order edges from per-key process or real-time order: for txns
/// T1 before T2 that both touch a key, the last version T1 saw or wrote
/// precedes the first T2 saw or wrote (when they differ).
fn key_order_vedges(
    tx: &Txns,
    writer: &FxMap<(u32, &Value), u32>,
    nmops: u32,
    sources: VersionSources,
    vedges: &mut Vec<(u32, u32)>,
) {
    // (key, txn, first version, last version) for each ok txn and key it touches.
    let mut spans: Vec<(u32, u32, u32, u32)> = Vec::new();
    for (t, txn) in tx.txns.iter().enumerate() {
        if txn.status != Status::Ok {
            continue;
        }
        let range = tx.mops_of(t as u32);
        for i in range.clone() {
            let m = &tx.mops[i];
            if tx.mops[range.start..i].iter().any(|o| o.key == m.key) {
                continue;
            }
            let version = |j: usize| -> Option<u32> {
                let o = &tx.mops[j];
                match o.kind {
                    MopKind::Read if o.value.is_nil() => Some(nmops + o.key),
                    MopKind::Read => writer.get(&(o.key, o.value)).copied(),
                    _ => Some(j as u32),
                }
            };
            let last = (i..range.end)
                .rev()
                .find(|&j| tx.mops[j].key == m.key)
                .unwrap_or(i);
            if let (Some(first), Some(last)) = (version(i), version(last)) {
                spans.push((m.key, t as u32, first, last));
            }
        }
    }
    spans.sort_unstable();
    let mut start = 0;
    while start < spans.len() {
        let key = spans[start].0;
        let end = spans[start..]
            .iter()
            .position(|s| s.0 != key)
            .map_or(spans.len(), |p| start + p);
        let group = &spans[start..end];
        if sources.sequential_keys {
            let mut last_by_process: Vec<(u32, u32)> = Vec::new();
            for &(_, t, first, last) in group {
                let p = tx.txns[t as usize].process;
                match last_by_process.iter_mut().find(|e| e.0 == p) {
                    Some(e) => {
                        if e.1 != first {
                            vedges.push((e.1, first));
                        }
                        e.1 = last;
                    }
                    None => last_by_process.push((p, last)),
                }
            }
        }
        if sources.linearizable_keys {
            // The real-time frontier (see `order_edges`), over this key's txns.
            let mut done: Vec<usize> = (0..group.len()).collect();
            done.sort_unstable_by_key(|&i| tx.txns[group[i].1 as usize].complete);
            let mut frontier: Vec<usize> = Vec::new();
            let mut c = 0;
            for &(_, t, first, _) in group {
                let invoke = tx.txns[t as usize].invoke;
                while c < done.len() && tx.txns[group[done[c]].1 as usize].complete < invoke {
                    let d = done[c];
                    let d_invoke = tx.txns[group[d].1 as usize].invoke;
                    frontier.retain(|&f| tx.txns[group[f].1 as usize].complete > d_invoke);
                    frontier.push(d);
                    c += 1;
                }
                for &f in &frontier {
                    if group[f].3 != first {
                        vedges.push((group[f].3, first));
                    }
                }
            }
        }
        start = end;
    }
}

/// Version orders are supposed to be total; a cycle among inferred versions
/// of one key is itself an anomaly.
fn cyclic_versions(tx: &Txns, vedges: &[(u32, u32)], nmops: u32, found: &mut Findings) {
    let mut ids: FxMap<u32, u32> = FxMap::default();
    let mut list = EdgeList::default();
    let mut back = Vec::new();
    let mut id = |v: u32, back: &mut Vec<u32>| {
        let next = ids.len() as u32;
        *ids.entry(v).or_insert_with(|| {
            back.push(v);
            next
        })
    };
    for &(from, to) in vedges {
        if from >= nmops || to >= nmops {
            continue;
        }
        let a = id(from, &mut back);
        let b = id(to, &mut back);
        list.add(a, b, WW);
    }
    if list.len() == 0 {
        return;
    }
    let g = Graph::build(back.len(), list);
    let mut local = LocalIndex::new(back.len());
    for comp in g.sccs(None, WW, &mut local) {
        let k = tx.mops[back[comp[0] as usize] as usize].key;
        let values: Vec<String> = comp
            .iter()
            .map(|&c| tx.mops[back[c as usize] as usize].value.to_string())
            .collect();
        found.add(
            "cyclic-versions",
            comp.iter()
                .map(|&c| tx.mop_txn[back[c as usize] as usize])
                .collect(),
            Some(k),
            format!(
                "versions {} of key {} each follow the other",
                values.join(", "),
                tx.keys[k as usize]
            ),
        );
    }
}

/// A txn's reads must return its own latest read or write of the key.
fn internal_check(tx: &Txns, t: u32, found: &mut Findings) {
    let range = tx.mops_of(t);
    // Only a key the txn touches twice can disagree with itself.
    let mops = &tx.mops[range.clone()];
    let repeats = (1..mops.len()).any(|i| mops[..i].iter().any(|o| o.key == mops[i].key));
    if !repeats {
        return;
    }
    let mut known: Vec<(u32, &Value)> = Vec::new();
    for i in range {
        let m = &tx.mops[i];
        let slot = known.iter().position(|s| s.0 == m.key);
        if m.kind == MopKind::Read {
            if let Some(s) = slot {
                if known[s].1 != m.value {
                    found.add(
                        "internal",
                        vec![t],
                        Some(m.key),
                        format!(
                            "read key {} = {} but its own earlier ops imply {}",
                            tx.keys[m.key as usize], m.value, known[s].1
                        ),
                    );
                }
            }
        }
        match slot {
            Some(s) => known[s].1 = m.value,
            None => known.push((m.key, m.value)),
        }
    }
}
