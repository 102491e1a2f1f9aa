//! Fault packages (Jepsen's `nemesis/combined.clj`): one file per kind of
//! fault, each implementing [`FaultPackage`] (its schedule, how it is carried
//! out and undone, the abilities it needs of the target), and one row per
//! package in [`PACKAGES`]. The [`Runner`] carries nemesis ops out and
//! remembers what each package broke, so a stop and the final heal undo
//! exactly that.
//!
//! Invocations name what to do (`start-partition "majority"`, `kill "one"`);
//! completions say what was done: a map with the package's name (`fault`),
//! `phase` (`start` or `stop`) and the details (the grudge, the nodes, the
//! applied clock delta with its real sign), so results and reports name each
//! window by its package and open it when the fault took effect.

mod clock;
mod kill;
mod loss;
mod membership;
mod partition;
mod pause;
mod rebalance;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use splitbrain_generators::{concat, once, repeat, rng_for, sleep, Gen, OpSpec};
use splitbrain_history::{OpType, Value};

use crate::shape::{targets, Node, PartitionShape, TargetSpec};
use crate::target::{Ability, Target};

/// Every fault package, one row each.
pub static PACKAGES: &[&dyn FaultPackage] = &[
    &partition::Partition,
    &kill::Kill,
    &pause::Pause,
    &clock::Clock,
    &loss::Loss,
    &membership::Membership,
    &rebalance::RebalancePackage,
];

/// One kind of fault.
#[async_trait]
pub trait FaultPackage: Sync {
    /// The name `--nemesis` takes, and results and reports name windows by.
    fn name(&self) -> &'static str;
    /// What the target must be able to do for this fault.
    fn needs(&self) -> &'static [Ability];
    /// The `f`s of the ops that start it.
    fn start_fs(&self) -> &'static [&'static str];
    /// The op that undoes it (also its part of the final heal).
    fn stop_op(&self) -> OpSpec;
    /// A start op drawn from the run's options.
    fn draw(&self, o: &NemesisOptions, rng: &mut ChaCha8Rng) -> OpSpec;
    /// Carry out a start op: what was done, as the completion records it.
    async fn start(&self, f: &str, value: &Value, cx: &mut Cx<'_>) -> Result<Value, String>;
    /// Undo whatever this package left broken.
    async fn stop(&self, cx: &mut Cx<'_>) -> Result<Value, String>;
}

/// A fault a run asks for: a row of [`PACKAGES`], by name.
#[derive(Clone, Copy)]
pub struct Fault(&'static dyn FaultPackage);

impl Fault {
    pub fn name(self) -> &'static str {
        self.0.name()
    }
    pub fn package(self) -> &'static dyn FaultPackage {
        self.0
    }
    /// Every fault there is.
    pub fn all() -> impl Iterator<Item = Fault> {
        PACKAGES.iter().map(|p| Fault(*p))
    }
}

impl PartialEq for Fault {
    fn eq(&self, other: &Fault) -> bool {
        self.name() == other.name()
    }
}
impl Eq for Fault {}
impl PartialOrd for Fault {
    fn partial_cmp(&self, other: &Fault) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Fault {
    fn cmp(&self, other: &Fault) -> std::cmp::Ordering {
        self.name().cmp(other.name())
    }
}
impl fmt::Debug for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Fault::all().find(|x| x.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Fault::all().map(Fault::name).collect();
            format!("unknown fault '{s}' (expected {})", names.join(", "))
        })
    }
}

