//! The transaction dependency graph: a compressed adjacency (CSR) with a
//! bitmask of edge kinds per edge, iterative Tarjan SCCs, and a breadth-first
//! search for the shortest cycle of each anomaly class.

use std::time::Instant;

use crate::txn::NONE;

pub(crate) const WW: u8 = 1;
pub(crate) const WR: u8 = 2;
pub(crate) const RW: u8 = 4;
pub(crate) const PROCESS: u8 = 8;
pub(crate) const REALTIME: u8 = 16;

/// Edges collected during inference, before they are merged into a `Graph`.
#[derive(Default)]
pub(crate) struct EdgeList {
    edges: Vec<(u32, u32, u8)>,
}

impl EdgeList {
    #[inline]
    pub fn add(&mut self, from: u32, to: u32, kind: u8) {
        if from != to {
            self.edges.push((from, to, kind));
        }
    }

    pub fn len(&self) -> usize {
        self.edges.len()
    }
}

pub(crate) struct Graph {
    offsets: Vec<u32>,
    targets: Vec<u32>,
    masks: Vec<u8>,
}

impl Graph {
    /// Merge parallel edges into one edge carrying every kind. A process edge
    /// also orders in real time; keeping only the process bit makes a cycle
    /// through it count as the (stronger) `-process` variant.
    pub fn build(n: usize, list: EdgeList) -> Graph {
        let mut offsets = vec![0u32; n + 1];
        for &(a, _, _) in &list.edges {
            offsets[a as usize + 1] += 1;
        }
        for i in 0..n {
            offsets[i + 1] += offsets[i];
        }
        let mut fill = offsets.clone();
        let mut slots = vec![(0u32, 0u8); list.edges.len()];
        for (a, b, k) in list.edges {
            let f = &mut fill[a as usize];
            slots[*f as usize] = (b, k);
            *f += 1;
        }
        let mut targets = Vec::with_capacity(slots.len());
        let mut masks = Vec::with_capacity(slots.len());
        let mut new_offsets = vec![0u32; n + 1];
        for v in 0..n {
            let run = &mut slots[offsets[v] as usize..offsets[v + 1] as usize];
            run.sort_unstable_by_key(|&(b, _)| b);
            let start = targets.len();
            for &(b, k) in run.iter() {
                if targets.len() > start && *targets.last().unwrap_or(&NONE) == b {
                    *masks.last_mut().unwrap_or(&mut 0) |= k;
                } else {
                    targets.push(b);
                    masks.push(k);
                }
            }
            new_offsets[v + 1] = targets.len() as u32;
        }
        for m in masks.iter_mut() {
            if *m & PROCESS != 0 {
                *m &= !REALTIME;
            }
        }
        Graph {
            offsets: new_offsets,
            targets,
            masks,
        }
    }

