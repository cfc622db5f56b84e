//! `bench fleet` (being written).

/// Flags of `bench fleet`.
#[derive(Debug, clap::Args)]
pub struct FleetArgs {}

/// Runs the benchmark.
pub fn run(_args: FleetArgs) -> anyhow::Result<()> {
    anyhow::bail!("bench fleet is not written yet")
}
