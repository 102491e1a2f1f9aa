//! Where a client sends a request, and what it does with each answer: the
//! sans-IO half of [`crate::client`], which the async client and the
//! simulator's clients both drive, so a simulated client routes exactly as a
//! real one does.

use crate::msg::{Op, OpResult, ReadFrom, Refusal, Reply, RequestOptions};
use crate::seeded::mix64;

/// What the caller learns about one operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok(OpResult),
    /// Definitely not done.
    NotDone(Refusal),
    /// Rejected as invalid (bad value, unknown op); definitely not done.
    Rejected(String),
    /// Maybe done, maybe not: a timeout or a connection lost after sending.
    Unknown(String),
}

impl Outcome {
    pub fn is_definite_failure(&self) -> bool {
        matches!(self, Outcome::NotDone(_) | Outcome::Rejected(_))
    }
}

impl From<Reply> for Outcome {
    fn from(reply: Reply) -> Outcome {
        match reply {
            Reply::Ok(r) => Outcome::Ok(r),
            Reply::NotDone(r) => Outcome::NotDone(r),
            Reply::Unknown(e) => Outcome::Unknown(e),
            Reply::Error(e) => Outcome::Rejected(e),
        }
    }
}

/// Which node a request goes to. Node indices are in cluster-file order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Routing {
    /// Single-leader: the node believed to lead (node 0 at first), following
    /// redirects and retrying refusals until the deadline; reads allowed
    /// away from the leader are spread over the others.
    #[default]
    Leader,
    /// Leaderless: every request goes to this node, which coordinates it,
    /// and only to it, as Jepsen binds each client process to one node. It
    /// never fails over: another coordinator would hide what this one's side
    /// of a partition sees, so an unreachable node is that request's failure
    /// (`NotDone(Unreachable)`) and a lost one its unknown outcome.
    Bound(usize),
    /// Leaderless: each request goes to the next node in turn, starting from
    /// a node drawn from `seed` (give each client its own). A node that
    /// cannot be connected to is skipped for the next, as nothing was sent.
    PerRequest { seed: u64 },
}

/// How one attempt to send a request to a node ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    Replied(Reply),
    /// Nothing left the client (no connection): definitely not done.
    NotSent(String),
    /// Sent, then the connection broke or the deadline passed.
    Lost(String),
}

/// What to do after an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    Done(Outcome),
    /// Send to this node now.
    Resend(usize),
    /// Send to this node after the retry pause, unless the deadline comes
    /// first; then `refusal` is the request's outcome.
    RetryAfterPause {
        node: usize,
        refusal: Outcome,
    },
}

/// One client's routing state.
#[derive(Clone, Debug)]
pub struct Router {
    nodes: usize,
    routing: Routing,
    leader_hint: usize,
    /// The node the last attempt could not reach, until one reaches it: a
    /// hint naming it (a removed node's stale idea of the leader) is not
    /// followed back to it.
    unreachable: Option<usize>,
    /// Requests routed so far, for spreading reads and for the rotation.
    requests: u64,
}

impl Router {
    /// A router that takes `first_node` for the leader until told otherwise
    /// (give each client its own, as clients configured with different
    /// nodes start from them).
    pub fn new(nodes: usize, routing: Routing, first_node: usize) -> Router {
        Router {
            nodes,
            routing,
            leader_hint: first_node,
            unreachable: None,
            requests: 0,
        }
    }

    /// The node a new request goes to first, or why it cannot be sent.
    pub fn first(&mut self, op: &Op, options: &RequestOptions) -> Result<usize, Outcome> {
        let n = self.nodes;
        if n == 0 {
            return Err(Outcome::Rejected("no nodes".into()));
        }
        let k = self.requests;
        self.requests += 1;
        Ok(match self.routing {
            Routing::Bound(home) if home < n => home,
            Routing::Bound(home) => {
                return Err(Outcome::Rejected(format!(
                    "client bound to node {home}, but the cluster has {n} nodes"
                )))
            }
            Routing::PerRequest { seed } => {
                let n = n as u64;
                ((mix64(seed) % n + k % n) % n) as usize
            }
            Routing::Leader => {
                let leader = self.leader_hint % n;
                let spread = k as usize;
                match (op.is_read_only(), options.read_from) {
                    (true, Some(ReadFrom::Followers)) if n > 1 => {
                        (leader + 1 + spread % (n - 1)) % n
                    }
                    (true, Some(ReadFrom::Any)) => spread % n,
                    _ => leader,
                }
            }
        })
    }