    pub fn node_count(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn edge_count(&self) -> usize {
        self.targets.len()
    }

    /// How many edges carry at least one of the `kinds`.
    pub fn count_edges(&self, kinds: u8) -> usize {
        self.masks.iter().filter(|&&m| m & kinds != 0).count()
    }

    #[inline]
    fn edges(&self, v: u32) -> std::ops::Range<usize> {
        self.offsets[v as usize] as usize..self.offsets[v as usize + 1] as usize
    }

    /// Strongly connected components with more than one node of the subgraph
    /// induced by `nodes` (all nodes when `None`) over edges of kinds `allowed`.
    /// Iterative Tarjan: a recursive one overflows the stack on long chains.
    pub fn sccs(
        &self,
        nodes: Option<&[u32]>,
        allowed: u8,
        local: &mut LocalIndex,
    ) -> Vec<Vec<u32>> {
        let m = match nodes {
            Some(ns) => {
                local.assign(ns);
                ns.len()
            }
            None => self.node_count(),
        };
        let global = |i: u32| nodes.map_or(i, |ns| ns[i as usize]);
        let to_local = |g: u32, local: &LocalIndex| {
            if nodes.is_some() {
                local.get(g)
            } else {
                g
            }
        };
        let mut index = vec![NONE; m];
        let mut low = vec![0u32; m];
        let mut on_stack = vec![false; m];
        let mut stack: Vec<u32> = Vec::new();
        let mut call: Vec<(u32, usize)> = Vec::new();
        let mut counter = 0u32;
        let mut out = Vec::new();
        for s in 0..m as u32 {
            if index[s as usize] != NONE {
                continue;
            }
            index[s as usize] = counter;
            low[s as usize] = counter;
            counter += 1;
            stack.push(s);
            on_stack[s as usize] = true;
            call.push((s, self.edges(global(s)).start));
            while let Some(&(v, pos)) = call.last() {
                let end = self.edges(global(v)).end;
                let mut e = pos;
                let mut descended = false;
                while e < end {
                    let (target, mask) = (self.targets[e], self.masks[e]);
                    e += 1;
                    if mask & allowed == 0 {
                        continue;
                    }
                    let w = to_local(target, local);
                    if w == NONE {
                        continue;
                    }
                    if index[w as usize] == NONE {
                        index[w as usize] = counter;
                        low[w as usize] = counter;
                        counter += 1;
                        stack.push(w);
                        on_stack[w as usize] = true;
                        let top = call.len() - 1;
                        call[top].1 = e;
                        call.push((w, self.edges(target).start));
                        descended = true;
                        break;
                    } else if on_stack[w as usize] {
                        low[v as usize] = low[v as usize].min(index[w as usize]);
                    }
                }
                if descended {
                    continue;
                }
                call.pop();
                if let Some(&(u, _)) = call.last() {
                    low[u as usize] = low[u as usize].min(low[v as usize]);
                }
                if low[v as usize] == index[v as usize] {
                    let mut comp = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack[w as usize] = false;
                        comp.push(global(w));
                        if w == v {
                            break;
                        }
                    }
                    if comp.len() > 1 {
                        comp.sort_unstable();
                        out.push(comp);
                    }
                }
            }
        }
        if let Some(ns) = nodes {
            local.clear(ns);
        }
        out
    }
}

/// A reusable global → local node numbering for working inside one component.
pub(crate) struct LocalIndex {
    map: Vec<u32>,
}

impl LocalIndex {
    pub fn new(n: usize) -> Self {
        LocalIndex { map: vec![NONE; n] }
    }
    fn assign(&mut self, nodes: &[u32]) {
        for (i, &g) in nodes.iter().enumerate() {
            self.map[g as usize] = i as u32;
        }
    }
    fn clear(&mut self, nodes: &[u32]) {
        for &g in nodes {
            self.map[g as usize] = NONE;
        }
    }
    #[inline]
    fn get(&self, g: u32) -> u32 {
        self.map[g as usize]
    }
}

/// Cycle anomaly classes, most severe first (Adya 1999 §3-4; Elle 2020 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CycleClass {
    /// Write cycle: only ww edges.
    G0,
    /// Circular information flow: ww and wr edges, at least one wr.
    G1c,
    /// Exactly one item anti-dependency (rw) edge ("read skew").
    GSingleItem,
    /// Several item rw edges, no two adjacent.
    GNonadjacentItem,
    /// Several item rw edges, two of them adjacent ("write skew").
    G2Item,
}

impl CycleClass {
    pub const ALL: [CycleClass; 5] = [
        CycleClass::G0,
        CycleClass::G1c,
        CycleClass::GSingleItem,
        CycleClass::GNonadjacentItem,
        CycleClass::G2Item,
    ];

    /// Elle's name for the class (without a variant suffix).
    pub fn name(self) -> &'static str {
        match self {
            CycleClass::G0 => "G0",
            CycleClass::G1c => "G1c",
            CycleClass::GSingleItem => "G-single-item",
            CycleClass::GNonadjacentItem => "G-nonadjacent-item",
            CycleClass::G2Item => "G2-item",
        }
    }

    /// The data edge kinds a cycle of this class may use.
    pub(crate) fn data_kinds(self) -> u8 {
        match self {
            CycleClass::G0 => WW,
            CycleClass::G1c => WW | WR,
            _ => WW | WR | RW,
        }
    }
}

/// Whether a cycle needs session (process) or real-time order to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Variant {
    Base,
    Process,
    Realtime,
}

