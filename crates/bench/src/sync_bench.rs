//! `bench sync`: one interceptor replica's sync loop against a testkit API
//! server. Measures the time from a write to "applied" in the replica's
//! published table over many changes, and what one idle replica costs the
//! control plane with the resync at its interval.

use std::time::{Duration, Instant};
use testkit::StartTestApi;

use serde_json::{Value, json};

/// Flags of `bench sync`.
#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// Objects in the table.
    #[arg(long, default_value_t = 200)]
    objects: usize,
    /// Changes to time, one after another.
    #[arg(long, default_value_t = 1000)]
    changes: usize,
    /// Resync interval of the replica.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    resync: Duration,
    /// How long to measure the idle replica's control-plane cost.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    idle: Duration,
    /// Serve the table as kube-apiserver would: no digests on the watch,
    /// no 304 to a list (every resync gets a list).
    #[arg(long)]
    plain_api: bool,
    /// Resync with full lists instead of metadata-only ones (the sync loop's
    /// behaviour before metadata resyncs; compare side by side).
    #[arg(long)]
    full_resync: bool,
    /// Write the results as JSON here.
    #[arg(long, default_value = "bench-results/sync.json")]
    out: std::path::PathBuf,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    api::parse_go_duration(s)
}

fn httpso(i: usize, generation: usize) -> Value {
    json!({
        "apiVersion": "http.keda.sh/v1alpha1",
        "kind": "HTTPScaledObject",
        "metadata": {"name": format!("app{i}"), "namespace": "bench"},
        "spec": {
            "hosts": [format!("app{i}.example.com")],
            "scaleTargetRef": {"name": format!("app{i}"), "service": format!("svc-{generation}"), "port": 8080}
        }
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Runs the benchmark.
pub fn run(args: SyncArgs) -> anyhow::Result<()> {
    crate::runtime(None)?.block_on(run_async(args))
}

/// A request to the replica's thread: its CPU time so far.
type CpuProbe = tokio::sync::oneshot::Sender<Duration>;

/// The replica's sync loop on a thread of its own (a current-thread
/// runtime), so its CPU time is measured apart from the in-process API
/// server's.
fn start_replica(
    url: String,
    config: sync::SyncConfig,
) -> anyhow::Result<(sync::SyncHandle, tokio::sync::mpsc::Sender<CpuProbe>)> {
    let (handle_tx, handle_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("replica".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("replica runtime");
            rt.block_on(async move {
                // Built here, so the client's connection tasks run on this
                // thread too.
                let client =
                    kube::Client::try_from(kube::Config::new(url.parse().expect("testkit's URL")))
                        .expect("kube client");
                let mut registry = prometheus_client::registry::Registry::default();
                let handle = sync::start(sync::Source::Kubernetes(client), config, &mut registry);
                let (probe_tx, mut probe_rx) = tokio::sync::mpsc::channel::<CpuProbe>(1);
                let _ = handle_tx.send((handle, probe_tx));
                while let Some(reply) = probe_rx.recv().await {
                    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
                    let _ = reply.send(Duration::new(t.tv_sec as u64, t.tv_nsec as u32));
                }
            });
        })?;
    Ok(handle_rx.recv()?)
}

async fn replica_cpu(probe: &tokio::sync::mpsc::Sender<CpuProbe>) -> anyhow::Result<Duration> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    probe.send(tx).await?;
    Ok(rx.await?)
}

async fn run_async(args: SyncArgs) -> anyhow::Result<()> {
    let api = testkit::TestApi::builder()
        .digest_bookmarks(!args.plain_api)
        .conditional_lists(!args.plain_api)
        .start_test()
        .await?;
    for i in 0..args.objects {
        api.put_object(httpso(i, 0))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    let config = sync::SyncConfig {
        resync_interval: args.resync,
        endpoints: false,
        metadata_resync: !args.full_resync,
        ..sync::SyncConfig::default()
    };
    let (handle, probe) = start_replica(api.url(), config)?;
    tokio::time::timeout(Duration::from_secs(30), handle.table.wait_ready()).await?;
    eprintln!("replica ready with {} routes", handle.table.load().len());

    let mut latencies = Vec::with_capacity(args.changes);
    for c in 0..args.changes {
        let i = c % args.objects;
        let service = format!("svc-{}", c + 1);
        let started = Instant::now();
        api.put_object(httpso(i, c + 1))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let host = format!("app{i}.example.com");
        tokio::time::timeout(
            Duration::from_secs(10),
            handle.table.wait_for(|t| {
                t.lookup(&host, "/", &routing::NoHeaders)
                    .is_some_and(|m| *m.route.target.service == *service)
            }),
        )
        .await?;
        latencies.push(started.elapsed());
        if (c + 1) % 200 == 0 {
            eprintln!("{} changes applied", c + 1);
        }
    }
    latencies.sort();
    let p50 = percentile(&latencies, 0.5);
    let p99 = percentile(&latencies, 0.99);
    let max = *latencies.last().unwrap_or(&Duration::ZERO);

    // Idle cost: no writes, just the replica's watches and resyncs.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    api.reset_stats();
    let cpu0 = replica_cpu(&probe).await?;
    let process0 = crate::scaler_bench::cpu_now();
    tokio::time::sleep(args.idle).await;
    let cpu1 = replica_cpu(&probe).await?;
    let process1 = crate::scaler_bench::cpu_now();
    let stats = api.stats();
    let secs = args.idle.as_secs_f64();
    let replica_ms_per_s = (cpu1 - cpu0).as_secs_f64() * 1e3 / secs;
    let api_ms_per_s =
        ((process1 - process0).as_secs_f64() - (cpu1 - cpu0).as_secs_f64()) * 1e3 / secs;
    let requests: u64 = stats.requests.values().sum();
    let bytes: u64 = stats.response_bytes.values().sum();
    let lists: u64 = stats
        .requests
        .iter()
        .filter(|((v, _), _)| *v == testkit::Verb::List)
        .map(|(_, n)| n)
        .sum();

    println!(
        "sync propagation against testkit ({} objects, resync {:?})",
        args.objects, args.resync
    );
    println!("  changes: {}", args.changes);
    println!(
        "  write -> applied: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
    println!("idle replica cost over {:?}:", args.idle);
    println!(
        "  requests/s {:.2} (lists/s {:.2}), response bytes/s {:.1}, open watches {}",
        requests as f64 / secs,
        lists as f64 / secs,
        bytes as f64 / secs,
        stats.open_watches
    );
    let list_bytes: u64 = stats.total_response_bytes(testkit::Verb::List);
    let per_list = list_bytes.checked_div(lists).unwrap_or(0);
    println!(
        "  per list {} B; CPU ms/s: replica {:.2}, API server (in-process) {:.2}",
        per_list, replica_ms_per_s, api_ms_per_s
    );
    println!(
        "  repairs during the run: {}",
        handle.metrics.total_repairs()
    );

    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let result = json!({
        "objects": args.objects,
        "changes": args.changes,
        "resync_seconds": args.resync.as_secs_f64(),
        "propagation_ms": {"p50": p50.as_secs_f64() * 1e3, "p99": p99.as_secs_f64() * 1e3, "max": max.as_secs_f64() * 1e3},
        "idle": {
            "seconds": secs,
            "requests_per_second": requests as f64 / secs,
            "lists_per_second": lists as f64 / secs,
            "response_bytes_per_second": bytes as f64 / secs,
            "open_watches": stats.open_watches,
            "bytes_per_list": per_list,
            "replica_cpu_ms_per_second": replica_ms_per_s,
            "api_cpu_ms_per_second": api_ms_per_s,
        },
        "plain_api": args.plain_api,
        "full_resync": args.full_resync,
    });
    std::fs::write(&args.out, serde_json::to_string_pretty(&result)?)?;
    eprintln!("results written to {}", args.out.display());
    Ok(())
}