    /// What to do after the `tries`-th attempt (from 1) went to `node`.
    pub fn next(
        &mut self,
        node: usize,
        tries: usize,
        op: &Op,
        options: &RequestOptions,
        attempt: Attempt,
    ) -> Next {
        let n = self.nodes.max(1);
        match self.routing {
            Routing::Bound(_) => Next::Done(match attempt {
                Attempt::Replied(reply) => reply.into(),
                Attempt::NotSent(e) => Outcome::NotDone(Refusal::Unreachable(e)),
                Attempt::Lost(e) => Outcome::Unknown(e),
            }),
            Routing::PerRequest { .. } => match attempt {
                Attempt::Replied(reply) => Next::Done(reply.into()),
                Attempt::Lost(e) => Next::Done(Outcome::Unknown(e)),
                Attempt::NotSent(e) if tries >= n => {
                    Next::Done(Outcome::NotDone(Refusal::Unreachable(e)))
                }
                Attempt::NotSent(_) => Next::Resend((node + 1) % n),
            },
            Routing::Leader => match attempt {
                Attempt::Replied(Reply::NotDone(Refusal::NotLeader { leader })) => {
                    if self.unreachable == Some(node) {
                        self.unreachable = None;
                    }
                    let refusal = Outcome::NotDone(Refusal::NotLeader { leader });
                    match leader {
                        Some(l)
                            if (l as usize) < n
                                && l as usize != node
                                && self.unreachable != Some(l as usize) =>
                        {
                            self.leader_hint = l as usize;
                            Next::Resend(l as usize)
                        }
                        _ => Next::RetryAfterPause {
                            node: (node + 1) % n,
                            refusal,
                        },
                    }
                }
                Attempt::Replied(Reply::NotDone(Refusal::NoLease)) => Next::RetryAfterPause {
                    node,
                    refusal: Outcome::NotDone(Refusal::NoLease),
                },
                Attempt::Replied(reply) => {
                    if self.unreachable == Some(node) {
                        self.unreachable = None;
                    }
                    if !op.is_read_only()
                        || options.read_from.unwrap_or_default() == ReadFrom::Leader
                    {
                        self.leader_hint = node;
                    }
                    Next::Done(reply.into())
                }
                Attempt::NotSent(e) => {
                    self.unreachable = Some(node);
                    Next::RetryAfterPause {
                        node: (node + 1) % n,
                        refusal: Outcome::NotDone(Refusal::Unreachable(e)),
                    }
                }
                Attempt::Lost(e) => Next::Done(Outcome::Unknown(e)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::Value;

    /// Regression: a removed Raft node kept naming the killed leader, and a
    /// client bounced between the two until its deadline.
    #[test]
    fn a_hint_naming_the_node_just_unreachable_is_not_followed_back() {
        let mut r = Router::new(5, Routing::Leader, 2);
        let op = Op::Put {
            key: "k".into(),
            value: Value::Int(1),
        };
        let o = RequestOptions::default();
        assert_eq!(r.first(&op, &o).ok(), Some(2));
        let next = r.next(2, 1, &op, &o, Attempt::NotSent("refused".into()));
        assert!(matches!(next, Next::RetryAfterPause { node: 3, .. }));
        let stale = Attempt::Replied(Reply::NotDone(Refusal::NotLeader { leader: Some(2) }));
        let next = r.next(3, 2, &op, &o, stale);
        assert!(
            matches!(next, Next::RetryAfterPause { node: 4, .. }),
            "{next:?}"
        );
        // A hint to another node is followed as before.
        let fresh = Attempt::Replied(Reply::NotDone(Refusal::NotLeader { leader: Some(0) }));
        assert!(matches!(r.next(4, 3, &op, &o, fresh), Next::Resend(0)));
    }
}
