//! Request metrics with upstream's names, kept per route so the request path
//! only touches atomics:
//!
//! - `interceptor_request_count_total{code,method,route_name,route_namespace}`
//! - `interceptor_request_duration_seconds{code,method,route_name,route_namespace}` (histogram)
//! - `interceptor_request_concurrency{route_name,route_namespace}` (read from the
//!   routes' own counters at scrape time)
//!
//! A request that matched no route is counted and timed like upstream's,
//! with empty `route_name` and `route_namespace` (it has no concurrency
//! series: no route, nothing to scale).
//!
//! Per-route entries ([`RouteStats`]) are rebuilt from the routing table
//! whenever it changes (a background task), so a request finds its entry
//! with one atomic load and one integer-keyed hash probe. Each entry holds a
//! short copy-on-write list of (method, code) series; a new combination is
//! the only slow path.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::Method;
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use routing::{Route, RouteCounters, RoutingTable};

/// Upper bounds (seconds) of the duration histogram's buckets.
pub const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One (method, code) series of a route.
#[derive(Debug)]
struct Series {
    method: Method,
    code: u16,
    count: AtomicU64,
    sum_nanos: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
}

impl Series {
    fn new(method: Method, code: u16) -> Series {
        Series {
            method,
            code,
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
            buckets: Default::default(),
        }
    }

    fn observe(&self, elapsed: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Metrics and cold-start bookkeeping of one route (one namespace/name).
#[derive(Debug)]
pub struct RouteStats {
    /// `route_namespace` label.
    pub namespace: Arc<str>,
    /// `route_name` label.
    pub name: Arc<str>,
    /// The route's `/queue` counters.
    pub counters: Arc<RouteCounters>,
    /// Requests of this route now held in a cold-start wait on this replica.
    pub pending: AtomicU64,
    series: ArcSwap<Vec<Arc<Series>>>,
    insert: Mutex<()>,
}

impl RouteStats {
    fn new(route: &Route) -> RouteStats {
        RouteStats::with_labels(
            route.namespace().clone(),
            route.name().clone(),
            route.counters.clone(),
        )
    }

    fn with_labels(
        namespace: Arc<str>,
        name: Arc<str>,
        counters: Arc<RouteCounters>,
    ) -> RouteStats {
        RouteStats {
            namespace,
            name,
            counters,
            pending: AtomicU64::new(0),
            series: ArcSwap::from_pointee(Vec::new()),
            insert: Mutex::new(()),
        }
    }

    /// Records one finished request.
    pub fn observe(&self, method: &Method, code: u16, elapsed: Duration) {
        let list = self.series.load();
        if let Some(s) = list.iter().find(|s| s.code == code && s.method == *method) {
            s.observe(elapsed);
            return;
        }
        drop(list);
        // Slow path, once per new (method, code) of this route.
        let _lock = self.insert.lock();
        let list = self.series.load_full();
        if let Some(s) = list.iter().find(|s| s.code == code && s.method == *method) {
            s.observe(elapsed);
            return;
        }
        let s = Arc::new(Series::new(method.clone(), code));
        s.observe(elapsed);
        let mut next = (*list).clone();
        next.push(s);
        self.series.store(Arc::new(next));
    }

    /// Takes a cold-start slot unless `limit` (non-zero) are taken.
    pub fn try_pending(self: &Arc<Self>, limit: u64) -> Option<PendingSlot> {
        let prev = self.pending.fetch_add(1, Ordering::AcqRel);
        if limit != 0 && prev >= limit {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(PendingSlot(self.clone()))
    }
}

/// A held cold-start slot, released on drop.
#[derive(Debug)]
pub struct PendingSlot(Arc<RouteStats>);

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

type StatsMap = HashMap<usize, Arc<RouteStats>, PtrHash>;

/// Hashes pointer-sized keys with one multiplication (the keys are
/// addresses, already well spread; SipHash would be wasted on them).
#[derive(Clone, Copy, Debug, Default)]
struct PtrHash;

impl std::hash::BuildHasher for PtrHash {
    type Hasher = PtrHasher;
    fn build_hasher(&self) -> PtrHasher {
        PtrHasher(0)
    }
}

#[derive(Debug)]
struct PtrHasher(u64);

impl std::hash::Hasher for PtrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(26);
    }
}

fn key_of(route: &Route) -> usize {
    // A route's counters are carried over re-applies of the same key, so
    // their address identifies namespace/name for as long as it is in the table.
    Arc::as_ptr(&route.counters) as usize
}

/// The proxy's metrics. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ProxyMetrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    table: Arc<sync::SharedTable>,
    routes: ArcSwap<StatsMap>,
    /// Requests that matched no route (empty route labels); its counters
    /// are nobody's `/queue` entry.
    unrouted: Arc<RouteStats>,
    rebuild: Mutex<()>,
}

