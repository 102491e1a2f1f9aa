//! State-based CRDTs with delta-state shipping (Shapiro et al. 2011, "A
//! comprehensive study of Convergent and Commutative Replicated Data
//! Types"; Almeida, Shoker and Baquero 2018, "Delta state replicated data
//! types"). Each type is a join-semilattice: [`Crdt::join`] is commutative,
//! associative and idempotent, so replicas that have received the same
//! updates, in any order and any number of times, hold the same state. An
//! update returns a delta, itself a state, that is all a replica needs to
//! ship: joining the delta equals joining the whole new state.
//!
//! Pure: no clock, no randomness. Dots (the replica and its event count)
//! reuse the leaderless mode's compact [`Dots`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::leaderless::{Dot, Dots};
use crate::msg::{NodeId, Op, OpResult, Value};

/// The CRDT types a key may hold, as the cluster file names them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CrdtType {
    GCounter,
    #[default]
    PnCounter,
    GSet,
    #[serde(rename = "2p-set")]
    TwoPSet,
    OrSet,
    LwwRegister,
    MvRegister,
}

impl CrdtType {
    pub const ALL: [CrdtType; 7] = [
        CrdtType::GCounter,
        CrdtType::PnCounter,
        CrdtType::GSet,
        CrdtType::TwoPSet,
        CrdtType::OrSet,
        CrdtType::LwwRegister,
        CrdtType::MvRegister,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CrdtType::GCounter => "g-counter",
            CrdtType::PnCounter => "pn-counter",
            CrdtType::GSet => "g-set",
            CrdtType::TwoPSet => "2p-set",
            CrdtType::OrSet => "or-set",
            CrdtType::LwwRegister => "lww-register",
            CrdtType::MvRegister => "mv-register",
        }
    }

    pub fn parse(s: &str) -> Result<CrdtType, String> {
        CrdtType::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = CrdtType::ALL.iter().map(|t| t.name()).collect();
                format!("CRDT type '{s}': expected {}", names.join(", "))
            })
    }

    /// The bottom of the type's lattice: a key nobody has written.
    pub fn empty(self) -> Crdt {
        match self {
            CrdtType::GCounter => Crdt::GCounter(GCounter::default()),
            CrdtType::PnCounter => Crdt::PnCounter(PnCounter::default()),
            CrdtType::GSet => Crdt::GSet(BTreeSet::new()),
            CrdtType::TwoPSet => Crdt::TwoPSet(TwoPSet::default()),
            CrdtType::OrSet => Crdt::OrSet(OrSet::default()),
            CrdtType::LwwRegister => Crdt::LwwRegister(LwwRegister::default()),
            CrdtType::MvRegister => Crdt::MvRegister(MvRegister::default()),
        }
    }
}

/// Grow-only counter: one count per replica; the value is their sum.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GCounter(pub BTreeMap<NodeId, u64>);

impl GCounter {
    fn join(&mut self, other: &GCounter) {
        for (node, n) in &other.0 {
            let mine = self.0.entry(*node).or_insert(0);
            *mine = (*mine).max(*n);
        }
    }

    fn value(&self) -> u64 {
        self.0.values().fold(0u64, |a, b| a.wrapping_add(*b))
    }

    /// Count `by` more at `me`; the delta is `me`'s new entry alone.
    fn incr(&mut self, me: NodeId, by: u64) -> GCounter {
        let n = self.0.entry(me).or_insert(0);
        *n = n.wrapping_add(by);
        GCounter(BTreeMap::from([(me, *n)]))
    }
}

/// Positive-negative counter: increments and decrements as two G-counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PnCounter {
    pub p: GCounter,
    pub n: GCounter,
}

impl PnCounter {
    fn value(&self) -> i64 {
        self.p.value().wrapping_sub(self.n.value()) as i64
    }
}

/// Two-phase set: an element once removed stays removed (its tombstone wins).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TwoPSet {
    pub added: BTreeSet<i64>,
    pub removed: BTreeSet<i64>,
}

