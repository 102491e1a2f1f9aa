//! List-append inference (Elle 2020 §5.1): every read of a key is a prefix of
//! one version order, recovered from the longest read; appends are unique, so
//! each element names the txn that wrote it.

use splitbrain_history::{CheckError, Value};

use crate::fx::FxMap;
use crate::graph::{EdgeList, RW, WR, WW};
use crate::txn::{MopKind, Status, Txns, NONE};
use crate::Findings;

pub(crate) struct ListAppend<'h> {
    /// Which append wrote each (key, element).
    writer: FxMap<(u32, Elem<'h>), u32>,
    /// Per key: the longest read, in order.
    longest: Vec<&'h [Value]>,
    /// Per key: the append mop of each element of the longest read (NONE: nobody appended it).
    order: Vec<Vec<u32>>,
    /// Per mop: an append's position in its key's order (NONE when unobserved).
    pos: Vec<u32>,
}

/// An element as a hash key: integers (the usual case) by value, so lookups
/// neither chase a pointer nor hash the enum; anything else by reference.
/// Integral floats count as integers, as `Value`'s own equality has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Elem<'h> {
    Int(i64),
    Other(&'h Value),
}

impl<'h> Elem<'h> {
    #[inline]
    fn of(v: &'h Value) -> Elem<'h> {
        match v {
            Value::Int(i) => Elem::Int(*i),
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Elem::Int(*f as i64),
            other => Elem::Other(other),
        }
    }
}

pub(crate) fn read_list(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Nil => Some(&[]),
        Value::List(items) => Some(items),
        _ => None,
    }
}