impl Variant {
    pub const ALL: [Variant; 3] = [Variant::Base, Variant::Process, Variant::Realtime];

    pub fn suffix(self) -> &'static str {
        match self {
            Variant::Base => "",
            Variant::Process => "-process",
            Variant::Realtime => "-realtime",
        }
    }

    /// The order edge kinds a cycle of this variant may use.
    pub(crate) fn order_kinds(self) -> u8 {
        match self {
            Variant::Base => 0,
            Variant::Process => PROCESS,
            Variant::Realtime => PROCESS | REALTIME,
        }
    }

    /// The order kind a cycle of this variant must use at least once.
    fn required(self) -> u8 {
        match self {
            Variant::Base => 0,
            Variant::Process => PROCESS,
            Variant::Realtime => REALTIME,
        }
    }
}

/// A cycle: `txns[i]` precedes `txns[i+1]` (cyclically) by an edge of kind `kinds[i]`.
#[derive(Debug, Clone)]
pub(crate) struct FoundCycle {
    pub txns: Vec<u32>,
    pub kinds: Vec<u8>,
}

/// Work and time limits for cycle search.
pub(crate) struct SearchBudget {
    pub deadline: Option<Instant>,
    pub cut_short: bool,
    ticks: u64,
}

impl SearchBudget {
    pub fn new(deadline: Option<Instant>) -> Self {
        SearchBudget {
            deadline,
            cut_short: false,
            // Look at the clock on the first tick, then every 16k units of work.
            ticks: 1 << 14,
        }
    }

    /// Count work; true when time is up.
    #[inline]
    pub fn tick(&mut self, work: u64) -> bool {
        self.ticks += work;
        if self.cut_short {
            return true;
        }
        if self.ticks >= 1 << 14 {
            self.ticks = 0;
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                self.cut_short = true;
            }
        }
        self.cut_short
    }
}

const HAS_REQ: u8 = 1;
const HAS_WR: u8 = 2;
const HAS_RW: u8 = 4;
const PREV_RW: u8 = 8;
const STATES: usize = 16;

/// Shortest cycles found for one anomaly class inside one component, and
/// whether the search there was cut short by its work limit.
pub(crate) struct ClassSearch {
    pub cycle: Option<FoundCycle>,
    pub exhausted: bool,
}

