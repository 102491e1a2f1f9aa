//! Wing-Gong / Lowe search over one partition: linearize calls one at a time
//! in real-time order, backtrack when a completion is reached before its call
//! was linearized, and never revisit a (linearized set, model state) pair.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use crate::model::Model;

/// One op of a partition: when it was invoked, when it completed (`None`: it
/// may take effect at any point after its invocation, or never), and what it does.
#[derive(Debug, Clone)]
pub(crate) struct Entry<O> {
    pub call: usize,
    pub ret: Option<usize>,
    pub op: O,
}

/// How a search ended.
pub(crate) enum SearchEnd<S> {
    Linearizable,
    NotLinearizable(DeadEnd<S>),
    OutOfTime,
    OutOfMemory,
    /// Another partition was found not linearizable, which decides the check.
    Cancelled,
}

/// The deepest configuration the search reached before it had to give up on a branch.
pub(crate) struct DeadEnd<S> {
    /// Entries linearized, in order, with the state after each.
    pub prefix: Vec<(u32, S)>,
    /// The entry whose completion was reached before it could be linearized.
    pub blocked: Option<u32>,
    pub state: S,
}

pub(crate) struct SearchStats {
    pub configurations: u64,
    pub cache_entries: usize,
    pub max_depth: usize,
}

/// Shared by all partitions of one check: the search state bytes in use.
pub(crate) struct MemoryMeter {
    pub used: AtomicUsize,
    pub peak: AtomicUsize,
    pub limit: usize,
}

impl MemoryMeter {
    pub fn new(limit: usize) -> Self {
        MemoryMeter {
            used: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            limit,
        }
    }

    /// Claim `bytes`; false (and nothing claimed) when that would pass the limit.
    fn claim(&self, bytes: usize) -> bool {
        let now = self.used.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if now > self.limit {
            self.used.fetch_sub(bytes, Ordering::Relaxed);
            return false;
        }
        self.peak.fetch_max(now, Ordering::Relaxed);
        true
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// A small, fast, non-cryptographic hasher (the rustc "Fx" hash).
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

const FX_K: u64 = 0xf135_7aea_2e62_a9c5;

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.write_u64(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(buf) ^ rest.len() as u64);
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(i as u64)
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(i as u64)
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64)
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(FX_K);
    }
    fn finish(&self) -> u64 {
        // Spread the high bits down: the cache indexes by the low bits.
        let h = self.0;
        h ^ (h >> 29) ^ (h >> 47)
    }
}

pub(crate) type FxBuild = std::hash::BuildHasherDefault<FxHasher>;

fn hash_of<T: Hash>(t: &T) -> u64 {
    let mut h = FxHasher::default();
    t.hash(&mut h);
    h.finish()
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Fixed-size chunks, so growing never copies (or doubles) what is stored.
struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    chunk_len: usize,
    len: usize,
}

impl<T> Chunked<T> {
    fn new(chunk_len: usize) -> Self {
        Chunked {
            chunks: Vec::new(),
            chunk_len,
            len: 0,
        }
    }

    /// Whether the next push allocates a new chunk.
    fn full(&self) -> bool {
        self.len == self.chunks.len() * self.chunk_len
    }

    fn push(&mut self, t: T) {
        if self.full() {
            self.chunks.push(Vec::with_capacity(self.chunk_len));
        }
        self.chunks.last_mut().expect("a chunk").push(t);
        self.len += 1;
    }

    fn get(&self, i: usize) -> &T {
        &self.chunks[i / self.chunk_len][i % self.chunk_len]
    }
}

/// The set of configurations seen: open addressing over entry numbers, with
/// each entry's hash, encoded linearized set and state in chunked arenas.
struct Cache<S> {
    slots: Vec<u32>,
    metas: Chunked<Meta>,
    states: Chunked<S>,
    /// Encoded linearized sets; an entry never straddles two chunks.
    words: Vec<Vec<u64>>,
    word_chunk: usize,
    bytes: usize,
}

struct Meta {
    hash: u64,
    chunk: u32,
    offset: u32,
    len: u32,
}

const CHUNK: usize = 1 << 14;

impl<S: Eq + Clone> Cache<S> {
    fn new(max_key_words: usize) -> Self {
        Cache {
            slots: Vec::new(),
            metas: Chunked::new(CHUNK),
            states: Chunked::new(CHUNK),
            words: Vec::new(),
            word_chunk: (1 << 16).max(max_key_words),
            bytes: 0,
        }
    }