impl<'h> ListAppend<'h> {
    pub fn infer(
        tx: &Txns<'h>,
        edges: &mut EdgeList,
        found: &mut Findings,
    ) -> Result<ListAppend<'h>, CheckError> {
        let nkeys = tx.keys.len();
        let status = |m: u32| tx.txns[tx.mop_txn[m as usize] as usize].status;
        // Which append wrote each (key, element).
        let mut writer: FxMap<(u32, Elem<'h>), u32> = FxMap::default();
        writer.reserve(tx.mops.len() / 2);
        for (i, m) in tx.mops.iter().enumerate() {
            if m.kind != MopKind::Append {
                continue;
            }
            if let Some(prev) = writer.insert((m.key, Elem::of(m.value)), i as u32) {
                let t = tx.mop_txn[i] as usize;
                return Err(CheckError::bad_op(
                    crate::txn_position(tx, t as u32),
                    format!(
                        "append of {} to key {} repeats the append at op {}; list-append needs unique values per key",
                        m.value,
                        tx.keys[m.key as usize],
                        crate::txn_position(tx, tx.mop_txn[prev as usize])
                    ),
                ));
            }
        }
        // The longest read of each key.
        let mut longest: Vec<&'h [Value]> = vec![&[]; nkeys];
        let mut longest_txn = vec![NONE; nkeys];
        for (t, txn) in tx.txns.iter().enumerate() {
            if txn.status != Status::Ok {
                continue;
            }
            for i in tx.mops_of(t as u32) {
                let m = &tx.mops[i];
                if m.kind != MopKind::Read {
                    continue;
                }
                let Some(l) = read_list(m.value) else {
                    return Err(CheckError::bad_op(
                        txn.complete as usize,
                        format!(
                            "read of key {} returned {}, not a list",
                            tx.keys[m.key as usize], m.value
                        ),
                    ));
                };
                if l.len() > longest[m.key as usize].len() || longest_txn[m.key as usize] == NONE {
                    longest[m.key as usize] = l;
                    longest_txn[m.key as usize] = t as u32;
                }
            }
        }
        // Version orders, ww edges, and the per-key landmarks reads are checked against.
        let mut pos = vec![NONE; tx.mops.len()];
        let mut order = Vec::with_capacity(nkeys);
        let mut first_garbage = vec![NONE; nkeys];
        let mut first_aborted = vec![NONE; nkeys];
        for k in 0..nkeys {
            let mut ord = Vec::with_capacity(longest[k].len());
            let mut prev_txn = NONE;
            let mut aborted_txn = NONE;
            let mut dup_reported = false;
            for (p, e) in longest[k].iter().enumerate() {
                let m = writer
                    .get(&(k as u32, Elem::of(e)))
                    .copied()
                    .unwrap_or(NONE);
                ord.push(m);
                if m == NONE {
                    if first_garbage[k] == NONE {
                        first_garbage[k] = p as u32;
                    }
                    continue;
                }
                if pos[m as usize] != NONE {
                    if !dup_reported {
                        dup_reported = true;
                        found.add(
                            "duplicate-elements",
                            vec![longest_txn[k]],
                            Some(k as u32),
                            format!("read of key {} holds {} more than once", tx.keys[k], e),
                        );
                    }
                    continue;
                }
                pos[m as usize] = p as u32;
                let t = tx.mop_txn[m as usize];
                match status(m) {
                    Status::Fail => {
                        if first_aborted[k] == NONE {
                            first_aborted[k] = p as u32;
                        }
                        if aborted_txn == NONE {
                            aborted_txn = t;
                        }
                    }
                    s => {
                        if aborted_txn != NONE && s == Status::Ok {
                            found.add(
                                "dirty-update",
                                vec![aborted_txn, t],
                                Some(k as u32),
                                format!(
                                    "key {}: a committed append follows an aborted txn's append in the version order",
                                    tx.keys[k]
                                ),
                            );
                            aborted_txn = NONE;
                        }
                        if prev_txn != NONE && prev_txn != t {
                            edges.add(prev_txn, t, WW);
                        }
                        prev_txn = t;
                    }
                }
            }
            order.push(ord);
        }
        let la = ListAppend {
            writer,
            longest,
            order,
            pos,
        };
        // Reads: wr and rw edges, and the anomalies a single read shows.
        // Readers that saw every observed append of a key (no later writer
        // is known to them), for the unread appends below.
        let mut tail_readers: Vec<Vec<u32>> = vec![Vec::new(); nkeys];
        let mut lost: FxMap<(u32, u32), u32> = FxMap::default();
        for (t, txn) in tx.txns.iter().enumerate() {
            let t = t as u32;
            if txn.status != Status::Ok {
                continue;
            }
            let range = tx.mops_of(t);
            for i in range.clone() {
                let m = &tx.mops[i];
                if m.kind != MopKind::Read {
                    continue;
                }
                let k = m.key as usize;
                let elems = read_list(m.value).unwrap_or(&[]);
                let n = elems.len();
                let full = la.longest[k];
                let is_prefix = n <= full.len()
                    && (std::ptr::eq(elems.as_ptr(), full.as_ptr()) || elems == &full[..n]);
                if !is_prefix {
                    found.add(
                        "incompatible-order",
                        vec![t, longest_txn[k]],
                        Some(m.key),
                        format!(
                            "key {}: read {} is not a prefix of read {}",
                            tx.keys[k],
                            Value::list(elems.to_vec()),
                            Value::list(full.to_vec())
                        ),
                    );
                    for e in elems {
                        match la.writer.get(&(m.key, Elem::of(e))) {
                            None => found.add(
                                "garbage-read",
                                vec![t],
                                Some(m.key),
                                format!(
                                    "read {} from key {}, which nobody appended",
                                    e, tx.keys[k]
                                ),
                            ),
                            Some(&w) if status(w) == Status::Fail => found.add(
                                "G1a",
                                vec![t, tx.mop_txn[w as usize]],
                                Some(m.key),
                                format!(
                                    "read {} from key {}, appended by an aborted txn",
                                    e, tx.keys[k]
                                ),
                            ),
                            _ => {}
                        }
                    }
                    if let Some(&w) = elems
                        .last()
                        .and_then(|e| la.writer.get(&(m.key, Elem::of(e))))
                    {
                        let wt = tx.mop_txn[w as usize];
                        if status(w) != Status::Fail {
                            edges.add(wt, t, WR);
                        }
                    }
                    continue;
                }
                if (first_garbage[k] as usize) < n {
                    found.add(
                        "garbage-read",
                        vec![t],
                        Some(m.key),
                        format!(
                            "read {} from key {}, which nobody appended",
                            full[first_garbage[k] as usize], tx.keys[k]
                        ),
                    );
                }
                if (first_aborted[k] as usize) < n {
                    let w = la.order[k][first_aborted[k] as usize];
                    found.add(
                        "G1a",
                        vec![t, tx.mop_txn[w as usize]],
                        Some(m.key),
                        format!(
                            "read {} from key {}, appended by an aborted txn",
                            full[first_aborted[k] as usize], tx.keys[k]
                        ),
                    );
                }
                // Future read: an element this txn appends only later.
                for j in i + 1..range.end {
                    let o = &tx.mops[j];
                    if o.kind == MopKind::Append && o.key == m.key && (la.pos[j] as usize) < n {
                        found.add(
                            "future-read",
                            vec![t],
                            Some(m.key),
                            format!(
                                "read key {} = {} before appending {}",
                                tx.keys[k], m.value, o.value
                            ),
                        );
                    }
                }
                // Every read orders its txn, a later one too (Elle's wr and rw
                // graphs take all reads): a txn that reads a key twice and sees a
                // newer version the second time read both versions.
                if n > 0 {
                    let w = la.order[k][n - 1];
                    if w != NONE && status(w) != Status::Fail {
                        let wt = tx.mop_txn[w as usize];
                        if wt != t {
                            if !tx.mops[w as usize].final_write {
                                found.add(
                                    "G1b",
                                    vec![t, wt],
                                    Some(m.key),
                                    format!(
                                        "read key {} = {}, ending in an append that was not its writer's last",
                                        tx.keys[k], m.value
                                    ),
                                );
                            }
                            edges.add(wt, t, WR);
                        }
                    }
                }
                match la.next_writer(tx, k, n) {
                    Some(next) => edges.add(t, next, RW),
                    None => tail_readers[k].push(t),
                }
                if !m.ext_read {
                    continue;
                }
                // Lost update: two committed txns read the same version and both append.
                let appends_later = (i + 1..range.end).any(|j| {
                    let o = &tx.mops[j];
                    o.kind == MopKind::Append && o.key == m.key
                });
                if appends_later {
                    let first = *lost.entry((m.key, n as u32)).or_insert(t);
                    if first != t {
                        found.add(
                            "lost-update",
                            vec![first, t],
                            Some(m.key),
                            format!(
                                "both read key {} = {} and appended to it",
                                tx.keys[k], m.value
                            ),
                        );
                    }
                }
            }
            internal_check(tx, t, found);
        }
        la.unread_appends(tx, &tail_readers, edges);
        Ok(la)
    }