/// Search `component` (a strongly connected set of txns) for a shortest
/// cycle of `class`/`variant`. Every such cycle contains an edge of the
/// class's rarest required kind (the anchor), so trying each anchor and
/// closing it with a breadth-first search over (node, flags) states finds
/// one if it exists, with two limits: a walk that revisits a txn is
/// discarded rather than untangled, and a work limit bounds pathological
/// components (reported as `exhausted`).
pub(crate) fn find_cycle(
    g: &Graph,
    component: &[u32],
    class: CycleClass,
    variant: Variant,
    local: &mut LocalIndex,
    budget: &mut SearchBudget,
) -> ClassSearch {
    let allowed = class.data_kinds() | variant.order_kinds();
    let mut best: Option<FoundCycle> = None;
    let mut exhausted = false;
    let subs = g.sccs(Some(component), allowed, local);
    // Kinds every cycle of this class must use at least once.
    let mut required: Vec<u8> = match class {
        CycleClass::G0 => vec![WW],
        CycleClass::G1c => vec![WR],
        _ => vec![RW],
    };
    if variant != Variant::Base {
        required.push(variant.required());
    }
    for sub in subs {
        local.assign(&sub);
        // Count the component's internal edges of each required kind: a
        // missing kind rules the class out here, and the rarest one makes
        // the fewest anchors. An rw anchor stays rw: the search counts rw
        // edges relative to it.
        let counts: Vec<usize> = required
            .iter()
            .map(|&k| {
                sub.iter()
                    .flat_map(|&v| g.edges(v))
                    .filter(|&e| g.masks[e] & k != 0 && local.get(g.targets[e]) != NONE)
                    .count()
            })
            .collect();
        if counts.contains(&0) {
            local.clear(&sub);
            continue;
        }
        let anchor_kind = if required[0] == RW {
            RW
        } else {
            required[(0..required.len()).min_by_key(|&i| counts[i]).unwrap_or(0)]
        };
        let m = sub.len();
        let mut seen = vec![0u32; m * STATES];
        let mut parent = vec![(0u32, 0u8); m * STATES];
        let mut stamp = 0u32;
        let mut successes = 0;
        // Small components try every anchor, so the cycle is the shortest
        // of its class there; big ones settle for the best of a few.
        let max_successes = if m <= 256 { usize::MAX } else { 4 };
        // Enough work to close every anchor in a modest component; big
        // ones get a bounded share and report that the search stopped.
        let limit = (m as u64 * 32).max(2_000_000);
        let mut work = 0u64;
        'anchors: for &a in &sub {
            for e in g.edges(a) {
                if g.masks[e] & anchor_kind == 0 {
                    continue;
                }
                let b = g.targets[e];
                if local.get(b) == NONE {
                    continue;
                }
                stamp += 1;
                let closer = Closer {
                    g,
                    local,
                    sub: &sub,
                    class,
                    variant,
                    allowed,
                    plain: false,
                };
                let found = closer.close(
                    a,
                    b,
                    anchor_kind,
                    &mut seen,
                    &mut parent,
                    stamp,
                    &mut work,
                    budget,
                );
                if let Some(c) = found {
                    if best.as_ref().is_none_or(|b| c.txns.len() < b.txns.len()) {
                        best = Some(c);
                    }
                    successes += 1;
                    if successes >= max_successes
                        || best.as_ref().is_some_and(|b| b.txns.len() == 2)
                    {
                        break 'anchors;
                    }
                }
                if budget.cut_short {
                    break 'anchors;
                }
                if work > limit {
                    exhausted = best.is_none();
                    break 'anchors;
                }
            }
        }
        local.clear(&sub);
        if best.is_some() || budget.cut_short {
            break;
        }
    }
    ClassSearch {
        cycle: best,
        exhausted,
    }
}

/// A shortest cycle through the first node of `component` that has one,
/// over every edge kind, classified by the kinds it uses. A fallback for
/// components where no class search found a simple cycle: every cyclic
/// component yields at least one anomaly.
pub(crate) fn find_any_cycle(
    g: &Graph,
    component: &[u32],
    local: &mut LocalIndex,
    budget: &mut SearchBudget,
) -> Option<(CycleClass, Variant, FoundCycle)> {
    let all = WW | WR | RW | PROCESS | REALTIME;
    local.assign(component);
    let m = component.len();
    let mut seen = vec![0u32; m * STATES];
    let mut parent = vec![(0u32, 0u8); m * STATES];
    let closer = Closer {
        g,
        local,
        sub: component,
        class: CycleClass::G0,
        variant: Variant::Base,
        allowed: all,
        plain: true,
    };
    let mut work = 0u64;
    let mut found = None;
    'nodes: for (stamp, &a) in component.iter().enumerate() {
        for e in g.edges(a) {
            let b = g.targets[e];
            let mask = g.masks[e] & all;
            if mask == 0 || local.get(b) == NONE {
                continue;
            }
            let kind = mask & mask.wrapping_neg();
            found = closer.close(
                a,
                b,
                kind,
                &mut seen,
                &mut parent,
                stamp as u32 + 1,
                &mut work,
                budget,
            );
            if found.is_some() || budget.cut_short {
                break 'nodes;
            }
            break;
        }
    }
    local.clear(component);
    let cycle = found?;
    let (class, variant) = classify(&cycle.kinds);
    Some((class, variant, cycle))
}

/// The class and variant of a cycle with the given edge kinds.
pub(crate) fn classify(kinds: &[u8]) -> (CycleClass, Variant) {
    let n = kinds.len();
    let rw = kinds.iter().filter(|&&k| k == RW).count();
    let adjacent = (0..n).any(|i| kinds[i] == RW && kinds[(i + 1) % n] == RW);
    let class = match rw {
        0 if kinds.contains(&WR) => CycleClass::G1c,
        0 => CycleClass::G0,
        1 => CycleClass::GSingleItem,
        _ if !adjacent => CycleClass::GNonadjacentItem,
        _ => CycleClass::G2Item,
    };
    let variant = if kinds.contains(&REALTIME) {
        Variant::Realtime
    } else if kinds.contains(&PROCESS) {
        Variant::Process
    } else {
        Variant::Base
    };
    (class, variant)
}

