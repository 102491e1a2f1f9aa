//! Partition shapes and fault targets, as pure functions of the node list, a
//! seeded random stream and (for `primaries`) who leads now.
//!
//! A partition is a grudge: for each node, the nodes whose traffic it drops.
//! Shapes follow Jepsen's nemesis (`jepsen.nemesis` and `jepsen.nemesis.combined`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

pub type Node = String;

/// Node -> the nodes it refuses to hear from.
pub type Grudge = BTreeMap<Node, BTreeSet<Node>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartitionShape {
    /// One random node cut off from all others.
    One,
    /// The current primaries (leaders) each cut off from everyone.
    Primaries,
    /// A random minority and majority.
    Majority,
    /// Every node sees a majority, and no two see the same one.
    MajoritiesRing,
    /// Two halves that only one node, the bridge, connects.
    Bridge,
    /// A random split into two halves.
    RandomHalves,
}

impl PartitionShape {
    pub const ALL: [PartitionShape; 6] = [
        PartitionShape::One,
        PartitionShape::Primaries,
        PartitionShape::Majority,
        PartitionShape::MajoritiesRing,
        PartitionShape::Bridge,
        PartitionShape::RandomHalves,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PartitionShape::One => "one",
            PartitionShape::Primaries => "primaries",
            PartitionShape::Majority => "majority",
            PartitionShape::MajoritiesRing => "majorities-ring",
            PartitionShape::Bridge => "bridge",
            PartitionShape::RandomHalves => "random-halves",
        }
    }
}

impl fmt::Display for PartitionShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PartitionShape {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        PartitionShape::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = PartitionShape::ALL.iter().map(|p| p.name()).collect();
                format!(
                    "unknown partition '{s}' (expected one of: {})",
                    names.join(", ")
                )
            })
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ShapeError {
    #[error("a {shape} partition needs at least {needed} nodes, and there are {have}")]
    TooFewNodes {
        shape: &'static str,
        needed: usize,
        have: usize,
    },
    #[error("no primaries are known, so there is no one to isolate")]
    NoPrimaries,
}

/// The size of a majority of `n` nodes.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// A grudge that cuts every component off from every other.
pub fn complete_grudge(components: &[Vec<Node>]) -> Grudge {
    let mut g = Grudge::new();
    for (i, comp) in components.iter().enumerate() {
        let others: BTreeSet<Node> = components
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .flat_map(|(_, c)| c.iter().cloned())
            .collect();
        for n in comp {
            g.insert(n.clone(), others.clone());
        }
    }
    g
}

/// The partition for a shape.
pub fn grudge(
    shape: PartitionShape,
    nodes: &[Node],
    primaries: &[Node],
    rng: &mut impl Rng,
) -> Result<Grudge, ShapeError> {
    let need = |needed: usize| {
        if nodes.len() < needed {
            Err(ShapeError::TooFewNodes {
                shape: shape.name(),
                needed,
                have: nodes.len(),
            })
        } else {
            Ok(())
        }
    };
    let mut shuffled = nodes.to_vec();
    shuffled.shuffle(rng);
    Ok(match shape {
        PartitionShape::One => {
            need(2)?;
            let (one, rest) = shuffled.split_at(1);
            complete_grudge(&[one.to_vec(), rest.to_vec()])
        }
        PartitionShape::Primaries => {
            let prim: Vec<Node> = primaries
                .iter()
                .filter(|p| nodes.contains(p))
                .cloned()
                .collect();
            if prim.is_empty() {
                return Err(ShapeError::NoPrimaries);
            }
            let rest: Vec<Node> = nodes
                .iter()
                .filter(|n| !prim.contains(n))
                .cloned()
                .collect();
            let mut comps: Vec<Vec<Node>> = prim.into_iter().map(|p| vec![p]).collect();
            if !rest.is_empty() {
                comps.push(rest);
            }
            complete_grudge(&comps)
        }
        PartitionShape::Majority => {
            need(2)?;
            // With an even count, halves would leave no majority: the minority is one smaller.
            let (minority, majority) = shuffled.split_at((nodes.len() - 1) / 2);
            complete_grudge(&[minority.to_vec(), majority.to_vec()])
        }
        PartitionShape::RandomHalves => {
            need(2)?;
            let (a, b) = shuffled.split_at(nodes.len() / 2);
            complete_grudge(&[a.to_vec(), b.to_vec()])
        }
        PartitionShape::Bridge => {
            need(3)?;
            // Shuffled: the first half, the bridge, the second half.
            let half = (nodes.len() - 1) / 2;
            let a = shuffled[..half].to_vec();
            let b = shuffled[half + 1..].to_vec();
            let mut g = complete_grudge(&[a.clone(), b.clone()]);
            g.insert(shuffled[half].clone(), BTreeSet::new());
            g
        }
        PartitionShape::MajoritiesRing => {
            need(3)?;
            // Lay the nodes on a ring; each sees the majority-sized window
            // centred on it. Windows differ because their centres do.
            let n = nodes.len();
            let m = majority(n);
            let all: BTreeSet<Node> = nodes.iter().cloned().collect();
            let mut g = Grudge::new();
            for (i, node) in shuffled.iter().enumerate() {
                let seen: BTreeSet<Node> = (0..m)
                    .map(|k| shuffled[(i + n + k - m / 2) % n].clone())
                    .collect();
                g.insert(node.clone(), all.difference(&seen).cloned().collect());
            }
            g
        }
    })
}

