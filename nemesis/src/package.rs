//! Fault packages: which faults a run injects, their schedule (a pure
//! generator of nemesis ops), the runner that carries each op out through an
//! environment's executor, and the final heal.
//!
//! Invocations name what to do (`start-partition "majority"`, `kill "one"`);
//! completions say exactly what was done (the grudge, the nodes), so a
//! report can shade each fault window and name it.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use splitbrain_generators::{concat, once, repeat, rng_for, sleep, Gen, OpSpec};
use splitbrain_history::{OpType, Value};

use crate::shape::{grudge, targets, Grudge, Node, PartitionShape, TargetSpec};

/// A kind of fault a run can ask for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    Partition,
    Kill,
    Pause,
    Clock,
    Loss,
}

impl Fault {
    pub const ALL: [Fault; 5] = [
        Fault::Partition,
        Fault::Kill,
        Fault::Pause,
        Fault::Clock,
        Fault::Loss,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Partition => "partition",
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Clock => "clock",
            Fault::Loss => "loss",
        }
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
        Fault::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| {
                format!("unknown fault '{s}' (expected partition, kill, pause, clock or loss)")
            })
    }
}

/// `--nemesis partition,kill` (or `none`).
pub fn parse_faults(s: &str) -> Result<BTreeSet<Fault>, String> {
    if s == "none" || s.is_empty() {
        return Ok(BTreeSet::new());
    }
    s.split(',').map(|f| f.trim().parse()).collect()
}

/// What an environment can do to its nodes. Each method applies a fault and
/// checks it took effect (an error says what did not).
#[async_trait]
pub trait Executor: Send {
    /// Why a fault cannot be taken here, or `Ok`.
    fn supports(&self, fault: Fault) -> Result<(), String>;
    fn nodes(&self) -> Vec<Node>;
    /// The current leaders, for `primaries` targets; empty when unknown.
    async fn primaries(&mut self) -> Vec<Node> {
        Vec::new()
    }
    async fn partition(&mut self, grudge: &Grudge) -> Result<(), String>;
    async fn heal(&mut self) -> Result<(), String>;
    async fn kill(&mut self, nodes: &[Node]) -> Result<(), String>;
    async fn restart(&mut self, nodes: &[Node]) -> Result<(), String>;
    async fn pause(&mut self, nodes: &[Node]) -> Result<(), String>;
    async fn resume(&mut self, nodes: &[Node]) -> Result<(), String>;
    /// Shift a node's clock by `delta_ms` from true time (absolute, not cumulative).
    async fn set_clock_offset(&mut self, node: &Node, delta_ms: i64) -> Result<(), String>;
    async fn loss(&mut self, fraction: f64) -> Result<(), String>;
}

/// A boxed executor is an executor, so environments can hand one out.
#[async_trait]
impl Executor for Box<dyn Executor> {
    fn supports(&self, fault: Fault) -> Result<(), String> {
        (**self).supports(fault)
    }
    fn nodes(&self) -> Vec<Node> {
        (**self).nodes()
    }
    async fn primaries(&mut self) -> Vec<Node> {
        (**self).primaries().await
    }
    async fn partition(&mut self, g: &Grudge) -> Result<(), String> {
        (**self).partition(g).await
    }
    async fn heal(&mut self) -> Result<(), String> {
        (**self).heal().await
    }
    async fn kill(&mut self, nodes: &[Node]) -> Result<(), String> {
        (**self).kill(nodes).await
    }
    async fn restart(&mut self, nodes: &[Node]) -> Result<(), String> {
        (**self).restart(nodes).await
    }
    async fn pause(&mut self, nodes: &[Node]) -> Result<(), String> {
        (**self).pause(nodes).await
    }
    async fn resume(&mut self, nodes: &[Node]) -> Result<(), String> {
        (**self).resume(nodes).await
    }
    async fn set_clock_offset(&mut self, node: &Node, delta_ms: i64) -> Result<(), String> {
        (**self).set_clock_offset(node, delta_ms).await
    }
    async fn loss(&mut self, fraction: f64) -> Result<(), String> {
        (**self).loss(fraction).await
    }
}