/// Observed-remove set, add-wins: each add is a dot; a remove removes the
/// dots it has observed, so an add concurrent with a remove survives it.
/// `context` holds every dot this state has seen, present or removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OrSet {
    pub entries: BTreeMap<i64, BTreeSet<Dot>>,
    pub context: Dots,
}

/// Last-writer-wins register: the write with the highest (timestamp, replica).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LwwRegister {
    pub value: Option<Value>,
    pub ts: u64,
    pub node: NodeId,
}

/// Multi-value register: every write not causally overwritten survives,
/// and a read returns them all (siblings); a write overwrites what its
/// replica had seen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MvRegister {
    pub versions: BTreeMap<Dot, Value>,
    pub context: Dots,
}

/// A key's replicated state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Crdt {
    GCounter(GCounter),
    PnCounter(PnCounter),
    GSet(BTreeSet<i64>),
    TwoPSet(TwoPSet),
    OrSet(OrSet),
    LwwRegister(LwwRegister),
    MvRegister(MvRegister),
}

/// Why an operation cannot apply to a key's type: the op was not done.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{op} is not an operation of a {ty}{why}")]
pub struct NotAnOperation {
    pub op: &'static str,
    pub ty: &'static str,
    pub why: &'static str,
}

/// Join dot-stores: keep a dot both have, or one has that the other has not seen.
fn join_dots(
    mine: &BTreeSet<Dot>,
    my_context: &Dots,
    theirs: &BTreeSet<Dot>,
    their_context: &Dots,
) -> BTreeSet<Dot> {
    mine.iter()
        .filter(|d| theirs.contains(d) || !their_context.contains(**d))
        .chain(theirs.iter().filter(|d| !my_context.contains(**d)))
        .copied()
        .collect()
}

fn next_dot(context: &Dots, me: NodeId) -> Dot {
    (me, context.max_of(me) + 1)
}

impl Crdt {
    pub fn type_of(&self) -> CrdtType {
        match self {
            Crdt::GCounter(_) => CrdtType::GCounter,
            Crdt::PnCounter(_) => CrdtType::PnCounter,
            Crdt::GSet(_) => CrdtType::GSet,
            Crdt::TwoPSet(_) => CrdtType::TwoPSet,
            Crdt::OrSet(_) => CrdtType::OrSet,
            Crdt::LwwRegister(_) => CrdtType::LwwRegister,
            Crdt::MvRegister(_) => CrdtType::MvRegister,
        }
    }

    /// The least upper bound of the two states. States of different types
    /// never meet (a key's type is the cluster's); `other` is then ignored.
    pub fn join(&mut self, other: &Crdt) {
        match (self, other) {
            (Crdt::GCounter(a), Crdt::GCounter(b)) => a.join(b),
            (Crdt::PnCounter(a), Crdt::PnCounter(b)) => {
                a.p.join(&b.p);
                a.n.join(&b.n);
            }
            (Crdt::GSet(a), Crdt::GSet(b)) => a.extend(b.iter().copied()),
            (Crdt::TwoPSet(a), Crdt::TwoPSet(b)) => {
                a.added.extend(b.added.iter().copied());
                a.removed.extend(b.removed.iter().copied());
            }
            (Crdt::OrSet(a), Crdt::OrSet(b)) => {
                let elems: BTreeSet<i64> =
                    a.entries.keys().chain(b.entries.keys()).copied().collect();
                let empty = BTreeSet::new();
                let mut entries = BTreeMap::new();
                for e in elems {
                    let dots = join_dots(
                        a.entries.get(&e).unwrap_or(&empty),
                        &a.context,
                        b.entries.get(&e).unwrap_or(&empty),
                        &b.context,
                    );
                    if !dots.is_empty() {
                        entries.insert(e, dots);
                    }
                }
                a.entries = entries;
                a.context.union(&b.context);
            }
            (Crdt::LwwRegister(a), Crdt::LwwRegister(b)) if (b.ts, b.node) > (a.ts, a.node) => {
                *a = b.clone();
            }
            (Crdt::MvRegister(a), Crdt::MvRegister(b)) => {
                let mine: BTreeSet<Dot> = a.versions.keys().copied().collect();
                let theirs: BTreeSet<Dot> = b.versions.keys().copied().collect();
                let keep = join_dots(&mine, &a.context, &theirs, &b.context);
                let mut versions = BTreeMap::new();
                for d in keep {
                    if let Some(v) = a.versions.get(&d).or_else(|| b.versions.get(&d)) {
                        versions.insert(d, v.clone());
                    }
                }
                a.versions = versions;
                a.context.union(&b.context);
            }
            _ => {}
        }
    }

