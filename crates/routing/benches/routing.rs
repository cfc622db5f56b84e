//! Routing benchmarks: lookup latency by table size and case, the cost of one
//! incremental update on a large table, and heap bytes per route.
//!
//! `cargo bench -p routing`. Tables mix 90% exact hosts (paths `/`, `/api`,
//! `/api/vN`), 9% wildcard hosts and 1% catch-all routes on their own path.

use std::alloc::System;
use std::hint::black_box;
use std::time::Duration;

use api::HTTPScaledObject;
use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use routing::{Route, RoutingTable, SourceKind, compile_http_scaled_object};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

mod fleet;

use fleet::{cases, object, request_headers, route, table};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SIZES: &[usize] = &[100, 10_000, 100_000];

fn lookups(c: &mut Criterion) {
    let headers = request_headers();
    let mut group = c.benchmark_group("lookup");
    for &n in SIZES {
        let t = table(n);
        for (case, host, path) in cases(n) {
            let hit = t.lookup(&host, &path, &headers).is_some();
            assert_eq!(hit, case != "miss", "{case} at {n}");
            group.bench_with_input(BenchmarkId::new(case, n), &n, |b, _| {
                b.iter(|| {
                    black_box(t.lookup(black_box(&host), black_box(&path), &headers)).is_some()
                })
            });
        }
        // Exact hits spread over 4096 hosts: the index no longer sits in L1.
        let hosts: Vec<String> = (10..n)
            .filter(|i| i % 100 >= 10 && i % 3 == 1)
            .step_by(((n / 3) / 4096).max(1))
            .take(4096)
            .map(|i| format!("app-{i}.example.com"))
            .collect();
        let mut k = 0;
        group.bench_with_input(BenchmarkId::new("exact_hit_rotating", n), &n, |b, _| {
            b.iter(|| {
                k = (k + 1) % hosts.len();
                black_box(t.lookup(&hosts[k], "/api/users/42", &headers)).is_some()
            })
        });
    }
    group.finish();
}

fn updates(c: &mut Criterion) {
    let n = 100_000;
    let t = table(n);
    let mut group = c.benchmark_group("update_100000");
    let mut i = 0;
    group.bench_function("clone_apply_changed_object", |b| {
        b.iter_batched(
            || {
                i = (i + 7919) % n;
                route(i, 2)
            },
            |r| {
                let mut next = t.clone();
                assert!(next.apply(r));
                next
            },
            BatchSize::SmallInput,
        )
    });
    let mut j = 0;
    group.bench_function("clone_remove_object", |b| {
        b.iter_batched(
            || {
                j = (j + 7919) % n;
                (format!("team-{}", j % 50), format!("app-{j}"))
            },
            |(ns, name)| {
                let mut next = t.clone();
                assert!(next.remove(SourceKind::HttpScaledObject, &ns, &name));
                next
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// Live heap bytes per route for 100,000 routes: compiled routes plus index.
fn memory(_c: &mut Criterion) {
    let n = 100_000;
    let objects: Vec<HTTPScaledObject> = (0..n).map(|i| object(i, 1)).collect();
    let region = Region::new(GLOBAL);
    let routes: Vec<Route> = objects
        .iter()
        .map(|o| compile_http_scaled_object(o).unwrap())
        .collect();
    let routes_only = live(&region);
    let t = RoutingTable::from_routes(routes);
    let total = live(&region);
    println!(
        "memory: {n} routes: {total} bytes live = {} bytes/route (compiled routes {} bytes/route, index {} bytes/route)",
        total / n as isize,
        routes_only / n as isize,
        (total - routes_only) / n as isize,
    );

    // The hot path allocates nothing.
    let headers = request_headers();
    let cases = cases(n);
    let region = Region::new(GLOBAL);
    for (_, host, path) in &cases {
        for _ in 0..1000 {
            black_box(t.lookup(host, path, &headers));
        }
    }
    println!(
        "memory: allocations during 4,000 lookups: {}",
        region.change().allocations
    );
    drop(t);
}

fn live(region: &Region<'_, System>) -> isize {
    let s = region.change();
    s.bytes_allocated as isize - s.bytes_deallocated as isize + s.bytes_reallocated
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = memory, lookups, updates
}
criterion_main!(benches);
