//! Property tests over fixed lists of seeds in the deterministic simulator:
//! each replication mode keeps its promises, and the weak ones really break.

use splitbrain_store::config::{ClusterConfig, Conflict, Mode, Replication};
use splitbrain_store::core::SeededRng;
use splitbrain_store::msg::{
    NodeId, Op, OpResult, ReadFrom, Refusal, Reply, RequestOptions, Value,
};
use splitbrain_store::sim::{NetOptions, Sim};
use splitbrain_store::NodeStatus;
use std::collections::{BTreeMap, BTreeSet};

fn single_leader(n: usize, replication: Replication, fencing: bool, leases: bool) -> ClusterConfig {
    let mut cfg = Sim::cluster(n);
    cfg.mode = Mode::SingleLeader;
    cfg.single_leader.replication = replication;
    cfg.single_leader.fencing = fencing;
    cfg.single_leader.leases = leases;
    cfg
}

fn leaderless(n: usize, conflict: Conflict) -> ClusterConfig {
    let mut cfg = Sim::cluster(n);
    cfg.mode = Mode::Leaderless;
    cfg.leaderless.conflict = conflict;
    cfg
}

fn key(i: u64) -> String {
    format!("k{i}")
}

fn wait_for_leader(sim: &mut Sim, max_ms: u64) -> NodeId {
    let deadline = sim.now_ms() + max_ms;
    while sim.now_ms() < deadline {
        sim.run_for(10);
        if let Some(l) = sim.leader() {
            return l;
        }
    }
    panic!("no leader within {max_ms} ms");
}

/// Reads `key` through the leader, retrying refusals, once the cluster is healed.
fn final_list(sim: &mut Sim, k: &str) -> Vec<i64> {
    for _ in 0..50 {
        let leader = wait_for_leader(sim, 5000);
        let done = sim.call(
            leader,
            Op::ReadList { key: k.to_string() },
            RequestOptions::default(),
            500,
        );
        if let Some(c) = done {
            if let Reply::Ok(OpResult::Value(Some(Value::List(l)))) = c.response.reply {
                return l;
            }
        }
        sim.run_for(50);
    }
    panic!("could not read {k} from a leader");
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Crash the leader, restart it from its log later.
    Crash,
    /// Cut the leader off from the others, heal later.
    Isolate,
}

fn failover_run(cfg: ClusterConfig, seed: u64) -> (Lists, Lists) {
    failover_run_with(cfg, seed, Fault::Crash)
}

/// Appends unique elements through whoever seems to lead while the leader is
/// crashed or cut off and later brought back; returns (acked elements per key,
/// elements present at the end).
fn failover_run_with(cfg: ClusterConfig, seed: u64, fault: Fault) -> (Lists, Lists) {
    let (acked, present, failed_over) = failover_run_checked(cfg, seed, fault);
    assert!(
        failed_over,
        "seed {seed}: no other node took over from the leader"
    );
    (acked, present)
}

/// Elements per key.
type Lists = BTreeMap<String, Vec<i64>>;

fn failover_run_checked(cfg: ClusterConfig, seed: u64, fault: Fault) -> (Lists, Lists, bool) {
    let net = NetOptions {
        loss: 0.01,
        delay_min_ms: 1,
        delay_max_ms: 8,
        tick_ms: 5,
    };
    let mut sim = Sim::new(cfg, seed, net);
    let mut rng = SeededRng::new(seed.wrapping_mul(31));
    wait_for_leader(&mut sim, 3000);
    let mut submitted = Vec::new();
    let mut elem = 0i64;
    let mut crashed: Option<(NodeId, u64)> = None;
    let mut failed_over = false;
    let start = sim.now_ms();
    while sim.now_ms() < start + 3000 {
        let t = sim.now_ms() - start;
        if crashed.is_none() && t >= 600 + rng.below(400) {
            if let Some(l) = sim.leader() {
                match fault {
                    Fault::Crash => sim.crash(l),
                    Fault::Isolate => sim.isolate(l),
                }
                crashed = Some((l, sim.now_ms()));
            }
        }
        if let Some((node, at)) = crashed {
            failed_over |=
                (0..3).any(|n| n != node && sim.status(n).is_some_and(|s| s.role == "leader"));
            if sim.now_ms() > at + 800 {
                if !sim.is_up(node) {
                    sim.restart(node);
                }
                sim.heal();
            }
        }
        let target = (0..3)
            .find(|n| sim.status(*n).is_some_and(|s| s.role == "leader"))
            .unwrap_or(rng.below(3) as NodeId);
        let k = key(rng.below(3));
        elem += 1;
        let client = sim.submit(
            target,
            Op::Append {
                key: k.clone(),
                elem,
            },
            RequestOptions::default(),
        );
        submitted.push((client, k, elem));
        sim.run_for(1 + rng.below(4));
    }
    if let Some((node, _)) = crashed {
        if !sim.is_up(node) {
            sim.restart(node);
        }
    }
    sim.heal();
    sim.run_for(2000);
    let mut acked: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (client, k, e) in &submitted {
        if let Some(c) = sim.completion(*client) {
            if matches!(c.response.reply, Reply::Ok(_)) {
                acked.entry(k.clone()).or_default().push(*e);
            }
        }
    }
    let mut present = BTreeMap::new();
    for i in 0..3 {
        present.insert(key(i), final_list(&mut sim, &key(i)));
    }
    (acked, present, failed_over)
}