/// Refuse up front the faults an executor cannot take.
pub fn check_supported(exec: &dyn Executor, faults: &BTreeSet<Fault>) -> Result<(), String> {
    let refusals: Vec<String> = faults
        .iter()
        .filter_map(|f| exec.supports(*f).err().map(|why| format!("{f}: {why}")))
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

fn kw(s: &str) -> Value {
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
    let partitions = o.partitions.clone();
    let target_specs = o.targets.clone();
    let max_skew = o.max_clock_skew_ms.max(1);
    let loss = o.loss_fraction;
    Some(repeat(None, move || {
        let fault = faults[rng.gen_range(0..faults.len())];
        let (start, stop) = match fault {
            Fault::Partition => {
                let shape = partitions[rng.gen_range(0..partitions.len())];
                (
                    OpSpec::new("start-partition", kw(shape.name())),
                    OpSpec::new("stop-partition", Value::Nil),
                )
            }
            Fault::Kill => {
                let t = target_specs[rng.gen_range(0..target_specs.len())];
                (
                    OpSpec::new("kill", kw(target_name(t))),
                    OpSpec::new("restart", kw("all")),
                )
            }
            Fault::Pause => {
                let t = target_specs[rng.gen_range(0..target_specs.len())];
                (
                    OpSpec::new("pause", kw(target_name(t))),
                    OpSpec::new("resume", kw("all")),
                )
            }
            Fault::Clock => {
                let delta = rng.gen_range(-max_skew..=max_skew);
                let f = if rng.gen_bool(0.5) {
                    "bump-clock"
                } else {
                    "strobe-clock"
                };
                (
                    OpSpec::new(f, Value::Int(delta)),
                    OpSpec::new("reset-clock", Value::Nil),
                )
            }
            Fault::Loss => (
                OpSpec::new("start-loss", Value::Float(loss)),
                OpSpec::new("stop-loss", Value::Nil),
            ),
        };
        concat(vec![
            sleep(interval_ns),
            once(start),
            sleep(interval_ns),
            once(stop),
        ])
    }))
}

fn target_name(t: TargetSpec) -> &'static str {
    match t {
        TargetSpec::One => "one",
        TargetSpec::Minority => "minority",
        TargetSpec::Majority => "majority",
        TargetSpec::Primaries => "primaries",
        TargetSpec::All => "all",
    }
}

/// Undo every fault a package can leave behind.
pub fn final_generator(faults: &BTreeSet<Fault>) -> Option<Gen> {
    let mut ops = Vec::new();
    for f in faults {
        ops.push(match f {
            Fault::Partition => OpSpec::new("stop-partition", Value::Nil),
            Fault::Kill => OpSpec::new("restart", kw("all")),
            Fault::Pause => OpSpec::new("resume", kw("all")),
            Fault::Clock => OpSpec::new("reset-clock", Value::Nil),
            Fault::Loss => OpSpec::new("stop-loss", Value::Nil),
        });
    }
    if ops.is_empty() {
        None
    } else {
        Some(concat(ops.into_iter().map(once).collect()))
    }
}

/// What a nemesis op did: recorded as the completion (`info`, as Jepsen's
/// nemesis ops are, or `fail` when the fault could not be applied).
#[derive(Debug, Clone, PartialEq)]
pub struct FaultOutcome {
    pub kind: OpType,
    pub value: Value,
    pub error: Option<String>,
}

fn grudge_value(shape: &str, g: &Grudge) -> Value {
    let entries = g
        .iter()
        .map(|(k, v)| {
            (
                Value::Str(k.as_str().into()),
                Value::set(
                    v.iter()
                        .map(|n| Value::Str(n.as_str().into()))
                        .collect::<Vec<_>>(),
                ),
            )
        })
        .collect();
    Value::map(vec![
        (kw("shape"), kw(shape)),
        (kw("grudge"), Value::Map(entries)),
    ])
}

fn nodes_value(nodes: &[Node]) -> Value {
    Value::List(
        nodes
            .iter()
            .map(|n| Value::Str(n.as_str().into()))
            .collect(),
    )
}

/// Carries nemesis ops out through an executor, remembering what is broken
/// so that stops and the final heal undo exactly that.
pub struct Runner<E> {
    pub exec: E,
    rng: ChaCha8Rng,
    killed: BTreeSet<Node>,
    paused: BTreeSet<Node>,
    skewed: BTreeSet<Node>,
}

impl<E: Executor> Runner<E> {
    pub fn new(exec: E, seed: u64) -> Self {
        Runner {
            exec,
            rng: rng_for(seed, "nemesis-runner"),
            killed: BTreeSet::new(),
            paused: BTreeSet::new(),
            skewed: BTreeSet::new(),
        }
    }

    /// The leaders now. Just after a fault there may be none for a moment
    /// (an election is under way), so ask again for a few seconds before
    /// saying there are none.
    async fn current_primaries(&mut self) -> Vec<Node> {
        const ASKS: u32 = 12;
        for attempt in 0..ASKS {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            let primaries = self.exec.primaries().await;
            if !primaries.is_empty() {
                return primaries;
            }
        }
        Vec::new()
    }

