//! Bank: `transfer` ops move money between accounts (value `{from to amount}`),
//! `read` returns a map account -> balance. Every ok read must sum to the
//! fixed total, name only known accounts, and (unless `negative-balances=true`)
//! show no negative balance.
//!
//! Options: `total=N` (else the sum of the first ok read, flagged as inferred),
//! `accounts=a,b,c` (else the accounts of the first ok read),
//! `negative-balances=true`.

use serde::Serialize;
use splitbrain_history::{CheckError, CheckOptions, CheckOutcome, History, Value, Verdict};

use crate::common::{param, value_of_text, FxSet};
use crate::DETAIL_LIMIT;

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum BankProblem {
    WrongTotal {
        total: i64,
        expected: i64,
        off_by: i64,
    },
    NegativeBalance {
        account: Value,
        balance: i64,
    },
    UnknownAccount {
        account: Value,
    },
    MissingAccount {
        account: Value,
    },
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BadRead {
    /// The read's completion position.
    pub read: usize,
    pub problems: Vec<BankProblem>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BankResult {
    pub verdict: Verdict,
    pub total: Option<i64>,
    pub total_inferred: bool,
    pub accounts: Vec<Value>,
    pub read_count: usize,
    pub transfer_count: usize,
    pub bad_read_count: usize,
    pub wrong_total_count: usize,
    pub negative_count: usize,
    pub unknown_account_count: usize,
    /// The first bad reads (the counts are exact).
    pub bad_reads: Vec<BadRead>,
}

fn balances(position: usize, v: &Value) -> Result<Vec<(&Value, i64)>, CheckError> {
    let Value::Map(entries) = v else {
        return Err(CheckError::bad_op(
            position,
            format!("a bank read must return a map of account to balance, not {v}"),
        ));
    };
    entries
        .iter()
        .map(|(k, b)| {
            b.as_int().map(|b| (k, b)).ok_or_else(|| {
                CheckError::bad_op(
                    position,
                    format!("balance of account {k} must be an integer, not {b}"),
                )
            })
        })
        .collect()
}

pub fn check_bank(h: &History, opts: &CheckOptions) -> Result<BankResult, CheckError> {
    let negative_ok = param::<bool>(opts, "negative-balances")?.unwrap_or(false);
    let mut total = param::<i64>(opts, "total")?;
    let total_inferred = total.is_none();
    let mut accounts: Option<Vec<Value>> = opts.params.get("accounts").map(|text| {
        text.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(value_of_text)
            .collect()
    });
    let mut known: FxSet<Value> = accounts.iter().flatten().cloned().collect();
    let mut r = BankResult {
        verdict: Verdict::Valid,
        total,
        total_inferred,
        accounts: Vec::new(),
        read_count: 0,
        transfer_count: 0,
        bad_read_count: 0,
        wrong_total_count: 0,
        negative_count: 0,
        unknown_account_count: 0,
        bad_reads: Vec::new(),
    };
    for (i, op) in h.ops.iter().enumerate() {
        if !op.is_client() || !op.is_ok() {
            continue;
        }
        if op.f == "transfer" {
            let inv = h.invocation(i).unwrap_or(i);
            let v = &h.ops[inv].value;
            for field in ["from", "to", "amount"] {
                if v.map_get(&Value::from(field)).is_none() {
                    return Err(CheckError::bad_op(
                        inv,
                        format!("a transfer must be a map with from, to and amount, not {v}"),
                    ));
                }
            }
            r.transfer_count += 1;
            continue;
        }
        if op.f != "read" {
            continue;
        }
        let bal = balances(i, &op.value)?;
        r.read_count += 1;
        let sum: i64 = bal.iter().fold(0i64, |t, &(_, b)| t.saturating_add(b));
        let expected = *total.get_or_insert(sum);
        if accounts.is_none() {
            let mut a: Vec<Value> = bal.iter().map(|&(k, _)| k.clone()).collect();
            a.sort();
            known = a.iter().cloned().collect();
            accounts = Some(a);
        }
        let mut problems = Vec::new();
        if sum != expected {
            r.wrong_total_count += 1;
            problems.push(BankProblem::WrongTotal {
                total: sum,
                expected,
                off_by: sum.saturating_sub(expected),
            });
        }
        for &(account, balance) in &bal {
            if !known.contains(account) {
                r.unknown_account_count += 1;
                problems.push(BankProblem::UnknownAccount {
                    account: account.clone(),
                });
            }
            if balance < 0 && !negative_ok {
                r.negative_count += 1;
                problems.push(BankProblem::NegativeBalance {
                    account: account.clone(),
                    balance,
                });
            }
        }
        // A read names every account; the ones it left out are reported.
        let present: FxSet<&Value> = bal.iter().map(|&(k, _)| k).collect();
        for a in accounts.iter().flatten() {
            if !present.contains(a) {
                problems.push(BankProblem::MissingAccount { account: a.clone() });
            }
        }
        if !problems.is_empty() {
            r.bad_read_count += 1;
            if r.bad_reads.len() < DETAIL_LIMIT {
                r.bad_reads.push(BadRead { read: i, problems });
            }
        }
    }
    r.total = total;
    r.accounts = accounts.unwrap_or_default();
    r.verdict = if r.bad_read_count > 0 {
        Verdict::Invalid
    } else if r.read_count == 0 {
        Verdict::Unknown
    } else {
        Verdict::Valid
    };
    Ok(r)
}

impl CheckOutcome for BankResult {
    fn verdict(&self) -> Verdict {
        self.verdict
    }
    fn anomaly_types(&self) -> Vec<String> {
        let mut a = Vec::new();
        if self.wrong_total_count > 0 {
            a.push("wrong-total".to_string());
        }
        if self.negative_count > 0 {
            a.push("negative-value".to_string());
        }
        if self.unknown_account_count > 0 {
            a.push("unexpected-key".to_string());
        }
        if self.bad_reads.iter().any(|b| {
            b.problems
                .iter()
                .any(|p| matches!(p, BankProblem::MissingAccount { .. }))
        }) {
            a.push("missing-key".to_string());
        }
        a
    }
    fn explain(&self) -> String {
        let mut s = format!(
            "{} reads, {} transfers, total {}{}, {} bad reads\n",
            self.read_count,
            self.transfer_count,
            self.total.map_or("unknown".to_string(), |t| t.to_string()),
            if self.total_inferred {
                " (from the first read)"
            } else {
                ""
            },
            self.bad_read_count
        );
        if self.read_count == 0 {
            s += "no ok read, cannot judge\n";
        }
        for b in &self.bad_reads {
            let parts: Vec<String> = b
                .problems
                .iter()
                .map(|p| match p {
                    BankProblem::WrongTotal {
                        total,
                        expected,
                        off_by,
                    } => {
                        format!("total {total}, expected {expected} (off by {off_by})")
                    }
                    BankProblem::NegativeBalance { account, balance } => {
                        format!("account {account} has negative balance {balance}")
                    }
                    BankProblem::UnknownAccount { account } => format!("unknown account {account}"),
                    BankProblem::MissingAccount { account } => format!("account {account} missing"),
                })
                .collect();
            s += &format!("read at op {}: {}\n", b.read, parts.join("; "));
        }
        s
    }
}