fn lost(acked: &BTreeMap<String, Vec<i64>>, present: &BTreeMap<String, Vec<i64>>) -> Vec<i64> {
    let mut lost = Vec::new();
    for (k, es) in acked {
        let have = present.get(k).cloned().unwrap_or_default();
        lost.extend(es.iter().filter(|e| !have.contains(e)));
    }
    lost
}

const FAILOVER_SEEDS: [u64; 10] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];

#[test]
fn single_leader_sync_with_fencing_never_loses_acked_writes_across_failover() {
    for seed in FAILOVER_SEEDS {
        let (acked, present) = failover_run(single_leader(3, Replication::Sync, true, true), seed);
        let total: usize = acked.values().map(Vec::len).sum();
        assert!(total > 20, "seed {seed}: only {total} writes acked");
        let lost = lost(&acked, &present);
        assert!(
            lost.is_empty(),
            "seed {seed}: acknowledged appends lost: {lost:?}"
        );
    }
}

#[test]
fn single_leader_sync_with_fencing_keeps_acked_writes_when_the_leader_is_partitioned_away() {
    for seed in FAILOVER_SEEDS {
        let cfg = single_leader(3, Replication::Sync, true, true);
        let (acked, present) = failover_run_with(cfg, seed, Fault::Isolate);
        let lost = lost(&acked, &present);
        assert!(
            lost.is_empty(),
            "seed {seed}: acknowledged appends lost: {lost:?}"
        );
    }
}

#[test]
fn single_leader_async_loses_acked_writes_under_leader_crash_in_some_seed() {
    let mut losing = Vec::new();
    for seed in FAILOVER_SEEDS {
        let (acked, present) = failover_run(single_leader(3, Replication::Async, true, true), seed);
        let lost = lost(&acked, &present);
        if !lost.is_empty() {
            println!("seed {seed}: async lost acknowledged appends {lost:?}");
            losing.push(seed);
        }
    }
    assert!(
        !losing.is_empty(),
        "no seed in {FAILOVER_SEEDS:?} lost a write under async replication"
    );
}

#[test]
fn semi_sync_one_of_two_followers_keeps_acked_writes() {
    // With 3 nodes, an ack from one follower puts the write on a majority, and
    // the up-to-date vote rule makes the next leader hold it.
    for seed in [11, 12, 13] {
        let (acked, present) = failover_run(
            single_leader(3, Replication::SemiSync { k: 1 }, true, true),
            seed,
        );
        assert!(lost(&acked, &present).is_empty(), "seed {seed}");
    }
}

/// Sequential writers per key and concurrent readers; every read must return
/// at least the latest value acknowledged before it began.
fn stale_reads(cfg: ClusterConfig, seed: u64, r: u8, w: u8) -> (usize, Vec<String>) {
    let mut sim = Sim::new(
        cfg,
        seed,
        NetOptions {
            loss: 0.0,
            delay_min_ms: 1,
            delay_max_ms: 10,
            tick_ms: 5,
        },
    );
    let mut rng = SeededRng::new(seed ^ 0xabc);
    let opts = RequestOptions {
        r: Some(r),
        w: Some(w),
        read_from: None,
    };
    let keys = 4u64;
    let mut writer: Vec<Option<(u64, i64)>> = vec![None; keys as usize];
    let mut next_value = vec![0i64; keys as usize];
    let mut acks: Vec<Vec<(u64, i64)>> = vec![Vec::new(); keys as usize];
    let mut reads = Vec::new();
    for _ in 0..400 {
        for k in 0..keys as usize {
            match writer[k] {
                None => {
                    next_value[k] += 1;
                    let node = rng.below(3) as NodeId;
                    let c = sim.submit(
                        node,
                        Op::Put {
                            key: key(k as u64),
                            value: Value::Int(next_value[k]),
                        },
                        opts.clone(),
                    );
                    writer[k] = Some((c, next_value[k]));
                }
                Some((c, v)) => {
                    if let Some(done) = sim.completion(c) {
                        assert!(
                            matches!(done.response.reply, Reply::Ok(_)),
                            "write failed without faults"
                        );
                        acks[k].push((done.completed_ms, v));
                        writer[k] = None;
                    }
                }
            }
        }
        let k = rng.below(keys);
        let c = sim.submit(
            rng.below(3) as NodeId,
            Op::Get { key: key(k) },
            opts.clone(),
        );
        reads.push((c, k as usize));
        sim.run_for(1 + rng.below(3));
    }
    sim.run_for(500);
    let mut stale = Vec::new();
    for (c, k) in &reads {
        let done = sim.completion(*c).expect("read completes without faults");
        let floor = acks[*k]
            .iter()
            .filter(|(t, _)| *t < done.invoked_ms)
            .map(|(_, v)| *v)
            .max()
            .unwrap_or(0);
        let got = match &done.response.reply {
            Reply::Ok(OpResult::Value(Some(Value::Int(v)))) => *v,
            Reply::Ok(OpResult::Value(None)) => 0,
            Reply::Ok(OpResult::Siblings(vs)) => vs
                .iter()
                .filter_map(|v| {
                    if let Value::Int(i) = v {
                        Some(*i)
                    } else {
                        None
                    }
                })
                .max()
                .unwrap_or(0),
            other => panic!("unexpected read reply {other:?}"),
        };
        if got < floor {
            stale.push(format!(
                "read of {} at {} returned {got}, latest acked {floor}",
                key(*k as u64),
                done.invoked_ms
            ));
        }
    }
    (reads.len(), stale)
}

