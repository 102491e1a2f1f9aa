//! A sharded store in the simulator: requests find their partitions,
//! moves, splits and merges keep every acknowledged write, and
//! transactions over several groups commit all or nothing.

use splitbrain_store::config::{ClusterConfig, Handoff, Mode, Scheme, ShardingOptions};
use splitbrain_store::msg::{Op, OpResult, Reply, RequestOptions, Value};
use splitbrain_store::protocol::{AdminOp, AdminReply, Rebalance};
use splitbrain_store::shard::ShardMap;
use splitbrain_store::sim::{NetOptions, Sim};

fn sharded(mode: Mode, scheme: Scheme, nodes: usize, groups: u32) -> ClusterConfig {
    let mut cfg = Sim::cluster(nodes);
    cfg.mode = mode;
    cfg.sharding = Some(ShardingOptions {
        scheme,
        groups,
        replicas: 3,
        partitions_per_group: 2,
        ..ShardingOptions::default()
    });
    cfg
}

fn ok(sim: &mut Sim, node: u32, op: Op) -> OpResult {
    let c = sim
        .call(node, op.clone(), RequestOptions::default(), 10_000)
        .unwrap_or_else(|| panic!("{op:?} was not answered"));
    match c.response.reply {
        Reply::Ok(r) => r,
        other => panic!("{op:?}: {other:?}"),
    }
}

fn put(sim: &mut Sim, node: u32, key: &str, v: i64) {
    ok(
        sim,
        node,
        Op::Put {
            key: key.into(),
            value: Value::Int(v),
        },
    );
}

fn get(sim: &mut Sim, node: u32, key: &str) -> Option<Value> {
    match ok(sim, node, Op::Get { key: key.into() }) {
        OpResult::Value(v) => v,
        other => panic!("{other:?}"),
    }
}

fn map(sim: &mut Sim) -> ShardMap {
    match sim.admin_call(0, AdminOp::Partitions, 10_000) {
        Some(AdminReply::Partitions(m)) => m,
        other => panic!("{other:?}"),
    }
}

fn rebalance(sim: &mut Sim, node: u32, rb: Rebalance) -> String {
    match sim.admin_call(node, AdminOp::Rebalance(rb), 30_000) {
        Some(AdminReply::Rebalanced(done)) => done.summary,
        other => panic!("{rb:?}: {other:?}"),
    }
}

fn started(cfg: ClusterConfig, seed: u64) -> Sim {
    let mut sim = Sim::new(cfg, seed, NetOptions::default());
    sim.run_for(3_000);
    sim
}

#[test]
fn every_node_serves_every_key_and_moves_keep_the_data() {
    for mode in [Mode::Raft, Mode::SingleLeader, Mode::Chain] {
        let mut sim = started(sharded(mode, Scheme::Range, 5, 3), 7);
        for i in 0..40 {
            put(&mut sim, (i % 5) as u32, &i.to_string(), i);
        }
        for i in 0..40 {
            assert_eq!(
                get(&mut sim, ((i + 2) % 5) as u32, &i.to_string()),
                Some(Value::Int(i)),
                "{mode:?}"
            );
        }
        let m = map(&mut sim);
        let p = m.locate("25").unwrap().clone();
        let to = (p.group + 1) % 3;
        let summary = rebalance(
            &mut sim,
            4,
            Rebalance::Move {
                partition: p.id,
                to,
            },
        );
        assert!(
            summary.contains(&format!("partition {} moved", p.id)),
            "{summary}"
        );
        let after = map(&mut sim);
        assert_eq!(after.locate("25").unwrap().group, to);
        assert!(after.epoch > m.epoch);
        for i in 0..40 {
            assert_eq!(
                get(&mut sim, (i % 5) as u32, &i.to_string()),
                Some(Value::Int(i)),
                "{mode:?} after the move"
            );
        }
        // Writes after the move land on the new owner, and stay.
        put(&mut sim, 1, "25", 1000);
        assert_eq!(get(&mut sim, 3, "25"), Some(Value::Int(1000)));

        let split = rebalance(&mut sim, 2, Rebalance::Split { partition: p.id });
        let m2 = map(&mut sim);
        m2.check().unwrap();
        assert_eq!(m2.partitions.len(), m.partitions.len() + 1, "{split}");
        for i in 0..40 {
            let want = if i == 25 { 1000 } else { i };
            assert_eq!(
                get(&mut sim, (i % 5) as u32, &i.to_string()),
                Some(Value::Int(want)),
                "{mode:?} after {split}"
            );
        }
        let new = m2.partitions.iter().map(|p| p.id).max().unwrap();
        rebalance(&mut sim, 0, Rebalance::Merge { partition: new });
        let m3 = map(&mut sim);
        m3.check().unwrap();
        assert_eq!(m3.partitions.len(), m.partitions.len());
        for i in 0..40 {
            let want = if i == 25 { 1000 } else { i };
            assert_eq!(
                get(&mut sim, (i % 5) as u32, &i.to_string()),
                Some(Value::Int(want)),
                "{mode:?} after the merge"
            );
        }
    }
}

