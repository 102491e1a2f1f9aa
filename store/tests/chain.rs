//! Chain replication and CRAQ in the deterministic simulator: acknowledged
//! writes survive crashes and partitions of any node, the replicas agree
//! after the heal, and without epoch checks a replaced tail keeps serving.

use splitbrain_store::chain::MASTER;
use splitbrain_store::config::{ChainReads, ClusterConfig, Mode};
use splitbrain_store::core::SeededRng;
use splitbrain_store::core::{AdminOp, AdminReply};
use splitbrain_store::msg::{NodeId, Op, OpResult, ReadFrom, Reply, RequestOptions, Value};
use splitbrain_store::sim::{NetOptions, Sim};
use std::collections::BTreeMap;

fn chain(nodes: usize, reads: ChainReads, epochs: bool) -> ClusterConfig {
    let mut cfg = Sim::cluster(nodes);
    cfg.mode = Mode::Chain;
    cfg.chain.reads = reads;
    cfg.chain.epochs = epochs;
    cfg
}

fn head(sim: &mut Sim, max_ms: u64) -> NodeId {
    for _ in 0..max_ms / 10 {
        sim.run_for(10);
        if let Some(h) = sim.leader() {
            return h;
        }
    }
    panic!("no head within {max_ms} ms");
}

fn read_at(sim: &mut Sim, node: NodeId, key: &str, read_from: ReadFrom) -> Option<Reply> {
    let options = RequestOptions {
        read_from: Some(read_from),
        ..RequestOptions::default()
    };
    sim.call(node, Op::ReadList { key: key.into() }, options, 1000)
        .map(|c| c.response.reply)
}

fn list(reply: Option<Reply>) -> Option<Vec<i64>> {
    match reply? {
        Reply::Ok(OpResult::Value(Some(Value::List(l)))) => Some(l),
        Reply::Ok(OpResult::Value(None)) => Some(Vec::new()),
        _ => None,
    }
}

fn final_list(sim: &mut Sim, key: &str) -> Vec<i64> {
    for _ in 0..50 {
        let h = head(sim, 5000);
        if let Some(l) = list(read_at(sim, h, key, ReadFrom::Leader)) {
            return l;
        }
        sim.run_for(50);
    }
    panic!("could not read {key}");
}

/// Appends unique elements through the head while nodes (the master
/// included) crash and restart and are cut off and healed; returns the
/// acknowledged elements per key and the lists at the end.
fn faulty_run(
    cfg: ClusterConfig,
    seed: u64,
) -> (BTreeMap<String, Vec<i64>>, BTreeMap<String, Vec<i64>>) {
    faulty_run_with(cfg, seed, false)
}

/// As [`faulty_run`]; with `membership`, the master is also asked to remove
/// chain nodes and to add them back, and at the end adds every one back.
fn faulty_run_with(
    cfg: ClusterConfig,
    seed: u64,
    membership: bool,
) -> (BTreeMap<String, Vec<i64>>, BTreeMap<String, Vec<i64>>) {
    let net = NetOptions {
        loss: 0.01,
        delay_min_ms: 1,
        delay_max_ms: 6,
        tick_ms: 5,
    };
    let n = cfg.nodes.len();
    let mut sim = Sim::new(cfg, seed, net);
    let mut rng = SeededRng::new(seed ^ 0xc4a1);
    head(&mut sim, 2000);
    let mut submitted = Vec::new();
    let mut down: Vec<(NodeId, u64)> = Vec::new();
    let start = sim.now_ms();
    let mut elem = 0;
    let mut changes = 0;
    while sim.now_ms() < start + 5000 {
        let now = sim.now_ms();
        match rng.below(400) {
            0 if down.is_empty() => {
                let victim = rng.below(n as u64) as NodeId;
                sim.crash(victim);
                down.push((victim, now + 200 + rng.below(800)));
            }
            1 => sim.isolate(rng.below(n as u64) as NodeId),
            2 | 3 => sim.heal(),
            4 | 5 if membership => {
                let node = 1 + rng.below(n as u64 - 1) as NodeId;
                let op = if rng.below(2) == 0 {
                    AdminOp::Remove(node)
                } else {
                    AdminOp::Add(node)
                };
                if let Some(AdminReply::Members(_)) = sim.admin_call(MASTER, op, 2000) {
                    changes += 1;
                }
            }
            _ => {}
        }
        for (node, at) in std::mem::take(&mut down) {
            if at <= now {
                sim.restart(node);
            } else {
                down.push((node, at));
            }
        }
        let target = sim.leader().unwrap_or(rng.below(n as u64) as NodeId);
        let key = format!("k{}", rng.below(3));
        elem += 1;
        let client = sim.submit(
            target,
            Op::Append {
                key: key.clone(),
                elem,
            },
            RequestOptions::default(),
        );
        submitted.push((client, key, elem));
        sim.run_for(1 + rng.below(4));
    }
    for (node, _) in down {
        sim.restart(node);
    }
    sim.heal();
    sim.run_for(1000);
    if membership {
        assert!(
            changes > 2,
            "seed {seed}: only {changes} membership changes"
        );
        for node in 1..n as NodeId {
            let reply = sim.admin_call(MASTER, AdminOp::Add(node), 10_000);
            assert!(
                matches!(&reply, Some(AdminReply::Members(m)) if m.members.contains(&node)),
                "seed {seed}: n{node} was not added back: {reply:?}"
            );
        }
    }
    sim.run_for(2000);
    let mut acked: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (client, key, e) in submitted {
        if let Some(c) = sim.completion(client) {
            if matches!(c.response.reply, Reply::Ok(_)) {
                acked.entry(key).or_default().push(e);
            }
        }
    }
    let mut present = BTreeMap::new();
    for k in 0..3 {
        let key = format!("k{k}");
        present.insert(key.clone(), final_list(&mut sim, &key));
    }
    let digests: Vec<Option<u64>> = (1..n as NodeId).map(|node| sim.data_digest(node)).collect();
    assert!(
        digests.windows(2).all(|w| w[0] == w[1]),
        "seed {seed}: chain nodes differ after the heal: {digests:?}"
    );
    (acked, present)
}

