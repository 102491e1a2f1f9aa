//! The reference store's clients: each op of a workload translated into
//! the store's protocol, and its reply into the op's completion (`fail`
//! only when the store certainly did not apply it). Every environment's
//! runs of the store use these.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use smol_str::SmolStr;
use splitbrain_generators::Invocation;
use splitbrain_history::Value;
use splitbrain_store::client::{Client as StoreClient, ClientOptions, Outcome, Routing};
use splitbrain_store::config::{ClientRouting, ClusterConfig};
use splitbrain_store::msg::{
    Op as StoreOp, OpResult, Refusal, RequestOptions, Value as StoreValue,
};
use splitbrain_workloads::{WorkloadKind, WorkloadOptions};

use crate::interpreter::{Client, ClientFactory, Completion};

/// Clients of a running store, one per process.
pub fn clients(
    cfg: ClusterConfig,
    workload: WorkloadKind,
    options: &WorkloadOptions,
    op_timeout: Duration,
) -> Arc<dyn ClientFactory> {
    Arc::new(RefstoreClients {
        cfg,
        translator: Translator::new(workload, options),
        op_timeout,
    })
}

/// Clients speaking the store's protocol, one per process.
struct RefstoreClients {
    cfg: ClusterConfig,
    translator: Translator,
    op_timeout: Duration,
}

impl ClientFactory for RefstoreClients {
    fn open(&self, process: u64) -> Box<dyn Client> {
        // The interpreter enforces the op timeout; the store client gives up a little earlier
        // so that its own "unknown" reaches the history with its reason.
        let timeout = self
            .op_timeout
            .saturating_sub(Duration::from_millis(50))
            .max(Duration::from_millis(50));
        // A Dynamo-style client process talks to a coordinator of its own
        // (as Jepsen binds each client to a node); leaders are found.
        let routing = if splitbrain_store::modes::has_leader(&self.cfg) || self.cfg.nodes.is_empty()
        {
            Routing::Leader
        } else {
            match self.cfg.client_routing {
                ClientRouting::Bound => Routing::Bound(process as usize % self.cfg.nodes.len()),
                ClientRouting::PerRequest => Routing::PerRequest {
                    seed: self.cfg.seed ^ process.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                },
            }
        };
        // Each process starts from a node of its own and follows redirects,
        // so a deposed leader that has not noticed still has clients.
        let opts = ClientOptions {
            timeout,
            routing,
            first_node: process as usize % self.cfg.nodes.len().max(1),
            ..ClientOptions::default()
        };
        Box::new(RefstoreClient {
            client: StoreClient::from_config(&self.cfg, opts),
            options: request_options(&self.cfg),
            t: self.translator.clone(),
            timeout,
            node_ids: self
                .cfg
                .nodes
                .iter()
                .map(|n| n.id.as_str().into())
                .collect(),
        })
    }
}

/// What every request of a run asks for: in a mode with a leader, reads go
/// where the cluster serves them (`read_from`), so that follower reads are
/// really sent to followers.
pub fn request_options(cfg: &ClusterConfig) -> RequestOptions {
    RequestOptions {
        read_from: splitbrain_store::modes::read_from(cfg),
        ..RequestOptions::default()
    }
}

struct RefstoreClient {
    client: StoreClient,
    options: RequestOptions,
    t: Translator,
    timeout: Duration,
    /// The cluster's node ids, by index: a completion names the node whose
    /// reply it records (the convergence and staleness checkers read it).
    node_ids: Vec<SmolStr>,
}

/// A workload's ops in the store's terms and back: pure, so that the
/// simulator's clients record exactly what real ones do.
#[derive(Clone)]
pub struct Translator {
    workload: WorkloadKind,
    /// The bank's accounts and their opening balances, from the run's options.
    opening_balances: Arc<Vec<(i64, i64)>>,
}

fn key_name(k: &Value) -> String {
    match k {
        Value::Str(s) | Value::Keyword(s) => s.to_string(),
        other => other.to_edn(),
    }
}

fn to_store(v: &Value) -> Option<StoreValue> {
    match v {
        Value::Int(i) => Some(StoreValue::Int(*i)),
        Value::Str(s) | Value::Keyword(s) => Some(StoreValue::Str(s.to_string())),
        _ => None,
    }
}

