//! The partition map of a sharded store: the partition a key is in, the
//! group that serves it and the epoch of that assignment. Every change to a
//! partition (a move, a split, a merge) gives it a new epoch, so a
//! (partition, epoch) pair names one key set on one group for good.

use crate::config::{Scheme, ShardingOptions};
use crate::msg::NodeId;
use crate::seeded::stable_hash;
use serde::{Deserialize, Serialize};

pub type GroupId = u32;
pub type PartitionId = u32;

/// The keys of a partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Span {
    /// Keys whose hash mod `of` is `index`.
    Hash { index: u32, of: u32 },
    /// Keys whose hash lies after the previous token of the ring, up to
    /// and including `token` (the first token takes what wraps around).
    Ring { token: u64 },
    /// `lo <= key < hi`; no `hi`: no upper end.
    Range { lo: String, hi: Option<String> },
    /// Keys of `region` (see [`region_of`]) whose hash mod `of` is `index`.
    Region { region: u32, index: u32, of: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    pub id: PartitionId,
    pub epoch: u64,
    pub group: GroupId,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMap {
    pub scheme: Scheme,
    /// Raised by every change; a node keeps the map with the highest.
    pub epoch: u64,
    pub partitions: Vec<Partition>,
    pub next_id: PartitionId,
    /// Geo: the number of regions (keys of others go to region 0).
    pub regions: u32,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("no partition {0}")]
    NoPartition(PartitionId),
    #[error("no group {0}")]
    NoGroup(GroupId),
    #[error("{0} partitions cannot be split or merged")]
    Fixed(&'static str),
    #[error("{0}")]
    Refused(String),
}

/// The hash that places a key (stable across processes and builds).
pub fn key_hash(key: &str) -> u64 {
    stable_hash(key.as_bytes())
}

/// The region a geo key names with its prefix `rN/` (`r0/`, `r1/`...);
/// a key without one is region 0's.
pub fn region_of(key: &str, regions: u32) -> u32 {
    key.strip_prefix('r')
        .and_then(|rest| rest.split_once('/'))
        .and_then(|(n, _)| n.parse::<u32>().ok())
        .filter(|r| *r < regions.max(1))
        .unwrap_or(0)
}

/// The nodes of group `g`: `replicas` consecutive nodes from node `g`
/// (mod the node count), so that groups overlap and each node hosts
/// several; geo: consecutive nodes of the group's region (`g mod regions`).
pub fn group_members(opts: &ShardingOptions, nodes: usize, g: GroupId) -> Vec<NodeId> {
    let replicas = opts.replicas as usize;
    if opts.scheme == Scheme::Geo {
        let regions = opts.regions.max(1);
        let region = g % regions;
        let region_nodes: Vec<NodeId> = (0..nodes as NodeId)
            .filter(|i| i % regions == region)
            .collect();
        let start = (g / regions) as usize;
        return (0..replicas.min(region_nodes.len()))
            .map(|i| region_nodes[(start + i) % region_nodes.len()])
            .collect();
    }
    (0..replicas.min(nodes))
        .map(|i| ((g as usize + i) % nodes) as NodeId)
        .collect()
}

/// Geo: the region a group serves.
pub fn group_region(opts: &ShardingOptions, g: GroupId) -> u32 {
    g % opts.regions.max(1)
}

/// Why these options cannot shard `nodes` nodes, if they cannot.
pub fn refuse(opts: &ShardingOptions, nodes: usize) -> Option<String> {
    if opts.groups == 0 || opts.replicas == 0 || opts.partitions_per_group == 0 {
        return Some("sharding needs at least one group, one replica and one partition".into());
    }
    if opts.scheme == Scheme::Geo {
        let regions = opts.regions.max(1) as usize;
        if (opts.groups as usize) < regions {
            return Some(format!(
                "geo sharding over {regions} regions needs a group per region at least ({} groups)",
                opts.groups
            ));
        }
        let smallest = nodes / regions;
        if smallest < opts.replicas as usize {
            return Some(format!(
                "geo sharding: {nodes} nodes over {regions} regions leave {smallest} a region, \
                 fewer than the {} replicas of a group",
                opts.replicas
            ));
        }
    } else if nodes < opts.replicas as usize {
        return Some(format!(
            "{nodes} nodes cannot hold groups of {} replicas",
            opts.replicas
        ));
    }
    None
}

fn initial_boundaries(opts: &ShardingOptions, ranges: u32) -> Vec<String> {
    if !opts.boundaries.is_empty() {
        let mut b = opts.boundaries.clone();
        b.sort();
        b.dedup();
        b.retain(|x| !x.is_empty());
        return b;
    }
    // Spread over the digits, as the harness's keys are numbers.
    let mut b: Vec<String> = (1..ranges)
        .map(|i| {
            if ranges <= 10 {
                format!("{}", 10 * i / ranges)
            } else {
                format!("{:02}", 100 * i / ranges)
            }
        })
        .collect();
    b.dedup();
    b
}

impl ShardMap {
    /// The map every node starts from (epoch 1).
    pub fn initial(opts: &ShardingOptions) -> ShardMap {
        let groups = opts.groups.max(1);
        let per = opts.partitions_per_group.max(1);
        let total = groups * per;
        let mut partitions = Vec::new();
        match opts.scheme {
            Scheme::Hash => {
                for i in 0..total {
                    partitions.push((
                        i % groups,
                        Span::Hash {
                            index: i,
                            of: total,
                        },
                    ));
                }
            }
            Scheme::ConsistentHash => {
                let mut tokens: Vec<(u64, GroupId)> = (0..groups)
                    .flat_map(|g| {
                        (0..per).map(move |j| (stable_hash(format!("vnode/{g}/{j}").as_bytes()), g))
                    })
                    .collect();
                tokens.sort_unstable();
                tokens.dedup_by_key(|t| t.0);
                for (token, g) in tokens {
                    partitions.push((g, Span::Ring { token }));
                }
            }
            Scheme::Range | Scheme::Directory => {
                let bounds = initial_boundaries(opts, total);
                let n = bounds.len() as u32 + 1;
                for i in 0..n {
                    let lo = if i == 0 {
                        String::new()
                    } else {
                        bounds[i as usize - 1].clone()
                    };
                    let hi = bounds.get(i as usize).cloned();
                    // Range: neighbours share a group; directory: dealt out one by one.
                    let g = if opts.scheme == Scheme::Range {
                        i * groups / n
                    } else {
                        i % groups
                    };
                    partitions.push((g, Span::Range { lo, hi }));
                }
            }
            Scheme::Geo => {
                let regions = opts.regions.max(1);
                for region in 0..regions {
                    let own: Vec<GroupId> = (0..groups)
                        .filter(|g| group_region(opts, *g) == region)
                        .collect();
                    let of = own.len() as u32 * per;
                    for index in 0..of {
                        partitions.push((
                            own[(index as usize) % own.len()],
                            Span::Region { region, index, of },
                        ));
                    }
                }
            }
        }
        let partitions: Vec<Partition> = partitions
            .into_iter()
            .enumerate()
            .map(|(id, (group, span))| Partition {
                id: id as PartitionId,
                epoch: 1,
                group,
                span,
            })
            .collect();
        ShardMap {
            scheme: opts.scheme,
            epoch: 1,
            next_id: partitions.len() as PartitionId,
            partitions,
            regions: opts.regions.max(1),
        }
    }

    pub fn get(&self, id: PartitionId) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.id == id)
    }

    fn get_mut(&mut self, id: PartitionId) -> Result<&mut Partition, MapError> {
        self.partitions
            .iter_mut()
            .find(|p| p.id == id)
            .ok_or(MapError::NoPartition(id))
    }

    /// Whether `key` is in `span` (given the ring's other tokens).
    pub fn contains(&self, span: &Span, key: &str) -> bool {
        match self.locate(key) {
            Some(p) => &p.span == span,
            None => false,
        }
    }

    /// The partition of `key`.
    pub fn locate(&self, key: &str) -> Option<&Partition> {
        match self.scheme {
            Scheme::Hash => {
                let h = key_hash(key);
                self.partitions.iter().find(
                    |p| matches!(p.span, Span::Hash { index, of } if h % u64::from(of) == u64::from(index)),
                )
            }
            Scheme::ConsistentHash => {
                let h = key_hash(key);
                let token = |p: &&Partition| match p.span {
                    Span::Ring { token } => token,
                    _ => 0,
                };
                self.partitions
                    .iter()
                    .filter(|p| token(p) >= h)
                    .min_by_key(token)
                    .or_else(|| self.partitions.iter().min_by_key(token))
            }
            Scheme::Range | Scheme::Directory => self.partitions.iter().find(|p| match &p.span {
                Span::Range { lo, hi } => {
                    key >= lo.as_str() && hi.as_deref().is_none_or(|hi| key < hi)
                }
                _ => false,
            }),
            Scheme::Geo => {
                let region = region_of(key, self.regions);
                let h = key_hash(key);
                self.partitions.iter().find(|p| {
                    matches!(p.span, Span::Region { region: r, index, of }
                        if r == region && h % u64::from(of) == u64::from(index))
                })
            }
        }
    }

    /// The epoch a change planned on this map gives the partitions it touches.
    pub fn next_epoch(&self) -> u64 {
        self.epoch + 1
    }

    /// A copy for a change whose partitions take `epoch`: the map's epoch
    /// rises past both its own and `epoch` (a change planned on an older
    /// map and written over a newer one keeps the epoch it froze with).
    fn bumped(&self, epoch: u64) -> ShardMap {
        let mut m = self.clone();
        m.epoch = (self.epoch + 1).max(epoch);
        m
    }

    /// `id` served by `to` from `epoch` on.
    pub fn moved(&self, id: PartitionId, to: GroupId, epoch: u64) -> Result<ShardMap, MapError> {
        let mut m = self.bumped(epoch);
        let p = m.get_mut(id)?;
        if p.group == to {
            return Err(MapError::Refused(format!(
                "partition {id} is on group {to} already"
            )));
        }
        p.group = to;
        p.epoch = epoch;
        Ok(m)
    }

    /// Where `id` would split: a range at `at` (or the middle of `keys`, the
    /// keys it holds, in order); a ring arc halfway to the previous token.
    pub fn split_point(&self, id: PartitionId, keys: &[String]) -> Result<Span, MapError> {
        let p = self.get(id).ok_or(MapError::NoPartition(id))?;
        match &p.span {
            Span::Range { lo, .. } => {
                let at = keys
                    .get(keys.len() / 2)
                    .filter(|k| *k > lo)
                    .ok_or_else(|| {
                        MapError::Refused(format!(
                            "partition {id} holds too few keys to split ({})",
                            keys.len()
                        ))
                    })?;
                Ok(Span::Range {
                    lo: at.clone(),
                    hi: None,
                })
            }
            Span::Ring { token } => {
                let prev = self
                    .partitions
                    .iter()
                    .filter_map(|q| match q.span {
                        Span::Ring { token: t } if t < *token => Some(t),
                        _ => None,
                    })
                    .max()
                    .unwrap_or(0);
                let mid = prev + (token - prev) / 2;
                if mid == prev || mid == *token {
                    return Err(MapError::Refused(format!(
                        "partition {id}'s arc is too small to split"
                    )));
                }
                Ok(Span::Ring { token: mid })
            }
            Span::Hash { .. } => Err(MapError::Fixed("hash")),
            Span::Region { .. } => Err(MapError::Fixed("geo")),
        }
    }

    /// `id` split at `at` (from [`ShardMap::split_point`]): `id` keeps the
    /// lower part, a new partition on the same group takes the upper part
    /// (a ring: the new one takes the lower arc). Returns the map and the new id.
    pub fn split(
        &self,
        id: PartitionId,
        at: &Span,
        epoch: u64,
    ) -> Result<(ShardMap, PartitionId), MapError> {
        let mut m = self.bumped(epoch);
        let new_id = m.next_id;
        m.next_id += 1;
        let p = m.get_mut(id)?;
        let group = p.group;
        let new_span = match (&mut p.span, at) {
            (Span::Range { lo, hi }, Span::Range { lo: at, .. }) => {
                if at <= lo || hi.as_ref().is_some_and(|h| at >= h) {
                    return Err(MapError::Refused(format!(
                        "{at:?} is not inside partition {id}"
                    )));
                }
                let upper = Span::Range {
                    lo: at.clone(),
                    hi: hi.clone(),
                };
                *hi = Some(at.clone());
                upper
            }
            (Span::Ring { token }, Span::Ring { token: at }) if at < token => {
                Span::Ring { token: *at }
            }
            (Span::Hash { .. }, _) => return Err(MapError::Fixed("hash")),
            (Span::Region { .. }, _) => return Err(MapError::Fixed("geo")),
            _ => {
                return Err(MapError::Refused(format!(
                    "{at:?} is not inside partition {id}"
                )))
            }
        };
        p.epoch = epoch;
        m.partitions.push(Partition {
            id: new_id,
            epoch,
            group,
            span: new_span,
        });
        Ok((m, new_id))
    }

    /// The partition `absorbed` merges into: its right neighbour's left
    /// neighbour for a range, the next token for a ring.
    pub fn merge_partner(&self, absorbed: PartitionId) -> Result<PartitionId, MapError> {
        let p = self.get(absorbed).ok_or(MapError::NoPartition(absorbed))?;
        match &p.span {
            Span::Range { lo, .. } => self
                .partitions
                .iter()
                .find(|q| matches!(&q.span, Span::Range { hi: Some(h), .. } if h == lo))
                .map(|q| q.id)
                .ok_or_else(|| {
                    MapError::Refused(format!("partition {absorbed} is the first range"))
                }),
            Span::Ring { token } => {
                let next = self
                    .partitions
                    .iter()
                    .filter(|q| matches!(q.span, Span::Ring { token: t } if t > *token))
                    .min_by_key(|q| match q.span {
                        Span::Ring { token } => token,
                        _ => 0,
                    });
                next.map(|q| q.id).ok_or_else(|| {
                    MapError::Refused(format!("partition {absorbed} is the ring's last token"))
                })
            }
            Span::Hash { .. } => Err(MapError::Fixed("hash")),
            Span::Region { .. } => Err(MapError::Fixed("geo")),
        }
    }

    /// `absorbed` merged into `into` (its [`ShardMap::merge_partner`], on
    /// the same group): `into` covers both from the next epoch.
    pub fn merged(
        &self,
        absorbed: PartitionId,
        into: PartitionId,
        epoch: u64,
    ) -> Result<ShardMap, MapError> {
        if self.merge_partner(absorbed)? != into {
            return Err(MapError::Refused(format!(
                "partitions {absorbed} and {into} are not neighbours"
            )));
        }
        let gone = self
            .get(absorbed)
            .ok_or(MapError::NoPartition(absorbed))?
            .clone();
        let mut m = self.bumped(epoch);
        let q = m.get_mut(into)?;
        if q.group != gone.group {
            return Err(MapError::Refused(format!(
                "partitions {absorbed} and {into} are on groups {} and {}: move one first",
                gone.group, q.group
            )));
        }
        if let (Span::Range { hi, .. }, Span::Range { hi: gone_hi, .. }) = (&mut q.span, &gone.span)
        {
            *hi = gone_hi.clone();
        }
        q.epoch = epoch;
        m.partitions.retain(|p| p.id != absorbed);
        Ok(m)
    }

    /// Checks that every key has exactly one partition: ranges tile the
    /// key space, hash indices and ring tokens are distinct.
    pub fn check(&self) -> Result<(), String> {
        let mut ids: Vec<_> = self.partitions.iter().map(|p| p.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != self.partitions.len() {
            return Err("two partitions share an id".into());
        }
        match self.scheme {
            Scheme::Range | Scheme::Directory => {
                let mut spans: Vec<(&String, &Option<String>)> = self
                    .partitions
                    .iter()
                    .filter_map(|p| match &p.span {
                        Span::Range { lo, hi } => Some((lo, hi)),
                        _ => None,
                    })
                    .collect();
                spans.sort();
                if spans.len() != self.partitions.len()
                    || spans.first().map(|s| s.0.as_str()) != Some("")
                {
                    return Err("the ranges do not start at the empty key".into());
                }
                for w in spans.windows(2) {
                    if w[0].1.as_ref() != Some(w[1].0) {
                        return Err(format!(
                            "ranges end at {:?} but the next starts at {:?}",
                            w[0].1, w[1].0
                        ));
                    }
                }
                if spans.last().is_some_and(|s| s.1.is_some()) {
                    return Err("the last range has an end".into());
                }
            }
            Scheme::ConsistentHash => {
                let mut tokens: Vec<u64> = self
                    .partitions
                    .iter()
                    .filter_map(|p| match p.span {
                        Span::Ring { token } => Some(token),
                        _ => None,
                    })
                    .collect();
                tokens.sort_unstable();
                tokens.dedup();
                if tokens.len() != self.partitions.len() {
                    return Err("two virtual nodes share a token".into());
                }
            }
            Scheme::Hash | Scheme::Geo => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(scheme: Scheme) -> ShardingOptions {
        ShardingOptions {
            scheme,
            groups: 4,
            ..ShardingOptions::default()
        }
    }

    #[test]
    fn every_scheme_starts_with_one_partition_per_key_on_every_group() {
        for scheme in [
            Scheme::Hash,
            Scheme::Range,
            Scheme::ConsistentHash,
            Scheme::Directory,
            Scheme::Geo,
        ] {
            let m = ShardMap::initial(&opts(scheme));
            m.check().unwrap();
            // Geo keys name their region.
            let key = |i: i32| match scheme {
                Scheme::Geo => format!("r{}/{i}", i % 2),
                _ => i.to_string(),
            };
            let mut groups: Vec<GroupId> =
                (0..200).map(|i| m.locate(&key(i)).unwrap().group).collect();
            groups.sort_unstable();
            groups.dedup();
            assert_eq!(groups.len(), 4, "{scheme:?} uses every group: {groups:?}");
        }
    }

    #[test]
    fn geo_keys_stay_in_their_region() {
        let o = opts(Scheme::Geo);
        let m = ShardMap::initial(&o);
        for i in 0..50 {
            let p = m.locate(&format!("r1/{i}")).unwrap();
            assert_eq!(group_region(&o, p.group), 1);
            let members = group_members(&o, 6, p.group);
            assert!(members.iter().all(|n| n % 2 == 1), "{members:?}");
        }
    }

    #[test]
    fn splits_and_merges_keep_one_owner_per_key() {
        let m = ShardMap::initial(&opts(Scheme::Range));
        let p = m.locate("55").unwrap().id;
        let keys: Vec<String> = ["5", "51", "55", "57"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let at = m.split_point(p, &keys).unwrap();
        let (s, new) = m.split(p, &at, m.next_epoch()).unwrap();
        s.check().unwrap();
        assert_eq!(s.locate("55").unwrap().id, new);
        assert_eq!(s.locate("51").unwrap().id, p);
        assert_eq!(s.merge_partner(new).unwrap(), p);
        let back = s.merged(new, p, s.next_epoch()).unwrap();
        back.check().unwrap();
        assert_eq!(back.locate("55").unwrap().id, p);
        assert!(back.epoch > s.epoch && s.epoch > m.epoch);

        let ring = ShardMap::initial(&opts(Scheme::ConsistentHash));
        let p = ring.partitions[3].id;
        let at = ring.split_point(p, &[]).unwrap();
        let (s, new) = ring.split(p, &at, ring.next_epoch()).unwrap();
        s.check().unwrap();
        assert_eq!(s.merge_partner(new).unwrap(), p);
        s.merged(new, p, s.next_epoch()).unwrap().check().unwrap();
    }
}
