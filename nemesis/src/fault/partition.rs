//! Network partitions of every shape the run allows; healed all at once.

use async_trait::async_trait;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use splitbrain_generators::OpSpec;
use splitbrain_history::Value;

use super::{kw, Cx, FaultPackage, NemesisOptions};
use crate::shape::{grudge, Grudge, PartitionShape};
use crate::target::Ability;

pub struct Partition;

fn grudge_value(g: &Grudge) -> Value {
    Value::Map(
        g.iter()
            .map(|(k, v)| {
                (
                    Value::Str(k.as_str().into()),
                    Value::set(
                        v.iter()
                            .map(|n| Value::Str(n.as_str().into()))
                            .collect::<Vec<_>>(),
                    ),
                )
            })
            .collect(),
    )
}

#[async_trait]
impl FaultPackage for Partition {
    fn name(&self) -> &'static str {
        "partition"
    }
    fn needs(&self) -> &'static [Ability] {
        &[Ability::Partition]
    }
    fn start_fs(&self) -> &'static [&'static str] {
        &["start-partition"]
    }
    fn stop_op(&self) -> OpSpec {
        OpSpec::new("stop-partition", Value::Nil)
    }
    fn draw(&self, o: &NemesisOptions, rng: &mut ChaCha8Rng) -> OpSpec {
        let shape = o.partitions[rng.gen_range(0..o.partitions.len())];
        OpSpec::new("start-partition", kw(shape.name()))
    }
    async fn start(&self, _f: &str, value: &Value, cx: &mut Cx<'_>) -> Result<Value, String> {
        let shape: PartitionShape = value.as_str().unwrap_or("majority").parse()?;
        let primaries = if shape == PartitionShape::Primaries {
            cx.primaries().await
        } else {
            Vec::new()
        };
        let nodes = cx.nodes()?;
        let g = grudge(shape, &nodes, &primaries, cx.rng).map_err(|e| e.to_string())?;
        cx.target.partition(&g).await?;
        let cut: Vec<&String> = g
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, _)| k)
            .collect();
        cx.affected.extend(cut.into_iter().cloned());
        Ok(Value::map(vec![
            (kw("shape"), kw(shape.name())),
            (kw("grudge"), grudge_value(&g)),
        ]))
    }
    async fn stop(&self, cx: &mut Cx<'_>) -> Result<Value, String> {
        cx.target.heal().await?;
        let healed: Vec<String> = std::mem::take(cx.affected).into_iter().collect();
        Ok(Value::map(vec![(kw("nodes"), super::nodes_value(&healed))]))
    }
}