#[test]
fn leaderless_strict_quorum_never_reads_stale_without_faults() {
    for seed in 1..=8 {
        let mut cfg = leaderless(3, Conflict::Lww);
        cfg.leaderless.read_repair = false;
        let (n, stale) = stale_reads(cfg, seed, 2, 2);
        assert!(n > 100);
        assert!(stale.is_empty(), "seed {seed}: {stale:?}");
    }
}

#[test]
fn leaderless_sloppy_r1_w1_reads_stale_in_some_seed() {
    // The contrast: R + W <= N lets a read miss the latest write.
    let mut found = false;
    for seed in 1..=8 {
        let mut cfg = leaderless(3, Conflict::Lww);
        cfg.leaderless.read_repair = false;
        cfg.leaderless.anti_entropy_ms = 0;
        let (_, stale) = stale_reads(cfg, seed, 1, 1);
        if let Some(s) = stale.first() {
            println!("seed {seed}: {s}");
            found = true;
            break;
        }
    }
    assert!(found, "R=W=1 never read stale");
}

/// One key written sequentially through random coordinators; returns whether
/// the final value differs from the last acknowledged write.
fn lww_run(seed: u64, skew_ms: i64) -> Option<(i64, i64)> {
    let mut cfg = leaderless(3, Conflict::Lww);
    cfg.leaderless.anti_entropy_ms = 0;
    let mut sim = Sim::new(cfg, seed, NetOptions::default());
    sim.set_clock_offset(1, -skew_ms);
    sim.set_clock_offset(2, skew_ms / 2);
    let mut rng = SeededRng::new(seed ^ 0x77);
    let mut last_acked = 0;
    for v in 1..=30 {
        let node = rng.below(3) as NodeId;
        let done = sim.call(
            node,
            Op::Put {
                key: "x".into(),
                value: Value::Int(v),
            },
            RequestOptions::default(),
            1000,
        );
        if matches!(done.map(|d| d.response.reply), Some(Reply::Ok(_))) {
            last_acked = v;
        }
        sim.run_for(rng.below(40));
    }
    sim.run_for(200);
    let all = RequestOptions {
        r: Some(3),
        ..Default::default()
    };
    let done = sim
        .call(0, Op::Get { key: "x".into() }, all, 1000)
        .expect("final read");
    let Reply::Ok(OpResult::Value(Some(Value::Int(fin)))) = done.response.reply else {
        panic!("final read: {:?}", done.response.reply)
    };
    (fin != last_acked).then_some((fin, last_acked))
}

#[test]
fn lww_with_skewed_clocks_loses_a_write_in_some_seed() {
    let mut losing = None;
    for seed in 1..=10 {
        if let Some((fin, last)) = lww_run(seed, 300) {
            println!("seed {seed}: final value {fin}, but the last acknowledged write was {last}");
            losing = Some(seed);
            break;
        }
    }
    assert!(losing.is_some(), "no seed lost a write under 300 ms skew");
    for seed in 1..=5 {
        assert_eq!(
            lww_run(seed, 0),
            None,
            "seed {seed}: a write was lost without skew"
        );
    }
}

#[test]
fn version_vectors_keep_concurrent_writes_as_siblings() {
    let mut sim = Sim::new(
        leaderless(3, Conflict::VersionVectors),
        5,
        NetOptions::default(),
    );
    let one = RequestOptions {
        r: Some(1),
        w: Some(1),
        read_from: None,
    };
    sim.partition(&[vec![0], vec![1], vec![2]]);
    sim.call(
        0,
        Op::Put {
            key: "s".into(),
            value: Value::Int(1),
        },
        one.clone(),
        500,
    )
    .unwrap();
    sim.call(
        1,
        Op::Put {
            key: "s".into(),
            value: Value::Int(2),
        },
        one.clone(),
        500,
    )
    .unwrap();
    sim.heal();
    sim.run_for(100);
    let all = RequestOptions {
        r: Some(3),
        ..Default::default()
    };
    let done = sim
        .call(2, Op::Get { key: "s".into() }, all.clone(), 500)
        .unwrap();
    let Reply::Ok(OpResult::Siblings(mut vs)) = done.response.reply else {
        panic!("expected siblings, got {:?}", done.response.reply)
    };
    vs.sort();
    assert_eq!(vs, vec![Value::Int(1), Value::Int(2)]);
    // A write with the merged context supersedes both.
    sim.call(
        2,
        Op::Incr {
            key: "s".into(),
            delta: 10,
        },
        all.clone(),
        500,
    )
    .unwrap();
    let done = sim.call(0, Op::Get { key: "s".into() }, all, 500).unwrap();
    assert_eq!(
        done.response.reply,
        Reply::Ok(OpResult::Value(Some(Value::Int(12))))
    );
}

