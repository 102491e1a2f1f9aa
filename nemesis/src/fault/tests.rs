use std::collections::BTreeSet;

use async_trait::async_trait;
use splitbrain_generators::{time_limit, Context, Poll, Thread};
use splitbrain_history::{OpType, Value};

use super::*;
use crate::shape::{Grudge, Node};
use crate::target::{Ability, Members, Target};

#[derive(Default)]
struct Recorder {
    log: Vec<String>,
    no_clock: bool,
    nodes: usize,
    /// The configuration, for a target with membership changes.
    members: Option<Vec<Node>>,
}

#[async_trait]
impl Target for Recorder {
    fn nodes(&self) -> Vec<Node> {
        (1..=self.nodes).map(|i| format!("n{i}")).collect()
    }
    fn lacks(&self, a: Ability) -> Option<String> {
        (a == Ability::Clock && self.no_clock)
            .then(|| "this database reads the clock without libc".into())
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
    async fn stop_loss(&mut self) -> Result<(), String> {
        self.log.push("stop-loss".into());
        Ok(())
    }
    async fn members(&mut self) -> Result<Members, String> {
        let members = self.members.clone().ok_or("no membership")?;
        Ok(Members {
            members,
            joining: Vec::new(),
        })
    }
    async fn remove_member(&mut self, node: &Node) -> Result<Members, String> {
        self.log.push(format!("remove {node}"));
        if let Some(m) = self.members.as_mut() {
            m.retain(|x| x != node);
        }
        self.members().await
    }
    async fn add_member(&mut self, node: &Node) -> Result<Members, String> {
        self.log.push(format!("add {node}"));
        if let Some(m) = self.members.as_mut() {
            m.push(node.clone());
            m.sort();
        }
        self.members().await
    }
}

fn five() -> Recorder {
    Recorder {
        nodes: 5,
        ..Default::default()
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    // The target here never awaits anything real, so polling once suffices.
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("the test target never waits"),
    }
}

#[test]
fn parses_and_refuses_naming_the_missing_ability() {
    let faults = parse_faults("partition,kill").unwrap();
    assert_eq!(faults.len(), 2);
    assert!(parse_faults("none").unwrap().is_empty());
    assert!(parse_faults("partition,meteor")
        .unwrap_err()
        .contains("unknown fault 'meteor'"));
    let t = Recorder {
        no_clock: true,
        ..five()
    };
    let err = check_supported(&t, &parse_faults("clock,kill").unwrap()).unwrap_err();
    assert_eq!(
        err,
        "clock: no clock ability: this database reads the clock without libc"
    );
    let json = serde_json::to_string(&faults).unwrap();
    assert_eq!(json, r#"["kill","partition"]"#);
    let back: BTreeSet<Fault> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, faults);
}

#[test]
fn every_package_has_its_own_ops() {
    let mut fs = BTreeSet::new();
    for p in PACKAGES {
        for f in p.start_fs() {
            assert!(fs.insert(f.to_string()), "{f} twice");
        }
        assert!(fs.insert(p.stop_op().f.to_string()), "{} twice", p.name());
        assert!(!p.needs().is_empty());
    }
}

fn field<'a>(v: &'a Value, k: &str) -> Option<&'a Value> {
    v.map_get(&kw(k))
}

