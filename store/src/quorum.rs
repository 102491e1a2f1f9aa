//! Quorum arithmetic the replication modes share: majorities, R/W quorums,
//! the semi-sync ack count and sloppy-quorum stand-ins.

use crate::config::Replication;
use crate::msg::NodeId;

/// The smallest number of nodes that is more than half of `n`.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// Whether `acks` answers reach a quorum of `needed` among the `replicas`
/// asked. Asking fewer replicas than the quorum (a cluster smaller than N)
/// lowers it to all of them.
pub fn reached(acks: usize, needed: usize, replicas: usize) -> bool {
    acks >= needed.min(replicas)
}

/// Whether every read quorum of `r` meets every write quorum of `w` among `n`
/// replicas, so that a read sees the latest acknowledged write.
pub fn read_write_overlap(n: usize, r: usize, w: usize) -> bool {
    r + w > n
}

/// Follower acks a single-leader write needs before the leader acks it:
/// all of them (`sync`), k of them (`semi-sync:K`, at most all), or none.
pub fn follower_acks_needed(replication: Replication, followers: usize) -> usize {
    match replication {
        Replication::Sync => followers,
        Replication::SemiSync { k } => (k as usize).min(followers),
        Replication::Async => 0,
    }
}

/// The greatest value that at least `k` of `values` reach: the log index `k`
/// followers hold, or the latest send time `k` followers confirmed. `None`
/// when `k` is 0 (nothing to wait for) or there are fewer than `k` values.
pub fn kth_highest(values: impl IntoIterator<Item = u64>, k: usize) -> Option<u64> {
    if k == 0 {
        return None;
    }
    let mut v: Vec<u64> = values.into_iter().collect();
    v.sort_unstable_by(|a, b| b.cmp(a));
    v.get(k - 1).copied()
}

/// The replicas a request for a key goes to, each with the node it stands in
/// for: the first `n` nodes of the key's ring `order`. With `sloppy`, each
/// unhealthy one is replaced by the next healthy node after them (which keeps
/// the write as a hint for it); without a healthy stand-in it stays.
pub fn targets(
    order: &[NodeId],
    n: usize,
    sloppy: bool,
    healthy: impl Fn(NodeId) -> bool,
) -> Vec<(NodeId, Option<NodeId>)> {
    let n = n.min(order.len());
    if !sloppy {
        return order[..n].iter().map(|p| (*p, None)).collect();
    }
    let mut fallbacks = order[n..].iter().filter(|p| healthy(**p));
    order[..n]
        .iter()
        .map(|p| {
            if healthy(*p) {
                (*p, None)
            } else {
                match fallbacks.next() {
                    Some(f) => (*f, Some(*p)),
                    None => (*p, None),
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_is_more_than_half() {
        let got: Vec<usize> = (1..=7).map(majority).collect();
        assert_eq!(got, vec![1, 2, 2, 3, 3, 4, 4]);
    }

    #[test]
    fn quorum_is_capped_by_the_replicas_asked() {
        assert!(!reached(1, 2, 3));
        assert!(reached(2, 2, 3));
        assert!(reached(3, 2, 3));
        // Two replicas in a two-node cluster answer for N=3, W=3.
        assert!(!reached(1, 3, 2));
        assert!(reached(2, 3, 2));
    }

    #[test]
    fn read_and_write_quorums_overlap_only_when_r_plus_w_exceeds_n() {
        assert!(read_write_overlap(3, 2, 2));
        assert!(read_write_overlap(3, 1, 3));
        assert!(!read_write_overlap(3, 1, 2));
        assert!(!read_write_overlap(3, 1, 1));
        assert!(read_write_overlap(5, 3, 3));
        assert!(!read_write_overlap(5, 2, 3));
    }

    #[test]
    fn semi_sync_needs_k_acks_capped_by_the_followers() {
        assert_eq!(follower_acks_needed(Replication::Sync, 2), 2);
        assert_eq!(follower_acks_needed(Replication::Async, 2), 0);
        assert_eq!(follower_acks_needed(Replication::SemiSync { k: 1 }, 2), 1);
        assert_eq!(follower_acks_needed(Replication::SemiSync { k: 5 }, 2), 2);
        assert_eq!(follower_acks_needed(Replication::Sync, 0), 0);
    }

    #[test]
    fn kth_highest_is_what_k_followers_have_reached() {
        assert_eq!(kth_highest([5, 3, 9], 1), Some(9));
        assert_eq!(kth_highest([5, 3, 9], 2), Some(5));
        assert_eq!(kth_highest([5, 3, 9], 3), Some(3));
        assert_eq!(kth_highest([5, 3, 9], 4), None);
        assert_eq!(kth_highest([5, 3, 9], 0), None);
        assert_eq!(kth_highest([7, 7], 2), Some(7));
    }

    #[test]
    fn sloppy_targets_replace_unhealthy_replicas_by_the_next_healthy_nodes() {
        let order = [4, 1, 3, 0, 2];
        let down = |d: &'static [NodeId]| move |p: NodeId| !d.contains(&p);
        assert_eq!(
            targets(&order, 3, false, down(&[1, 3])),
            vec![(4, None), (1, None), (3, None)]
        );
        assert_eq!(
            targets(&order, 3, true, down(&[])),
            vec![(4, None), (1, None), (3, None)]
        );
        assert_eq!(
            targets(&order, 3, true, down(&[1])),
            vec![(4, None), (0, Some(1)), (3, None)]
        );
        // Unhealthy stand-ins are skipped, each stand-in is used once.
        assert_eq!(
            targets(&order, 3, true, down(&[1, 3, 0])),
            vec![(4, None), (2, Some(1)), (3, None)]
        );
        assert_eq!(
            targets(&order, 3, true, down(&[4, 1])),
            vec![(0, Some(4)), (2, Some(1)), (3, None)]
        );
        // N beyond the cluster is the whole cluster.
        assert_eq!(targets(&order[..2], 3, true, down(&[])).len(), 2);
    }
}