/// Adds to one set on `n` nodes (N = 3, R = W = 2), each round one through
/// every coordinator in `coordinators`, while the network splits and heals
/// and drops 1% of messages; then heals, lets repair run and reads the set
/// from all replicas. Returns the acknowledged adds and those the final read lacks.
fn set_adds_under_partitions(
    conflict: Conflict,
    n: usize,
    coordinators: &[NodeId],
    seed: u64,
) -> (Vec<i64>, Vec<i64>) {
    let net = NetOptions {
        loss: 0.01,
        delay_min_ms: 1,
        delay_max_ms: 10,
        tick_ms: 5,
    };
    let mut sim = Sim::new(leaderless(n, conflict), seed, net);
    let n = n as NodeId;
    let mut rng = SeededRng::new(seed ^ 0x5e7);
    let mut adds = Vec::new();
    let mut elem = 0i64;
    for round in 0..80 {
        if round % 20 == 10 {
            match rng.below(3) {
                0 => sim.isolate(rng.below(n.into()) as NodeId),
                1 => {
                    // A partial cut: every node still reaches others, so
                    // every coordinator keeps taking writes.
                    let a = rng.below(n.into()) as NodeId;
                    sim.partition(&[vec![a], vec![(a + 1) % n]]);
                }
                _ => sim.heal(),
            }
        } else if round % 20 == 0 {
            sim.heal();
        }
        for c in coordinators {
            elem += 1;
            let op = Op::Add {
                key: "s".into(),
                elem,
            };
            adds.push((elem, sim.submit(*c, op, RequestOptions::default())));
        }
        sim.run_for(1 + rng.below(6));
    }
    sim.heal();
    sim.run_for(3000);
    let acked: Vec<i64> = adds
        .iter()
        .filter(|(_, c)| {
            sim.completion(*c)
                .is_some_and(|d| matches!(d.response.reply, Reply::Ok(_)))
        })
        .map(|(e, _)| *e)
        .collect();
    let all = RequestOptions {
        r: Some(3),
        ..Default::default()
    };
    // A lost message can leave one read short of its quorum; ask again.
    let present = (0..10)
        .find_map(|_| {
            let done = sim.call(0, Op::ReadSet { key: "s".into() }, all.clone(), 3000)?;
            match done.response.reply {
                Reply::Ok(OpResult::Value(Some(Value::Set(s)))) => Some(s),
                _ => None,
            }
        })
        .unwrap_or_else(|| panic!("seed {seed}: no final read"));
    let lost = acked
        .iter()
        .filter(|e| !present.contains(e))
        .copied()
        .collect();
    (acked, lost)
}

#[test]
fn version_vectors_keep_every_acknowledged_add_through_partitions() {
    // Several coordinators, as Dynamo clients bound to different nodes use;
    // one coordinator taking overlapping requests, as a single client pool
    // does; and coordinators that replicate the key or not (five nodes): all
    // must keep every add that was acknowledged.
    let runs: [(usize, &[NodeId], u64); 3] = [
        (3, &[0, 1, 2], 4),
        (3, &[0, 0, 0], 4),
        (5, &[0, 1, 2, 3, 4], 1),
    ];
    for (n, coordinators, seeds) in runs {
        for seed in 1..=seeds {
            let (acked, lost) =
                set_adds_under_partitions(Conflict::VersionVectors, n, coordinators, seed);
            assert!(
                acked.len() > 60,
                "seed {seed}, {n} nodes, via {coordinators:?}: only {} adds acknowledged",
                acked.len()
            );
            assert!(
                lost.is_empty(),
                "seed {seed}, {n} nodes, via {coordinators:?}: lost {} of {} acknowledged adds: {lost:?}",
                lost.len(),
                acked.len()
            );
        }
    }
}

#[test]
fn last_write_wins_loses_concurrent_adds() {
    // The contrast: a later read-modify-write overwrites a concurrent one.
    let (acked, lost) = set_adds_under_partitions(Conflict::Lww, 3, &[0, 1, 2], 1);
    assert!(
        !lost.is_empty(),
        "LWW kept all {} acknowledged adds",
        acked.len()
    );
}

#[test]
fn same_seed_replays_exactly() {
    let run = |seed| {
        let (acked, present) = failover_run(single_leader(3, Replication::Async, true, true), seed);
        format!("{acked:?}{present:?}")
    };
    assert_eq!(run(9), run(9));
    assert_ne!(run(9), run(10));
}

/// Every node's status every 20 simulated ms while the leader is cut off
/// again and again, so that elections happen throughout.
fn election_trace(seed: u64) -> Vec<Vec<Option<NodeStatus>>> {
    let net = NetOptions {
        loss: 0.01,
        ..Default::default()
    };
    let mut sim = Sim::new(single_leader(5, Replication::Sync, true, true), seed, net);
    let mut trace = Vec::new();
    for _ in 0..5 {
        for phase in 0..2 {
            for _ in 0..40 {
                sim.run_for(20);
                trace.push((0..5).map(|n| sim.status(n)).collect());
            }
            match (phase, sim.leader()) {
                (0, Some(l)) => sim.isolate(l),
                _ => sim.heal(),
            }
        }
    }
    trace
}

#[test]
fn one_seed_gives_one_election_history_and_another_seed_another() {
    let mut traces = Vec::new();
    for seed in [0, 7, 8] {
        let trace = election_trace(seed);
        assert_eq!(
            trace,
            election_trace(seed),
            "seed {seed} replayed differently"
        );
        let terms: BTreeSet<(String, u64)> = trace
            .iter()
            .flatten()
            .flatten()
            .filter(|s| s.is_leader())
            .map(|s| (s.node.clone(), s.epoch))
            .collect();
        assert!(
            terms.len() >= 4,
            "seed {seed}: too few elections to tell seeds apart: {terms:?}"
        );
        traces.push(trace);
    }
    assert_ne!(traces[0], traces[1]);
    assert_ne!(traces[1], traces[2]);
    assert_ne!(traces[0], traces[2]);
}

