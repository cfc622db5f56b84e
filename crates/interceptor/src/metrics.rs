//! Request metrics with upstream's names:
//!
//! - `interceptor_request_count_total{code,method,route_name,route_namespace}`
//! - `interceptor_request_duration_seconds{code,method,route_name,route_namespace}` (histogram)
//! - `interceptor_request_concurrency{route_name,route_namespace}`
//!
//! The values live in the routing table, in each route's own
//! [`RouteCounters`] (created when the route is compiled, carried over
//! updates), so a request counts itself with atomics on the route it already
//! holds and the collector walks the current table at scrape time: there is
//! no second per-route map to keep in step with the table.
//!
//! A request that matched no route is counted and timed like upstream's,
//! with empty `route_name` and `route_namespace` (it has no concurrency
//! series: no route, nothing to scale).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use routing::{LATENCY_BUCKETS, RequestSeries, Route, RouteCounters, RoutingTable};

/// The proxy's metrics: a collector over the published routing table. Cheap
/// to clone.
#[derive(Debug, Clone)]
pub struct ProxyMetrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    table: Arc<sync::SharedTable>,
    /// Requests that matched no route (empty route labels); its `/queue`
    /// counters are nobody's.
    unrouted: Arc<RouteCounters>,
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
                unrouted: Arc::default(),
            }),
        };
        registry.register_collector(Box::new(m.clone()));
        m
    }

    /// The counters of requests that matched no route.
    pub fn unrouted(&self) -> &Arc<RouteCounters> {
        &self.inner.unrouted
    }
}

/// One set of route labels and its counters.
struct Row<'a> {
    namespace: &'a str,
    name: &'a str,
    counters: &'a RouteCounters,
}

impl Collector for ProxyMetrics {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        encode(&self.inner.table.snapshot(), &self.inner.unrouted, encoder)
    }
}

/// The three families, from `table`'s routes (sorted by namespace, name)
/// and the unrouted requests' counters (first, with empty route labels).
fn encode(
    table: &RoutingTable,
    unrouted: &RouteCounters,
    mut encoder: DescriptorEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    let mut routes: Vec<&Arc<Route>> = table.routes().collect();
    routes.sort_by(|a, b| (a.namespace(), a.name()).cmp(&(b.namespace(), b.name())));
    let rows: Vec<Row<'_>> = routes
        .iter()
        .map(|r| Row {
            namespace: r.namespace(),
            name: r.name(),
            counters: &r.counters,
        })
        .collect();
    // Empty labels sort first.
    let unrouted = Row {
        namespace: "",
        name: "",
        counters: unrouted,
    };
    // Every (route, method, code) series, read once so both families list
    // the same ones.
    let series: Vec<(String, &Row<'_>, &RequestSeries)> = std::iter::once(&unrouted)
        .chain(rows.iter())
        .flat_map(|r| {
            r.counters
                .request_series()
                .map(move |s| (status_label(s.code()), r, s))
        })
        .collect();

    let mut counts = encoder.encode_descriptor(
        "interceptor_request_count",
        "Requests handled by the interceptor, by route, method and status code",
        None,
        MetricType::Counter,
    )?;
    for (code, r, s) in &series {
        counts
            .encode_family(&series_labels(code, r, s))?
            .encode_counter::<NoLabelSet, _, u64>(&s.count(), None)?;
    }

    let mut durations = encoder.encode_descriptor(
        "interceptor_request_duration_seconds",
        "Time from a request's arrival to the end of its response, in seconds",
        None,
        MetricType::Histogram,
    )?;
    for (code, r, s) in &series {
        let labels = series_labels(code, r, s);
        // The encoder accumulates: pass per-bucket counts. The count
        // is read after the buckets (a request adds to it first), so
        // the buckets never exceed it.
        let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .copied()
            .zip(s.bucket_counts())
            .collect();
        let count = s.count();
        let below: u64 = buckets.iter().map(|(_, c)| c).sum();
        buckets.push((f64::INFINITY, count.saturating_sub(below)));
        let sum = s.sum().as_nanos() as f64 / 1e9;
        durations
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
    }

    let mut concurrency = encoder.encode_descriptor(
        "interceptor_request_concurrency",
        "Requests in flight now, by route",
        None,
        MetricType::Gauge,
    )?;
    for r in &rows {
        let labels = [("route_name", r.name), ("route_namespace", r.namespace)];
        let v = r.counters.concurrency.load(Ordering::Relaxed).max(0);
        concurrency.encode_family(&labels)?.encode_gauge(&v)?;
    }
    Ok(())
}

/// The labels of one request series, upstream's names.
fn series_labels<'a>(
    code: &'a str,
    r: &Row<'a>,
    s: &'a RequestSeries,
) -> [(&'static str, &'a str); 4] {
    [
        ("code", code),
        ("method", s.method().as_str()),
        ("route_name", r.name),
        ("route_namespace", r.namespace),
    ]
}