    /// The first txn after position `n` of key `k`'s order whose append a
    /// reader of the first `n` elements did not see (skipping elements
    /// nobody appended and aborted appends).
    fn next_writer(&self, tx: &Txns, k: usize, n: usize) -> Option<u32> {
        self.order[k][n.min(self.order[k].len())..]
            .iter()
            .filter(|&&w| w != NONE)
            .map(|&w| tx.mop_txn[w as usize])
            .find(|&wt| tx.txns[wt as usize].status != Status::Fail)
    }

    /// The last txn in key `k`'s observed order that may have committed.
    fn last_writer(&self, tx: &Txns, k: usize) -> Option<u32> {
        self.order[k]
            .iter()
            .rev()
            .filter(|&&w| w != NONE)
            .map(|&w| tx.mop_txn[w as usize])
            .find(|&wt| tx.txns[wt as usize].status != Status::Fail)
    }

    /// Elle's rule for appends no read shows (Kingsbury & Alvaro 2020 §5.1;
    /// Elle's `previously-appended-element`): every read of a key is a prefix
    /// of the key's final list, and an append that committed (or may have) is
    /// in it, so an unread append follows every observed element: a ww edge
    /// from the last observed writer, and an rw edge from every reader that
    /// saw all observed elements (the initial empty list when none is).
    /// Unread appends stay unordered among themselves.
    fn unread_appends(&self, tx: &Txns, tail_readers: &[Vec<u32>], edges: &mut EdgeList) {
        for (j, m) in tx.mops.iter().enumerate() {
            if m.kind != MopKind::Append || self.pos[j] != NONE {
                continue;
            }
            let u = tx.mop_txn[j];
            if tx.txns[u as usize].status == Status::Fail {
                continue;
            }
            // A txn's several unread appends to one key share their edges: take its last.
            let later_unread = (j + 1..tx.mops_of(u).end).any(|i| {
                let o = &tx.mops[i];
                o.kind == MopKind::Append && o.key == m.key && self.pos[i] == NONE
            });
            if later_unread {
                continue;
            }
            let k = m.key as usize;
            if let Some(w) = self.last_writer(tx, k) {
                edges.add(w, u, WW);
            }
            for &r in &tail_readers[k] {
                edges.add(r, u, RW);
            }
        }
    }