#[test]
fn a_transaction_over_groups_commits_all_or_nothing() {
    let mut sim = started(sharded(Mode::Raft, Scheme::Range, 5, 3), 3);
    let m = map(&mut sim);
    let (a, b) = ("1", "8");
    assert_ne!(m.locate(a).unwrap().group, m.locate(b).unwrap().group);
    put(&mut sim, 0, a, 50);
    put(&mut sim, 0, b, 50);
    let transfer = Op::Txn {
        ops: vec![
            Op::Incr {
                key: a.into(),
                delta: -10,
            },
            Op::Incr {
                key: b.into(),
                delta: 10,
            },
        ],
    };
    ok(&mut sim, 2, transfer);
    let read = Op::Txn {
        ops: vec![Op::Get { key: a.into() }, Op::Get { key: b.into() }],
    };
    assert_eq!(
        ok(&mut sim, 4, read),
        OpResult::Txn(vec![
            OpResult::Value(Some(Value::Int(40))),
            OpResult::Value(Some(Value::Int(60)))
        ])
    );
}

#[test]
fn without_the_epoch_handoff_a_move_loses_writes_sent_to_the_old_owner() {
    let mut cfg = sharded(Mode::Raft, Scheme::Hash, 5, 2);
    if let Some(s) = cfg.sharding.as_mut() {
        s.handoff = Handoff::None;
        s.map_refresh_ms = 5_000;
    }
    let mut sim = started(cfg, 11);
    put(&mut sim, 0, "k", 1);
    let m = map(&mut sim);
    let p = m.locate("k").unwrap().clone();
    // Node 3 reads the map now; its copy is stale once the move is done.
    put(&mut sim, 3, "k", 2);
    rebalance(
        &mut sim,
        0,
        Rebalance::Move {
            partition: p.id,
            to: (p.group + 1) % 2,
        },
    );
    // Node 3 still routes to the old owner, which takes the write...
    put(&mut sim, 3, "k", 3);
    // ...that readers of the new owner never see.
    assert_eq!(get(&mut sim, 0, "k"), Some(Value::Int(2)));
}

/// Random moves, splits and merges of a map, over many seeds: after each,
/// the ranges tile the key space (or the ring's tokens are distinct), every
/// key has one partition, and a key that changed partition or group is at
/// the change's new epoch.
#[test]
fn every_key_has_one_owner_at_every_epoch_of_random_rebalances() {
    use splitbrain_store::core::SeededRng;
    for scheme in [
        Scheme::Range,
        Scheme::ConsistentHash,
        Scheme::Hash,
        Scheme::Directory,
    ] {
        for seed in 0..50 {
            let mut rng = SeededRng::new(seed);
            let opts = ShardingOptions {
                scheme,
                groups: 3,
                ..ShardingOptions::default()
            };
            let mut m = ShardMap::initial(&opts);
            let keys: Vec<String> = (0..300).map(|i| i.to_string()).collect();
            for _ in 0..40 {
                let p = m.partitions[rng.below(m.partitions.len() as u64) as usize].clone();
                let epoch = m.next_epoch();
                let next = match rng.below(3) {
                    0 => m
                        .moved(p.id, (p.group + 1 + rng.below(2) as u32) % 3, epoch)
                        .ok(),
                    1 => {
                        let held: Vec<String> = {
                            let mut k: Vec<String> = keys
                                .iter()
                                .filter(|k| m.locate(k).unwrap().id == p.id)
                                .cloned()
                                .collect();
                            k.sort();
                            k
                        };
                        m.split_point(p.id, &held)
                            .ok()
                            .and_then(|at| m.split(p.id, &at, epoch).ok())
                            .map(|(n, _)| n)
                    }
                    _ => m
                        .merge_partner(p.id)
                        .ok()
                        .and_then(|into| m.merged(p.id, into, epoch).ok()),
                };
                let Some(next) = next else { continue };
                next.check()
                    .unwrap_or_else(|e| panic!("{scheme:?} seed {seed}: {e}"));
                assert!(next.epoch > m.epoch);
                for k in &keys {
                    let (a, b) = (m.locate(k).unwrap(), next.locate(k).unwrap());
                    // A key that changed partition or group is at the new epoch;
                    // one that did not is at its old one or, in a partition the
                    // change grew or cut, the new one.
                    if a.id != b.id || a.group != b.group {
                        assert_eq!(b.epoch, epoch, "{scheme:?} seed {seed} key {k}");
                    } else {
                        assert!(
                            b.epoch == a.epoch || b.epoch == epoch,
                            "{scheme:?} seed {seed} key {k}"
                        );
                    }
                }
                m = next;
            }
        }
    }
}

