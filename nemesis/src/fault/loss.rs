//! Packet loss between nodes; stopping it leaves any partition in place.

use async_trait::async_trait;
use rand_chacha::ChaCha8Rng;
use splitbrain_generators::OpSpec;
use splitbrain_history::Value;

use super::{kw, Cx, FaultPackage, NemesisOptions};
use crate::target::Ability;

pub struct Loss;

#[async_trait]
impl FaultPackage for Loss {
    fn name(&self) -> &'static str {
        "loss"
    }
    fn needs(&self) -> &'static [Ability] {
        &[Ability::Loss]
    }
    fn start_fs(&self) -> &'static [&'static str] {
        &["start-loss"]
    }
    fn stop_op(&self) -> OpSpec {
        OpSpec::new("stop-loss", Value::Nil)
    }
    fn draw(&self, o: &NemesisOptions, _rng: &mut ChaCha8Rng) -> OpSpec {
        OpSpec::new("start-loss", Value::Float(o.loss_fraction))
    }
    async fn start(&self, _f: &str, value: &Value, cx: &mut Cx<'_>) -> Result<Value, String> {
        let p = match value {
            Value::Float(p) => *p,
            Value::Int(i) => *i as f64,
            _ => 0.2,
        };
        cx.target.loss(p).await?;
        Ok(Value::map(vec![(kw("fraction"), Value::Float(p))]))
    }
    async fn stop(&self, cx: &mut Cx<'_>) -> Result<Value, String> {
        cx.target.stop_loss().await?;
        Ok(Value::Nil)
    }
}