    /// What a read returns.
    pub fn read(&self) -> OpResult {
        match self {
            Crdt::GCounter(c) => OpResult::Value(Some(Value::Int(c.value() as i64))),
            Crdt::PnCounter(c) => OpResult::Value(Some(Value::Int(c.value()))),
            Crdt::GSet(s) => OpResult::Value(Some(Value::Set(s.clone()))),
            Crdt::TwoPSet(s) => OpResult::Value(Some(Value::Set(
                s.added.difference(&s.removed).copied().collect(),
            ))),
            Crdt::OrSet(s) => {
                OpResult::Value(Some(Value::Set(s.entries.keys().copied().collect())))
            }
            Crdt::LwwRegister(r) => OpResult::Value(r.value.clone()),
            Crdt::MvRegister(r) => match r.versions.len() {
                0 => OpResult::Value(None),
                1 => OpResult::Value(r.versions.values().next().cloned()),
                _ => OpResult::Siblings(r.versions.values().cloned().collect()),
            },
        }
    }

    /// Apply a client operation at replica `me` (`ts`: its clock, for the
    /// LWW register). Returns the delta to ship and the op's result, or why
    /// the op is not one of this type's.
    pub fn update(
        &mut self,
        me: NodeId,
        ts: u64,
        op: &Op,
    ) -> Result<Option<(Crdt, OpResult)>, NotAnOperation> {
        let ty = self.type_of().name();
        let not = |op: &'static str, why: &'static str| NotAnOperation { op, ty, why };
        let delta = match (&mut *self, op) {
            (Crdt::GCounter(_) | Crdt::PnCounter(_), Op::Get { .. })
            | (
                Crdt::GSet(_) | Crdt::TwoPSet(_) | Crdt::OrSet(_),
                Op::ReadSet { .. } | Op::Get { .. },
            )
            | (Crdt::LwwRegister(_) | Crdt::MvRegister(_), Op::Get { .. }) => return Ok(None),
            (Crdt::GCounter(c), Op::Incr { delta, .. }) => {
                if *delta < 0 {
                    return Err(not("a decrement", ": it only grows"));
                }
                Crdt::GCounter(c.incr(me, *delta as u64))
            }
            (Crdt::PnCounter(c), Op::Incr { delta, .. }) => {
                let part = if *delta >= 0 {
                    PnCounter {
                        p: c.p.incr(me, delta.unsigned_abs()),
                        n: GCounter::default(),
                    }
                } else {
                    PnCounter {
                        p: GCounter::default(),
                        n: c.n.incr(me, delta.unsigned_abs()),
                    }
                };
                Crdt::PnCounter(part)
            }
            (Crdt::GSet(s), Op::Add { elem, .. }) => {
                s.insert(*elem);
                Crdt::GSet(BTreeSet::from([*elem]))
            }
            (Crdt::GSet(_), Op::Remove { .. }) => {
                return Err(not("a remove", ": it only grows"));
            }
            (Crdt::TwoPSet(s), Op::Add { elem, .. }) => {
                s.added.insert(*elem);
                Crdt::TwoPSet(TwoPSet {
                    added: BTreeSet::from([*elem]),
                    removed: BTreeSet::new(),
                })
            }
            (Crdt::TwoPSet(s), Op::Remove { elem, .. }) => {
                s.removed.insert(*elem);
                Crdt::TwoPSet(TwoPSet {
                    added: BTreeSet::new(),
                    removed: BTreeSet::from([*elem]),
                })
            }
            (Crdt::OrSet(s), Op::Add { elem, .. }) => {
                let dot = next_dot(&s.context, me);
                let mut context = Dots::default();
                for d in s.entries.get(elem).into_iter().flatten() {
                    context.insert(*d);
                }
                context.insert(dot);
                let delta = OrSet {
                    entries: BTreeMap::from([(*elem, BTreeSet::from([dot]))]),
                    context,
                };
                let d = Crdt::OrSet(delta);
                self.join(&d);
                return Ok(Some((d, OpResult::Done)));
            }
            (Crdt::OrSet(s), Op::Remove { elem, .. }) => {
                let mut context = Dots::default();
                for d in s.entries.get(elem).into_iter().flatten() {
                    context.insert(*d);
                }
                s.entries.remove(elem);
                Crdt::OrSet(OrSet {
                    entries: BTreeMap::new(),
                    context,
                })
            }
            (Crdt::LwwRegister(r), Op::Put { value, .. }) => {
                // The replica's clock as it is, skew included (the textbook's
                // hazard: a write stamped before what the replica holds is
                // lost at once); only its own writes in one tick keep their order.
                let ts = if r.node == me && r.ts >= ts && r.value.is_some() {
                    r.ts + 1
                } else {
                    ts
                };
                let d = Crdt::LwwRegister(LwwRegister {
                    value: Some(value.clone()),
                    ts,
                    node: me,
                });
                self.join(&d);
                return Ok(Some((d, OpResult::Done)));
            }
            (Crdt::MvRegister(r), Op::Put { value, .. }) => {
                let dot = next_dot(&r.context, me);
                let mut context = Dots::default();
                for d in r.versions.keys() {
                    context.insert(*d);
                }
                context.insert(dot);
                let delta = MvRegister {
                    versions: BTreeMap::from([(dot, value.clone())]),
                    context,
                };
                let d = Crdt::MvRegister(delta);
                self.join(&d);
                return Ok(Some((d, OpResult::Done)));
            }
            (_, op) => {
                return Err(not(op_name(op), ""));
            }
        };
        let result = match op {
            Op::Incr { .. } => self.read(),
            _ => OpResult::Done,
        };
        Ok(Some((delta, result)))
    }

