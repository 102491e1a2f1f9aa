//! A compact notation for transactional histories, for tests and examples.
//!
//! A history is a list of rounds run one after another. Txns in one round,
//! separated by `|`, are concurrent: all are invoked, then all complete in
//! the order written. A txn is an optional `pN` (process N; by default each
//! txn gets a fresh process), an optional `fail` or `info`, and micro-ops:
//!
//! - `a1:2` append 2 to key 1
//! - `r1:[1 2]`, `r1:nil`, `r1:3` read key 1 (a list, nothing, or a register value)
//! - `w1:3` write 3 to key 1
//!
//! `["a1:1", "r1:[1] | r1:nil a1:2"]` is two rounds: a lone append, then two
//! concurrent txns.

use splitbrain_history::{History, Op, OpType, Process, Value};

fn kw(s: &str) -> Value {
    Value::Keyword(s.into())
}

fn parse_value(text: &str) -> Result<Value, String> {
    if text == "nil" {
        return Ok(Value::Nil);
    }
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        let items: Result<Vec<Value>, String> = inner.split_whitespace().map(parse_value).collect();
        return Ok(Value::list(items?));
    }
    text.parse::<i64>()
        .map(Value::Int)
        .map_err(|_| format!("bad value {text:?}"))
}

/// Split a txn on whitespace, keeping `[...]` together.
fn tokens(txn: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0;
    for c in txn.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ => {}
        }
        if c.is_whitespace() && depth == 0 {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

struct Parsed {
    process: Option<u64>,
    status: OpType,
    invoke: Value,
    complete: Value,
}

fn parse_txn(txn: &str) -> Result<Parsed, String> {
    let mut p = Parsed {
        process: None,
        status: OpType::Ok,
        invoke: Value::Nil,
        complete: Value::Nil,
    };
    let mut inv = Vec::new();
    let mut done = Vec::new();
    for tok in tokens(txn) {
        if tok == "fail" {
            p.status = OpType::Fail;
            continue;
        }
        if tok == "info" {
            p.status = OpType::Info;
            continue;
        }
        if let Some(n) = tok.strip_prefix('p') {
            p.process = Some(n.parse().map_err(|_| format!("bad process {tok:?}"))?);
            continue;
        }
        let (head, value) = tok
            .split_once(':')
            .ok_or_else(|| format!("micro-op {tok:?} needs key:value"))?;
        let (f, key) = head.split_at(1);
        let key = Value::Int(key.parse().map_err(|_| format!("bad key in {tok:?}"))?);
        let value = parse_value(value)?;
        let f = match f {
            "a" => "append",
            "r" => "r",
            "w" => "w",
            _ => return Err(format!("unknown micro-op {tok:?}")),
        };
        let invoked = if f == "r" { Value::Nil } else { value.clone() };
        inv.push(Value::list(vec![kw(f), key.clone(), invoked]));
        done.push(Value::list(vec![kw(f), key, value]));
    }
    p.invoke = Value::list(inv);
    p.complete = if p.status == OpType::Ok {
        Value::list(done)
    } else {
        p.invoke.clone()
    };
    Ok(p)
}

/// The ops of a shorthand history.
pub fn ops(rounds: &[&str]) -> Result<Vec<Op>, String> {
    let mut out = Vec::new();
    let mut next_process = 0u64;
    for round in rounds {
        let txns: Vec<Parsed> = round.split('|').map(parse_txn).collect::<Result<_, _>>()?;
        let procs: Vec<u64> = txns
            .iter()
            .map(|t| {
                t.process.unwrap_or_else(|| {
                    next_process += 1;
                    1000 + next_process
                })
            })
            .collect();
        for (t, &p) in txns.iter().zip(&procs) {
            out.push(Op::new(
                Process::Client(p),
                OpType::Invoke,
                "txn",
                t.invoke.clone(),
            ));
        }
        for (t, &p) in txns.iter().zip(&procs) {
            out.push(Op::new(
                Process::Client(p),
                t.status,
                "txn",
                t.complete.clone(),
            ));
        }
    }
    Ok(out)
}

/// A validated history from shorthand; panics on bad notation (it is for tests).
pub fn history(rounds: &[&str]) -> History {
    let ops = ops(rounds).unwrap_or_else(|e| panic!("bad shorthand: {e}"));
    History::from_ops(ops).unwrap_or_else(|e| panic!("bad shorthand history: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rounds_and_txns() {
        let ops = ops(&["a1:1 r2:[1 2]", "p3 w1:5 | fail a1:2"]).unwrap();
        assert_eq!(ops.len(), 6);
        assert_eq!(ops[0].value.to_edn(), "[[:append 1 1] [:r 2 nil]]");
        assert_eq!(ops[1].value.to_edn(), "[[:append 1 1] [:r 2 [1 2]]]");
        assert_eq!(ops[2].process, Process::Client(3));
        assert!(ops[3].is_invoke());
        assert_eq!(ops[5].kind, OpType::Fail);
        assert!(super::ops(&["x1:1"]).is_err());
    }
}