fn status_label(code: u16) -> String {
    code.to_string()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::Method;
    use prometheus_client::registry::Registry;

    use super::*;

    #[derive(Debug)]
    struct Fixed(RoutingTable, RouteCounters);

    impl Collector for Fixed {
        fn encode(&self, encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
            encode(&self.0, &self.1, encoder)
        }
    }

    fn route(ns: &str, name: &str) -> routing::Route {
        let obj = testkit::fixtures::Hso::new(ns, name)
            .host(&format!("{name}.test"))
            .service(name, 80)
            .parse();
        routing::compile_http_scaled_object(&obj).unwrap()
    }

    /// The exposition of one duration series: sum, count, and the
    /// cumulative count of each bucket (the last is `+Inf`, the count).
    fn histogram(labels: &str, sum: &str, cumulative: [u64; 12]) -> String {
        const BOUNDS: [&str; 12] = [
            "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0",
            "+Inf",
        ];
        let name = "interceptor_request_duration_seconds";
        let mut out = format!("{name}_sum{{{labels}}} {sum}\n");
        out += &format!("{name}_count{{{labels}}} {}\n", cumulative[11]);
        for (le, n) in BOUNDS.iter().zip(cumulative) {
            out += &format!("{name}_bucket{{le=\"{le}\",{labels}}} {n}\n");
        }
        out
    }

    /// The whole exposition: families in order, unrouted series first with
    /// empty route labels, routes by namespace then name, series in the
    /// order first seen, per-bucket counts accumulated, concurrency for
    /// every route (and never for unrouted requests).
    #[test]
    fn exposition_is_upstreams() {
        let table = RoutingTable::from_routes([route("b", "app"), route("a", "web")]);
        let web = &table.get("a", "web").unwrap().counters;
        web.observe(&Method::GET, 200, Duration::from_millis(3));
        web.observe(&Method::GET, 200, Duration::from_millis(30));
        web.observe(&Method::POST, 201, Duration::from_secs(11));
        web.concurrency.fetch_add(2, Ordering::Relaxed);
        let unrouted = RouteCounters::default();
        unrouted.observe(&Method::GET, 404, Duration::from_millis(1));

        let mut registry = Registry::default();
        registry.register_collector(Box::new(Fixed(table, unrouted)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let unrouted_get = histogram(
            r#"code="404",method="GET",route_name="",route_namespace="""#,
            "0.001",
            [1; 12],
        );
        let web_get = histogram(
            r#"code="200",method="GET",route_name="web",route_namespace="a""#,
            "0.033",
            [1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2],
        );
        let web_post = histogram(
            r#"code="201",method="POST",route_name="web",route_namespace="a""#,
            "11.0",
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        );
        let want = format!(
            r#"# HELP interceptor_request_count Requests handled by the interceptor, by route, method and status code
# TYPE interceptor_request_count counter
interceptor_request_count_total{{code="404",method="GET",route_name="",route_namespace=""}} 1
interceptor_request_count_total{{code="200",method="GET",route_name="web",route_namespace="a"}} 2
interceptor_request_count_total{{code="201",method="POST",route_name="web",route_namespace="a"}} 1
# HELP interceptor_request_duration_seconds Time from a request's arrival to the end of its response, in seconds
# TYPE interceptor_request_duration_seconds histogram
{unrouted_get}{web_get}{web_post}# HELP interceptor_request_concurrency Requests in flight now, by route
# TYPE interceptor_request_concurrency gauge
interceptor_request_concurrency{{route_name="web",route_namespace="a"}} 2
interceptor_request_concurrency{{route_name="app",route_namespace="b"}} 0
# EOF
"#
        );
        assert_eq!(text, want);
    }
}