    /// Elements (sets), entries (counters) or versions the state holds, for
    /// figures of shipping costs.
    pub fn size(&self) -> usize {
        match self {
            Crdt::GCounter(c) => c.0.len(),
            Crdt::PnCounter(c) => c.p.0.len() + c.n.0.len(),
            Crdt::GSet(s) => s.len(),
            Crdt::TwoPSet(s) => s.added.len() + s.removed.len(),
            Crdt::OrSet(s) => s.entries.values().map(BTreeSet::len).sum(),
            Crdt::LwwRegister(_) => 1,
            Crdt::MvRegister(r) => r.versions.len(),
        }
    }
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Get { .. } => "a read",
        Op::Put { .. } => "a write",
        Op::Cas { .. } => "a compare-and-set",
        Op::Append { .. } => "an append",
        Op::ReadList { .. } => "a list read",
        Op::Incr { .. } => "an increment",
        Op::Add { .. } => "an add",
        Op::Remove { .. } => "a remove",
        Op::ReadSet { .. } => "a set read",
        Op::Scan { .. } => "a scan",
        Op::Lock { .. } | Op::Unlocked { .. } | Op::Unlock { .. } => "a lock",
        Op::Fence { .. } => "a fence",
        Op::Txn { .. } => "a transaction",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeded::SeededRng;

    fn random_op(rng: &mut SeededRng, ty: CrdtType) -> Op {
        let key = "k".to_string();
        let elem = rng.below(6) as i64;
        match ty {
            CrdtType::GCounter => Op::Incr {
                key,
                delta: rng.below(5) as i64,
            },
            CrdtType::PnCounter => Op::Incr {
                key,
                delta: rng.below(9) as i64 - 4,
            },
            CrdtType::GSet => Op::Add { key, elem },
            CrdtType::TwoPSet | CrdtType::OrSet => {
                if rng.below(2) == 0 {
                    Op::Add { key, elem }
                } else {
                    Op::Remove { key, elem }
                }
            }
            CrdtType::LwwRegister | CrdtType::MvRegister => Op::Put {
                key,
                value: Value::Int(rng.below(100) as i64),
            },
        }
    }