impl serde::Serialize for Fault {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Fault {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Fault, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `--nemesis partition,kill` (or `none`).
pub fn parse_faults(s: &str) -> Result<BTreeSet<Fault>, String> {
    if s == "none" || s.is_empty() {
        return Ok(BTreeSet::new());
    }
    s.split(',').map(|f| f.trim().parse()).collect()
}

/// Refuse up front the faults a target cannot take, naming what it lacks.
pub fn check_supported(target: &dyn Target, faults: &BTreeSet<Fault>) -> Result<(), String> {
    let refusals: Vec<String> = faults
        .iter()
        .filter_map(|f| {
            let why: Vec<String> = f
                .package()
                .needs()
                .iter()
                .filter_map(|a| target.lacks(*a).map(|why| format!("no {a} ability: {why}")))
                .collect();
            (!why.is_empty()).then(|| format!("{f}: {}", why.join("; ")))
        })
        .collect();
    if refusals.is_empty() {
        Ok(())
    } else {
        Err(refusals.join("; "))
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NemesisOptions {
    pub faults: BTreeSet<Fault>,
    /// Seconds between a fault's start and stop, and between faults.
    pub interval_s: f64,
    pub partitions: Vec<PartitionShape>,
    pub targets: Vec<TargetSpec>,
    /// Largest clock bump, in ms (either direction).
    pub max_clock_skew_ms: i64,
    pub loss_fraction: f64,
    pub seed: u64,
}

impl Default for NemesisOptions {
    fn default() -> Self {
        NemesisOptions {
            faults: BTreeSet::new(),
            interval_s: 10.0,
            partitions: vec![
                PartitionShape::One,
                PartitionShape::Majority,
                PartitionShape::MajoritiesRing,
                PartitionShape::Bridge,
            ],
            targets: vec![TargetSpec::One, TargetSpec::Minority, TargetSpec::Primaries],
            max_clock_skew_ms: 60_000,
            loss_fraction: 0.2,
            seed: 0,
        }
    }
}

pub(crate) fn kw(s: &str) -> Value {
    Value::Keyword(s.into())
}

/// The fault schedule: wait, start a random enabled fault, wait, stop it; forever.
/// Wrap it in a time limit; the final heal is [`final_generator`].
pub fn generator(o: &NemesisOptions) -> Option<Gen> {
    if o.faults.is_empty() {
        return None;
    }
    let faults: Vec<Fault> = o.faults.iter().copied().collect();
    let interval_ns = (o.interval_s.max(0.001) * 1e9) as u64;
    let mut rng: ChaCha8Rng = rng_for(o.seed, "nemesis-schedule");
    let o = o.clone();
    Some(repeat(None, move || {
        let p = faults[rng.gen_range(0..faults.len())].package();
        let start = p.draw(&o, &mut rng);
        concat(vec![
            sleep(interval_ns),
            once(start),
            sleep(interval_ns),
            once(p.stop_op()),
        ])
    }))
}

/// Undo every fault the packages can leave behind.
pub fn final_generator(faults: &BTreeSet<Fault>) -> Option<Gen> {
    let ops: Vec<Gen> = faults.iter().map(|f| once(f.package().stop_op())).collect();
    (!ops.is_empty()).then(|| concat(ops))
}

/// What a nemesis op did: recorded as the completion (`info`, as Jepsen's
/// nemesis ops are, or `fail` when the fault could not be applied).
#[derive(Debug, Clone, PartialEq)]
pub struct FaultOutcome {
    pub kind: OpType,
    pub value: Value,
    pub error: Option<String>,
}

/// What a package sees while it carries out an op.
pub struct Cx<'a> {
    pub target: &'a mut dyn Target,
    pub rng: &'a mut ChaCha8Rng,
    /// The nodes this package has broken and not yet undone.
    pub affected: &'a mut BTreeSet<Node>,
}

impl Cx<'_> {
    /// The leaders now. Just after a fault there may be none for a moment
    /// (an election is under way), so ask again for a few seconds before
    /// saying there are none.
    pub async fn primaries(&mut self) -> Vec<Node> {
        const ASKS: u32 = 12;
        for attempt in 0..ASKS {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            let primaries = self.target.primaries().await;
            if !primaries.is_empty() {
                return primaries;
            }
        }
        Vec::new()
    }

    /// The nodes a target spec (`one`, `primaries`, ...) names now.
    pub async fn pick(&mut self, spec: &Value) -> Result<Vec<Node>, String> {
        let name = spec.as_str().unwrap_or("one");
        let nodes = self.nodes()?;
        if name == "all" {
            return Ok(nodes);
        }
        let t: TargetSpec = name.parse()?;
        let primaries = if t == TargetSpec::Primaries {
            self.primaries().await
        } else {
            Vec::new()
        };
        targets(t, &nodes, &primaries, self.rng).map_err(|e| e.to_string())
    }

    /// The target's nodes; an error, not a panic, when it has none.
    pub fn nodes(&self) -> Result<Vec<Node>, String> {
        let nodes = self.target.nodes();
        if nodes.is_empty() {
            Err("the target has no nodes".into())
        } else {
            Ok(nodes)
        }
    }
}

/// What a node fault does to its nodes, and what undoes it.
#[derive(Clone, Copy)]
pub(crate) enum NodeSignal {
    Kill,
    Pause,
}

impl NodeSignal {
    async fn apply(self, target: &mut dyn Target, nodes: &[Node]) -> Result<(), String> {
        match self {
            NodeSignal::Kill => target.kill(nodes).await,
            NodeSignal::Pause => target.pause(nodes).await,
        }
    }

