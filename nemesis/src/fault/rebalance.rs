//! Rebalancing a sharded database while the workload runs: a partition
//! moved to another group, split in two, or merged into its neighbour,
//! through the database's own interface. Completions name what moved
//! where, at which map epoch, how many keys were copied and how long the
//! partition was served by nobody; each change is checked in the map after.

use async_trait::async_trait;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use splitbrain_generators::OpSpec;
use splitbrain_history::Value;

use super::{kw, Cx, FaultPackage, NemesisOptions};
use crate::target::{Ability, Change, Placement, Rebalanced};

pub struct RebalancePackage;

const CHANGES: [&str; 3] = ["move", "split", "merge"];

fn int(i: impl TryInto<i64>) -> Value {
    Value::Int(i.try_into().unwrap_or(i64::MAX))
}

fn done_value(change: &str, partition: u32, from: u32, to: u32, steps: &[Rebalanced]) -> Value {
    let last = steps.last().cloned().unwrap_or_default();
    Value::map(vec![
        (kw("change"), kw(change)),
        (kw("partition"), int(partition)),
        (kw("from-group"), int(from)),
        (kw("to-group"), int(to)),
        (
            kw("partitions"),
            Value::List(last.partitions.iter().map(|p| int(*p)).collect()),
        ),
        (kw("map-epoch"), int(last.map_epoch)),
        (
            kw("keys-copied"),
            int(steps.iter().map(|s| s.keys_copied).sum::<u64>()),
        ),
        (
            kw("frozen-ms"),
            int(steps.iter().map(|s| s.frozen_ms).sum::<u64>()),
        ),
        (
            kw("summary"),
            Value::Str(
                steps
                    .iter()
                    .map(|s| s.summary.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
                    .into(),
            ),
        ),
    ])
}

/// A move of a random partition to a random other group.
fn pick_move(p: &Placement, rng: &mut ChaCha8Rng) -> Result<Change, String> {
    if p.groups < 2 || p.partitions.is_empty() {
        return Err("a move needs two groups and a partition".into());
    }
    let part = &p.partitions[rng.gen_range(0..p.partitions.len())];
    let mut to = rng.gen_range(0..p.groups - 1);
    if to >= part.group {
        to += 1;
    }
    Ok(Change::Move {
        partition: part.id,
        to,
    })
}

async fn carry_out(
    cx: &mut Cx<'_>,
    change: Change,
    before: &Placement,
) -> Result<Rebalanced, String> {
    let done = cx.target.rebalance(change).await?;
    let after = cx.target.placement().await?;
    if after.epoch <= before.epoch {
        return Err(format!(
            "the map is still at epoch {} after {change:?}",
            after.epoch
        ));
    }
    match change {
        Change::Move { partition, to } => {
            let now = after.partitions.iter().find(|x| x.id == partition);
            if now.map(|x| x.group) != Some(to) {
                return Err(format!(
                    "partition {partition} is not on group {to} after its move"
                ));
            }
        }
        Change::Split { .. } => {
            if after.partitions.len() != before.partitions.len() + 1 {
                return Err("a split left the number of partitions as it was".into());
            }
        }
        Change::Merge { partition } => {
            if after.partitions.iter().any(|x| x.id == partition) {
                return Err(format!(
                    "partition {partition} is still there after its merge"
                ));
            }
        }
    }
    Ok(done)
}

#[async_trait]
impl FaultPackage for RebalancePackage {
    fn name(&self) -> &'static str {
        "rebalance"
    }
    fn needs(&self) -> &'static [Ability] {
        &[Ability::Rebalance]
    }
    fn start_fs(&self) -> &'static [&'static str] {
        &["rebalance"]
    }
    fn stop_op(&self) -> OpSpec {
        OpSpec::new("settle-partitions", kw("all"))
    }
    fn draw(&self, _o: &NemesisOptions, rng: &mut ChaCha8Rng) -> OpSpec {
        OpSpec::new("rebalance", kw(CHANGES[rng.gen_range(0..CHANGES.len())]))
    }
    async fn start(&self, _f: &str, value: &Value, cx: &mut Cx<'_>) -> Result<Value, String> {
        let before = cx.target.placement().await?;
        let wanted = value.as_str().unwrap_or("move");
        let wanted = if before.splits { wanted } else { "move" };
        match wanted {
            "split" => {
                // A partition with too few keys cannot be cut; try a few, then move one.
                let mut ids: Vec<u32> = before.partitions.iter().map(|p| p.id).collect();
                for _ in 0..3.min(ids.len()) {
                    let id = ids.remove(cx.rng.gen_range(0..ids.len()));
                    let group = before
                        .partitions
                        .iter()
                        .find(|p| p.id == id)
                        .map_or(0, |p| p.group);
                    match carry_out(cx, Change::Split { partition: id }, &before).await {
                        Ok(done) => return Ok(done_value("split", id, group, group, &[done])),
                        Err(e) if e.contains("too few keys") || e.contains("too small") => continue,
                        Err(e) => return Err(e),
                    }
                }
            }
            "merge" => {
                let candidates: Vec<(u32, u32, u32, u32)> = before
                    .partitions
                    .iter()
                    .filter_map(|p| {
                        let into = p.merges_into?;
                        let g = before.partitions.iter().find(|q| q.id == into)?.group;
                        Some((p.id, p.group, into, g))
                    })
                    .collect();
                if !candidates.is_empty() {
                    let (id, group, _into, into_group) =
                        candidates[cx.rng.gen_range(0..candidates.len())];
                    let mut steps = Vec::new();
                    let mut now = before.clone();
                    if group != into_group {
                        // Neighbours on different groups: bring this one over first.
                        steps.push(
                            carry_out(
                                cx,
                                Change::Move {
                                    partition: id,
                                    to: into_group,
                                },
                                &now,
                            )
                            .await?,
                        );
                        now = cx.target.placement().await?;
                    }
                    steps.push(carry_out(cx, Change::Merge { partition: id }, &now).await?);
                    return Ok(done_value("merge", id, group, into_group, &steps));
                }
            }
            _ => {}
        }
        let change = pick_move(&before, cx.rng)?;
        let Change::Move { partition, to } = change else {
            return Err("not a move".into());
        };
        let from = before
            .partitions
            .iter()
            .find(|p| p.id == partition)
            .map_or(0, |p| p.group);
        let done = carry_out(cx, change, &before).await?;
        Ok(done_value("move", partition, from, to, &[done]))
    }
    async fn stop(&self, cx: &mut Cx<'_>) -> Result<Value, String> {
        // Each change finishes before its completion; what is left is to see the map answer.
        let p = cx.target.placement().await?;
        Ok(Value::map(vec![
            (kw("map-epoch"), int(p.epoch)),
            (kw("partitions"), int(p.partitions.len() as u64)),
        ]))
    }
}