    async fn pick(&mut self, spec: &Value) -> Result<Vec<Node>, String> {
        let name = spec.as_str().unwrap_or("one");
        if name == "all" {
            return Ok(self.exec.nodes());
        }
        let t: TargetSpec = name.parse()?;
        let primaries = if t == TargetSpec::Primaries {
            self.current_primaries().await
        } else {
            Vec::new()
        };
        targets(t, &self.exec.nodes(), &primaries, &mut self.rng).map_err(|e| e.to_string())
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
        match f {
            "start-partition" => {
                let shape: PartitionShape = value.as_str().unwrap_or("majority").parse()?;
                let primaries = if shape == PartitionShape::Primaries {
                    self.current_primaries().await
                } else {
                    Vec::new()
                };
                let g = grudge(shape, &self.exec.nodes(), &primaries, &mut self.rng)
                    .map_err(|e| e.to_string())?;
                self.exec.partition(&g).await?;
                Ok(grudge_value(shape.name(), &g))
            }
            "stop-partition" => {
                self.exec.heal().await?;
                Ok(kw("healed"))
            }
            "kill" => {
                let nodes = self.pick(value).await?;
                self.exec.kill(&nodes).await?;
                self.killed.extend(nodes.iter().cloned());
                Ok(nodes_value(&nodes))
            }
            "restart" => {
                let nodes: Vec<Node> = std::mem::take(&mut self.killed).into_iter().collect();
                self.exec.restart(&nodes).await?;
                Ok(nodes_value(&nodes))
            }
            "pause" => {
                let nodes = self.pick(value).await?;
                self.exec.pause(&nodes).await?;
                self.paused.extend(nodes.iter().cloned());
                Ok(nodes_value(&nodes))
            }
            "resume" => {
                let nodes: Vec<Node> = std::mem::take(&mut self.paused).into_iter().collect();
                self.exec.resume(&nodes).await?;
                Ok(nodes_value(&nodes))
            }
            "bump-clock" | "strobe-clock" => {
                let delta = value.as_int().ok_or("a clock op needs a delta in ms")?;
                let nodes = self.exec.nodes();
                let node = nodes[self.rng.gen_range(0..nodes.len())].clone();
                // A strobe lands on one side of true time or the other; the window shows which.
                let delta = if f == "strobe-clock" && self.rng.gen_bool(0.5) {
                    -delta
                } else {
                    delta
                };
                self.exec.set_clock_offset(&node, delta).await?;
                self.skewed.insert(node.clone());
                Ok(Value::map(vec![
                    (kw("node"), Value::Str(node.as_str().into())),
                    (kw("delta-ms"), Value::Int(delta)),
                ]))
            }
            "reset-clock" => {
                let nodes: Vec<Node> = std::mem::take(&mut self.skewed).into_iter().collect();
                for n in &nodes {
                    self.exec.set_clock_offset(n, 0).await?;
                }
                Ok(nodes_value(&nodes))
            }
            "start-loss" => {
                let p = match value {
                    Value::Float(p) => *p,
                    Value::Int(i) => *i as f64,
                    _ => 0.2,
                };
                self.exec.loss(p).await?;
                Ok(Value::Float(p))
            }
            "stop-loss" => {
                self.exec.heal().await?;
                Ok(kw("healed"))
            }
            other => Err(format!("unknown nemesis op '{other}'")),
        }
    }

