//! The textbook's claims about each mode, as data: one row per statement,
//! with its source, the configuration that makes it visible, the workload
//! and faults that exercise it, and what a history must show. A harness
//! runs the rows (`splitbrain matrix`, and `cargo test` in simulation); the
//! store only says what it promises. Anomaly names are those of the
//! checkers' results (`lost`, `nonlinearizable`, `monotonic-reads`,
//! `diverged`, ...). New modes add their rows here.
//!
//! Sources: the chapters in `shared/textbook/` by file number and section
//! (004 is the replication chapter summary, 003 the replication interview
//! chapter, 000 the overview), and the primary papers where the chapters
//! are loose: Dynamo (DeCandia et al., SOSP 2007), Raft (Ongaro and
//! Ousterhout, 2014), Terry et al. on session guarantees (1994).

/// What the histories of a row must show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// At least one seed's history shows this anomaly.
    Appears(&'static str),
    /// No seed's history shows any anomaly: every checker is valid.
    Never,
}

#[derive(Clone, Copy, Debug)]
pub struct Claim {
    pub id: &'static str,
    pub statement: &'static str,
    pub source: &'static str,
    /// Cluster-file settings over the defaults (TOML, without nodes).
    pub cluster: &'static str,
    pub nodes: usize,
    /// A workload by name: register, set, session, list-append, ...
    pub workload: &'static str,
    /// Fault steps drawn from, one per fault window (`a+b` applies both).
    pub faults: &'static [&'static str],
    pub expect: Expect,
    /// Seeds a quick run (`cargo test`) tries: enough that an `Appears`
    /// row finds its anomaly.
    pub test_seeds: u64,
    /// After the heal, read every key from each replica alone, for the
    /// convergence checker (`diverged`): for rows about replicas agreeing.
    pub reads_every_replica: bool,
}