/// Every directed link `(from, to)` that the grudge cuts (traffic from `from` is dropped at `to`).
pub fn cut_links(g: &Grudge) -> BTreeSet<(Node, Node)> {
    g.iter()
        .flat_map(|(to, froms)| froms.iter().map(move |from| (from.clone(), to.clone())))
        .collect()
}

/// Which nodes a kill or pause hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetSpec {
    One,
    Minority,
    Majority,
    Primaries,
    All,
}

impl TargetSpec {
    pub fn name(self) -> &'static str {
        match self {
            TargetSpec::One => "one",
            TargetSpec::Minority => "minority",
            TargetSpec::Majority => "majority",
            TargetSpec::Primaries => "primaries",
            TargetSpec::All => "all",
        }
    }
}

impl FromStr for TargetSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "one" => TargetSpec::One,
            "minority" => TargetSpec::Minority,
            "majority" => TargetSpec::Majority,
            "primaries" => TargetSpec::Primaries,
            "all" => TargetSpec::All,
            _ => {
                return Err(format!(
                    "unknown target '{s}' (expected one, minority, majority, primaries or all)"
                ))
            }
        })
    }
}

/// The nodes a kill or pause hits, in a stable order.
pub fn targets(
    spec: TargetSpec,
    nodes: &[Node],
    primaries: &[Node],
    rng: &mut impl Rng,
) -> Result<Vec<Node>, ShapeError> {
    if nodes.is_empty() {
        return Err(ShapeError::TooFewNodes {
            shape: "target",
            needed: 1,
            have: 0,
        });
    }
    let mut shuffled = nodes.to_vec();
    shuffled.shuffle(rng);
    let mut chosen: Vec<Node> = match spec {
        TargetSpec::One => shuffled.into_iter().take(1).collect(),
        // A minority is at least one node and fewer than a majority.
        TargetSpec::Minority => {
            let max = (nodes.len() - majority(nodes.len())).max(1);
            let k = rng.gen_range(1..=max);
            shuffled.into_iter().take(k).collect()
        }
        TargetSpec::Majority => shuffled.into_iter().take(majority(nodes.len())).collect(),
        TargetSpec::Primaries => {
            let p: Vec<Node> = primaries
                .iter()
                .filter(|p| nodes.contains(p))
                .cloned()
                .collect();
            if p.is_empty() {
                return Err(ShapeError::NoPrimaries);
            }
            p
        }
        TargetSpec::All => shuffled,
    };
    chosen.sort();
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn nodes(n: usize) -> Vec<Node> {
        (1..=n).map(|i| format!("n{i}")).collect()
    }

    /// The set of nodes each node can hear from (itself included).
    fn visible(g: &Grudge, all: &[Node]) -> BTreeMap<Node, BTreeSet<Node>> {
        all.iter()
            .map(|n| {
                let cut = g.get(n).cloned().unwrap_or_default();
                (
                    n.clone(),
                    all.iter().filter(|m| !cut.contains(*m)).cloned().collect(),
                )
            })
            .collect()
    }

    fn symmetric(g: &Grudge) -> bool {
        cut_links(g)
            .iter()
            .all(|(a, b)| cut_links(g).contains(&(b.clone(), a.clone())))
    }

    #[test]
    fn every_shape_for_three_to_seven_nodes() {
        for n in 3..=7 {
            let all = nodes(n);
            for seed in 0..20u64 {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                for shape in PartitionShape::ALL {
                    let g = grudge(shape, &all, &["n2".to_string()], &mut rng).unwrap();
                    assert!(
                        g.iter().all(|(k, v)| !v.contains(k)),
                        "{shape}: a node never cuts itself"
                    );
                    let vis = visible(&g, &all);
                    match shape {
                        PartitionShape::One => {
                            assert!(symmetric(&g));
                            let alone: Vec<_> = vis.iter().filter(|(_, v)| v.len() == 1).collect();
                            assert_eq!(alone.len(), 1, "{shape} n={n}");
                            assert_eq!(cut_links(&g).len(), 2 * (n - 1));
                        }
                        PartitionShape::Primaries => {
                            assert!(symmetric(&g));
                            assert_eq!(vis["n2"].len(), 1);
                            assert!(vis
                                .iter()
                                .filter(|(k, _)| *k != "n2")
                                .all(|(_, v)| v.len() == n - 1));
                        }
                        PartitionShape::Majority | PartitionShape::RandomHalves => {
                            assert!(symmetric(&g));
                            let small = if shape == PartitionShape::Majority {
                                (n - 1) / 2
                            } else {
                                n / 2
                            };
                            let sizes: BTreeSet<usize> = vis.values().map(|v| v.len()).collect();
                            assert_eq!(
                                sizes,
                                [small, n - small].into_iter().collect::<BTreeSet<_>>(),
                                "{shape} n={n}"
                            );
                            assert_eq!(
                                vis.values().filter(|v| v.len() == small).count(),
                                small.max((small == n - small) as usize * n)
                            );
                            assert_eq!(cut_links(&g).len(), 2 * small * (n - small));
                            if shape == PartitionShape::Majority {
                                assert_eq!(
                                    vis.values().filter(|v| v.len() >= majority(n)).count(),
                                    n - small
                                );
                            }
                        }
                        PartitionShape::Bridge => {
                            assert!(symmetric(&g));
                            let bridges: Vec<_> = vis
                                .iter()
                                .filter(|(_, v)| v.len() == n)
                                .map(|(k, _)| k.clone())
                                .collect();
                            assert_eq!(bridges.len(), 1, "n={n}");
                            for (node, v) in &vis {
                                if *node != bridges[0] {
                                    assert!(v.contains(&bridges[0]));
                                    assert!(v.len() < n);
                                }
                            }
                            // Without the bridge, the two halves do not meet.
                            let half = (n - 1) / 2;
                            assert_eq!(cut_links(&g).len(), 2 * half * (n - 1 - half));
                        }
                        PartitionShape::MajoritiesRing => {
                            let m = majority(n);
                            assert!(
                                vis.values().all(|v| v.len() == m),
                                "each sees exactly a majority"
                            );
                            let distinct: BTreeSet<_> = vis.values().collect();
                            assert_eq!(distinct.len(), n, "no two nodes see the same majority");
                            assert!(vis.iter().all(|(k, v)| v.contains(k)));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn same_seed_same_partition() {
        let all = nodes(5);
        let a = grudge(
            PartitionShape::Majority,
            &all,
            &[],
            &mut ChaCha8Rng::seed_from_u64(9),
        )
        .unwrap();
        let b = grudge(
            PartitionShape::Majority,
            &all,
            &[],
            &mut ChaCha8Rng::seed_from_u64(9),
        )
        .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn refuses_impossible_shapes() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert_eq!(
            grudge(PartitionShape::Bridge, &nodes(2), &[], &mut rng),
            Err(ShapeError::TooFewNodes {
                shape: "bridge",
                needed: 3,
                have: 2
            })
        );
        assert_eq!(
            grudge(PartitionShape::Primaries, &nodes(3), &[], &mut rng),
            Err(ShapeError::NoPrimaries)
        );
        assert!("nope"
            .parse::<PartitionShape>()
            .unwrap_err()
            .contains("majorities-ring"));
    }

    #[test]
    fn kill_and_pause_targets() {
        for n in 3..=7 {
            let all = nodes(n);
            for seed in 0..20 {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                assert_eq!(
                    targets(TargetSpec::One, &all, &[], &mut rng).unwrap().len(),
                    1
                );
                let minority = targets(TargetSpec::Minority, &all, &[], &mut rng).unwrap();
                assert!(!minority.is_empty() && minority.len() < majority(n));
                assert_eq!(
                    targets(TargetSpec::Majority, &all, &[], &mut rng)
                        .unwrap()
                        .len(),
                    majority(n)
                );
                assert_eq!(targets(TargetSpec::All, &all, &[], &mut rng).unwrap(), all);
                assert_eq!(
                    targets(TargetSpec::Primaries, &all, &["n1".into()], &mut rng).unwrap(),
                    vec!["n1".to_string()]
                );
            }
        }
    }
}
