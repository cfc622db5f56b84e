//! What the sync tests share.
#![allow(dead_code)] // each test file uses a different part

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use sync::metrics::ResourceLabel;

/// The Service `host` routes to (path `/`, no headers).
pub fn service_of(table: &routing::RoutingTable, host: &str) -> Option<String> {
    table
        .lookup(host, "/", &routing::NoHeaders)
        .map(|m| m.route.target.service.to_string())
}

/// The value of a per-resource counter of [`sync::SyncMetrics`].
pub fn count(family: &Family<ResourceLabel, Counter>, resource: &str) -> u64 {
    family
        .get_or_create(&ResourceLabel {
            resource: resource.into(),
        })
        .get()
}