fn from_store(v: &Option<StoreValue>) -> Value {
    match v {
        None => Value::Nil,
        Some(StoreValue::Int(i)) => Value::Int(*i),
        Some(StoreValue::Str(s)) => Value::Str(s.as_str().into()),
        Some(StoreValue::List(l)) => Value::List(l.iter().map(|i| Value::Int(*i)).collect()),
        Some(StoreValue::Set(s)) => Value::set(s.iter().map(|i| Value::Int(*i))),
    }
}

const SET_KEY: &str = "set";
const COUNTER_KEY: &str = "counter";

fn account_key(i: i64) -> String {
    format!("account-{i}")
}

/// The bank's opening balances: the total spread evenly, the remainder on account 0.
fn opening_balances(o: &WorkloadOptions) -> Vec<(i64, i64)> {
    let n = o.accounts.max(2) as i64;
    (0..n)
        .map(|i| {
            let share = o.total_balance / n;
            (
                i,
                if i == 0 {
                    share + o.total_balance % n
                } else {
                    share
                },
            )
        })
        .collect()
}

impl Translator {
    pub fn new(workload: WorkloadKind, options: &WorkloadOptions) -> Translator {
        Translator {
            workload,
            opening_balances: Arc::new(opening_balances(options)),
        }
    }

    /// The store op for an invocation, or why it cannot be expressed.
    /// The bank's transfers take several requests: see [`RefstoreClient::bank`].
    pub fn translate(&self, inv: &Invocation) -> Result<StoreOp, String> {
        let key = || {
            inv.key
                .as_ref()
                .map(key_name)
                .unwrap_or_else(|| "r".to_string())
        };
        let list_append = self.workload == WorkloadKind::ListAppend;
        Ok(match (self.workload, inv.f.as_str()) {
            (WorkloadKind::Set, "add") => StoreOp::Add {
                key: SET_KEY.into(),
                elem: inv.value.as_int().ok_or("add needs an integer")?,
            },
            (WorkloadKind::Set, "read") => StoreOp::ReadSet {
                key: SET_KEY.into(),
            },
            (WorkloadKind::Counter | WorkloadKind::CrdtCounter, "add") => StoreOp::Incr {
                key: COUNTER_KEY.into(),
                delta: inv.value.as_int().ok_or("add needs an integer")?,
            },
            (WorkloadKind::Counter | WorkloadKind::CrdtCounter, "read") => StoreOp::Get {
                key: COUNTER_KEY.into(),
            },
            (WorkloadKind::OrSet, "add") => StoreOp::Add {
                key: SET_KEY.into(),
                elem: inv.value.as_int().ok_or("add needs an integer")?,
            },
            (WorkloadKind::OrSet, "remove") => StoreOp::Remove {
                key: SET_KEY.into(),
                elem: inv.value.as_int().ok_or("remove needs an integer")?,
            },
            (WorkloadKind::OrSet, "read") => StoreOp::ReadSet {
                key: SET_KEY.into(),
            },
            (_, "read") => StoreOp::Get { key: key() },
            (_, "write") => StoreOp::Put {
                key: key(),
                value: to_store(&inv.value).ok_or("write needs an integer or string")?,
            },
            (_, "cas") => {
                let l = inv
                    .value
                    .as_list()
                    .filter(|l| l.len() == 2)
                    .ok_or("cas needs [from to]")?;
                StoreOp::Cas {
                    key: key(),
                    expected: to_store(&l[0]),
                    new: to_store(&l[1]).ok_or("cas needs an integer")?,
                }
            }
            (_, "txn") => {
                let mops = inv.value.as_list().ok_or("txn needs a list of micro-ops")?;
                let mut ops = Vec::with_capacity(mops.len());
                for m in mops {
                    let m = m
                        .as_list()
                        .filter(|m| m.len() == 3)
                        .ok_or("a micro-op is [f k v]")?;
                    let k = key_name(&m[1]);
                    ops.push(match m[0].as_str() {
                        Some("append") => StoreOp::Append {
                            key: k,
                            elem: m[2].as_int().ok_or("append needs an integer")?,
                        },
                        Some("r") if list_append => StoreOp::ReadList { key: k },
                        Some("r") => StoreOp::Get { key: k },
                        Some("w") => StoreOp::Put {
                            key: k,
                            value: to_store(&m[2]).ok_or("w needs an integer")?,
                        },
                        other => return Err(format!("unknown micro-op {other:?}")),
                    });
                }
                StoreOp::Txn { ops }
            }
            (w, f) => {
                return Err(format!(
                    "the {w} workload has no '{f}' on the reference store"
                ))
            }
        })
    }

