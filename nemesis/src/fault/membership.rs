//! Membership changes through the database's own admin interface: a node is
//! removed from the configuration while the workload runs, and added back
//! (after catching up) when the fault stops. Completions record the
//! configuration before and after each change.

use async_trait::async_trait;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use splitbrain_generators::OpSpec;
use splitbrain_history::Value;

use super::{kw, nodes_value, Cx, FaultPackage, NemesisOptions};
use crate::shape::{Node, TargetSpec};
use crate::target::{Ability, Members};

pub struct Membership;

/// Fewest members a removal may leave behind.
const MIN_MEMBERS: usize = 2;

fn members_value(m: &Members) -> Value {
    Value::map(vec![
        (kw("members"), nodes_value(&m.members)),
        (kw("joining"), nodes_value(&m.joining)),
    ])
}

#[async_trait]
impl FaultPackage for Membership {
    fn name(&self) -> &'static str {
        "membership"
    }
    fn needs(&self) -> &'static [Ability] {
        &[Ability::Membership]
    }
    fn start_fs(&self) -> &'static [&'static str] {
        &["remove-member"]
    }
    fn stop_op(&self) -> OpSpec {
        OpSpec::new("add-members", kw("all"))
    }
    fn draw(&self, o: &NemesisOptions, rng: &mut ChaCha8Rng) -> OpSpec {
        // One node per change: `one` or, where the run aims at leaders, the leader.
        let aims: Vec<TargetSpec> = o
            .targets
            .iter()
            .copied()
            .filter(|t| matches!(t, TargetSpec::One | TargetSpec::Primaries))
            .collect();
        let aim = if aims.is_empty() {
            TargetSpec::One
        } else {
            aims[rng.gen_range(0..aims.len())]
        };
        OpSpec::new("remove-member", kw(aim.name()))
    }
    async fn start(&self, _f: &str, value: &Value, cx: &mut Cx<'_>) -> Result<Value, String> {
        let before = cx.target.members().await?;
        if before.members.len() <= MIN_MEMBERS {
            return Err(format!(
                "the configuration has {} members; a removal would leave fewer than {MIN_MEMBERS}",
                before.members.len()
            ));
        }
        let aim = value.as_str().unwrap_or("one");
        let node: Node = if aim == TargetSpec::Primaries.name() {
            let leaders = cx.primaries().await;
            leaders
                .into_iter()
                .find(|l| before.members.contains(l))
                .ok_or("no leader among the members to remove")?
        } else {
            before.members[cx.rng.gen_range(0..before.members.len())].clone()
        };
        cx.affected.insert(node.clone());
        let after = cx.target.remove_member(&node).await?;
        if after.members.contains(&node) || after.joining.contains(&node) {
            return Err(format!(
                "{node} is still in the configuration after its removal"
            ));
        }
        Ok(Value::map(vec![
            (kw("node"), Value::Str(node.as_str().into())),
            (kw("before"), members_value(&before)),
            (kw("after"), members_value(&after)),
        ]))
    }
    async fn stop(&self, cx: &mut Cx<'_>) -> Result<Value, String> {
        let before = cx.target.members().await?;
        let nodes: Vec<Node> = cx.affected.iter().cloned().collect();
        let mut after = before.clone();
        for node in &nodes {
            after = cx.target.add_member(node).await?;
            if !after.members.contains(node) {
                return Err(format!("{node} is not a member after it was added back"));
            }
            cx.affected.remove(node);
        }
        Ok(Value::map(vec![
            (kw("nodes"), nodes_value(&nodes)),
            (kw("before"), members_value(&before)),
            (kw("after"), members_value(&after)),
        ]))
    }
}