    /// The value of `t`'s append to key `k` that no read shows, if any.
    fn unread_append_of<'t>(&self, tx: &Txns<'t>, t: u32, k: u32) -> Option<&'t Value> {
        tx.mops_of(t)
            .find(|&j| {
                let m = &tx.mops[j];
                m.kind == MopKind::Append && m.key == k && self.pos[j] == NONE
            })
            .map(|j| tx.mops[j].value)
    }

    /// Why `a` precedes `b` by an edge of `kind`, for the explanation.
    pub fn reason(
        &self,
        tx: &Txns,
        a: u32,
        b: u32,
        kind: u8,
        na: &str,
        nb: &str,
    ) -> Option<String> {
        match kind {
            WW => {
                for j in tx.mops_of(b) {
                    let m = &tx.mops[j];
                    let k = m.key as usize;
                    if m.kind == MopKind::Append
                        && self.pos[j] == NONE
                        && self.last_writer(tx, k) == Some(a)
                    {
                        let last = self.longest[k]
                            .last()
                            .map_or(String::new(), |v| v.to_string());
                        return Some(format!(
                            "{nb}'s append of {} to key {} was never read; every read of {} is a prefix of its final value, so {} follows {}, which {na} appended",
                            m.value, tx.keys[k], tx.keys[k], m.value, last
                        ));
                    }
                }
                for j in tx.mops_of(b) {
                    let m = &tx.mops[j];
                    if m.kind != MopKind::Append || self.pos[j] == NONE {
                        continue;
                    }
                    let ord = &self.order[m.key as usize];
                    for q in (0..self.pos[j] as usize).rev() {
                        let w = ord[q];
                        if w == NONE {
                            continue;
                        }
                        let wt = tx.mop_txn[w as usize];
                        if wt == a {
                            return Some(format!(
                                "{nb} appended {} to key {} after {na} appended {}",
                                m.value, tx.keys[m.key as usize], tx.mops[w as usize].value
                            ));
                        }
                        if wt != b && tx.txns[wt as usize].status != Status::Fail {
                            break;
                        }
                    }
                }
                None
            }
            WR => {
                for j in tx.mops_of(b) {
                    let m = &tx.mops[j];
                    if m.kind != MopKind::Read {
                        continue;
                    }
                    let Some(last) = read_list(m.value).and_then(|l| l.last()) else {
                        continue;
                    };
                    if let Some(&w) = self.writer.get(&(m.key, Elem::of(last))) {
                        if tx.mop_txn[w as usize] == a {
                            return Some(format!(
                                "{nb} read {na}'s append of {} to key {}",
                                last, tx.keys[m.key as usize]
                            ));
                        }
                    }
                }
                None
            }
            RW => {
                for j in tx.mops_of(a) {
                    let m = &tx.mops[j];
                    if m.kind != MopKind::Read {
                        continue;
                    }
                    let k = m.key as usize;
                    let n = read_list(m.value).map_or(0, |l| l.len());
                    let ord = &self.order[k];
                    match self.next_writer(tx, k, n) {
                        Some(w) if w == b => {
                            let v = ord[n..]
                                .iter()
                                .find(|&&w| w != NONE && tx.mop_txn[w as usize] == b)
                                .map(|&w| tx.mops[w as usize].value.to_string())
                                .unwrap_or_default();
                            return Some(format!(
                                "{na} read key {} = {} and did not see {nb}'s append of {v}",
                                tx.keys[k], m.value
                            ));
                        }
                        Some(_) => {}
                        None => {
                            if let Some(v) = self.unread_append_of(tx, b, m.key) {
                                let seen = match read_list(m.value).and_then(|l| l.last()) {
                                    Some(last) => format!("{last}, which {na} read"),
                                    None => format!("the initial empty list, which {na} read"),
                                };
                                return Some(format!(
                                    "{na} read key {} = {}; {nb}'s append of {v} to key {} was never read; every read of {} is a prefix of its final value, so {v} follows {seen}",
                                    tx.keys[k], m.value, tx.keys[k], tx.keys[k]
                                ));
                            }
                        }
                    }
                }
                None
            }
            _ => None,
        }
    }
}