    fn len(&self) -> usize {
        self.metas.len
    }

    fn matches(&self, i: usize, hash: u64, key: &[u64], state: &S) -> bool {
        let m = self.metas.get(i);
        m.hash == hash
            && m.len as usize == key.len()
            && self.states.get(i) == state
            && self.words[m.chunk as usize][m.offset as usize..][..key.len()] == *key
    }

    /// Insert unless present. `Ok(false)`: already seen. `Err(())`: out of memory.
    fn insert(
        &mut self,
        hash: u64,
        key: &[u64],
        state: &S,
        state_bytes: usize,
        meter: &MemoryMeter,
    ) -> Result<bool, ()> {
        if self.slots.is_empty() || (self.len() + 1) * 2 > self.slots.len() {
            let grown = (self.slots.len() * 2).max(1024);
            let extra = (grown - self.slots.len()) * 4;
            if !meter.claim(extra) {
                return Err(());
            }
            self.bytes += extra;
            self.rehash(grown);
        }
        let mask = self.slots.len() - 1;
        let mut at = hash as usize & mask;
        loop {
            match self.slots[at] {
                0 => break,
                n if self.matches(n as usize - 1, hash, key, state) => return Ok(false),
                _ => at = (at + 1) & mask,
            }
        }
        // The arenas grow a chunk at a time; claim each chunk before allocating it.
        let mut need = state_bytes;
        if self.metas.full() {
            need += CHUNK * (std::mem::size_of::<Meta>() + std::mem::size_of::<S>());
        }
        let new_words = self
            .words
            .last()
            .is_none_or(|c| c.len() + key.len() > self.word_chunk);
        if new_words {
            need += self.word_chunk * 8;
        }
        if !meter.claim(need) {
            return Err(());
        }
        self.bytes += need;
        if new_words {
            self.words.push(Vec::with_capacity(self.word_chunk));
        }
        let chunk = self.words.len() - 1;
        let words = &mut self.words[chunk];
        self.metas.push(Meta {
            hash,
            chunk: chunk as u32,
            offset: words.len() as u32,
            len: key.len() as u32,
        });
        words.extend_from_slice(key);
        self.slots[at] = self.len() as u32;
        self.states.push(state.clone());
        Ok(true)
    }

    fn rehash(&mut self, size: usize) {
        let mut slots = vec![0u32; size];
        let mask = size - 1;
        for i in 0..self.len() {
            let mut at = self.metas.get(i).hash as usize & mask;
            while slots[at] != 0 {
                at = (at + 1) & mask;
            }
            slots[at] = i as u32 + 1;
        }
        self.slots = slots;
    }
}

/// The set of linearized entries, kept so that its encoding is short: entries
/// are numbered completed ones first, then optional ones; completed ones
/// become linearized roughly in order, so that part is stored as a count of
/// leading full words plus the words up to the last one set, and the optional
/// part (mostly empty) as its words up to the last one set.
struct Linearized {
    required: usize,
    req: Vec<u64>,
    opt: Vec<u64>,
    low: usize,
    hi_req: usize,
    hi_opt: usize,
}

impl Linearized {
    fn new(required: usize, total: usize) -> Self {
        Linearized {
            required,
            req: vec![0; required.div_ceil(64)],
            opt: vec![0; (total - required).div_ceil(64)],
            low: 0,
            hi_req: 0,
            hi_opt: 0,
        }
    }

    fn contains(&self, e: usize) -> bool {
        if e < self.required {
            self.req[e / 64] & (1 << (e % 64)) != 0
        } else {
            let j = e - self.required;
            self.opt[j / 64] & (1 << (j % 64)) != 0
        }
    }

    fn set(&mut self, e: usize) {
        if e < self.required {
            let w = e / 64;
            self.req[w] |= 1 << (e % 64);
            self.hi_req = self.hi_req.max(w + 1);
            while self.low < self.req.len() && self.req[self.low] == !0 {
                self.low += 1;
            }
        } else {
            let j = e - self.required;
            self.opt[j / 64] |= 1 << (j % 64);
            self.hi_opt = self.hi_opt.max(j / 64 + 1);
        }
    }

