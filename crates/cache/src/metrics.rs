//! Prometheus metrics of the cache, registered into a caller's registry
//! under the `keda_http_cache` prefix.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label naming a resource (plural name).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabel {
    /// e.g. `httpscaledobjects`.
    pub resource: String,
}

/// The cache's metrics. Cheap to clone.
#[derive(Clone, Debug)]
pub struct CacheMetrics {
    /// Subscriber connections (HTTP/1.1 or HTTP/2): open now, refused over
    /// the cap, closed without a request.
    pub connections: process::http::ConnectionMetrics,
    /// Open watches served to subscribers.
    pub subscribers: Gauge,
    /// Watch events (not bookmarks) written to subscribers.
    pub events_fanned_out: Counter,
    /// Bookmarks written to subscribers.
    pub bookmarks_sent: Counter,
    /// Response body bytes written to subscribers (lists, watches, errors).
    pub bytes_sent: Counter,
    /// Requests served, by outcome class.
    pub requests: Family<RequestLabel, Counter>,
    /// Upstream watch or list restarts after an error, a stall or 410 Gone.
    pub upstream_restarts: Family<ResourceLabel, Counter>,
    /// Full lists taken from the upstream (initial, relists, resyncs).
    pub upstream_lists: Family<ResourceLabel, Counter>,
    /// Events received from the upstream.
    pub upstream_events: Family<ResourceLabel, Counter>,
    /// Differences an upstream resync found (an upstream event was lost).
    pub upstream_resync_repairs: Family<ResourceLabel, Counter>,
    /// Seconds from an event's arrival from the upstream to its hand-off to
    /// every subscriber's fan-out queue.
    pub propagation_seconds: Histogram,
    /// 1 once every resource's initial list is complete.
    pub ready: Gauge,
    /// `routing_source_up`: 1 while the upstream answers, 0 during an outage.
    pub source_up: Gauge,
}

/// Label of [`CacheMetrics::requests`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabel {
    /// `list`, `watch`, `not_modified`, `get`, `discovery`, `unauthorized`, `rejected`.
    pub kind: &'static str,
}

impl CacheMetrics {
    /// Creates and registers the metrics.
    pub fn new(registry: &mut Registry) -> Self {
        let m = CacheMetrics {
            connections: process::http::ConnectionMetrics::default(),
            subscribers: Gauge::default(),
            events_fanned_out: Counter::default(),
            bookmarks_sent: Counter::default(),
            bytes_sent: Counter::default(),
            requests: Family::default(),
            upstream_restarts: Family::default(),
            upstream_lists: Family::default(),
            upstream_events: Family::default(),
            upstream_resync_repairs: Family::default(),
            propagation_seconds: Histogram::new([
                0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
            ]),
            ready: Gauge::default(),
            source_up: Gauge::default(),
        };
        // The same name as the interceptor's, so one alert covers every program.
        registry.register(
            "routing_source_up",
            "1 while the upstream is reachable, 0 during an outage",
            m.source_up.clone(),
        );
        let r = registry.sub_registry_with_prefix("keda_http_cache");
        m.connections.register(r, "subscriber");
        r.register(
            "subscribers",
            "Open watches served to subscribers",
            m.subscribers.clone(),
        );
        r.register(
            "events_fanned_out",
            "Watch events written to subscribers",
            m.events_fanned_out.clone(),
        );
        r.register(
            "bookmarks_sent",
            "Bookmarks written to subscribers",
            m.bookmarks_sent.clone(),
        );
        r.register(
            "sent_bytes",
            "Response body bytes written to subscribers",
            m.bytes_sent.clone(),
        );
        r.register("requests", "Requests served", m.requests.clone());
        r.register(
            "upstream_restarts",
            "Upstream list or watch restarts (errors, stalls, 410 Gone)",
            m.upstream_restarts.clone(),
        );
        r.register(
            "upstream_lists",
            "Full lists taken from the upstream",
            m.upstream_lists.clone(),
        );
        r.register(
            "upstream_events",
            "Watch events received from the upstream",
            m.upstream_events.clone(),
        );
        r.register(
            "upstream_resync_repairs",
            "Differences found by the periodic upstream resync (an upstream event was lost)",
            m.upstream_resync_repairs.clone(),
        );
        r.register(
            "propagation_seconds",
            "Seconds from an upstream event's arrival to its hand-off to every subscriber",
            m.propagation_seconds.clone(),
        );
        r.register(
            "ready",
            "1 once every resource's initial list is complete",
            m.ready.clone(),
        );
        m
    }

    pub(crate) fn label(resource: &str) -> ResourceLabel {
        ResourceLabel {
            resource: resource.to_string(),
        }
    }

    pub(crate) fn request(&self, kind: &'static str) {
        self.requests.get_or_create(&RequestLabel { kind }).inc();
    }
}