    /// The completed op's value, with reads filled in.
    fn result_value(&self, inv: &Invocation, r: &OpResult) -> Value {
        match (inv.f.as_str(), r) {
            ("read", OpResult::Value(v)) => {
                let v = from_store(v);
                // An absent set or list reads as empty.
                match (self.workload, v) {
                    (WorkloadKind::Set | WorkloadKind::OrSet, Value::Nil) => Value::set(vec![]),
                    (WorkloadKind::Counter | WorkloadKind::CrdtCounter, Value::Nil) => {
                        Value::Int(0)
                    }
                    (_, v) => v,
                }
            }
            ("read", OpResult::Siblings(vs)) => {
                Value::set(vs.iter().map(|v| from_store(&Some(v.clone()))))
            }
            ("txn", OpResult::Txn(results)) => {
                let mops = inv.value.as_list().unwrap_or_default();
                Value::List(
                    mops.iter()
                        .zip(results)
                        .map(|(m, r)| match (m, r) {
                            (Value::List(parts), OpResult::Value(v))
                                if parts.len() == 3 && parts[0].as_str() == Some("r") =>
                            {
                                let read = match (self.workload, from_store(v)) {
                                    (WorkloadKind::ListAppend, Value::Nil) => Value::list(vec![]),
                                    (_, v) => v,
                                };
                                Value::list(vec![parts[0].clone(), parts[1].clone(), read])
                            }
                            (other, _) => other.clone(),
                        })
                        .collect(),
                )
            }
            _ => inv.value.clone(),
        }
    }
}

impl RefstoreClient {
    async fn send(&mut self, op: StoreOp) -> Outcome {
        self.client.request(op, self.options.clone()).await
    }

    /// All balances, read in one transaction.
    async fn bank_read(&mut self) -> Result<Vec<(i64, Option<i64>)>, Outcome> {
        let accounts: Vec<i64> = self.t.opening_balances.iter().map(|&(i, _)| i).collect();
        let ops = accounts
            .iter()
            .map(|&i| StoreOp::Get {
                key: account_key(i),
            })
            .collect();
        match self.send(StoreOp::Txn { ops }).await {
            Outcome::Ok(OpResult::Txn(rs)) => Ok(accounts
                .iter()
                .zip(rs)
                .map(|(&i, r)| match r {
                    OpResult::Value(Some(StoreValue::Int(b))) => (i, Some(b)),
                    _ => (i, None),
                })
                .collect()),
            other => Err(other),
        }
    }

    async fn bank(&mut self, inv: &Invocation) -> Completion {
        if inv.f == "read" {
            return match self.bank_read().await {
                // An account that is gone is left out: the checker sees the wrong total.
                Ok(bal) => Completion::ok(Value::Map(
                    bal.into_iter()
                        .filter_map(|(i, b)| b.map(|b| (Value::Int(i), Value::Int(b))))
                        .collect(),
                )),
                Err(o) => self.t.completion_of(inv, o),
            };
        }
        let field = |f: &str| inv.value.map_get(&Value::from(f)).and_then(Value::as_int);
        let (Some(from), Some(to), Some(amount)) = (field("from"), field("to"), field("amount"))
        else {
            return Completion::fail(inv.value.clone(), "a transfer needs from, to and amount");
        };
        // Optimistic: read both balances, then move the money with two
        // compare-and-sets in one transaction, which fails whole if either
        // balance moved meanwhile.
        for _attempt in 0..3 {
            let ops = vec![
                StoreOp::Get {
                    key: account_key(from),
                },
                StoreOp::Get {
                    key: account_key(to),
                },
            ];
            let (bf, bt) = match self.send(StoreOp::Txn { ops }).await {
                Outcome::Ok(OpResult::Txn(rs)) => match rs.as_slice() {
                    [OpResult::Value(Some(StoreValue::Int(f))), OpResult::Value(Some(StoreValue::Int(t)))] => {
                        (*f, *t)
                    }
                    _ => return Completion::fail(inv.value.clone(), "no-such-account"),
                },
                // Nothing was written yet, whatever happened to the read.
                Outcome::Unknown(_) => return Completion::fail(inv.value.clone(), "read-unknown"),
                other => return self.t.completion_of(inv, other),
            };
            if bf < amount {
                return Completion::fail(inv.value.clone(), "insufficient-funds");
            }
            let cas = |k: i64, old: i64, new: i64| StoreOp::Cas {
                key: account_key(k),
                expected: Some(StoreValue::Int(old)),
                new: StoreValue::Int(new),
            };
            let ops = vec![cas(from, bf, bf - amount), cas(to, bt, bt + amount)];
            match self.send(StoreOp::Txn { ops }).await {
                Outcome::NotDone(Refusal::CasMismatch { .. }) => continue,
                Outcome::Ok(_) => return Completion::ok(inv.value.clone()),
                other => return self.t.completion_of(inv, other),
            }
        }
        Completion::fail(inv.value.clone(), "conflict")
    }
}