impl ProxyMetrics {
    /// Metrics over `table`'s routes, registered in `registry`.
    pub fn new(
        table: Arc<sync::SharedTable>,
        registry: &mut prometheus_client::registry::Registry,
    ) -> Self {
        let m = ProxyMetrics {
            inner: Arc::new(Inner {
                table,
                routes: ArcSwap::from_pointee(StatsMap::default()),
                unrouted: Arc::new(RouteStats::with_labels(
                    Arc::from(""),
                    Arc::from(""),
                    Arc::default(),
                )),
                rebuild: Mutex::new(()),
            }),
        };
        m.refresh();
        registry.register_collector(Box::new(m.clone()));
        m
    }

    /// Keeps the per-route entries equal to the table's routes until `cancel`.
    pub async fn follow(self, cancel: tokio_util::sync::CancellationToken) {
        let mut rx = self.inner.table.subscribe();
        loop {
            self.refresh();
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = rx.changed() => if r.is_err() { return },
            }
        }
    }

    /// Rebuilds the per-route entries from the current table, keeping the
    /// entries of routes still present.
    pub fn refresh(&self) {
        let _lock = self.inner.rebuild.lock();
        let table = self.inner.table.snapshot();
        let old = self.inner.routes.load_full();
        let next = build(&table, &old);
        self.inner.routes.store(Arc::new(next));
    }

    /// The entry of requests that matched no route.
    pub fn unrouted(&self) -> &Arc<RouteStats> {
        &self.inner.unrouted
    }

    /// The entry of `route` (created if the table moved faster than the
    /// refresh task).
    pub fn stats(&self, route: &Route) -> Arc<RouteStats> {
        let key = key_of(route);
        if let Some(s) = self.inner.routes.load().get(&key) {
            return s.clone();
        }
        let _lock = self.inner.rebuild.lock();
        let current = self.inner.routes.load_full();
        if let Some(s) = current.get(&key) {
            return s.clone();
        }
        let s = Arc::new(RouteStats::new(route));
        let mut next = (*current).clone();
        next.insert(key, s.clone());
        self.inner.routes.store(Arc::new(next));
        s
    }
}

fn build(table: &RoutingTable, old: &StatsMap) -> StatsMap {
    table
        .routes()
        .map(|r| {
            let key = key_of(r);
            let stats = match old.get(&key) {
                Some(s) => s.clone(),
                None => Arc::new(RouteStats::new(r)),
            };
            (key, stats)
        })
        .collect()
}

impl Collector for ProxyMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let routes = self.inner.routes.load_full();
        let mut entries: Vec<&Arc<RouteStats>> = routes.values().collect();
        entries.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        // Empty labels sort first.
        let with_unrouted = || std::iter::once(&self.inner.unrouted).chain(entries.iter().copied());

        let mut counts = encoder.encode_descriptor(
            "interceptor_request_count",
            "Requests handled by the interceptor, by route, method and status code",
            None,
            MetricType::Counter,
        )?;
        for r in with_unrouted() {
            for s in r.series.load().iter() {
                let code = status_label(s.code);
                let labels = [
                    ("code", code.as_str()),
                    ("method", s.method.as_str()),
                    ("route_name", &*r.name),
                    ("route_namespace", &*r.namespace),
                ];
                counts
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&s.count.load(Ordering::Relaxed), None)?;
            }
        }

        let mut durations = encoder.encode_descriptor(
            "interceptor_request_duration_seconds",
            "Time from a request's arrival to the end of its response, in seconds",
            None,
            MetricType::Histogram,
        )?;
        for r in with_unrouted() {
            for s in r.series.load().iter() {
                let code = status_label(s.code);
                let labels = [
                    ("code", code.as_str()),
                    ("method", s.method.as_str()),
                    ("route_name", &*r.name),
                    ("route_namespace", &*r.namespace),
                ];
                // The encoder accumulates: pass per-bucket counts.
                let mut buckets: Vec<(f64, u64)> = BUCKETS
                    .iter()
                    .zip(&s.buckets)
                    .map(|(b, c)| (*b, c.load(Ordering::Relaxed)))
                    .collect();
                let count = s.count.load(Ordering::Relaxed);
                let below: u64 = buckets.iter().map(|(_, c)| c).sum();
                buckets.push((f64::INFINITY, count.saturating_sub(below)));
                let sum = s.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
                durations
                    .encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
            }
        }

        let mut concurrency = encoder.encode_descriptor(
            "interceptor_request_concurrency",
            "Requests in flight now, by route",
            None,
            MetricType::Gauge,
        )?;
        for r in &entries {
            let labels = [("route_name", &*r.name), ("route_namespace", &*r.namespace)];
            let v = r.counters.concurrency.load(Ordering::Relaxed).max(0);
            concurrency.encode_family(&labels)?.encode_gauge(&v)?;
        }
        Ok(())
    }
}

fn status_label(code: u16) -> String {
    code.to_string()
}
