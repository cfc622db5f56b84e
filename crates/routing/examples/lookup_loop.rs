//! Lookup latency measured in on-CPU time (from `/proc/thread-self/schedstat`),
//! which stays meaningful on a loaded machine where wall-clock benchmarks
//! (criterion) include time spent preempted. Same tables and requests as
//! `benches/routing.rs`.
//!
//! `cargo run --profile bench -p routing --example lookup_loop [-- iterations]`

use std::hint::black_box;
use std::time::Instant;

#[path = "../benches/fleet/mod.rs"]
mod fleet;

use fleet::{cases, request_headers, table};

/// Nanoseconds this thread has spent on a CPU.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let iterations: usize = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5_000_000);
    // Optional filters, for profiling one case: `-- 50000000 100 exact_hit`.
    let only_size: Option<usize> = args.get(2).and_then(|s| s.parse().ok());
    let only_case = args.get(3).cloned();
    let headers = request_headers();
    println!("| routes | case | on-CPU ns/lookup (median of 5) | wall ns/lookup (median of 5) |");
    println!("|---:|---|---:|---:|");
    for n in [100usize, 10_000, 100_000] {
        if only_size.is_some_and(|s| s != n) {
            continue;
        }
        let table = table(n);
        let cases = cases(n);
        for (case, host, path) in &cases {
            if only_case.as_deref().is_some_and(|c| c != *case) {
                continue;
            }
            let mut cpu = Vec::new();
            let mut wall = Vec::new();
            for _ in 0..5 {
                let (c0, w0) = (cpu_ns(), Instant::now());
                let mut hits = 0usize;
                for _ in 0..iterations {
                    hits += usize::from(
                        black_box(&table)
                            .lookup(black_box(host), black_box(path), &headers)
                            .is_some(),
                    );
                }
                assert_eq!(hits > 0, *case != "miss");
                cpu.push((cpu_ns() - c0) as f64 / iterations as f64);
                wall.push(w0.elapsed().as_nanos() as f64 / iterations as f64);
            }
            cpu.sort_by(f64::total_cmp);
            wall.sort_by(f64::total_cmp);
            println!("| {n} | {case} | {:.1} | {:.1} |", cpu[2], wall[2]);
        }
    }
}