impl Translator {
    /// The completion of an invocation whose request ended with `o`.
    pub fn completion_of(&self, inv: &Invocation, o: Outcome) -> Completion {
        match o {
            Outcome::Ok(r) => Completion::ok(self.result_value(inv, &r)),
            Outcome::NotDone(Refusal::CasMismatch { .. }) => {
                Completion::fail(inv.value.clone(), "precondition-failed")
            }
            Outcome::NotDone(refusal) => {
                Completion::fail(inv.value.clone(), &refusal_name(&refusal))
            }
            Outcome::Rejected(why) => Completion {
                error: Some(Value::Str(why.as_str().into())),
                ..Completion::fail(inv.value.clone(), "rejected")
            },
            Outcome::Unknown(why) => Completion {
                error: Some(Value::Str(why.as_str().into())),
                ..Completion::info(inv.value.clone(), "unknown")
            },
        }
    }
}

#[async_trait]
impl Client for RefstoreClient {
    async fn setup(&mut self) -> Result<(), String> {
        if self.t.workload != WorkloadKind::Bank {
            return Ok(());
        }
        // Create each account unless it exists; retried while a leader settles.
        let ops: Vec<StoreOp> = self
            .t
            .opening_balances
            .iter()
            .copied()
            .map(|(i, b)| StoreOp::Cas {
                key: account_key(i),
                expected: None,
                new: StoreValue::Int(b),
            })
            .collect();
        let mut last = String::new();
        for _ in 0..50 {
            match self.send(StoreOp::Txn { ops: ops.clone() }).await {
                Outcome::Ok(_) | Outcome::NotDone(Refusal::CasMismatch { .. }) => return Ok(()),
                Outcome::Rejected(why) => return Err(format!("opening balances rejected: {why}")),
                Outcome::NotDone(r) => last = refusal_name(&r),
                Outcome::Unknown(why) => last = why,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("could not write the opening balances: {last}"))
    }

    async fn invoke(&mut self, inv: &Invocation) -> Completion {
        if self.t.workload == WorkloadKind::Bank {
            return self.bank(inv).await;
        }
        let op = match self.t.translate(inv) {
            Ok(op) => op,
            Err(why) => return Completion::fail(inv.value.clone(), &why),
        };
        let (outcome, served_by) = self
            .client
            .request_served(op, self.options.clone(), self.timeout)
            .await;
        let mut completion = self.t.completion_of(inv, outcome);
        completion.node = served_by.and_then(|i| self.node_ids.get(i).cloned());
        completion
    }
}

fn refusal_name(r: &Refusal) -> String {
    match r {
        Refusal::NotLeader { .. } => "not-leader".into(),
        Refusal::NoLease => "no-lease".into(),
        Refusal::CasMismatch { .. } => "precondition-failed".into(),
        Refusal::TypeMismatch { .. } => "type-mismatch".into(),
        Refusal::NoQuorum { .. } => "no-quorum".into(),
        Refusal::Unreachable(_) => "unreachable".into(),
        Refusal::WrongShard { .. } => "wrong-shard".into(),
        Refusal::Fenced { .. } => "locked".into(),
    }
}
