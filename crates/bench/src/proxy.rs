//! `bench proxy` (being written).

/// Flags of `bench proxy`.
#[derive(Debug, clap::Args)]
pub struct ProxyArgs {}

/// Runs the benchmark.
pub fn run(_args: ProxyArgs) -> anyhow::Result<()> {
    anyhow::bail!("bench proxy is not written yet")
}
