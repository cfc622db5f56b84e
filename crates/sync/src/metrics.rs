//! Prometheus metrics of the sync loop, registered into a caller's registry.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label set naming the resource a counter is about.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabel {
    /// `httpscaledobjects`, `interceptorroutes`, `services`, `endpointslices`, `files`.
    pub resource: String,
}

/// The sync loop's metrics. Cheap to clone (every field is an `Arc` inside).
#[derive(Clone, Debug, Default)]
pub struct SyncMetrics {
    /// Version of the published routing table.
    pub table_version: Gauge,
    /// 1 while the source answers (or has not failed yet), 0 during an outage.
    pub source_up: Gauge,
    /// Number of routes in the published routing table.
    pub table_routes: Gauge,
    /// Unix time of the last successful full sync (initial list, relist or resync).
    pub last_sync_timestamp_seconds: Gauge<f64, AtomicU64>,
    /// Errors talking to the source (failed lists, broken watches, unreadable files).
    pub sync_errors: Family<ResourceLabel, Counter>,
    /// Differences a periodic resync found and repaired: non-zero means a watch lost an event.
    pub resync_repairs: Family<ResourceLabel, Counter>,
    /// Objects skipped because they are invalid.
    pub invalid_objects: Family<ResourceLabel, Counter>,
    /// Periodic resyncs done, by outcome (`changed` lists and `unchanged` 304s together).
    pub resyncs: Family<ResourceLabel, Counter>,
    /// Watch streams restarted (errors, stalls, 410 Gone).
    pub watch_restarts: Family<ResourceLabel, Counter>,
}

impl SyncMetrics {
    /// Creates the metrics and registers them in `registry` under upstream-style names.
    pub fn new(registry: &mut Registry) -> Self {
        let m = SyncMetrics::default();
        registry.register(
            "routing_table_version",
            "Version of the published routing table",
            m.table_version.clone(),
        );
        registry.register(
            "routing_source_up",
            "1 while the routing table's source is reachable, 0 during an outage",
            m.source_up.clone(),
        );
        registry.register(
            "routing_table_routes",
            "Routes in the published routing table",
            m.table_routes.clone(),
        );
        registry.register(
            "routing_last_sync_timestamp_seconds",
            "Unix time of the last complete sync of the routing table with its source",
            m.last_sync_timestamp_seconds.clone(),
        );
        registry.register(
            "routing_sync_errors",
            "Errors reading the routing table's source",
            m.sync_errors.clone(),
        );
        registry.register(
            "routing_resync_repairs",
            "Differences found and repaired by the periodic resync (a watch lost an event)",
            m.resync_repairs.clone(),
        );
        registry.register(
            "routing_invalid_objects",
            "Objects skipped because they are invalid",
            m.invalid_objects.clone(),
        );
        registry.register(
            "routing_resyncs",
            "Periodic full resyncs performed",
            m.resyncs.clone(),
        );
        registry.register(
            "routing_watch_restarts",
            "Watch streams restarted after an error, a stall or 410 Gone",
            m.watch_restarts.clone(),
        );
        m
    }

    pub(crate) fn label(resource: &str) -> ResourceLabel {
        ResourceLabel {
            resource: resource.to_string(),
        }
    }

    /// Total resync repairs over every resource (for tests and logs).
    pub fn total_repairs(&self) -> u64 {
        ["httpscaledobjects", "interceptorroutes", "files"]
            .iter()
            .map(|r| self.resync_repairs.get_or_create(&Self::label(r)).get())
            .sum()
    }
}
