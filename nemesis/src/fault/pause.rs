//! Pause nodes (SIGSTOP, a container pause) and let them go on.

use async_trait::async_trait;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use splitbrain_generators::OpSpec;
use splitbrain_history::Value;

use super::{kw, Cx, FaultPackage, NemesisOptions, NodeSignal};
use crate::target::Ability;

pub struct Pause;

#[async_trait]
impl FaultPackage for Pause {
    fn name(&self) -> &'static str {
        "pause"
    }
    fn needs(&self) -> &'static [Ability] {
        &[Ability::Pause]
    }
    fn start_fs(&self) -> &'static [&'static str] {
        &["pause"]
    }
    fn stop_op(&self) -> OpSpec {
        OpSpec::new("resume", kw("all"))
    }
    fn draw(&self, o: &NemesisOptions, rng: &mut ChaCha8Rng) -> OpSpec {
        let t = o.targets[rng.gen_range(0..o.targets.len())];
        OpSpec::new("pause", kw(t.name()))
    }
    async fn start(&self, _f: &str, value: &Value, cx: &mut Cx<'_>) -> Result<Value, String> {
        NodeSignal::Pause.start(value, cx).await
    }
    async fn stop(&self, cx: &mut Cx<'_>) -> Result<Value, String> {
        NodeSignal::Pause.stop(cx).await
    }
}
