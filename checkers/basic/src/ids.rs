//! Unique ids: `generate` ops whose ok completion carries the id. No id may be
//! handed out twice.

use serde::Serialize;
use splitbrain_history::{CheckError, CheckOptions, CheckOutcome, History, Value, Verdict};

use crate::common::FxMap;
use crate::DETAIL_LIMIT;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DuplicateId {
    pub id: Value,
    /// Completion positions of every generate that returned it.
    pub ops: Vec<usize>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UniqueIdsResult {
    pub verdict: Verdict,
    pub attempted_count: usize,
    pub acknowledged_count: usize,
    pub duplicated_count: usize,
    /// The smallest and largest id returned.
    pub range: Option<(Value, Value)>,
    /// The first duplicated ids (the count is exact), in order of first return.
    pub duplicates: Vec<DuplicateId>,
}

pub fn check_unique_ids(h: &History, _opts: &CheckOptions) -> Result<UniqueIdsResult, CheckError> {
    let mut seen: FxMap<&Value, (usize, u32)> = FxMap::default();
    let mut dups: Vec<DuplicateId> = Vec::new();
    let mut dup_slot: FxMap<&Value, usize> = FxMap::default();
    let (mut attempted, mut acked) = (0, 0);
    let mut range: Option<(&Value, &Value)> = None;
    for (i, op) in h.ops.iter().enumerate() {
        if !op.is_client() || op.f != "generate" {
            continue;
        }
        if op.is_invoke() {
            attempted += 1;
            continue;
        }
        if !op.is_ok() {
            continue;
        }
        if op.value.is_nil() {
            return Err(CheckError::bad_op(
                i,
                "an ok generate must return the id it generated",
            ));
        }
        acked += 1;
        let id = &op.value;
        range = Some(match range {
            None => (id, id),
            Some((lo, hi)) => (lo.min(id), hi.max(id)),
        });
        match seen.get_mut(id) {
            None => {
                seen.insert(id, (i, 1));
            }
            Some((first, n)) => {
                *n += 1;
                match dup_slot.get(id) {
                    Some(&d) => dups[d].ops.push(i),
                    None => {
                        dup_slot.insert(id, dups.len());
                        dups.push(DuplicateId {
                            id: id.clone(),
                            ops: vec![*first, i],
                        });
                    }
                }
            }
        }
    }
    let duplicated_count = dups.len();
    dups.truncate(DETAIL_LIMIT);
    Ok(UniqueIdsResult {
        verdict: if duplicated_count > 0 {
            Verdict::Invalid
        } else {
            Verdict::Valid
        },
        attempted_count: attempted,
        acknowledged_count: acked,
        duplicated_count,
        range: range.map(|(lo, hi)| (lo.clone(), hi.clone())),
        duplicates: dups,
    })
}

impl CheckOutcome for UniqueIdsResult {
    fn verdict(&self) -> Verdict {
        self.verdict
    }
    fn anomaly_types(&self) -> Vec<String> {
        if self.duplicated_count > 0 {
            vec!["duplicated".to_string()]
        } else {
            Vec::new()
        }
    }
    fn explain(&self) -> String {
        let mut s = format!(
            "{} attempted, {} acknowledged, {} ids duplicated",
            self.attempted_count, self.acknowledged_count, self.duplicated_count
        );
        if let Some((lo, hi)) = &self.range {
            s += &format!(", range {lo}..{hi}");
        }
        s.push('\n');
        for d in &self.duplicates {
            let ops: Vec<String> = d.ops.iter().map(|p| format!("op {p}")).collect();
            s += &format!(
                "id {} returned {} times: {}\n",
                d.id,
                d.ops.len(),
                ops.join(", ")
            );
        }
        s
    }
}