/// Random rebalances of a live cluster, each followed by a read of every
/// key written so far: no acknowledged write is lost, whatever moved.
#[test]
fn random_rebalances_keep_every_acknowledged_write() {
    for (seed, mode, scheme) in [
        (1, Mode::Raft, Scheme::Range),
        (2, Mode::Raft, Scheme::ConsistentHash),
        (3, Mode::SingleLeader, Scheme::Directory),
        (4, Mode::Chain, Scheme::Range),
    ] {
        let mut sim = started(sharded(mode, scheme, 5, 3), seed);
        let mut rng = splitbrain_store::core::SeededRng::new(seed);
        let mut written: Vec<(String, i64)> = Vec::new();
        for round in 0..8 {
            for i in 0..15 {
                let k = format!("{}", rng.below(60));
                let v = (round * 100 + i) as i64;
                put(&mut sim, rng.below(5) as u32, &k, v);
                written.retain(|(x, _)| *x != k);
                written.push((k, v));
            }
            let m = map(&mut sim);
            let p = m.partitions[rng.below(m.partitions.len() as u64) as usize].clone();
            let rb = match rng.below(3) {
                0 => Rebalance::Split { partition: p.id },
                1 => Rebalance::Merge { partition: p.id },
                _ => Rebalance::Move {
                    partition: p.id,
                    to: (p.group + 1) % 3,
                },
            };
            // Refusals (too few keys, neighbours on two groups) change nothing.
            let _ = sim.admin_call(rng.below(5) as u32, AdminOp::Rebalance(rb), 30_000);
            map(&mut sim).check().unwrap();
            for (k, v) in &written {
                assert_eq!(
                    get(&mut sim, rng.below(5) as u32, k),
                    Some(Value::Int(*v)),
                    "{mode:?} seed {seed} round {round} after {rb:?}"
                );
            }
        }
    }
}

/// A rebalance whose node crashes part way (at every point of it, one run
/// each) is finished by `settle` from another node: the map moves on, and
/// every key is readable and writable again with every acknowledged value.
#[test]
fn settle_finishes_a_rebalance_cut_short_at_any_step() {
    let mut finished_by_settle = 0;
    for change in 0..3 {
        for crash_after_ms in [2, 5, 9, 14, 20, 30, 45] {
            let mut sim = started(sharded(Mode::Raft, Scheme::Range, 5, 3), 21);
            for i in 0..30 {
                put(&mut sim, (i % 5) as u32, &i.to_string(), i);
            }
            let m = map(&mut sim);
            let p = m.locate("25").unwrap().clone();
            let rb = match change {
                0 => Rebalance::Move {
                    partition: p.id,
                    to: (p.group + 1) % 3,
                },
                1 => Rebalance::Split { partition: p.id },
                _ => Rebalance::Merge { partition: p.id },
            };
            let mover = 4;
            let answered = sim.admin_call(mover, AdminOp::Rebalance(rb), crash_after_ms);
            sim.crash(mover);
            let settled = sim.admin_call(1, AdminOp::Settle, 30_000);
            assert!(
                matches!(settled, Some(AdminReply::Partitions(_))),
                "{rb:?} cut at {crash_after_ms} ms ({answered:?}): {settled:?}"
            );
            sim.restart(mover);
            sim.run_for(2_000);
            let after = map(&mut sim);
            after.check().unwrap();
            if let (None, Rebalance::Move { partition, to }) = (&answered, rb) {
                // Cut short: done whole (finished by settle) or not begun.
                let now_at = after.get(partition).map(|x| x.group);
                if now_at == Some(to) {
                    finished_by_settle += 1;
                } else {
                    assert_eq!(now_at, Some(p.group), "cut at {crash_after_ms} ms");
                    assert_eq!(after.epoch, m.epoch, "cut at {crash_after_ms} ms");
                }
            }
            for i in 0..30 {
                assert_eq!(
                    get(&mut sim, (i % 4) as u32, &i.to_string()),
                    Some(Value::Int(i)),
                    "{rb:?} cut at {crash_after_ms} ms"
                );
            }
            put(&mut sim, 2, "25", 99);
            assert_eq!(get(&mut sim, 3, "25"), Some(Value::Int(99)));
        }
    }
    assert!(
        finished_by_settle >= 3,
        "only {finished_by_settle} moves were cut short"
    );
}