pub const CLAIMS: &[Claim] = &[
    Claim {
        id: "async-failover-loses-acked-writes",
        statement: "Asynchronous replication loses acknowledged writes when the leader fails before its followers have them.",
        source: "textbook 004 §3 (asynchronous: a write may be lost if the leader fails before the change is propagated); 003 leader-follower failover",
        cluster: "mode = \"single-leader\"\n[single_leader]\nreplication = \"async\"\nasync_ship_ms = 200",
        nodes: 3,
        workload: "set",
        faults: &["kill-leader"],
        expect: Expect::Appears("lost"),
        test_seeds: 10,
        reads_every_replica: false,
    },
    Claim {
        id: "semi-sync-loses-writes-when-the-acking-follower-is-not-elected",
        statement: "Semi-synchronous replication (one follower acks) can lose acknowledged writes when the new leader is not the follower that acked them.",
        source: "textbook 003 semi-synchronous replication and failover; with 5 nodes one ack is not a majority, so an election can pass the acking follower by (Raft §5.4 shows why majority acks prevent it)",
        cluster: "mode = \"single-leader\"\n[single_leader]\nreplication = \"semi-sync:1\"\nasync_ship_ms = 200",
        nodes: 5,
        workload: "set",
        faults: &["kill-leader", "partition-leader"],
        expect: Expect::Appears("lost"),
        test_seeds: 20,
        reads_every_replica: false,
    },
    Claim {
        id: "sync-with-fencing-loses-nothing",
        statement: "Synchronous replication with fenced failover loses no acknowledged write.",
        source: "textbook 004 §3 (synchronous: the follower is guaranteed up to date); 003 split brain and fencing",
        cluster: "mode = \"single-leader\"\n[single_leader]\nreplication = \"sync\"\nfencing = true",
        nodes: 3,
        workload: "set",
        faults: &["kill-leader", "partition-leader", "partition"],
        expect: Expect::Never,
        test_seeds: 5,
        reads_every_replica: false,
    },
    Claim {
        id: "sync-with-fencing-is-linearizable",
        statement: "Synchronous replication with fencing and leader leases serves linearizable reads and writes through failovers.",
        source: "textbook 000 (synchronous replication: strong consistency); Raft §8 (reads under a leader lease)",
        cluster: "mode = \"single-leader\"\n[single_leader]\nreplication = \"sync\"\nfencing = true\nleases = true",
        nodes: 3,
        workload: "register",
        faults: &["kill-leader", "partition-leader"],
        expect: Expect::Never,
        test_seeds: 5,
        reads_every_replica: false,
    },
    Claim {
        id: "no-fencing-split-brain-loses-writes",
        statement: "Without fencing, a deposed leader keeps accepting writes (split brain), and they are lost.",
        source: "textbook 003 split brain scenario (fencing: the old leader must be shut out before the new one accepts writes); needs async or semi-sync, since sync replication blocks the deposed leader's writes",
        cluster: "mode = \"single-leader\"\n[single_leader]\nreplication = \"async\"\nfencing = false\nasync_ship_ms = 0",
        nodes: 3,
        workload: "set",
        faults: &["partition-leader"],
        expect: Expect::Appears("lost"),
        test_seeds: 10,
        reads_every_replica: false,
    },
    Claim {
        id: "no-leases-deposed-leader-serves-stale-reads",
        statement: "Without leases, a deposed leader that has not noticed serves stale reads.",
        source: "textbook 003 split brain; Raft §8 (a leader must check it has not been deposed before answering a read); needs semi-sync or async for the new leader to commit",
        cluster: "mode = \"single-leader\"\n[single_leader]\nreplication = \"semi-sync:1\"\nleases = false\nasync_ship_ms = 0",
        nodes: 3,
        workload: "register",
        faults: &["partition-leader"],
        expect: Expect::Appears("nonlinearizable"),
        test_seeds: 10,
        reads_every_replica: false,
    },
    Claim {
        id: "leases-keep-a-deposed-leader-from-serving-reads",
        statement: "With leases and clocks in step, a deposed leader stops answering reads before a new leader is elected: no stale reads.",
        source: "Raft §8 and Chandra et al. (a lease shorter than the election timeout); the control for the clock-skew row below",
        cluster: "mode = \"single-leader\"\n[single_leader]\nreplication = \"semi-sync:1\"\nleases = true\nasync_ship_ms = 0",
        nodes: 3,
        workload: "register",
        faults: &["partition-leader"],
        expect: Expect::Never,
        test_seeds: 5,
        reads_every_replica: false,
    },
    Claim {
        id: "leases-with-clock-skew-serve-stale-reads",
        statement: "Leader leases assume bounded clock drift: a leader whose clock jumps back past the margin serves stale reads after it was deposed.",
        source: "textbook 000 and 002 on clocks; Raft §8 and Chandra et al. (lease safety needs bounded drift)",
        cluster: "mode = \"single-leader\"\n[single_leader]\nreplication = \"semi-sync:1\"\nleases = true\nasync_ship_ms = 0",
        nodes: 3,
        workload: "register",
        faults: &["partition-leader+clock-leader"],
        expect: Expect::Appears("nonlinearizable"),
        test_seeds: 10,
        reads_every_replica: false,
    },
    Claim {
        id: "follower-reads-are-stale",
        statement: "Reads from asynchronous followers are stale: not linearizable, even without faults.",
        source: "textbook 004 §4 (followers may be behind the leader: replication lag)",
        cluster: "mode = \"single-leader\"\n[single_leader]\nreplication = \"async\"\nread_from = \"followers\"\nasync_ship_ms = 100",
        nodes: 3,
        workload: "register",
        faults: &[],
        expect: Expect::Appears("nonlinearizable"),
        test_seeds: 3,
        reads_every_replica: false,
    },
    Claim {
        id: "follower-reads-break-monotonic-reads",
        statement: "A client whose reads move between lagging followers sees time go backward (monotonic reads broken).",
        source: "textbook 004 §4 (monotonic reads); Terry et al. 1994",
        cluster: "mode = \"single-leader\"\n[single_leader]\nreplication = \"async\"\nread_from = \"followers\"\nasync_ship_ms = 100",
        nodes: 5,
        workload: "session",
        faults: &[],
        expect: Expect::Appears("monotonic-reads"),
        test_seeds: 5,
        reads_every_replica: false,
    },
    Claim {
        id: "leader-reads-keep-session-guarantees",
        statement: "A client pinned to the leader reads its own writes and never goes back in time, through failovers.",
        source: "textbook 004 §4 (read-after-write consistency; monotonic reads); Terry et al. 1994",
        cluster: "mode = \"single-leader\"\n[single_leader]\nreplication = \"sync\"\nread_from = \"leader\"",
        nodes: 3,
        workload: "session",
        faults: &["partition-leader", "kill-leader"],
        expect: Expect::Never,
        test_seeds: 5,
        reads_every_replica: false,
    },
    Claim {
        id: "leaderless-r-plus-w-at-most-n-serves-stale-reads",
        statement: "With R + W <= N, read and write quorums need not overlap: reads are stale.",
        source: "textbook 004 §6 (w + r > n is what makes a read find an up-to-date node); Dynamo §4.5",
        cluster: "mode = \"leaderless\"\n[leaderless]\nn = 3\nr = 1\nw = 1\nread_repair = false\nanti_entropy_ms = 0",
        nodes: 3,
        workload: "register",
        faults: &["partition"],
        expect: Expect::Appears("nonlinearizable"),
        test_seeds: 5,
        reads_every_replica: false,
    },
    Claim {
        id: "strict-quorums-are-not-linearizable",
        statement: "Even strict quorums (R + W > N) without read repair are not linearizable: a partly applied write is seen by one read and missed by a later one, and compare-and-set is not atomic.",
        source: "textbook 004 §6 states the overlap only; the caveat is Kleppmann, Designing Data-Intensive Applications ch. 5, 'Limitations of quorum consistency', and Dynamo §4.4 (no atomic read-modify-write)",
        cluster: "mode = \"leaderless\"\n[leaderless]\nn = 3\nr = 2\nw = 2\nread_repair = false\nanti_entropy_ms = 0",
        nodes: 3,
        workload: "register",
        faults: &["partition", "loss"],
        expect: Expect::Appears("nonlinearizable"),
        test_seeds: 5,
        reads_every_replica: false,
    },
    Claim {
        id: "sloppy-quorums-lose-the-overlap",
        statement: "Sloppy quorums with hinted handoff accept writes on nodes outside a key's replicas during a partition, so R + W > N no longer makes reads see them.",
        source: "Dynamo §4.6 (sloppy quorum and hinted handoff); textbook 000 (sloppy quorums relax the quorum rule)",
        cluster: "mode = \"leaderless\"\n[leaderless]\nn = 3\nr = 2\nw = 2\nsloppy_quorum = true\nhinted_handoff = true\nread_repair = false\nanti_entropy_ms = 0",
        nodes: 5,
        workload: "register",
        faults: &["partition-majority"],
        expect: Expect::Appears("nonlinearizable"),
        test_seeds: 10,
        reads_every_replica: false,
    },
    Claim {
        id: "lww-with-skewed-clocks-loses-writes",
        statement: "Last write wins on skewed clocks discards acknowledged writes.",
        source: "textbook 004 §5 (LWW discards 'older' writes, which risks data loss); 002 conflict resolution",
        cluster: "mode = \"leaderless\"\n[leaderless]\nconflict = \"lww\"",
        nodes: 3,
        workload: "set",
        faults: &["clock"],
        expect: Expect::Appears("lost"),
        test_seeds: 5,
        reads_every_replica: false,
    },
    Claim {
        id: "version-vectors-lose-no-writes",
        statement: "Version vectors keep concurrent writes as siblings, which merge: no acknowledged add is lost, even under partitions.",
        source: "textbook 004 §5 (version vectors tell overwrites from concurrent writes); 001 dotted version vectors; Dynamo §4.4",
        cluster: "mode = \"leaderless\"\n[leaderless]\nn = 3\nr = 2\nw = 2\nconflict = \"version-vectors\"",
        nodes: 3,
        workload: "set",
        faults: &["partition", "partition-majority", "clock"],
        expect: Expect::Never,
        test_seeds: 10,
        reads_every_replica: false,
    },
    Claim {
        id: "read-repair-and-anti-entropy-converge",
        statement: "After the heal, read repair and anti-entropy bring every replica to the same data.",
        source: "textbook 001 anti-entropy synchronization; Dynamo §4.7 (Merkle-tree anti-entropy)",
        cluster: "mode = \"leaderless\"\n[leaderless]\nn = 3\nr = 2\nw = 2\nconflict = \"version-vectors\"\nread_repair = true\nanti_entropy_ms = 500",
        nodes: 3,
        workload: "set",
        faults: &["partition", "kill"],
        expect: Expect::Never,
        test_seeds: 5,
        reads_every_replica: true,
    },
    Claim {
        id: "without-repair-replicas-diverge",
        statement: "Without read repair, hinted handoff or anti-entropy, a replica that missed writes during a partition keeps missing them.",
        source: "textbook 001 anti-entropy (replicas converge only through a repair process); Dynamo §4.6-4.7",
        cluster: "mode = \"leaderless\"\n[leaderless]\nn = 3\nr = 2\nw = 2\nconflict = \"version-vectors\"\nread_repair = false\nhinted_handoff = false\nanti_entropy_ms = 0",
        nodes: 3,
        workload: "set",
        faults: &["partition"],
        expect: Expect::Appears("diverged"),
        test_seeds: 5,
        reads_every_replica: true,
    },
    Claim {
        id: "multi-leader-lww-with-skewed-clocks-loses-writes",
        statement: "Multi-leader replication resolving conflicts by last write wins silently discards writes when clocks are skewed, even a write its own client reads back at once.",
        source: "textbook 003 multi-leader replication (conflicts resolved by timestamps); 004 §5 (LWW risks data loss); DDIA ch. 5, 'Last write wins'",
        cluster: "mode = \"multi-leader\"\n[multi_leader]\nconflict = \"lww\"",
        nodes: 3,
        workload: "siblings",
        faults: &["clock"],
        expect: Expect::Appears("lost-write"),
        test_seeds: 5,
        reads_every_replica: false,
    },
    Claim {
        id: "multi-leader-lww-register-with-skewed-clocks-loses-writes",
        statement: "The same on a plain register: a write stamped by a slow clock is acknowledged, missed by its own client's next read and never read by anyone.",
        source: "textbook 003 conflict resolution (LWW: 'you can lose writes silently'); DDIA ch. 5, 'Last write wins (discarding concurrent writes)'",
        cluster: "mode = \"multi-leader\"\n[multi_leader]\nconflict = \"lww\"",
        nodes: 3,
        workload: "register",
        faults: &["clock"],
        expect: Expect::Appears("lost-write"),
        test_seeds: 5,
        reads_every_replica: false,
    },
    Claim {
        id: "multi-leader-version-vectors-lose-no-writes",
        statement: "Multi-leader replication with version vectors keeps concurrent writes as siblings: no write is lost that a later write did not overwrite, whatever the clocks.",
        source: "textbook 001 vector clocks; DDIA ch. 5, 'Detecting Concurrent Writes'; Preguiça et al., dotted version vectors",
        cluster: "mode = \"multi-leader\"\n[multi_leader]\nconflict = \"version-vectors\"",
        nodes: 3,
        workload: "siblings",
        faults: &["clock", "partition", "kill"],
        expect: Expect::Never,
        test_seeds: 5,
        reads_every_replica: true,
    },
    Claim {
        id: "multi-leader-crdt-counters-converge",
        statement: "A PN-counter CRDT needs no conflict resolution: every replica converges on the acknowledged total after the heal.",
        source: "textbook 000 (CRDTs: a merge function on replica states); 001 CRDT properties (strong eventual consistency); Shapiro et al. 2011",
        cluster: "mode = \"multi-leader\"\n[multi_leader]\nconflict = \"crdt\"\ncrdt = \"pn-counter\"",
        nodes: 3,
        workload: "crdt-counter",
        faults: &["partition", "kill"],
        expect: Expect::Never,
        test_seeds: 5,
        reads_every_replica: true,
    },
    Claim {
        id: "multi-leader-or-set-converges-add-wins",
        statement: "An OR-set converges after the heal, an add concurrent with a remove surviving it and no removed element coming back.",
        source: "textbook 001 CRDT types (OR-set); Shapiro et al. 2011 §3.3.5",
        cluster: "mode = \"multi-leader\"\n[multi_leader]\nconflict = \"crdt\"\ncrdt = \"or-set\"",
        nodes: 3,
        workload: "or-set",
        faults: &["partition", "kill"],
        expect: Expect::Never,
        test_seeds: 5,
        reads_every_replica: true,
    },
    Claim {
        id: "multi-leader-registers-are-not-linearizable",
        statement: "A multi-leader register is not linearizable: each leader answers from what it has, and writes reach the others later.",
        source: "textbook 003 multi-leader replication (asynchronous between leaders); 000 consistency spectrum",
        cluster: "mode = \"multi-leader\"\n[multi_leader]\nconflict = \"lww\"",
        nodes: 3,
        workload: "register",
        faults: &["partition"],
        expect: Expect::Appears("nonlinearizable"),
        test_seeds: 5,
        reads_every_replica: false,
    },
    Claim {
        id: "multi-leader-breaks-read-your-writes-across-leaders",
        statement: "A client whose requests reach different leaders may not read its own writes: the leader it reads from has not received them yet.",
        source: "textbook 004 §4 (read-after-write consistency across devices and datacenters); DDIA ch. 5, 'Reading Your Own Writes'; Terry et al. 1994",
        cluster: "mode = \"multi-leader\"\nclient_routing = \"per-request\"\n[multi_leader]\nconflict = \"lww\"",
        nodes: 3,
        workload: "session",
        faults: &[],
        expect: Expect::Appears("read-your-writes"),
        test_seeds: 5,
        reads_every_replica: false,
    },
    Claim {
        id: "multi-leader-ring-stalls-past-a-dead-node",
        statement: "In a ring topology a change reaches the nodes past a failed node only when it returns: while it is down they miss it, where all-to-all replication carries it around.",
        source: "textbook 003 multi-leader topologies (circular and star: one failed node interrupts the flow of replication messages); DDIA ch. 5, 'Multi-Leader Replication Topologies'",
        cluster: "mode = \"multi-leader\"\n[multi_leader]\ntopology = \"ring\"\nconflict = \"crdt\"\ncrdt = \"or-set\"",
        nodes: 3,
        workload: "or-set",
        faults: &["kill-past-the-heal"],
        expect: Expect::Appears("diverged"),
        test_seeds: 5,
        reads_every_replica: true,
    },
    Claim {
        id: "multi-leader-all-to-all-carries-changes-around-a-dead-node",
        statement: "All-to-all multi-leader replication keeps every live node current while one node is down.",
        source: "textbook 003 multi-leader topologies (all-to-all avoids a single point of failure); DDIA ch. 5",
        cluster: "mode = \"multi-leader\"\n[multi_leader]\ntopology = \"all-to-all\"\nconflict = \"crdt\"\ncrdt = \"or-set\"",
        nodes: 3,
        workload: "or-set",
        faults: &["kill-past-the-heal"],
        expect: Expect::Never,
        test_seeds: 5,
        reads_every_replica: true,
    },
];

/// The row with this id.
pub fn find(id: &str) -> Option<&'static Claim> {
    CLAIMS.iter().find(|c| c.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_has_a_unique_id_a_source_and_a_cluster_file_that_parses() {
        let mut ids: Vec<&str> = CLAIMS.iter().map(|c| c.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), CLAIMS.len());
        for c in CLAIMS {
            assert!(!c.source.is_empty() && !c.statement.is_empty(), "{}", c.id);
            // A table header in the fragment would swallow `nodes`: it goes first.
            let parsed: Result<crate::config::ClusterConfig, _> =
                toml::from_str(&format!("nodes = []\n{}", c.cluster));
            assert!(parsed.is_ok(), "{}: {:?}", c.id, parsed.err());
        }
    }
}