fn five_node_leaderless(sloppy: bool) -> ClusterConfig {
    let mut cfg = leaderless(5, Conflict::Lww);
    cfg.leaderless.sloppy_quorum = sloppy;
    cfg.leaderless.anti_entropy_ms = 0;
    cfg.leaderless.read_repair = false;
    cfg
}

#[test]
fn sloppy_quorum_with_hinted_handoff_accepts_writes_and_hands_them_off() {
    let w3 = RequestOptions {
        w: Some(3),
        r: Some(1),
        read_from: None,
    };
    for (sloppy, handoff) in [(false, true), (true, true), (true, false)] {
        let mut cfg = five_node_leaderless(sloppy);
        cfg.leaderless.hinted_handoff = handoff;
        let mut sim = Sim::new(cfg.clone(), 3, NetOptions::default());
        let probe =
            splitbrain_store::leaderless::Leaderless::new(0, 5, cfg.leaderless.clone(), Vec::new());
        let pref = probe.preference_list("h");
        let down = pref[1];
        let coordinator = pref[0];
        sim.crash(down);
        sim.run_for(1000);
        let done = sim.call(
            coordinator,
            Op::Put {
                key: "h".into(),
                value: Value::Int(7),
            },
            w3.clone(),
            3000,
        );
        let reply = done.map(|d| d.response.reply);
        if !sloppy {
            assert!(
                matches!(reply, Some(Reply::Unknown(_))),
                "strict quorum with a replica down: {reply:?}"
            );
            continue;
        }
        assert!(
            matches!(reply, Some(Reply::Ok(_))),
            "sloppy quorum: {reply:?}"
        );
        sim.restart(down);
        sim.run_for(1500);
        let local = sim.call(
            down,
            Op::Get { key: "h".into() },
            RequestOptions {
                r: Some(1),
                ..Default::default()
            },
            500,
        );
        // Without handoff the write stays on the stand-in only.
        let expect = handoff.then_some(Value::Int(7));
        assert_eq!(
            local.unwrap().response.reply,
            Reply::Ok(OpResult::Value(expect))
        );
    }
}

/// Node 2 misses writes while isolated; returns what it alone answers afterwards.
fn missed_writes_then(read_repair: bool, anti_entropy_ms: u64, read_all_first: bool) -> Reply {
    let mut cfg = leaderless(3, Conflict::Lww);
    cfg.leaderless.read_repair = read_repair;
    cfg.leaderless.anti_entropy_ms = anti_entropy_ms;
    let mut sim = Sim::new(cfg, 4, NetOptions::default());
    sim.isolate(2);
    let w2 = RequestOptions {
        w: Some(2),
        ..Default::default()
    };
    let done = sim
        .call(
            0,
            Op::Put {
                key: "m".into(),
                value: Value::Int(3),
            },
            w2,
            1000,
        )
        .unwrap();
    assert_eq!(done.response.reply, Reply::Ok(OpResult::Done));
    sim.heal();
    if read_all_first {
        let all = RequestOptions {
            r: Some(3),
            ..Default::default()
        };
        sim.call(0, Op::Get { key: "m".into() }, all, 1000).unwrap();
    }
    sim.run_for(1500);
    let one = RequestOptions {
        r: Some(1),
        ..Default::default()
    };
    sim.call(2, Op::Get { key: "m".into() }, one, 1000)
        .unwrap()
        .response
        .reply
}

#[test]
fn read_repair_fixes_a_stale_replica() {
    assert_eq!(
        missed_writes_then(false, 0, true),
        Reply::Ok(OpResult::Value(None))
    );
    assert_eq!(
        missed_writes_then(true, 0, true),
        Reply::Ok(OpResult::Value(Some(Value::Int(3))))
    );
}

#[test]
fn merkle_anti_entropy_fixes_a_stale_replica() {
    assert_eq!(
        missed_writes_then(false, 0, false),
        Reply::Ok(OpResult::Value(None))
    );
    assert_eq!(
        missed_writes_then(false, 200, false),
        Reply::Ok(OpResult::Value(Some(Value::Int(3))))
    );
}

#[test]
fn fencing_off_lets_a_deposed_leader_keep_acking_writes() {
    for fencing in [true, false] {
        let mut sim = Sim::new(
            single_leader(3, Replication::Sync, fencing, true),
            21,
            NetOptions::default(),
        );
        let old = wait_for_leader(&mut sim, 3000);
        sim.isolate(old);
        sim.run_for(1500);
        let leaders: Vec<NodeId> = (0..3)
            .filter(|n| sim.status(*n).is_some_and(|s| s.role == "leader"))
            .collect();
        let done = sim.call(
            old,
            Op::Put {
                key: "a".into(),
                value: Value::Int(1),
            },
            RequestOptions::default(),
            3000,
        );
        let reply = done.map(|d| d.response.reply);
        if fencing {
            // The deposed leader cannot get a follower's ack: unknown, never ok.
            assert!(!matches!(reply, Some(Reply::Ok(_))), "fenced: {reply:?}");
        } else {
            assert_eq!(
                leaders.len(),
                2,
                "split brain expected, leaders {leaders:?}"
            );
        }
    }
}