/// What a txn knows of one key: (key, last read, appended since).
type KeyState<'a> = (u32, Option<&'a [Value]>, Vec<&'a Value>);

/// A txn's reads must agree with its own earlier reads and appends.
fn internal_check(tx: &Txns, t: u32, found: &mut Findings) {
    let range = tx.mops_of(t);
    // Only a key the txn touches twice can disagree with itself.
    let mops = &tx.mops[range.clone()];
    let repeats = (1..mops.len()).any(|i| mops[..i].iter().any(|o| o.key == mops[i].key));
    if !repeats {
        return;
    }
    // Per key: (known prefix, appended since); `None` prefix means "never read".
    let mut state: Vec<KeyState> = Vec::new();
    for i in range {
        let m = &tx.mops[i];
        let slot = state.iter().position(|s| s.0 == m.key);
        match m.kind {
            MopKind::Append | MopKind::Write => match slot {
                Some(s) => state[s].2.push(m.value),
                None => state.push((m.key, None, vec![m.value])),
            },
            MopKind::Read => {
                let elems = read_list(m.value).unwrap_or(&[]);
                if let Some(s) = slot {
                    let (_, base, extra) = &state[s];
                    let ok = match base {
                        Some(b) => {
                            elems.len() == b.len() + extra.len()
                                && elems[..b.len()] == **b
                                && elems[b.len()..].iter().zip(extra).all(|(x, y)| x == *y)
                        }
                        None => {
                            elems.len() >= extra.len()
                                && elems[elems.len() - extra.len()..]
                                    .iter()
                                    .zip(extra)
                                    .all(|(x, y)| x == *y)
                        }
                    };
                    if !ok {
                        let mut expected: Vec<String> = base.map_or(vec!["...".into()], |b| {
                            b.iter().map(|v| v.to_string()).collect()
                        });
                        expected.extend(extra.iter().map(|v| v.to_string()));
                        found.add(
                            "internal",
                            vec![t],
                            Some(m.key),
                            format!(
                                "read key {} = {} but its own earlier ops imply [{}]",
                                tx.keys[m.key as usize],
                                m.value,
                                expected.join(" ")
                            ),
                        );
                    }
                    state[s] = (m.key, Some(elems), Vec::new());
                } else {
                    state.push((m.key, Some(elems), Vec::new()));
                }
            }
        }
    }
}
