//! `frontend demo`: a complete cluster in one process. Being written.

use clap::Args;

#[derive(Args, Clone, Debug)]
pub struct DemoFlags {}

pub async fn run(_flags: DemoFlags) -> anyhow::Result<()> {
    anyhow::bail!("the demo is not ready yet")
}