#[test]
fn async_without_fencing_acks_on_both_sides_of_a_partition() {
    let mut sim = Sim::new(
        single_leader(3, Replication::Async, false, false),
        22,
        NetOptions::default(),
    );
    let old = wait_for_leader(&mut sim, 3000);
    sim.isolate(old);
    sim.run_for(1500);
    let new = (0..3)
        .find(|n| *n != old && sim.status(*n).is_some_and(|s| s.role == "leader"))
        .expect("new leader");
    let a = sim.call(
        old,
        Op::Put {
            key: "a".into(),
            value: Value::Int(1),
        },
        RequestOptions::default(),
        1000,
    );
    let b = sim.call(
        new,
        Op::Put {
            key: "a".into(),
            value: Value::Int(2),
        },
        RequestOptions::default(),
        1000,
    );
    assert_eq!(a.unwrap().response.reply, Reply::Ok(OpResult::Done));
    assert_eq!(b.unwrap().response.reply, Reply::Ok(OpResult::Done));
}

#[test]
fn leases_stop_a_deposed_leader_from_serving_stale_reads() {
    for leases in [true, false] {
        let mut sim = Sim::new(
            single_leader(3, Replication::Sync, true, leases),
            23,
            NetOptions::default(),
        );
        let old = wait_for_leader(&mut sim, 3000);
        let put = |v| Op::Put {
            key: "r".into(),
            value: Value::Int(v),
        };
        sim.call(old, put(1), RequestOptions::default(), 1000)
            .unwrap();
        sim.isolate(old);
        sim.run_for(1500);
        let new = (0..3)
            .find(|n| *n != old && sim.status(*n).is_some_and(|s| s.role == "leader"))
            .expect("new leader");
        let w = sim.call(new, put(2), RequestOptions::default(), 1000);
        assert!(w.is_none() || !matches!(w.unwrap().response.reply, Reply::NotDone(_)));
        let read = sim
            .call(
                old,
                Op::Get { key: "r".into() },
                RequestOptions::default(),
                1000,
            )
            .unwrap();
        if leases {
            assert_eq!(read.response.reply, Reply::NotDone(Refusal::NoLease));
        } else {
            assert_eq!(
                read.response.reply,
                Reply::Ok(OpResult::Value(Some(Value::Int(1)))),
                "stale read expected"
            );
        }
    }
}

#[test]
fn follower_reads_and_not_leader_refusals() {
    let mut sim = Sim::new(
        single_leader(3, Replication::Sync, true, true),
        24,
        NetOptions::default(),
    );
    let leader = wait_for_leader(&mut sim, 3000);
    let follower = (leader + 1) % 3;
    let w = sim
        .call(
            follower,
            Op::Incr {
                key: "c".into(),
                delta: 1,
            },
            RequestOptions::default(),
            500,
        )
        .unwrap();
    assert_eq!(
        w.response.reply,
        Reply::NotDone(Refusal::NotLeader {
            leader: Some(leader)
        })
    );
    sim.call(
        leader,
        Op::Incr {
            key: "c".into(),
            delta: 5,
        },
        RequestOptions::default(),
        500,
    )
    .unwrap();
    sim.run_for(200);
    let from_follower = RequestOptions {
        read_from: Some(ReadFrom::Followers),
        ..Default::default()
    };
    let r = sim
        .call(follower, Op::Get { key: "c".into() }, from_follower, 500)
        .unwrap();
    assert_eq!(
        r.response.reply,
        Reply::Ok(OpResult::Value(Some(Value::Int(5))))
    );
}

#[test]
fn transactions_apply_atomically_on_the_leader() {
    let mut sim = Sim::new(
        single_leader(3, Replication::Sync, true, true),
        25,
        NetOptions::default(),
    );
    let leader = wait_for_leader(&mut sim, 3000);
    let txn = Op::Txn {
        ops: vec![
            Op::Append {
                key: "x".into(),
                elem: 1,
            },
            Op::Add {
                key: "y".into(),
                elem: 2,
            },
            Op::ReadList { key: "x".into() },
        ],
    };
    let r = sim
        .call(leader, txn, RequestOptions::default(), 500)
        .unwrap();
    assert_eq!(
        r.response.reply,
        Reply::Ok(OpResult::Txn(vec![
            OpResult::Done,
            OpResult::Done,
            OpResult::Value(Some(Value::List(vec![1])))
        ]))
    );
    // A refused micro-op aborts the whole transaction.
    let bad = Op::Txn {
        ops: vec![
            Op::Append {
                key: "x".into(),
                elem: 9,
            },
            Op::Incr {
                key: "y".into(),
                delta: 1,
            },
        ],
    };
    let r = sim
        .call(leader, bad, RequestOptions::default(), 500)
        .unwrap();
    assert_eq!(
        r.response.reply,
        Reply::NotDone(Refusal::TypeMismatch { key: "y".into() })
    );
    let r = sim
        .call(
            leader,
            Op::ReadList { key: "x".into() },
            RequestOptions::default(),
            500,
        )
        .unwrap();
    assert_eq!(
        r.response.reply,
        Reply::Ok(OpResult::Value(Some(Value::List(vec![1]))))
    );
}

