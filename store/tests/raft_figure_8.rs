//! Figure 8 of the Raft paper, played in the simulator on five nodes: a
//! leader that commits an entry of an earlier term by counting replicas
//! (breaking §5.4.2) acknowledges a write that a later leader overwrites.
//! With the rule, the same faults at the same moments lose nothing.

use splitbrain_store::config::{ClusterConfig, Mode};
use splitbrain_store::msg::{NodeId, Op, OpResult, Reply, RequestOptions, Value};
use splitbrain_store::sim::{NetOptions, Sim};

fn raft(commit_rule: bool) -> ClusterConfig {
    let mut cfg = Sim::cluster(5);
    cfg.mode = Mode::Raft;
    cfg.raft.commit_rule = commit_rule;
    // The scenario takes several elections; the write must still be waiting.
    cfg.raft.request_timeout_ms = 20_000;
    cfg
}

fn append(elem: i64) -> Op {
    Op::Append {
        key: "x".into(),
        elem,
    }
}

/// Runs until one of `nodes` is a live leader of a term above `above`.
fn leader_among(sim: &mut Sim, nodes: &[NodeId], above: u64) -> (NodeId, u64) {
    for _ in 0..5000 {
        sim.run_for(1);
        for n in nodes {
            if let Some(s) = sim.status(*n) {
                if s.role == "leader" && s.epoch > above {
                    return (*n, s.epoch);
                }
            }
        }
    }
    panic!("no leader among {nodes:?} above term {above}");
}

fn read_list(sim: &mut Sim, node: NodeId) -> Option<Vec<i64>> {
    let done = sim.call(
        node,
        Op::ReadList { key: "x".into() },
        RequestOptions::default(),
        1000,
    )?;
    match done.response.reply {
        Reply::Ok(OpResult::Value(Some(Value::List(l)))) => Some(l),
        Reply::Ok(OpResult::Value(None)) => Some(Vec::new()),
        _ => None,
    }
}

struct Outcome {
    /// The reply the client of `append 1` got, if any.
    first: Option<Reply>,
    /// What the leader read while it thought `append 1` committed.
    read_then: Option<Vec<i64>>,
    /// The list at the end, once every node agrees.
    at_end: Vec<i64>,
}

fn figure_8(commit_rule: bool, seed: u64) -> Outcome {
    let net = NetOptions {
        loss: 0.0,
        delay_min_ms: 1,
        delay_max_ms: 3,
        tick_ms: 5,
    };
    let mut sim = Sim::new(raft(commit_rule), seed, net);
    let all: Vec<NodeId> = (0..5).collect();
    let (s1, _) = leader_among(&mut sim, &all, 0);
    let done = sim.call(s1, append(0), RequestOptions::default(), 2000);
    assert!(matches!(done.map(|c| c.response.reply), Some(Reply::Ok(_))));
    sim.run_for(200);

    // (a) S1 replicates `append 1` to S2 only.
    let s2 = (s1 + 1) % 5;
    let rest: Vec<NodeId> = all
        .iter()
        .copied()
        .filter(|n| *n != s1 && *n != s2)
        .collect();
    sim.partition(&[vec![s1, s2], rest.clone()]);
    let first = sim.submit(s1, append(1), RequestOptions::default());
    sim.run_for(50);

    // (b) S5 is elected by S3, S4 and itself, takes `append 2`, and is cut
    // off before it replicates anything.
    let (s5, t5) = leader_among(&mut sim, &rest, 0);
    sim.heal();
    sim.isolate(s5);
    sim.submit(s5, append(2), RequestOptions::default());
    sim.run_for(20);

    // (c) S1 or S2 (their logs are the longest) is elected and replicates
    // `append 1` to S3 and S4: a majority holds it.
    let majority: Vec<NodeId> = all.iter().copied().filter(|n| *n != s5).collect();
    let (l, tl) = leader_among(&mut sim, &majority, t5);
    sim.run_for(100);
    let read_then = read_list(&mut sim, l);

    // (d) The leader is cut off with its partner; S5 returns to S3 and S4.
    let partner = if l == s1 { s2 } else { s1 };
    sim.heal();
    sim.partition(&[
        vec![l, partner],
        rest.iter()
            .copied()
            .filter(|n| *n != s5)
            .chain([s5])
            .collect(),
    ]);
    let s34: Vec<NodeId> = rest.clone();
    leader_among(&mut sim, &s34, tl);
    sim.run_for(300);
    sim.heal();
    sim.run_for(2000);

    let at_end = loop {
        let (leader, _) = leader_among(&mut sim, &all, 0);
        if let Some(l) = read_list(&mut sim, leader) {
            break l;
        }
    };
    Outcome {
        first: sim.completion(first).map(|c| c.response.reply.clone()),
        read_then,
        at_end,
    }
}

#[test]
fn without_the_commit_rule_an_acknowledged_write_is_overwritten() {
    for seed in 1..=10 {
        let o = figure_8(false, seed);
        assert_eq!(o.first, Some(Reply::Ok(OpResult::Done)), "seed {seed}");
        assert_eq!(
            o.read_then,
            Some(vec![0, 1]),
            "seed {seed}: the leader read it"
        );
        assert_eq!(o.at_end, vec![0, 2], "seed {seed}: S5's entry replaced it");
    }
}

/// The new leader's own no-op travels with the earlier entry, so a majority
/// holds an entry of its term and S5 can no longer win (Figure 8 (e)).
#[test]
fn with_the_commit_rule_the_same_faults_lose_nothing() {
    for seed in 1..=10 {
        let o = figure_8(true, seed);
        assert_eq!(o.first, Some(Reply::Ok(OpResult::Done)), "seed {seed}");
        assert_eq!(o.read_then, Some(vec![0, 1]), "seed {seed}");
        assert_eq!(o.at_end, vec![0, 1], "seed {seed}: append 1 must survive");
    }
}
