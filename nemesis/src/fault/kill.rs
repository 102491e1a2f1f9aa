//! Kill nodes (SIGKILL, a container kill) and start them again.

use async_trait::async_trait;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use splitbrain_generators::OpSpec;
use splitbrain_history::Value;

use super::{kw, Cx, FaultPackage, NemesisOptions, NodeSignal};
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
        NodeSignal::Kill.start(value, cx).await
    }
    async fn stop(&self, cx: &mut Cx<'_>) -> Result<Value, String> {
        NodeSignal::Kill.stop(cx).await
    }
}