/// One breadth-first search closing the anchor `a -> b` back to `a`.
struct Closer<'a> {
    g: &'a Graph,
    local: &'a LocalIndex,
    sub: &'a [u32],
    class: CycleClass,
    variant: Variant,
    allowed: u8,
    /// Any cycle at all: one state per node, so the path found is simple.
    plain: bool,
}

impl Closer<'_> {
    fn step(&self, flags: u8, kind: u8) -> Option<u8> {
        if self.plain {
            return Some(0);
        }
        if kind == RW {
            match self.class {
                CycleClass::GSingleItem => None,
                CycleClass::GNonadjacentItem if flags & PREV_RW != 0 => None,
                CycleClass::GNonadjacentItem => Some(flags | HAS_RW | PREV_RW),
                _ => Some(flags | HAS_RW),
            }
        } else {
            let mut f = flags & !PREV_RW;
            if kind == WR {
                f |= HAS_WR;
            }
            if kind == self.variant.required() {
                f |= HAS_REQ;
            }
            Some(f)
        }
    }

    fn goal(&self, flags: u8) -> bool {
        self.plain
            || (self.variant == Variant::Base || flags & HAS_REQ != 0)
                && (self.class != CycleClass::G1c || flags & HAS_WR != 0)
                && match self.class {
                    CycleClass::GNonadjacentItem => flags & HAS_RW != 0 && flags & PREV_RW == 0,
                    CycleClass::G2Item => flags & HAS_RW != 0,
                    _ => true,
                }
    }

    #[allow(clippy::too_many_arguments)]
    fn close(
        &self,
        a: u32,
        b: u32,
        anchor_kind: u8,
        seen: &mut [u32],
        parent: &mut [(u32, u8)],
        stamp: u32,
        work: &mut u64,
        budget: &mut SearchBudget,
    ) -> Option<FoundCycle> {
        // The anchor is the cycle's first edge. An rw anchor does not count
        // toward "another rw", but forbids an adjacent one.
        let start = if anchor_kind == RW {
            if self.class == CycleClass::GNonadjacentItem {
                PREV_RW
            } else {
                0
            }
        } else {
            self.step(0, anchor_kind)?
        };
        let idx = |l: u32, f: u8| l as usize * STATES + f as usize;
        let la = self.local.get(a);
        let lb = self.local.get(b);
        let mut queue = std::collections::VecDeque::new();
        seen[idx(lb, start)] = stamp;
        queue.push_back((lb, start));
        while let Some((lv, f)) = queue.pop_front() {
            let r = self.g.edges(self.sub[lv as usize]);
            *work += r.len() as u64 + 1;
            if budget.tick(r.len() as u64 + 1) {
                return None;
            }
            for e in r {
                let mask = self.g.masks[e] & self.allowed;
                if mask == 0 {
                    continue;
                }
                let lw = self.local.get(self.g.targets[e]);
                if lw == NONE {
                    continue;
                }
                let mut bits = mask;
                while bits != 0 {
                    let kind = bits & bits.wrapping_neg();
                    bits &= bits - 1;
                    let Some(nf) = self.step(f, kind) else {
                        continue;
                    };
                    if lw == la {
                        if self.goal(nf) {
                            let cycle =
                                self.rebuild(a, anchor_kind, (lv, f), kind, (lb, start), parent);
                            // A walk that revisits a txn is not a simple cycle and
                            // could mix classes; let another anchor find a clean one.
                            let mut sorted = cycle.txns.clone();
                            sorted.sort_unstable();
                            sorted.dedup();
                            if sorted.len() == cycle.txns.len() {
                                return Some(cycle);
                            }
                        }
                        continue;
                    }
                    let i = idx(lw, nf);
                    if seen[i] == stamp {
                        continue;
                    }
                    seen[i] = stamp;
                    parent[i] = ((lv << 4) | f as u32, kind);
                    queue.push_back((lw, nf));
                }
            }
        }
        None
    }

    fn rebuild(
        &self,
        a: u32,
        anchor_kind: u8,
        last: (u32, u8),
        last_kind: u8,
        first: (u32, u8),
        parent: &[(u32, u8)],
    ) -> FoundCycle {
        let mut rev_nodes = vec![];
        let mut rev_kinds = vec![last_kind];
        let (mut lv, mut f) = last;
        while (lv, f) != first {
            rev_nodes.push(self.sub[lv as usize]);
            let (p, k) = parent[lv as usize * STATES + f as usize];
            rev_kinds.push(k);
            lv = p >> 4;
            f = (p & 15) as u8;
        }
        let mut txns = vec![a, self.sub[first.0 as usize]];
        txns.extend(rev_nodes.into_iter().rev());
        let mut kinds = vec![anchor_kind];
        kinds.extend(rev_kinds.into_iter().rev());
        FoundCycle { txns, kinds }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(n: usize, edges: &[(u32, u32, u8)]) -> Graph {
        let mut list = EdgeList::default();
        for &(a, b, k) in edges {
            list.add(a, b, k);
        }
        Graph::build(n, list)
    }

    #[test]
    fn classifies_cycles_by_their_edges() {
        assert_eq!(classify(&[WW, WW]), (CycleClass::G0, Variant::Base));
        assert_eq!(classify(&[WW, WR]), (CycleClass::G1c, Variant::Base));
        assert_eq!(
            classify(&[RW, WR, PROCESS]),
            (CycleClass::GSingleItem, Variant::Process)
        );
        assert_eq!(
            classify(&[RW, WR, RW, WW]),
            (CycleClass::GNonadjacentItem, Variant::Base)
        );
        assert_eq!(classify(&[RW, RW]), (CycleClass::G2Item, Variant::Base));
        assert_eq!(
            classify(&[WR, RW, WR, RW]),
            (CycleClass::GNonadjacentItem, Variant::Base)
        );
        assert_eq!(
            classify(&[WW, REALTIME, PROCESS]),
            (CycleClass::G0, Variant::Realtime)
        );
    }

    #[test]
    fn iterative_tarjan_handles_long_chains() {
        // A 200k-node ring would overflow a recursive search's stack.
        let n = 200_000u32;
        let edges: Vec<(u32, u32, u8)> = (0..n).map(|i| (i, (i + 1) % n, WW)).collect();
        let g = graph(n as usize, &edges);
        let mut local = LocalIndex::new(n as usize);
        let comps = g.sccs(None, WW, &mut local);
        assert_eq!(comps.len(), 1);
        assert_eq!(comps[0].len(), n as usize);
        assert!(g.sccs(None, WR, &mut local).is_empty());
    }

    #[test]
    fn finds_shortest_cycle_of_each_class() {
        // 0 -rw-> 1 -wr-> 0 is G-single; 0 -rw-> 1 -rw-> 2 -ww-> 0 is G2-item.
        let g = graph(3, &[(0, 1, RW), (1, 0, WR), (1, 2, RW), (2, 0, WW)]);
        let mut local = LocalIndex::new(3);
        let mut budget = SearchBudget::new(None);
        let comp = [0, 1, 2];
        let single = find_cycle(
            &g,
            &comp,
            CycleClass::GSingleItem,
            Variant::Base,
            &mut local,
            &mut budget,
        );
        assert_eq!(single.cycle.map(|c| c.txns.len()), Some(2));
        let g2 = find_cycle(
            &g,
            &comp,
            CycleClass::G2Item,
            Variant::Base,
            &mut local,
            &mut budget,
        );
        let c = g2.cycle.expect("G2-item");
        assert_eq!(c.txns, vec![0, 1, 2]);
        assert_eq!(c.kinds, vec![RW, RW, WW]);
        let g0 = find_cycle(
            &g,
            &comp,
            CycleClass::G0,
            Variant::Base,
            &mut local,
            &mut budget,
        );
        assert!(g0.cycle.is_none());
        let any = find_any_cycle(&g, &comp, &mut local, &mut budget).expect("a cycle");
        assert_eq!((any.0, any.2.txns.len()), (CycleClass::GSingleItem, 2));
    }
}
