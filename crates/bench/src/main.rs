//! `bench`: benchmarks that need whole processes and real sockets.
//!
//! - `bench proxy`: the interceptor and nginx side by side, same backend and load.
//! - `bench sync`: one replica's sync loop, write-to-applied latency and idle cost.
//! - `bench fleet`: N replicas' sync loops against an API server, directly or
//!   through caches; propagation latency and control-plane load.
//! - `bench chaos`: the fault campaign on the real processes (RELIABILITY.md).
//!
//! Each prints progress on the terminal and writes its results (table, JSON)
//! under `bench-results/`. Commands and numbers are recorded in BENCHMARKS.md.

mod chaos;
mod fleet;
mod proxy;
#[path = "scaler.rs"]
mod scaler_bench;
mod sync_bench;

use clap::{Parser, Subcommand};

/// The multi-threaded runtime a benchmark runs on: `threads` workers, or
/// tokio's default of one per core.
pub(crate) fn runtime(threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        b.worker_threads(n.max(1));
    }
    b.enable_all().build()
}

/// The fleet runs 10,000 replicas' sync loops in this process, and glibc
/// malloc was ~8-20 % of its profile: mimalloc's thread-local free lists
/// are cheaper for that many small, short-lived allocations.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "bench",
    about = "Benchmarks of the http-addon (see BENCHMARKS.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The interceptor against nginx: CPU per request, added latency, memory.
    Proxy(proxy::ProxyArgs),
    /// N simulated interceptor replicas' sync loops: propagation and API load.
    Fleet(fleet::FleetArgs),
    /// One replica's sync loop: write-to-applied latency and idle control-plane cost.
    Sync(sync_bench::SyncArgs),
    /// The scaler's poll round against N simulated interceptors: plain vs compact /queue.
    Scaler(scaler_bench::ScalerBenchArgs),
    /// The fault campaign: caches, interceptors and backends under load while faults are injected.
    Chaos(chaos::ChaosArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Proxy(args) => proxy::run(args),
        Command::Fleet(args) => fleet::run(args),
        Command::Sync(args) => sync_bench::run(args),
        Command::Scaler(args) => scaler_bench::run(args),
        Command::Chaos(args) => chaos::run(args),
    }
}