#[test]
fn acknowledged_writes_survive_crashes_and_partitions_of_any_node() {
    for reads in [ChainReads::Tail, ChainReads::Any] {
        for seed in 1..=20 {
            let (acked, present) = faulty_run(chain(4, reads, true), seed);
            let count: usize = acked.values().map(Vec::len).sum();
            assert!(count > 100, "seed {seed}: only {count} writes acknowledged");
            for (key, elems) in &acked {
                let have = &present[key];
                let lost: Vec<&i64> = elems.iter().filter(|e| !have.contains(e)).collect();
                assert!(
                    lost.is_empty(),
                    "seed {seed} {reads:?}: {key} lost {lost:?}"
                );
                let mut sorted = have.clone();
                sorted.sort_unstable();
                sorted.dedup();
                assert_eq!(
                    sorted.len(),
                    have.len(),
                    "seed {seed}: {key} has duplicates"
                );
            }
        }
    }
}

#[test]
fn acknowledged_writes_survive_membership_changes() {
    for reads in [ChainReads::Tail, ChainReads::Any] {
        for seed in 1..=10 {
            let (acked, present) = faulty_run_with(chain(4, reads, true), seed, true);
            let count: usize = acked.values().map(Vec::len).sum();
            assert!(count > 100, "seed {seed}: only {count} writes acknowledged");
            for (key, elems) in &acked {
                let lost: Vec<&i64> = elems.iter().filter(|e| !present[key].contains(e)).collect();
                assert!(
                    lost.is_empty(),
                    "seed {seed} {reads:?}: {key} lost {lost:?}"
                );
            }
        }
    }
}

/// The master and the head on one side, the rest of the chain on the
/// other: the master shortens the chain to the head, which goes on taking
/// writes; the cut-off tail has not been told.
fn stale_tail_read(epochs: bool) -> Option<Vec<i64>> {
    let mut sim = Sim::new(chain(4, ChainReads::Any, epochs), 7, NetOptions::default());
    let h = head(&mut sim, 2000);
    assert_eq!(h, 1, "the chain starts n2 → n3 → n4");
    let first = sim.call(
        h,
        Op::Append {
            key: "x".into(),
            elem: 1,
        },
        RequestOptions::default(),
        1000,
    );
    assert!(matches!(
        first.map(|c| c.response.reply),
        Some(Reply::Ok(_))
    ));
    sim.run_for(100);
    sim.partition(&[vec![0, 1], vec![2, 3]]);
    sim.run_for(1000);
    let second = sim.call(
        h,
        Op::Append {
            key: "x".into(),
            elem: 2,
        },
        RequestOptions::default(),
        1000,
    );
    assert!(
        matches!(second.map(|c| c.response.reply), Some(Reply::Ok(_))),
        "the head alone is the chain now"
    );
    list(read_at(&mut sim, 3, "x", ReadFrom::Any))
}

#[test]
fn without_epoch_checks_a_replaced_tail_serves_stale_reads() {
    assert_eq!(stale_tail_read(false), Some(vec![1]));
}

#[test]
fn with_epoch_checks_a_replaced_tail_stops_serving() {
    assert_eq!(stale_tail_read(true), None);
}

/// CRAQ: a middle node answers a clean key itself, the same as the tail.
#[test]
fn craq_reads_at_every_node_agree_on_clean_keys() {
    let mut sim = Sim::new(chain(4, ChainReads::Any, true), 3, NetOptions::default());
    let h = head(&mut sim, 2000);
    for e in 0..20 {
        sim.call(
            h,
            Op::Append {
                key: "x".into(),
                elem: e,
            },
            RequestOptions::default(),
            1000,
        );
    }
    sim.run_for(100);
    let reads: Vec<Option<Vec<i64>>> = (1..4)
        .map(|node| list(read_at(&mut sim, node, "x", ReadFrom::Any)))
        .collect();
    let expected: Vec<i64> = (0..20).collect();
    assert!(
        reads.iter().all(|r| r.as_ref() == Some(&expected)),
        "{reads:?}"
    );
}
