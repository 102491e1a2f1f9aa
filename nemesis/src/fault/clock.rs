//! Clock skew: one node's clock bumped, or strobed to either side of true
//! time; the completion records the delta that was applied, with its sign.

use async_trait::async_trait;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use splitbrain_generators::OpSpec;
use splitbrain_history::Value;

use super::{kw, nodes_value, Cx, FaultPackage, NemesisOptions};
use crate::target::Ability;

pub struct Clock;

#[async_trait]
impl FaultPackage for Clock {
    fn name(&self) -> &'static str {
        "clock"
    }
    fn needs(&self) -> &'static [Ability] {
        &[Ability::Clock]
    }
    fn start_fs(&self) -> &'static [&'static str] {
        &["bump-clock", "strobe-clock"]
    }
    fn stop_op(&self) -> OpSpec {
        OpSpec::new("reset-clock", Value::Nil)
    }
    fn draw(&self, o: &NemesisOptions, rng: &mut ChaCha8Rng) -> OpSpec {
        let max = o.max_clock_skew_ms.max(1);
        let delta = rng.gen_range(-max..=max);
        let f = if rng.gen_bool(0.5) {
            "bump-clock"
        } else {
            "strobe-clock"
        };
        OpSpec::new(f, Value::Int(delta))
    }
    async fn start(&self, f: &str, value: &Value, cx: &mut Cx<'_>) -> Result<Value, String> {
        let delta = value.as_int().ok_or("a clock op needs a delta in ms")?;
        let nodes = cx.nodes()?;
        let node = nodes[cx.rng.gen_range(0..nodes.len())].clone();
        // A strobe lands on one side of true time or the other; the record says which.
        let delta = if f == "strobe-clock" && cx.rng.gen_bool(0.5) {
            -delta
        } else {
            delta
        };
        cx.affected.insert(node.clone());
        cx.target.set_clock_offset(&node, delta).await?;
        Ok(Value::map(vec![
            (kw("node"), Value::Str(node.as_str().into())),
            (kw("delta-ms"), Value::Int(delta)),
        ]))
    }
    async fn stop(&self, cx: &mut Cx<'_>) -> Result<Value, String> {
        let nodes: Vec<String> = cx.affected.iter().cloned().collect();
        for n in &nodes {
            cx.target.set_clock_offset(n, 0).await?;
            cx.affected.remove(n);
        }
        Ok(Value::map(vec![(kw("nodes"), nodes_value(&nodes))]))
    }
}