    /// Three replicas apply random updates and now and then receive random
    /// deltas of the others: the states they pass through, and the deltas.
    fn random_run(seed: u64, ty: CrdtType) -> (Vec<Crdt>, Vec<Crdt>) {
        let mut rng = SeededRng::new(seed);
        let mut replicas = vec![ty.empty(); 3];
        // What each replica has seen, as the join of the deltas: an update
        // must change its replica exactly as shipping its delta does.
        let mut seen = vec![ty.empty(); 3];
        let mut deltas = Vec::new();
        let mut states = Vec::new();
        for _ in 0..12 {
            let me = rng.below(3) as usize;
            if rng.below(3) == 0 && !deltas.is_empty() {
                let d: &Crdt = &deltas[rng.below(deltas.len() as u64) as usize];
                replicas[me].join(d);
                seen[me].join(d);
            } else {
                let op = random_op(&mut rng, ty);
                let ts = rng.below(10);
                if let Ok(Some((delta, _))) = replicas[me].update(me as NodeId, ts, &op) {
                    seen[me].join(&delta);
                    deltas.push(delta);
                }
            }
            assert_eq!(
                replicas[me], seen[me],
                "{ty:?} seed {seed}: an update is its delta"
            );
            states.push(replicas[me].clone());
        }
        (states, deltas)
    }

    fn joined(a: &Crdt, b: &Crdt) -> Crdt {
        let mut x = a.clone();
        x.join(b);
        x
    }

    #[test]
    fn join_is_commutative_associative_and_idempotent_for_every_type() {
        for ty in CrdtType::ALL {
            for seed in 0..300 {
                let (states, _) = random_run(seed, ty);
                let mut rng = SeededRng::new(seed ^ 0xabc);
                let mut pick = || states[rng.below(states.len() as u64) as usize].clone();
                let (a, b, c) = (pick(), pick(), pick());
                assert_eq!(
                    joined(&a, &b),
                    joined(&b, &a),
                    "{ty:?} seed {seed}: commutative"
                );
                assert_eq!(
                    joined(&joined(&a, &b), &c),
                    joined(&a, &joined(&b, &c)),
                    "{ty:?} seed {seed}: associative"
                );
                assert_eq!(joined(&a, &a), a, "{ty:?} seed {seed}: idempotent");
            }
        }
    }

    #[test]
    fn deltas_in_any_order_and_any_number_of_times_give_the_full_state() {
        for ty in CrdtType::ALL {
            for seed in 0..300 {
                let (_, deltas) = random_run(seed, ty);
                let full = deltas.iter().fold(ty.empty(), |s, d| joined(&s, d));
                let mut rng = SeededRng::new(seed ^ 0x5eed);
                let mut shuffled = deltas.clone();
                shuffled.extend(deltas.iter().filter(|_| rng.below(2) == 0).cloned());
                for i in (1..shuffled.len()).rev() {
                    shuffled.swap(i, rng.below(i as u64 + 1) as usize);
                }
                let delivered = shuffled.iter().fold(ty.empty(), |s, d| joined(&s, d));
                assert_eq!(delivered, full, "{ty:?} seed {seed}");
            }
        }
    }

    fn add(s: &mut Crdt, me: NodeId, elem: i64) -> Crdt {
        let op = Op::Add {
            key: "s".into(),
            elem,
        };
        s.update(me, 0, &op).unwrap().unwrap().0
    }

    fn remove(s: &mut Crdt, me: NodeId, elem: i64) -> Crdt {
        let op = Op::Remove {
            key: "s".into(),
            elem,
        };
        s.update(me, 0, &op).unwrap().unwrap().0
    }

