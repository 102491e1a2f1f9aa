//! Partitions in network namespaces really cut the links they name, and heal
//! restores them. Needs root and `ip`/`iptables`/`ping`; skipped with a clear
//! message where the machine does not allow namespaces.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use splitbrain::env::netns::{available, NetnsCluster};
use splitbrain_nemesis::{grudge, PartitionShape};

#[test]
fn partitions_take_effect_and_heal() {
    if let Err(e) = available() {
        eprintln!("SKIPPED: partitions_take_effect_and_heal: {e}");
        return;
    }
    if std::process::Command::new("ping")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!(
            "SKIPPED: partitions_take_effect_and_heal: no ping (apt-get install iputils-ping)"
        );
        return;
    }
    let nodes: Vec<String> = (1..=5).map(|i| format!("n{i}")).collect();
    let c = NetnsCluster::create("nt1", &nodes).expect("create namespaces");
    let result = std::panic::catch_unwind(|| {
        c.heal().expect("a fresh cluster is fully connected");
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for shape in [
            PartitionShape::Majority,
            PartitionShape::Bridge,
            PartitionShape::MajoritiesRing,
        ] {
            let g = grudge(shape, &nodes, &[], &mut rng).unwrap();
            c.partition(&g).unwrap_or_else(|e| panic!("{shape}: {e}"));
        }
        c.heal().expect("heal restores every link");
        // The harness reaches every node over its control link, partition or not.
        let g = grudge(PartitionShape::One, &nodes, &[], &mut rng).unwrap();
        c.partition(&g).unwrap();
        for n in &nodes {
            let addr = c.addr(n).unwrap().to_string();
            let ok = std::process::Command::new("ping")
                .args(["-c", "1", "-W", "1", "-q", &addr])
                .output()
                .unwrap();
            assert!(ok.status.success(), "control link to {n} ({addr})");
        }
        c.loss(0.5).unwrap();
        c.heal().unwrap();
    });
    c.destroy().expect("destroy namespaces");
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
    let left = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&left.stdout).contains("sb-nt1-"),
        "namespaces left behind"
    );
}