    fn clear(&mut self, e: usize) {
        if e < self.required {
            let w = e / 64;
            self.req[w] &= !(1 << (e % 64));
            self.low = self.low.min(w);
            while self.hi_req > 0 && self.req[self.hi_req - 1] == 0 {
                self.hi_req -= 1;
            }
        } else {
            let j = e - self.required;
            self.opt[j / 64] &= !(1 << (j % 64));
            while self.hi_opt > 0 && self.opt[self.hi_opt - 1] == 0 {
                self.hi_opt -= 1;
            }
        }
    }

    /// A canonical encoding: equal sets, equal encodings.
    fn encode(&self, out: &mut Vec<u64>) {
        out.clear();
        let hi = self.hi_req.max(self.low);
        out.push(self.low as u64 | ((hi - self.low) as u64) << 32);
        out.extend_from_slice(&self.req[self.low..hi]);
        out.extend_from_slice(&self.opt[..self.hi_opt]);
    }

    fn max_words(&self) -> usize {
        1 + self.req.len() + self.opt.len()
    }
}

const NIL: u32 = u32::MAX;
const HEAD: u32 = 0;

/// The events of a partition in a doubly linked list, so linearized calls (and
/// their completions) can be lifted out and put back in O(1).
struct Events {
    next: Vec<u32>,
    prev: Vec<u32>,
    /// For each node: the entry it belongs to, and whether it is the call.
    entry: Vec<u32>,
    is_call: Vec<bool>,
    call_node: Vec<u32>,
    ret_node: Vec<u32>,
}

impl Events {
    fn new<O>(entries: &[&Entry<O>]) -> Events {
        let mut events: Vec<(usize, u32, bool)> = Vec::with_capacity(entries.len() * 2);
        for (i, e) in entries.iter().enumerate() {
            events.push((e.call, i as u32, true));
            if let Some(r) = e.ret {
                events.push((r, i as u32, false));
            }
        }
        // Calls before completions at equal times: overlapping is the permissive reading.
        events.sort_unstable_by_key(|&(t, _, call)| (t, !call));
        let n = events.len() + 1;
        let mut ev = Events {
            next: vec![NIL; n],
            prev: vec![NIL; n],
            entry: vec![NIL; n],
            is_call: vec![false; n],
            call_node: vec![NIL; entries.len()],
            ret_node: vec![NIL; entries.len()],
        };
        for (k, &(_, e, call)) in events.iter().enumerate() {
            let node = k as u32 + 1;
            ev.prev[node as usize] = node - 1;
            ev.next[node as usize - 1] = node;
            ev.entry[node as usize] = e;
            ev.is_call[node as usize] = call;
            if call {
                ev.call_node[e as usize] = node;
            } else {
                ev.ret_node[e as usize] = node;
            }
        }
        ev
    }

    fn unlink(&mut self, node: u32) {
        let (p, n) = (self.prev[node as usize], self.next[node as usize]);
        self.next[p as usize] = n;
        if n != NIL {
            self.prev[n as usize] = p;
        }
    }

    fn relink(&mut self, node: u32) {
        let (p, n) = (self.prev[node as usize], self.next[node as usize]);
        self.next[p as usize] = node;
        if n != NIL {
            self.prev[n as usize] = node;
        }
    }

    fn lift(&mut self, e: u32) {
        self.unlink(self.call_node[e as usize]);
        let r = self.ret_node[e as usize];
        if r != NIL {
            self.unlink(r);
        }
    }

    fn unlift(&mut self, e: u32) {
        let r = self.ret_node[e as usize];
        if r != NIL {
            self.relink(r);
        }
        self.relink(self.call_node[e as usize]);
    }
}

pub(crate) struct Limits<'a> {
    pub deadline: Option<Instant>,
    pub meter: &'a MemoryMeter,
    /// Set when the verdict is already decided and searches may stop.
    pub cancel: &'a AtomicBool,
}

/// Decide whether the entries can be linearized from `model`'s initial state.
pub(crate) fn search<M: Model>(
    model: &mut M,
    all: &[Entry<M::Op>],
    limits: &Limits,
) -> (SearchEnd<M::State>, SearchStats) {
    // Completed entries first, then optional ones (see `Linearized`).
    let perm: Vec<u32> = (0..all.len() as u32)
        .filter(|&i| all[i as usize].ret.is_some())
        .chain((0..all.len() as u32).filter(|&i| all[i as usize].ret.is_none()))
        .collect();
    let entries: Vec<&Entry<M::Op>> = perm.iter().map(|&i| &all[i as usize]).collect();
    let (end, stats) = search_ordered(model, &entries, limits);
    let end = match end {
        SearchEnd::NotLinearizable(mut dead) => {
            for (e, _) in &mut dead.prefix {
                *e = perm[*e as usize];
            }
            dead.blocked = dead.blocked.map(|b| perm[b as usize]);
            SearchEnd::NotLinearizable(dead)
        }
        other => other,
    };
    (end, stats)
}