    fn elems(s: &Crdt) -> Vec<i64> {
        match s.read() {
            OpResult::Value(Some(Value::Set(s))) => s.into_iter().collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn or_set_add_wins_over_a_concurrent_remove_and_a_later_remove_removes() {
        let mut a = CrdtType::OrSet.empty();
        let mut b = CrdtType::OrSet.empty();
        let d = add(&mut a, 0, 1);
        b.join(&d);
        // Concurrent: a removes 1 while b adds it again.
        let r = remove(&mut a, 0, 1);
        let d2 = add(&mut b, 1, 1);
        a.join(&d2);
        b.join(&r);
        assert_eq!(elems(&a), vec![1], "the concurrent add survives");
        assert_eq!(a, b);
        // A remove that has seen every add removes it everywhere.
        let r2 = remove(&mut b, 1, 1);
        a.join(&r2);
        assert_eq!(elems(&a), Vec::<i64>::new());
        // No resurrection: an old delta arriving again changes nothing.
        a.join(&d);
        assert_eq!(elems(&a), Vec::<i64>::new());
    }

    #[test]
    fn two_p_set_removes_for_good_and_counters_sum() {
        let mut s = CrdtType::TwoPSet.empty();
        add(&mut s, 0, 3);
        remove(&mut s, 0, 3);
        add(&mut s, 1, 3);
        assert_eq!(elems(&s), Vec::<i64>::new());

        let mut a = CrdtType::PnCounter.empty();
        let mut b = CrdtType::PnCounter.empty();
        let incr = |delta| Op::Incr {
            key: "c".into(),
            delta,
        };
        let d1 = a.update(0, 0, &incr(5)).unwrap().unwrap().0;
        let d2 = b.update(1, 0, &incr(-2)).unwrap().unwrap().0;
        a.join(&d2);
        b.join(&d1);
        assert_eq!(a.read(), OpResult::Value(Some(Value::Int(3))));
        assert_eq!(a, b);
    }

    #[test]
    fn mv_register_keeps_concurrent_writes_and_a_later_write_merges_them() {
        let put = |v| Op::Put {
            key: "r".into(),
            value: Value::Int(v),
        };
        let mut a = CrdtType::MvRegister.empty();
        let mut b = CrdtType::MvRegister.empty();
        let d1 = a.update(0, 0, &put(1)).unwrap().unwrap().0;
        let d2 = b.update(1, 0, &put(2)).unwrap().unwrap().0;
        a.join(&d2);
        b.join(&d1);
        assert_eq!(
            a.read(),
            OpResult::Siblings(vec![Value::Int(1), Value::Int(2)])
        );
        let d3 = a.update(0, 0, &put(3)).unwrap().unwrap().0;
        b.join(&d3);
        assert_eq!(b.read(), OpResult::Value(Some(Value::Int(3))));
    }

    #[test]
    fn operations_a_type_does_not_have_are_refused_by_name() {
        let mut g = CrdtType::GCounter.empty();
        let decr = Op::Incr {
            key: "c".into(),
            delta: -1,
        };
        assert_eq!(
            g.update(0, 0, &decr).unwrap_err().to_string(),
            "a decrement is not an operation of a g-counter: it only grows"
        );
        let mut s = CrdtType::GSet.empty();
        let rm = Op::Remove {
            key: "s".into(),
            elem: 1,
        };
        assert_eq!(
            s.update(0, 0, &rm).unwrap_err().to_string(),
            "a remove is not an operation of a g-set: it only grows"
        );
        let append = Op::Append {
            key: "s".into(),
            elem: 1,
        };
        assert!(s.update(0, 0, &append).is_err());
    }

    #[test]
    fn an_or_set_delta_is_far_smaller_than_the_state() {
        let mut s = CrdtType::OrSet.empty();
        for e in 0..10_000 {
            add(&mut s, (e % 3) as NodeId, e);
        }
        let delta = add(&mut s, 0, 10_001);
        let full = crate::codec::encode(&s).len();
        let shipped = crate::codec::encode(&delta).len();
        assert!(
            shipped * 10 < full,
            "delta {shipped} bytes, state {full} bytes"
        );
    }
}