    async fn undo(self, target: &mut dyn Target, nodes: &[Node]) -> Result<(), String> {
        match self {
            NodeSignal::Kill => target.restart(nodes).await,
            NodeSignal::Pause => target.resume(nodes).await,
        }
    }

    /// Signal the nodes the spec picks; they count as affected before the
    /// signal, so one that fails half way is still undone.
    pub(crate) async fn start(self, value: &Value, cx: &mut Cx<'_>) -> Result<Value, String> {
        let nodes = cx.pick(value).await?;
        cx.affected.extend(nodes.iter().cloned());
        self.apply(cx.target, &nodes).await?;
        Ok(Value::map(vec![(kw("nodes"), nodes_value(&nodes))]))
    }

    /// Undo the signal on every node it reached.
    pub(crate) async fn stop(self, cx: &mut Cx<'_>) -> Result<Value, String> {
        let nodes: Vec<Node> = cx.affected.iter().cloned().collect();
        self.undo(cx.target, &nodes).await?;
        cx.affected.clear();
        Ok(Value::map(vec![(kw("nodes"), nodes_value(&nodes))]))
    }
}

/// `[n1 n2]` as a list of strings.
pub(crate) fn nodes_value(nodes: &[Node]) -> Value {
    Value::List(
        nodes
            .iter()
            .map(|n| Value::Str(n.as_str().into()))
            .collect(),
    )
}

/// A completion's value: the package, the phase and what was done.
fn done(package: &str, phase: &str, details: Value) -> Value {
    let mut entries = vec![(kw("fault"), kw(package)), (kw("phase"), kw(phase))];
    match details {
        Value::Map(m) => entries.extend(m.iter().cloned()),
        Value::Nil => {}
        other => entries.push((kw("done"), other)),
    }
    Value::map(entries)
}

/// Carries nemesis ops out through a target.
pub struct Runner<E> {
    pub exec: E,
    rng: ChaCha8Rng,
    affected: BTreeMap<&'static str, BTreeSet<Node>>,
    /// Packages whose start was tried and that have not been stopped since.
    active: BTreeSet<&'static str>,
}

impl<E: Target> Runner<E> {
    pub fn new(exec: E, seed: u64) -> Self {
        Runner {
            exec,
            rng: rng_for(seed, "nemesis-runner"),
            affected: BTreeMap::new(),
            active: BTreeSet::new(),
        }
    }

    /// Apply one nemesis op.
    pub async fn invoke(&mut self, f: &str, value: &Value) -> FaultOutcome {
        match self.apply(f, value).await {
            Ok(v) => FaultOutcome {
                kind: OpType::Info,
                value: v,
                error: None,
            },
            Err(e) => FaultOutcome {
                kind: OpType::Fail,
                value: value.clone(),
                error: Some(e),
            },
        }
    }

    async fn apply(&mut self, f: &str, value: &Value) -> Result<Value, String> {
        for p in PACKAGES {
            let starts = p.start_fs().contains(&f);
            if !starts && p.stop_op().f != f {
                continue;
            }
            let name = p.name();
            let mut affected = self.affected.remove(name).unwrap_or_default();
            let mut cx = Cx {
                target: &mut self.exec,
                rng: &mut self.rng,
                affected: &mut affected,
            };
            let r = if starts {
                p.start(f, value, &mut cx).await
            } else {
                p.stop(&mut cx).await
            };
            self.affected.insert(name, affected);
            // A start that failed half way may still have broken something.
            if starts {
                self.active.insert(name);
            } else if r.is_ok() {
                self.active.remove(name);
            }
            let phase = if starts { "start" } else { "stop" };
            return r.map(|details| done(name, phase, details));
        }
        Err(format!("unknown nemesis op '{f}'"))
    }

    /// Undo everything still broken, whatever state the run ended in.
    pub async fn heal_all(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        for p in PACKAGES {
            let name = p.name();
            let broken = self.active.contains(name)
                || self.affected.get(name).is_some_and(|a| !a.is_empty());
            if !broken {
                continue;
            }
            let stop = p.stop_op();
            if let Err(e) = self.apply(&stop.f, &stop.value).await {
                errors.push(format!("{}: {e}", stop.f));
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests;