fn search_ordered<M: Model>(
    model: &mut M,
    entries: &[&Entry<M::Op>],
    limits: &Limits,
) -> (SearchEnd<M::State>, SearchStats) {
    let n = entries.len();
    let mut stats = SearchStats {
        configurations: 0,
        cache_entries: 0,
        max_depth: 0,
    };
    let mut remaining = entries.iter().filter(|e| e.ret.is_some()).count();
    if remaining == 0 {
        return (SearchEnd::Linearizable, stats);
    }
    let zobrist: Vec<u64> = (0..n as u64).map(splitmix).collect();
    let mut events = Events::new(entries);
    let required = entries.iter().filter(|e| e.ret.is_some()).count();
    let mut bits = Linearized::new(required, n);
    let mut key = Vec::with_capacity(bits.max_words());
    let mut cache: Cache<M::State> = Cache::new(bits.max_words());
    let mut bits_hash = 0u64;
    let mut state = model.init();
    let mut stack: Vec<(u32, M::State)> = Vec::new();
    // The deepest dead end: the stack then (entry, state before it), the state
    // at the end, and the op that blocked. `shared` is how much of the current
    // stack still equals `best_stack`, so recording a deeper dead end copies
    // only what was pushed since: linear in pushes overall, not quadratic.
    let mut best_stack: Vec<(u32, M::State)> = Vec::new();
    let mut best_end: Option<(M::State, Option<u32>)> = None;
    let mut shared = 0usize;
    // Optional ops that do the same thing are interchangeable, and the one
    // invoked earlier can go wherever a later one can: only ever linearize
    // the earliest not yet linearized of a group of twins.
    let mut earlier_twin = vec![NIL; n];
    {
        let mut seen: Vec<u32> = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            if e.ret.is_some() {
                continue;
            }
            // Any earlier twin will do; looking back a bounded way keeps this linear.
            if let Some(&t) = seen
                .iter()
                .rev()
                .take(64)
                .find(|&&t| entries[t as usize].op == e.op)
            {
                earlier_twin[i] = t;
            }
            seen.push(i as u32);
        }
    }
    // Candidates are tried in three passes over the same list: ops that never
    // change the state, then completed ops, then optional ones (which may take
    // effect any time, or never). The same choices in a better order.
    //
    // An op that never changes the state and fits now can be linearized now
    // without loss: wherever a linearization places it later, moving it here
    // keeps every state and respects real time (whatever had to precede it is
    // already linearized). So it is never branched on: backtracking over it
    // goes straight on backtracking.
    let class: Vec<u8> = entries
        .iter()
        .map(|e| {
            if model.read_only(&e.op) {
                0
            } else if e.ret.is_some() {
                1
            } else {
                2
            }
        })
        .collect();
    let last_pass = class.iter().copied().max().unwrap_or(1);
    let mut pass = 0u8;
    let mut force_backtrack = false;
    let mut node = events.next[HEAD as usize];
    let mut steps: u64 = 0;
    let mut side_claimed = 0usize;

    let end = loop {
        steps += 1;
        if steps & 0x3ff == 0 {
            if limits.deadline.is_some_and(|d| Instant::now() >= d) {
                break SearchEnd::OutOfTime;
            }
            if limits.cancel.load(Ordering::Relaxed) {
                break SearchEnd::Cancelled;
            }
            // Values the model interned while stepping count against the budget too.
            let side = model.side_bytes();
            if side > side_claimed {
                if !limits.meter.claim(side - side_claimed) {
                    break SearchEnd::OutOfMemory;
                }
                side_claimed = side;
            }
        }
        if force_backtrack || node == NIL || !events.is_call[node as usize] {
            if !force_backtrack && pass < last_pass {
                pass += 1;
                node = events.next[HEAD as usize];
                continue;
            }
            // A completion reached before its call was linearized: this branch is dead.
            if !force_backtrack && (best_end.is_none() || stack.len() > best_stack.len()) {
                best_stack.truncate(shared);
                best_stack.extend_from_slice(&stack[shared..]);
                shared = stack.len();
                best_end = Some((
                    state.clone(),
                    (node != NIL).then(|| events.entry[node as usize]),
                ));
            }
            let Some((e, before)) = stack.pop() else {
                let (end_state, blocked) = best_end.take().expect("a dead end was recorded");
                let mut prefix = Vec::with_capacity(best_stack.len());
                for k in 0..best_stack.len() {
                    let after = best_stack.get(k + 1).map_or(&end_state, |(_, s)| s);
                    prefix.push((best_stack[k].0, after.clone()));
                }
                break SearchEnd::NotLinearizable(DeadEnd {
                    prefix,
                    blocked,
                    state: end_state,
                });
            };
            shared = shared.min(stack.len());
            // Go on with the alternatives to `e`, in the pass that tried it,
            // unless `e` was a forced (state-preserving) choice.
            pass = class[e as usize];
            force_backtrack = pass == 0;
            state = before;
            bits.clear(e as usize);
            bits_hash ^= zobrist[e as usize];
            events.unlift(e);
            if entries[e as usize].ret.is_some() {
                remaining += 1;
            }
            node = events.next[events.call_node[e as usize] as usize];
            continue;
        }
        let e = events.entry[node as usize];
        if class[e as usize] != pass {
            node = events.next[node as usize];
            continue;
        }
        let twin = earlier_twin[e as usize];
        if twin != NIL && !bits.contains(twin as usize) {
            node = events.next[node as usize];
            continue;
        }
        if let Some(next_state) = model.step(&state, &entries[e as usize].op) {
            stats.configurations += 1;
            bits.set(e as usize);
            bits.encode(&mut key);
            let h = bits_hash ^ zobrist[e as usize];
            let hash = h ^ hash_of(&next_state).wrapping_mul(FX_K);
            let state_bytes = model.state_heap_bytes(&next_state);
            match cache.insert(hash, &key, &next_state, state_bytes, limits.meter) {
                Err(()) => break SearchEnd::OutOfMemory,
                Ok(true) => {
                    stack.push((e, std::mem::replace(&mut state, next_state)));
                    stats.max_depth = stats.max_depth.max(stack.len());
                    bits_hash = h;
                    events.lift(e);
                    if entries[e as usize].ret.is_some() {
                        remaining -= 1;
                        if remaining == 0 {
                            break SearchEnd::Linearizable;
                        }
                    }
                    node = events.next[HEAD as usize];
                    pass = 0;
                    continue;
                }
                Ok(false) => {
                    bits.clear(e as usize);
                    // Linearizing a state-preserving op here loses nothing, and
                    // that configuration was already refuted: so is this one.
                    if class[e as usize] == 0 {
                        force_backtrack = true;
                        continue;
                    }
                }
            }
        }
        node = events.next[node as usize];
    };
    stats.cache_entries = cache.len();
    limits.meter.release(cache.bytes + side_claimed);
    (end, stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Equal sets encode equally and different sets differently, whatever
    /// order entries were added and removed in.
    #[test]
    fn linearized_encoding_is_canonical() {
        let (required, total) = (200, 300);
        let mut rng = 0x1234_5678u64;
        let mut next = || {
            rng = splitmix(rng);
            rng
        };
        let mut seen: HashMap<Vec<u64>, Vec<bool>> = HashMap::new();
        let mut set = Linearized::new(required, total);
        let mut model = vec![false; total];
        let mut key = Vec::new();
        for _ in 0..20_000 {
            // Mostly fill from the front, as a search does, with random holes.
            let e = if next() % 3 == 0 {
                (next() % total as u64) as usize
            } else {
                (next() % (model.iter().position(|b| !b).unwrap_or(0) as u64 + 70)) as usize % total
            };
            if model[e] {
                set.clear(e);
            } else {
                set.set(e);
            }
            model[e] = !model[e];
            assert!((0..total).all(|i| set.contains(i) == model[i]));
            set.encode(&mut key);
            let previous = seen.entry(key.clone()).or_insert_with(|| model.clone());
            assert_eq!(*previous, model, "two sets share the encoding {key:?}");
        }
        // Encodings stay short while the set is a prefix plus a few more.
        let mut prefix = Linearized::new(required, total);
        for e in 0..150 {
            prefix.set(e);
        }
        prefix.set(250);
        prefix.encode(&mut key);
        assert_eq!(key.len(), 1 + 1 + 1);
    }
}
