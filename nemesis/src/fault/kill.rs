//! Kill nodes (SIGKILL, a container kill) and start them again.

use async_trait::async_trait;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use splitbrain_generators::OpSpec;
use splitbrain_history::Value;

use super::{kw, nodes_value, Cx, FaultPackage, NemesisOptions};
use crate::target::Ability;

pub struct Kill;

#[async_trait]
impl FaultPackage for Kill {
    fn name(&self) -> &'static str {
        "kill"
    }
    fn needs(&self) -> &'static [Ability] {
        &[Ability::Kill]
    }
    fn start_fs(&self) -> &'static [&'static str] {
        &["kill"]
    }
    fn stop_op(&self) -> OpSpec {
        OpSpec::new("restart", kw("all"))
    }
    fn draw(&self, o: &NemesisOptions, rng: &mut ChaCha8Rng) -> OpSpec {
        let t = o.targets[rng.gen_range(0..o.targets.len())];
        OpSpec::new("kill", kw(t.name()))
    }
    async fn start(&self, _f: &str, value: &Value, cx: &mut Cx<'_>) -> Result<Value, String> {
        let nodes = cx.pick(value).await?;
        // Recorded before the kill: a kill that fails half way is still restarted.
        cx.affected.extend(nodes.iter().cloned());
        cx.target.kill(&nodes).await?;
        Ok(Value::map(vec![(kw("nodes"), nodes_value(&nodes))]))
    }
    async fn stop(&self, cx: &mut Cx<'_>) -> Result<Value, String> {
        let nodes: Vec<String> = cx.affected.iter().cloned().collect();
        cx.target.restart(&nodes).await?;
        cx.affected.clear();
        Ok(Value::map(vec![(kw("nodes"), nodes_value(&nodes))]))
    }
}
