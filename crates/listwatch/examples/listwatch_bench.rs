//! Benchmarks for listwatch over loopback, with raw HTTP clients:
//!
//! (a) watch fan-out: one write delivered to N watchers, time until the LAST
//!     of them has read it (median, p90, max over the writes);
//! (b) list latency for M objects (raw GET, full body read), cached and
//!     right after a write (so the list is re-encoded).
//!
//! Run: `cargo run --release -p listwatch --example listwatch_bench -- [watchers] [writes] [objects]`
//! (defaults 1000 100 10000). Server and clients share this process and its cores.

#[path = "../tests/support/serve.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use api::HTTPScaledObject;
use kube::Resource;
use listwatch::{HandlerConfig, ResourceDef, Store, StoreConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

async fn serve(store: Store) -> SocketAddr {
    support::serve(store, HandlerConfig::default()).await
}

/// An empty store of HTTPScaledObjects.
fn hso_store() -> Store {
    Store::new(
        ResourceDef::of::<HTTPScaledObject>().resource,
        StoreConfig::default(),
        1,
    )
}

/// The collection path of HTTPScaledObjects, in `namespace` or all.
fn hso_path(namespace: Option<&str>) -> String {
    ResourceDef::of::<HTTPScaledObject>().collection_path(namespace)
}

fn object(i: usize, seq: usize) -> Value {
    json!({
        "apiVersion": HTTPScaledObject::api_version(&()),
        "kind": HTTPScaledObject::kind(&()),
        "metadata": {
            "name": format!("app-{i:05}"),
            "namespace": "default",
            "labels": {"app": format!("app-{i:05}"), "team": "bench"},
        },
        "spec": {
            "hosts": [format!("app-{i:05}.example.com")],
            "pathPrefixes": ["/"],
            "scaleTargetRef": {"name": format!("app-{i:05}"), "service": format!("app-{i:05}"), "port": 8080},
            "replicas": {"min": 0, "max": 10},
            "scalingMetric": {"requestRate": {"granularity": "1s", "targetValue": 100, "window": "1m"}},
            "seq": seq,
        },
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(name: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "{name}: n={} median={:?} p90={:?} p99={:?} max={:?}",
        v.len(),
        percentile(&v, 0.5),
        percentile(&v, 0.9),
        percentile(&v, 0.99),
        v[v.len() - 1]
    );
}

struct FanOut {
    base: Instant,
    received: AtomicUsize,
    last_arrival_ns: AtomicU64,
    all_in: Notify,
    watchers: usize,
}

async fn fan_out(watchers: usize, writes: usize) {
    let store = hso_store();
    let addr = serve(store.clone()).await;
    let shared = Arc::new(FanOut {
        base: Instant::now(),
        received: AtomicUsize::new(0),
        last_arrival_ns: AtomicU64::new(0),
        all_in: Notify::new(),
        watchers,
    });
    for _ in 0..watchers {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        let watch = format!(
            "GET {}?watch=1&resourceVersion=1 HTTP/1.1\r\nHost: x\r\n\r\n",
            hso_path(None)
        );
        s.write_all(watch.as_bytes()).await.unwrap();
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 1 << 16];
            let mut prev = 0u8;
            loop {
                let n = match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                // Each event line ends with "}\n" (JSON has no raw newline).
                let mut events = usize::from(prev == b'}' && buf[0] == b'\n');
                events += buf[..n].windows(2).filter(|w| w == b"}\n").count();
                prev = buf[n - 1];
                for _ in 0..events {
                    let now = shared.base.elapsed().as_nanos() as u64;
                    shared.last_arrival_ns.fetch_max(now, Ordering::SeqCst);
                    if shared.received.fetch_add(1, Ordering::SeqCst) + 1 == shared.watchers {
                        shared.all_in.notify_one();
                    }
                }
            }
        });
    }
    while store.watcher_count() < watchers {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut latencies = Vec::with_capacity(writes);
    for seq in 0..writes + 5 {
        shared.received.store(0, Ordering::SeqCst);
        shared.last_arrival_ns.store(0, Ordering::SeqCst);
        let notified = shared.all_in.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let start = shared.base.elapsed().as_nanos() as u64;
        store.apply(object(1, seq), 2 + seq as u64).unwrap();
        tokio::time::timeout(Duration::from_secs(30), notified)
            .await
            .expect("every watcher got the write");
        let last = shared.last_arrival_ns.load(Ordering::SeqCst);
        // The first writes warm up connections and allocators.
        if seq >= 5 {
            latencies.push(Duration::from_nanos(last.saturating_sub(start)));
        }
    }
    report(
        &format!("(a) fan-out, one write -> {watchers} watchers, time until the last has it"),
        latencies,
    );
}

async fn get_list(addr: SocketAddr, path: &str) -> usize {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut body = Vec::with_capacity(8 << 20);
    s.read_to_end(&mut body).await.unwrap();
    assert!(
        body.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&body[..64.min(body.len())])
    );
    body.len()
}

async fn lists(objects: usize, rounds: usize) {
    let store = hso_store();
    for i in 0..objects {
        store.apply(object(i, 0), 2 + i as u64).unwrap();
    }
    let addr = serve(store.clone()).await;
    let path = &hso_path(None);
    let size = get_list(addr, path).await;
    let mut cached = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        get_list(addr, path).await;
        cached.push(t.elapsed());
    }
    let mut fresh = Vec::new();
    let mut rv = store.resource_version();
    for i in 0..rounds {
        rv += 1;
        store.apply(object(i % objects, 1 + i), rv).unwrap();
        let t = Instant::now();
        get_list(addr, path).await;
        fresh.push(t.elapsed());
    }
    let mut ns = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        get_list(addr, &hso_path(Some("default"))).await;
        ns.push(t.elapsed());
    }
    println!("(b) list of {objects} objects, response {size} bytes:");
    report("    cached full list (same Bytes for every client)", cached);
    report("    first list after a write (re-encoded)", fresh);
    report(
        "    namespace-scoped list (filtered, encoded per request)",
        ns,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers: watchers writes objects"))
        .collect();
    let watchers = args.first().copied().unwrap_or(1000);
    let writes = args.get(1).copied().unwrap_or(100);
    let objects = args.get(2).copied().unwrap_or(10_000);
    fan_out(watchers, writes).await;
    lists(objects, 50).await;
}