#[test]
fn lagging_follower_catches_up_by_snapshot_after_compaction() {
    let mut cfg = single_leader(3, Replication::SemiSync { k: 1 }, true, true);
    cfg.single_leader.log_keep = 5;
    let mut sim = Sim::new(cfg, 26, NetOptions::default());
    let leader = wait_for_leader(&mut sim, 3000);
    let lagger = (leader + 1) % 3;
    sim.crash(lagger);
    for i in 0..60 {
        let r = sim
            .call(
                leader,
                Op::Append {
                    key: "l".into(),
                    elem: i,
                },
                RequestOptions::default(),
                1000,
            )
            .unwrap();
        assert_eq!(r.response.reply, Reply::Ok(OpResult::Done));
    }
    sim.restart(lagger);
    sim.run_for(1000);
    let from_follower = RequestOptions {
        read_from: Some(ReadFrom::Any),
        ..Default::default()
    };
    let r = sim
        .call(lagger, Op::ReadList { key: "l".into() }, from_follower, 500)
        .unwrap();
    assert_eq!(
        r.response.reply,
        Reply::Ok(OpResult::Value(Some(Value::List((0..60).collect()))))
    );
}

/// A sequential writer and concurrent readers on one register while the leader
/// is repeatedly cut off; returns reads older than the latest write acked
/// before they began.
fn single_leader_stale_reads(cfg: ClusterConfig, seed: u64) -> (usize, Vec<String>) {
    let net = NetOptions {
        loss: 0.01,
        delay_min_ms: 1,
        delay_max_ms: 6,
        tick_ms: 5,
    };
    let mut sim = Sim::new(cfg, seed, net);
    let mut rng = SeededRng::new(seed ^ 0x51);
    wait_for_leader(&mut sim, 3000);
    let mut writer: Option<(u64, i64)> = None;
    let mut value = 0i64;
    let mut acks: Vec<(u64, i64)> = Vec::new();
    let mut reads = Vec::new();
    let mut isolated: Option<u64> = None;
    for step in 0..1500u64 {
        if step % 300 == 100 && isolated.is_none() {
            if let Some(l) = (0..3).find(|n| sim.status(*n).is_some_and(|s| s.role == "leader")) {
                sim.isolate(l);
                isolated = Some(sim.now_ms());
            }
        }
        if isolated.is_some_and(|t| sim.now_ms() > t + 600) {
            sim.heal();
            isolated = None;
        }
        match writer {
            None => {
                value += 1;
                let c = sim.submit(
                    rng.below(3) as NodeId,
                    Op::Put {
                        key: "r".into(),
                        value: Value::Int(value),
                    },
                    RequestOptions::default(),
                );
                writer = Some((c, value));
            }
            Some((c, v)) => {
                if let Some(done) = sim.completion(c) {
                    if matches!(done.response.reply, Reply::Ok(_)) {
                        acks.push((done.completed_ms, v));
                    }
                    writer = None;
                }
            }
        }
        let c = sim.submit(
            rng.below(3) as NodeId,
            Op::Get { key: "r".into() },
            RequestOptions::default(),
        );
        reads.push(c);
        sim.run_for(1 + rng.below(3));
    }
    sim.heal();
    sim.run_for(3000);
    let mut ok_reads = 0;
    let mut stale = Vec::new();
    let mut served: Vec<(u64, u64, i64)> = Vec::new();
    for c in reads {
        let Some(done) = sim.completion(c) else {
            continue;
        };
        let Reply::Ok(OpResult::Value(v)) = &done.response.reply else {
            continue;
        };
        ok_reads += 1;
        let got = match v {
            Some(Value::Int(i)) => *i,
            _ => 0,
        };
        let floor = acks
            .iter()
            .filter(|(t, _)| *t < done.invoked_ms)
            .map(|(_, v)| *v)
            .max()
            .unwrap_or(0);
        if got < floor {
            stale.push(format!(
                "read at {} returned {got}, latest acked {floor}",
                done.invoked_ms
            ));
        }
        served.push((done.invoked_ms, done.completed_ms, got));
    }
    // Values only grow, so a read may never see less than a read that finished before it began.
    for a in &served {
        for b in &served {
            if a.1 < b.0 && b.2 < a.2 {
                stale.push(format!(
                    "read at {} returned {}, after a read saw {}",
                    b.0, b.2, a.2
                ));
            }
        }
    }
    (ok_reads, stale)
}

#[test]
fn sync_with_fencing_and_leases_serves_no_stale_reads_under_partitions() {
    for seed in [31, 32, 33, 34, 35, 36, 37, 38] {
        let (ok_reads, stale) =
            single_leader_stale_reads(single_leader(3, Replication::Sync, true, true), seed);
        assert!(ok_reads > 300, "seed {seed}: only {ok_reads} reads served");
        assert!(stale.is_empty(), "seed {seed}: {stale:?}");
    }
}

#[test]
fn clock_jump_beyond_the_lease_margin_allows_a_stale_read() {
    let cfg = single_leader(3, Replication::SemiSync { k: 1 }, true, true);
    let mut sim = Sim::new(cfg, 41, NetOptions::default());
    let old = wait_for_leader(&mut sim, 3000);
    let put = |v| Op::Put {
        key: "j".into(),
        value: Value::Int(v),
    };
    sim.call(old, put(1), RequestOptions::default(), 1000)
        .unwrap();
    sim.run_for(60);
    sim.isolate(old);
    // One follower's clock leaps far ahead, the other's just past the election
    // timeout: both believe the leader has been silent for long.
    let followers: Vec<NodeId> = (0..3).filter(|n| *n != old).collect();
    sim.set_clock_offset(followers[0], 5_000);
    sim.set_clock_offset(followers[1], 310);
    let mut new = None;
    for _ in 0..30 {
        sim.run_for(5);
        new = (0..3).find(|n| *n != old && sim.status(*n).is_some_and(|s| s.role == "leader"));
        if new.is_some() {
            break;
        }
    }
    let new = new.expect("followers elect a new leader at once after the jump");
    let w = sim
        .call(new, put(2), RequestOptions::default(), 100)
        .unwrap();
    assert_eq!(w.response.reply, Reply::Ok(OpResult::Done));
    // The old leader's lease, measured on its own clock, has not run out yet.
    let read = sim
        .call(
            old,
            Op::Get { key: "j".into() },
            RequestOptions::default(),
            100,
        )
        .unwrap();
    assert_eq!(
        read.response.reply,
        Reply::Ok(OpResult::Value(Some(Value::Int(1)))),
        "stale read expected"
    );
}