#[test]
fn runner_records_what_it_did_and_heals_exactly_that() {
    let mut r = Runner::new(five(), 1);
    let out = block_on(r.invoke("start-partition", &kw("majority")));
    assert_eq!(out.kind, OpType::Info);
    assert_eq!(field(&out.value, "fault"), Some(&kw("partition")));
    assert_eq!(field(&out.value, "phase"), Some(&kw("start")));
    assert_eq!(field(&out.value, "shape"), Some(&kw("majority")));
    let grudge = field(&out.value, "grudge").unwrap();
    assert!(matches!(grudge, Value::Map(m) if m.len() == 5));
    let killed = block_on(r.invoke("kill", &kw("primaries")));
    assert_eq!(
        field(&killed.value, "nodes"),
        Some(&Value::list(vec!["n3".into()]))
    );
    block_on(r.invoke("pause", &kw("one")));
    let skew = block_on(r.invoke("strobe-clock", &Value::Int(5000)));
    let applied = field(&skew.value, "delta-ms")
        .and_then(Value::as_int)
        .unwrap();
    assert_eq!(applied.abs(), 5000);
    assert!(r
        .exec
        .log
        .iter()
        .any(|l| l.ends_with(&format!(" {applied}"))));
    block_on(r.invoke("start-loss", &Value::Float(0.3)));
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
    // Stopping loss is not a heal of the partition, and each is undone once.
    assert_eq!(
        log.iter().filter(|l| *l == "stop-loss").count(),
        1,
        "{log:?}"
    );
    assert_eq!(log.iter().filter(|l| *l == "heal").count(), 1, "{log:?}");
    // A second heal has nothing left to do.
    let before = r.exec.log.len();
    assert!(block_on(r.heal_all()).is_empty());
    assert_eq!(r.exec.log.len(), before);
    let bad = block_on(r.invoke("start-partition", &kw("pentagon")));
    assert_eq!(bad.kind, OpType::Fail);
    assert!(bad.error.unwrap().contains("unknown partition"));
}

#[test]
fn membership_records_the_configuration_before_and_after_and_adds_back() {
    let mut r = Runner::new(
        Recorder {
            members: Some(vec!["n1".into(), "n2".into(), "n3".into()]),
            ..five()
        },
        4,
    );
    let out = block_on(r.invoke("remove-member", &kw("primaries")));
    assert_eq!(out.kind, OpType::Info, "{out:?}");
    assert_eq!(field(&out.value, "fault"), Some(&kw("membership")));
    assert_eq!(field(&out.value, "node"), Some(&Value::Str("n3".into())));
    let after = field(&out.value, "after").unwrap();
    assert_eq!(
        field(after, "members"),
        Some(&Value::list(vec!["n1".into(), "n2".into()]))
    );
    let before = field(&out.value, "before").unwrap();
    assert_eq!(
        field(before, "members"),
        Some(&Value::list(vec!["n1".into(), "n2".into(), "n3".into()]))
    );
    // Two members left: another removal would leave one; refused, nothing done.
    let refused = block_on(r.invoke("remove-member", &kw("one")));
    assert_eq!(refused.kind, OpType::Fail);
    assert!(refused.error.unwrap().contains("fewer than 2"));
    assert!(block_on(r.heal_all()).is_empty());
    assert_eq!(r.exec.log, vec!["remove n3", "add n3"]);
    assert_eq!(r.exec.members.as_ref().map(Vec::len), Some(3));
}

#[test]
fn stop_loss_leaves_the_partition() {
    let mut r = Runner::new(five(), 2);
    block_on(r.invoke("start-partition", &kw("one")));
    block_on(r.invoke("start-loss", &Value::Float(0.2)));
    block_on(r.invoke("stop-loss", &Value::Nil));
    assert!(
        !r.exec.log.contains(&"heal".to_string()),
        "{:?}",
        r.exec.log
    );
}

#[test]
fn a_target_with_no_nodes_fails_the_op_instead_of_panicking() {
    let mut r = Runner::new(Recorder::default(), 3);
    for (f, v) in [
        ("bump-clock", Value::Int(10)),
        ("kill", kw("one")),
        ("start-partition", kw("majority")),
    ] {
        let out = block_on(r.invoke(f, &v));
        assert_eq!(out.kind, OpType::Fail, "{f}");
        assert!(out.error.unwrap().contains("no nodes"), "{f}");
    }
}

#[test]
fn schedule_alternates_start_and_stop() {
    let o = NemesisOptions {
        faults: parse_faults("partition,kill,pause,clock,loss,membership").unwrap(),
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
        let p = PACKAGES
            .iter()
            .find(|p| p.start_fs().contains(&pair[0].1.as_str()))
            .unwrap_or_else(|| panic!("unexpected {}", pair[0].1));
        if pair.len() == 2 {
            assert_eq!(pair[1].1, p.stop_op().f.as_str());
            assert_eq!(pair[1].0 - pair[0].0, 1_000_000_000);
        }
    }
    let kinds: BTreeSet<&str> = fs.iter().map(|(_, f)| f.as_str()).collect();
    assert!(kinds.len() >= 10, "every fault comes up: {kinds:?}");
    assert!(final_generator(&o.faults).is_some());
}