    /// Undo everything, whatever state the run ended in.
    pub async fn heal_all(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        for (f, v) in [
            ("stop-partition", Value::Nil),
            ("restart", kw("all")),
            ("resume", kw("all")),
            ("reset-clock", Value::Nil),
        ] {
            if let Err(e) = self.apply(f, &v).await {
                errors.push(format!("{f}: {e}"));
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use splitbrain_generators::{time_limit, Context, Poll, Thread};

    #[derive(Default)]
    struct Recorder {
        log: Vec<String>,
        refuse_clock: bool,
    }

    #[async_trait]
    impl Executor for Recorder {
        fn supports(&self, fault: Fault) -> Result<(), String> {
            if fault == Fault::Clock && self.refuse_clock {
                Err("this database reads the clock without libc".into())
            } else {
                Ok(())
            }
        }
        fn nodes(&self) -> Vec<Node> {
            (1..=5).map(|i| format!("n{i}")).collect()
        }
        async fn primaries(&mut self) -> Vec<Node> {
            vec!["n3".into()]
        }
        async fn partition(&mut self, g: &Grudge) -> Result<(), String> {
            self.log.push(format!(
                "partition {}",
                g.values().map(|v| v.len()).sum::<usize>()
            ));
            Ok(())
        }
        async fn heal(&mut self) -> Result<(), String> {
            self.log.push("heal".into());
            Ok(())
        }
        async fn kill(&mut self, nodes: &[Node]) -> Result<(), String> {
            self.log.push(format!("kill {}", nodes.join(",")));
            Ok(())
        }
        async fn restart(&mut self, nodes: &[Node]) -> Result<(), String> {
            self.log.push(format!("restart {}", nodes.join(",")));
            Ok(())
        }
        async fn pause(&mut self, nodes: &[Node]) -> Result<(), String> {
            self.log.push(format!("pause {}", nodes.join(",")));
            Ok(())
        }
        async fn resume(&mut self, nodes: &[Node]) -> Result<(), String> {
            self.log.push(format!("resume {}", nodes.join(",")));
            Ok(())
        }
        async fn set_clock_offset(&mut self, node: &Node, d: i64) -> Result<(), String> {
            self.log.push(format!("clock {node} {d}"));
            Ok(())
        }
        async fn loss(&mut self, p: f64) -> Result<(), String> {
            self.log.push(format!("loss {p}"));
            Ok(())
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        // The executor here never awaits anything real, so polling once suffices.
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("the test executor never waits"),
        }
    }

    #[test]
    fn parses_and_refuses() {
        let faults = parse_faults("partition,kill").unwrap();
        assert_eq!(faults.len(), 2);
        assert!(parse_faults("none").unwrap().is_empty());
        assert!(parse_faults("partition,meteor")
            .unwrap_err()
            .contains("unknown fault 'meteor'"));
        let exec = Recorder {
            refuse_clock: true,
            ..Default::default()
        };
        let err = check_supported(&exec, &parse_faults("clock,kill").unwrap()).unwrap_err();
        assert_eq!(err, "clock: this database reads the clock without libc");
    }

    #[test]
    fn runner_records_what_it_did_and_heals_exactly_that() {
        let mut r = Runner::new(Recorder::default(), 1);
        let out = block_on(r.invoke("start-partition", &kw("majority")));
        assert_eq!(out.kind, OpType::Info);
        assert_eq!(out.value.map_get(&kw("shape")), Some(&kw("majority")));
        let grudge = out.value.map_get(&kw("grudge")).unwrap();
        assert!(matches!(grudge, Value::Map(m) if m.len() == 5));
        let killed = block_on(r.invoke("kill", &kw("primaries")));
        assert_eq!(killed.value, Value::list(vec!["n3".into()]));
        block_on(r.invoke("pause", &kw("one")));
        block_on(r.invoke("bump-clock", &Value::Int(5000)));
        let errors = block_on(r.heal_all());
        assert!(errors.is_empty(), "{errors:?}");
        let log = &r.exec.log;
        assert!(log.contains(&"restart n3".to_string()), "{log:?}");
        assert!(log.iter().any(|l| l.starts_with("resume n")), "{log:?}");
        assert!(
            log.iter()
                .any(|l| l.starts_with("clock") && l.ends_with(" 0")),
            "{log:?}"
        );
        let bad = block_on(r.invoke("start-partition", &kw("pentagon")));
        assert_eq!(bad.kind, OpType::Fail);
        assert!(bad.error.unwrap().contains("unknown partition"));
    }

    #[test]
    fn schedule_alternates_start_and_stop() {
        let o = NemesisOptions {
            faults: parse_faults("partition,kill,pause,clock,loss").unwrap(),
            interval_s: 1.0,
            seed: 3,
            ..Default::default()
        };
        let mut g = time_limit(60_000_000_000, generator(&o).unwrap());
        let mut now = 0u64;
        let mut fs = Vec::new();
        for _ in 0..1000 {
            let ctx = Context::new(now, vec![Thread::Nemesis], vec![Thread::Nemesis]);
            match g.next(&ctx) {
                Poll::Op(op) => fs.push((op.time_ns, op.f.to_string())),
                Poll::Pending { wake_ns: Some(w) } => now = w,
                Poll::Pending { wake_ns: None } => now += 1,
                Poll::Done => break,
            }
        }
        assert!(fs.len() >= 50, "{}", fs.len());
        for pair in fs.chunks(2) {
            let stop = match pair[0].1.as_str() {
                "start-partition" => "stop-partition",
                "kill" => "restart",
                "pause" => "resume",
                "bump-clock" | "strobe-clock" => "reset-clock",
                "start-loss" => "stop-loss",
                other => panic!("unexpected {other}"),
            };
            if pair.len() == 2 {
                assert_eq!(pair[1].1, stop);
                assert_eq!(pair[1].0 - pair[0].0, 1_000_000_000);
            }
        }
        let kinds: BTreeSet<&str> = fs.iter().map(|(_, f)| f.as_str()).collect();
        assert!(kinds.len() >= 8, "every fault comes up: {kinds:?}");
        let fin = final_generator(&o.faults);
        assert!(fin.is_some());
    }
}