#[test]
fn every_node_crashing_and_recovering_from_its_log_keeps_acked_writes() {
    for cfg in [
        single_leader(3, Replication::Sync, true, true),
        leaderless(3, Conflict::Lww),
    ] {
        let leaderless = cfg.mode == Mode::Leaderless;
        let mut sim = Sim::new(cfg, 51, NetOptions::default());
        let node = if leaderless {
            0
        } else {
            wait_for_leader(&mut sim, 3000)
        };
        for e in 0..10 {
            let r = sim
                .call(
                    node,
                    Op::Append {
                        key: "z".into(),
                        elem: e,
                    },
                    RequestOptions::default(),
                    1000,
                )
                .unwrap();
            assert_eq!(r.response.reply, Reply::Ok(OpResult::Done));
        }
        for n in 0..3 {
            sim.crash(n);
        }
        for n in 0..3 {
            sim.restart(n);
        }
        let node = if leaderless {
            1
        } else {
            wait_for_leader(&mut sim, 3000)
        };
        sim.run_for(100);
        let r = sim
            .call(
                node,
                Op::ReadList { key: "z".into() },
                RequestOptions::default(),
                1000,
            )
            .unwrap();
        assert_eq!(
            r.response.reply,
            Reply::Ok(OpResult::Value(Some(Value::List((0..10).collect()))))
        );
    }
}

#[test]
fn deposed_async_leader_discards_its_applied_writes_by_snapshot() {
    let mut sim = Sim::new(
        single_leader(3, Replication::Async, true, true),
        61,
        NetOptions::default(),
    );
    let old = wait_for_leader(&mut sim, 3000);
    let append = |e| Op::Append {
        key: "q".into(),
        elem: e,
    };
    sim.call(old, append(1), RequestOptions::default(), 500)
        .unwrap();
    sim.run_for(100);
    sim.isolate(old);
    // Acked by the isolated leader alone, and applied there.
    let r = sim
        .call(old, append(2), RequestOptions::default(), 500)
        .unwrap();
    assert_eq!(r.response.reply, Reply::Ok(OpResult::Done));
    sim.run_for(1500);
    let new = (0..3)
        .find(|n| *n != old && sim.status(*n).is_some_and(|s| s.role == "leader"))
        .expect("new leader");
    sim.call(new, append(3), RequestOptions::default(), 500)
        .unwrap();
    sim.heal();
    sim.run_for(1000);
    let any = RequestOptions {
        read_from: Some(ReadFrom::Any),
        ..Default::default()
    };
    let r = sim
        .call(old, Op::ReadList { key: "q".into() }, any, 500)
        .unwrap();
    assert_eq!(
        r.response.reply,
        Reply::Ok(OpResult::Value(Some(Value::List(vec![1, 3])))),
        "the acked 2 is lost"
    );
}

#[test]
fn leaderless_read_modify_writes_and_transactions_per_key() {
    let mut sim = Sim::new(leaderless(3, Conflict::Lww), 71, NetOptions::default());
    let d = RequestOptions::default;
    let r = sim
        .call(
            0,
            Op::Incr {
                key: "c".into(),
                delta: 2,
            },
            d(),
            500,
        )
        .unwrap();
    assert_eq!(
        r.response.reply,
        Reply::Ok(OpResult::Value(Some(Value::Int(2))))
    );
    let cas = Op::Cas {
        key: "c".into(),
        expected: Some(Value::Int(5)),
        new: Value::Int(6),
    };
    let r = sim.call(1, cas, d(), 500).unwrap();
    assert_eq!(
        r.response.reply,
        Reply::NotDone(Refusal::CasMismatch {
            current: Some(Value::Int(2))
        })
    );
    let txn = Op::Txn {
        ops: vec![
            Op::Append {
                key: "l".into(),
                elem: 4,
            },
            Op::Add {
                key: "s".into(),
                elem: 5,
            },
            Op::Incr {
                key: "c".into(),
                delta: 1,
            },
        ],
    };
    let r = sim.call(2, txn, d(), 500).unwrap();
    assert_eq!(
        r.response.reply,
        Reply::Ok(OpResult::Txn(vec![
            OpResult::Done,
            OpResult::Done,
            OpResult::Value(Some(Value::Int(3)))
        ]))
    );
    let r = sim
        .call(0, Op::ReadList { key: "l".into() }, d(), 500)
        .unwrap();
    assert_eq!(
        r.response.reply,
        Reply::Ok(OpResult::Value(Some(Value::List(vec![4]))))
    );
    // With two of three replicas down, a strict R=2 read is refused, not guessed.
    sim.crash(1);
    sim.crash(2);
    let r = sim.call(0, Op::Get { key: "c".into() }, d(), 5000).unwrap();
    assert!(matches!(
        r.response.reply,
        Reply::NotDone(Refusal::NoQuorum { needed: 2, .. })
    ));
}
